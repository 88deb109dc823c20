"""Loaders, the synthetic shop and the simulated stock log produce the contract's tables."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from feature_repo.datasets import DataError, load, stamp
from feature_repo.datasets.contract import TIMESTAMP


@pytest.fixture(scope="module")
def ml100k(ml100k_dir):
    return load(f"movielens-100k:{ml100k_dir}")


def test_movielens_100k_has_the_published_counts(ml100k):
    assert len(ml100k.interactions) == 100_000
    assert ml100k.interactions["user_id"].nunique() == 943 == len(ml100k.users)
    assert len(ml100k.items) == 1682
    assert str(ml100k.interactions["event_timestamp"].dtype) == TIMESTAMP
    assert ml100k.interactions["event_timestamp"].min() == pd.Timestamp("1997-09-20 03:05:10",
                                                                        tz="UTC")
    toy_story = ml100k.items.set_index("item_id").loc[1]
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["categories"] == ["Animation", "Children's", "Comedy"]


def test_simulated_stock_runs_out_and_is_restocked(ml100k):
    log = ml100k.stock
    assert (log["quantity"] >= 0).all()
    popular = ml100k.interactions["item_id"].value_counts().index[0]
    quantities = log.loc[log["item_id"] == popular, "quantity"].tolist()
    first_empty = quantities.index(0)
    assert any(q > 0 for q in quantities[first_empty:]), "a sold-out item comes back"
    last = log.sort_values("event_timestamp", kind="stable").groupby("item_id")["quantity"].last()
    assert (last > 0).all(), "and is in stock when the data ends"
    assert set(log["item_id"]) == set(ml100k.items["item_id"]), "every item has a stock history"


def test_simulated_stock_ends_with_the_last_interaction_for_data_that_runs_up_to_today(tmp_path):
    """A restock due after the data's end comes just after its last interaction: for a shop whose
    events run up to now it would lie in the future and outdate every quantity written until then."""
    now = pd.Timestamp.now(tz="UTC").floor("s")
    pd.DataFrame({"user_id": [1, 2, 3, 1], "item_id": [1, 1, 2, 2],
                  "event_timestamp": [now - pd.Timedelta(days=d) for d in (9, 6, 3, 0)]}).to_csv(
        tmp_path / "interactions.csv", index=False)
    pd.DataFrame({"item_id": [1, 2], "title": ["lamp", "desk"]}).to_csv(tmp_path / "items.csv", index=False)
    data = load(f"generic:{tmp_path}")
    end = data.interactions["event_timestamp"].max() + pd.Timedelta(microseconds=1)
    assert data.stock["event_timestamp"].max() == end
    assert set(data.stock["item_id"]) == {1, 2}


def test_stock_simulation_is_deterministic(ml100k_dir, ml100k):
    again = load(f"movielens-100k:{ml100k_dir}")
    pd.testing.assert_frame_equal(again.stock, ml100k.stock)


def test_movielens_1m_reads_double_colon_latin1(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::2::5::978300760\n2::1::3::978302109\n")
    (tmp_path / "movies.dat").write_bytes(
        "1::Toy Story (1995)::Animation|Children's\n2::Amélie (2001)::Comedy\n".encode("latin-1"))
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    data = load(f"movielens-1m:{tmp_path}")
    assert data.items.set_index("item_id").loc[2, "title"] == "Amélie (2001)"
    assert data.items.set_index("item_id").loc[1, "created_at"] == pd.Timestamp("1995-01-01",
                                                                              tz="UTC")
    assert data.interactions["weight"].tolist() == [5.0, 3.0]
    assert list(data.users.columns) == ["user_id", "age", "gender", "occupation", "zip_code"]


def test_synthetic_shop_is_deterministic_and_respects_stock():
    a = load("synthetic:items=200,users=100,events=5000,seed=3")
    b = load("synthetic:items=200,users=100,events=5000,seed=3")
    c = load("synthetic:items=200,users=100,events=5000,seed=4")
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert not a.interactions.equals(c.interactions)
    # No purchase happens while the item is sold out: replaying the log never goes negative.
    assert (a.stock["quantity"] >= 0).all() and (a.stock["quantity"] == 0).any()
    released = a.items.set_index("item_id")["created_at"]
    assert (a.interactions["event_timestamp"] >= a.interactions["item_id"].map(released)).all()


def test_unknown_synthetic_key_is_named():
    with pytest.raises(ValueError, match="colours"):
        load("synthetic:items=100,colours=3")


def _write_generic(folder, *, interactions=None, items=None):
    folder.mkdir(exist_ok=True)
    (folder / "interactions.csv").write_text(interactions or (
        "uid,sku,when\n1,10,2024-01-01T10:00:00Z\n2,11,2024-01-02T10:00:00Z\n"))
    (folder / "items.csv").write_text(items or (
        "sku,name,tags,cost,released\n10,A,x|y,1.5,2023-01-01\n11,B,y,2.0,2023-02-01\n"))
    (folder / "mapping.json").write_text(
        '{"interactions": {"user_id": "uid", "item_id": "sku", "event_timestamp": "when"},'
        ' "items": {"item_id": "sku", "title": "name", "categories": "tags", "price": "cost",'
        ' "created_at": "released"}}')
    return folder


def test_generic_loader_maps_columns(tmp_path):
    data = load(f"generic:{_write_generic(tmp_path / 'shop')}")
    assert data.items["categories"].tolist() == [["x", "y"], ["y"]]
    assert data.users["user_id"].tolist() == [1, 2]
    assert len(data.stock) > 0, "stock is simulated when the folder has none"


@pytest.mark.parametrize(("interactions", "items", "match"), [
    ("uid,sku\n1,10\n", None, r"interactions.csv, column 'when': missing \(mapped from 'when'\)"),
    ("uid,sku,when\n1,10,2024-01-01\n2,11,yesterday-ish\n", None,
     r"interactions.csv, column 'event_timestamp', row 2: cannot parse timestamp 'yesterday-ish'"),
    (None, "sku,name,tags,cost,released\n10,A,x,1,2023-01-01\n10,B,y,2,2023-01-01\n",
     r"items.csv, column 'item_id', row 2: duplicate item_id 10"),
    ("uid,sku,when\n1,10,2024-01-01\n1,99,2024-01-02\n", None,
     r"interactions.csv, column 'item_id', row 2: unknown item_id 99"),
    ("", None, r"interactions.csv: empty file"),
    (None, 'sku,name,tags,cost,released\n10,A,x,1.5,2023-01-01\n11,B,y,"12,99",2023-01-01\n',
     r"items.csv, column 'price', row 2: not a number: '12,99'"),
    (None, "sku,name,tags,cost,released\n10,A,x,$5,2023-01-01\n11,B,y,,2023-01-01\n",
     r"items.csv, column 'price', row 1: not a number: '\$5'"),
    (None, "sku,name,tags,cost,released\n10,A,x,1.5,2023-01-01\n11,B,y,-2,2023-01-01\n",
     r"items.csv, column 'price', row 2: not a finite number >= 0: -2.0"),
    ("uid,sku,when,weight\n1,10,2024-01-01,5\n2,11,2024-01-02,five\n", None,
     r"interactions.csv, column 'weight', row 2: not a number: 'five'"),
    ("uid,sku,when,weight\n1,10,2024-01-01,inf\n2,11,2024-01-02,4\n", None,
     r"interactions.csv, column 'weight', row 1: not a finite number: inf"),
    ("uid,sku,when\n", None, r"interactions.csv: no rows"),
    ("uid,sku,when\n1,10,2024-01-01\n2,11, \n", None,
     r"interactions.csv, column 'event_timestamp', row 2: missing timestamp"),
    (None, "sku,name,tags,cost,released\n10,A,x,1,2023-01-01\n11,B,y,2,\n",
     r"items.csv, column 'created_at', row 2: missing timestamp"),
])
def test_bad_generic_input_names_file_column_and_row(tmp_path, interactions, items, match):
    folder = _write_generic(tmp_path / "shop", interactions=interactions, items=items)
    if interactions == "":
        (folder / "interactions.csv").write_text("")
    with pytest.raises(DataError, match=match):
        load(f"generic:{folder}")


def test_a_null_time_in_a_parquet_file_is_named_not_dropped(tmp_path):
    folder = _write_generic(tmp_path / "shop")
    items = pd.read_csv(folder / "items.csv")
    items["released"] = pd.to_datetime(items["released"], utc=True)
    items.loc[1, "released"] = pd.NaT
    items.to_parquet(folder / "items.parquet")
    (folder / "items.csv").unlink()
    with pytest.raises(DataError, match=r"items.parquet, column 'created_at', row 2: missing timestamp"):
        load(f"generic:{folder}")


def test_blank_prices_and_weights_stay_missing_and_a_weight_may_be_negative(tmp_path):
    folder = _write_generic(tmp_path / "shop", interactions=(
        "uid,sku,when,weight\n1,10,2024-01-01,-1\n2,11,2024-01-02,\n1,11,2024-01-03,4.5\n"),
        items="sku,name,tags,cost,released\n10,A,x,,2023-01-01\n11,B,y,2.5,2023-01-01\n")
    data = load(f"generic:{folder}")
    assert data.items["price"].isna().tolist() == [True, False]
    assert data.items["price"].iloc[1] == 2.5 and data.items["price"].dtype == "float64"
    weights = data.interactions["weight"]
    assert weights.dtype == "float64" and weights.isna().tolist() == [False, True, False]
    assert weights.iloc[[0, 2]].tolist() == [-1.0, 4.5]


def test_a_sources_stamp_changes_with_its_files_only(tmp_path):
    folder = _write_generic(tmp_path / "shop")
    spec = f"generic:{folder}"
    loaded = load(spec)
    assert loaded.source_stamp == stamp(spec) == stamp(f"generic:{tmp_path}/./shop")
    items = folder / "items.csv"
    os.utime(items, ns=(items.stat().st_atime_ns, items.stat().st_mtime_ns + 1))
    touched = stamp(spec)
    assert touched != loaded.source_stamp
    (folder / "interactions.csv").write_text("uid,sku,when\n1,10,2024-01-01T10:00:00Z\n")
    assert stamp(spec) not in (touched, loaded.source_stamp)
    assert load(spec).source_stamp == stamp(spec)
    spec = "synthetic:items=20,users=10,events=100"
    assert load(spec).source_stamp == stamp(spec) == spec  # generated from the spec alone


def test_every_loader_types_event_type_as_a_category(ml100k, tmp_path):
    shop = load("synthetic:items=20,users=10,events=100")
    folder = _write_generic(tmp_path / "shop", interactions=(
        "uid,sku,when,event_type\n1,10,2024-01-01,view\n2,11,2024-01-02,purchase\n"))
    for data in (ml100k, shop, load(f"generic:{folder}")):
        assert isinstance(data.interactions["event_type"].dtype, pd.CategoricalDtype), data.name
    assert load(f"generic:{folder}").interactions["event_type"].tolist() == ["view", "purchase"]


def test_bad_movielens_row_is_named(tmp_path, ml100k_dir):
    for name in ("u.item", "u.user"):
        (tmp_path / name).write_bytes((ml100k_dir / name).read_bytes())
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t4\tnot-a-time\n")
    with pytest.raises(DataError, match=r"u.data, column 'timestamp', row 2"):
        load(f"movielens-100k:{tmp_path}")


def test_unknown_dataset_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kind 'kaggle'"):
        load("kaggle:/tmp/x")
