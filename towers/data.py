"""Training data for the towers: point-in-time frames, vocabularies, encoded batches and negatives.

The canonical input is a *training frame*, one row per (user_id, item_id, event_timestamp) with the
columns Feast's `get_historical_features` returns (history strictly before the row's time):
`age`, `profile_tokens`, `recent_item_ids`, `recent_timestamps`, `event_count`. `training_frame`
builds the same frame straight from a Dataset so the towers run without a feature store.

Training uses `prefix_batches`, which encodes every prefix of a user's sequence in one causal pass
(SASRec-style). Each target's query position is the last event *strictly before* its timestamp,
so events in the same second never see each other, exactly like the frame.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

AGE_EDGES = [18, 25, 35, 45, 50, 56]  # MovieLens-1M's own age groups; bucket 0 means unknown
PROFILE_SKIP = {"user_id", "age", "zip_code"}  # numeric or near-unique columns are not tokens
MAX_CATEGORIES = 8  # per item; more are truncated
MAX_TITLE_TOKENS = 12
MAX_PROFILE_TOKENS = 8
GAP_BUCKETS = 34  # 0 = first event in the window, then 1 + log2(1 + seconds since the previous)
USER_COLUMNS = ["user_id", "event_timestamp", "age", "profile_tokens", "recent_item_ids",
                "recent_timestamps"]


def _hash(token: str, buckets: int) -> int:
    """Stable across processes (unlike `hash`); 0 is kept for padding."""
    return zlib.crc32(token.encode()) % (buckets - 1) + 1


def unix_seconds(values: pd.Series) -> np.ndarray:
    return (values.astype("datetime64[us, UTC]").astype("int64") // 1_000_000).to_numpy()


# ---------------------------------------------------------------- frames from a Dataset

def user_profiles(users: pd.DataFrame) -> pd.DataFrame:
    """user_id, age and `profile_tokens` ("column=value" for every categorical profile column)."""
    columns = [c for c in users.columns if c not in PROFILE_SKIP]
    values = users[columns].to_numpy(dtype=object).reshape(len(users), len(columns))
    tokens = [[f"{c}={v}" for c, v in zip(columns, row, strict=True) if pd.notna(v)]
              for row in values]
    age = users["age"].astype("Int64") if "age" in users else pd.Series(pd.NA, index=users.index,
                                                                       dtype="Int64")
    return pd.DataFrame({"user_id": users["user_id"].to_numpy(), "age": age.to_numpy(),
                         "profile_tokens": tokens})


def sort_events(interactions: pd.DataFrame) -> pd.DataFrame:
    """Events by user, then time, ties kept in file order (a stable sort)."""
    return interactions.sort_values(["user_id", "event_timestamp"], kind="stable")


def histories_before(interactions: pd.DataFrame, entities: pd.DataFrame,
                     max_len: int | None) -> pd.DataFrame:
    """Each entity's last `max_len` items strictly before its time (same second = not before).

    Returns `recent_item_ids`, `recent_timestamps` (unix s, oldest first) and `event_count` (all
    events before t), indexed like `entities` (columns user_id, event_timestamp).
    """
    events = sort_events(interactions)
    users = events["user_id"].to_numpy()
    items = events["item_id"].to_numpy()
    seconds = unix_seconds(events["event_timestamp"])
    starts = np.searchsorted(users, np.unique(users))
    bounds = dict(zip(np.unique(users).tolist(),
                      zip(starts.tolist(), np.append(starts[1:], len(users)).tolist(),
                          strict=True), strict=True))
    when = unix_seconds(entities["event_timestamp"])
    history, stamps, counts = [], [], []
    for user, t in zip(entities["user_id"].tolist(), when.tolist(), strict=True):
        lo, hi = bounds.get(user, (0, 0))
        end = lo + int(np.searchsorted(seconds[lo:hi], t, side="left"))
        begin = end - (end - lo if max_len is None else min(max_len, end - lo))
        history.append(items[begin:end].tolist())
        stamps.append(seconds[begin:end].tolist())
        counts.append(end - lo)
    return pd.DataFrame({"recent_item_ids": history, "recent_timestamps": stamps,
                         "event_count": counts}, index=entities.index)


def training_frame(interactions: pd.DataFrame, users: pd.DataFrame, *,
                   entities: pd.DataFrame | None = None, max_len: int | None = 50) -> pd.DataFrame:
    """The frame Feast would return for `entities` (default: every interaction), from raw tables."""
    entities = interactions[["user_id", "item_id", "event_timestamp"]] if entities is None \
        else entities
    frame = entities.reset_index(drop=True).merge(user_profiles(users), on="user_id", how="left")
    frame["profile_tokens"] = [t if isinstance(t, list) else [] for t in frame["profile_tokens"]]
    return pd.concat([frame, histories_before(interactions, frame, max_len)], axis=1)


# ---------------------------------------------------------------- vocabularies

@dataclass
class Vocab:
    """Everything needed to turn raw ids and content into model indices; saved with the model."""

    item_ids: list[int]  # items with an ID embedding, index i+1; others are cold (index 0)
    user_ids: list[int]
    categories: list[str]
    price_edges: list[float]
    year_edges: list[float]
    title_buckets: int
    profile_buckets: int

    @classmethod
    def build(cls, interactions: pd.DataFrame, items: pd.DataFrame, *, title_buckets: int,
              profile_buckets: int) -> Vocab:
        """ID vocabularies from training interactions only, content vocabularies from items."""
        categories = sorted({c for cats in items["categories"] for c in cats})
        price = items["price"].dropna().to_numpy(dtype=float)
        years = _item_seconds(items)
        quantiles = np.linspace(0, 1, 9)[1:-1]  # 8 buckets
        return cls(item_ids=sorted(interactions["item_id"].unique().tolist()),
                   user_ids=sorted(interactions["user_id"].unique().tolist()),
                   categories=categories,
                   price_edges=np.unique(np.quantile(price, quantiles)).tolist() if len(price)
                   else [],
                   year_edges=np.unique(np.quantile(years, quantiles)).tolist(),
                   title_buckets=title_buckets, profile_buckets=profile_buckets)

    def to_dict(self) -> dict:
        return asdict(self)

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Model index per item id; 0 for items never seen in training (content only)."""
        return _lookup(np.asarray(self.item_ids, dtype=np.int64), np.asarray(ids, dtype=np.int64))

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return _lookup(np.asarray(self.user_ids, dtype=np.int64), np.asarray(ids, dtype=np.int64))


def _lookup(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(known) == 0:
        return np.zeros(len(ids), dtype=np.int64)
    pos = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
    return np.where(known[pos] == ids, pos + 1, 0)


def _item_seconds(items: pd.DataFrame) -> np.ndarray:
    if "created_at_s" in items:
        return items["created_at_s"].fillna(0).to_numpy(dtype=np.int64)
    if "created_at" not in items:
        raise ValueError("items frame: missing column 'created_at' (or 'created_at_s')")
    created = items["created_at"].astype("datetime64[us, UTC]")
    return np.where(created.isna(), 0, created.astype("int64") // 1_000_000)


def _padded(rows: list[list[int]], width: int) -> torch.Tensor:
    out = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :min(len(row), width)] = row[:width]
    return torch.from_numpy(out)


def encode_items(vocab: Vocab, items: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Item inputs: id index (N,), categories (N, C), price (N,), year (N,), title tokens (N, T)."""
    for column in ("item_id", "categories", "price", "title"):
        if column not in items:
            raise ValueError(f"items frame: missing column {column!r}")
    cat_index = {c: i + 1 for i, c in enumerate(vocab.categories)}
    cats = [[cat_index[c] for c in cs if c in cat_index] for cs in items["categories"]]
    titles = [[_hash(w, vocab.title_buckets) for w in re.findall(r"[a-z0-9]+", str(t).lower())]
              for t in items["title"].fillna("")]
    price = items["price"].to_numpy(dtype=float)
    price_bucket = np.where(np.isnan(price), 0, np.searchsorted(vocab.price_edges, price) + 1)
    return {
        "id": torch.from_numpy(vocab.item_index(items["item_id"].to_numpy())),  # (N,)
        "categories": _padded(cats, MAX_CATEGORIES),  # (N, C)
        "price": torch.from_numpy(price_bucket.astype(np.int64)),  # (N,)
        "year": torch.from_numpy(np.searchsorted(vocab.year_edges, _item_seconds(items)) + 1),
        "title": _padded(titles, MAX_TITLE_TOKENS),  # (N, T)
    }


def _profile(vocab: Vocab, ages: pd.Series, tokens: pd.Series) -> tuple[torch.Tensor, torch.Tensor]:
    age = pd.array(ages, dtype="Int64")
    age_bucket = np.where(age.isna(), 0, np.searchsorted(AGE_EDGES, age.fillna(0), side="right")
                          + 1)
    rows = [[_hash(t, vocab.profile_buckets) for t in (ts if isinstance(ts, list | np.ndarray)
                                                        else [])] for ts in tokens]
    return torch.from_numpy(age_bucket.astype(np.int64)), _padded(rows, MAX_PROFILE_TOKENS)


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Per event, the log2 bucket of the time since the previous event of the same window."""
    gaps = np.diff(np.asarray(seconds, dtype=np.int64), prepend=np.int64(0))
    buckets = 1 + np.minimum(np.log2(1 + np.maximum(gaps, 0)).astype(np.int64), GAP_BUCKETS - 2)
    buckets[:1] = 0
    return buckets


def _context(seconds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Hour of day and weekday (UTC) of the query time; 1970-01-01 was a Thursday (3)."""
    return (torch.from_numpy((seconds // 3600) % 24), torch.from_numpy((seconds // 86400 + 3) % 7))


# ---------------------------------------------------------------- user batches

@dataclass
class UserBatch:
    """Encoded user side. `seq` holds histories left-aligned; `query_row`/`query_pos` pick, per
    query, the sequence row and the position of the last visible event (-1: no history)."""

    seq: torch.Tensor  # (B, L) item indices, 0 = padding or unknown
    seq_mask: torch.Tensor  # (B, L) True where an event is
    seq_gap: torch.Tensor  # (B, L) `gap_buckets` of the history's timestamps
    user: torch.Tensor  # (B,) user index, 0 = unknown
    age: torch.Tensor  # (B,)
    profile: torch.Tensor  # (B, P) hashed tokens
    query_row: torch.Tensor  # (Q,)
    query_pos: torch.Tensor  # (Q,)
    hour: torch.Tensor  # (Q,)
    weekday: torch.Tensor  # (Q,)


def encode_users(vocab: Vocab, frame: pd.DataFrame, max_len: int) -> UserBatch:
    """One query per row of a Feast-shaped frame, using its last `max_len` history items."""
    missing = [c for c in USER_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"user frame: missing column {missing[0]!r}")
    hist = [vocab.item_index(np.asarray(h, dtype=np.int64)[-max_len:]).tolist() if len(h) else []
            for h in frame["recent_item_ids"]]
    lengths = torch.tensor([len(h) for h in hist], dtype=torch.int64)
    seq = _padded(hist, max_len)  # (B, L)
    gaps = _padded([gap_buckets(np.asarray(s, dtype=np.int64)[-max_len:]).tolist()
                    for s in frame["recent_timestamps"]], max_len)  # (B, L)
    age, profile = _profile(vocab, frame["age"], frame["profile_tokens"])
    hour, weekday = _context(unix_seconds(frame["event_timestamp"]))
    mask = torch.arange(seq.shape[1]) < lengths[:, None]  # (B, L)
    return UserBatch(seq=seq, seq_mask=mask, seq_gap=gaps,
                     user=torch.from_numpy(vocab.user_index(frame["user_id"].to_numpy())),
                     age=age, profile=profile, query_row=torch.arange(len(frame)),
                     query_pos=lengths - 1, hour=hour, weekday=weekday)


@dataclass
class PrefixChunk:
    """A window of one user's events and the targets whose query falls inside it."""

    user_id: int
    items: np.ndarray  # (W,) item ids, oldest first
    item_seconds: np.ndarray  # (W,) their times
    query_pos: np.ndarray  # (T,) position in the window of the last event strictly before t, or -1
    targets: np.ndarray  # (T,) target item ids
    seconds: np.ndarray  # (T,) target times
    user_items: np.ndarray  # (n,) the user's whole sequence, for future-item targets
    target_index: np.ndarray  # (T,) each target's position in `user_items`


def prefix_chunks(interactions: pd.DataFrame, max_len: int) -> list[PrefixChunk]:
    """Cut each user's sequence into windows so that every prefix sees only events before its t.

    A target whose point-in-time history fits in `max_len` sees exactly that history. For longer
    histories windows overlap by half, so a prefix sees at least the latest `max_len // 2` events of
    its history (a suffix of what the lookup gives), never more and never anything at or after t.
    """
    events = sort_events(interactions)
    half = max(max_len // 2, 1)
    chunks = []
    for user, group in events.groupby("user_id", sort=True):
        items = group["item_id"].to_numpy()
        seconds = unix_seconds(group["event_timestamp"])
        last = np.searchsorted(seconds, seconds, side="left") - 1  # (n,) last event before t
        window = np.maximum(last // half - 1, 0)
        for k in np.unique(window):
            start = int(k) * half
            sel = window == k
            chunks.append(PrefixChunk(int(user), items[start:start + max_len],
                                      seconds[start:start + max_len], last[sel] - start,
                                      items[sel], seconds[sel], items, np.flatnonzero(sel)))
    return chunks


@dataclass
class PrefixBatch:
    users: UserBatch
    targets: torch.Tensor  # (Q,) item indices: the event at the query's time
    future: torch.Tensor | None = None  # (Q,) a random later event within the horizon


def batch_chunks(vocab: Vocab, chunks: list[PrefixChunk], profiles: pd.DataFrame, *,
                 horizon: int = 0, rng: np.random.Generator | None = None) -> PrefixBatch:
    """Stack chunks into one causal pass; `profiles` is `user_profiles(users)` indexed by user_id.

    With `horizon` > 0 each query also gets a `future` label: the user's event a random 0 to
    horizon-1 steps after its target (a label, never an input, so nothing leaks into the query).
    """
    width = max(len(c.items) for c in chunks)
    seq = _padded([vocab.item_index(c.items).tolist() for c in chunks], width)  # (B, L)
    gaps = _padded([gap_buckets(c.item_seconds).tolist() for c in chunks], width)  # (B, L)
    lengths = torch.tensor([len(c.items) for c in chunks])
    rows = profiles.reindex([c.user_id for c in chunks])
    age, profile = _profile(vocab, rows["age"], rows["profile_tokens"])
    hour, weekday = _context(np.concatenate([c.seconds for c in chunks]))
    counts = [len(c.targets) for c in chunks]
    users = UserBatch(
        seq=seq, seq_mask=torch.arange(seq.shape[1]) < lengths[:, None], seq_gap=gaps,  # (B, L)
        user=torch.from_numpy(vocab.user_index(np.array([c.user_id for c in chunks]))),
        age=age, profile=profile,
        query_row=torch.repeat_interleave(torch.arange(len(chunks)), torch.tensor(counts)),  # (Q,)
        query_pos=torch.from_numpy(np.concatenate([c.query_pos for c in chunks])),  # (Q,)
        hour=hour, weekday=weekday)
    targets = vocab.item_index(np.concatenate([c.targets for c in chunks]))
    future = None
    if horizon > 0:
        rng = rng or np.random.default_rng(0)
        future = torch.from_numpy(vocab.item_index(np.concatenate([
            c.user_items[np.minimum(c.target_index + rng.integers(0, horizon, len(c.targets)),
                                    len(c.user_items) - 1)] for c in chunks])))  # (Q,)
    return PrefixBatch(users, torch.from_numpy(targets), future)  # (Q,)


def iterate_batches(vocab: Vocab, chunks: list[PrefixChunk], profiles: pd.DataFrame, *,
                    batch_size: int, rng: np.random.Generator, horizon: int = 0
                    ) -> Iterator[PrefixBatch]:
    """One epoch of `batch_size` chunks of similar length (little padding), in random order."""
    noisy = np.array([len(c.items) for c in chunks]) * rng.uniform(0.8, 1.25, len(chunks))
    order = np.argsort(noisy, kind="stable")
    starts = rng.permutation(np.arange(0, len(order), batch_size))
    for start in starts:
        yield batch_chunks(vocab, [chunks[i] for i in order[start:start + batch_size]], profiles,
                           horizon=horizon, rng=rng)


# ---------------------------------------------------------------- negatives

def sampled_candidates(targets: torch.Tensor, *, n_items: int, n_uniform: int,
                       log_q: torch.Tensor, generator: torch.Generator
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates for the sampled softmax: the batch's distinct targets plus uniform samples.

    Distinct targets mean an item that is another query's positive appears once, as this query's
    label or a negative, never as a false copy of the positive. Returns candidate indices (C,),
    each query's label column (Q,), and the logQ correction (C,): log of the expected number of
    times the candidate is drawn (in-batch by popularity, uniform by 1/n_items).
    """
    in_batch, labels = torch.unique(targets, return_inverse=True)  # (C0,), (Q,)
    if n_uniform:
        extra = torch.randint(1, n_items + 1, (n_uniform,), generator=generator)  # (M,)
        extra = extra[~torch.isin(extra, in_batch)].unique()
        candidates = torch.cat([in_batch, extra])  # (C,)
    else:
        candidates = in_batch
    expected = len(targets) * log_q[candidates].exp() + n_uniform / n_items  # (C,)
    return candidates, labels, expected.log()


def catalogue_content(vocab: Vocab, items: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Content of every vocabulary item by model index; row 0 (unknown item) is all padding."""
    by_id = items.drop_duplicates("item_id").set_index("item_id")
    missing = [i for i in vocab.item_ids if i not in by_id.index]
    if missing:
        raise ValueError(f"items frame: no row for item_id {missing[0]} seen in interactions")
    encoded = encode_items(vocab, by_id.loc[vocab.item_ids].reset_index())
    return {name: torch.cat([torch.zeros_like(value[:1]), value])  # (N + 1, ...)
            for name, value in encoded.items()}


def seen_mask(users: UserBatch, columns: torch.Tensor, n_items: int) -> torch.Tensor:
    """(Q, C) True where candidate column c is an item query q has already seen (visible history).

    Serving never returns seen items, so the loss need not push them down; labels are unmasked by
    the caller (a repeat purchase stays a valid positive).
    """
    C = len(columns)
    table = torch.full((n_items + 1,), C, dtype=torch.int64)
    table[columns] = torch.arange(C)
    seen = users.seq[users.query_row]  # (Q, L)
    valid = torch.arange(seen.shape[1]) <= users.query_pos[:, None]  # (Q, L)
    index = table[torch.where(valid, seen, 0)]  # (Q, L), padding -> dummy column C
    mask = torch.zeros(len(seen), C + 1, dtype=torch.bool)
    return mask.scatter_(1, index, True)[:, :C]  # (Q, C)
