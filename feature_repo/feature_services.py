"""Feature services: the versioned feature sets the towers and the service read."""

from feast import FeatureService

# `feast apply` imports each definitions file as a top-level module of the repository folder;
# the package's own code imports it as part of `feature_repo`.
if __package__:
    from .item_features import item_content_fv, item_popularity_fv, item_stock_fv
    from .user_features import user_history_fv, user_profile_fv
else:
    from item_features import item_content_fv, item_popularity_fv, item_stock_fv
    from user_features import user_history_fv, user_profile_fv

two_tower_v1 = FeatureService(
    name="two_tower_v1",
    features=[user_profile_fv, user_history_fv, item_content_fv, item_stock_fv, item_popularity_fv],
    description="Training rows for the towers: user profile and history, item content, stock and "
                "popularity, all as of the row's timestamp.")

user_online_v1 = FeatureService(
    name="user_online_v1", features=[user_profile_fv, user_history_fv],
    description="What the service fetches to encode a user at request time.")
