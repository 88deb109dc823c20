"""`PlatformSettings`: the `TWOTOWER_*` settings the service and the pipelines share."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from index import EdgeSettings, ServerSettings, open_backend
from index.settings import PlatformSettings

pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")


def test_server_backend_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("TWOTOWER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TWOTOWER_INDEX__BACKEND", "server")
    monkeypatch.setenv("TWOTOWER_INDEX__URL", ":memory:")
    monkeypatch.setenv("TWOTOWER_INDEX__SHARD_NUMBER", "2")
    index = PlatformSettings().index_settings()
    assert isinstance(index, ServerSettings)
    assert (index.url, index.shard_number, index.path) == (":memory:", 2, tmp_path / "index")
    with open_backend(index) as backend:
        assert backend.kind == "server" and backend.live_location() is None


def test_index_fields_without_a_backend_are_edge_under_the_data_dir(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("TWOTOWER_INDEX__SEARCH_THREADS", "2")
    index = PlatformSettings(data_dir=tmp_path).index_settings()
    assert isinstance(index, EdgeSettings)
    assert (index.path, index.search_threads) == (tmp_path / "index", 2)
    monkeypatch.delenv("TWOTOWER_INDEX__SEARCH_THREADS")
    assert PlatformSettings(data_dir=tmp_path).index_settings() == EdgeSettings(path=tmp_path / "index")


def test_an_index_path_of_its_own_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOTOWER_INDEX__PATH", str(tmp_path / "shards"))
    assert PlatformSettings(data_dir=tmp_path).index_settings().path == tmp_path / "shards"


@pytest.mark.parametrize(("variables", "location"), [
    ({"TWOTOWER_INDEX__URL": "http://qdrant:6333"}, r"index\.edge\.url"),  # no backend: edge
    ({"TWOTOWER_INDEX__BACKEND": "server", "TWOTOWER_INDEX__SEARCH_THREADS": "1"},
     r"index\.server\.search_threads"),
    ({"TWOTOWER_INDEX__BACKEND": "cloud"}, r"index\n.*'cloud'"),
    ({"TWOTOWER_ONLINE_STORE": "memcached"}, r"online_store\n"),
])
def test_bad_settings_name_the_field(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str],
                                     location: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=location):
        PlatformSettings()


def test_feature_store_is_the_repository_under_the_data_dir(tmp_path: Path) -> None:
    config = PlatformSettings(data_dir=tmp_path, online_store="redis").feature_store()
    assert (config.repo_dir, config.online_store) == (tmp_path / "feature_repo", "redis")
