"""Online reads: the service's direct reads equal Feast's own online features."""

from __future__ import annotations

from feature_repo.store import FeatureStoreConfig, online_user_features, open_store
from services.online import OnlineFeatures


def test_online_reads_equal_feasts_own_online_features(service):
    store = open_store(FeatureStoreConfig(repo_dir=service.home / "feature_repo"))
    users = service.dataset.interactions["user_id"].value_counts().index[20:25].tolist()
    expected = online_user_features(store, users)
    online = OnlineFeatures(store)
    for row in expected.itertuples():
        user = online.user(row.user_id)
        assert list(user.recent_item_ids) == list(row.recent_item_ids)
        assert list(user.recent_timestamps) == list(row.recent_timestamps)
        assert list(user.profile_tokens) == list(row.profile_tokens) and user.age == row.age
    assert not online.user(10**12).known
    item = int(service.dataset.items["item_id"].iloc[0])
    row = service.dataset.items.set_index("item_id").loc[item]
    found = online.items([item, 10**12])
    assert list(found) == [item] and list(found[item].categories) == list(row["categories"])
    stock = store.get_online_features(features=["item_stock:quantity"],
                                      entity_rows=[{"item_id": item}]).to_dict()["quantity"][0]
    assert found[item].stock == stock
