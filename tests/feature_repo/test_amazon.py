"""Amazon Reviews, 2018 and 2023, on small files written here in the published formats."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from feature_repo.datasets import DataError, load
from feature_repo.datasets.amazon import clean_title, parse_price, read_meta


def _lines(path, records, *, gz):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text)


REVIEWS_2018 = [  # (user, item, stars, Unix seconds)
    ("A1", "B01", 5.0, 1_500_000_000), ("A1", "B02", 4.0, 1_500_086_400),
    ("A2", "B01", 3.0, 1_500_172_800), ("A2", "B03", 2.0, 1_500_259_200),
    ("A3", "B01", 4.0, 1_500_345_600), ("A1", "B02", 4.0, 1_500_086_400),  # an exact duplicate
]
META_2018 = [
    {"asin": "B01", "title": "<span>Walnut &amp; Oak</span> Desk", "category": ["Home", "Desks"],
     "price": "$1,234.56", "brand": "Woody"},
    {"asin": "B02", "title": "Lamp", "category": [], "price": "$10.00 - $20.00"},
    {"asin": "B03", "title": "", "price": ""},
]


def test_2018_json_lines_with_meta_gzip(tmp_path):
    _lines(tmp_path / "Home.json.gz", [{"reviewerID": u, "asin": i, "overall": r,
                                        "unixReviewTime": t, "reviewText": "ok"}
                                       for u, i, r, t in REVIEWS_2018], gz=True)
    _lines(tmp_path / "meta_Home.json.gz", META_2018, gz=True)
    data = load(f"amazon-reviews:{tmp_path}")
    assert len(data.interactions) == 5, "the exact duplicate is dropped"
    assert data.interactions["event_timestamp"].min() == pd.Timestamp("2017-07-14 02:40", tz="UTC")
    assert data.interactions["weight"].tolist() == [5.0, 4.0, 3.0, 2.0, 4.0]
    items = data.items.set_index("asin")
    assert items.loc["B01", "title"] == "Walnut & Oak Desk"
    assert items.loc["B01", "categories"] == ["Home", "Desks"] and items.loc["B02", "categories"] == []
    assert items.loc["B01", "price"] == 1234.56 and items.loc["B02", "price"] == 10.0
    assert pd.isna(items.loc["B03", "price"]) and items.loc["B03", "title"] == "B03"
    assert items.loc["B01", "brand"] == "Woody"
    assert data.users["user_id"].tolist() == [0, 1, 2] and len(data.stock) > 0


def test_2018_ratings_only_csv_without_meta_and_a_kcore(tmp_path):
    rows = [*REVIEWS_2018, ("A3", "B02", 5.0, 1_500_432_000)]
    (tmp_path / "Home.csv").write_text("".join(f"{i},{u},{r},{t}\n" for u, i, r, t in rows))
    data = load(f"amazon-reviews:{tmp_path / 'Home.csv'}")
    assert len(data.interactions) == 6 and set(data.items["title"]) == {"B01", "B02", "B03"}
    # 2-core: B03 (one review) goes, then A2 (one left), leaving A1 and A3 on B01 and B02.
    core = load(f"amazon-reviews:{tmp_path / 'Home.csv'}?kcore=2")
    assert len(core.interactions) == 4 and list(core.items["asin"]) == ["B01", "B02"]
    assert len(core.users) == 2
    with pytest.raises(DataError, match="no reviews left after the 3-core filter"):
        load(f"amazon-reviews:{tmp_path / 'Home.csv'}?kcore=3")


def test_2023_jsonl_is_milliseconds_on_parent_asins(tmp_path):
    reviews = [{"user_id": u, "asin": f"{i}-v{n}", "parent_asin": i, "rating": r,
                "timestamp": t * 1000, "text": "<br />fine"}
               for n, (u, i, r, t) in enumerate(REVIEWS_2018[:5])]
    _lines(tmp_path / "Home_and_Kitchen.jsonl", reviews, gz=False)
    _lines(tmp_path / "meta_Home_and_Kitchen.jsonl",
           [{"parent_asin": "B01", "title": "Desk", "categories": ["Home", "Furniture"],
             "price": 99.5, "store": "Woody"}, {"parent_asin": "B02", "title": "Lamp",
                                                "categories": [], "price": None}], gz=False)
    data = load(f"amazon-reviews:{tmp_path / 'Home_and_Kitchen.jsonl'}")
    assert len(data.items) == 3, "variants are one item per parent_asin"
    assert data.interactions["event_timestamp"].max() == pd.Timestamp("2017-07-18 02:40", tz="UTC")
    items = data.items.set_index("asin")
    assert items.loc["B01", "price"] == 99.5 and items.loc["B01", "brand"] == "Woody"
    assert pd.isna(items.loc["B02", "price"])


def test_bad_amazon_lines_are_named(tmp_path):
    path = tmp_path / "Home.json"
    path.write_text(json.dumps({"reviewerID": "A1", "asin": "B1", "overall": 5,
                                "unixReviewTime": 1_500_000_000}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"Home.json, row 2: not a JSON record"):
        load(f"amazon-reviews:{path}")
    path.write_text(json.dumps({"user_id": "A1", "parent_asin": "B1", "rating": 5,
                                "timestamp": 1_500_000_000}) + "\n")
    with pytest.raises(DataError, match=r"column 'timestamp', row 1: 1500000000 read as Unix "
                                        r"milliseconds is outside 1990-2100"):
        load(f"amazon-reviews:{path}")


def test_titles_and_prices_are_cleaned():
    assert clean_title("Tea &amp; <b>Coffee</b>\n Mug") == "Tea & Coffee Mug"
    assert parse_price("$1,234.56") == 1234.56 and parse_price(12) == 12.0
    assert pd.isna(parse_price("")) and pd.isna(parse_price(None))
    assert pd.isna(parse_price(-3.5)) and pd.isna(parse_price(float("inf")))
    assert pd.isna(parse_price("-5.99")) and pd.isna(parse_price("$ -5")) and pd.isna(parse_price("-$5"))
    assert pd.isna(parse_price(True))
    assert parse_price("$10 - $20") == 10.0


def test_a_category_given_as_one_string_is_one_category(tmp_path):
    _lines(tmp_path / "meta.json", [{"asin": "a", "title": "Atlas", "category": "Books"}], gz=False)
    assert read_meta(tmp_path / "meta.json").loc["a", "categories"] == ["Books"]


def test_check_counts_bad_amazon_lines_per_problem(tmp_path):
    from feature_repo.datasets import check

    good = {"reviewerID": "A1", "asin": "B1", "overall": 5, "unixReviewTime": 1_500_000_000}
    lines = [json.dumps(good), "{bad", json.dumps({**good, "asin": None}), "{worse",
             json.dumps({**good, "overall": "five"})]
    (tmp_path / "Home.json").write_text("\n".join(lines) + "\n")
    found = [(p.column, p.row, p.problem) for p in check(f"amazon-reviews:{tmp_path}")]
    assert found == [
        (None, 2, "not a JSON record: Expecting property name enclosed in double quotes "
                  "(and 1 more rows)"),
        ("asin", 3, "missing"),
        ("rating", 5, "not a number: 'five'"),
    ]


def test_a_bad_spec_is_a_data_error():
    with pytest.raises(DataError, match=r"amazon-reviews:x\?kcore=five: kcore='five' is not a whole"):
        load("amazon-reviews:x?kcore=five")
    with pytest.raises(DataError, match="unknown option 'colour'"):
        load("generic:x?colour=red")
