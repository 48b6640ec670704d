"""Fit the fill model (`engine.fillmodel`) from TCA tables; write and load it as Parquet.

Invariants:
- The cells are keyed exactly as the router keys its lookups: venue, instrument, side,
  order type, `distance_bucket(touch_distance_ticks(...))` against the order's venue
  quote at submit time (the instrument's tick from the manifest), `size_bucket(qty, lot)`
  and `tod_bucket(ts_sent)`, computed by the vectorised twins in `analytics.buckets`.
- An order counts as filled when a fill of it arrives within `horizon_ns` of its
  `SubmitOrder`; its slippage is the VWAP of those fills against the arrival mid (bps,
  positive = worse), its fill ratio their qty over the order's qty, its latency the time
  from submit to acknowledgement.
- Every level of `Key.levels()` is fitted, coarsest first. A cell's `p_fill` is the Beta
  posterior mean `smoothed(fills, n, parent_p, prior_strength)` with the parent level's
  smoothed rate (the coarsest level's parent is the pooled rate); slippage and fill ratio
  are shrunk the same way toward the parent's, with their own counts; latency is the
  median of the cell, or the parent's when the cell saw no acknowledgement.
- The file has one row per cell, columns `CELL_COLUMNS` in that order, sorted by level
  and key, and its Parquet metadata `tape.fill_model` (JSON) says what it was fitted on:
  run ids, journals, n_orders, horizon_ns, prior_strength, buckets_version.
  `load_fill_model` refuses a file of another
  buckets_version, with missing or mistyped columns, or with a row that does not fit
  its level, and returns the file's sha256 with the model.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.fillmodel import ANY, BUCKETS_VERSION, Cell, FillModel, Key

if TYPE_CHECKING:
    from analytics.tca import Tca

__all__ = [
    "CELL_COLUMNS",
    "DEFAULT_HORIZON_NS",
    "DEFAULT_PRIOR_STRENGTH",
    "FillModelError",
    "FitInfo",
    "fit_cells",
    "fit_fill_model",
    "load_fill_model",
    "order_outcomes",
    "parse_duration",
    "write_fill_model",
]

DEFAULT_HORIZON_NS = 10_000_000_000
DEFAULT_PRIOR_STRENGTH = 10.0
METADATA_KEY = b"tape.fill_model"
FORMAT = 1
KEY_FIELDS = ("venue", "instrument", "side", "order_type", "distance", "size", "tod")
_STR_FIELDS = ("venue", "instrument", "side", "order_type")
# The key fields each level splits on, finest first (as Key.levels()).
LEVEL_FIELDS: tuple[tuple[str, ...], ...] = (
    KEY_FIELDS,
    KEY_FIELDS[:6],
    KEY_FIELDS[:5],
    KEY_FIELDS[:3],
    KEY_FIELDS[:1],
)
CELL_SCHEMA = pa.schema(
    [
        ("level", pa.int64()),
        ("venue", pa.string()),
        ("instrument", pa.string()),
        ("side", pa.string()),
        ("order_type", pa.string()),
        ("distance", pa.int64()),
        ("size", pa.int64()),
        ("tod", pa.int64()),
        ("n", pa.int64()),
        ("fills", pa.int64()),
        ("p_fill", pa.float64()),
        ("slippage_bps", pa.float64()),
        ("latency_ns", pa.int64()),
        ("fill_ratio", pa.float64()),
    ]
)
CELL_COLUMNS: tuple[str, ...] = tuple(CELL_SCHEMA.names)
_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9}
_UNITS["h"] = 3_600 * 10**9


class FillModelError(ValueError):
    """A fill model that cannot be fitted, written or loaded as asked."""


class FitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What a model was fitted on (stored in the file's metadata)."""

    format: int = FORMAT
    buckets_version: int = BUCKETS_VERSION
    horizon_ns: int
    prior_strength: float
    n_orders: int
    fitted_on: list[str]  # run ids
    journals: list[str]  # run directories


def parse_duration(text: str, what: str = "--horizon") -> int:
    """Parse '10s', '500ms', '2m', '1h', '250us' or '5000ns' into nanoseconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h)\s*", text)
    if m is None:
        raise FillModelError(
            f"{what} {text!r}: expected a duration such as 10s, 500ms, 2m, 1h, 250us, 5000ns"
        )
    value = float(m.group(1)) * _UNITS[m.group(2)]
    ns = round(value)
    if ns <= 0:
        raise FillModelError(f"{what} {text!r}: expected a duration > 0")
    return ns


def order_outcomes(tca: Tca, horizon_ns: int) -> pl.DataFrame:
    """Return each order's key fields and what happened within `horizon_ns` of sending it."""
    if horizon_ns <= 0:
        raise FillModelError(f"horizon_ns: expected > 0, got {horizon_ns}")
    f = tca.fills
    in_time = f.filter(pl.col("ts_recv") - pl.col("ts_sent") <= horizon_ns)
    per = in_time.group_by("oix").agg(
        pl.col("qty").sum().alias("h_qty"),
        (pl.col("price") * pl.col("qty")).sum().alias("h_pq"),
    )
    o = tca.orders.join(per, on="oix", how="left")
    h_qty = pl.col("h_qty").fill_null(0)
    vwap = pl.col("h_pq").cast(pl.Float64) / h_qty.cast(pl.Float64)
    mid = pl.col("arrival_mid")
    return o.select(
        pl.col("venue"),
        pl.col("instrument"),
        pl.col("side"),
        pl.col("order_type"),
        pl.col("distance_bucket").alias("distance"),
        pl.col("size_bucket").alias("size"),
        pl.col("tod"),
        (h_qty > 0).alias("filled"),
        pl.when(h_qty > 0)
        .then(pl.col("sign") * (vwap - mid) / mid * 1e4)
        .otherwise(None)
        .alias("slip"),
        pl.when(h_qty > 0)
        .then(h_qty.cast(pl.Float64) / pl.col("qty").cast(pl.Float64))
        .otherwise(None)
        .alias("ratio"),
        pl.col("lat_sent_to_ack_ns").alias("latency"),
    )


def fit_cells(outcomes: pl.DataFrame, prior_strength: float) -> pl.DataFrame:
    """Fit every level's cells from `order_outcomes`, smoothing each toward its parent."""
    if not prior_strength >= 0:
        raise FillModelError(f"prior_strength: expected >= 0, got {prior_strength}")
    k = float(prior_strength)
    o = outcomes.with_columns(pl.col("slip").fill_nan(None))
    total = o.height
    pooled = o.select(
        pl.col("filled").sum().alias("fills"),
        pl.col("slip").mean().alias("slip"),
        pl.col("ratio").mean().alias("ratio"),
        pl.col("latency").median().alias("latency"),
    ).row(0, named=True)
    parent = pl.DataFrame(
        {
            "_p": [pooled["fills"] / total if total else 0.0],
            "_slip": [pooled["slip"] or 0.0],
            "_ratio": [pooled["ratio"] if pooled["ratio"] is not None else 1.0],
            "_lat": [float(pooled["latency"] or 0.0)],
        }
    )
    parent_keys: tuple[str, ...] = ()
    levels: list[pl.DataFrame] = []
    for level in range(len(LEVEL_FIELDS) - 1, -1, -1):
        keys = LEVEL_FIELDS[level]
        cells = o.group_by(list(keys)).agg(
            pl.len().cast(pl.Int64).alias("n"),
            pl.col("filled").sum().cast(pl.Int64).alias("fills"),
            pl.col("slip").sum().alias("_slip_sum"),
            pl.col("slip").count().cast(pl.Int64).alias("_slip_n"),
            pl.col("ratio").sum().alias("_ratio_sum"),
            pl.col("ratio").count().cast(pl.Int64).alias("_ratio_n"),
            pl.col("latency").median().alias("_lat_cell"),
        )
        cells = (
            cells.join(parent, on=list(parent_keys), how="left")
            if parent_keys
            else cells.join(parent, how="cross")
        )
        cells = cells.with_columns(
            ((pl.col("fills") + k * pl.col("_p")) / (pl.col("n") + k)).alias("p_fill"),
            ((pl.col("_slip_sum") + k * pl.col("_slip")) / (pl.col("_slip_n") + k)).alias(
                "slippage_bps"
            ),
            ((pl.col("_ratio_sum") + k * pl.col("_ratio")) / (pl.col("_ratio_n") + k)).alias(
                "fill_ratio"
            ),
            pl.coalesce(pl.col("_lat_cell"), pl.col("_lat")).alias("_lat_out"),
        )
        # A cell with neither data nor prior weight for a rate keeps its parent's value.
        cells = cells.with_columns(
            pl.col("slippage_bps").fill_nan(None).fill_null(pl.col("_slip")),
            pl.col("fill_ratio").fill_nan(None).fill_null(pl.col("_ratio")),
        )
        levels.append(_as_cells(cells, level, keys))
        parent = cells.select(
            *keys,
            pl.col("p_fill").alias("_p"),
            pl.col("slippage_bps").alias("_slip"),
            pl.col("fill_ratio").alias("_ratio"),
            pl.col("_lat_out").alias("_lat"),
        )
        parent_keys = keys
    out = pl.concat(levels[::-1], how="vertical")
    return out.sort(["level", *KEY_FIELDS])


def _as_cells(cells: pl.DataFrame, level: int, keys: Sequence[str]) -> pl.DataFrame:
    """Shape one level's cells as file rows: fields it does not split on are ANY / '*'."""
    cols: list[pl.Expr] = [pl.lit(level, pl.Int64).alias("level")]
    for name in KEY_FIELDS:
        if name in keys:
            cols.append(pl.col(name).cast(pl.String if name in _STR_FIELDS else pl.Int64))
        elif name in _STR_FIELDS:
            cols.append(pl.lit("*", pl.String).alias(name))
        else:
            cols.append(pl.lit(ANY, pl.Int64).alias(name))
    cols += [
        pl.col("n"),
        pl.col("fills"),
        pl.col("p_fill").cast(pl.Float64),
        pl.col("slippage_bps").cast(pl.Float64),
        pl.col("_lat_out").round(0).cast(pl.Int64).alias("latency_ns"),
        pl.col("fill_ratio").cast(pl.Float64),
    ]
    return cells.select(cols)


def fit_fill_model(
    tca: Tca,
    *,
    horizon_ns: int = DEFAULT_HORIZON_NS,
    prior_strength: float = DEFAULT_PRIOR_STRENGTH,
) -> tuple[pl.DataFrame, FitInfo]:
    """Fit the model's cells from TCA tables; return them and what they were fitted on."""
    if tca.orders.height == 0:
        raise FillModelError("cannot fit a fill model: the journals hold no orders")
    cells = fit_cells(order_outcomes(tca, horizon_ns), prior_strength)
    info = FitInfo(
        horizon_ns=horizon_ns,
        prior_strength=float(prior_strength),
        n_orders=tca.orders.height,
        fitted_on=[r.run_id for r in tca.runs],
        journals=[r.run_dir for r in tca.runs],
    )
    return cells, info


def write_fill_model(path: str | Path, cells: pl.DataFrame, info: FitInfo) -> str:
    """Write the cells and their fit info as Parquet; return the file's sha256 (hex)."""
    table = cells.select(CELL_COLUMNS).to_arrow().cast(CELL_SCHEMA)
    table = table.replace_schema_metadata({METADATA_KEY: msgspec.json.encode(info)})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue()
    target = Path(path)
    try:
        target.write_bytes(data)
    except OSError as exc:
        raise FillModelError(f"{path}: cannot write the fill model ({exc})") from None
    return hashlib.sha256(data).hexdigest()


def _check_row(row: dict[str, Any], i: int, where: str) -> Key:
    level = row["level"]
    if level not in range(len(LEVEL_FIELDS)):
        raise FillModelError(f"{where} row {i}: level must be 0..4, got {level!r}")
    fields = LEVEL_FIELDS[level]
    for name in KEY_FIELDS:
        value = row[name]
        unsplit = "*" if name in _STR_FIELDS else ANY
        if name in fields and (value is None or value == unsplit):
            raise FillModelError(f"{where} row {i}: level {level} needs a {name}, got {value!r}")
        if name not in fields and value != unsplit:
            raise FillModelError(
                f"{where} row {i}: level {level} does not split on {name}, "
                f"expected {unsplit!r}, got {value!r}"
            )
    for name in ("n", "fills", "p_fill", "slippage_bps", "latency_ns", "fill_ratio"):
        if row[name] is None:
            raise FillModelError(f"{where} row {i}: {name} is null")
    if not 0.0 <= row["p_fill"] <= 1.0:
        raise FillModelError(f"{where} row {i}: p_fill must be in [0, 1], got {row['p_fill']}")
    return Key(*(row[name] for name in KEY_FIELDS))


def load_fill_model(path: str | Path) -> tuple[FillModel, str]:
    """Load a fill model file; return the model and the sha256 (hex) of the file's bytes."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FillModelError(f"{where}: cannot read the fill model ({exc})") from None
    digest = hashlib.sha256(data).hexdigest()
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise FillModelError(f"{where}: not a Parquet file ({exc})") from None
    meta = (table.schema.metadata or {}).get(METADATA_KEY)
    if meta is None:
        raise FillModelError(
            f"{where}: no {METADATA_KEY.decode()} metadata (expected a file written by "
            "`tape tca --fit-fill-model`)"
        )
    try:
        info = msgspec.json.decode(meta, type=FitInfo)
    except msgspec.DecodeError as exc:
        raise FillModelError(f"{where}: {METADATA_KEY.decode()} metadata: {exc}") from None
    if info.buckets_version != BUCKETS_VERSION:
        raise FillModelError(
            f"{where}: buckets_version {info.buckets_version}, but this code buckets with "
            f"version {BUCKETS_VERSION}: refit the model from the journals"
        )
    names = table.schema.names
    if tuple(names) != CELL_COLUMNS:
        missing = [c for c in CELL_COLUMNS if c not in names]
        extra = [c for c in names if c not in CELL_COLUMNS]
        detail = "; ".join(
            p
            for p in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unexpected {', '.join(extra)}" if extra else "",
                "columns out of order" if not missing and not extra else "",
            )
            if p
        )
        raise FillModelError(f"{where}: columns must be {', '.join(CELL_COLUMNS)} ({detail})")
    for field in CELL_SCHEMA:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise FillModelError(f"{where}: column {field.name} must be {field.type}, got {got}")
    cells: dict[Key, Cell] = {}
    for i, row in enumerate(table.to_pylist()):
        key = _check_row(row, i, where)
        if key in cells:
            raise FillModelError(f"{where} row {i}: cell {key} appears twice")
        cells[key] = Cell(
            n=row["n"],
            fills=row["fills"],
            p_fill=row["p_fill"],
            slippage_bps=row["slippage_bps"],
            latency_ns=row["latency_ns"],
            fill_ratio=row["fill_ratio"],
        )
    model = FillModel(
        horizon_ns=info.horizon_ns,
        prior_strength=info.prior_strength,
        cells=cells,
        fitted_on=tuple(info.fitted_on),
        n_orders=info.n_orders,
        buckets_version=info.buckets_version,
    )
    return model, digest
