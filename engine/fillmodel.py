"""The fill model: fill probability, slippage and latency by venue and order shape.

Invariants:
- Pure data. `analytics/fill_model.py` fits it from journals and writes it as Parquet;
  the runner reads the file, puts its sha256 in the run manifest and hands the engine
  a `FillModel`. The engine never reads the file itself.
- A cell is keyed by `Key(venue, instrument, side, order_type, distance, size, tod)`,
  where `distance`, `size` and `tod` are the buckets below, computed the same way at
  fit time (analytics) and at routing time (engine). Changing a bucket edge changes
  every model: bump `BUCKETS_VERSION` so old files are refused, not misread.
- Sparse cells are smoothed: a cell's `p_fill` is the posterior mean of a Beta prior
  centred on its parent level's rate, `(fills + k*p_parent) / (n + k*1)` with
  strength `k = prior_strength`. Levels, finest first: full key; without tod; without
  size and tod; (venue, instrument, side); (venue,). `lookup` returns the finest level
  present, and None when the venue is unknown to the model (the router then falls back
  to static rules).
- Probabilities and bps are floats: they steer choices, they never touch positions.
- A model has one canonical byte form (`encode_model`: JSON, cells in key order); its
  sha256 (`model_sha256`) is what the engine config and the run manifest record, and a
  run directory keeps those bytes (`fill_model.json`) so its replay loads the same model.
"""

from __future__ import annotations

import hashlib

import msgspec

BUCKETS_VERSION = 1
NS_PER_HOUR = 3_600_000_000_000
# Edges of the size bucket, in lots: bucket i holds qty/lot in [EDGES[i], EDGES[i+1]).
SIZE_EDGES_LOTS: tuple[int, ...] = (0, 1, 10, 100, 1_000, 10_000)
ANY = -99  # the bucket value of a level that does not split on that field


def distance_bucket(ticks: int | None) -> int:
    """Bucket how far a price sits from the same-side touch, in ticks.

    None (a market order, or no quote) is -2; crossing the spread is -1; at the touch
    0; then 1, 2, 3 (3 to 5 ticks away) and 6 (6 or more).
    """
    if ticks is None:
        return -2
    if ticks < 0:
        return -1
    if ticks <= 2:
        return ticks
    return 3 if ticks <= 5 else 6


def touch_distance_ticks(
    side_is_buy: bool, price: int | None, bid: int | None, ask: int | None, tick: int
) -> int | None:
    """Return ticks between a limit price and the same-side touch (-1 crosses), or None."""
    if price is None or bid is None or ask is None or tick <= 0:
        return None
    # A price inside the spread improves the touch: it rests at distance 0.
    if side_is_buy:
        return -1 if price >= ask else max(bid - price, 0) // tick
    return -1 if price <= bid else max(price - ask, 0) // tick


def size_bucket(qty: int, lot_size: int) -> int:
    """Return the index of the size bucket of `qty` (in size units) in lots."""
    lots = qty // max(lot_size, 1)
    bucket = 0
    for i, edge in enumerate(SIZE_EDGES_LOTS):
        if lots >= edge:
            bucket = i
    return bucket


def tod_bucket(ts_ns: int) -> int:
    """Return the UTC hour of day (0-23) of a timestamp."""
    return (ts_ns // NS_PER_HOUR) % 24


class Key(msgspec.Struct, frozen=True, array_like=True):
    """Where a cell sits; `ANY` (or "*") marks a field the level does not split on."""

    venue: str
    instrument: str = "*"
    side: str = "*"
    order_type: str = "*"
    distance: int = ANY
    size: int = ANY
    tod: int = ANY

    def levels(self) -> tuple[Key, ...]:
        """Return this key and its coarser parents, finest first."""
        v, i, s, o, d, z = (
            self.venue,
            self.instrument,
            self.side,
            self.order_type,
            self.distance,
            self.size,
        )
        return (
            self,
            Key(v, i, s, o, d, z),
            Key(v, i, s, o, d),
            Key(v, i, s),
            Key(v),
        )


class Cell(msgspec.Struct, frozen=True, kw_only=True):
    """What the fit saw in one cell, and its smoothed estimates."""

    n: int  # orders
    fills: int  # of which filled (any quantity) within the horizon
    p_fill: float  # smoothed probability of a fill within the horizon
    slippage_bps: float  # mean slippage of fills vs arrival mid, bps (positive = worse)
    latency_ns: int  # median submit -> acknowledgement
    fill_ratio: float = 1.0  # mean filled qty / order qty, over orders with a fill


class Match(msgspec.Struct, frozen=True, kw_only=True):
    """The cell a lookup found, and at which level (0 = the full key)."""

    cell: Cell
    level: int


class FillModel(msgspec.Struct, frozen=True, kw_only=True):
    """A fitted model; `fitted_on` says which runs and how many orders it saw."""

    horizon_ns: int
    prior_strength: float
    cells: dict[Key, Cell]
    fitted_on: tuple[str, ...] = ()
    n_orders: int = 0
    buckets_version: int = BUCKETS_VERSION

    def lookup(self, key: Key) -> Match | None:
        """Return the finest cell present for `key`, or None if its venue is unknown."""
        for level, probe in enumerate(key.levels()):
            cell = self.cells.get(probe)
            if cell is not None:
                return Match(cell=cell, level=level)
        return None

    def venues(self) -> tuple[str, ...]:
        """Return the venues the model has data for, sorted."""
        return tuple(sorted({k.venue for k in self.cells}))


def smoothed(fills: int, n: int, parent_p: float, strength: float) -> float:
    """Return the Beta-posterior mean of a rate with a prior centred on `parent_p`."""
    return (fills + strength * parent_p) / (n + strength)


class _ModelFile(msgspec.Struct, frozen=True, kw_only=True):
    """The canonical JSON form of a model: cells as (key, cell) pairs in key order."""

    horizon_ns: int
    prior_strength: float
    cells: list[tuple[Key, Cell]]
    fitted_on: tuple[str, ...] = ()
    n_orders: int = 0
    buckets_version: int = BUCKETS_VERSION


def _key_order(key: Key) -> tuple[str, str, str, str, int, int, int]:
    return (key.venue, key.instrument, key.side, key.order_type, key.distance, key.size, key.tod)


def encode_model(model: FillModel) -> bytes:
    """Return the canonical JSON bytes of a model (the same model, the same bytes)."""
    cells = sorted(model.cells.items(), key=lambda kv: _key_order(kv[0]))
    return msgspec.json.encode(
        _ModelFile(
            horizon_ns=model.horizon_ns,
            prior_strength=model.prior_strength,
            cells=cells,
            fitted_on=model.fitted_on,
            n_orders=model.n_orders,
            buckets_version=model.buckets_version,
        )
    )


def decode_model(data: bytes, where: str = "fill model") -> FillModel:
    """Read canonical JSON bytes back into a model; a bad file names what is wrong."""
    try:
        raw = msgspec.json.decode(data, type=_ModelFile)
    except msgspec.DecodeError as exc:
        raise ValueError(f"{where}: not a fill model: {exc}") from None
    if raw.buckets_version != BUCKETS_VERSION:
        raise ValueError(
            f"{where}: buckets_version {raw.buckets_version}, expected {BUCKETS_VERSION}: "
            "refit the model with this version of Tape"
        )
    return FillModel(
        horizon_ns=raw.horizon_ns,
        prior_strength=raw.prior_strength,
        cells=dict(raw.cells),
        fitted_on=raw.fitted_on,
        n_orders=raw.n_orders,
        buckets_version=raw.buckets_version,
    )


def model_sha256(model: FillModel) -> str:
    """Return the sha256 hex of a model's canonical bytes: what manifests record."""
    return hashlib.sha256(encode_model(model)).hexdigest()
