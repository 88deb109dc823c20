"""Training data for the towers: vocabularies, encoded batches and negatives from Feast frames.

Every user feature the towers read comes from a Feast frame (`feature_repo.store.training_frame`):
one row per (user_id, item_id, event_timestamp) with `age`, `profile_tokens`, `recent_item_ids`,
`recent_timestamps` (the last N events strictly before the row's time, oldest first) and
`event_count`. `encode_users` turns such rows into one query each (evaluation, serving).

Training uses `frame_windows`, which packs the rows into causal windows: each window *is* one
row's Feast history, and every row whose history (or, for long histories, its newest part) is a
prefix of it becomes a query at that position, so one causal pass encodes many rows and none sees
an event at or after its own time.
"""

from __future__ import annotations

import functools
import re
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from feature_repo.datasets.contract import DAY
from feature_repo.tables import WINDOWS_DAYS

AGE_EDGES = [18, 25, 35, 45, 50, 56]  # MovieLens-1M's own age groups; bucket 0 means unknown
MAX_CATEGORIES = 8  # per item; more are truncated
MAX_TITLE_TOKENS = 12
MAX_PROFILE_TOKENS = 8
GAP_BUCKETS = 34  # 0 = first event in the window, then 1 + log2(1 + seconds since the previous)
POPULARITY_BUCKETS = 16  # 0 = no interaction, then 1 + log2(count), capped (2^14 a window)
USER_COLUMNS = ["user_id", "event_timestamp", "age", "profile_tokens", "recent_item_ids",
                "recent_timestamps"]
TRAINING_COLUMNS = [*USER_COLUMNS, "item_id", "event_count"]


def _hash(token: str, buckets: int) -> int:
    """Stable across processes (unlike `hash`); 0 is kept for padding."""
    return zlib.crc32(token.encode()) % (buckets - 1) + 1


def unix_micros(values: pd.Series) -> np.ndarray:
    return values.astype("datetime64[us, UTC]").astype("int64").to_numpy()


def unix_seconds(values: pd.Series) -> np.ndarray:
    return unix_micros(values) // 1_000_000


def sort_events(interactions: pd.DataFrame) -> pd.DataFrame:
    """Events by user, then time, ties kept in file order (a stable sort)."""
    return interactions.sort_values(["user_id", "event_timestamp"], kind="stable")


# ---------------------------------------------------------------- vocabularies

@dataclass(frozen=True)
class Vocab:
    """Everything needed to turn raw ids and content into model indices; saved with the model.

    Frozen: its id lookups keep sorted arrays of the id lists, built once (a list of a million
    ids took 15 ms to convert, at every lookup of a user's history)."""

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
        years = item_seconds(items)
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

    @functools.cached_property
    def _item_array(self) -> np.ndarray:
        return np.asarray(self.item_ids, dtype=np.int64)

    @functools.cached_property
    def _user_array(self) -> np.ndarray:
        return np.asarray(self.user_ids, dtype=np.int64)

    def item_index(self, ids: np.ndarray) -> np.ndarray:
        """Model index per item id; 0 for items never seen in training (content only)."""
        return _lookup(self._item_array, np.asarray(ids, dtype=np.int64))

    def user_index(self, ids: np.ndarray) -> np.ndarray:
        return _lookup(self._user_array, np.asarray(ids, dtype=np.int64))


def _lookup(known: np.ndarray, ids: np.ndarray) -> np.ndarray:
    if len(known) == 0:
        return np.zeros(len(ids), dtype=np.int64)
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return np.where(known[pos] == ids, pos + 1, 0)


def item_seconds(items: pd.DataFrame) -> np.ndarray:
    """Each item's creation time in Unix seconds, floored; a missing one is 0, as served."""
    if "created_at_s" in items:
        return items["created_at_s"].fillna(0).to_numpy(dtype=np.int64)
    if "created_at" not in items:
        raise ValueError("items frame: missing column 'created_at' (or 'created_at_s')")
    created = items["created_at"].astype("datetime64[us, UTC]")
    return np.where(created.isna(), 0, created.astype("int64") // 1_000_000)


def _padded(rows: list[list[int]] | list[np.ndarray], width: int) -> torch.Tensor:
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
        "year": torch.from_numpy(np.searchsorted(vocab.year_edges, item_seconds(items)) + 1),
        "title": _padded(titles, MAX_TITLE_TOKENS),  # (N, T)
    }


def _profile(vocab: Vocab, ages: pd.Series | list, tokens: pd.Series | list
             ) -> tuple[torch.Tensor, torch.Tensor]:
    # Per value, not `pd.array(ages, dtype="Int64")`: that costs ~40 us even for one serving row.
    known = [not pd.isna(a) for a in ages]
    age = np.array([a if k else 0 for a, k in zip(ages, known, strict=True)], dtype=np.int64)
    age_bucket = np.where(known, np.searchsorted(AGE_EDGES, age, side="right") + 1, 0)
    rows = [[_hash(t, vocab.profile_buckets) for t in (ts if isinstance(ts, list | tuple | np.ndarray)
                                                        else [])] for ts in tokens]
    return torch.from_numpy(age_bucket.astype(np.int64)), _padded(rows, MAX_PROFILE_TOKENS)


def elapsed_bucket(seconds: np.ndarray) -> np.ndarray:
    """1 + log2(1 + elapsed seconds), capped at GAP_BUCKETS - 1 (0 is left for "no event")."""
    since = np.log2(1 + np.maximum(np.asarray(seconds, dtype=np.int64), 0)).astype(np.int64)
    return 1 + np.minimum(since, GAP_BUCKETS - 2)


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Per event, the log2 bucket of the time since the previous event of the same window."""
    seconds = np.asarray(seconds, dtype=np.int64)
    buckets = np.zeros(len(seconds), dtype=np.int64)
    buckets[1:] = elapsed_bucket(seconds[1:] - seconds[:-1])
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
    # (Q,) 1 + log2(1 + seconds from the last visible event to the query), capped; 0 = no history.
    # None where a batch does not fill it (the model then ignores it).
    query_gap: torch.Tensor | None = None


def encode_users(vocab: Vocab, frame: pd.DataFrame | dict, max_len: int) -> UserBatch:
    """One query per row of a Feast-shaped frame, using its last `max_len` history items.

    `frame` may also be a dict of the same columns (one list each, `event_timestamp` as unix
    seconds or numpy datetime64): serving encodes one user per request without pandas.
    """
    missing = [c for c in USER_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"user frame: missing column {missing[0]!r}")
    stamps = frame["event_timestamp"]
    seconds = (unix_seconds(stamps) if isinstance(stamps, pd.Series)
               else np.asarray(stamps, dtype="datetime64[s]").astype(np.int64))
    hist = [vocab.item_index(np.asarray(h, dtype=np.int64)[-max_len:]).tolist() if len(h) else []
            for h in frame["recent_item_ids"]]
    lengths = np.array([len(h) for h in hist], dtype=np.int64)
    seq = _padded(hist, max_len)  # (B, L)
    gaps = _padded([gap_buckets(np.asarray(s, dtype=np.int64)[-max_len:]).tolist()
                    for s in frame["recent_timestamps"]], max_len)  # (B, L)
    age, profile = _profile(vocab, frame["age"], frame["profile_tokens"])
    hour, weekday = _context(seconds)
    last = np.array([s[-1] if len(s) else 0 for s in frame["recent_timestamps"]], dtype=np.int64)
    query_gap = np.where(lengths > 0, elapsed_bucket(seconds - last), 0)
    mask = np.arange(seq.shape[1]) < lengths[:, None]  # (B, L)
    return UserBatch(seq=seq, seq_mask=torch.from_numpy(mask), seq_gap=gaps,
                     user=torch.from_numpy(vocab.user_index(np.asarray(frame["user_id"]))),
                     age=age, profile=profile, query_row=torch.arange(len(seconds)),
                     query_pos=torch.from_numpy(lengths - 1), hour=hour, weekday=weekday,
                     query_gap=torch.from_numpy(query_gap))  # (Q,)


@dataclass
class PrefixChunk:
    """One causal window (a Feast history, oldest first) and the frame rows queried inside it."""

    user_id: int
    items: np.ndarray  # (W,) item ids, oldest first
    item_seconds: np.ndarray  # (W,) their times
    query_pos: np.ndarray  # (T,) each row's last visible window position (-1: no history)
    targets: np.ndarray  # (T,) the rows' item ids
    seconds: np.ndarray  # (T,) the rows' times
    age: object  # the user's profile, as the rows' Feast features give it
    profile_tokens: list[str]
    rows: np.ndarray  # (T,) the rows' positions in the frame


def frame_windows(frame: pd.DataFrame, max_len: int, stride: int = 0) -> list[PrefixChunk]:
    """Pack a Feast training frame into causal windows; no row sees its own or a later event.

    A row whose history is complete (`event_count` <= max_len) is a prefix of the user's longest
    complete history: all of them share that window and each sees exactly its Feast history.
    A longer history (the last max_len events) starts later for every instant. With `stride` 0
    its rows (same-second ties) get a window of their own, so each sees its whole Feast history.
    With `stride` s > 0 a window is the history of the user's latest row not yet placed, and every
    earlier row at most s events older is a query in it too (SASRec-style): such a row sees the
    newest max_len - s .. max_len events of its Feast history, strictly before its time, so one
    causal pass serves ~s rows instead of one.
    """
    if not 0 <= stride < max_len:
        raise ValueError(f"window stride={stride} must lie in [0, max_len={max_len})")
    missing = [c for c in TRAINING_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"training frame: missing column {missing[0]!r}")
    positions = np.lexsort((unix_micros(frame["event_timestamp"]), frame["user_id"].to_numpy()))
    frame = frame.iloc[positions]
    histories = frame["recent_item_ids"].tolist()
    stamps = frame["recent_timestamps"].tolist()
    lengths = np.array([len(h) for h in histories])
    counts = frame["event_count"].to_numpy()
    cut = (counts > lengths) & (lengths != max_len)
    if (lengths > max_len).any() or cut.any():
        row = positions[np.flatnonzero((lengths > max_len) | cut)[0]]
        raise ValueError(f"training frame row {row}: a history of {lengths.max()} items does not "
                         f"match TowerConfig.max_len={max_len}; build the Feast store with "
                         f"history_length={max_len}")
    users, items = frame["user_id"].to_numpy(), frame["item_id"].to_numpy()
    seconds, ages = unix_seconds(frame["event_timestamp"]), frame["age"].tolist()
    profiles = frame["profile_tokens"].tolist()
    bounds = np.flatnonzero(np.diff(users)) + 1

    def chunk(window: int, members: np.ndarray) -> PrefixChunk:
        first = members[0]  # profiles are static: any row of the user gives them
        # a member sees the window's events before its own: counts[window] - counts[r] fewer
        visible = np.maximum(lengths[window] - (counts[window] - counts[members]), 0)
        longest = np.asarray(histories[window])
        for r, k in zip(members, visible, strict=True):
            if not np.array_equal(histories[r][len(histories[r]) - k:], longest[:k]):
                raise ValueError(f"training frame row {positions[r]}: its history does not "
                                 "end in the user's later history")
        return PrefixChunk(int(users[first]), longest.astype(np.int64),
                           np.asarray(stamps[window], dtype=np.int64), visible - 1,
                           items[members], seconds[members], ages[first], list(profiles[first]),
                           positions[members])

    chunks = []
    for rows in np.split(np.arange(len(frame)), bounds):
        short = rows[counts[rows] <= max_len]
        if len(short):  # counts grow with time: the last complete history is the longest
            chunks.append(chunk(short[-1], short))
        long = rows[counts[rows] > max_len]
        while len(long):  # from the newest row back: its window, then the rows it covers
            covered = counts[long] >= counts[long[-1]] - stride
            chunks.append(chunk(long[-1], long[covered]))
            long = long[~covered]
    return chunks


@dataclass
class Windows:
    """`frame_windows`' chunks as flat arrays, encoded once per fit: a batch is a few gathers.

    Window arrays have one row per chunk, query arrays one entry per frame row, chunk i's queries
    at `start[i]:start[i + 1]`. Narrow dtypes keep a large frame's copy small.
    """

    seq: np.ndarray  # (n, L) int32 item indices, left-aligned, 0 = padding or unknown
    seq_gap: np.ndarray  # (n, L) int8 `gap_buckets`
    size: np.ndarray  # (n,) events in each window
    user: np.ndarray  # (n,) user index
    age: np.ndarray  # (n,) age bucket
    profile: np.ndarray  # (n, P) hashed profile tokens
    start: np.ndarray  # (n + 1,) each window's first query
    query_pos: np.ndarray  # (T,) last visible window position (-1: no history)
    hour: np.ndarray  # (T,) int8
    weekday: np.ndarray  # (T,) int8
    query_gap: np.ndarray  # (T,) int8 `elapsed_bucket` since the last visible event, 0 = none
    targets: np.ndarray  # (T,) target item index
    seconds: np.ndarray  # (T,) the rows' times
    last: np.ndarray  # (T,) the last visible event's time (the row's own when there is none)
    frame_rows: np.ndarray  # (T,) the rows' positions in the training frame

    @classmethod
    def build(cls, vocab: Vocab, chunks: list[PrefixChunk]) -> Windows:
        size = np.array([len(c.items) for c in chunks], dtype=np.int64)
        width = max(int(size.max(initial=0)), 1)
        inside = np.arange(width) < size[:, None]  # (n, L)
        seq = np.zeros((len(chunks), width), dtype=np.int32)
        seq[inside] = vocab.item_index(np.concatenate([c.items for c in chunks]))  # row-major
        stamps = np.concatenate([c.item_seconds for c in chunks])  # (sum W,)
        gaps = gap_buckets(stamps)  # across windows too: each window's first is reset below
        first = np.cumsum(size) - size  # (n,) each window's offset in the flat events
        gaps[first[size > 0]] = 0
        seq_gap = np.zeros((len(chunks), width), dtype=np.int8)
        seq_gap[inside] = gaps
        age, profile = _profile(vocab, pd.Series([c.age for c in chunks], dtype="object"),
                                pd.Series([c.profile_tokens for c in chunks], dtype="object"))
        counts = np.array([len(c.targets) for c in chunks], dtype=np.int64)
        window = np.repeat(np.arange(len(chunks)), counts)  # (T,)
        pos = np.concatenate([c.query_pos for c in chunks]).astype(np.int64)  # (T,)
        seconds = np.concatenate([c.seconds for c in chunks]).astype(np.int64)  # (T,)
        last = np.where(pos >= 0, stamps[np.minimum(first[window] + np.maximum(pos, 0),
                                                    max(len(stamps) - 1, 0))]
                        if len(stamps) else 0, seconds)  # (T,)
        hour, weekday = _context(seconds)
        return cls(seq=seq, seq_gap=seq_gap, size=size,
                   user=vocab.user_index(np.array([c.user_id for c in chunks], dtype=np.int64)),
                   age=age.numpy(), profile=profile.numpy(),
                   start=np.concatenate([[0], np.cumsum(counts)]), query_pos=pos,
                   hour=hour.numpy().astype(np.int8), weekday=weekday.numpy().astype(np.int8),
                   query_gap=np.where(pos >= 0, elapsed_bucket(seconds - last), 0).astype(np.int8),
                   targets=vocab.item_index(np.concatenate([c.targets for c in chunks])),
                   seconds=seconds, last=last, frame_rows=np.concatenate([c.rows for c in chunks]
                                                              ).astype(np.int64))

    def __len__(self) -> int:
        return len(self.size)

    @functools.cached_property
    def timeline(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(T,) each: the queries ordered by user, then time, then frame row; each query's place
        in that order; the end of its user's places. Built on first use (`later` targets)."""
        user = np.repeat(self.user, self.rows())  # (T,) training users are all in the vocabulary
        order = np.lexsort((self.frame_rows, self.seconds, user)).astype(np.int32)
        place = np.empty_like(order)
        place[order] = np.arange(len(order), dtype=np.int32)
        runs = np.flatnonzero(np.diff(user[order])) + 1  # where a user's places end
        end = np.append(runs, len(order)).astype(np.int32)[np.searchsorted(runs, place, side="right")]
        return order, place, end

    def rows(self) -> np.ndarray:
        """(n,) queries per window."""
        return np.diff(self.start)

    def queries(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The queries of windows `index` in batch order: their window's batch row and their
        own position in the query arrays, both (Q,)."""
        index = np.asarray(index, dtype=np.int64)
        counts = self.start[index + 1] - self.start[index]  # (B,)
        row = np.repeat(np.arange(len(index)), counts)  # (Q,)
        return row, (self.start[index] - np.cumsum(counts) + counts)[row] + np.arange(len(row))

    def batch(self, index: np.ndarray, rng: np.random.Generator | None = None,
              between: float = 1.0, later: float = 0.0, horizon: int = 1
              ) -> tuple[UserBatch, torch.Tensor, np.ndarray]:
        """Windows `index` as one causal pass: the user side, target indices (Q,), times (Q,).

        Each query is asked at its row's time, or with `rng`, for a `between` share of them drawn
        at random, at a time drawn uniformly between the last visible event and the row's: a
        request made before the event knows that time only (its hour, weekday and gap).
        With `rng`, a `later` share of the queries, drawn at random, targets the item of one of
        their user's next `horizon` rows (the row's own included) instead of their own.
        """
        index = np.asarray(index, dtype=np.int64)
        width = max(int(self.size[index].max(initial=0)), 1)
        row, query = self.queries(index)  # (Q,), (Q,)
        size = torch.from_numpy(self.size[index])  # (B,)

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(values).long()

        hour, weekday, query_gap = self.hour[query], self.weekday[query], self.query_gap[query]
        if rng is not None and between:
            last = self.last[query]
            share = rng.random(len(query))  # of the way from the last event to the row's
            if between < 1:
                share = np.where(rng.random(len(query)) < between, share, 1.0)
            asked = last + (share * (self.seconds[query] - last)).astype(np.int64)
            hour, weekday = (c.numpy() for c in _context(asked))
            query_gap = np.where(self.query_pos[query] >= 0, elapsed_bucket(asked - last), 0)
        users = UserBatch(
            seq=tensor(self.seq[index, :width]), seq_gap=tensor(self.seq_gap[index, :width]),
            seq_mask=torch.arange(width) < size[:, None],  # (B, L)
            user=tensor(self.user[index]), age=tensor(self.age[index]),
            profile=tensor(self.profile[index]), query_row=torch.from_numpy(row),
            query_pos=tensor(self.query_pos[query]), hour=tensor(hour),
            weekday=tensor(weekday), query_gap=tensor(query_gap))
        targets = self.targets[query]
        if rng is not None and later:
            order, place, end = self.timeline
            ahead = np.minimum(end[query] - place[query], horizon)  # (Q,) >= 1
            drawn = place[query] + (rng.random(len(query)) * ahead).astype(np.int64)
            targets = np.where(rng.random(len(query)) < later, self.targets[order[drawn]], targets)
        return users, tensor(targets), self.seconds[query]


def batch_chunks(vocab: Vocab, chunks: list[PrefixChunk]) -> UserBatch:
    """Stack chunks into one causal pass: the user side of every row they hold."""
    return Windows.build(vocab, chunks).batch(np.arange(len(chunks)))[0]


def batch_groups(windows: Windows, *, batch_size: int, rng: np.random.Generator
                 ) -> list[np.ndarray]:
    """One epoch of batches (window indices): windows of similar length (little padding),
    ~batch_size rows each, in random order."""
    noisy = windows.size * rng.uniform(0.8, 1.25, len(windows))
    order = np.argsort(noisy, kind="stable")
    sizes = windows.rows()[order]
    group = (np.cumsum(sizes) - sizes) // batch_size  # by the first row each chunk adds
    groups = np.split(order, np.flatnonzero(np.diff(group)) + 1)
    return [groups[g] for g in rng.permutation(len(groups))]


# ---------------------------------------------------------------- negatives

def sampled_candidates(targets: torch.Tensor, *, n_items: int, n_uniform: int,
                       log_q: torch.Tensor, generator: torch.Generator,
                       hard: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates for the sampled softmax: the batch's distinct targets, uniform samples and the
    `hard` draws (item indices, `hard_negatives.HardNegatives.draw`).

    Distinct targets mean an item that is another query's positive appears once, as this query's
    label or a negative, never as a false copy of the positive. Returns candidate indices (C,),
    each query's label column (Q,), and the logQ correction (C,): log of the expected number of
    times the candidate is drawn (in-batch by popularity, uniform by 1/n_items, plus the times it
    was drawn as a hard negative: realised counts standing in for expected ones, shared by every
    query although each query's draws come from its own positive).
    """
    in_batch, labels = torch.unique(targets, return_inverse=True)  # (C0,), (Q,)
    extra = [torch.randint(1, n_items + 1, (n_uniform,), generator=generator)] if n_uniform else []
    if hard is not None:
        extra.append(hard)
    candidates = in_batch
    if extra:
        drawn = torch.cat(extra)  # (M,)
        candidates = torch.cat([in_batch, drawn[~torch.isin(drawn, in_batch)].unique()])  # (C,)
    expected = len(targets) * log_q[candidates].exp() + n_uniform / n_items  # (C,)
    if hard is not None:
        expected = expected + torch.bincount(hard, minlength=n_items + 1)[candidates]
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


def seen_columns(users: UserBatch, columns: torch.Tensor, n_items: int, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, column) pairs where candidate column c is an item query q has already seen in its
    visible history, its own label column left out (a repeat purchase stays a valid positive).

    Serving never returns seen items, so the loss need not push them down: the caller sets these
    logits to -inf. Pairs, not a (Q, C) mask: a history holds at most L of the C columns.
    """
    table = torch.full((n_items + 1,), -1, dtype=torch.int64)
    table[columns] = torch.arange(len(columns))
    column = table[users.seq[users.query_row]]  # (Q, L), -1 where not a candidate
    keep = ((torch.arange(column.shape[1]) <= users.query_pos[:, None]) & (column >= 0)
            & (column != labels[:, None]))  # (Q, L)
    return keep.nonzero(as_tuple=True)[0], column[keep]  # (S,), (S,)


# ---------------------------------------------------------------- item popularity

class Popularity:
    """Trailing per-item counts as Feast's `item_popularity` view gives them: for a lookup on day d,
    the interactions of the whole days d-w .. d-1, for every window w of `WINDOWS_DAYS`.

    Built from training events (model item indices and unix seconds), it answers for any items on
    any days at once, so a full softmax can score the catalogue as of each example's own day.
    """

    def __init__(self, items: np.ndarray, seconds: np.ndarray):
        days = np.asarray(seconds, dtype=np.int64) // DAY
        self.origin = int(days.min(initial=0)) - max(WINDOWS_DAYS)  # keeps every key positive
        self.last_day = int(days.max(initial=0))  # the day of the newest event: "as of the build"
        self.keys = np.sort((np.asarray(items, dtype=np.int64) << 32) + days - self.origin)
        self._daily: dict[int, torch.Tensor] = {}  # day -> the whole catalogue's buckets

    def counts(self, items: np.ndarray, days: np.ndarray) -> np.ndarray:
        """(K, C, W) interactions of each item over each window before each day."""
        base = (np.asarray(items, dtype=np.int64) << 32)[None, :, None]  # (1, C, 1)
        end = base + (np.asarray(days, dtype=np.int64) - self.origin)[:, None, None]  # (K, C, 1)
        start = end - np.asarray(WINDOWS_DAYS, dtype=np.int64)  # (K, C, W)
        return np.searchsorted(self.keys, end) - np.searchsorted(self.keys, start)  # (K, C, W)

    def buckets(self, items: np.ndarray, days: np.ndarray) -> torch.Tensor:
        """(K, C, W) log2 buckets of `counts`: 0 for none, 1 + floor(log2(count)) otherwise."""
        counts = self.counts(items, days)
        log2 = np.log2(np.maximum(counts, 1)).astype(np.int64)
        return torch.from_numpy(np.where(counts > 0, np.minimum(1 + log2,
                                                                POPULARITY_BUCKETS - 1), 0))

    def catalogue(self, days: np.ndarray, n_items: int) -> torch.Tensor:
        """(K, N + 1, W) `buckets` of model indices 0..N, each day computed once (full softmax)."""
        for day in set(days.tolist()) - self._daily.keys():
            self._daily[day] = self.buckets(np.arange(n_items + 1), [day])[0].to(torch.int8)
        return torch.stack([self._daily[day] for day in days.tolist()]).long()  # (K, N + 1, W)
