"""`twotower bench item_cache` on a tiny catalogue: one line per size, and the rows it leaves. No
timing asserts: the figures go to docs/benchmarks.md."""

from __future__ import annotations

import json

from bench import item_cache


def test_each_size_reports_its_upserts_and_reads_and_only_new_rows_grow_the_cache(capsys):
    item_cache.main(["--sizes=50,200", "--upserts=20"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["items"] for line in lines] == [50, 200]
    for line in lines:  # the empty row, the catalogue, 20 new items, 20 changed category counts
        assert line["rows_after"] == 1 + line["items"] + 20 + 20
        assert all(line[f"{kind}_p50_us"] > 0 for kind in
                   ("new", "same_categories", "other_categories", "read_100"))
