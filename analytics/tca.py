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


# --- the per-run build ------------------------------------------------------------------


def _instrument_frame(info: RunInfo) -> pl.DataFrame:
    rows = [
        {
            "instrument": i.instrument,
            "tick_size": i.tick_size,
            "lot_size": i.lot_size,
            "multiplier": i.multiplier,
            "scale": 10.0 ** (i.price_precision + i.size_precision),
            "currency": i.currency,
        }
        for i in info.instruments.values()
    ]
    schema = {
        "instrument": pl.String,
        "tick_size": pl.Int64,
        "lot_size": pl.Int64,
        "multiplier": pl.Int64,
        "scale": pl.Float64,
        "currency": pl.String,
    }
    return pl.DataFrame(rows, schema=schema, orient="row")


# What the build reads: name -> (kinds, columns).
_READS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "submits": (
        ("SubmitOrder",),
        (
            "seq",
            "ts_recv",
            "order_id",
            "signal_id",
            "venue",
            "instrument",
            "account",
            "strategy",
            "side",
            "order_type",
            "tif",
            "qty",
            "price",
        ),
    ),
    "signals": (("Signal",), ("seq", "ts_recv", "ts_event", "signal_id", "signal_price")),
    "events": (_EVENT_KINDS, ("seq", "kind", "ts_recv", "order_id", "venue", "reason", "qty")),
    "fills": (
        ("OrderFilled",),
        ("seq", "ts_recv", "order_id", "venue", "trade_id", "price", "qty", "fee"),
    ),
    "alerts": (("Alert",), ("cause", "code")),
    "signal_rejects": (("SignalRejected",), ("seq",)),
    "quotes": (("QuoteTick",), ("seq", "ts_recv", "instrument", "venue", "bid_price", "ask_price")),
}


def _columns() -> list[str]:
    columns = ["seq", "kind", "ts_recv"]
    for _, cols in _READS.values():
        columns += [c for c in cols if c not in columns]
    return columns


class _Picked:
    """The rows of one segment that TCA reads, per `_READS` name, and its seq/ts range."""

    def __init__(self) -> None:
        self.parts: dict[str, list[pa.RecordBatch]] = {name: [] for name in _READS}
        self.last_seq: int | None = None
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        """Pick a batch's rows by its `kind` dictionary codes (numpy, no per-row Python)."""
        kinds = batch.column("kind")
        names = kinds.dictionary.to_pylist()
        codes = kinds.indices.to_numpy(zero_copy_only=False)
        for name, (wanted, cols) in _READS.items():
            idx = [names.index(k) for k in wanted if k in names]
            if not idx:
                continue
            mask = codes == idx[0] if len(idx) == 1 else np.isin(codes, idx)
            if mask.any():
                self.parts[name].append(batch.select(list(cols)).filter(pa.array(mask)))
        lo, hi = (v.as_py() for v in pc.min_max(batch.column("ts_recv")).values())
        self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
        self.last_ts = hi if self.last_ts is None else max(self.last_ts, hi)
        self.last_seq = batch.column("seq")[batch.num_rows - 1].as_py()


def _pick_sealed(path: str) -> _Picked:
    """Read one sealed segment, memory-mapped, decompressing only the columns TCA uses."""
    picked = _Picked()
    try:
        names = pa.ipc.open_file(pa.memory_map(path)).schema.names
        wanted = [names.index(c) for c in _columns()]
        options = pa.ipc.IpcReadOptions(use_threads=False, included_fields=wanted)
        reader = pa.ipc.open_file(pa.memory_map(path), options=options)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if batch.num_rows:
                picked.add(batch)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TcaError(f"{path}: not a readable journal segment ({exc})") from None
    return picked


def _collect(info: RunInfo) -> dict[str, pl.DataFrame]:
    """Read the rows of the kinds TCA needs, in seq order: the sealed segments in
    parallel (one thread each, two at a time; pyarrow releases the GIL), then the
    unsealed tail through `JournalReader` (its batches after the last sealed seq)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        picked = list(pool.map(_pick_sealed, info.sealed))
    if info.unsealed:
        sealed_seqs = [p.last_seq for p in picked if p.last_seq is not None]
        last_sealed = max(sealed_seqs) if sealed_seqs else -1
        tail = _Picked()
        columns = _columns()
        try:
            for batch in JournalReader(info.run_dir).batches():
                if batch.num_rows and batch.column(0)[batch.num_rows - 1].as_py() > last_sealed:
                    tail.add(batch.select(columns))
        except JournalError as exc:
            raise TcaError(str(exc)) from None
        picked.append(tail)
    parts = {name: [b for p in picked for b in p.parts[name]] for name in _READS}
    seqs = [p.last_seq for p in picked if p.last_seq is not None]
    firsts = [p.first_ts for p in picked if p.first_ts is not None]
    lasts = [p.last_ts for p in picked if p.last_ts is not None]
    last_seq = max(seqs) if seqs else None
    first_ts = min(firsts) if firsts else None
    last_ts = max(lasts) if lasts else None
    out: dict[str, pl.DataFrame] = {}
    for name, (_, cols) in _READS.items():
        if parts[name]:
            table = pa.Table.from_batches(parts[name])
        else:
            table = SCHEMA.empty_table().select(list(cols))
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        casts = [
            pl.col(c).cast(pl.String) for c in frame.columns if frame.schema[c] == pl.Categorical
        ]
        if "seq" in frame.columns:
            casts.append(pl.col("seq").cast(pl.Int64))
        if "cause" in frame.columns:
            casts.append(pl.col("cause").cast(pl.Int64))
        out[name] = frame.with_columns(casts) if casts else frame
    out["end"] = pl.DataFrame(
        {"last_seq": [last_seq], "first_ts": [first_ts], "last_ts": [last_ts]},
        schema={"last_seq": pl.Int64, "first_ts": pl.Int64, "last_ts": pl.Int64},
    )
    return out


def _mid(bid: str, ask: str) -> pl.Expr:
    return (pl.col(bid).cast(pl.Float64) + pl.col(ask).cast(pl.Float64)) / 2.0


def _ratio(num: str, den: str) -> pl.Expr:
    """num / den, null where den is null or 0 (never NaN)."""
    d = pl.col(den)
    return pl.when(d > 0).then(pl.col(num) / d.cast(pl.Float64)).otherwise(None)


def _ascending(ts: pl.Series) -> bool:
    return ts.len() < 2 or bool((ts.diff().drop_nulls() >= 0).all())


def _attach(
    left: pl.DataFrame, orders: pl.DataFrame, run_id: str, columns: Sequence[str]
) -> pl.DataFrame:
    """Add to each row of `left` (an `order_id` column, seq order) its order's `columns`;
    rows of unknown orders are dropped, the order of the rest kept.

    Engine order ids are `f"{run_id}-{n}"`, n counting from 1 in the order the orders
    were sent (engine/ids.py), so n - 1 is the order's row: parsed, gathered and checked
    against the id itself. Any other id is looked up with a join."""
    if orders.height == 0 or left.height == 0:
        return left.clear().join(orders.select("order_id", *columns), on="order_id")
    ids = orders["order_id"]
    n = left["order_id"].str.strip_prefix(f"{run_id}-").cast(pl.Int64, strict=False) - 1
    row = n.fill_null(-1)
    inside = (row >= 0) & (row < orders.height)
    row = row.clip(0, orders.height - 1)
    same = inside & (ids.gather(row) == left["order_id"]).fill_null(False)
    fast = pl.concat(
        [left.filter(same), orders.select(columns).gather(row.filter(same))], how="horizontal"
    )
    rest = left.filter(~same)
    if rest.height == 0:
        return fast
    slow = rest.join(orders.select("order_id", *columns), on="order_id", how="inner")
    return pl.concat([fast, slow.select(fast.columns)]).sort("seq")


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


def _drop_repeats(f: pl.DataFrame) -> pl.DataFrame:
    """Drop a fill repeating an earlier (order, trade_id): hashed first, checked exactly
    on the few rows whose hash repeats."""
    h = pl.col("trade_id").hash(seed=1) ^ pl.col("oix").hash(seed=2)
    f = f.with_columns(h.alias("_h"))
    again = f.filter(~pl.col("_h").is_first_distinct())
    if again.height == 0:
        return f.drop("_h")
    f = f.with_row_index("_r")
    suspects = f.filter(pl.col("_h").is_in(again["_h"].unique().implode()))
    repeated = suspects.filter(~pl.struct("oix", "trade_id").is_first_distinct())["_r"]
    return f.filter(~pl.col("_r").is_in(repeated.implode())).drop("_h", "_r")


def _order_events(orders: pl.DataFrame, events: pl.DataFrame, oix0: int) -> pl.DataFrame:
    """Add each order's first ack, reject, cancel and expiry (ts, seq) and the last
    replaced qty; events in seq order, keyed by oix."""
    k = pl.col("kind")
    out = orders
    for kind, name, extra in (
        ("OrderAccepted", "ack", ()),
        ("OrderRejected", "reject", ("reason",)),
        ("OrderCanceled", "cancel", ()),
        ("OrderExpired", "expire", ()),
    ):
        first = (
            events.filter(k == kind)
            .unique(subset=["oix"], keep="first", maintain_order=True)
            .select(
                "oix",
                pl.col("ts_recv").alias(f"ts_{name}"),
                pl.col("seq").alias(f"seq_{name}"),
                *(pl.col(c).alias(f"{name}_{c}") for c in extra),
            )
        )
        out = _put(out, first, oix0)
    replaced = (
        events.filter(k == "OrderReplaced")
        .group_by("oix")
        .agg(pl.col("qty").last().alias("replaced_qty"), pl.len().cast(pl.Int64).alias("replaces"))
    )
    return _put(out, replaced, oix0).drop("seq_ack")


def _arrival(orders: pl.DataFrame, quotes: pl.DataFrame) -> pl.DataFrame:
    """Add the order's venue quote and the best quote across venues at its submit seq."""
    q = quotes.select("seq", "qkey", "instrument", "venue", "bid_price", "ask_price")
    out = orders.join_asof(
        q.select(
            "seq",
            "qkey",
            pl.col("bid_price").alias("arrival_bid"),
            pl.col("ask_price").alias("arrival_ask"),
        ),
        on="seq",
        by="qkey",
        strategy="backward",
        check_sortedness=False,
    )
    venues = sorted(v for v in quotes["venue"].unique().to_list() if v is not None)
    bids, asks = [], []
    for i, venue in enumerate(venues):
        per = q.filter(pl.col("venue") == venue).select(
            "seq",
            "instrument",
            pl.col("bid_price").alias(f"_bid{i}"),
            pl.col("ask_price").alias(f"_ask{i}"),
        )
        out = out.join_asof(
            per, on="seq", by="instrument", strategy="backward", check_sortedness=False
        )
        bids.append(f"_bid{i}")
        asks.append(f"_ask{i}")
    best_bid = pl.max_horizontal(bids) if bids else pl.lit(None, pl.Int64)
    best_ask = pl.min_horizontal(asks) if asks else pl.lit(None, pl.Int64)
    return out.with_columns(
        best_bid.alias("arrival_best_bid"), best_ask.alias("arrival_best_ask")
    ).drop(bids + asks)


def _fill_table(
    fills: pl.DataFrame,
    orders: pl.DataFrame,
    quotes: pl.DataFrame,
    last_ts: int | None,
    run_id: str,
) -> pl.DataFrame:
    """Booked fills (seq order) with their order, the mid at the fill and the markout mids."""
    keyed = orders.with_columns(pl.col("venue").alias("_venue"))
    columns = ("oix", "qkey", "instrument", "_venue", "sign", "ts_sent")
    f = _attach(fills, keyed, run_id, columns)
    f = f.filter(pl.col("venue") == pl.col("_venue")).drop("_venue")
    f = _drop_repeats(f)
    q = quotes.select("seq", "ts_recv", "qkey", _mid("bid_price", "ask_price").alias("_mid"))
    f = f.join_asof(
        q.select("seq", "qkey", pl.col("_mid").alias("mid_fill")),
        on="seq",
        by="qkey",
        strategy="backward",
        check_sortedness=False,
    )
    in_ts_order = _ascending(f["ts_recv"])
    if not in_ts_order:
        f = f.sort(["ts_recv", "seq"])
    qt = q if _ascending(q["ts_recv"]) else q.sort(["ts_recv", "seq"])
    qt = qt.select("ts_recv", "qkey", "_mid")
    for name, horizon in MARKOUT_HORIZONS_NS:
        at = f"_at_{name}"
        f = f.with_columns((pl.col("ts_recv") + horizon).alias(at)).join_asof(
            qt.rename({"ts_recv": at, "_mid": f"mid_{name}"}),
            on=at,
            by="qkey",
            strategy="backward",
            check_sortedness=False,
        )
        known = pl.col(at) <= (last_ts if last_ts is not None else -(2**62))
        f = f.with_columns(
            pl.when(known).then(pl.col(f"mid_{name}")).otherwise(None).alias(f"mid_{name}")
        ).drop(at)
    return f if in_ts_order else f.sort("seq")


def _per_order_fills(f: pl.DataFrame) -> pl.DataFrame:
    """Per order: filled qty, notional, fees, first and last fill, effective spread and
    markout sums (fills in seq order). Terms are computed row-wise first so that the
    group-by runs only plain sums, firsts and lasts."""
    qty = pl.col("qty")
    price = pl.col("price").cast(pl.Float64)
    sign = pl.col("sign")
    mid = pl.col("mid_fill")
    terms = [
        (pl.col("price") * qty).alias("_pq"),
        (2.0 * sign * (price - mid) / mid * 1e4 * qty).fill_null(0.0).alias("_eff_num"),
        pl.when(mid.is_not_null()).then(qty).otherwise(0).alias("_eff_qty"),
    ]
    for name, _ in MARKOUT_HORIZONS_NS:
        m = pl.col(f"mid_{name}")
        terms.append(
            (sign * (m - price) / price * 1e4 * qty).fill_null(0.0).alias(f"_mo_{name}_num")
        )
        terms.append(pl.when(m.is_not_null()).then(qty).otherwise(0).alias(f"_mo_{name}_qty"))
    sums = ["_pq", "_eff_num", "_eff_qty"]
    sums += [f"_mo_{n}_{x}" for n, _ in MARKOUT_HORIZONS_NS for x in ("num", "qty")]
    return (
        f.select("oix", "seq", "ts_recv", "qty", "fee", *terms)
        .group_by("oix")
        .agg(
            qty.sum().alias("filled_qty"),
            pl.col("fee").sum().alias("fees"),
            pl.len().cast(pl.Int64).alias("n_fills"),
            pl.col("ts_recv").first().alias("ts_first_fill"),
            pl.col("seq").last().alias("_last_seq"),
            pl.col("ts_recv").last().alias("_last_ts"),
            qty.last().alias("_last_qty"),
            *(pl.col(c).sum() for c in sums),
        )
    )


def _full_fills(orders: pl.DataFrame, fills: pl.DataFrame) -> pl.DataFrame:
    """Per filled order (oix): the seq and ts of the fill that completed it.

    Usually its last fill; where fills went on after the qty was reached (an overfill),
    the running sum finds the first fill that reached it."""
    full = orders.filter(pl.col("filled_qty") >= pl.col("qty_final"))
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
    got = _collect(info)
    end = got["end"].row(0, named=True)
    last_seq, last_ts = end["last_seq"], end["last_ts"]
    # (instrument, venue) numbered once, so as-of lookups group on an integer.
    pairs = (
        got["quotes"]
        .select("instrument", "venue")
        .unique()
        .sort("instrument", "venue")
        .with_row_index("qkey")
        .with_columns(pl.col("qkey").cast(pl.Int64))
    )
    quotes = got["quotes"].join(
        pairs, on=["instrument", "venue"], how="left", maintain_order="left"
    )
    refused = (
        got["alerts"]
        .filter(pl.col("code").is_in(_NOT_BOOKED) & pl.col("cause").is_not_null())
        .select(pl.col("cause").alias("seq"))
    )

    def booked(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(refused, on="seq", how="anti") if refused.height else frame

    signals = (
        got["signals"]
        .unique(subset=["signal_id"], keep="first", maintain_order=True)
        .select("signal_id", pl.coalesce("ts_event", "ts_recv").alias("ts_signal"), "signal_price")
    )
    orders = (
        got["submits"]
        .unique(subset=["order_id"], keep="first", maintain_order=True)
        .with_row_index("oix", offset=oix0)
        .with_columns(
            pl.col("oix").cast(pl.Int64),
            pl.col("ts_recv").alias("ts_sent"),
            pl.when(pl.col("side") == "BUY").then(1.0).otherwise(-1.0).alias("sign"),
            pl.col("price").alias("limit_price"),
        )
        .drop("ts_recv", "price")
        .join(_instrument_frame(info), on="instrument", how="left", maintain_order="left")
        .with_columns(
            pl.col("tick_size").fill_null(1),
            pl.col("lot_size").fill_null(1),
            pl.col("multiplier").fill_null(1),
            pl.col("scale").fill_null(1.0),
            pl.col("currency").fill_null("?"),
        )
        .join(signals, on="signal_id", how="left", maintain_order="left")
        .join(pairs, on=["instrument", "venue"], how="left", maintain_order="left")
    )
    keyed = orders.with_columns(pl.col("venue").alias("_venue"))
    events = (
        _attach(booked(got["events"]), keyed, info.run_id, ("oix", "_venue"))
        .filter(pl.col("venue") == pl.col("_venue"))
        .drop("_venue")
    )
    orders = _order_events(orders, events, oix0).with_columns(
        pl.coalesce("replaced_qty", "qty").alias("qty_final"),
        pl.col("replaces").fill_null(0).cast(pl.Int64),
    )
    orders = _arrival(orders, quotes)
    fill_rows = _fill_table(booked(got["fills"]), orders, quotes, last_ts, info.run_id)
    orders = _put(orders, _per_order_fills(fill_rows), oix0)
    orders = orders.with_columns(
        pl.col("filled_qty").fill_null(0),
        pl.col("fees").fill_null(0),
        pl.col("n_fills").fill_null(0),
    )
    orders = _put(orders, _full_fills(orders, fill_rows), oix0)
    orders = _finish(orders, quotes, last_seq, time_bucket_ns, oix0)
    orders = orders.with_columns(pl.lit(info.run_id).alias("run_id"))
    fill_rows = fill_rows.with_columns(pl.lit(info.run_id).alias("run_id"))
    n_rejects = got["signal_rejects"].height
    return (
        orders,
        fill_rows,
        pl.DataFrame(
            {
                "signal_rejects": [n_rejects],
                "first_ts": [end["first_ts"]],
                "last_ts": [last_ts],
            },
            schema={"signal_rejects": pl.Int64, "first_ts": pl.Int64, "last_ts": pl.Int64},
        ),
    )


def _finish(
    orders: pl.DataFrame,
    quotes: pl.DataFrame,
    last_seq: int | None,
    time_bucket_ns: int,
    oix0: int,
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
    left = (
        o.filter(open_qty > 0)
        .select(
            "oix",
            "qkey",
            pl.coalesce("_seq_done", pl.lit(last_seq if last_seq is not None else 0, pl.Int64))
            .cast(pl.Int64)
            .alias("_seq_end"),
        )
        .sort("_seq_end")
    )
    ends = left.join_asof(
        quotes.select(
            pl.col("seq").alias("_seq_end"), "qkey", _mid("bid_price", "ask_price").alias("end_mid")
        ),
        on="_seq_end",
        by="qkey",
        strategy="backward",
        check_sortedness=False,
    ).select("oix", "end_mid")
    o = _put(o, ends, oix0)

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
