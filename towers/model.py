"""The two towers: `TowerConfig`, `ItemTower`, `UserTower` and the scoring function.

Both towers output L2-normalised vectors of size `dim`; a user and an item score by their dot
product divided by the temperature. The user tower reads a history of item indices through the
item tower's own representation (one shared table), so history items that are cold still carry
their content.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from feature_repo.tables import WINDOWS_DAYS
from towers.config import Config, Count, Share
from towers.data import AGE_EDGES, GAP_BUCKETS, POPULARITY_BUCKETS, UserBatch, Vocab
from towers.encoders import (
    CONTENT,
    ITEM_ENCODERS,
    USER_ENCODERS,
    build_item_encoder,
    by_state,
    registered,
    user_encoder,
)


class TowerConfig(Config):
    """Architecture; saved with every artifact. Why each default: docs/towers-notes.md."""

    dim: Count = 64  # SASRec's hidden size on MovieLens; wider overfits 100K ratings
    max_len: Count = 50  # history window = the Feast history_length (its default), as served
    encoder: str = "transformer"  # SASRec's causal self-attention (towers.encoders: the others)
    layers: Count = 2  # SASRec's depth
    heads: Count = 1  # SASRec uses one head at dim 64
    dropout: Share = 0.2  # SASRec's setting for dense MovieLens data
    # On the attention weights. 0: tied with 0.2 on validation, and SDPA's fused CPU kernel
    # (no dropout mask) trains 8 % more examples/s (notes: issue 18, part i).
    attention_dropout: Share = 0.0
    use_user_id: bool = True  # a returning user's whole past, beyond the last max_len events
    user_id_dropout: Share = 0.1  # share of training rows that see no user ID: new users' path
    use_time_gaps: bool = True  # time since the previous history event marks sessions
    item_id_dropout: Share = 0.1  # share of training lookups that see content only (cold start)
    title_buckets: Count = 4096  # hashed title words; collisions are harmless at this catalogue size
    profile_buckets: Count = 1024  # hashed "column=value" profile tokens
    embedding_std: float = Field(0.05, gt=0)  # torch's N(0, 1) let content drown the item IDs
    item_popularity: bool = False  # off: with query_gap it cost LOO quality (notes)
    use_query_gap: bool = True  # time since the last event: a returning user is not mid-session
    item_encoder: str = CONTENT  # "sage": + the item's graph neighbourhood (towers-notes: measured)
    graph_snapshots: int = Field(4, ge=2)  # time cuts of the training graph: fewer, staler graphs

    @field_validator("encoder")
    @classmethod
    def _user_encoder(cls, name: str) -> str:
        return registered("encoder", name, USER_ENCODERS)

    @field_validator("item_encoder")
    @classmethod
    def _item_encoder(cls, name: str) -> str:
        return registered("item_encoder", name, ITEM_ENCODERS)

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> TowerConfig:
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} does not divide dim={self.dim}")
        return self


def drop_ids(ids: torch.Tensor, share: float) -> torch.Tensor:
    """`share` of `ids`, drawn at random, set to 0 (the unknown's): in training, this keeps the path
    of an item or user the model never saw trained."""
    return ids.masked_fill(torch.rand(ids.shape) < share, 0) if share > 0 else ids


class ItemTower(nn.Module):
    """Item-ID embedding plus content (categories, price, year, title words) -> residual MLP, plus
    the item's trailing popularity (`data.Popularity` buckets) -> L2 norm.

    Popularity changes daily, so it is added after the MLP: training scores the catalogue as of
    each example's day cheaply (`logits`), and serving embeds it as of the training data's last
    day (`known_popularity`), the day the index version is built.
    """

    def __init__(self, config: TowerConfig, vocab: Vocab, content: dict[str, torch.Tensor]):
        super().__init__()
        d = config.dim
        self.id_dropout = config.item_id_dropout
        self.ids = nn.Embedding(len(vocab.item_ids) + 1, d, padding_idx=0)
        self.categories = nn.EmbeddingBag(len(vocab.categories) + 1, d, mode="mean", padding_idx=0)
        self.price = nn.Embedding(len(vocab.price_edges) + 2, d)
        self.year = nn.Embedding(len(vocab.year_edges) + 2, d)
        self.title = nn.EmbeddingBag(vocab.title_buckets, d, mode="mean", padding_idx=0)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(),
                                 nn.Linear(2 * d, d))
        self.popularity = nn.Embedding(len(WINDOWS_DAYS) * POPULARITY_BUCKETS, d) \
            if config.item_popularity else None
        # Content of the training catalogue, row = item index (row 0 = unknown item), and the
        # item encoder's inputs (towers.encoders).
        for name, value in content.items():
            self.register_buffer(f"known_{name}", value, persistent=True)
        self.encoder = build_item_encoder(config, vocab)  # None: ID and content alone
        self._bags: tuple[tuple, dict[str, MeanBag]] | None = None  # `catalogue`'s, by content

    def represent(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unnormalised representation (..., D), shared with the user tower's history encoder."""
        shape = inputs["id"].shape
        bags = (bag(inputs[name].reshape(-1, inputs[name].shape[-1])).reshape(*shape, -1)
                for name, bag in (("categories", self.categories), ("title", self.title)))
        return self._combine(inputs["id"], inputs["price"], inputs["year"], *bags)  # (..., D)

    def catalogue(self) -> torch.Tensor:
        """`represent` of every known item (N + 1, D), row = model index. The content bags are
        one sparse product each: EmbeddingBag's backward sorts every token at every step, and was
        about ten times slower over a whole catalogue."""
        names = ("categories", "title")
        key = tuple((id(t), t._version) for t in (getattr(self, f"known_{n}") for n in names))
        if self._bags is None or self._bags[0] != key:  # built once, again if loaded anew
            self._bags = key, {name: MeanBag(getattr(self, f"known_{name}"),
                                             getattr(self, name).num_embeddings)
                               for name in names}
        bags = self._bags[1]
        return self._combine(torch.arange(len(self.known_price)), self.known_price,
                             self.known_year, bags["categories"](self.categories.weight),
                             bags["title"](self.title.weight))  # (N + 1, D)

    def _combine(self, ids: torch.Tensor, price: torch.Tensor, year: torch.Tensor,
                 categories: torch.Tensor, title: torch.Tensor) -> torch.Tensor:
        if self.training:
            ids = drop_ids(ids, self.id_dropout)
        h = self.ids(ids) + self.price(price) + self.year(year) + categories + title  # (..., D)
        return h + self.mlp(h)  # (..., D)

    def known(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inputs of catalogue items by model index (any shape)."""
        return {"id": index, "categories": self.known_categories[index],  # (..., C)
                "price": self.known_price[index], "year": self.known_year[index],
                "title": self.known_title[index]}  # (..., T)

    def trend(self, buckets: torch.Tensor) -> torch.Tensor:
        """(..., D) vector of popularity buckets (..., W), one table slice per window."""
        offsets = torch.arange(buckets.shape[-1]) * POPULARITY_BUCKETS  # (W,)
        return self.popularity(buckets + offsets).sum(-2)  # (..., W, D) -> (..., D)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Served vectors (N, D): popularity as of the training data's last day."""
        h = self.represent(inputs)  # (N, D)
        if self.encoder is not None:
            h = h + self.encoder(self, inputs["id"], None, None)[0][0]  # (N, D)
        if self.popularity is not None:
            h = h + self.trend(self.known_popularity[inputs["id"]])  # (N, D)
        return F.normalize(h, dim=-1)  # (N, D)

    def logits(self, users: torch.Tensor, candidates: torch.Tensor, buckets: torch.Tensor | None,
               day: torch.Tensor | None, temperature: float | torch.Tensor,
               represented: torch.Tensor | None = None, seconds: np.ndarray | None = None
               ) -> torch.Tensor:
        """(Q, C) cosine / temperature of each user with each candidate as of the user's day.

        `represented` (C, D) is the candidates' `represent`, when the caller has it already.
        `seconds` (Q,) are the queries' times: an item encoder reads only what was known then
        (without them, what is served).
        """
        h = self.represent(self.known(candidates)) if represented is None else represented  # (C, D)
        if self.encoder is None:
            return self._logits(users, h, buckets, day, temperature)
        terms, state = self.encoder(self, candidates, h, seconds)  # (S, C, D), (Q,)
        if state is None:
            return self._logits(users, h + terms[0], buckets, day, temperature)
        return by_state(state, lambda rows, s: self._logits(
            at(users, rows), h + terms[s], buckets, None if day is None else day[rows], temperature))

    def _logits(self, users: torch.Tensor, h: torch.Tensor, buckets: torch.Tensor | None,
                day: torch.Tensor | None, temperature: float | torch.Tensor) -> torch.Tensor:
        """`logits` of candidates represented by `h` (C, D).

        `buckets` (K, C, W) are the candidates' popularity on K days and `day` (Q,) picks each
        query's. Equal to scoring normalize(h_c + trend_kc), without building K catalogues: the
        norm expands to |h|^2 + 2 h.t + |t|^2 over the few distinct bucket combinations and
        depends on the day, not the query.
        """
        if self.popularity is None:
            return score(users, F.normalize(h, dim=-1), temperature)  # (Q, C)
        K, C, W = buckets.shape
        code = (buckets * POPULARITY_BUCKETS ** torch.arange(W)).sum(-1)  # (K, C)
        codes, combo = torch.unique(code, return_inverse=True)  # (M,), (K, C)
        t = self.trend(codes[:, None] // POPULARITY_BUCKETS ** torch.arange(W)
                       % POPULARITY_BUCKETS)  # (M, D)
        norm = ((h * h).sum(-1) + 2 * (h @ t.T).gather(1, combo.T).T  # (K, C)
                + at((t * t).sum(-1), combo.flatten()).view(K, C)).clamp(min=1e-12).sqrt()
        dot = users @ h.T + (users @ t.T).gather(1, combo[day])  # (Q, C)
        return dot / at(norm, day) / temperature  # (Q, C)


class MeanBag:
    """`nn.EmbeddingBag(mode="mean", padding_idx=0)` of fixed token lists (N, T) as a sparse
    (N, V) matrix of 1 / (the row's non-padding tokens): the bags are its product with the table
    (V, D), their gradient the transposed product."""

    def __init__(self, tokens: torch.Tensor, vocabulary: int):
        rows, slots = (tokens != 0).nonzero(as_tuple=True)  # (nnz,) each
        values = 1 / torch.bincount(rows, minlength=len(tokens))[rows].float()  # (nnz,)
        matrix = torch.sparse_coo_tensor(torch.stack([rows, tokens[rows, slots]]), values,
                                         (len(tokens), vocabulary), check_invariants=True)
        with warnings.catch_warnings():  # torch calls its CSR layout beta; products are stable
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
            self.matrix, self.transposed = (m.coalesce().to_sparse_csr()
                                            for m in (matrix, matrix.t()))

    def __call__(self, table: torch.Tensor) -> torch.Tensor:
        """(V, D) -> (N, D)."""
        return _SparseProduct.apply(table, self.matrix, self.transposed)

    def __deepcopy__(self, memo: dict) -> MeanBag:
        return self  # constant, so copies of a model share it (sparse CSR tensors cannot be copied)


class _SparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, matrix: torch.Tensor, transposed: torch.Tensor
                ) -> torch.Tensor:
        ctx.transposed = transposed
        return matrix @ table

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.transposed @ grad, None, None


def keep_mask(shape: torch.Size, share: float) -> torch.Tensor:
    """Bernoulli(`share`) booleans of `shape` from 16 random bits each, four to a 64-bit draw:
    about 2.5 times cheaper on CPU than `torch.rand` (a draw per element), 5 than `bernoulli_`."""
    n, threshold = shape.numel(), round(2**15 - share * 2**16)
    if threshold >= 2**15:  # a share under 2^-17 keeps nothing (the bound overflows int16)
        return torch.zeros(shape, dtype=torch.bool)
    bits = torch.randint(-2**63, 2**63 - 1, (-(-n // 4),), dtype=torch.int64).view(torch.int16)
    return (bits[:n] >= threshold).view(shape)


class Dropout(nn.Dropout):
    """`nn.Dropout` with its mask from `keep_mask`: the same distribution (to 2^-16), about 40 % of
    the cost on CPU, where the masks were the largest ops of a training step after the products."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * keep_mask(x.shape, 1 - self.p) / (1 - self.p)


def at(x: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
    """x[rows] (or x[rows, pos]) by `index_select`, whose gradient is an ordered `index_add`:
    indexing's gradient adds up with several CPU threads in no fixed order, so runs would not
    repeat exactly."""
    if pos is not None:
        rows = rows * x.shape[1] + pos  # into x flattened to (B * L, ...)
        x = x.flatten(0, 1)
    return x.index_select(0, rows)


class Block(nn.Module):
    """Pre-norm causal transformer block (SASRec, nanoGPT): y = x + attn(norm1(x)),
    out = y + mlp(norm2(y)); position i attends to positions <= i only.

    Given query positions it computes the output there alone: keys and values need every position,
    the query, the attention output and the MLP only the positions asked for.
    """

    def __init__(self, config: TowerConfig):
        super().__init__()
        d, p = config.dim, config.dropout
        self.heads, self.attn_dropout = config.heads, config.attention_dropout
        # torch's MultiheadAttention init, in its order of random draws: a seed gives the weights
        # the nn.TransformerEncoderLayer of version-1 artifacts had.
        self.proj = nn.Linear(d, d)
        self.qkv = nn.utils.skip_init(nn.Linear, d, 3 * d)  # query, key and value, packed
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)
        # SASRec's feed-forward keeps the width at dim
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), Dropout(p), nn.Linear(d, d))
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop1, self.drop2 = Dropout(p), Dropout(p)  # on the two residual branches

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None,
                pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, D) -> (B, L, D); with window `rows` and positions `pos` (Q,), the (Q, D) there."""
        B, L, D = x.shape
        H, p = self.heads, self.attn_dropout if self.training else 0.0
        h = self.norm1(x)  # (B, L, D)
        q, k, v = (t.view(B, L, H, D // H).transpose(1, 2)  # (B, H, L, D/H)
                   for t in self.qkv(h).chunk(3, dim=-1))  # (B, L, D) each
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        out = out.transpose(1, 2).reshape(B, L, D)  # (B, H, L, D/H) -> (B, L, D)
        if rows is not None:
            # Attention over every window position costs less than gathering each query's keys
            # and values (Q > B in training); the projection and MLP run at the queries alone.
            x, out = at(x, rows, pos), at(out, rows, pos)  # (Q, D)
        y = x + self.drop1(self.proj(out))
        return y + self.drop2(self.mlp(self.norm2(y)))


@user_encoder("transformer")
class CausalTransformer(nn.Module):
    """Learned positions, then `layers` causal blocks and a final norm; returns the states at the
    query positions only, so the last block runs there alone: in training most windows are
    truncated histories with one query each."""

    def __init__(self, config: TowerConfig):
        super().__init__()
        self.positions = nn.Embedding(config.max_len, config.dim)
        block = Block(config)  # the blocks start equal, as torch's nn.TransformerEncoder's did
        self.blocks = nn.ModuleList(copy.deepcopy(block) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.dim)
        self.dropout = Dropout(config.dropout)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                pos: torch.Tensor) -> torch.Tensor:
        """States (Q, D) at window `rows` (Q,), positions `pos` (Q,) of tokens (B, L, D).

        Histories are right-padded, so with the causal mask a real position never sees padding.
        """
        x = self.dropout(tokens + self.positions.weight[:tokens.shape[1]])  # (B, L, D)
        *lower, last = self.blocks
        for block in lower:
            x = block(x)  # (B, L, D)
        return self.norm(last(x, rows, pos))  # (Q, D)


@user_encoder("mean")
class MeanPool(nn.Module):
    """Running mean over the history: state i is the mean of positions <= i."""

    def __init__(self, config: TowerConfig):
        super().__init__()

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                pos: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
        return at((tokens * m).cumsum(1) / m.cumsum(1).clamp(min=1), rows, pos)  # (Q, D)


@user_encoder("gru")
class GRUEncoder(nn.Module):
    def __init__(self, config: TowerConfig):
        super().__init__()
        self.gru = nn.GRU(config.dim, config.dim, num_layers=config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor,
                pos: torch.Tensor) -> torch.Tensor:
        return at(self.gru(tokens)[0], rows, pos)  # (Q, D); causal: right padding never leaks


class UserTower(nn.Module):
    """History encoder + profile (age bucket, hashed tokens) + context (hour, weekday) + optional
    user-ID embedding -> MLP head with a residual from the history state."""

    def __init__(self, config: TowerConfig, vocab: Vocab):
        super().__init__()
        d = config.dim
        self.config = config
        self.encoder: nn.Module = USER_ENCODERS[config.encoder](config)
        self.empty = nn.Parameter(torch.zeros(d))  # the state of a user with no history yet
        self.gap = nn.Embedding(GAP_BUCKETS, d) if config.use_time_gaps else None
        self.age = nn.Embedding(len(AGE_EDGES) + 2, d)
        self.profile = nn.EmbeddingBag(vocab.profile_buckets, d, mode="mean", padding_idx=0)
        self.hour = nn.Embedding(24, d)
        self.weekday = nn.Embedding(7, d)
        self.query_gap = nn.Embedding(GAP_BUCKETS, d) if config.use_query_gap else None
        self.users = nn.Embedding(len(vocab.user_ids) + 1, d, padding_idx=0) \
            if config.use_user_id else None
        self.id_dropout = config.user_id_dropout
        parts = 4 if config.use_user_id else 3
        self.head = nn.Sequential(nn.Linear(parts * d, 2 * d), nn.GELU(),
                                  Dropout(config.dropout), nn.Linear(2 * d, d))

    def forward(self, batch: UserBatch, items: ItemTower, table: torch.Tensor | None = None
                ) -> torch.Tensor:
        """One normalised vector per query (Q, D); `table` (N + 1, D), when given, holds every
        item's `items.represent` (a full-softmax step computes it once for both towers)."""
        if table is None:
            distinct, index = torch.unique(batch.seq, return_inverse=True)  # (K,), (B, L)
            table = items.represent(items.known(distinct))  # (K, D)
        else:
            index = batch.seq
        tokens = F.embedding(index, table)  # (B, L, D)
        if self.gap is not None:
            tokens = tokens + self.gap(batch.seq_gap)  # (B, L, D)
        tokens = tokens * batch.seq_mask.unsqueeze(-1)  # (B, L, D)
        seq = self.encoder(tokens, batch.seq_mask, batch.query_row,
                           batch.query_pos.clamp(min=0))  # (Q, D)
        seq = torch.where((batch.query_pos >= 0).unsqueeze(-1), seq, self.empty)  # (Q, D)
        profile = self.age(batch.age) + self.profile(batch.profile)  # (B, D)
        context = self.hour(batch.hour) + self.weekday(batch.weekday)  # (Q, D)
        if self.query_gap is not None:
            context = context + self.query_gap(batch.query_gap)  # (Q, D)
        parts = [seq, at(profile, batch.query_row), context]
        if self.users is not None:
            user = drop_ids(batch.user, self.id_dropout) if self.training else batch.user  # (B,)
            parts.append(at(self.users(user), batch.query_row))
        return F.normalize(seq + self.head(torch.cat(parts, dim=-1)), dim=-1)  # (Q, D)


class TwoTower(nn.Module):
    """Both towers and the vocabulary they were built for."""

    def __init__(self, config: TowerConfig, vocab: Vocab, content: dict[str, torch.Tensor]):
        super().__init__()
        self.config, self.vocab = config, vocab
        self.item_tower = ItemTower(config, vocab, content)
        self.user_tower = UserTower(config, vocab)
        # One small scale for every table: with torch's N(0, 1) default the content and context
        # tables drowned the item-ID table, which then took many epochs to matter.
        for module in self.modules():
            if isinstance(module, nn.Embedding | nn.EmbeddingBag):
                nn.init.normal_(module.weight, std=config.embedding_std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()

    def users(self, batch: UserBatch, table: torch.Tensor | None = None) -> torch.Tensor:
        return self.user_tower(batch, self.item_tower, table)  # (Q, D)


def score(users: torch.Tensor, items: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Logits (Q, N) of every user against every item: cosine over temperature."""
    return (users / temperature) @ items.T  # (Q, N); scaling Q rows is cheaper than Q x N
