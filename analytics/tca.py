"""Transaction-cost analysis over run journals, with Polars and DuckDB on the Arrow files.

Invariants:
- The journals are the only source. A segment is two IPC files: its entries
  (`NNNNNN.arrow`, `engine.codec.SCHEMA`) and, if it journaled any, its market data
  (`market/NNNNNN.arrow`, the narrow `MARKET_SCHEMA`: the quotes are there). A segment is
  sealed when both are; the sealed segments before the first that is not are
  memory-mapped and only the columns TCA uses (those a file has) are decompressed, two
  segments at a time, the entries file then the market-data file (each in seq order, so
  each kind's rows stay in seq order; a market kind in both files, which only an input
  with a cause can make, is put back in seq order); the rows of each kind are counted
  first (from the `kind` column alone), then picked
  by the `kind` dictionary code (the `messages.KINDS` index) straight into numpy arrays
  made once at their full length (`_Sink`): numbers and codes (instrument, venue, enums)
  as numpy, text as Arrow until it is handed to Polars. The rest (the open `.arrows`
  files of a crashed or running run) is read with `engine.journal.JournalReader` (whole
  groups up to a torn tail, market data merged in), only its batches after the last
  sealed seq. Order ids are
  matched by their engine numbers, as-of lookups are binary searches by (instrument,
  venue) key and per-order sums are vectorised, all in numpy, in steps and chunks that
  keep temporaries small and on two threads where the work allows (the results do not
  depend on the steps or threads); Polars holds the tables handed back; aggregations run
  in DuckDB; `scan_run` gives the same entries as a lazy Polars frame for ad-hoc queries.
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
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from analytics.buckets import distance_bucket, size_bucket, tod_bucket, touch_distance_ticks
from engine.codec import MARKET_KINDS, MARKET_SCHEMA, SCHEMA
from engine.journal import JournalError, JournalReader, read_manifest, sealed_segments
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
# The per-order cost measures in bps, in the order the order table lists them.
_COST_BPS: tuple[str, ...] = (
    "slippage_signal_bps",
    "slippage_arrival_bps",
    "slippage_best_bps",
    "is_execution_bps",
    "is_opportunity_bps",
    "is_fees_bps",
    "shortfall_bps",
    "effective_spread_bps",
    *(f"markout_{h}_bps" for h, _ in MARKOUT_HORIZONS_NS),
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


class TcaError(ValueError):
    """Journals that cannot be analysed as asked (a bad path, a bad field, a bad run)."""


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One run to analyse: where it is, what it traded, which segments it has."""

    run_id: str
    run_dir: str
    mode: str
    status: str
    instruments: dict[str, Instrument]
    sealed: tuple[str, ...]  # the entries files of the sealed segments (before any other)
    market: tuple[str | None, ...]  # each sealed segment's market-data file (None: none)
    unsealed: bool  # a segment is not sealed (an open .arrows file: a crashed or running run)


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
    segments, complete = sealed_segments(path)
    return RunInfo(
        run_id=manifest.run_id,
        run_dir=str(path),
        mode=manifest.mode,
        status=manifest.status,
        instruments={i.instrument: i for i in instruments},
        sealed=tuple(str(entries) for entries, _ in segments),
        market=tuple(None if market is None else str(market) for _, market in segments),
        unsealed=not complete,
    )


def _empty_frame(columns: Sequence[str]) -> pl.LazyFrame:
    return pl.from_arrow(SCHEMA.empty_table().select(list(columns))).lazy()  # type: ignore[union-attr]


def scan_market(paths: Sequence[str | Path], schema: pl.Schema) -> pl.LazyFrame:
    """Market-data files as a lazy frame of `schema` (the entries files' columns and
    types): instrument and venue decoded from the run's dictionaries, the columns
    MARKET_SCHEMA does not have null."""
    return pl.scan_ipc(list(paths)).select(
        pl.col(c).cast(t) if c in MARKET_SCHEMA.names else pl.lit(None, t).alias(c)
        for c, t in schema.items()
    )


def _scan_sealed(info: RunInfo, cols: list[str]) -> pl.LazyFrame:
    """The sealed segments' entries (the columns `cols`) in seq order: the entries files
    and the market-data files merged."""
    key = cols if "seq" in cols else ["seq", *cols]
    frame = pl.scan_ipc(list(info.sealed)).select(key)
    market = [m for m in info.market if m is not None]
    if market:
        frame = frame.merge_sorted(scan_market(market, frame.collect_schema()), key="seq")
    return frame if key is cols else frame.select(cols)


def scan_run(info: RunInfo, columns: Sequence[str] = TCA_COLUMNS) -> pl.LazyFrame:
    """Return a lazy frame of a run's journal entries (the columns asked for), in seq order."""
    parts: list[pl.LazyFrame] = []
    cols = list(columns)
    if info.sealed:
        parts.append(_scan_sealed(info, cols))
    if info.unsealed:
        last_sealed = -1
        if info.sealed:
            files = [list(info.sealed), [m for m in info.market if m is not None]]
            seqs = pl.concat([pl.scan_ipc(f).select("seq") for f in files if f])
            top = seqs.select(pl.col("seq").max()).collect().item()
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
        return _empty_frame(cols)
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


# --- reading a run's entries --------------------------------------------------------------

# What the build reads: name -> (kinds, {column: how it arrives}). "i": an integer (Int64
# values, 0 where null, the nulls aside); "t": text (a Polars String series); "e": a
# journal enum (a dictionary column) as codes into its values (`_Entries.enums`); "c":
# instrument or venue as codes into the run's sorted names (`_Entries.names`); "k": the
# event kind as codes into `_EVENT_KINDS`; "n": an order id as its engine number `n`
# (`_engine_numbers`) and, for the ids that are not the engine's, its text (None when
# every id is); "tn": the text and `n`; "a": text kept as Arrow (only a few values of
# it are wanted). A null code is -1.
_READS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "submits": (
        ("SubmitOrder",),
        {
            "seq": "i",
            "ts_recv": "i",
            "order_id": "tn",
            "signal_id": "t",
            "account": "t",
            "strategy": "t",
            "side": "e",
            "order_type": "e",
            "tif": "e",
            "qty": "i",
            "price": "i",
            "instrument": "c",
            "venue": "c",
        },
    ),
    "signals": (
        ("Signal",),
        {"seq": "i", "ts_recv": "i", "ts_event": "i", "signal_id": "t", "signal_price": "i"},
    ),
    "events": (
        _EVENT_KINDS,
        {
            "seq": "i",
            "ts_recv": "i",
            "order_id": "n",
            "reason": "a",
            "qty": "i",
            "kind": "k",
            "venue": "c",
        },
    ),
    "fills": (
        ("OrderFilled",),
        {
            "seq": "i",
            "ts_recv": "i",
            "order_id": "n",
            "trade_id": "t",
            "price": "i",
            "qty": "i",
            "fee": "i",
            "venue": "c",
        },
    ),
    "alerts": (("Alert",), {"cause": "i", "code": "t"}),
    "quotes": (
        ("QuoteTick",),
        {
            "seq": "i",
            "ts_recv": "i",
            "bid_price": "i",
            "ask_price": "i",
            "instrument": "c",
            "venue": "c",
        },
    ),
}
_NAMED = ("instrument", "venue")  # coded into the run's names
_CODE_COLUMN = {"instrument": "ins", "venue": "ven", "kind": "k"}
# Each kind's group: the index of its `_READS` name; SignalRejected rows are only counted.
_GROUP = {kind: g for g, (kinds, _) in enumerate(_READS.values()) for kind in kinds}
_SIGNAL_REJECTED = len(_READS)
_GROUP["SignalRejected"] = _SIGNAL_REJECTED
# The order the text is converted in (what is wanted first, first; the rest after).
_TEXT_FIRST = {
    ("signals", "signal_id"): 0,
    ("submits", "signal_id"): 1,
    ("submits", "order_id"): 2,
    ("submits", "account"): 3,
    ("submits", "strategy"): 4,
}
# The groups of market-data kinds: the only ones whose rows a segment can hold in both of
# its files (an input without a cause goes to the market-data file, one with a cause, to
# the entries). They read numbers and codes only (`_Sink.seq_order` puts them in order).
_MARKET_GROUPS = tuple(
    g
    for g, (kinds, _) in enumerate(_READS.values())
    if {cls.__name__ for cls in MARKET_KINDS} & set(kinds)
)
if any(set(list(_READS.values())[g][1].values()) - {"i", "c", "e", "k"} for g in _MARKET_GROUPS):
    raise TypeError("_READS: a market-data kind read as text cannot be put back in seq order")
# For instrument and venue, whether each group reads it (indexed by group; -1: none).
_WANTS = {
    c: np.array([c in spec for _, spec in _READS.values()] + [False, False])
    for c in ("instrument", "venue")
}


def _memory_pool() -> pa.MemoryPool:
    """mimalloc where pyarrow has it: it maps large blocks in huge pages and reuses what
    it freed, where new memory is faulted in and zeroed a page at a time, which at 10M
    fills costs more than much of the work done on it."""
    try:
        return pa.mimalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()


_POOL = _memory_pool()


def _empty(n: int, dtype: npt.DTypeLike) -> np.ndarray:
    """An uninitialised numpy array of n values in memory from `_POOL` (see there)."""
    dt = np.dtype(dtype)
    return np.frombuffer(pa.allocate_buffer(n * dt.itemsize, memory_pool=_POOL), dt, n)


def _full(n: int, value: int | float | bool, dtype: npt.DTypeLike) -> np.ndarray:
    out = _empty(n, dtype)
    out.fill(value)
    return out


def _columns() -> list[str]:
    columns = ["seq", "kind", "ts_recv"]
    for _, spec in _READS.values():
        columns += [c for c in spec if c not in columns]
    return columns


def _groups(kinds: pa.DictionaryArray) -> np.ndarray:
    """Each row's group (`_GROUP`, -1: not read), from the `kind` dictionary codes."""
    lut = np.array([_GROUP.get(k, -1) for k in kinds.dictionary.to_pylist()] + [-1], np.int8)
    codes = kinds.indices
    if codes.null_count:
        codes = pc.fill_null(codes, len(lut) - 1)
    return lut[codes.to_numpy(zero_copy_only=False)]


def _counts(group: np.ndarray) -> np.ndarray:
    """Rows per group (`_SIGNAL_REJECTED` last)."""
    return np.bincount(group + 1, minlength=_SIGNAL_REJECTED + 2)[1:]


def _valid(arr: pa.Array) -> np.ndarray:
    """An array's validity as booleans."""
    bits = np.frombuffer(arr.buffers()[0], np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(
        bool
    )


def _int_values(arr: pa.Array) -> np.ndarray:
    """An integer array's values as int64 (anything where null), without a copy where
    it is 64-bit."""
    if len(arr) == 0 or arr.null_count == len(arr):
        return np.zeros(len(arr), np.int64)
    if not (pa.types.is_integer(arr.type) and arr.type.bit_width == 64):
        arr = pc.cast(arr, pa.int64(), memory_pool=_POOL)
    return np.frombuffer(arr.buffers()[1], np.int64, len(arr), arr.offset * 8)


class _Vocab:
    """Text values numbered in the order first seen (shared by the reading threads)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.lock = threading.Lock()

    def codes(self, arr: pa.Array) -> np.ndarray:
        """The numbers of a text array's values (-1: null)."""
        enc = pc.dictionary_encode(arr, memory_pool=_POOL)
        lut = self.lut(enc.dictionary)
        return lut[pc.fill_null(enc.indices, len(lut) - 1).to_numpy(zero_copy_only=False)]

    def lut(self, values: pa.Array) -> np.ndarray:
        """The numbers of `values`, then -1 (for null codes)."""
        texts = values.to_pylist()
        with self.lock:
            codes = [-1 if t is None else self.index.setdefault(t, len(self.index)) for t in texts]
        return np.array([*codes, -1], dtype=np.int32)

    def values(self) -> list[str]:
        return list(self.index)


@dataclass
class _Table:
    """The rows of one `_READS` name, in seq order: integers and codes as numpy (`cols`;
    0 at nulls, which `nulls` marks where a column has any) and text as Polars."""

    height: int
    cols: dict[str, np.ndarray]
    nulls: dict[str, np.ndarray]
    text: dict[str, pl.Series | Future[pl.Series] | None]  # see `text_of`
    arrow: dict[str, pa.ChunkedArray]

    def text_of(self, col: str) -> pl.Series | None:
        """A text column (None for "n" columns whose ids are all the engine's; see
        `_READS`), once it is converted."""
        value = self.text[col]
        if isinstance(value, Future):
            value = self.text[col] = value.result()
        return value

    def null(self, col: str) -> np.ndarray | None:
        return self.nulls.get(col)

    def series(self, col: str, name: str | None = None) -> pl.Series:
        """An integer column as Polars (its nulls kept), without a copy."""
        values = self.cols[col]
        null = self.nulls.get(col)
        if null is None:
            return pl.Series(name or col, values)
        return _masked(name or col, values, null)

    def filter(self, keep: np.ndarray) -> _Table:
        mask = pl.Series(keep)
        return _Table(
            height=int(np.count_nonzero(keep)),
            cols={c: v[keep] for c, v in self.cols.items()},
            nulls={c: v[keep] for c, v in self.nulls.items()},
            text={c: None if (s := self.text_of(c)) is None else s.filter(mask) for c in self.text},
            arrow={c: a.filter(pa.array(keep)) for c, a in self.arrow.items()},
        )


class _Sink:
    """Where the rows read go: each name's columns, allocated at the run's full height
    once (the rows are counted first) and filled in place, each segment from its own
    offsets, by the reading threads; the text, per segment, as Arrow chunks."""

    def __init__(self, totals: np.ndarray, segments: int, run_id: str) -> None:
        self.prefix = f"{run_id}-"
        self.totals = totals
        self.cols: dict[str, dict[str, np.ndarray]] = {}
        self.nulls: dict[str, dict[str, np.ndarray]] = {}
        self.text: dict[str, dict[str, list[list[tuple[pa.Array | None, int]]]]] = {}
        for g, (name, (_, spec)) in enumerate(_READS.items()):
            h = int(totals[g])
            cols: dict[str, np.ndarray] = {}
            for col, how in spec.items():
                if how == "i":
                    cols[col] = _empty(h, np.int64)
                elif how in ("e", "c", "k"):
                    cols[_CODE_COLUMN.get(col, col)] = _empty(h, np.int32)
                if how in ("n", "tn"):
                    cols["n"] = _empty(h, np.int64)
            self.cols[name] = cols
            self.nulls[name] = {}
            self.text[name] = {
                col: [[] for _ in range(segments)]
                for col, how in spec.items()
                if how in ("t", "tn", "n", "a")
            }
        self.vocab = {c: _Vocab() for c in (*_NAMED, "side", "order_type", "tif")}
        self.lock = threading.Lock()

    def _null(self, name: str, col: str) -> np.ndarray:
        with self.lock:
            if col not in self.nulls[name]:
                self.nulls[name][col] = _full(
                    int(self.totals[list(_READS).index(name)]), False, bool
                )
            return self.nulls[name][col]

    def named(self, col: str, arr: pa.Array, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """The codes of a batch's instrument or venue (-1: null), worked out only for
        the rows of the kinds that read it where those are few (the others' are -1)."""
        wanted = _WANTS[col]
        if counts[wanted[: counts.size]].sum() > len(arr) // 2:
            return self.vocab[col].codes(arr)
        rows = np.flatnonzero(wanted[group])
        codes = np.full(len(arr), -1, np.int32)
        codes[rows] = self.vocab[col].codes(pc.take(arr, pa.array(rows), memory_pool=_POOL))
        return codes

    def add(
        self,
        batch: pa.RecordBatch,
        group: np.ndarray,
        counts: np.ndarray,
        at: np.ndarray,
        segment: int,
    ) -> None:
        """Put a batch's rows at `at` (each group's next row, moved on)."""
        named: dict[str, np.ndarray] = {}
        for g, (name, (_, spec)) in enumerate(_READS.items()):
            k = int(counts[g])
            if not k:
                continue
            rows = np.flatnonzero(group == g)
            p = int(at[g])
            at[g] += k
            taken: pa.Array | None = None
            for col, how in spec.items():
                arr = batch.column(col)
                if how == "i":
                    out = self.cols[name][col][p : p + k]
                    np.take(_int_values(arr), rows, out=out, mode="clip")
                    if arr.null_count:
                        null = ~_valid(arr)[rows] if arr.null_count < len(arr) else None
                        if null is None:
                            out[:] = 0
                            self._null(name, col)[p : p + k] = True
                        elif null.any():
                            out[null] = 0
                            self._null(name, col)[p : p + k] = null
                elif how == "c":
                    if col not in named:
                        named[col] = self.named(col, arr, group, counts)
                    out = self.cols[name][_CODE_COLUMN[col]][p : p + k]
                    np.take(named[col], rows, out=out, mode="clip")
                elif how in ("e", "k"):
                    if how == "e":
                        lut = self.vocab[col].lut(arr.dictionary)
                    else:
                        lut = np.array(
                            [
                                _EVENT_KINDS.index(x) if x in _EVENT_KINDS else -1
                                for x in arr.dictionary.to_pylist()
                            ]
                            + [-1],
                            np.int32,
                        )
                    codes = pc.fill_null(arr.indices, len(lut) - 1).to_numpy(zero_copy_only=False)
                    out = self.cols[name][_CODE_COLUMN.get(col, col)][p : p + k]
                    np.take(lut, codes[rows], out=out, mode="clip")
                else:
                    if taken is None:
                        taken = pa.array(rows)
                    text = pc.take(arr, taken, memory_pool=_POOL)
                    if how in ("n", "tn"):
                        number = _engine_numbers(text, self.prefix)
                        self.cols[name]["n"][p : p + k] = number.to_numpy()
                        if how == "n":
                            positive = pc.greater(number, 0)
                            if pc.all(positive).as_py():
                                text = None
                            else:
                                text = pc.if_else(positive, pa.scalar(None, text.type), text)
                    self.text[name][col][segment].append((text, k))

    def seq_order(self, g: int, lo: int, hi: int) -> None:
        """Sort rows [lo, hi) of group g (one of `_MARKET_GROUPS`) by seq."""
        name = list(_READS)[g]
        cols = self.cols[name]
        order = np.argsort(cols["seq"][lo:hi], kind="stable")
        with self.lock:
            nulls = list(self.nulls[name].values())
        for values in (*cols.values(), *nulls):
            values[lo:hi] = values[lo:hi][order]

    def tables(self) -> tuple[dict[str, _Table], dict[str, list[str]], dict[str, list[str]]]:
        """The tables, the run's instrument and venue names (sorted: a code is a
        position) and the enums' values (in code order)."""
        names: dict[str, list[str]] = {}
        for c in _NAMED:
            seen = self.vocab[c].values()
            names[c] = sorted(seen)
            position = {v: i for i, v in enumerate(names[c])}
            rank = np.array([*(position[v] for v in seen), -1], np.int32)
            if (rank[:-1] != np.arange(len(seen))).any():
                for cols in self.cols.values():
                    code = _CODE_COLUMN[c]
                    if code in cols:
                        codes = cols[code]
                        _chunked(
                            codes.size,
                            lambda lo, hi, a=codes, r=rank: np.take(r, a[lo:hi], out=a[lo:hi]),
                        )
        tables: dict[str, _Table] = {}
        # The text goes to Polars in two threads of its own, in the order it is wanted,
        # while the caller goes on with the numbers.
        pool = ThreadPoolExecutor(max_workers=2)

        def series(col: str, chunks: pa.ChunkedArray, rechunk: bool) -> pl.Series:
            out = pl.from_arrow(chunks, rechunk=rechunk)
            assert isinstance(out, pl.Series)
            return out.alias(col)

        pending: list[tuple[int, str, str, pa.ChunkedArray]] = []
        for g, name in enumerate(_READS):
            text: dict[str, pl.Series | Future[pl.Series] | None] = {}
            arrow: dict[str, pa.ChunkedArray] = {}
            for col, parts in self.text[name].items():
                chunks = [chunk for part in parts for chunk in part]
                how = _READS[name][1][col]
                if how == "n" and all(c is None for c, _ in chunks):
                    text[col] = None
                    continue
                arrays = [pa.nulls(k, pa.string()) if c is None else c for c, k in chunks]
                if how == "a":
                    arrow[col] = pa.chunked_array(arrays, pa.string())
                    continue
                pending.append(
                    (
                        _TEXT_FIRST.get((name, col), 9),
                        name,
                        col,
                        pa.chunked_array(arrays, pa.string()),
                    )
                )
            tables[name] = _Table(
                int(self.totals[g]), self.cols[name], self.nulls[name], text, arrow
            )
        for _, name, col, chunks in sorted(pending, key=lambda p: p[0]):
            # the columns that are the orders' and fills' own are put in one chunk
            tables[name].text[col] = pool.submit(
                series, col, chunks, (name, col) != ("signals", "signal_id")
            )
        pool.shutdown(wait=False)
        enums = {c: self.vocab[c].values() for c in ("side", "order_type", "tif")}
        return tables, names, enums


@dataclass
class _Segment:
    """What one segment's batches add to the run's counts and ranges."""

    signal_rejects: int = 0
    last_seq: int | None = None
    first_ts: int | None = None
    last_ts: int | None = None

    def add(self, batch: pa.RecordBatch, counts: np.ndarray) -> None:
        self.signal_rejects += int(counts[_SIGNAL_REJECTED])
        lo, hi = (v.as_py() for v in pc.min_max(batch.column("ts_recv")).values())
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        last = batch.column("seq")[batch.num_rows - 1].as_py()
        self.last_seq = last if self.last_seq is None else max(self.last_seq, last)


def _open_sealed(path: str, columns: Sequence[str]) -> pa.ipc.RecordBatchFileReader:
    """Open a sealed file memory-mapped, to read only those of `columns` it has (a
    market-data file has only MARKET_SCHEMA's); a row of a kind it holds has none of
    the others."""
    names = pa.ipc.open_file(pa.memory_map(path)).schema.names
    wanted = [names.index(c) for c in columns if c in names]
    options = pa.ipc.IpcReadOptions(use_threads=False, included_fields=wanted)
    return pa.ipc.open_file(pa.memory_map(path), options=options, memory_pool=_POOL)


def _files_of(entries: str, market: str | None) -> list[str]:
    return [entries] if market is None else [entries, market]


def _count_sealed(entries: str, market: str | None, last_seq: bool) -> tuple[np.ndarray, int]:
    """Rows per group in a sealed segment (its entries and market-data files) and (if
    asked) its last seq, -1 if none (only the `kind` and `seq` columns are read)."""
    counts = np.zeros(_SIGNAL_REJECTED + 1, np.int64)
    last = -1
    for path in _files_of(entries, market):
        try:
            reader = _open_sealed(path, ["seq", "kind"] if last_seq else ["kind"])
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                counts += _counts(_groups(batch.column("kind")))
                if last_seq and batch.num_rows:
                    last = max(last, batch.column("seq")[batch.num_rows - 1].as_py())
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise TcaError(f"{path}: not a readable journal segment ({exc})") from None
    return counts, last


def _read_sealed(
    entries: str, market: str | None, sink: _Sink, segment: int, at: np.ndarray
) -> _Segment:
    """Read one sealed segment, memory-mapped, decompressing only the columns TCA uses,
    into the sink from offsets `at`: its entries file, then its market-data file. Each
    file is in seq order, so each group's rows are too, unless both files have some (a
    market-data kind journaled with a cause goes to the entries file): those are sorted."""
    seg = _Segment()
    start = at.copy()
    middle = at
    for n, path in enumerate(_files_of(entries, market)):
        if n:  # the market-data file
            middle = at.copy()
        try:
            reader = _open_sealed(path, _columns())
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                if batch.num_rows:
                    group = _groups(batch.column("kind"))
                    counts = _counts(group)
                    sink.add(batch, group, counts, at, segment)
                    seg.add(batch, counts)
        except (pa.ArrowException, OSError, ValueError, KeyError) as exc:
            # KeyError: a market-data file holding a kind with columns it lacks
            raise TcaError(f"{path}: not a readable journal segment ({exc})") from None
    for g in _MARKET_GROUPS:
        if start[g] < middle[g] < at[g]:
            sink.seq_order(g, int(start[g]), int(at[g]))
    return seg


@dataclass(frozen=True)
class _Entries:
    """One run's entries as TCA reads them: a table per `_READS` name, the run's
    instrument and venue names (sorted: a code is a position) and its enums' values, and
    the counts and ranges of the whole run."""

    tables: dict[str, _Table]
    names: dict[str, list[str]]
    enums: dict[str, list[str]]
    signal_rejects: int
    last_seq: int | None
    first_ts: int | None
    last_ts: int | None


def _collect(info: RunInfo) -> _Entries:
    """Read the rows of the kinds TCA needs, in seq order: the sealed segments (entries
    and market data) in parallel (one thread each, two at a time; pyarrow and numpy
    release the GIL), then the unsealed tail through `JournalReader` (its batches after
    the last sealed seq). The rows of each kind are counted first, so that each column
    is allocated once and filled where its rows go."""
    sealed = len(info.sealed)
    if len(info.market) != sealed:
        raise TcaError(f"{info.run_dir}: {sealed} sealed segments but {len(info.market)} market")
    with ThreadPoolExecutor(max_workers=2) as pool:
        read = list(pool.map(_count_sealed, info.sealed, info.market, [info.unsealed] * sealed))
    counted = [c for c, _ in read]
    tail: list[tuple[pa.RecordBatch, np.ndarray, np.ndarray]] = []
    if info.unsealed:
        last_sealed = max((last for _, last in read), default=-1)
        try:
            for batch in JournalReader(info.run_dir).batches():
                if batch.num_rows and batch.column(0)[batch.num_rows - 1].as_py() > last_sealed:
                    batch = batch.select(_columns())
                    group = _groups(batch.column("kind"))
                    tail.append((batch, group, _counts(group)))
        except JournalError as exc:
            raise TcaError(str(exc)) from None
        counted.append(sum((c for _, _, c in tail), np.zeros(_SIGNAL_REJECTED + 1, np.int64)))
    starts = np.cumsum([np.zeros(_SIGNAL_REJECTED + 1, np.int64), *counted], axis=0)
    sink = _Sink(starts[-1], len(counted), info.run_id)
    with ThreadPoolExecutor(max_workers=2) as pool:
        segs = list(
            pool.map(
                _read_sealed,
                info.sealed,
                info.market,
                [sink] * sealed,
                range(sealed),
                [starts[i].copy() for i in range(sealed)],
            )
        )
    if info.unsealed:
        seg = _Segment()
        at = starts[sealed].copy()
        for batch, group, counts in tail:
            sink.add(batch, group, counts, at, sealed)
            seg.add(batch, counts)
        segs.append(seg)
        del tail
    tables, names, enums = sink.tables()
    seqs = [s.last_seq for s in segs if s.last_seq is not None]
    firsts = [s.first_ts for s in segs if s.first_ts is not None]
    lasts = [s.last_ts for s in segs if s.last_ts is not None]
    return _Entries(
        tables=tables,
        names=names,
        enums=enums,
        signal_rejects=sum(s.signal_rejects for s in segs),
        last_seq=max(seqs) if seqs else None,
        first_ts=min(firsts) if firsts else None,
        last_ts=max(lasts) if lasts else None,
    )


# --- index plumbing (numpy) ---------------------------------------------------------------

_POW10 = np.array([10**k for k in range(1, 19)], dtype=np.int64)


def _engine_numbers(ids: pa.Array | pa.ChunkedArray, prefix: str) -> pa.Array:
    """n for each id that is exactly f"{prefix}{n}", n >= 1 in plain decimal of at most 18
    digits (the engine's order ids, engine/ids.py), else 0."""
    start = pc.fill_null(pc.starts_with(ids, pattern=prefix, memory_pool=_POOL), False)
    head = len(prefix.encode())
    number = None
    if isinstance(ids, pa.Array) and ids.type == pa.string():
        # The bytes after the prefix, at most 20 (more can only be a number of more
        # than 18 digits or none at all, and 20 of them are neither): cut as bytes,
        # they are read much faster than cut as characters.
        tail = pc.binary_slice(ids.view(pa.binary()), head, head + 20, memory_pool=_POOL)
        tail = tail.view(pa.string())
        try:
            number = pc.fill_null(pc.cast(tail, pa.int64(), memory_pool=_POOL), 0)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            number = None
    if number is None:
        tail = pc.utf8_slice_codeunits(ids, len(prefix), memory_pool=_POOL)
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


def _order_ids(table: _Table, run_id: str) -> pl.Series:
    """The full order ids of a table read with `n` (see `_READS`)."""
    rest = table.text_of("order_id")
    if rest is None:  # every id is the engine's
        rest = pl.repeat(None, table.height, dtype=pl.String, eager=True)
    return (
        pl.DataFrame([pl.Series("n", table.cols["n"]), rest.alias("order_id")])
        .select(
            pl.when(pl.col("n") > 0)
            .then(pl.lit(f"{run_id}-") + pl.col("n").cast(pl.String))
            .otherwise(pl.col("order_id"))
            .alias("order_id")
        )
        .to_series()
    )


def _order_rows(
    number: np.ndarray, order_ids: pl.Series, plain: bool, ids: pl.Series | None
) -> np.ndarray:
    """The row among `order_ids` (distinct) of each order id, -1 where there is none.

    `number`: each id's `_engine_numbers` (overwritten: the rows are worked out in it).
    `plain`: row i's id is the engine's number i + 1; an id then names an order exactly
    when its number is in range, and no text is compared. Otherwise (`ids`: the ids as
    text) the number's guess is checked against the order's id and the rest are joined."""
    rows = np.subtract(number, 1, out=number)
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


def _repeats(
    frame: pl.DataFrame, keys: Sequence[str], hashed: Sequence[str] | None = None
) -> np.ndarray:
    """Flag the rows whose `keys` equal an earlier row's (nulls equal): the rows are
    hashed (on `hashed`, some of the keys; default all) and the hashes sorted; only rows
    whose hash repeats are compared exactly."""
    out = np.zeros(frame.height, dtype=bool)
    if frame.height < 2:
        return out
    hashed = list(keys if hashed is None else hashed)
    h = pl.col(hashed[0]).hash(seed=1)
    for i, key in enumerate(hashed[1:], start=2):
        h = h ^ pl.col(key).hash(seed=i)
    hashes = frame.select(h).to_series().to_numpy()
    ordered = _empty(hashes.size, hashes.dtype)
    ordered[:] = hashes
    ordered.sort()
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


def _asof_at(
    right: _Series, left: _Groups, left_on: np.ndarray, key_map: np.ndarray | None = None
) -> np.ndarray:
    """For each left row, the position in `right`'s group order of the right row of the
    same key with the greatest `on` at or below its `left_on` (the last of equals), -1 if
    none: a backward as-of lookup, one binary search per row. `key_map`: the right key
    for each left key (-1: none)."""
    out = np.full(left.order.size, -1, dtype=np.int64)
    where = {int(k): g for g, k in enumerate(right.groups.keys) if k >= 0}
    bounds = right.groups.bounds
    for g, k in enumerate(left.keys.tolist()):
        r = where.get(k if key_map is None or k < 0 else int(key_map[k])) if k >= 0 else None
        if r is None:
            continue
        a, b = int(bounds[r]), int(bounds[r + 1])
        rows = left.order[left.bounds[g] : left.bounds[g + 1]]
        at = np.searchsorted(right.on[a:b], left_on[rows], side="right")
        at += a - 1
        at[at < a] = -1
        out[rows] = at
    return out


def _asof(
    right: _Series, left: _Groups, left_on: np.ndarray, key_map: np.ndarray | None = None
) -> np.ndarray:
    """As `_asof_at`, but the right rows themselves (-1: none)."""
    at = _asof_at(right, left, left_on, key_map)
    if right.groups.order.size == 0:
        return at
    return np.where(at >= 0, np.take(right.groups.order, at, mode="wrap"), -1)


def _masked(name: str, values: np.ndarray, null: np.ndarray | None) -> pl.Series:
    """`values` as a column, null where `null` (None: nowhere)."""
    if null is None or not null.any():
        return pl.Series(name, values)
    return pl.Series(name, pa.array(values, mask=null))


def _placed(name: str, n: int, at: np.ndarray, values: np.ndarray) -> pl.Series:
    """A column of n rows holding `values` at the distinct rows `at`, null elsewhere."""
    full = np.zeros(n, dtype=values.dtype)
    full[at] = values
    null = np.ones(n, dtype=bool)
    null[at] = False
    return _masked(name, full, null)


def _gather(name: str, values: np.ndarray, null: np.ndarray | None, rows: np.ndarray) -> pl.Series:
    """`values` (nulls at `null`) at `rows` as a column, null where a row is -1."""
    miss = rows < 0
    if values.size == 0:
        return _masked(name, np.zeros(rows.size, values.dtype), np.ones(rows.size, bool))
    at = np.where(miss, 0, rows)
    out = values[at]
    if null is not None:
        miss |= null[at]
    return _masked(name, out, miss) if miss.any() else pl.Series(name, out)


def _np(series: pl.Series) -> tuple[np.ndarray, np.ndarray | None]:
    """An integer or float column's values (anything at nulls) and its nulls (None:
    there are none), without a copy where it is one chunk."""
    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    dt = np.dtype(arr.type.to_pandas_dtype())
    if len(arr) == 0 or arr.null_count == len(arr):
        return _full(len(arr), 0, dt), (_full(len(arr), True, bool) if len(arr) else None)
    values = np.frombuffer(arr.buffers()[1], dt, len(arr), arr.offset * dt.itemsize)
    return values, (~_valid(arr) if arr.null_count else None)


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


def _attach(
    left: pl.DataFrame, orders: pl.DataFrame, run_id: str, columns: Sequence[str]
) -> pl.DataFrame:
    """Add to each row of `left` (an `order_id` column, seq order) its order's `columns`;
    rows of unknown orders are dropped, the order of the rest kept."""
    ids = left["order_id"]
    number = _engine_numbers(ids.to_arrow(), f"{run_id}-").to_numpy().copy()
    rows = _order_rows(number, orders["order_id"], False, ids)
    known = rows >= 0
    return pl.concat([left.filter(known), orders.select(columns)[rows[known]]], how="horizontal")


@dataclass(frozen=True)
class _Quotes:
    """A run's quotes for as-of lookups: by (instrument, venue) key, on seq and on
    ts_recv (ties in seq order), and their mids with the mids' nulls in `by_seq` and in
    `by_ts` order (see `_asof_at`). Their bid and ask stay in the quotes' table."""

    by_seq: _Series
    by_ts: _Series
    seq_mid: tuple[np.ndarray, np.ndarray]
    ts_mid: tuple[np.ndarray, np.ndarray]


def _quote_keys(entries: _Entries) -> tuple[_Quotes, np.ndarray]:
    """Number the (instrument, venue) pairs that have quotes, in name order (nulls
    first; a pair with a null never matches), and index the quotes by them. Returns the
    quotes and the key table `pair[instrument code + 1, venue code + 1]` (-1: no quotes)."""
    q = entries.tables["quotes"]
    width = len(entries.names["venue"]) + 1
    cells = (len(entries.names["instrument"]) + 1) * width
    code = q.cols["ins"] + np.int32(1)  # the cell (instrument code + 1, venue code + 1)
    code *= width
    code += q.cols["ven"]
    code += 1
    present = np.bincount(code, minlength=cells) > 0
    pair = np.where(present, np.cumsum(present) - 1, -1).reshape(-1, width)
    pair[0, :] = -1  # numbered, but never matched
    pair[:, 0] = -1
    key = np.take(pair.ravel().astype(np.int32), code, out=code)
    seq = q.cols["seq"]
    ts = q.cols["ts_recv"]
    by_seq = _Series.of(key, seq, seq)
    in_ts_order = ts.size < 2 or bool((ts[1:] >= ts[:-1]).all())
    by_ts = (
        _Series(by_seq.groups, ts[by_seq.groups.order])
        if in_ts_order  # in seq order the quotes' groups are in (ts_recv, seq) order too
        else _Series.of(key, ts, seq)
    )
    bid, ask = q.cols["bid_price"], q.cols["ask_price"]
    bid_null, ask_null = q.null("bid_price"), q.null("ask_price")

    def mids(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bid + ask) / 2.0 in `order`, and where it is null."""
        mid, null = _empty(order.size, np.float64), _empty(order.size, bool)

        def part(lo: int, hi: int) -> None:
            at = order[lo:hi]
            np.divide(bid[at].astype(np.float64) + ask[at].astype(np.float64), 2.0, out=mid[lo:hi])
            null[lo:hi] = False
            for nulls in (bid_null, ask_null):
                if nulls is not None:
                    null[lo:hi] |= nulls[at]

        _chunked(order.size, part)
        return mid, null

    seq_mid = mids(by_seq.groups.order)
    quotes = _Quotes(
        by_seq=by_seq,
        by_ts=by_ts,
        seq_mid=seq_mid,
        ts_mid=seq_mid if by_ts.groups is by_seq.groups else mids(by_ts.groups.order),
    )
    return quotes, pair


def _signal_rows(signals: _Table, submits: _Table) -> tuple[np.ndarray, int]:
    """For each submit, the row of the first signal with its signal_id (-1: none); and
    how many distinct signal ids there are.

    The usual answer is the last signal before the submit (a signal's orders follow it
    in the journal): that guess is checked, and the rest looked up with a join."""
    if signals.height == 0 or submits.height == 0:
        return np.full(submits.height, -1, dtype=np.int64), signals.height
    ids = signals.text_of("signal_id")
    wanted = submits.text_of("signal_id")
    assert ids is not None and wanted is not None
    first = ~_repeats(pl.DataFrame([ids]), ["signal_id"])
    guess = np.searchsorted(signals.cols["seq"], submits.cols["seq"]) - 1
    rows = np.where(guess >= 0, guess, 0)
    same = (guess >= 0) & first[rows]
    same &= (ids.gather(rows) == wanted).fill_null(False).to_numpy()
    rows = np.where(same, rows, -1)
    rest = np.flatnonzero(~same)
    if rest.size:
        known = pl.DataFrame({"signal_id": ids, "_row": np.arange(signals.height)}).filter(
            pl.Series(first)
        )
        found = pl.DataFrame({"signal_id": wanted.gather(rest)}).join(
            known, on="signal_id", how="left", maintain_order="left"
        )
        rows[rest] = found["_row"].fill_null(-1).to_numpy()
    return rows, int(first.sum())


def _names(names: list[str], codes: np.ndarray, name: str) -> pl.Series:
    """The names of codes (-1: null)."""
    if not names:
        return pl.repeat(None, codes.size, dtype=pl.String, eager=True).alias(name)
    codes = codes.astype(np.int32, copy=False)
    null = codes < 0
    at = pa.array(codes.view(np.uint32), mask=null if null.any() else None)
    return pl.Series(name, names, pl.String).gather(pl.Series(at))


def _orders(
    info: RunInfo, entries: _Entries, pair: Callable[[], np.ndarray], oix0: int
) -> tuple[pl.DataFrame, bool, frozenset[str]]:
    """One row per order (the first `SubmitOrder` of each order_id), numbered from oix0,
    with its instrument's reference data, its signal and its quote key; whether the
    order ids are the engine's plain `f"{run_id}-{row + 1}"` (see `_order_rows`); and the
    columns that are Polars constants (see `_finish`)."""
    subs = entries.tables["submits"]

    def engine_numbered(numbers: np.ndarray) -> bool:
        return bool((numbers == np.arange(1, numbers.size + 1)).all())

    plain = engine_numbered(subs.cols["n"])  # then distinct: no repeat to drop
    if not plain:
        subs = subs.filter(~_repeats(pl.DataFrame([subs.text_of("order_id")]), ["order_id"]))
        plain = engine_numbered(subs.cols["n"])
    signals = entries.tables["signals"]
    at, distinct = _signal_rows(signals, subs)
    ins = subs.cols["ins"].astype(np.int64)
    ven = subs.cols["ven"].astype(np.int64)
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

    def signal(name: str, values: np.ndarray, null: np.ndarray | None) -> pl.Series | pl.Expr:
        if one_signal:
            i = int(at[0])
            value = None if null is not None and null[i] else int(values[i])
            return pl.lit(value, pl.Int64).alias(name)
        return _gather(name, values, null, at)

    def field(name: str, default: int | str) -> list[int | str]:
        return [default if i is None else getattr(i, name) for i in known]

    event = signals.cols["ts_event"]
    event_null = signals.null("ts_event")
    ts_signal = (
        event if event_null is None else np.where(event_null, signals.cols["ts_recv"], event)
    )
    enums = entries.enums
    orders = pl.DataFrame(
        [
            subs.series("seq"),
            subs.text_of("order_id"),
            subs.text_of("signal_id"),
            subs.text_of("account"),
            subs.text_of("strategy"),
            *(_names(enums[c], subs.cols[c], c) for c in ("side", "order_type", "tif")),
            subs.series("qty"),
            pl.Series("ins", subs.cols["ins"]),
            pl.Series("ven", subs.cols["ven"]),
            subs.series("ts_recv", "ts_sent"),
            subs.series("price", "limit_price"),
        ]
    ).with_columns(
        pl.int_range(oix0, oix0 + subs.height, dtype=pl.Int64).alias("oix"),
        pl.when(pl.col("side") == "BUY").then(1.0).otherwise(-1.0).alias("sign"),
        _names(entries.names["instrument"], ins, "instrument"),
        _names(entries.names["venue"], ven, "venue"),
        attr("tick_size", field("tick_size", 1), pl.Int64),
        attr("lot_size", field("lot_size", 1), pl.Int64),
        attr("multiplier", field("multiplier", 1), pl.Int64),
        attr("scale", scales, pl.Float64),
        attr("currency", field("currency", "?"), pl.String),
        signal("ts_signal", ts_signal, None),
        signal("signal_price", signals.cols["signal_price"], signals.null("signal_price")),
    )
    qkey = pair()[ins + 1, ven + 1]  # `pair` (see `_quote_keys`) is asked for last
    orders = orders.with_columns(_masked("qkey", qkey, qkey < 0))
    scalars = frozenset(
        (("tick_size", "lot_size", "multiplier", "scale", "currency") if constant else ())
        + (("ts_signal", "signal_price") if one_signal else ())
    )
    return orders, plain, scalars


def _order_events(events: _Table, sel: np.ndarray, rows: np.ndarray, n: int) -> list[pl.Series]:
    """Each order's first ack, reject, cancel and expiry (ts; seq but for the ack; the
    reject's reason) and its last replaced qty and replace count; `events` in seq order,
    `sel` the rows of them that count and `rows` their orders' rows."""
    kind = events.cols["k"][sel]
    seq = events.cols["seq"][sel]
    ts = events.cols["ts_recv"][sel]
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
            reasons = pl.from_arrow(events.arrow["reason"].take(pa.array(sel[at])))
            assert isinstance(reasons, pl.Series)
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
        qty = qty.scatter(keys, events.series("qty").gather(sel[at]))
    counts = np.unique(rows[picked], return_counts=True)[1] if picked.size else keys
    out.append(qty.alias("replaced_qty"))
    out.append(_placed("replaces", n, keys, counts.astype(np.int64)))
    return out


def _arrival(
    seq: np.ndarray,
    ins: np.ndarray,
    key: np.ndarray,
    quotes: _Quotes,
    table: _Table,
    pair: np.ndarray,
) -> list[pl.Series]:
    """The order's venue quote and the best bid and ask across venues at its submit seq
    (`table`: the quotes' table, for their bid and ask)."""
    n = seq.size
    out = {
        name: (_empty(n, np.int64), _empty(n, bool))
        for name in ("arrival_bid", "arrival_ask", "arrival_best_bid", "arrival_best_ask")
    }
    sides = (
        ("bid", table.cols["bid_price"], table.null("bid_price"), np.maximum),
        ("ask", table.cols["ask_price"], table.null("ask_price"), np.minimum),
    )
    venues = [v for v in range(1, pair.shape[1]) if (pair[1:, v] >= 0).any()]

    def at_rows(rows: np.ndarray, values: np.ndarray, null: np.ndarray | None):
        """The quotes' values at rows (-1: none) and whether they are null there."""
        if values.size == 0:
            return np.zeros(rows.size, np.int64), np.ones(rows.size, bool)
        row = np.maximum(rows, 0)
        missing = rows < 0
        if null is not None:
            missing |= null[row]
        return values[row], missing

    def part(lo: int, hi: int) -> None:
        at = _asof(quotes.by_seq, _group(key[lo:hi]), seq[lo:hi])
        for side, values, null, _ in sides:
            v, missing = at_rows(at, values, null)
            out[f"arrival_{side}"][0][lo:hi] = v
            out[f"arrival_{side}"][1][lo:hi] = missing
        by_instrument = _group(ins[lo:hi])
        best = {side: (np.zeros(hi - lo, np.int64), np.ones(hi - lo, bool)) for side, *_ in sides}
        for venue in venues:
            key_map = pair[1:, venue]  # instrument code -> key of (instrument, venue)
            at = _asof(quotes.by_seq, by_instrument, seq[lo:hi], key_map)
            for side, values, null, better in sides:
                v, missing = at_rows(at, values, null)
                b, none = best[side]
                # max_horizontal / min_horizontal: the best of the venues' non-null quotes
                np.copyto(b, np.where(none, v, better(b, v)), where=~missing)
                none &= missing
        for side, (b, none) in best.items():
            out[f"arrival_best_{side}"][0][lo:hi] = b
            out[f"arrival_best_{side}"][1][lo:hi] = none

    _chunked(n, part)
    return [_masked(name, values, null) for name, (values, null) in out.items()]


_STEP = 1 << 18  # fills per step: a step's temporaries stay small and are reused


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
        self.count = _full(n, 0, np.int64)
        # ints[i]: the INTS[i] sum of each order; totals, comps: the FLOATS' Kahan sums
        self.ints = [_full(n, 0, np.int64) for _ in self.INTS]
        self.totals = [_full(n, 0.0, np.float64) for _ in self.FLOATS]
        self.comps = [_full(n, 0.0, np.float64) for _ in self.FLOATS]
        self.first = _full(n, 0, np.int64)  # fill row of the first and last fill
        self.last = _full(n, 0, np.int64)

    def fit(self, n: int) -> _FillSums:
        """These sums for n orders (n at most the number they were made for)."""
        self.n = n
        for name in ("count", "first", "last"):
            setattr(self, name, getattr(self, name)[:n])
        for name in ("ints", "totals", "comps"):
            setattr(self, name, [a[:n] for a in getattr(self, name)])
        return self

    @staticmethod
    def terms(
        price: np.ndarray,
        qty: np.ndarray,
        fee: np.ndarray,
        missing: np.ndarray,
        sign: np.ndarray,
        mids: list[tuple[np.ndarray, np.ndarray]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per fill, the terms summed (`ints[i]` for INTS[i], `floats[i]` for FLOATS[i]),
        as the Polars expressions `(2.0 * sign * (price - mid) / mid * 1e4 *
        qty).fill_null(0.0)` and so on would give them: the same operations in the same
        order. Nulls are 0 in `price`, `qty` and `fee`; `missing`: price or qty null.
        `mids`: the mid at the fill, then at each markout horizon, with their nulls."""
        mid, mid_null = mids[0]
        pf = price.astype(np.float64)
        qf = qty.astype(np.float64)
        ints = np.empty((len(_FillSums.INTS), qty.size), np.int64)
        floats = np.empty((len(_FillSums.FLOATS), qty.size), np.float64)
        ints[0] = qty
        ints[1] = fee
        np.multiply(price, qty, out=ints[2])
        np.copyto(ints[3], qty)
        ints[3][mid_null] = 0
        with np.errstate(all="ignore"):
            floats[0] = 2.0 * sign * (pf - mid) / mid * 1e4 * qf
        floats[0][missing | mid_null] = 0.0
        for i, (m, m_null) in enumerate(mids[1:], start=1):
            np.copyto(ints[3 + i], qty)
            ints[3 + i][m_null] = 0
            with np.errstate(all="ignore"):
                floats[i] = sign * (m - pf) / pf * 1e4 * qf
            floats[i][missing | m_null] = 0.0
        return ints, floats

    def add(self, rows: np.ndarray, first_row: int, ints: np.ndarray, floats: np.ndarray) -> None:
        """Add a step of fills (seq order; `rows` their orders' rows, `first_row` the
        fill row of the step's first; the terms as `terms` gives them)."""
        runs = _Runs.of(rows)
        keys = runs.keys
        for total, values in zip(self.ints, ints):
            total[keys] += runs.sums(values)
        totals = [total[keys] for total in self.totals]
        comps = [comp[keys] for comp in self.comps]
        runs.kahan(list(floats), totals, comps)
        for total, comp, t, c in zip(self.totals, self.comps, totals, comps):
            total[keys] = t
            comp[keys] = c
        fresh = self.count[keys] == 0
        self.first[keys[fresh]] = first_row + runs.rows(runs.starts[fresh])
        self.last[keys] = first_row + runs.rows(runs.starts + runs.lens - 1)
        self.count[keys] += runs.lens

    def columns(self, fills: _Table) -> list[pl.Series]:
        """The per-order columns (null for orders without fills)."""
        none = self.count == 0
        out = [  # filled_qty and fees are 0 for orders without fills, the others null
            pl.Series(name, values)
            if name in ("filled_qty", "fees")
            else _masked(name, values, none)
            for name, values in zip(self.INTS, self.ints)
        ]
        out += [_masked(name, total, none) for name, total in zip(self.FLOATS, self.totals)]
        out.append(pl.Series("n_fills", self.count))
        first = np.where(none, 0, self.first)
        last = np.where(none, 0, self.last)
        ts = fills.cols["ts_recv"]
        seq = fills.cols["seq"]
        if ts.size == 0:
            first = last = np.full(self.n, -1, np.int64)
            ts = seq = np.zeros(1, np.int64)
        out.append(_masked("ts_first_fill", ts[first], none))
        out.append(_masked("_last_seq", seq[last], none))
        out.append(_masked("_last_ts", ts[last], none))
        out.append(
            _gather("_last_qty", fills.cols["qty"], fills.null("qty"), np.where(none, -1, last))
        )
        return out


def _fills(
    fills: _Table,
    rows: np.ndarray,
    orders: pl.DataFrame,
    key: np.ndarray,
    quotes: _Quotes,
    names: dict[str, list[str]],
    last_ts: int | None,
    side: ThreadPoolExecutor,
    zeros: Future[_FillSums],
) -> tuple[pl.DataFrame, list[pl.Series]]:
    """The booked fills (seq order) with their order, the mid at the fill and the
    markout mids; and per order, the sums over them (`_FillSums`). `rows`: each fill's
    order row (-1: unknown; overwritten). Steps of `_STEP` fills keep the temporaries
    small, so that their memory is reused. `side`: a pool for work on the side; `zeros`:
    the sums to add to, all 0 (see `_FillSums.fit`)."""
    n = orders.height
    ven = fills.cols["ven"]
    order_ven = orders["ven"].to_numpy()
    keep = np.greater_equal(rows, 0, out=_empty(rows.size, bool))
    if keep.all():
        np.greater_equal(ven, 0, out=keep)
        keep &= np.equal(np.take(order_ven, rows, out=_empty(rows.size, order_ven.dtype)), ven)
    else:
        keep[keep] = (ven[keep] >= 0) & (ven[keep] == order_ven[rows[keep]])
    oix0 = int(orders["oix"][0]) if n else 0
    everything = bool(keep.all())
    at = rows if everything else rows[keep]
    trades = fills.text_of("trade_id")
    assert trades is not None
    kept = trades if everything else trades.filter(pl.Series(keep))
    again = _repeats(pl.DataFrame([pl.Series("oix", at), kept]), ["oix", "trade_id"], ["trade_id"])
    del kept
    if again.any():
        keep[np.flatnonzero(keep)[again]] = False
        everything = False
        at = rows[keep]
    f = fills if everything else fills.filter(keep)
    del fills, rows, keep
    m = f.height
    seq = f.cols["seq"]
    ts = f.cols["ts_recv"]
    price, qty, fee = f.cols["price"], f.cols["qty"], f.cols["fee"]
    missing = _full(m, False, bool)
    for null in (f.null("price"), f.null("qty")):
        if null is not None:
            missing |= null
    fkey = np.take(key, at, out=_empty(m, key.dtype))
    sign = np.take(orders["sign"].to_numpy(), at, out=_empty(m, np.float64))
    horizons = [0, *(h for _, h in MARKOUT_HORIZONS_NS)]
    mids = [(_empty(m, np.float64), _empty(m, bool)) for _ in horizons]
    horizon_end = last_ts if last_ts is not None else -(2**62)

    # the quotes' group of each key, on seq and on ts_recv
    by_seq = {int(k): g for g, k in enumerate(quotes.by_seq.groups.keys) if k >= 0}
    by_ts = {int(k): g for g, k in enumerate(quotes.by_ts.groups.keys) if k >= 0}

    def lookup(a: int, b: int) -> None:
        """The mids of fills [a, b): the as-of lookups (`_asof_at`) of a key's fills
        together, written where the fills are."""
        groups = _group(fkey[a:b])
        bounds = groups.bounds
        for g, k in enumerate(groups.keys.tolist()):
            rows = groups.order[bounds[g] : bounds[g + 1]] + a
            for i, ((values, null), series, (mid, mid_null), group) in enumerate(
                zip(
                    mids,
                    (quotes.by_seq, *(quotes.by_ts,) * (len(mids) - 1)),
                    (quotes.seq_mid, *(quotes.ts_mid,) * (len(mids) - 1)),
                    (by_seq, *(by_ts,) * (len(mids) - 1)),
                )
            ):
                r = group.get(k) if k >= 0 else None
                if r is None:
                    null[rows] = True
                    continue
                lo, hi = int(series.groups.bounds[r]), int(series.groups.bounds[r + 1])
                on = seq[rows] if i == 0 else ts[rows] + horizons[i]
                at = np.searchsorted(series.on[lo:hi], on, side="right")
                at += lo - 1
                values[rows] = mid[at]  # at lo - 1: a row before the group, never used
                missing = mid_null[at]
                missing |= at < lo
                if i:
                    missing |= on > horizon_end
                null[rows] = missing

    def gather() -> list[pl.Series]:
        """The fills' columns from their orders."""
        ins = orders["ins"].to_numpy()
        return [
            orders["order_id"].gather(at),
            _names(names["venue"], f.cols["ven"], "venue"),
            _names(names["instrument"], np.take(ins, at, out=_empty(m, ins.dtype)), "instrument"),
            pl.Series(
                "ts_sent", np.take(orders["ts_sent"].to_numpy(), at, out=_empty(m, np.int64))
            ),
        ]

    # The lookups run a step ahead in a thread (numpy lets go of the GIL in them), the
    # orders' columns are gathered on `side`, and this thread adds each looked-up step
    # to the sums.
    steps = [(a, min(a + _STEP, m)) for a in range(0, m, _STEP)]
    gathered = side.submit(gather)
    with ThreadPoolExecutor(max_workers=1) as pool:
        looked = [pool.submit(lookup, a, b) for a, b in steps]
        sums = zeros.result().fit(n)
        for (a, b), done in zip(steps, looked):
            done.result()
            ints, floats = _FillSums.terms(
                price[a:b],
                qty[a:b],
                fee[a:b],
                missing[a:b],
                sign[a:b],
                [(values[a:b], null[a:b]) for values, null in mids],
            )
            sums.add(at[a:b], a, ints, floats)
            del ints, floats
    del missing
    per_order = sums.columns(f)
    del sums
    order_id, venue, instrument, ts_sent = gathered.result()
    trade = f.text_of("trade_id")
    assert trade is not None
    table = pl.DataFrame(
        [
            f.series("seq"),
            f.series("ts_recv"),
            order_id,
            venue,
            trade,
            f.series("price"),
            f.series("qty"),
            f.series("fee"),
            pl.Series("oix", np.add(at, oix0, out=at)),
            _masked("qkey", fkey, fkey < 0),
            instrument,
            pl.Series("sign", sign),
            ts_sent,
            *(
                _masked(name, values, null)
                for name, (values, null) in zip(
                    ("mid_fill", *(f"mid_{name}" for name, _ in MARKOUT_HORIZONS_NS)), mids
                )
            ),
        ]
    )
    return table, per_order


def _full_fills(orders: pl.DataFrame, fills: pl.DataFrame, oix0: int) -> list[pl.Series]:
    """Per order, the seq and ts of the fill that completed it (`_seq_full`, `_ts_full`;
    null where none did).

    Usually its last fill; where fills went on after the qty was reached (an overfill),
    the running sum finds the first fill that reached it."""
    filled, _ = _np(orders["filled_qty"])
    final, final_null = _np(orders["qty_final"])
    last_qty, last_null = _np(orders["_last_qty"])
    full = filled >= final
    for null in (final_null, last_null):
        if null is not None:
            full &= ~null
    before = filled - last_qty
    simple = full & (before < final)
    over = np.flatnonzero(full & (before >= final))
    null = ~simple
    seq = np.where(simple, _np(orders["_last_seq"])[0], 0)
    ts = np.where(simple, _np(orders["_last_ts"])[0], 0)
    if over.size:
        table = pl.DataFrame({"oix": over + oix0, "qty_final": final[over]})
        sub = fills.join(table, on="oix", how="inner").sort("seq")
        reached = sub.with_columns(pl.col("qty").cum_sum().over("oix").alias("_cum")).filter(
            pl.col("_cum") >= pl.col("qty_final")
        )
        first = reached.group_by("oix").agg(pl.col("seq").first(), pl.col("ts_recv").first())
        at = first["oix"].to_numpy() - oix0
        seq[at] = first["seq"].to_numpy()
        ts[at] = first["ts_recv"].to_numpy()
        null[at] = False
    return [_masked("_seq_full", seq, null), _masked("_ts_full", ts, null)]


def _build_run(info: RunInfo, oix0: int, time_bucket_ns: int) -> tuple[pl.DataFrame, ...]:
    """Build one run's order and fill tables (order numbers from `oix0`)."""
    entries = _collect(info)
    tables = entries.tables
    # The quotes are indexed (`_quote_keys`) while the orders are put together.
    with ThreadPoolExecutor(max_workers=1) as pool:
        keyed = pool.submit(_quote_keys, entries)
        # the fills' sums, one for each order at most (put in memory meanwhile)
        sums = pool.submit(_FillSums, tables["submits"].height)
        orders, plain, scalars = _orders(info, entries, lambda: keyed.result()[1], oix0)
        quotes, pair = keyed.result()
    alerts = tables["alerts"]
    hit = np.zeros(alerts.height, bool)
    if alerts.height:
        code = alerts.text_of("code")
        assert code is not None
        hit = code.is_in(_NOT_BOOKED).fill_null(False).to_numpy()
        null = alerts.null("cause")
        if null is not None:
            hit &= ~null
    refused = alerts.cols["cause"][hit]

    def booked(table: _Table) -> _Table:
        return table.filter(~np.isin(table.cols["seq"], refused)) if refused.size else table

    n = orders.height
    key = orders["qkey"].fill_null(-1).to_numpy()
    events = booked(tables["events"])
    fills = booked(tables["fills"])
    quote_table = tables["quotes"]
    # What is read is let go of once it is used (what the orders keep of it stays), so
    # that its memory goes to what follows.
    tables.clear()
    del tables

    def from_events() -> list[pl.Series]:
        """The orders' venue events, arrival quotes and buckets."""
        ids = None if plain else _order_ids(events, info.run_id)
        rows = _order_rows(events.cols["n"], orders["order_id"], plain, ids)
        ven = events.cols["ven"]
        ok = rows >= 0
        ok[ok] = (ven[ok] >= 0) & (ven[ok] == orders["ven"].to_numpy()[rows[ok]])
        sel = np.flatnonzero(ok)
        ins = orders["ins"].to_numpy().astype(np.int64)
        arrival = _arrival(orders["seq"].to_numpy(), ins, key, quotes, quote_table, pair)
        return [*_order_events(events, sel, rows[sel], n), *arrival, *_buckets(orders, arrival)]

    # The fills (`_fills` looks quotes up in a thread of its own) and the orders' other
    # events and arrival quotes (`pool`, which then gathers the fills' order columns)
    # are independent: they are worked out side by side.
    with ThreadPoolExecutor(max_workers=1) as pool:
        side = pool.submit(from_events)
        ids = None if plain else _order_ids(fills, info.run_id)
        rows = _order_rows(fills.cols["n"], orders["order_id"], plain, ids)
        del ids
        fill_rows, per_order = _fills(
            fills, rows, orders, key, quotes, entries.names, entries.last_ts, pool, sums
        )
        del fills, rows
        orders = orders.with_columns(side.result())
    # let go of what only they used (the events, the quotes' table, the lookups on ts)
    events = quote_table = None
    quotes = _Quotes(quotes.by_seq, quotes.by_seq, quotes.seq_mid, quotes.seq_mid)
    replaced, replaced_null = _np(orders["replaced_qty"])
    qty, qty_null = _np(orders["qty"])
    final_null = None if replaced_null is None or qty_null is None else replaced_null & qty_null
    replaces, replaces_null = _np(orders["replaces"])
    orders = orders.with_columns(
        _masked(
            "qty_final",
            replaced if replaced_null is None else np.where(replaced_null, qty, replaced),
            final_null,
        ),
        pl.Series(
            "replaces", replaces if replaces_null is None else np.where(replaces_null, 0, replaces)
        ),
        *per_order,
    )
    orders = orders.with_columns(_full_fills(orders, fill_rows, oix0))
    orders = _finish(orders, quotes, key, entries.last_seq, time_bucket_ns, scalars)
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


_STATUSES = (
    "FILLED",
    "REJECTED",
    "CANCELED",
    "EXPIRED",
    "PARTIALLY_FILLED",
    "ACCEPTED",
    "PENDING_NEW",
)


def _chunked(n: int, work: Callable[[int, int], None], size: int = 1 << 16) -> None:
    """Run `work(lo, hi)` over [0, n) in chunks, on two threads. Numpy lets go of the
    GIL in its loops, and the pages of the arrays written are faulted in on both cores;
    a chunk's temporaries stay small (and in cache) and their memory is reused."""
    chunks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
    if len(chunks) < 2:
        for lo, hi in chunks:
            work(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in pool.map(lambda c: work(*c), chunks):
            pass


def _finish(
    orders: pl.DataFrame,
    quotes: _Quotes,
    key: np.ndarray,
    last_seq: int | None,
    time_bucket_ns: int,
    scalars: frozenset[str],
) -> pl.DataFrame:
    """Status, done time, mids, slippage, shortfall, markouts, latencies and time buckets
    (the other buckets are `_buckets`').

    Worked out in numpy, in chunks on two threads (`_chunked`), each value as the Polars
    expression in the comment beside it gives it: the same operations in the same order,
    nulls in from nulls in. Polars divides by a constant column (`scalars`: made with
    `pl.lit`) as a product with its reciprocal, and so does this."""
    n = orders.height
    inputs = (
        "filled_qty",
        "qty",
        "qty_final",
        "ts_ack",
        "ts_reject",
        "ts_cancel",
        "ts_expire",
        "_ts_full",
        "seq_reject",
        "seq_cancel",
        "seq_expire",
        "_seq_full",
        "sign",
        "_pq",
        "arrival_bid",
        "arrival_ask",
        "arrival_best_bid",
        "arrival_best_ask",
        "signal_price",
        "multiplier",
        "scale",
        "fees",
        "_eff_num",
        "_eff_qty",
        *(f"_mo_{h}_{part}" for h, _ in MARKOUT_HORIZONS_NS for part in ("num", "qty")),
        "ts_sent",
        "ts_first_fill",
        "ts_signal",
    )
    col = {name: _np(orders[name]) for name in inputs}
    with np.errstate(all="ignore"):  # Polars' reciprocals of the constants divided by
        recip = {
            name: np.divide(1.0, col[name][0][:1].astype(np.float64))[0]
            if name in scalars and n
            else None
            for name in ("scale", "signal_price")
        }
    floats = (
        "end_mid",
        "vwap",
        "arrival_mid",
        "arrival_best_mid",
        "decision_price",
        *_COST_BPS,
        "filled_notional",
        "order_notional",
        "fees_ccy",
    )
    ints = (
        "ts_done",
        "time_to_fill_ns",
        *(f"lat_{stage}_ns" for stage, _, _ in STAGES),
        "lat_sent_to_done_ns",
        "time_bucket",
    )
    out = {name: (_empty(n, np.float64), _empty(n, bool)) for name in floats}
    out |= {name: (_empty(n, np.int64), _empty(n, bool)) for name in ints}
    status = _empty(n, np.int32)
    ends = (last_seq if last_seq is not None else 0,)

    def part(lo: int, hi: int) -> None:
        def v(name: str) -> np.ndarray:
            return col[name][0][lo:hi]

        def f(name: str) -> np.ndarray:
            return col[name][0][lo:hi].astype(np.float64)

        def null(*names: str) -> np.ndarray:
            at = np.zeros(hi - lo, bool)
            for name in names:
                mask = col[name][1]
                if mask is not None:
                    at |= mask[lo:hi]
            return at

        def put(name: str, values: np.ndarray, missing: np.ndarray) -> None:
            out[name][0][lo:hi] = values
            out[name][1][lo:hi] = missing

        filled = v("filled_qty")
        # status: the first of FILLED (filled_qty >= qty_final), REJECTED, CANCELED,
        # EXPIRED (their ts not null), PARTIALLY_FILLED (filled_qty > 0), ACCEPTED
        # (ts_ack not null), else PENDING_NEW
        code = status[lo:hi]
        code[:] = _STATUSES.index("PENDING_NEW")
        for name, when in (
            ("ACCEPTED", ~null("ts_ack")),
            ("PARTIALLY_FILLED", filled > 0),
            ("EXPIRED", ~null("ts_expire")),
            ("CANCELED", ~null("ts_cancel")),
            ("REJECTED", ~null("ts_reject")),
            ("FILLED", (filled >= v("qty_final")) & ~null("qty_final")),
        ):
            code[when] = _STATUSES.index(name)
        # ts_done, and seq: by status, the full fill's, the reject's, cancel's, expiry's
        done: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, cols in (
            ("ts_done", ("_ts_full", "ts_reject", "ts_cancel", "ts_expire")),
            ("seq_done", ("_seq_full", "seq_reject", "seq_cancel", "seq_expire")),
        ):
            values, missing = np.zeros(hi - lo, np.int64), np.ones(hi - lo, bool)
            for c, source in enumerate(cols):
                at = code == c
                values[at] = v(source)[at]
                missing[at] = null(source)[at]
            done[name] = (values, missing)
        put("ts_done", *done["ts_done"])
        # end_mid: the mid when the order ended (the run's last mid if it never did),
        # for the opportunity cost of what was left unfilled
        qty_null = null("qty")
        open_qty = np.maximum(v("qty") - filled, 0)  # (qty - filled_qty).clip(0)
        seq_end = np.where(done["seq_done"][1], ends[0], done["seq_done"][0])
        rows = np.flatnonzero((open_qty > 0) & ~qty_null)
        at = np.full(hi - lo, -1, dtype=np.int64)
        at[rows] = _asof_at(quotes.by_seq, _group(key[lo:hi][rows]), seq_end[rows])
        mids, mid_nulls = quotes.seq_mid
        if mids.size:
            end_mid = np.take(mids, at, mode="wrap")
            put("end_mid", end_mid, (at < 0) | np.take(mid_nulls, at, mode="wrap"))
        else:
            end_mid = np.zeros(hi - lo)
            put("end_mid", end_mid, np.ones(hi - lo, bool))
        with np.errstate(all="ignore"):
            sign = v("sign")
            qty = f("qty")
            fq = filled.astype(np.float64)
            # vwap: when(filled_qty > 0).then(_pq / filled_qty)
            vwap, vwap_null = f("_pq") / fq, null("_pq") | (filled <= 0)
            put("vwap", vwap, vwap_null)
            # arrival mids: (bid + ask) / 2.0
            mids = {}
            for mid, bid, ask in (
                ("arrival_mid", "arrival_bid", "arrival_ask"),
                ("arrival_best_mid", "arrival_best_bid", "arrival_best_ask"),
            ):
                mids[mid] = ((f(bid) + f(ask)) / 2.0, null(bid, ask))
                put(mid, *mids[mid])
            # decision_price: when(signal_price > 0).then(signal_price)
            #     .otherwise(arrival_mid)
            good = ~null("signal_price") & (v("signal_price") > 0)
            sig = f("signal_price")
            am, am_null = mids["arrival_mid"]
            pd_ = np.where(good, sig, am)
            pd_null = ~good & am_null
            put("decision_price", pd_, pd_null)
            # slippage: sign * (vwap - ref) / ref * 1e4
            x = sign * (vwap - sig)
            c = recip["signal_price"]
            put(
                "slippage_signal_bps",
                (x / sig if c is None else x * c) * 1e4,
                vwap_null | ~good,
            )
            for name, mid in (
                ("slippage_arrival_bps", "arrival_mid"),
                ("slippage_best_bps", "arrival_best_mid"),
            ):
                ref, ref_null = mids[mid]
                put(name, sign * (vwap - ref) / ref * 1e4, vwap_null | ref_null)
            denom = pd_ * qty  # decision_price * qty
            denom_null = pd_null | qty_null
            pq = np.where(null("_pq"), 0, v("_pq")).astype(np.float64)  # _pq.fill_null(0)
            # is_execution_bps: sign * (_pq - decision_price * filled_qty) / denom * 1e4
            execution = sign * (pq - pd_ * fq) / denom * 1e4
            put("is_execution_bps", execution, denom_null)
            # is_opportunity_bps: when(unfilled == 0).then(0.0)
            #     .otherwise(sign * (end_mid - decision_price) * unfilled / denom * 1e4)
            unfilled = open_qty.astype(np.float64)
            opportunity = sign * (end_mid - pd_) * unfilled / denom * 1e4
            none_left = (unfilled == 0) & ~qty_null
            opportunity[none_left] = 0.0
            opportunity_null = ~none_left & (out["end_mid"][1][lo:hi] | denom_null)
            put("is_opportunity_bps", opportunity, opportunity_null)
            # is_fees_bps: fees / (multiplier * denom) * 1e4
            mult = f("multiplier")
            fees = f("fees")
            fees_bps = fees / (mult * denom) * 1e4
            fees_null = null("multiplier") | denom_null
            put("is_fees_bps", fees_bps, fees_null)
            # shortfall_bps: is_execution_bps + is_opportunity_bps + is_fees_bps
            put(
                "shortfall_bps",
                execution + opportunity + fees_bps,
                denom_null | opportunity_null | fees_null,
            )
            # ratios: when(den > 0).then(num / den)
            for name, num, den in (
                ("effective_spread_bps", "_eff_num", "_eff_qty"),
                *(
                    (f"markout_{h}_bps", f"_mo_{h}_num", f"_mo_{h}_qty")
                    for h, _ in MARKOUT_HORIZONS_NS
                ),
            ):
                put(name, v(num) / f(den), null(num, den) | (v(den) <= 0))
            # notionals: _pq.fill_null(0) * multiplier / scale, decision_price * qty *
            # multiplier / scale, fees / scale
            c = recip["scale"]
            scale = f("scale")
            for name, x, missing in (
                ("filled_notional", pq * mult, null("multiplier")),
                ("order_notional", pd_ * qty * mult, denom_null | null("multiplier")),
                ("fees_ccy", fees, np.zeros(hi - lo, bool)),
            ):
                put(name, x / scale if c is None else x * c, missing | null("scale"))
        # times: differences
        ts_done, ts_done_null = done["ts_done"]
        for name, a, b in (
            ("time_to_fill_ns", "ts_sent", "ts_first_fill"),
            *((f"lat_{stage}_ns", a, b) for stage, a, b in STAGES),
        ):
            if b == "ts_done":
                put(name, ts_done - v(a), ts_done_null | null(a))
            else:
                put(name, v(b) - v(a), null(a, b))
        put("lat_sent_to_done_ns", ts_done - v("ts_sent"), ts_done_null | null("ts_sent"))
        ts_sent = v("ts_sent")
        put("time_bucket", ts_sent - ts_sent % time_bucket_ns, null("ts_sent"))

    _chunked(n, part)
    return orders.with_columns(
        *(_masked(name, values, null) for name, (values, null) in out.items()),
        _names(list(_STATUSES), status, "status"),
    ).select(ORDER_COLUMNS[1:])


def _buckets(orders: pl.DataFrame, arrival: list[pl.Series]) -> list[pl.Series]:
    """The orders' touch distance and fill-model buckets (`analytics.buckets`), given
    their arrival quotes."""
    frame = orders.select("sign", "limit_price", "tick_size", "qty", "lot_size", "ts_sent")
    frame = frame.with_columns(arrival).select(
        touch_distance_ticks(
            pl.col("sign") > 0,
            pl.col("limit_price"),
            pl.col("arrival_bid"),
            pl.col("arrival_ask"),
            pl.col("tick_size"),
        ).alias("touch_distance_ticks"),
        size_bucket(pl.col("qty"), pl.col("lot_size")).alias("size_bucket"),
        tod_bucket(pl.col("ts_sent")).alias("tod"),
    )
    return frame.with_columns(
        distance_bucket(pl.col("touch_distance_ticks")).alias("distance_bucket")
    ).get_columns()


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
    *_COST_BPS,
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


_QUANTILED = (  # (name, column) of the latencies given as medians and 95th percentiles
    ("time_to_fill", "time_to_fill_ns"),
    *((name, f"lat_{name}_ns") for name, _, _ in (*STAGES, ("sent_to_done", "", ""))),
)


def _metrics_sql() -> tuple[str, str]:
    """The aggregates, and the metric columns made of them in output order. Both
    quantiles of a latency are asked for at once (`quantile_cont(x, [0.5, 0.95])`, one
    sort of its values, the same values as one each)."""
    parts = [
        ("count(*)", "orders"),
        ("count(*) filter (where filled_qty > 0)", "orders_filled"),
        ("sum(n_fills)::bigint", "fills"),
        ("avg(case when filled_qty > 0 then 1.0 else 0.0 end)", "fill_rate"),
        ("avg(least(filled_qty, qty)::double / nullif(qty, 0))", "filled_share"),
        ("avg(case when status = 'REJECTED' then 1.0 else 0.0 end)", "reject_rate"),
        ("avg(case when status = 'CANCELED' then 1.0 else 0.0 end)", "cancel_rate"),
        ("avg(case when status = 'EXPIRED' then 1.0 else 0.0 end)", "expire_rate"),
        (_wavg("slippage_signal_bps", "filled_notional"), "slippage_signal_bps"),
        (_wavg("slippage_arrival_bps", "filled_notional"), "slippage_arrival_bps"),
        (_wavg("slippage_best_bps", "filled_notional"), "slippage_best_bps"),
        (_wavg("shortfall_bps", "order_notional"), "shortfall_bps"),
        (_wavg("is_execution_bps", "order_notional"), "is_execution_bps"),
        (_wavg("is_opportunity_bps", "order_notional"), "is_opportunity_bps"),
        (_wavg("is_fees_bps", "order_notional"), "is_fees_bps"),
        (_wavg("effective_spread_bps", "filled_notional"), "effective_spread_bps"),
        *(
            (_wavg(f"markout_{n}_bps", "filled_notional"), f"markout_{n}_bps")
            for n, _ in MARKOUT_HORIZONS_NS
        ),
        ("sum(fees_ccy) / nullif(sum(filled_notional), 0) * 1e4", "fees_bps"),
        ("sum(filled_notional)", "filled_notional"),
    ]
    inner = [f"{expr} as {alias}" for expr, alias in parts]
    inner += [f"quantile_cont({col}, [0.5, 0.95]) as _q_{name}" for name, col in _QUANTILED]
    outer = [alias for _, alias in parts]
    for name, _ in _QUANTILED:
        outer += [f"_q_{name}[1] as {name}_p50_ns", f"_q_{name}[2] as {name}_p95_ns"]
    return ",\n  ".join(inner), ",\n  ".join(outer)


def _query(orders: pl.DataFrame, sql: str) -> pl.DataFrame:
    """Run `sql` on the orders; only the columns it names are handed to DuckDB."""
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql))
    con = duckdb.connect()
    try:
        columns = orders.select(c for c in orders.columns if c in named)
        con.register("orders", columns.to_arrow(compat_level=pl.CompatLevel.newest()))
        return con.sql(sql).pl()
    finally:
        con.close()


def aggregate(orders: pl.DataFrame, by: Sequence[str] = ()) -> pl.DataFrame:
    """Aggregate per-order TCA by `by` fields (BY_FIELDS names; none: one overall row)."""
    fields = parse_by(list(by))
    cols = [BY_FIELDS[f] for f in fields]
    keys = ", ".join(f'"{c}" as "{f}"' for f, c in zip(fields, cols))
    group = ", ".join(f'"{c}"' for c in cols)
    inner, outer = _metrics_sql()
    sql = f"select {keys + ',' if keys else ''}\n  {inner}\nfrom orders"
    if cols:
        sql += f"\ngroup by {group}"
    named = ", ".join(f'"{f}"' for f in fields)
    sql = f"select {named + ',' if named else ''}\n  {outer}\nfrom ({sql})"
    if cols:
        sql += f"\norder by {named}"
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
