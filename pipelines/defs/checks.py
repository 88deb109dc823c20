"""Blocking checks between training and promotion: any failure stops the run, the live version keeps serving.

Each check is named as the claim it verifies and reports its numbers as metadata.
"""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from feature_repo.datasets import Dataset
from feature_repo.item_features import item_popularity_fv, item_stock_fv
from feature_repo.store import when_absent
from feature_repo.tables import WINDOWS_DAYS
from index.catalogue import latest_stock
from index.quality import ann_recall, unsearchable_items
from pipelines.defs.embeddings import item_embeddings
from pipelines.defs.features import training_examples
from pipelines.defs.index import item_index
from pipelines.defs.resources import FeatureStoreResource, RegistryResource
from pipelines.defs.training import two_tower_model, validation_metadata
from pipelines.defs.values import IndexBuild, ItemEmbeddings, ModelVersionRef, TrainingExamples, query_sample
from towers import evaluate, graph
from towers.data import unix_seconds

LEAKAGE_SAMPLE = 300  # training rows recomputed from raw events; a leak shows in a handful
RECALL_TARGET = 0.97  # ANN recall@10 against exact search on the new version
SEARCHABLE_SAMPLE = 2_000  # in-stock items looked up by their own vector (all of them below this)


class PromotionConfig(dg.Config):
    ndcg_tolerance: float = 0.01  # absolute NDCG@10 the new model may lose against the live one


class BaselineGateConfig(dg.Config):
    min_margin_over_popularity: float = 0.0  # towers no better than Popularity are not served


@dg.asset_check(asset=training_examples, blocking=True, additional_ins={"raw_tables": dg.AssetIn()})
def training_examples_have_no_leakage(training_examples: TrainingExamples, raw_tables: Dataset,
                                      feature_store: FeatureStoreResource) -> dg.AssetCheckResult:
    """A sample of the rows the run joined equals features recomputed from raw events strictly
    before each row's time (the days it kept were checked when they were joined)."""
    examples = ds.dataset(training_examples.joined_files(), format="parquet")
    total = examples.count_rows()
    picked = np.random.default_rng(0).choice(total, size=min(LEAKAGE_SAMPLE, total), replace=False)
    rows = examples.take(np.sort(picked)).to_pandas()
    # Only the sampled users' and items' rows are needed: group those alone, in time order.
    def grouped(frame: pd.DataFrame, key: str) -> dict:
        mine = frame[frame[key].isin(rows[key])].sort_values("event_timestamp", kind="stable")
        return dict(tuple(mine.groupby(key)))
    events = raw_tables.interactions
    by_user, by_item = grouped(events, "user_id"), grouped(events, "item_id")
    stock_by_item = grouped(raw_tables.stock, "item_id")
    length = feature_store.config.history_length
    empty = events.iloc[:0]
    (quantity,) = (f.name for f in item_stock_fv.features)
    absent = {name: fill.as_py() for name, fill in when_absent().items()}
    popularity = [f.name for f in item_popularity_fv.features]  # counts over WINDOWS_DAYS, in order
    mismatches: dict[str, list[str]] = {"history": [], "event_count": [], "stock": [], "popularity": []}
    for row in rows.itertuples():
        t, where = row.event_timestamp, f"user {row.user_id} item {row.item_id} at {row.event_timestamp}"
        before = by_user.get(row.user_id, empty)
        before = before[before["event_timestamp"] < t]
        if [int(i) for i in row.recent_item_ids] != before["item_id"].tail(length).tolist():
            mismatches["history"].append(where)
        if int(row.event_count) != len(before):
            mismatches["event_count"].append(where)
        log = stock_by_item.get(row.item_id, empty)
        log = log[log["event_timestamp"] < t]
        expected = int(log["quantity"].iloc[-1]) if len(log) else absent.get(quantity)
        actual = None if pd.isna(getattr(row, quantity)) else int(getattr(row, quantity))
        if actual != expected:
            mismatches["stock"].append(where)
        midnight, sales = t.floor("D"), by_item.get(row.item_id, empty)["event_timestamp"]
        counts = [int(((sales >= midnight - pd.Timedelta(days=days)) & (sales < midnight)).sum())
                  for days in WINDOWS_DAYS]
        if counts != [int(getattr(row, name)) for name in popularity]:
            mismatches["popularity"].append(where)
    return dg.AssetCheckResult(
        passed=not any(mismatches.values()),
        metadata={"rows_checked": len(rows),
                  **{f"{name}_mismatches": len(found) for name, found in mismatches.items()},
                  "first_mismatch": next((f"{n}: {f[0]}" for n, f in mismatches.items() if f), "none")})


@dg.asset_check(asset=two_tower_model, blocking=True,
                additional_ins={"raw_tables": dg.AssetIn(), "evaluation_split": dg.AssetIn()})
def training_graph_holds_only_edges_before_each_example(
        two_tower_model: ModelVersionRef, raw_tables: Dataset, evaluation_split: evaluate.Split,
        registry: RegistryResource) -> dg.AssetCheckResult:
    """The evaluated towers' interaction graph (an item encoder's input) is exactly the raw events they
    trained on, and a sample of training examples reads only edges strictly before its time.

    Towers without a graph pass, saying so.
    """
    model = registry.model_store.evaluated(two_tower_model.location).model
    edges = getattr(model.item_tower, "known_graph", None)
    if edges is None:
        return dg.AssetCheckResult(passed=True, metadata={
            "graph": f"none (item_encoder={model.config.item_encoder})"})
    users, items = np.asarray(model.vocab.user_ids), np.asarray(model.vocab.item_ids)
    seconds = edges[graph.SECOND].numpy()
    held = np.stack([users[edges[graph.USER].numpy() - 1], items[edges[graph.ITEM].numpy() - 1],
                     seconds], axis=1)  # (E, 3) ids and times, by time
    events = raw_tables.interactions
    events = events[events["event_timestamp"] < pd.Timestamp(evaluation_split.notes["validation"]["cut"])]
    trained = np.stack([events["user_id"].to_numpy(), events["item_id"].to_numpy(),
                        unix_seconds(events["event_timestamp"])], axis=1)
    same = held.shape == trained.shape and np.array_equal(_sorted_rows(held), _sorted_rows(trained))
    rows = np.random.default_rng(0).choice(len(held), min(LEAKAGE_SAMPLE, len(held)), replace=False)
    at = seconds[rows]
    visible = graph.visible_edges(seconds, model.config.graph_snapshots, at)  # (R,)
    newest = np.where(visible > 0, seconds[np.maximum(visible - 1, 0)], np.iinfo(np.int64).min)
    leaking = rows[newest >= at]
    return dg.AssetCheckResult(passed=same and not len(leaking), metadata={
        "edges": len(held), "training_events": len(trained), "edges_are_the_training_events": same,
        "rows_checked": len(rows), "rows_reading_a_graph": int((visible > 0).sum()),
        "rows_reading_a_later_edge": len(leaking),
        "first_leak": f"training event at {int(seconds[leaking[0]])}" if len(leaking) else "none"})


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    """The rows of a 2-d array in lexicographic order (compares two multisets of rows)."""
    return rows[np.lexsort(rows.T[::-1])]


@dg.asset_check(asset=two_tower_model, blocking=True)
def training_loss_is_finite_and_decreasing(two_tower_model: ModelVersionRef,
                                           registry: RegistryResource) -> dg.AssetCheckResult:
    """Every recorded mean loss is finite, and the last ends below the first and below chance, for
    the evaluated fit and the served refit alike (metadata of the refit prefixed `refit_`).

    Chance is log(catalogue size), the softmax loss of uniform scores: a model that learned
    nothing sits there. With one epoch (a short time budget) that is the only comparison.
    """
    store, location = registry.model_store, two_tower_model.location
    fits = {"": store.evaluated(location), "refit_": store.load(location)}
    passed, metadata = True, {}
    for prefix, artifact in fits.items():
        if prefix and artifact is fits[""]:  # a version without a refit
            continue
        losses = [h["loss"] for h in artifact.metrics["history"]]
        chance = float(np.log(len(artifact.model.vocab.item_ids)))
        finite = bool(np.isfinite(losses).all())
        decreasing = losses[-1] < chance and (len(losses) == 1 or losses[-1] < losses[0])
        passed = passed and finite and decreasing
        metadata |= {f"{prefix}{k}": v for k, v in {
            "epochs": len(losses), "first_loss": float(losses[0]), "last_loss": float(losses[-1]),
            "chance_loss": chance, "finite": finite, "decreasing": decreasing}.items()}
    return dg.AssetCheckResult(passed=passed, metadata=metadata)


@dg.asset_check(asset=two_tower_model, blocking=True,
                additional_ins={"raw_tables": dg.AssetIn(), "evaluation_split": dg.AssetIn()})
def ndcg_holds_against_live(config: PromotionConfig, two_tower_model: ModelVersionRef, raw_tables: Dataset,
                            evaluation_split: evaluate.Split,
                            registry: RegistryResource) -> dg.AssetCheckResult:
    """Test-window NDCG@10 of the new towers is at most `ndcg_tolerance` below the live towers' on it
    (each version's evaluated fit: `ModelStore.evaluated`)."""
    store = registry.model_store
    new = store.evaluated(two_tower_model.location).metrics["test"]["ndcg@10"]
    with registry.open() as reg:
        live = reg.live()
        location = reg.get_model(live.model_version_id).location if live else None
    if live is None:
        return dg.AssetCheckResult(passed=True, metadata={"new_ndcg@10": new, "live": "none yet"})
    if location is None:
        raise ValueError(f"live index version {live.id}: its model version {live.model_version_id} has "
                         "no location, so its towers cannot be evaluated")
    # The live version's evaluated fit: a refit on every event has seen this test window.
    recommend = evaluate.two_tower(store.evaluated(location), raw_tables.items)
    old = evaluate.evaluate(recommend, evaluation_split.test)["ndcg@10"]
    return dg.AssetCheckResult(passed=new >= old - config.ndcg_tolerance, metadata={
        "new_ndcg@10": new, "live_ndcg@10": old, "difference": new - old,
        "tolerance": config.ndcg_tolerance, "live_model_version_id": live.model_version_id})


@dg.asset_check(asset=two_tower_model, blocking=True,
                additional_ins={"raw_tables": dg.AssetIn(), "evaluation_split": dg.AssetIn()})
def towers_beat_popularity_on_validation(config: BaselineGateConfig, two_tower_model: ModelVersionRef,
                                         raw_tables: Dataset, evaluation_split: evaluate.Split,
                                         registry: RegistryResource) -> dg.AssetCheckResult:
    """The evaluated towers' validation NDCG@10, as served (with their popularity prior, if any), is
    above Popularity's on the same split (by more than `min_margin_over_popularity`); the towers'
    score without the prior is reported beside it.

    Popularity and EASE were scored by the training stage (the model's `baselines` metrics); the
    margin over EASE is reported, not required.
    """
    artifact = registry.model_store.evaluated(two_tower_model.location)
    if "baselines" not in artifact.metrics:
        raise ValueError(f"model version {two_tower_model.id}: its metrics have no 'baselines' "
                         "(Popularity and EASE validation scores); was it trained by two_tower_model?")
    scores = evaluate.Validator(evaluation_split.validation, raw_tables.items).by_prior(
        artifact, (artifact.prior.weight, 0.0))
    towers, alone = scores[artifact.prior.weight], scores[0.0]
    metadata = validation_metadata({**artifact.metrics, "val": towers})
    return dg.AssetCheckResult(passed=metadata["margin_over_popularity"] > config.min_margin_over_popularity,
                               metadata={**metadata, "min_margin": config.min_margin_over_popularity,
                                         "popularity_prior": artifact.prior.weight,
                                         "val_ndcg@10_without_prior": alone})


@dg.asset_check(asset=item_embeddings, blocking=True)
def item_embeddings_are_finite(item_embeddings: ItemEmbeddings,
                               registry: RegistryResource) -> dg.AssetCheckResult:
    """No vector holds a NaN or an infinity."""
    ids, vectors = registry.model_store.read_embeddings(item_embeddings.model_version_id)
    bad = ~np.isfinite(vectors).all(axis=1)
    return dg.AssetCheckResult(passed=not bad.any(), metadata={
        "items": len(ids), "non_finite": int(bad.sum()),
        "first_bad_item_id": int(ids[bad][0]) if bad.any() else "none"})


@dg.asset_check(asset=item_index, blocking=True, additional_ins={"raw_tables": dg.AssetIn()})
def item_index_holds_the_catalogue(item_index: IndexBuild, raw_tables: Dataset,
                                   registry: RegistryResource) -> dg.AssetCheckResult:
    """The new version holds exactly as many items as the catalogue."""
    with registry.open() as reg:
        count = reg.backend.count(location=item_index.location)
    return dg.AssetCheckResult(passed=count == len(raw_tables.items),
                               metadata={"indexed": count, "catalogue": len(raw_tables.items)})


@dg.asset_check(asset=item_index, blocking=True,
                additional_ins={"two_tower_model": dg.AssetIn(), "evaluation_split": dg.AssetIn()})
def item_index_recall_meets_target(item_index: IndexBuild, two_tower_model: ModelVersionRef,
                                   evaluation_split: evaluate.Split,
                                   registry: RegistryResource) -> dg.AssetCheckResult:
    """ANN recall@10 against exact search, for test-window users, is at least 0.97."""
    queries = query_sample(registry.model_store.load(two_tower_model.location), evaluation_split)
    with registry.open() as reg:
        [report] = ann_recall(reg.backend, queries, location=item_index.location)
    return dg.AssetCheckResult(passed=report.recall >= RECALL_TARGET, metadata={
        "recall@10": report.recall, "target": RECALL_TARGET, "queries": report.queries,
        "mean_ms": report.mean_ms})


@dg.asset_check(asset=item_index, blocking=True,
                additional_ins={"raw_tables": dg.AssetIn(), "item_embeddings": dg.AssetIn(),
                                "two_tower_model": dg.AssetIn()})
def in_stock_items_are_searchable(item_index: IndexBuild, raw_tables: Dataset,
                                  item_embeddings: ItemEmbeddings, two_tower_model: ModelVersionRef,
                                  registry: RegistryResource) -> dg.AssetCheckResult:
    """Every in-stock item (or a sample of 2,000) comes back for its own vector under the stock
    filter, asked without the popularity prior (a popular neighbour would outscore it)."""
    ids, vectors = registry.model_store.read_embeddings(item_embeddings.model_version_id)
    vectors = registry.model_store.load(two_tower_model.location).prior.alone(vectors)
    stock = latest_stock(raw_tables.stock)
    in_stock = np.flatnonzero([stock.get(int(i), 0) > 0 for i in ids])
    rows = np.random.default_rng(0).permutation(in_stock)[:SEARCHABLE_SAMPLE]
    with registry.open() as reg:
        missing = unsearchable_items(reg.backend, ids[rows], vectors[rows], location=item_index.location)
    return dg.AssetCheckResult(passed=not missing, metadata={
        "in_stock": len(in_stock), "looked_up": len(rows), "not_found": len(missing),
        "first_not_found": missing[0] if missing else "none"})

