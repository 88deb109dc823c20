"""Timestamps in any unit, every optional table and column optional, every problem reported at once."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from feature_repo.datasets import DataError, check, load
from feature_repo.datasets.contract import parse_timestamps
from feature_repo.store import FeatureStoreConfig, build_store, materialize, online_user_features


def _shop(folder, *, interactions, items="item,name\n10,A\n11,B\n", mapping=None, **more):
    folder.mkdir(exist_ok=True)
    (folder / "interactions.csv").write_text(interactions)
    (folder / "items.csv").write_text(items)
    for name, text in more.items():
        (folder / f"{name}.csv").write_text(text)
    (folder / "mapping.json").write_text(json.dumps(mapping or {
        "interactions": {"user_id": "user", "item_id": "item", "event_timestamp": "ts"},
        "items": {"item_id": "item", "title": "name"}}))
    return f"generic:{folder}"


def test_integers_and_numeric_strings_are_unix_seconds_by_default():
    parsed = parse_timestamps(pd.Series([1_700_000_000, "1700000060", "2023-11-14T22:15:00Z"]),
                              source="f.csv", column="ts")
    assert parsed.tolist() == [pd.Timestamp("2023-11-14 22:13:20", tz="UTC"),
                               pd.Timestamp("2023-11-14 22:14:20", tz="UTC"),
                               pd.Timestamp("2023-11-14 22:15:00", tz="UTC")]


@pytest.mark.parametrize(("unit", "value"), [("ms", 1_700_000_000_000), ("us", 1_700_000_000_000_000),
                                             ("ns", 1_700_000_000_000_000_000)])
def test_a_unit_per_column_in_mapping_json(tmp_path, unit, value):
    spec = _shop(tmp_path / "shop", interactions=f"user,item,ts\n1,10,{value}\n2,11,{value}\n",
                 mapping={"interactions": {"user_id": "user", "item_id": "item",
                                           "event_timestamp": {"column": "ts", "unit": unit}},
                          "items": {"item_id": "item", "title": "name"}})
    assert load(spec).interactions["event_timestamp"].iloc[0] == pd.Timestamp(
        "2023-11-14 22:13:20", tz="UTC")


def test_milliseconds_read_as_seconds_are_refused_naming_file_column_row_and_unit(tmp_path):
    spec = _shop(tmp_path / "shop", interactions="user,item,ts\n1,10,1700000000\n"
                 "2,11,1700000000000\n")
    with pytest.raises(DataError, match=r"interactions.csv, column 'event_timestamp', row 2: "
                       r"1700000000000 read as Unix seconds is outside 1990-2100"):
        load(spec)


def test_nanoseconds_are_no_longer_the_silent_default():
    with pytest.raises(DataError, match="row 1: 1700000000 read as Unix nanoseconds"):
        parse_timestamps(pd.Series([1_700_000_000]), source="f.csv", column="ts", unit="ns")
    with pytest.raises(DataError, match="'1969-07-20' is outside 1990-2100"):
        parse_timestamps(pd.Series(["1969-07-20"]), source="f.csv", column="ts")


def test_an_unknown_unit_is_refused(tmp_path):
    spec = _shop(tmp_path / "shop", interactions="user,item,ts\n1,10,1700000000\n",
                 mapping={"interactions": {"user_id": "user", "item_id": "item",
                                           "event_timestamp": {"column": "ts", "unit": "days"}},
                          "items": {"item_id": "item", "title": "name"}})
    with pytest.raises(DataError, match="unknown timestamp unit 'days'"):
        load(spec)


def test_only_interactions_and_items_with_ids_and_titles_are_needed(tmp_path):
    """No users, no stock log, no categories, prices or release times: a catalogue that reaches
    Feast, whose all-empty categories and profile tokens come back as empty string lists."""
    data = load(_shop(tmp_path / "shop", interactions="user,item,ts\n1,10,1700000000\n"
                      "2,11,1700003600\n1,11,1700007200\n"))
    assert data.users["user_id"].tolist() == [1, 2]
    assert data.items["categories"].tolist() == [[], []]
    assert data.items["price"].isna().all() and len(data.stock) > 0
    store = build_store(data, FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    materialize(store, data.interactions["event_timestamp"].max().to_pydatetime())
    content = store.get_online_features(features=["item_content:categories", "item_content:title"],
                                        entity_rows=[{"item_id": 10}]).to_dict()
    assert content["categories"] == [[]] and content["title"] == ["A"]
    users = online_user_features(store, [1])
    assert list(users["profile_tokens"][0]) == [] and list(users["recent_item_ids"][0]) == [10, 11]


def test_a_users_table_of_ids_alone_is_a_profile_without_tokens(tmp_path):
    data = load(_shop(tmp_path / "shop", interactions="user,item,ts\n1,10,1700000000\n",
                      users="user_id\n1\n2\n"))
    store = build_store(data, FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    assert store.get_feature_view("user_profile").name == "user_profile"
    assert len(data.users) == 2


def test_check_reports_every_problem_at_once(tmp_path):
    spec = _shop(tmp_path / "shop",
                 interactions="user,item,ts\n1,10,1700000000\nx,11,1700000000\n2,99,yesterday\n"
                              "3,98,1700000000\n",
                 items="item,name\n10,A\n10,B\n",
                 stock="item_id,event_timestamp,quantity\n10,1700000000,many\n10,1700000001,-5\n")
    found = [(p.source.split("/")[-1], p.column, p.row, p.problem) for p in check(spec)]
    assert found == [
        ("interactions.csv", "user_id", 2, "not an integer: 'x'"),
        ("interactions.csv", "event_timestamp", 3, "cannot parse timestamp 'yesterday'"),
        ("stock.csv", "quantity", 1, "not an integer: 'many'"),
        ("stock.csv", "quantity", 2, "quantities must be non-negative integers"),
        ("items.csv", "item_id", 2, "duplicate item_id 10"),
        ("interactions.csv", "item_id", 4, "unknown item_id 98"),
    ]


@pytest.mark.parametrize(("mapping", "problem"), [
    ([], "mapping.json: expected an object of tables, got list"),
    (None, "mapping.json: expected an object of tables, got NoneType"),
    ({"interactions": {"user_id": "user", "item_id": "sku", "event_timestamp": "ts"}},
     "interactions.csv, column 'item_id': two columns of this name once 'sku' is mapped to it"),
])
def test_a_mapping_that_is_no_object_or_lands_on_a_taken_name_is_named(tmp_path, mapping, problem):
    folder = tmp_path / "shop"
    _shop(folder, interactions="user,sku,item_id,ts\n1,10,99,1700000000\n")
    (folder / "mapping.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError, match=problem):
        load(f"generic:{folder}")


def test_check_reports_bad_prices_and_weights_and_keeps_their_rows(tmp_path):
    """A bad number is reported, not nulled in silence; its row stays (a blank is a missing value,
    the same as a bad one once reported), so no unknown-item noise follows."""
    spec = _shop(tmp_path / "shop",
                 interactions="user,item,ts,weight\n1,10,1700000000,4\n2,11,1700000000,4/5\n"
                              "3,10,1700000000,\n",
                 items='item,name,price\n10,A,"12,99"\n11,B,\n12,C,-1\n',
                 mapping={"interactions": {"user_id": "user", "item_id": "item",
                                           "event_timestamp": "ts"},
                          "items": {"item_id": "item", "title": "name"}})
    found = [(p.source.split("/")[-1], p.column, p.row, p.problem) for p in check(spec)]
    assert found == [
        ("interactions.csv", "weight", 2, "not a number: '4/5'"),
        ("items.csv", "price", 1, "not a number: '12,99'"),
        ("items.csv", "price", 3, "not a finite number >= 0: '-1'"),
    ]


def test_check_of_good_data_finds_nothing_and_load_still_raises_the_first(tmp_path):
    assert check(_shop(tmp_path / "good", interactions="user,item,ts\n1,10,1700000000\n")) == []
    spec = _shop(tmp_path / "bad", interactions="user,item,ts\nx,10,1700000000\n")
    with pytest.raises(DataError, match="row 1: not an integer: 'x'"):
        load(spec)


def test_check_names_every_missing_column_and_file(tmp_path):
    folder = tmp_path / "shop"
    _shop(folder, interactions="customer,item\n1,10\n")
    (folder / "items.csv").unlink()
    problems = [str(p) for p in check(f"generic:{folder}")]
    assert any("column 'user': missing (mapped from 'user')" in p for p in problems)
    assert any("column 'ts': missing (mapped from 'ts')" in p for p in problems)
    assert any("items.csv: file not found" in p for p in problems)


def test_parquet_list_categories_and_epoch_seconds(tmp_path):
    folder = tmp_path / "shop"
    folder.mkdir()
    pd.DataFrame({"user_id": [1, 2], "item_id": [10, 11],
                  "event_timestamp": [1_700_000_000, 1_700_000_060]}).to_parquet(
        folder / "interactions.parquet")
    pd.DataFrame({"item_id": [10, 11], "title": ["A", "B"], "categories": [["x", "y"], []],
                  "price": [1.5, None]}).to_parquet(folder / "items.parquet")
    data = load(f"generic:{folder}")
    assert data.items["categories"].tolist() == [["x", "y"], []]
    assert data.items["created_at"].tolist() == data.interactions["event_timestamp"].tolist()
