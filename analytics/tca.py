"""Transaction-cost analysis over run journals, with Polars and DuckDB on the Arrow files.

Invariants:
- The journals are the only source. Sealed segments (`NNNNNN.arrow`, IPC files) are
  memory-mapped and only the columns TCA uses are decompressed; rows are picked by the
  `kind` dictionary code (the `messages.KINDS` index) before anything reaches Polars.
  The unsealed `NNNNNN.arrows` stream of a crashed or running run is read with
  `engine.journal.JournalReader` (whole batches up to a torn tail), only its batches
  after the last sealed seq. Joins and as-of lookups run in Polars, aggregations in
  DuckDB; `scan_run` gives the same entries as a lazy Polars frame for ad-hoc queries.
  Instruments (tick, lot, precision, multiplier) come from each run's manifest.
- Each run is analysed on its own (its quotes never price another run's orders), then
  the runs' tables are stacked; `run_id` tells them apart and `oix` numbers the orders
  of all runs 0, 1, 2, ... in (run, seq) order. Two runs with the same run id are refused.
- An order is a `SubmitOrder`. Venue events and fills that the engine answered with an
  UNKNOWN_ORDER or ORDER_ANOMALY alert (their `cause`) are left out, as the engine left
  them out of its state; a repeated (order, trade_id) is dropped. The final status is the
  one those remaining (legal) events lead to: FILLED once the fills reach the order's
  qty (after any replace), else REJECTED, CANCELED or EXPIRED if the venue said so, else
  PARTIALLY_FILLED, ACCEPTED or PENDING_NEW. `ts_done` is when it became final.
- Prices and quantities stay integers in instrument units; bps are ratios, so the units
  cancel. Floats appear only in ratios (bps, rates) and in notional weights, which are in
  each instrument's currency (value x multiplier / 10^(price + size precision)).
- Signs: slippage, implementation shortfall and effective spread are positive when worse
  for us (paid more on a buy, received less on a sell). Markouts are positive when the mid
  moved our way after the fill (adverse selection shows as negative markouts).
- Mids: a quote's mid is (bid + ask) / 2 of its last `QuoteTick`, null if one side is
  missing. The arrival mid is the last quote of the order's instrument on its venue at or
  before the `SubmitOrder`'s seq; the best arrival mid uses the best bid and best ask of
  every venue's last quote then. The mid at a fill is the last quote at or before the
  fill's seq; the markout mid at horizon h is the last quote with ts_recv <= fill ts + h,
  null when the run's journal ends before then.
- Implementation shortfall (Perold) against the decision price (the signal's
  `signal_price`, else the arrival mid), in bps of the order's decision notional:
  execution (fills vs decision price) + opportunity (the unfilled qty at the mid when the
  order ended, or at the run's last mid if it never did) + fees.
- Timestamps are `ts_recv` of the journal entries, but the signal's, which is its
  `ts_event` (when the strategy made it) when known, else its `ts_recv`. Stages: signal
  -> sent (`SubmitOrder`) -> acknowledged (`OrderAccepted`) -> first fill -> done.
- Aggregates weight slippage and markouts by filled notional, shortfall by decision
  notional; latencies and time to fill are medians and 95th percentiles; rates are shares
  of orders. Nothing here reads the clock or depends on set order.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import msgspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from analytics.buckets import distance_bucket, size_bucket, tod_bucket, touch_distance_ticks
from engine.codec import SCHEMA
from engine.journal import JournalError, JournalReader, read_manifest
from engine.messages import Instrument

__all__ = [
    "BY_FIELDS",
    "DEFAULT_TIME_BUCKET_NS",
    "MARKOUT_HORIZONS_NS",
    "STAGES",
    "TCA_COLUMNS",
    "WINDOWS_NS",
    "RunInfo",
    "Tca",
    "TcaError",
    "aggregate",
    "find_runs",
    "load_tca",
    "open_run",
    "parse_by",
    "scan_run",
    "venue_matrix",
]

NS_PER_S = 1_000_000_000
MARKOUT_HORIZONS_NS: tuple[tuple[str, int], ...] = (
    ("1s", NS_PER_S),
    ("10s", 10 * NS_PER_S),
    ("60s", 60 * NS_PER_S),
)
DEFAULT_TIME_BUCKET_NS = 3_600 * NS_PER_S
WINDOWS_NS: tuple[tuple[str, int], ...] = (
    ("hour", 3_600 * NS_PER_S),
    ("day", 86_400 * NS_PER_S),
    ("week", 7 * 86_400 * NS_PER_S),
)
# (name, from column, to column) of each latency stage.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("signal_to_sent", "ts_signal", "ts_sent"),
    ("sent_to_ack", "ts_sent", "ts_ack"),
    ("ack_to_first_fill", "ts_ack", "ts_first_fill"),
    ("first_fill_to_done", "ts_first_fill", "ts_done"),
)
# What `--by` accepts, and the per-order column each name groups on.
BY_FIELDS: dict[str, str] = {
    "venue": "venue",
    "instrument": "instrument",
    "strategy": "strategy",
    "account": "account",
    "order_type": "order_type",
    "side": "side",
    "tif": "tif",
    "size": "size_bucket",
    "time": "time_bucket",
    "tod": "tod",
    "distance": "distance_bucket",
    "status": "status",
    "run": "run_id",
}

_NOT_BOOKED = ("UNKNOWN_ORDER", "ORDER_ANOMALY")
_EVENT_KINDS = ("OrderAccepted", "OrderRejected", "OrderCanceled", "OrderExpired", "OrderReplaced")
_EVENT_CODE = {"ack": 0, "reject": 1, "cancel": 2, "expire": 3, "replace": 4}  # in _EVENT_KINDS
TCA_COLUMNS = (
    "seq",
    "cause",
    "kind",
    "ts_recv",
    "ts_event",
    "order_id",
    "signal_id",
    "venue",
    "instrument",
    "account",
    "strategy",
    "side",
    "qty",
    "order_type",
    "price",
    "tif",
    "signal_price",
    "trade_id",
    "fee",
    "reason",
    "code",
    "bid_price",
    "ask_price",
)
_ENUMS = ("side", "order_type", "tif")


class TcaError(ValueError):
    """Journals that cannot be analysed as asked (a bad path, a bad field, a bad run)."""


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run to analyse: where it is, what it traded, which segments it has."""

    run_id: str
    run_dir: str
    mode: str
    status: str
    instruments: dict[str, Instrument]
    sealed: tuple[str, ...]
    unsealed: bool  # an open .arrows segment exists (a crashed or running run)


@dataclass(frozen=True)
class Tca:
    """Per-order and per-fill tables of one or many runs, and the runs they came from."""

    runs: tuple[RunInfo, ...]
    orders: pl.DataFrame  # one row per order, columns ORDER_COLUMNS
    fills: pl.DataFrame  # one row per booked fill, with its order's oix and the mids
    signal_rejects: int  # signals denied before any order reached a venue
    first_ts: int | None
    last_ts: int | None


# --- finding and reading runs -----------------------------------------------------------


def _is_run(path: Path) -> bool:
    return (path / "manifest.json").is_file()


def find_runs(specs: Iterable[str | Path]) -> list[Path]:
    """Resolve run directories, folders holding runs and globs to run directories."""
    found: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if _is_run(path):
            hits = [path]
        elif path.is_dir():
            hits = sorted(p for p in path.iterdir() if _is_run(p))
            if not hits:
                raise TcaError(
                    f"{text}: a folder without runs (expected a run directory with "
                    "manifest.json, or a folder holding such directories)"
                )
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text))
            hits = []
            for match in matches:
                if _is_run(match):
                    hits.append(match)
                elif match.is_dir():
                    hits.extend(sorted(p for p in match.iterdir() if _is_run(p)))
            if not hits:
                raise TcaError(f"{text}: the glob matches no run directory")
        else:
            raise TcaError(
                f"{text}: no such run directory, folder of runs or glob "
                "(expected a directory holding manifest.json)"
            )
        for hit in hits:
            if hit.resolve() not in {f.resolve() for f in found}:
                found.append(hit)
    return found


def open_run(run_dir: str | Path) -> RunInfo:
    """Read a run's manifest and list its segments."""
    path = Path(run_dir)
    try:
        manifest = read_manifest(path)
    except JournalError as exc:
        raise TcaError(str(exc)) from None
    try:
        instruments = msgspec.convert(manifest.instruments, list[Instrument])
    except msgspec.ValidationError as exc:
        raise TcaError(f"{path}/manifest.json instruments: {exc}") from None
    sealed = tuple(str(p) for p in sorted(path.glob("[0-9]" * 6 + ".arrow")))
    unsealed = any(not p.with_suffix(".arrow").exists() for p in path.glob("[0-9]" * 6 + ".arrows"))
    return RunInfo(
        run_id=manifest.run_id,
        run_dir=str(path),
        mode=manifest.mode,
        status=manifest.status,
        instruments={i.instrument: i for i in instruments},
        sealed=sealed,
        unsealed=unsealed,
    )


def _empty(columns: Sequence[str]) -> pl.LazyFrame:
    return pl.from_arrow(SCHEMA.empty_table().select(list(columns))).lazy()  # type: ignore[union-attr]


def scan_run(info: RunInfo, columns: Sequence[str] = TCA_COLUMNS) -> pl.LazyFrame:
    """Return a lazy frame of a run's journal entries (the columns asked for), in seq order."""
    parts: list[pl.LazyFrame] = []
    cols = list(columns)
    if info.sealed:
        parts.append(pl.scan_ipc(list(info.sealed)).select(cols))
    if info.unsealed:
        last_sealed = -1
        if info.sealed:
            top = pl.scan_ipc(list(info.sealed)).select(pl.col("seq").max()).collect().item()
            last_sealed = -1 if top is None else int(top)
        try:
            reader = JournalReader(info.run_dir)
            batches = [
                b.select(cols)
                for b in reader.batches()
                if b.num_rows and b.column(0)[b.num_rows - 1].as_py() > last_sealed
            ]
        except JournalError as exc:
            raise TcaError(str(exc)) from None
        if batches:
            table = pa.Table.from_batches(batches)
            parts.append(pl.from_arrow(table).lazy())  # type: ignore[union-attr]
    if not parts:
        return _empty(cols)
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


# --- reading a run's entries --------------------------------------------------------------

# What the build reads: name -> (kinds, columns, coded columns). A coded column arrives
# as integer codes (`_codes`): instrument and venue into the run's sorted names, -1 null;
# `kind` into `_EVENT_KINDS`.
_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "submits": (
        ("SubmitOrder",),
        (
            "seq",
            "ts_recv",
            "order_id",
            "signal_id",
            "account",
            "strategy",
            "side",
            "order_type",
            "tif",
            "qty",
            "price",
        ),
        ("instrument", "venue"),
    ),
    "signals": (("Signal",), ("seq", "ts_recv", "ts_event", "signal_id", "signal_price"), ()),
    "events": (_EVENT_KINDS, ("seq", "ts_recv", "order_id", "reason", "qty"), ("kind", "venue")),
    "fills": (
        ("OrderFilled",),
        ("seq", "ts_recv", "order_id", "trade_id", "price", "qty", "fee"),
        ("venue",),
    ),
    "alerts": (("Alert",), ("cause", "code"), ()),
    "quotes": (
        ("QuoteTick",),
        ("seq", "ts_recv", "bid_price", "ask_price"),
        ("instrument", "venue"),
    ),
}
_NAMED = ("instrument", "venue")  # coded into the run's names
_CODE_COLUMN = {"instrument": "ins", "venue": "ven", "kind": "k"}
# Their order ids arrive as `n` (see `_engine_numbers`) and, for the ids that are not
# the engine's, `order_id` (null where `n` says it all).
_NUMBERED = ("events", "fills")


def _memory_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow has it: it keeps freed pages for the next batch, where the
    default pool hands them back at once and every batch faults them in again."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()


_POOL = _memory_pool()


def _columns() -> list[str]:
    columns = ["seq", "kind", "ts_recv"]
    for _, cols, coded in _READS.values():
        columns += [c for c in (*cols, *coded) if c not in columns]
    return columns


class _Picked:
    """The rows of one segment that TCA reads, per `_READS` name, and its seq/ts range."""

    def __init__(self, run_id: str) -> None:
        self.prefix = f"{run_id}-"
        self.parts: dict[str, list[pa.RecordBatch]] = {name: [] for name in _READS}
        self.signal_rejects = 0
        self.last_seq: int | None = None
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        """Pick a batch's rows by its `kind` dictionary codes (numpy, no per-row Python);
        instrument and venue are dictionary-encoded once per batch, not copied as text."""
        kinds = batch.column("kind")
        names = kinds.dictionary.to_pylist()
        codes = kinds.indices.to_numpy(zero_copy_only=False)
        encoded: dict[str, pa.Array] = {"kind": kinds}
        for name, (wanted, cols, coded) in _READS.items():
            idx = [names.index(k) for k in wanted if k in names]
            if not idx:
                continue
            mask = codes == idx[0] if len(idx) == 1 else np.isin(codes, idx)
            if not mask.any():
                continue
            for c in coded:
                if c not in encoded:
                    encoded[c] = pc.dictionary_encode(batch.column(c), memory_pool=_POOL)
            arrays = [batch.column(c) for c in cols] + [encoded[c] for c in coded]
            picked = pc.filter(
                pa.RecordBatch.from_arrays(arrays, names=[*cols, *coded]),
                pa.array(mask, memory_pool=_POOL),
                memory_pool=_POOL,
            )
            if name in _NUMBERED:
                i = picked.schema.get_field_index("order_id")
                ids = picked.column(i)
                number = _engine_numbers(ids, self.prefix)
                if pc.all(pc.greater(number, 0)).as_py():
                    rest = pa.nulls(len(ids), ids.type)
                else:
                    rest = pc.if_else(pc.greater(number, 0), pa.scalar(None, ids.type), ids)
                picked = picked.set_column(i, "order_id", rest).append_column("n", number)
            self.parts[name].append(picked)
        if "SignalRejected" in names:
            self.signal_rejects += int(np.count_nonzero(codes == names.index("SignalRejected")))
        lo, hi = (v.as_py() for v in pc.min_max(batch.column("ts_recv")).values())
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        self.last_seq = batch.column("seq")[batch.num_rows - 1].as_py()


def _pick_sealed(path: str, run_id: str) -> _Picked:
    """Read one sealed segment, memory-mapped, decompressing only the columns TCA uses."""
    picked = _Picked(run_id)
    try:
        names = pa.ipc.open_file(pa.memory_map(path)).schema.names
        wanted = [names.index(c) for c in _columns()]
        options = pa.ipc.IpcReadOptions(use_threads=False, included_fields=wanted)
        reader = pa.ipc.open_file(pa.memory_map(path), options=options, memory_pool=_POOL)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if batch.num_rows:
                picked.add(batch)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TcaError(f"{path}: not a readable journal segment ({exc})") from None
    return picked


def _codes(column: pa.ChunkedArray, names: pa.Array) -> np.ndarray:
    """Map a dictionary column onto the positions of its values in `names` (-1: null or
    not among them), chunk by chunk through each chunk's small dictionary."""
    parts = []
    for chunk in column.chunks:
        where = pc.fill_null(pc.index_in(chunk.dictionary, value_set=names), -1)
        lut = np.append(where.to_numpy(zero_copy_only=False).astype(np.int32), np.int32(-1))
        parts.append(lut[pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)])
    return np.concatenate(parts) if parts else np.empty(0, np.int32)


@dataclass(frozen=True)
class _Entries:
    """One run's entries as TCA reads them: a frame per `_READS` name (instrument, venue
    and event kind as Int32 codes `ins`, `ven`, `k`), the run's instrument and venue
    names (sorted: a code is a position), and the counts and ranges of the whole run."""

    frames: dict[str, pl.DataFrame]
    names: dict[str, list[str]]
    signal_rejects: int
    last_seq: int | None
    first_ts: int | None
    last_ts: int | None


def _collect(info: RunInfo) -> _Entries:
    """Read the rows of the kinds TCA needs, in seq order: the sealed segments in
    parallel (one thread each, two at a time; pyarrow releases the GIL), then the
    unsealed tail through `JournalReader` (its batches after the last sealed seq)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        picked = list(pool.map(_pick_sealed, info.sealed, [info.run_id] * len(info.sealed)))
    if info.unsealed:
        sealed_seqs = [p.last_seq for p in picked if p.last_seq is not None]
        last_sealed = max(sealed_seqs) if sealed_seqs else -1
        tail = _Picked(info.run_id)
        try:
            for batch in JournalReader(info.run_dir).batches():
                if batch.num_rows and batch.column(0)[batch.num_rows - 1].as_py() > last_sealed:
                    tail.add(batch)
        except JournalError as exc:
            raise TcaError(str(exc)) from None
        picked.append(tail)
    tables: dict[str, pa.Table] = {}
    for name, (_, cols, coded) in _READS.items():
        batches = [b for p in picked for b in p.parts[name]]
        if batches:
            tables[name] = pa.Table.from_batches(batches)
        else:
            empty = SCHEMA.empty_table().select(list(cols))
            for c in coded:
                empty = empty.append_column(c, pa.array([], pa.dictionary(pa.int32(), pa.string())))
            if name in _NUMBERED:
                empty = empty.append_column("n", pa.array([], pa.int64()))
            tables[name] = empty
        del batches
    seqs = [p.last_seq for p in picked if p.last_seq is not None]
    firsts = [p.first_ts for p in picked if p.first_ts is not None]
    lasts = [p.last_ts for p in picked if p.last_ts is not None]
    signal_rejects = sum(p.signal_rejects for p in picked)
    del picked
    _POOL.release_unused()  # the batches read: hand their pages on to what follows
    names: dict[str, list[str]] = {}
    for c in _NAMED:
        dictionaries = [
            chunk.dictionary
            for table in tables.values()
            if c in table.column_names
            for chunk in table.column(c).chunks
        ]
        values = (
            pa.concat_arrays(dictionaries).unique() if dictionaries else pa.array([], pa.string())
        )
        names[c] = values.take(pc.sort_indices(values)).to_pylist()
    vocab = {c: pa.array(names[c], pa.string()) for c in _NAMED}
    vocab["kind"] = pa.array(_EVENT_KINDS)
    frames: dict[str, pl.DataFrame] = {}
    for name, (_, cols, coded) in _READS.items():
        table = tables.pop(name)
        frame = pl.from_arrow(table.select([*cols, *(["n"] if name in _NUMBERED else [])]))
        assert isinstance(frame, pl.DataFrame)
        casts = [
            pl.col(c).cast(pl.String) for c in frame.columns if frame.schema[c] == pl.Categorical
        ]
        casts += [pl.col(c).cast(pl.Int64) for c in ("seq", "cause") if c in frame.columns]
        casts += [
            pl.Series(_CODE_COLUMN[c], _codes(table.column(c), vocab[c]), pl.Int32) for c in coded
        ]
        frames[name] = frame.with_columns(casts)
    return _Entries(
        frames=frames,
        names=names,
        signal_rejects=signal_rejects,
        last_seq=max(seqs) if seqs else None,
        first_ts=min(firsts) if firsts else None,
        last_ts=max(lasts) if lasts else None,
    )


# --- index plumbing (numpy) ---------------------------------------------------------------

_POW10 = np.array([10**k for k in range(1, 19)], dtype=np.int64)


def _engine_numbers(ids: pa.Array | pa.ChunkedArray, prefix: str) -> pa.Array:
    """n for each id that is exactly f"{prefix}{n}", n >= 1 in plain decimal of at most 18
    digits (the engine's order ids, engine/ids.py), else 0."""
    tail = pc.utf8_slice_codeunits(ids, len(prefix), memory_pool=_POOL)
    start = pc.fill_null(pc.starts_with(ids, pattern=prefix, memory_pool=_POOL), False)
    try:  # every tail an integer: its digits say whether it is written plainly
        number = pc.fill_null(pc.cast(tail, pa.int64(), memory_pool=_POOL), 0)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        plain = pc.fill_null(pc.match_substring_regex(tail, "^[1-9][0-9]{0,17}$"), False)
        number = pc.cast(pc.if_else(pc.and_(start, plain), tail, "0"), pa.int64())
        return number.combine_chunks() if isinstance(number, pa.ChunkedArray) else number
    n = number.to_numpy()
    width = pc.fill_null(pc.binary_length(tail), 0).to_numpy()
    ok = start.to_numpy(zero_copy_only=False) & (n >= 1) & (n < 10**18)
    ok &= width == np.searchsorted(_POW10, n, side="right") + 1
    return pa.array(np.where(ok, n, 0))


def _order_ids(frame: pl.DataFrame, run_id: str) -> pl.Series:
    """The full order ids of a frame read with `n` (see `_NUMBERED`)."""
    return frame.select(
        pl.when(pl.col("n") > 0)
        .then(pl.lit(f"{run_id}-") + pl.col("n").cast(pl.String))
        .otherwise(pl.col("order_id"))
        .alias("order_id")
    ).to_series()


def _order_rows(
    number: np.ndarray, order_ids: pl.Series, plain: bool, ids: pl.Series | None
) -> np.ndarray:
    """The row among `order_ids` (distinct) of each order id, -1 where there is none.

    `number`: each id's `_engine_numbers`. `plain`: row i's id is the engine's number
    i + 1; an id then names an order exactly when its number is in range, and no text
    is compared. Otherwise (`ids`: the ids as text) the number's guess is checked
    against the order's id and the rest are joined."""
    rows = number - 1
    rows[rows >= order_ids.len()] = -1
    if plain or ids is None:
        return rows
    same = rows >= 0
    if same.any():
        guessed = order_ids.gather(np.where(same, rows, 0))
        same &= (guessed == ids).fill_null(False).to_numpy()
    rows = np.where(same, rows, -1)
    rest = np.flatnonzero(~same)
    if rest.size and order_ids.len():
        known = pl.DataFrame({"order_id": order_ids, "_row": np.arange(order_ids.len())})
        found = pl.DataFrame({"order_id": ids.gather(rest)}).join(
            known, on="order_id", how="left", maintain_order="left"
        )
        rows[rest] = found["_row"].fill_null(-1).to_numpy()
    return rows


def _repeats(frame: pl.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """Flag the rows whose `keys` equal an earlier row's (nulls equal): the rows are
    hashed and the hashes sorted; only rows whose hash repeats are compared exactly."""
    out = np.zeros(frame.height, dtype=bool)
    if frame.height < 2:
        return out
    h = pl.col(keys[0]).hash(seed=1)
    for i, key in enumerate(keys[1:], start=2):
        h = h ^ pl.col(key).hash(seed=i)
    hashes = frame.select(h).to_series().to_numpy()
    ordered = np.sort(hashes)
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    if twice.size == 0:
        return out
    rows = np.flatnonzero(np.isin(hashes, twice))
    suspects = frame.select(keys)[rows]
    out[rows] = ~suspects.select(pl.struct(keys).is_first_distinct()).to_series().to_numpy()
    return out


@dataclass(frozen=True)
class _Groups:
    """Rows grouped by an integer key (-1: none), stably: the rows of `keys[g]` are
    `order[bounds[g]:bounds[g + 1]]`, in their original order."""

    order: np.ndarray
    keys: np.ndarray
    bounds: np.ndarray


def _group(key: np.ndarray, base: np.ndarray | None = None) -> _Groups:
    """Group rows by `key`; within a key, rows keep the order of `base` (default: theirs)."""
    small = key.size > 0 and int(key.max()) < 2**15
    k = key.astype(np.int16) if small else key  # numpy radix-sorts 16-bit keys
    order = np.argsort(k if base is None else k[base], kind="stable")
    if base is not None:
        order = base[order]
    sorted_keys = key[order]
    cut = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    bounds = np.concatenate(([0], cut, [key.size])) if key.size else np.zeros(1, np.int64)
    return _Groups(order=order, keys=sorted_keys[bounds[:-1]], bounds=bounds)


@dataclass(frozen=True)
class _Series:
    """Right-hand rows for as-of lookups: grouped by key, each group in `on` order."""

    groups: _Groups
    on: np.ndarray  # the `on` values in group order

    @classmethod
    def of(cls, key: np.ndarray, on: np.ndarray, tiebreak: np.ndarray) -> _Series:
        """Group rows by key; within a group order them by (on, tiebreak)."""
        ascending = on.size < 2 or bool((on[1:] >= on[:-1]).all())
        base = None if ascending else np.lexsort((tiebreak, on))
        groups = _group(key, base)
        return cls(groups=groups, on=on[groups.order])


def _asof(
    right: _Series, left: _Groups, left_on: np.ndarray, key_map: np.ndarray | None = None
) -> np.ndarray:
    """For each left row, the right row of the same key with the greatest `on` at or
    below its `left_on` (the last of equals), -1 if none: a backward as-of lookup, one
    binary search per row. `key_map`: the right key for each left key (-1: none)."""
    on = left_on[left.order]
    found = np.full(on.size, -1, dtype=np.int64)
    where = {int(k): g for g, k in enumerate(right.groups.keys) if k >= 0}
    bounds = right.groups.bounds
    for g, k in enumerate(left.keys.tolist()):
        r = where.get(k if key_map is None or k < 0 else int(key_map[k])) if k >= 0 else None
        if r is None:
            continue
        a, b = bounds[r], bounds[r + 1]
        lo, hi = left.bounds[g], left.bounds[g + 1]
        at = a + np.searchsorted(right.on[a:b], on[lo:hi], side="right") - 1
        found[lo:hi] = np.where(at >= a, right.groups.order[at], -1)
    out = np.empty_like(found)
    out[left.order] = found
    return out


def _take(values: pl.Series, rows: np.ndarray) -> pl.Series:
    """`values` at `rows`, null where a row is -1."""
    miss = rows < 0
    if values.len() == 0 or miss.all():
        return pl.repeat(None, rows.size, dtype=values.dtype, eager=True).alias(values.name)
    out = values.gather(np.where(miss, 0, rows))
    return out.scatter(np.flatnonzero(miss), None) if miss.any() else out


def _masked(name: str, values: np.ndarray, null: np.ndarray) -> pl.Series:
    """`values` as a column, null where `null`."""
    return pl.Series(name, pa.array(values, mask=null))


def _placed(name: str, n: int, at: np.ndarray, values: np.ndarray) -> pl.Series:
    """A column of n rows holding `values` at the distinct rows `at`, null elsewhere."""
    full = np.zeros(n, dtype=values.dtype)
    full[at] = values
    null = np.ones(n, dtype=bool)
    null[at] = False
    return _masked(name, full, null)


def _firsts(keys: np.ndarray, last: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys and, for each, the row of its first (or last) occurrence."""
    if keys.size == 0:
        return keys, keys.astype(np.int64)
    ascending = bool((keys[1:] >= keys[:-1]).all())
    order = np.arange(keys.size) if ascending else np.argsort(keys, kind="stable")
    sk = keys[order]
    change = sk[1:] != sk[:-1]
    pick = np.concatenate((change, [True])) if last else np.concatenate(([True], change))
    return sk[pick], order[pick]


@dataclass(frozen=True)
class _Runs:
    """Rows stably sorted by a key into runs: run r holds sorted rows
    `starts[r]:starts[r] + lens[r]`, all of key `keys[r]`."""

    order: np.ndarray | None  # None: the rows are sorted already
    keys: np.ndarray
    starts: np.ndarray
    lens: np.ndarray

    @classmethod
    def of(cls, key: np.ndarray) -> _Runs:
        """Sort rows by key, stably (not at all when they already are)."""
        ascending = key.size < 2 or bool((key[1:] >= key[:-1]).all())
        order = None if ascending else np.argsort(key, kind="stable")
        sk = key if order is None else key[order]
        starts = np.flatnonzero(np.concatenate(([True], sk[1:] != sk[:-1]))) if key.size else key
        lens = np.diff(np.append(starts, key.size))
        return cls(order=order, keys=sk[starts], starts=starts, lens=lens)

    def rows(self, at: np.ndarray) -> np.ndarray:
        """The rows at sorted positions `at`."""
        return at if self.order is None else self.order[at]

    def sorted(self, values: np.ndarray) -> np.ndarray:
        """`values` in sorted order."""
        return values if self.order is None else values[self.order]

    def sums(self, values: np.ndarray) -> np.ndarray:
        """Integer sums per run (exact, wrapping like Polars)."""
        if values.size == 0:
            return values[:0]
        return np.add.reduceat(self.sorted(values), self.starts)

    def kahan(
        self, columns: list[np.ndarray], totals: list[np.ndarray], comps: list[np.ndarray]
    ) -> None:
        """Add each run's values of each column, in row order, to its Kahan sum `total[r]`
        with its compensation `comp[r]` (updated in place): carried over from an earlier
        step, the sum is the one a single pass gives, and the bits are those of Polars'
        grouped float `sum`. Rows are laid out depth-major (every run's first row, then
        every long-enough run's second, ...) so that each step is one vector operation."""
        g = self.lens.size
        if g == 0:
            return
        by_len = np.argsort(-self.lens, kind="stable")
        rank = np.empty(g, dtype=np.int64)
        rank[by_len] = np.arange(g)
        depth = np.arange(self.lens.sum()) - np.repeat(self.starts, self.lens)
        count = np.bincount(depth)  # count[d]: runs longer than d, the first of by_len
        offset = np.concatenate(([0], np.cumsum(count)[:-1]))
        dest = offset[depth] + np.repeat(rank, self.lens)
        # A few long runs left: the vector steps stop, and they finish one by one.
        stop = next(
            (d for d, k in enumerate(count.tolist()) if k <= 16 and count.size - d > 64),
            count.size,
        )
        for values, total, comp in zip(columns, totals, comps):
            laid = np.empty(values.size, dtype=np.float64)
            laid[dest] = self.sorted(values)
            s = total[by_len]
            c = comp[by_len]
            for d in range(stop):
                k = int(count[d])
                x = laid[offset[d] : offset[d] + k]
                y = x - c[:k]
                t = s[:k] + y
                c[:k] = (t - s[:k]) - y
                s[:k] = t
            for r in range(int(count[stop]) if stop < count.size else 0):
                run = int(by_len[r])
                start = int(self.starts[run])
                acc, err = float(s[r]), float(c[r])
                tail = self.rows(np.arange(start + stop, start + int(self.lens[run])))
                for x in values[tail].tolist():
                    y = x - err
                    t = acc + y
                    err = (t - acc) - y
                    acc = t
                s[r], c[r] = acc, err
            total[by_len] = s
            comp[by_len] = c


# --- the per-run build --------------------------------------------------------------------


def _mid(bid: str, ask: str) -> pl.Expr:
    return (pl.col(bid).cast(pl.Float64) + pl.col(ask).cast(pl.Float64)) / 2.0


def _ratio(num: str, den: str) -> pl.Expr:
    """num / den, null where den is null or 0 (never NaN)."""
    d = pl.col(den)
    return pl.when(d > 0).then(pl.col(num) / d.cast(pl.Float64)).otherwise(None)


def _attach(
    left: pl.DataFrame, orders: pl.DataFrame, run_id: str, columns: Sequence[str]
) -> pl.DataFrame:
    """Add to each row of `left` (an `order_id` column, seq order) its order's `columns`;
    rows of unknown orders are dropped, the order of the rest kept."""
    ids = left["order_id"]
    number = _engine_numbers(ids.to_arrow(), f"{run_id}-").to_numpy()
    rows = _order_rows(number, orders["order_id"], False, ids)
    known = rows >= 0
    return pl.concat([left.filter(known), orders.select(columns)[rows[known]]], how="horizontal")


def _put(orders: pl.DataFrame, table: pl.DataFrame, oix0: int) -> pl.DataFrame:
    """Left-join a table keyed by unique `oix` onto the orders (row i has oix oix0 + i),
    by position: no hashing."""
    at = (table["oix"] - oix0).cast(pl.Int64)
    columns = []
    for name in table.columns:
        if name == "oix":
            continue
        empty = pl.repeat(None, orders.height, dtype=table.schema[name], eager=True).alias(name)
        columns.append(empty.scatter(at, table[name]) if table.height else empty)
    return orders.with_columns(columns)


@dataclass(frozen=True)
class _Quotes:
    """A run's quotes for as-of lookups: by (instrument, venue) key, on seq and on
    ts_recv (ties in seq order), and their bid, ask and mid."""

    by_seq: _Series
    by_ts: _Series
    bid: pl.Series
    ask: pl.Series
    mid: pl.Series
    mid_values: np.ndarray  # the mids as numpy, 0.0 where null
    mid_null: np.ndarray


def _quote_keys(entries: _Entries) -> tuple[_Quotes, np.ndarray]:
    """Number the (instrument, venue) pairs that have quotes, in name order (nulls
    first; a pair with a null never matches), and index the quotes by them. Returns the
    quotes and the key table `pair[instrument code + 1, venue code + 1]` (-1: no quotes)."""
    q = entries.frames["quotes"]
    ins = q["ins"].to_numpy().astype(np.int64)
    ven = q["ven"].to_numpy().astype(np.int64)
    width = len(entries.names["venue"]) + 1
    cells = (len(entries.names["instrument"]) + 1) * width
    code = (ins + 1) * width + (ven + 1)
    present = np.bincount(code, minlength=cells) > 0
    pair = np.where(present, np.cumsum(present) - 1, -1).reshape(-1, width)
    pair[0, :] = -1  # numbered, but never matched
    pair[:, 0] = -1
    key = pair[ins + 1, ven + 1]
    seq = q["seq"].to_numpy()
    ts = q["ts_recv"].to_numpy()
    by_seq = _Series.of(key, seq, seq)
    in_ts_order = ts.size < 2 or bool((ts[1:] >= ts[:-1]).all())
    mid = q.select(_mid("bid_price", "ask_price")).to_series()
    quotes = _Quotes(
        by_seq=by_seq,
        # in seq order the quotes' groups are in (ts_recv, seq) order too
        by_ts=_Series(by_seq.groups, ts[by_seq.groups.order])
        if in_ts_order
        else _Series.of(key, ts, seq),
        bid=q["bid_price"],
        ask=q["ask_price"],
        mid=mid,
        mid_values=mid.fill_null(0.0).to_numpy(),
        mid_null=mid.is_null().to_numpy(),
    )
    return quotes, pair


def _signal_rows(signals: pl.DataFrame, submits: pl.DataFrame) -> tuple[np.ndarray, int]:
    """For each submit, the row of the first signal with its signal_id (-1: none); and
    how many distinct signal ids there are.

    The usual answer is the last signal before the submit (a signal's orders follow it
    in the journal): that guess is checked, and the rest looked up with a join."""
    if signals.height == 0 or submits.height == 0:
        return np.full(submits.height, -1, dtype=np.int64), signals.height
    first = ~_repeats(signals, ["signal_id"])
    guess = np.searchsorted(signals["seq"].to_numpy(), submits["seq"].to_numpy()) - 1
    rows = np.where(guess >= 0, guess, 0)
    same = (guess >= 0) & first[rows]
    same &= (signals["signal_id"].gather(rows) == submits["signal_id"]).fill_null(False).to_numpy()
    rows = np.where(same, rows, -1)
    rest = np.flatnonzero(~same)
    if rest.size:
        known = pl.DataFrame(
            {"signal_id": signals["signal_id"], "_row": np.arange(signals.height)}
        ).filter(pl.Series(first))
        found = pl.DataFrame({"signal_id": submits["signal_id"].gather(rest)}).join(
            known, on="signal_id", how="left", maintain_order="left"
        )
        rows[rest] = found["_row"].fill_null(-1).to_numpy()
    return rows, int(first.sum())


def _names(names: list[str], codes: np.ndarray, name: str) -> pl.Series:
    """The names of codes (-1: null)."""
    return _take(pl.Series(name, names, pl.String), codes.astype(np.int64))


def _orders(
    info: RunInfo, entries: _Entries, pair: np.ndarray, oix0: int
) -> tuple[pl.DataFrame, bool]:
    """One row per order (the first `SubmitOrder` of each order_id), numbered from oix0,
    with its instrument's reference data, its signal and its quote key; and whether the
    order ids are the engine's plain `f"{run_id}-{row + 1}"` (see `_order_rows`)."""
    subs = entries.frames["submits"]

    def engine_numbered(ids: pl.Series) -> bool:
        numbers = _engine_numbers(ids.to_arrow(), f"{info.run_id}-").to_numpy()
        return bool((numbers == np.arange(1, ids.len() + 1)).all())

    plain = engine_numbered(subs["order_id"])  # then distinct: no repeat to drop
    if not plain:
        subs = subs.filter(pl.Series(~_repeats(subs, ["order_id"])))
        plain = engine_numbered(subs["order_id"])
    signals = entries.frames["signals"]
    at, distinct = _signal_rows(signals, subs)
    ins = subs["ins"].to_numpy().astype(np.int64)
    ven = subs["ven"].to_numpy().astype(np.int64)
    known = [info.instruments.get(name) for name in entries.names["instrument"]] + [None]
    ref = np.where(ins >= 0, ins, len(known) - 1)
    scales = [1.0 if i is None else 10.0 ** (i.price_precision + i.size_precision) for i in known]
    # Every order on the manifest's one instrument, or from the run's one signal: their
    # columns are constants, as a join with a one-row table makes them, and Polars
    # divides by a constant as a product with its reciprocal (the bits they have had).
    constant = len(info.instruments) == 1 and subs.height > 1 and bool((ref == ref[0]).all())
    constant = constant and known[int(ref[0])] is not None
    one_signal = distinct == 1 and subs.height > 1 and bool((at == at[0]).all() and at[0] >= 0)

    def attr(name: str, values: list[float | int | str], dtype: pl.DataType) -> pl.Series | pl.Expr:
        if constant:
            return pl.lit(values[int(ref[0])], dtype).alias(name)
        return pl.Series(name, values, dtype).gather(ref)

    def signal(column: pl.Series) -> pl.Series | pl.Expr:
        if one_signal:
            return pl.lit(column[int(at[0])], column.dtype).alias(column.name)
        return _take(column, at)

    def field(name: str, default: int | str) -> list[int | str]:
        return [default if i is None else getattr(i, name) for i in known]

    qkey = pair[ins + 1, ven + 1]
    orders = subs.with_columns(
        pl.int_range(oix0, oix0 + subs.height, dtype=pl.Int64).alias("oix"),
        pl.col("ts_recv").alias("ts_sent"),
        pl.when(pl.col("side") == "BUY").then(1.0).otherwise(-1.0).alias("sign"),
        pl.col("price").alias("limit_price"),
        _names(entries.names["instrument"], ins, "instrument"),
        _names(entries.names["venue"], ven, "venue"),
        attr("tick_size", field("tick_size", 1), pl.Int64),
        attr("lot_size", field("lot_size", 1), pl.Int64),
        attr("multiplier", field("multiplier", 1), pl.Int64),
        attr("scale", scales, pl.Float64),
        attr("currency", field("currency", "?"), pl.String),
        signal(signals.select(pl.coalesce("ts_event", "ts_recv").alias("ts_signal")).to_series()),
        signal(signals["signal_price"]),
        _masked("qkey", qkey, qkey < 0),
    ).drop("ts_recv", "price")
    return orders, plain


def _order_events(events: pl.DataFrame, rows: np.ndarray, n: int) -> list[pl.Series]:
    """Each order's first ack, reject, cancel and expiry (ts; seq but for the ack; the
    reject's reason) and its last replaced qty and replace count; `events` in seq order,
    `rows` their orders' rows."""
    kind = events["k"].to_numpy()
    seq = events["seq"].to_numpy()
    ts = events["ts_recv"].to_numpy()
    out = []
    for name in ("ack", "reject", "cancel", "expire"):
        picked = np.flatnonzero(kind == _EVENT_CODE[name])
        keys, first = _firsts(rows[picked])
        at = picked[first]
        out.append(_placed(f"ts_{name}", n, keys, ts[at]))
        if name != "ack":
            out.append(_placed(f"seq_{name}", n, keys, seq[at]))
        if name == "reject":
            nulls = pl.repeat(None, n, dtype=pl.String, eager=True)
            reasons = events["reason"].gather(at)
            out.append(
                nulls.scatter(keys, reasons).alias("reject_reason")
                if at.size
                else nulls.alias("reject_reason")
            )
    picked = np.flatnonzero(kind == _EVENT_CODE["replace"])
    keys, last = _firsts(rows[picked], last=True)
    at = picked[last]
    qty = pl.repeat(None, n, dtype=pl.Int64, eager=True)
    if at.size:
        qty = qty.scatter(keys, events["qty"].gather(at))
    counts = np.unique(rows[picked], return_counts=True)[1] if picked.size else keys
    out.append(qty.alias("replaced_qty"))
    out.append(_placed("replaces", n, keys, counts.astype(np.int64)))
    return out


def _arrival(
    orders: pl.DataFrame, ins: np.ndarray, key: np.ndarray, quotes: _Quotes, pair: np.ndarray
) -> list[pl.Series]:
    """The order's venue quote and the best bid and ask across venues at its submit seq."""
    seq = orders["seq"].to_numpy()
    at = _asof(quotes.by_seq, _group(key), seq)
    out = [_take(quotes.bid, at).alias("arrival_bid"), _take(quotes.ask, at).alias("arrival_ask")]
    by_instrument = _group(ins)
    bids, asks = [], []
    for venue in range(1, pair.shape[1]):
        key_map = pair[1:, venue]  # instrument code -> key of (instrument, venue)
        if (key_map < 0).all():
            continue
        at = _asof(quotes.by_seq, by_instrument, seq, key_map)
        bids.append(_take(quotes.bid, at).alias(f"_bid{venue}"))
        asks.append(_take(quotes.ask, at).alias(f"_ask{venue}"))
    if not bids:
        none = pl.repeat(None, orders.height, dtype=pl.Int64, eager=True)
        return [*out, none.alias("arrival_best_bid"), none.alias("arrival_best_ask")]
    best = pl.DataFrame([*bids, *asks]).select(
        pl.max_horizontal([b.name for b in bids]).alias("arrival_best_bid"),
        pl.min_horizontal([a.name for a in asks]).alias("arrival_best_ask"),
    )
    return [*out, *best.get_columns()]


_STEP = 1 << 20  # fills per step: a step's temporaries stay small and are reused


class _FillSums:
    """Per order, sums over its booked fills, added step by step in seq order."""

    INTS = (
        "filled_qty",
        "fees",
        "_pq",
        "_eff_qty",
        *(f"_mo_{n}_qty" for n, _ in MARKOUT_HORIZONS_NS),
    )
    FLOATS = ("_eff_num", *(f"_mo_{n}_num" for n, _ in MARKOUT_HORIZONS_NS))

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = np.zeros(n, dtype=np.int64)
        self.ints = {name: np.zeros(n, dtype=np.int64) for name in self.INTS}
        self.floats = {name: (np.zeros(n), np.zeros(n)) for name in self.FLOATS}
        self.first = np.zeros(n, dtype=np.int64)  # fill row of the first and last fill
        self.last = np.zeros(n, dtype=np.int64)

    @staticmethod
    def terms(f: pl.DataFrame) -> list[pl.Expr]:
        """Per fill, the terms summed (the int ones, then the float ones)."""
        qty = pl.col("qty")
        price = pl.col("price").cast(pl.Float64)
        sign = pl.col("sign")
        mid = pl.col("mid_fill")
        ints = [
            qty.fill_null(0).alias("filled_qty"),
            pl.col("fee").fill_null(0).alias("fees"),
            (pl.col("price") * qty).fill_null(0).alias("_pq"),
            pl.when(mid.is_not_null()).then(qty).otherwise(0).fill_null(0).alias("_eff_qty"),
        ]
        floats = [(2.0 * sign * (price - mid) / mid * 1e4 * qty).fill_null(0.0).alias("_eff_num")]
        for name, _ in MARKOUT_HORIZONS_NS:
            m = pl.col(f"mid_{name}")
            ints.append(
                pl.when(m.is_not_null())
                .then(qty)
                .otherwise(0)
                .fill_null(0)
                .alias(f"_mo_{name}_qty")
            )
            floats.append(
                (sign * (m - price) / price * 1e4 * qty).fill_null(0.0).alias(f"_mo_{name}_num")
            )
        return [*ints, *floats]

    def add(self, step: pl.DataFrame, rows: np.ndarray, first_row: int) -> None:
        """Add a step of fills (seq order; `rows` their orders' rows, `first_row` the
        fill row of the step's first)."""
        runs = _Runs.of(rows)
        keys = runs.keys
        terms = step.select(self.terms(step))
        for name in self.INTS:
            self.ints[name][keys] += runs.sums(terms[name].to_numpy())
        totals = [self.floats[name][0][keys] for name in self.FLOATS]
        comps = [self.floats[name][1][keys] for name in self.FLOATS]
        runs.kahan([terms[name].to_numpy() for name in self.FLOATS], totals, comps)
        for name, t, c in zip(self.FLOATS, totals, comps):
            self.floats[name][0][keys] = t
            self.floats[name][1][keys] = c
        fresh = self.count[keys] == 0
        self.first[keys[fresh]] = first_row + runs.rows(runs.starts[fresh])
        self.last[keys] = first_row + runs.rows(runs.starts + runs.lens - 1)
        self.count[keys] += runs.lens

    def columns(self, fills: pl.DataFrame) -> list[pl.Series]:
        """The per-order columns (null for orders without fills)."""
        none = self.count == 0
        out = [_masked(name, values, none) for name, values in self.ints.items()]
        out += [_masked(name, total, none) for name, (total, _) in self.floats.items()]
        out.append(_masked("n_fills", self.count, none))
        first = np.where(none, -1, self.first)
        last = np.where(none, -1, self.last)
        ts = fills["ts_recv"].to_numpy()
        out.append(_masked("ts_first_fill", ts[np.maximum(first, 0)] if ts.size else first, none))
        out.append(
            _masked(
                "_last_seq", fills["seq"].to_numpy()[np.maximum(last, 0)] if ts.size else last, none
            )
        )
        out.append(_masked("_last_ts", ts[np.maximum(last, 0)] if ts.size else last, none))
        out.append(_take(fills["qty"], last).alias("_last_qty"))
        return out


def _fills(
    fills: pl.DataFrame,
    rows: np.ndarray,
    orders: pl.DataFrame,
    key: np.ndarray,
    quotes: _Quotes,
    last_ts: int | None,
) -> tuple[pl.DataFrame, list[pl.Series]]:
    """The booked fills (seq order) with their order, the mid at the fill and the
    markout mids; and per order, the sums over them (`_FillSums`). `rows`: each fill's
    order row (-1: unknown). Steps of `_STEP` fills keep the temporaries small."""
    n = orders.height
    ven = fills["ven"].to_numpy()
    keep = rows >= 0
    keep[keep] = (ven[keep] >= 0) & (ven[keep] == orders["ven"].to_numpy()[rows[keep]])
    oix0 = int(orders["oix"][0]) if n else 0
    at = rows[keep]
    again = _repeats(
        pl.DataFrame({"oix": at, "trade_id": fills["trade_id"].filter(pl.Series(keep))}),
        ["oix", "trade_id"],
    )
    if again.any():
        keep[np.flatnonzero(keep)[again]] = False
        at = rows[keep]
    f = fills if keep.all() else fills.filter(pl.Series(keep))
    m = f.height
    seq = f["seq"].to_numpy()
    ts = f["ts_recv"].to_numpy()
    fkey = key[at]
    sign = orders["sign"].to_numpy()[at]
    names = ("mid_fill", *(f"mid_{name}" for name, _ in MARKOUT_HORIZONS_NS))
    mids = {name: (np.empty(m), np.empty(m, dtype=bool)) for name in names}
    sums = _FillSums(n)
    horizon_end = last_ts if last_ts is not None else -(2**62)
    for a in range(0, m, _STEP):
        b = min(a + _STEP, m)
        groups = _group(fkey[a:b])
        found = [_asof(quotes.by_seq, groups, seq[a:b])]
        found += [_asof(quotes.by_ts, groups, ts[a:b] + h) for _, h in MARKOUT_HORIZONS_NS]
        for i, (name, idx) in enumerate(zip(names, found)):
            values, null = mids[name]
            values[a:b] = quotes.mid_values[np.maximum(idx, 0)] if quotes.mid_values.size else 0.0
            null[a:b] = (idx < 0) | (
                quotes.mid_null[np.maximum(idx, 0)] if quotes.mid_values.size else True
            )
            if i:
                null[a:b] |= ts[a:b] + MARKOUT_HORIZONS_NS[i - 1][1] > horizon_end
        step = (
            f.slice(a, b - a)
            .select("price", "qty", "fee")
            .with_columns(
                pl.Series("sign", sign[a:b]),
                *(_masked(name, mids[name][0][a:b], mids[name][1][a:b]) for name in names),
            )
        )
        sums.add(step, at[a:b], a)
    table = pl.DataFrame(
        [
            f["seq"],
            f["ts_recv"],
            orders["order_id"][at],
            orders["venue"][at],
            f["trade_id"],
            f["price"],
            f["qty"],
            f["fee"],
            pl.Series("oix", at + oix0),
            _masked("qkey", fkey, fkey < 0),
            orders["instrument"][at],
            pl.Series("sign", sign),
            pl.Series("ts_sent", orders["ts_sent"].to_numpy()[at]),
            *(_masked(name, values, null) for name, (values, null) in mids.items()),
        ]
    )
    return table, sums.columns(table)


def _full_fills(orders: pl.DataFrame, fills: pl.DataFrame) -> pl.DataFrame:
    """Per filled order (oix): the seq and ts of the fill that completed it.

    Usually its last fill; where fills went on after the qty was reached (an overfill),
    the running sum finds the first fill that reached it."""
    full = orders.select("oix", "filled_qty", "qty_final", "_last_qty", "_last_seq", "_last_ts")
    full = full.filter(pl.col("filled_qty") >= pl.col("qty_final"))
    simple = full.filter(pl.col("filled_qty") - pl.col("_last_qty") < pl.col("qty_final"))
    done = simple.select(
        "oix", pl.col("_last_seq").alias("_seq_full"), pl.col("_last_ts").alias("_ts_full")
    )
    over = full.filter(pl.col("filled_qty") - pl.col("_last_qty") >= pl.col("qty_final"))
    if over.height:
        sub = fills.join(over.select("oix", "qty_final"), on="oix", how="inner").sort("seq")
        reached = sub.with_columns(pl.col("qty").cum_sum().over("oix").alias("_cum")).filter(
            pl.col("_cum") >= pl.col("qty_final")
        )
        first = reached.group_by("oix").agg(
            pl.col("seq").first().alias("_seq_full"), pl.col("ts_recv").first().alias("_ts_full")
        )
        done = pl.concat([done, first.select(done.columns)])
    return done


def _build_run(info: RunInfo, oix0: int, time_bucket_ns: int) -> tuple[pl.DataFrame, ...]:
    """Build one run's order and fill tables (order numbers from `oix0`)."""
    entries = _collect(info)
    frames = entries.frames
    quotes, pair = _quote_keys(entries)
    refused = (
        frames["alerts"]
        .filter(pl.col("code").is_in(_NOT_BOOKED) & pl.col("cause").is_not_null())
        .get_column("cause")
    )

    def booked(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(~pl.col("seq").is_in(refused.implode())) if refused.len() else frame

    orders, plain = _orders(info, entries, pair, oix0)
    n = orders.height
    key = orders["qkey"].fill_null(-1).to_numpy()
    events = booked(frames["events"])
    ids = None if plain else _order_ids(events, info.run_id)
    rows = _order_rows(events["n"].to_numpy(), orders["order_id"], plain, ids)
    ven = events["ven"].to_numpy()
    ok = rows >= 0
    ok[ok] = (ven[ok] >= 0) & (ven[ok] == orders["ven"].to_numpy()[rows[ok]])
    orders = orders.with_columns(_order_events(events.filter(pl.Series(ok)), rows[ok], n))
    orders = orders.with_columns(
        pl.coalesce("replaced_qty", "qty").alias("qty_final"),
        pl.col("replaces").fill_null(0).cast(pl.Int64),
    )
    ins = orders["ins"].to_numpy().astype(np.int64)
    orders = orders.with_columns(_arrival(orders, ins, key, quotes, pair))
    fills = booked(frames["fills"])
    ids = None if plain else _order_ids(fills, info.run_id)
    rows = _order_rows(fills["n"].to_numpy(), orders["order_id"], plain, ids)
    del ids
    fill_rows, per_order = _fills(fills, rows, orders, key, quotes, entries.last_ts)
    del fills, rows
    orders = orders.with_columns(per_order)
    orders = orders.with_columns(
        pl.col("filled_qty").fill_null(0),
        pl.col("fees").fill_null(0),
        pl.col("n_fills").fill_null(0),
    )
    orders = _put(orders, _full_fills(orders, fill_rows), oix0)
    orders = _finish(orders, quotes, key, entries.last_seq, time_bucket_ns)
    orders = orders.with_columns(pl.lit(info.run_id).alias("run_id"))
    fill_rows = fill_rows.with_columns(pl.lit(info.run_id).alias("run_id"))
    return (
        orders,
        fill_rows,
        pl.DataFrame(
            {
                "signal_rejects": [entries.signal_rejects],
                "first_ts": [entries.first_ts],
                "last_ts": [entries.last_ts],
            },
            schema={"signal_rejects": pl.Int64, "first_ts": pl.Int64, "last_ts": pl.Int64},
        ),
    )


def _finish(
    orders: pl.DataFrame,
    quotes: _Quotes,
    key: np.ndarray,
    last_seq: int | None,
    time_bucket_ns: int,
) -> pl.DataFrame:
    """Status, done time, mids, slippage, shortfall, markouts, latencies and buckets."""
    filled = pl.col("filled_qty")
    status = (
        pl.when(filled >= pl.col("qty_final"))
        .then(pl.lit("FILLED"))
        .when(pl.col("ts_reject").is_not_null())
        .then(pl.lit("REJECTED"))
        .when(pl.col("ts_cancel").is_not_null())
        .then(pl.lit("CANCELED"))
        .when(pl.col("ts_expire").is_not_null())
        .then(pl.lit("EXPIRED"))
        .when(filled > 0)
        .then(pl.lit("PARTIALLY_FILLED"))
        .when(pl.col("ts_ack").is_not_null())
        .then(pl.lit("ACCEPTED"))
        .otherwise(pl.lit("PENDING_NEW"))
    )

    def by_status(full_col: str, reject: str, cancel: str, expire: str) -> pl.Expr:
        s = pl.col("status")
        return (
            pl.when(s == "FILLED")
            .then(pl.col(full_col))
            .when(s == "REJECTED")
            .then(pl.col(reject))
            .when(s == "CANCELED")
            .then(pl.col(cancel))
            .when(s == "EXPIRED")
            .then(pl.col(expire))
            .otherwise(None)
        )

    o = orders.with_columns(status.alias("status"))
    o = o.with_columns(
        by_status("_ts_full", "ts_reject", "ts_cancel", "ts_expire").alias("ts_done"),
        by_status("_seq_full", "seq_reject", "seq_cancel", "seq_expire").alias("_seq_done"),
    )
    # The mid when the order ended (the run's last mid if it never did), for the
    # opportunity cost of what was left unfilled.
    open_qty = (pl.col("qty") - filled).clip(lower_bound=0)
    end = o.select(
        (open_qty > 0).fill_null(False).alias("open"),
        pl.coalesce("_seq_done", pl.lit(last_seq if last_seq is not None else 0, pl.Int64))
        .cast(pl.Int64)
        .alias("_seq_end"),
    )
    rows = np.flatnonzero(end["open"].to_numpy())
    at = np.full(o.height, -1, dtype=np.int64)
    at[rows] = _asof(quotes.by_seq, _group(key[rows]), end["_seq_end"].to_numpy()[rows])
    o = o.with_columns(_take(quotes.mid, at).alias("end_mid"))

    sign = pl.col("sign")
    qty = pl.col("qty").cast(pl.Float64)
    fq = filled.cast(pl.Float64)
    vwap = pl.when(filled > 0).then(pl.col("_pq").cast(pl.Float64) / fq).otherwise(None)
    arrival_mid = _mid("arrival_bid", "arrival_ask")
    best_mid = _mid("arrival_best_bid", "arrival_best_ask")
    sig = pl.col("signal_price").cast(pl.Float64)
    good_sig = pl.col("signal_price").is_not_null() & (pl.col("signal_price") > 0)

    def bps(ref: pl.Expr) -> pl.Expr:
        return sign * (pl.col("vwap") - ref) / ref * 1e4

    o = o.with_columns(
        vwap.alias("vwap"),
        arrival_mid.alias("arrival_mid"),
        best_mid.alias("arrival_best_mid"),
        pl.when(good_sig).then(sig).otherwise(arrival_mid).alias("decision_price"),
    )
    pd_ = pl.col("decision_price")
    mult = pl.col("multiplier").cast(pl.Float64)
    denom = pd_ * qty
    unfilled = open_qty.cast(pl.Float64)
    o = o.with_columns(
        pl.when(good_sig).then(bps(sig)).otherwise(None).alias("slippage_signal_bps"),
        bps(pl.col("arrival_mid")).alias("slippage_arrival_bps"),
        bps(pl.col("arrival_best_mid")).alias("slippage_best_bps"),
        (sign * (pl.col("_pq").fill_null(0).cast(pl.Float64) - pd_ * fq) / denom * 1e4).alias(
            "is_execution_bps"
        ),
        pl.when(unfilled == 0)
        .then(pl.lit(0.0))
        .otherwise(sign * (pl.col("end_mid") - pd_) * unfilled / denom * 1e4)
        .alias("is_opportunity_bps"),
        (pl.col("fees").cast(pl.Float64) / (mult * denom) * 1e4).alias("is_fees_bps"),
        _ratio("_eff_num", "_eff_qty").alias("effective_spread_bps"),
        *(
            _ratio(f"_mo_{n}_num", f"_mo_{n}_qty").alias(f"markout_{n}_bps")
            for n, _ in MARKOUT_HORIZONS_NS
        ),
        (pl.col("_pq").fill_null(0).cast(pl.Float64) * mult / pl.col("scale")).alias(
            "filled_notional"
        ),
        (pd_ * qty * mult / pl.col("scale")).alias("order_notional"),
        (pl.col("fees").cast(pl.Float64) / pl.col("scale")).alias("fees_ccy"),
        (pl.col("ts_first_fill") - pl.col("ts_sent")).alias("time_to_fill_ns"),
        *((pl.col(b) - pl.col(a)).alias(f"lat_{name}_ns") for name, a, b in STAGES),
        (pl.col("ts_done") - pl.col("ts_sent")).alias("lat_sent_to_done_ns"),
        touch_distance_ticks(
            sign > 0,
            pl.col("limit_price"),
            pl.col("arrival_bid"),
            pl.col("arrival_ask"),
            pl.col("tick_size"),
        ).alias("touch_distance_ticks"),
        size_bucket(pl.col("qty"), pl.col("lot_size")).alias("size_bucket"),
        tod_bucket(pl.col("ts_sent")).alias("tod"),
        (pl.col("ts_sent") - pl.col("ts_sent") % time_bucket_ns).alias("time_bucket"),
    )
    o = o.with_columns(
        (pl.col("is_execution_bps") + pl.col("is_opportunity_bps") + pl.col("is_fees_bps")).alias(
            "shortfall_bps"
        ),
        distance_bucket(pl.col("touch_distance_ticks")).alias("distance_bucket"),
    )
    return o.select(ORDER_COLUMNS[1:])


ORDER_COLUMNS: tuple[str, ...] = (
    "run_id",
    "oix",
    "seq",
    "order_id",
    "signal_id",
    "strategy",
    "account",
    "instrument",
    "venue",
    "side",
    "order_type",
    "tif",
    "qty",
    "qty_final",
    "replaces",
    "limit_price",
    "signal_price",
    "decision_price",
    "arrival_bid",
    "arrival_ask",
    "arrival_mid",
    "arrival_best_bid",
    "arrival_best_ask",
    "arrival_best_mid",
    "end_mid",
    "ts_signal",
    "ts_sent",
    "ts_ack",
    "ts_first_fill",
    "ts_done",
    "status",
    "reject_reason",
    "filled_qty",
    "n_fills",
    "vwap",
    "fees",
    "sign",
    "slippage_signal_bps",
    "slippage_arrival_bps",
    "slippage_best_bps",
    "is_execution_bps",
    "is_opportunity_bps",
    "is_fees_bps",
    "shortfall_bps",
    "effective_spread_bps",
    *(f"markout_{n}_bps" for n, _ in MARKOUT_HORIZONS_NS),
    "time_to_fill_ns",
    *(f"lat_{name}_ns" for name, _, _ in STAGES),
    "lat_sent_to_done_ns",
    "touch_distance_ticks",
    "distance_bucket",
    "size_bucket",
    "tod",
    "time_bucket",
    "tick_size",
    "lot_size",
    "multiplier",
    "currency",
    "filled_notional",
    "order_notional",
    "fees_ccy",
)


def load_tca(
    specs: Iterable[str | Path] | str | Path, *, time_bucket_ns: int = DEFAULT_TIME_BUCKET_NS
) -> Tca:
    """Build the per-order and per-fill TCA tables of the runs `specs` name."""
    if time_bucket_ns <= 0:
        raise TcaError(f"time_bucket_ns: expected > 0, got {time_bucket_ns}")
    if isinstance(specs, str | Path):
        specs = [specs]
    paths = find_runs(specs)
    infos: list[RunInfo] = []
    seen: dict[str, str] = {}
    for path in paths:
        info = open_run(path)
        if info.run_id in seen:
            raise TcaError(
                f"run id {info.run_id!r} appears twice ({seen[info.run_id]} and {path}): "
                "a run id must name one run"
            )
        seen[info.run_id] = str(path)
        infos.append(info)
    orders_parts, fill_parts, meta = [], [], []
    oix = 0
    for info in infos:
        orders, fills, m = _build_run(info, oix, time_bucket_ns)
        oix += orders.height
        orders_parts.append(orders)
        fill_parts.append(fills)
        meta.append(m)
    if not infos:
        raise TcaError("no runs given")
    orders = pl.concat(orders_parts, how="vertical_relaxed")
    fills = pl.concat(fill_parts, how="vertical_relaxed")
    m = pl.concat(meta)
    return Tca(
        runs=tuple(infos),
        orders=orders.select(ORDER_COLUMNS),
        fills=fills,
        signal_rejects=int(m["signal_rejects"].sum()),
        first_ts=m["first_ts"].min(),  # type: ignore[arg-type]
        last_ts=m["last_ts"].max(),  # type: ignore[arg-type]
    )


# --- aggregation ------------------------------------------------------------------------


def parse_by(text: str | Sequence[str] | None) -> list[str]:
    """Check `--by` fields (comma-separated or a list); return them in order."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    fields = [f.strip() for f in items if f.strip()]
    unknown = [f for f in fields if f not in BY_FIELDS]
    if unknown:
        raise TcaError(
            f"--by {', '.join(repr(u) for u in unknown)}: expected fields among "
            f"{', '.join(BY_FIELDS)}"
        )
    if len(set(fields)) != len(fields):
        raise TcaError(f"--by {','.join(fields)}: a field is named twice")
    return fields


def _wavg(value: str, weight: str) -> str:
    return (
        f"sum({value} * {weight}) filter (where {value} is not null and {weight} > 0)"
        f" / nullif(sum({weight}) filter (where {value} is not null and {weight} > 0), 0)"
    )


def _metrics_sql() -> str:
    parts = [
        "count(*) as orders",
        "count(*) filter (where filled_qty > 0) as orders_filled",
        "sum(n_fills)::bigint as fills",
        "avg(case when filled_qty > 0 then 1.0 else 0.0 end) as fill_rate",
        "avg(least(filled_qty, qty)::double / nullif(qty, 0)) as filled_share",
        "avg(case when status = 'REJECTED' then 1.0 else 0.0 end) as reject_rate",
        "avg(case when status = 'CANCELED' then 1.0 else 0.0 end) as cancel_rate",
        "avg(case when status = 'EXPIRED' then 1.0 else 0.0 end) as expire_rate",
        f"{_wavg('slippage_signal_bps', 'filled_notional')} as slippage_signal_bps",
        f"{_wavg('slippage_arrival_bps', 'filled_notional')} as slippage_arrival_bps",
        f"{_wavg('slippage_best_bps', 'filled_notional')} as slippage_best_bps",
        f"{_wavg('shortfall_bps', 'order_notional')} as shortfall_bps",
        f"{_wavg('is_execution_bps', 'order_notional')} as is_execution_bps",
        f"{_wavg('is_opportunity_bps', 'order_notional')} as is_opportunity_bps",
        f"{_wavg('is_fees_bps', 'order_notional')} as is_fees_bps",
        f"{_wavg('effective_spread_bps', 'filled_notional')} as effective_spread_bps",
        *(
            f"{_wavg(f'markout_{n}_bps', 'filled_notional')} as markout_{n}_bps"
            for n, _ in MARKOUT_HORIZONS_NS
        ),
        "sum(fees_ccy) / nullif(sum(filled_notional), 0) * 1e4 as fees_bps",
        "sum(filled_notional) as filled_notional",
        "quantile_cont(time_to_fill_ns, 0.5) as time_to_fill_p50_ns",
        "quantile_cont(time_to_fill_ns, 0.95) as time_to_fill_p95_ns",
    ]
    for name, _, _ in (*STAGES, ("sent_to_done", "", "")):
        col = f"lat_{name}_ns"
        parts.append(f"quantile_cont({col}, 0.5) as {name}_p50_ns")
        parts.append(f"quantile_cont({col}, 0.95) as {name}_p95_ns")
    return ",\n  ".join(parts)


def _query(orders: pl.DataFrame, sql: str) -> pl.DataFrame:
    con = duckdb.connect()
    try:
        con.register("orders", orders.to_arrow())
        return con.sql(sql).pl()
    finally:
        con.close()


def aggregate(orders: pl.DataFrame, by: Sequence[str] = ()) -> pl.DataFrame:
    """Aggregate per-order TCA by `by` fields (BY_FIELDS names; none: one overall row)."""
    fields = parse_by(list(by))
    cols = [BY_FIELDS[f] for f in fields]
    keys = ", ".join(f'"{c}" as "{f}"' for f, c in zip(fields, cols))
    group = ", ".join(f'"{c}"' for c in cols)
    select = (keys + ",\n  " if keys else "") + _metrics_sql()
    sql = f"select {select}\nfrom orders"
    if cols:
        sql += f"\ngroup by {group}\norder by {group}"
    out = _query(orders, sql)
    if not cols and orders.height == 0:
        return out.clear()
    return out


def venue_matrix(
    orders: pl.DataFrame,
    end_ts: int | None = None,
    windows: Sequence[tuple[str, int]] = WINDOWS_NS,
) -> pl.DataFrame:
    """Aggregate by venue over the last hour/day/week of journal time before `end_ts`
    (default: the last order sent); one row per (window, venue)."""
    if end_ts is None:
        last = orders["ts_sent"].max() if orders.height else None
        end_ts = int(last) if last is not None else 0  # type: ignore[arg-type]
    parts = []
    for name, span in windows:
        recent = orders.filter(pl.col("ts_sent") > end_ts - span)
        agg = aggregate(recent, ["venue"])
        parts.append(
            agg.with_columns(
                pl.lit(name).alias("window"),
                pl.lit(span, pl.Int64).alias("window_ns"),
            )
        )
    if not parts:
        return pl.DataFrame()
    out = pl.concat(parts, how="vertical_relaxed")
    return out.select("window", "window_ns", *(c for c in out.columns if c[:6] != "window"))


def fmt_ns(ns: float | None) -> str:
    """Format a duration in nanoseconds for people (ns, µs, ms, s)."""
    if ns is None or (isinstance(ns, float) and math.isnan(ns)):
        return "-"
    a = abs(ns)
    if a < 1_000:
        return f"{ns:.0f} ns"
    if a < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if a < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"
