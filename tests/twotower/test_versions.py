"""`twotower versions` lists, promotes, rolls back and prunes a data directory's index versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from index import IndexSpec, build_version
from tests.index.conftest import open_live_index, random_items
from twotower.cli import main


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A data directory with a live version (1) and two ready ones (2, 3)."""
    live = open_live_index("edge", tmp_path, random_items(50))
    for seed in (1, 2):
        build_version(random_items(50, seed=seed, first_id=1000 * seed), registry=live.registry,
                      spec=IndexSpec(dim=16), model_version_id=live.model_version_id)
    live.backend.close()
    live.registry.close()
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], home: Path, *action: str) -> object:
    main(["versions", action[0], "--home", str(home), "--json", *action[1:]])  # as the demo prints
    return json.loads(capsys.readouterr().out)


def test_versions_promote_rollback_and_prune_keep_the_live_and_rollback_target(home, capsys):
    assert [(v["id"], v["status"]) for v in run(capsys, home, "list")] == [
        (1, "live"), (2, "ready"), (3, "ready")]

    assert run(capsys, home, "promote", "3")["status"] == "live"
    listed = {v["id"]: v for v in run(capsys, home, "list")}
    assert listed[1]["status"] == "retired" and listed[1]["rollback_target"]

    assert run(capsys, home, "prune", "--keep", "0")["deleted"] == [2]
    assert run(capsys, home, "rollback")["id"] == 1
    assert {v["id"]: v["status"] for v in run(capsys, home, "list")} == {1: "live", 3: "retired"}


def test_promoting_an_unknown_version_is_one_clear_line(home):
    with pytest.raises(SystemExit, match="twotower versions promote: index version 42: not registered"):
        main(["versions", "promote", "42", "--home", str(home)])


def test_versions_list_prints_a_table(home, capsys):
    main(["versions", "--home", str(home), "list"])  # the options before the action parse too
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["id", "status", "model", "items"] and "live" in out[1]


def test_a_home_that_does_not_exist_is_refused_not_created(tmp_path):
    with pytest.raises(SystemExit, match=f"--home {tmp_path / 'typo'}: no such data directory"):
        main(["versions", "list", "--home", str(tmp_path / "typo")])
    assert not (tmp_path / "typo").exists()
