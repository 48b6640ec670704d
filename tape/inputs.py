"""Market data and signal files in, validated, in the run's internal forms.

Schemas: docs/inputs.md. The market loader yields record batches in
`sim.market.MARKET_SCHEMA`; the signal loader returns `engine.messages.Signal`s.

Invariants:
- Prices and sizes in files are decimal values in human units. They become integers in
  instrument units (value x 10^precision of the row's instrument) exactly: decimal and
  string values digit by digit, integers by scaling, floats by scaling and rounding, and a
  value that is not on the precision grid is an error (floats: within 1e-9 relative),
  never rounded away silently.
- Market files stream: they are read in batches of at most `batch_size` rows (Parquet
  row groups, IPC record batches, CSV blocks, sliced), converted with pyarrow.compute and
  numpy, never row by row in Python, and never loaded whole. Memory stays bounded by the
  batch size (plus the optional cache of converted batches, capped in bytes).
- A run never starts on bad input: `MarketInput.check` streams every file once and
  raises one `InputError` listing the problems found (at most `max_errors`); `batches`
  replays the converted batches and raises if a problem shows up after all.
- Every problem names the file, the 1-based data row (for CSV also the line, row + 1 for
  the header), the field and what was expected: `market.csv row 17 (line 18): bid_size
  must be > 0, got -5`.
- Signals files are small: they are read whole, converted with the same decimal and
  timestamp rules, checked row by row, and returned sorted by (ts, file order).
- Nothing here reads a clock, draws random numbers or iterates a set.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.messages import Instrument, OrderType, Side, Signal, SignalIntent, TimeInForce
from sim.market import MARKET_SCHEMA, MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE

__all__ = [
    "BATCH_SIZE",
    "MARKET_FORMATS",
    "MAX_ERRORS",
    "SIGNAL_FIELDS",
    "InputError",
    "MarketInfo",
    "MarketInput",
    "load_signals",
    "market_files",
]

MAX_ERRORS = 20
BATCH_SIZE = 65_536
CACHE_BYTES = 128 * 1024 * 1024

MARKET_FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".arrows": "stream",
    ".csv": "csv",
}
SIGNAL_FORMATS: dict[str, str] = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}

MARKET_COLUMNS = (
    "ts",
    "instrument",
    "venue",
    "type",
    "bid_price",
    "bid_size",
    "ask_price",
    "ask_size",
    "price",
    "qty",
    "aggressor",
    "side",
    "clear",
    "ts_event",
)
_TYPE_NAMES = ("quote", "trade", "book")
_NEEDS = {
    MTYPE_QUOTE: ("bid_price", "bid_size", "ask_price", "ask_size"),
    MTYPE_TRADE: ("price", "qty"),
    MTYPE_BOOK: ("side", "price", "qty"),
}

SIGNAL_FIELDS = (
    "signal_id",
    "strategy",
    "account",
    "instrument",
    "intent",
    "side",
    "qty",
    "target",
    "order_type",
    "price",
    "stop_price",
    "tif",
    "signal_price",
    "venue",
    "ts",
    "ts_event",
    "cancels",
)
_SIGNAL_REQUIRED = ("signal_id", "strategy", "account", "instrument", "ts")
_SIGNAL_SIZES = ("qty", "target")
_SIGNAL_PRICES = ("price", "stop_price", "signal_price")
_NEEDS_PRICE = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_NEEDS_STOP = (OrderType.STOP, OrderType.STOP_LIMIT)

_DECIMAL_RE = (
    r"^(?P<sign>[+-]?)(?P<int>\d*)(?:\.(?P<frac>\d*))?(?:[eE](?P<esign>[+-]?)(?P<exp>\d{1,4}))?$"
)
_NS_RE = r"^[+-]?\d{1,19}$"
_ISO_RE = (
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?"
    r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?$"
)
_MAX_DIGITS = 18  # |value| < 10^18 instrument units always fits int64
_POW10 = np.array([10**k for k in range(_MAX_DIGITS + 1)], dtype=np.int64)
_FLOAT_TOLERANCE = 1e-9
_INT64_LIMIT = 2.0**63

# Reasons a value cannot be converted (codes in `_Converted.why`).
_OK, _SYNTAX, _OFF_GRID, _RANGE = 0, 1, 2, 3


class InputError(Exception):
    """Input files a run must not start on; `problems` lists what is wrong, one per line."""

    def __init__(self, problems: Sequence[str], *, stopped: bool = False) -> None:
        self.problems = list(problems)
        self.stopped = stopped  # more problems may follow: the check stopped at the limit
        super().__init__(self.describe())

    def describe(self) -> str:
        """Say every problem, one per line, after a headline."""
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in the input"
        if self.stopped:
            head += f" (stopped after the first {n})"
        return "\n".join([head + ":", *(f"  {p}" for p in self.problems)])


class _Problems:
    """Collect problems up to a limit."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max_errors must be >= 1, got {limit}")
        self.limit = limit
        self.items: list[str] = []
        self.stopped = False

    @property
    def room(self) -> int:
        return self.limit - len(self.items)

    @property
    def full(self) -> bool:
        return self.room <= 0

    def add(self, text: str) -> None:
        if self.full:
            self.stopped = True
            return
        self.items.append(text)

    def error(self) -> InputError:
        return InputError(self.items, stopped=self.stopped)


class _RowErrors:
    """Problems found in one batch, by row: at most `room` are kept, the earliest rows."""

    def __init__(self, room: int, where: Callable[[int], str]) -> None:
        self.room = room
        self.where = where
        self.found: list[tuple[int, int, str]] = []  # (row, order found, text)
        self.more = False

    def rows(self, mask: np.ndarray) -> list[int]:
        """Return the first rows of a mask worth reporting (the rest are counted as more)."""
        at = np.flatnonzero(mask)
        if len(at) > self.room:
            self.more = True
        return [int(r) for r in at[: self.room]]

    def add(self, row: int, text: str) -> None:
        self.found.append((row, len(self.found), text))

    def flag(self, mask: np.ndarray, text: Callable[[int], str]) -> None:
        """Report every row of a mask with the message `text(row)`."""
        for r in self.rows(mask):
            self.add(r, text(r))

    def flush(self, problems: _Problems) -> bool:
        """Hand the earliest problems to `problems`; say whether there were any."""
        self.found.sort()
        for row, _, text in self.found:
            problems.add(f"{self.where(row)}: {text}")
        if self.more or len(self.found) > self.room:
            problems.stopped = True
        return bool(self.found)


# --- values -----------------------------------------------------------------------------


def _show(value: Any, csv: bool) -> str:
    """Show a value as the file has it: numbers bare, other text quoted, null as such."""
    if value is None:
        return "empty" if csv else "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = value.strip()
        if text and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
            return text
        return repr(value)
    return str(value)


def _np_bool(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Turn a boolean array into numpy, null as False."""
    filled = pc.fill_null(array, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=bool)


def _np_int(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Turn an integer array into int64 numpy, null as 0."""
    filled = pc.fill_null(pc.cast(array, pa.int64()), 0)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


def _is_stringlike(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))
    )


def _strings(array: pa.Array) -> pa.Array:
    """Return a string-like array as plain utf8."""
    return array if pa.types.is_string(array.type) else pc.cast(array, pa.string())


class _Converted(NamedTuple):
    """A column converted to int64: `values` valid where neither `null` nor `why` != 0."""

    values: np.ndarray
    null: np.ndarray
    why: np.ndarray  # int8: _OK, _SYNTAX, _OFF_GRID, _RANGE


def _decimal_type_problem(t: pa.DataType) -> str | None:
    if (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or _is_stringlike(t)
        or pa.types.is_null(t)
    ):
        return None
    return f"has type {t}: expected decimal numbers (decimal, string, integer or float)"


def _units(array: pa.Array, places: np.ndarray) -> _Converted:
    """Convert decimal values to integers x 10^places (per row; places < 0: skip the row)."""
    n = len(array)
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    skip = places < 0
    p = np.clip(places, 0, _MAX_DIGITS)
    why = np.zeros(n, dtype=np.int8)
    t = array.type
    if pa.types.is_null(t):
        return _Converted(np.zeros(n, dtype=np.int64), null, why)
    if pa.types.is_integer(t):
        v = _np_int(array)
        limit = np.iinfo(np.int64).max // _POW10[p]
        why[np.abs(v) > limit] = _RANGE
        values = np.where(why == 0, v, 0) * _POW10[p]
    elif pa.types.is_floating(t):
        f = np.asarray(pc.fill_null(pc.cast(array, pa.float64()), 0.0).to_numpy(), dtype=float)
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = f * np.power(10.0, p)
            rounded = np.rint(scaled)
            finite = np.isfinite(scaled)
            why[~finite | (np.abs(rounded) >= _INT64_LIMIT)] = _RANGE
            off = np.abs(scaled - rounded) > _FLOAT_TOLERANCE * np.maximum(np.abs(scaled), 1.0)
        why[(why == 0) & off] = _OFF_GRID
        values = np.where(why == 0, rounded, 0).astype(np.int64)
    else:
        fast = _fast_units(array, places, null)
        if fast is not None:
            values = fast
        else:
            values, why = _string_units(_strings(pc.cast(array, pa.string())), p)
    why[null | skip] = _OK
    values = np.where((why == 0) & ~null & ~skip, values, 0)
    return _Converted(values, null, why)


def _fast_units(array: pa.Array, places: np.ndarray, null: np.ndarray) -> np.ndarray | None:
    """Convert decimals or decimal strings with Arrow's exact cast to decimal128(38, p),
    one precision at a time; None when any row needs the careful path (a value off the
    grid, out of range or not a number), which then names the rows."""
    values = np.zeros(len(array), dtype=np.int64)
    active = (places >= 0) & ~null
    for prec in np.unique(places[active]).tolist():
        rows = active & (places == prec)
        part = array if (rows | null).all() else pc.filter(array, pa.array(rows))
        try:
            dec = pc.cast(part, pa.decimal128(38, prec))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        start = 2 * dec.offset
        words = np.frombuffer(dec.buffers()[1], dtype=np.int64)[start : start + 2 * len(dec)]
        low, high = words[0::2], words[1::2]
        ok = (high == (low >> 63)) & (np.abs(low) < _POW10[_MAX_DIGITS])
        valid = _np_bool(dec.is_valid())
        if not ok[valid].all():
            return None
        if len(dec) == len(array):
            values = np.where(rows, low, values)
        else:
            values[rows] = low
    return values


def _string_units(array: pa.Array, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parse decimal strings exactly (sign, digits, fraction, exponent) into units."""
    n = len(array)
    why = np.zeros(n, dtype=np.int8)
    parts = pc.extract_regex(pc.utf8_trim_whitespace(array), _DECIMAL_RE)
    matched = _np_bool(parts.is_valid())
    parts = pc.fill_null(parts, {"sign": "", "int": "", "frac": "", "esign": "", "exp": ""})
    int_part, frac = parts.field("int"), parts.field("frac")
    frac_len = _np_int(pc.utf8_length(frac))
    has_digit = (_np_int(pc.utf8_length(int_part)) + frac_len) > 0
    why[~(matched & has_digit)] = _SYNTAX
    exp = parts.field("exp")
    exp_v = _np_int(pc.cast(pc.if_else(pc.equal(exp, ""), "0", exp), pa.int64()))
    exp_v = np.where(_np_bool(pc.equal(parts.field("esign"), "-")), -exp_v, exp_v)
    digits = pc.utf8_ltrim(pc.binary_join_element_wise(int_part, frac, ""), characters="0")
    core = pc.utf8_rtrim(digits, characters="0")
    core_len = _np_int(pc.utf8_length(core))
    zeros = _np_int(pc.utf8_length(digits)) - core_len
    scale = frac_len - exp_v - zeros  # value = core x 10^-scale
    shift = p - scale
    zero = core_len == 0
    why[(why == 0) & ~zero & (shift < 0)] = _OFF_GRID
    why[(why == 0) & ~zero & (core_len + shift > _MAX_DIGITS)] = _RANGE
    usable = (why == 0) & ~zero
    text = pc.if_else(pa.array(usable), core, "0")
    mantissa = _np_int(pc.cast(text, pa.int64()))
    values = np.where(usable, mantissa * _POW10[np.clip(shift, 0, _MAX_DIGITS)], 0)
    negative = _np_bool(pc.equal(parts.field("sign"), "-"))
    return np.where(negative, -values, values), why


def _ts_type_problem(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t) or pa.types.is_timestamp(t) or _is_stringlike(t):
        return None
    if pa.types.is_null(t):
        return None
    return f"has type {t}: expected integer nanoseconds, ISO-8601 strings or timestamps"


def _timestamps(array: pa.Array) -> _Converted:
    """Convert ns integers, ISO-8601 strings (no zone: UTC) or timestamps to ns UTC."""
    n = len(array)
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    why = np.zeros(n, dtype=np.int8)
    t = array.type
    if pa.types.is_null(t):
        return _Converted(np.zeros(n, dtype=np.int64), null, why)
    if pa.types.is_integer(t):
        if pa.types.is_uint64(t):
            big = _np_bool(pc.greater(array, np.iinfo(np.int64).max))
            why[big] = _RANGE
            array = pc.if_else(pa.array(big), 0, array)
        return _Converted(_np_int(array), null, why)
    if pa.types.is_timestamp(t):
        try:
            ns = pc.cast(array, pa.timestamp("ns", t.tz))
        except pa.ArrowInvalid:
            ns = _cast_rows(array, pa.timestamp("ns", t.tz), why)
        return _Converted(_np_int(pc.cast(ns, pa.int64())), null, why)
    text = pc.utf8_trim_whitespace(_strings(array))
    values = np.zeros(n, dtype=np.int64)
    is_ns = _np_bool(pc.match_substring_regex(text, _NS_RE))
    if is_ns.any():
        picked = pc.filter(text, pa.array(is_ns))
        sub_why = np.zeros(len(picked), dtype=np.int8)
        try:
            ints = pc.cast(picked, pa.int64())
        except pa.ArrowInvalid:
            ints = _cast_rows(picked, pa.int64(), sub_why)
        values[is_ns] = _np_int(ints)
        why[is_ns] = np.where(sub_why != 0, _RANGE, 0)
    is_iso = np.zeros(n, dtype=bool)
    has_zone = np.zeros(n, dtype=bool)
    if (~is_ns & ~null).any():
        iso = pc.extract_regex(text, _ISO_RE)
        is_iso = _np_bool(iso.is_valid()) & ~is_ns
        has_zone = _np_bool(pc.not_equal(pc.fill_null(iso.field("zone"), ""), ""))
    for zoned, target in ((True, pa.timestamp("ns", "UTC")), (False, pa.timestamp("ns"))):
        rows = is_iso & (has_zone == zoned)
        if not rows.any():
            continue
        picked = pc.filter(text, pa.array(rows))
        sub_why = np.zeros(len(picked), dtype=np.int8)
        try:
            stamps = pc.cast(picked, target)
        except pa.ArrowInvalid:
            stamps = _cast_rows(picked, target, sub_why)
        values[rows] = _np_int(pc.cast(stamps, pa.int64()))
        why[rows] = sub_why
    why[~(is_ns | is_iso)] = _SYNTAX
    why[null] = _OK
    return _Converted(np.where(why == 0, values, 0), null, why)


def _cast_rows(array: pa.Array, target: pa.DataType, why: np.ndarray) -> pa.Array:
    """Cast value by value (the error path only): failures become null with why = syntax."""
    out = []
    for i in range(len(array)):
        try:
            out.append(pc.cast(array.slice(i, 1), target)[0].as_py())
        except (pa.ArrowInvalid, OverflowError):
            why[i] = _SYNTAX
            out.append(None)
    return pa.array(out, target)


def _enum_codes(array: pa.Array, names: Sequence[str]) -> np.ndarray:
    """Map case-insensitive names to their index; -1 for null or an unknown name."""
    text = pc.utf8_lower(pc.utf8_trim_whitespace(_strings(array)))
    codes = pc.index_in(text, value_set=pa.array(list(names), pa.string()))
    return np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _bool_values(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Return (values, bad) of a boolean column given as bool, 0/1 or true/false text."""
    t = array.type
    n = len(array)
    if pa.types.is_boolean(t) or pa.types.is_null(t):
        return _np_bool(pc.cast(array, pa.bool_())), np.zeros(n, dtype=bool)
    if pa.types.is_integer(t):
        v = _np_int(array)
        return v == 1, ~np.isin(v, (0, 1))
    codes = _enum_codes(array, ("false", "true", "0", "1"))
    null = np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    return (codes == 1) | (codes == 3), (codes < 0) & ~null


# --- market files -----------------------------------------------------------------------


class _Source(NamedTuple):
    path: Path
    fmt: str  # a value of MARKET_FORMATS

    @property
    def name(self) -> str:
        return str(self.path)


def market_files(spec: str | Path) -> list[Path]:
    """Resolve a market argument: a file, a directory (its market files by name) or a glob."""
    return [s.path for s in _market_sources(spec)]


def _market_sources(spec: str | Path) -> list[_Source]:
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in MARKET_FORMATS)
        if not found:
            kinds = ", ".join(MARKET_FORMATS)
            raise InputError([f"{text}: directory has no market files (expected {kinds})"])
        paths = found
    elif path.is_file():
        paths = [path]
    elif glob.has_magic(text):
        paths = [Path(p) for p in sorted(glob.glob(text)) if Path(p).is_file()]
        if not paths:
            raise InputError([f"{text}: no file matches this pattern"])
    else:
        raise InputError([f"{text}: no such file or directory"])
    sources = []
    problems = []
    for p in paths:
        fmt = MARKET_FORMATS.get(p.suffix.lower())
        if fmt is None:
            kinds = ", ".join(MARKET_FORMATS)
            problems.append(f"{p}: unknown market file type {p.suffix!r}: expected one of {kinds}")
        else:
            sources.append(_Source(p, fmt))
    if problems:
        raise InputError(problems)
    return sources


def _file_columns(src: _Source) -> list[str]:
    """Return the column names of a market file."""
    if src.fmt == "parquet":
        return list(pq.ParquetFile(src.path).schema_arrow.names)
    if src.fmt == "ipc":
        with pa.memory_map(str(src.path)) as f:
            return list(pa.ipc.open_file(f).schema.names)
    if src.fmt == "stream":
        with pa.memory_map(str(src.path)) as f:
            return list(pa.ipc.open_stream(f).schema.names)
    with pacsv.open_csv(src.path, read_options=pacsv.ReadOptions(block_size=1 << 16)) as r:
        return list(r.schema.names)


def _file_rows(src: _Source) -> int | None:
    """Return the row count of a file when its metadata says it, else None."""
    if src.fmt == "parquet":
        return int(pq.ParquetFile(src.path).metadata.num_rows)
    if src.fmt == "ipc":
        with pa.memory_map(str(src.path)) as f:
            return int(pa.ipc.open_file(f).count_rows())
    return None


def _sliced(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, size):
            yield batch.slice(start, size)


def _file_batches(src: _Source, columns: list[str], size: int) -> Iterator[pa.RecordBatch]:
    """Stream the given columns of a market file in batches of at most `size` rows."""
    if src.fmt == "parquet":
        pf = pq.ParquetFile(src.path)
        yield from pf.iter_batches(batch_size=size, columns=columns, use_threads=False)
    elif src.fmt == "ipc":
        with pa.memory_map(str(src.path)) as f:
            reader = pa.ipc.open_file(f)
            gen = (reader.get_batch(i).select(columns) for i in range(reader.num_record_batches))
            yield from _sliced(gen, size)
    elif src.fmt == "stream":
        with pa.memory_map(str(src.path)) as f:
            yield from _sliced((b.select(columns) for b in pa.ipc.open_stream(f)), size)
    else:
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns},
            include_columns=columns,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        )
        read = pacsv.ReadOptions(block_size=max(1 << 16, size * 64), use_threads=False)
        with pacsv.open_csv(src.path, read_options=read, convert_options=convert) as reader:
            yield from _sliced(iter(reader), size)


class MarketInfo(NamedTuple):
    """What a check of the market files found."""

    rows: int
    files: int
    first_ts: int | None
    last_ts: int | None


class MarketInput:
    """Market files (a file, a directory or a glob), checked, then streamed as MARKET_SCHEMA
    batches with integer prices and sizes."""

    def __init__(
        self,
        spec: str | Path,
        instruments: Sequence[Instrument],
        *,
        batch_size: int = BATCH_SIZE,
        max_errors: int = MAX_ERRORS,
        cache_bytes: int = CACHE_BYTES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sources = _market_sources(spec)
        self.instruments = {i.instrument: i for i in instruments}
        self.batch_size = batch_size
        self.max_errors = max_errors
        self.cache_bytes = cache_bytes
        self.info: MarketInfo | None = None
        self._cache: list[pa.RecordBatch] | None = None
        self._first_ts: int | None = None
        self._last_ts: int | None = None

    @property
    def paths(self) -> list[Path]:
        """Return the files, in the order they are read."""
        return [s.path for s in self.sources]

    def rows_hint(self) -> int | None:
        """Return the total row count from file metadata, None if a file does not say it."""
        if self.info is not None:
            return self.info.rows
        total = 0
        for src in self.sources:
            try:
                rows = _file_rows(src)
            except (OSError, pa.ArrowException):
                return None
            if rows is None:
                return None
            total += rows
        return total

    def check(self, progress: Callable[[int], None] | None = None) -> MarketInfo:
        """Read every file once and check every row; raise InputError listing the problems."""
        problems = _Problems(self.max_errors)
        cache: list[pa.RecordBatch] | None = []
        cached = 0
        rows = 0
        for batch in self._convert(problems):
            rows += batch.num_rows
            if cache is not None and not problems.items:
                cached += batch.nbytes
                if cached <= self.cache_bytes:
                    cache.append(batch)
                else:
                    cache = None
            if progress is not None:
                progress(rows)
        if problems.items:
            raise problems.error()
        self._cache = cache
        self.info = MarketInfo(rows, len(self.sources), self._first_ts, self._last_ts)
        return self.info

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the market as MARKET_SCHEMA batches; raise InputError on a bad row."""
        if self._cache is not None:
            yield from self._cache
            return
        problems = _Problems(self.max_errors)
        for batch in self._convert(problems):
            if problems.items:
                raise problems.error()
            yield batch
        if problems.items:
            raise problems.error()

    # --- conversion ----------------------------------------------------------------------

    def _convert(self, problems: _Problems) -> Iterator[pa.RecordBatch]:
        """Convert every file in order; problems go to `problems`, batches are yielded."""
        self._first_ts = self._last_ts = None
        for src in self.sources:
            if problems.full:
                problems.stopped = True
                return
            try:
                present = _file_columns(src)
            except (OSError, pa.ArrowException) as exc:
                problems.add(f"{src.name}: cannot read as {src.fmt}: {exc}")
                continue
            converter = _MarketFile(src, present, self.instruments, problems, self._last_ts)
            if not converter.usable:
                continue
            columns = [c for c in MARKET_COLUMNS if c in present]
            try:
                for raw in _file_batches(src, columns, self.batch_size):
                    out = converter.convert(raw)
                    if out is not None:
                        if self._first_ts is None and out.num_rows:
                            self._first_ts = int(out.column("ts")[0].as_py())
                        yield out
                    if problems.full:
                        problems.stopped = True
                        return
            except (OSError, pa.ArrowException) as exc:
                problems.add(
                    f"{src.name}: cannot read {src.fmt} data after row {converter.rows}: {exc}"
                )
            self._last_ts = converter.last_ts


def _where(src: _Source, row: int) -> str:
    """Name a data row (1-based) of a file; CSV also gets its line, after the header."""
    if src.fmt == "csv":
        return f"{src.name} row {row} (line {row + 1})"
    return f"{src.name} row {row}"


class _MarketFile:
    """Convert and check the batches of one market file, in order."""

    def __init__(
        self,
        src: _Source,
        present: list[str],
        instruments: Mapping[str, Instrument],
        problems: _Problems,
        last_ts: int | None,
    ) -> None:
        self.src = src
        self.present = set(present)
        self.instruments = instruments
        self.problems = problems
        self.last_ts = last_ts
        self.rows = 0
        self.csv = src.fmt == "csv"
        self.reported_missing: set[str] = set()
        self.usable = True
        missing = [c for c in ("ts", "instrument", "venue") if c not in self.present]
        if "type" not in self.present:
            missing += [c for c in _NEEDS[MTYPE_QUOTE] if c not in self.present]
        for column in missing:
            why = "required" if column in ("ts", "instrument", "venue") else ""
            if not why:
                why = "required for quote rows (the file has no type column: every row is a quote)"
            problems.add(f"{src.name}: column {column} is missing: {why}")
            self.usable = False

    def _column_problem(self, batch: pa.RecordBatch, name: str) -> bool:
        """Report once a column whose type cannot hold the field; say whether it is bad."""
        t = batch.schema.field(name).type
        if name in ("ts", "ts_event"):
            problem = _ts_type_problem(t)
        elif name in ("instrument", "venue", "type", "aggressor", "side"):
            ok = _is_stringlike(t) or pa.types.is_null(t)
            problem = None if ok else f"has type {t}: expected strings"
        elif name == "clear":
            ok = pa.types.is_boolean(t) or pa.types.is_integer(t) or _is_stringlike(t)
            problem = None if ok or pa.types.is_null(t) else f"has type {t}: expected booleans"
        else:
            problem = _decimal_type_problem(t)
        if problem is None:
            return False
        if name not in self.reported_missing:
            self.reported_missing.add(name)
            self.problems.add(f"{self.src.name}: column {name} {problem}")
        return True

    def convert(self, batch: pa.RecordBatch) -> pa.RecordBatch | None:
        """Check and convert one batch; return it in MARKET_SCHEMA, None if it had problems."""
        n = batch.num_rows
        base = self.rows
        self.rows += n
        if n == 0:
            return None
        if any(self._column_problem(batch, name) for name in batch.schema.names):
            return None
        errors = _RowErrors(self.problems.room, lambda r: _where(self.src, base + r + 1))
        col = batch.column
        csv = self.csv

        def got(name: str, r: int) -> str:
            return _show(col(name)[r].as_py(), csv)

        def flag_null(name: str, mask: np.ndarray, context: str = "") -> None:
            errors.flag(mask, lambda r: f"{name} must be set{context}, got {got(name, r)}")

        # ts, instrument, venue
        ts = _timestamps(col("ts"))
        flag_null("ts", ts.null)
        errors.flag(
            ts.why != 0,
            lambda r: (
                f"ts must be integer nanoseconds since the epoch or an ISO-8601 "
                f"timestamp, got {got('ts', r)}"
            ),
        )
        inst_col = _strings(col("instrument"))
        venue_col = _strings(col("venue"))
        flag_null("instrument", _np_bool(inst_col.is_null()))
        flag_null("venue", _np_bool(venue_col.is_null()))
        price_p, size_p, known = self._reference(inst_col, venue_col, errors)

        # row types
        if "type" in self.present:
            mtype = _enum_codes(col("type"), _TYPE_NAMES)
            errors.flag(
                mtype < 0,
                lambda r: f"type must be one of {', '.join(_TYPE_NAMES)}, got {got('type', r)}",
            )
        else:
            mtype = np.zeros(n, dtype=np.int64)
        present = {}
        for code in (MTYPE_QUOTE, MTYPE_TRADE, MTYPE_BOOK):
            rows = mtype == code
            present[code] = rows.any() and self._has_columns(code, rows, base)
        is_q = (mtype == MTYPE_QUOTE) & known & present[MTYPE_QUOTE]
        is_t = (mtype == MTYPE_TRADE) & known & present[MTYPE_TRADE]
        is_b = (mtype == MTYPE_BOOK) & known & present[MTYPE_BOOK]
        skip_p = np.where(known, price_p, -1)
        skip_s = np.where(known, size_p, -1)

        def units(name: str, rows: np.ndarray, size: bool) -> _Converted:
            if name not in self.present:
                z = np.zeros(n, dtype=np.int64)
                return _Converted(z, np.ones(n, dtype=bool), z.astype(np.int8))
            conv = _units(col(name), np.where(rows, skip_s if size else skip_p, -1))
            places = skip_s if size else skip_p
            errors.flag(
                rows & (conv.why == _SYNTAX),
                lambda r: f"{name} must be a decimal number, got {got(name, r)}",
            )

            def off_grid(r: int) -> str:
                p = int(places[r])
                which = "size" if size else "price"
                return (
                    f"{name} must be a multiple of {Decimal(1).scaleb(-p):f} ({which}_precision "
                    f"{p} of {inst_col[r].as_py()}), got {got(name, r)}"
                )

            errors.flag(rows & (conv.why == _OFF_GRID), off_grid)
            errors.flag(
                rows & (conv.why == _RANGE),
                lambda r: (
                    f"{name} must be below 10^{_MAX_DIGITS} instrument units "
                    f"(precision {int(places[r])}), got {got(name, r)}"
                ),
            )
            return conv

        out: dict[str, Any] = {}
        # quotes: a side is a price and a size > 0, or neither (a missing side)
        quote_cols: dict[str, np.ndarray] = {}
        quote_null: dict[str, np.ndarray] = {}
        if is_q.any():
            sides = {}
            for side in ("bid", "ask"):
                p = units(f"{side}_price", is_q, size=False)
                s = units(f"{side}_size", is_q, size=True)
                p_ok = ~p.null & (p.why == 0)
                s_ok = ~s.null & (s.why == 0)
                name_p, name_s = f"{side}_price", f"{side}_size"
                flag_null(name_s, is_q & ~p.null & s.null, f" when {name_p} is")
                errors.flag(
                    is_q & p.null & ~s.null,
                    lambda r, a=name_s, b=name_p: f"{a} must be empty when {b} is, got {got(a, r)}",
                )
                errors.flag(
                    is_q & s_ok & ~p.null & (s.values <= 0),
                    lambda r, a=name_s: f"{a} must be > 0, got {got(a, r)}",
                )
                sides[side] = (p, s, p_ok)
                quote_cols[name_p] = p.values
                quote_null[name_p] = p.null
                quote_cols[name_s] = np.where(s.null, 0, s.values)
            (bp, _, bp_ok), (ap, _, ap_ok) = sides["bid"], sides["ask"]
            errors.flag(
                is_q & bp_ok & ap_ok & (bp.values >= ap.values),
                lambda r: (
                    f"bid_price must be < ask_price (a venue's quote is never locked or "
                    f"crossed), got bid_price {got('bid_price', r)} >= ask_price "
                    f"{got('ask_price', r)}"
                ),
            )
        # trades and book levels share price and qty
        price = qty = None
        if is_t.any() or is_b.any():
            rows = is_t | is_b
            price = units("price", rows, size=False)
            qty = units("qty", rows, size=True)
            flag_null("price", rows & price.null)
            flag_null("qty", rows & qty.null)
            q_ok = ~qty.null & (qty.why == 0)
            errors.flag(
                is_t & q_ok & (qty.values <= 0), lambda r: f"qty must be > 0, got {got('qty', r)}"
            )
            errors.flag(
                is_b & q_ok & (qty.values < 0),
                lambda r: f"qty must be >= 0 (0 removes the level), got {got('qty', r)}",
            )
        side_code = np.full(n, -1, dtype=np.int64)
        if is_t.any() and "aggressor" in self.present:
            agg = _enum_codes(col("aggressor"), ("buy", "sell"))
            agg_null = _np_bool(col("aggressor").is_null())
            errors.flag(
                is_t & (agg < 0) & ~agg_null,
                lambda r: f"aggressor must be buy, sell or empty, got {got('aggressor', r)}",
            )
            side_code = np.where(is_t, agg, side_code)
        clear = np.zeros(n, dtype=bool)
        if is_b.any():
            book_side = _enum_codes(col("side"), ("bid", "ask"))
            errors.flag(
                is_b & (book_side < 0),
                lambda r: f"side must be bid or ask, got {got('side', r)}",
            )
            side_code = np.where(is_b, book_side, side_code)
            if "clear" in self.present:
                clear, bad = _bool_values(col("clear"))
                errors.flag(
                    is_b & bad,
                    lambda r: f"clear must be true, false or empty, got {got('clear', r)}",
                )
        ts_event = None
        if "ts_event" in self.present:
            ts_event = _timestamps(col("ts_event"))
            errors.flag(
                ts_event.why != 0,
                lambda r: (
                    "ts_event must be integer nanoseconds since the epoch or an "
                    f"ISO-8601 timestamp, got {got('ts_event', r)}"
                ),
            )
        self._check_order(ts, errors, got)
        if errors.flush(self.problems) or self.problems.items:
            return None

        def ints(values: np.ndarray, null: np.ndarray) -> pa.Array:
            return pa.array(values, pa.int64(), mask=null)

        none = np.ones(n, dtype=bool)
        zeros = np.zeros(n, dtype=np.int64)
        for name in ("bid_price", "ask_price"):
            out[name] = ints(quote_cols.get(name, zeros), quote_null.get(name, none) | ~is_q)
        for name in ("bid_size", "ask_size"):
            out[name] = ints(quote_cols.get(name, zeros), ~is_q)
        rows = is_t | is_b
        out["price"] = ints(price.values, ~rows) if price is not None else ints(zeros, none)
        out["qty"] = ints(qty.values, ~rows) if qty is not None else ints(zeros, none)
        # 0 under the nulls: readers such as Polars reject a negative dictionary index even
        # where it is masked, and the journal turns this column into one
        side_values = np.where(side_code < 0, 0, side_code).astype(np.int8)
        out["side"] = pa.array(side_values, pa.int8(), mask=side_code < 0)
        out["clear"] = pa.array(clear, pa.bool_(), mask=~is_b)
        if ts_event is not None:
            out["ts_event"] = ints(ts_event.values, ts_event.null)
        else:
            out["ts_event"] = pa.nulls(n, pa.int64())
        return pa.record_batch(
            {
                "ts": pa.array(ts.values, pa.int64()),
                "mtype": pa.array(mtype.astype(np.int8), pa.int8()),
                "instrument": inst_col,
                "venue": venue_col,
                **out,
            },
            schema=MARKET_SCHEMA,
        )

    def _has_columns(self, code: int, rows: np.ndarray, base: int) -> bool:
        """Say whether the columns a row type needs exist; report a missing one once."""
        ok = True
        first = base + int(np.flatnonzero(rows)[0]) + 1
        for name in _NEEDS[code]:
            if name in self.present:
                continue
            ok = False
            if name not in self.reported_missing:
                self.reported_missing.add(name)
                self.problems.add(
                    f"{self.src.name}: column {name} is missing: required for "
                    f"{_TYPE_NAMES[code]} rows (first at row {first})"
                )
        return ok

    def _reference(
        self, inst_col: pa.Array, venue_col: pa.Array, errors: _RowErrors
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Look up each row's instrument and venue: price and size precision, and whether
        the pair is known (the instrument lists the venue in venue_symbols)."""
        inst = pc.dictionary_encode(inst_col)
        venue = pc.dictionary_encode(venue_col)
        inst_names = inst.dictionary.to_pylist()
        venue_names = venue.dictionary.to_pylist()
        nv = len(venue_names)
        price_tab = np.full(len(inst_names), -1, dtype=np.int64)
        size_tab = np.full(len(inst_names), -1, dtype=np.int64)
        pair_ok = np.zeros(len(inst_names) * nv, dtype=bool)
        for a, name in enumerate(inst_names):
            ref = self.instruments.get(name)
            if ref is None:
                continue
            price_tab[a], size_tab[a] = ref.price_precision, ref.size_precision
            for b, vname in enumerate(venue_names):
                pair_ok[a * nv + b] = vname in ref.venue_symbols
        ia = np.asarray(pc.fill_null(inst.indices, -1).to_numpy(zero_copy_only=False))
        va = np.asarray(pc.fill_null(venue.indices, -1).to_numpy(zero_copy_only=False))
        valid = (ia >= 0) & (va >= 0)
        inst_known = (ia >= 0) & (price_tab[np.maximum(ia, 0)] >= 0)
        known = valid & inst_known & pair_ok[np.maximum(ia, 0) * nv + np.maximum(va, 0)]
        expected = ", ".join(sorted(self.instruments)) or "none configured"
        errors.flag(
            (ia >= 0) & ~inst_known,
            lambda r: f"instrument must be one of {expected}, got {inst_col[r].as_py()!r}",
        )

        def venue_text(r: int) -> str:
            ref = self.instruments[inst_col[r].as_py()]
            listed = ", ".join(ref.venue_symbols) or "none"
            return (
                f"venue must be one listed for {ref.instrument} ({listed}), "
                f"got {venue_col[r].as_py()!r}"
            )

        errors.flag(valid & inst_known & ~known, venue_text)
        rows_p = np.where(ia >= 0, price_tab[np.maximum(ia, 0)], -1)
        rows_s = np.where(ia >= 0, size_tab[np.maximum(ia, 0)], -1)
        return rows_p, rows_s, known

    def _check_order(
        self, ts: _Converted, errors: _RowErrors, got: Callable[[str, int], str]
    ) -> None:
        """Report rows whose ts goes back in time (ts must be non-decreasing)."""
        ok = ~ts.null & (ts.why == 0)
        at = np.flatnonzero(ok)
        if len(at) == 0:
            return
        values = ts.values[at]
        previous = np.empty_like(values)
        previous[1:] = values[:-1]
        first_prev = self.last_ts if self.last_ts is not None else values[0]
        previous[0] = first_prev
        back = np.zeros(len(ts.values), dtype=bool)
        back[at[values < previous]] = True

        def text(r: int) -> str:
            prev = int(previous[np.searchsorted(at, r)])
            raw = got("ts", r)
            shown = raw if raw.lstrip("+-").isdigit() else f"{raw} ({int(ts.values[r])} ns)"
            return f"ts must be >= the previous row's ts {prev} (non-decreasing), got {shown}"

        errors.flag(back, text)
        self.last_ts = int(values[-1])


# --- signals ----------------------------------------------------------------------------


class _SignalRecord(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One JSONL line of a signals file, before conversion (decimals kept exact)."""

    signal_id: str
    strategy: str
    account: str
    instrument: str
    ts: int | str
    ts_event: int | str | None = None
    intent: str | None = None
    side: str | None = None
    qty: Decimal | None = None
    target: Decimal | None = None
    order_type: str | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    tif: str | None = None
    signal_price: Decimal | None = None
    venue: str | None = None
    cancels: str | None = None


_SIGNAL_DECODER = msgspec.json.Decoder(_SignalRecord)
_MSGSPEC_EXPECTED = re.compile(r"Expected `(.+?)`, got `(.+?)` - at `\$\.(\w+)`")
_MSGSPEC_MISSING = re.compile(r"Object missing required field `(\w+)`")
_MSGSPEC_UNKNOWN = re.compile(r"Object contains unknown field `(\w+)`")


def _msgspec_problem(exc: msgspec.MsgspecError) -> str:
    """Say a JSON decoding error in our words: field, expected, got."""
    text = str(exc)
    if m := _MSGSPEC_EXPECTED.fullmatch(text):
        expected = m[1].replace(" | null", " or null")
        return f"{m[3]} must be {expected}, got {m[2]}"
    if m := _MSGSPEC_MISSING.fullmatch(text):
        return f"{m[1]} must be set, got nothing"
    if m := _MSGSPEC_UNKNOWN.fullmatch(text):
        return f"field {m[1]!r} is unknown: expected only {', '.join(SIGNAL_FIELDS)}"
    if isinstance(exc, msgspec.DecodeError):
        return f"expected one JSON object per line: {text}"
    return text


class _SignalTable(NamedTuple):
    table: pa.Table
    where: Callable[[int], str]
    short: Callable[[int], str]  # "row 2 (line 3)" / "line 3": a row named within the file
    csv: bool


def _signal_table(path: Path, fmt: str, problems: _Problems) -> _SignalTable | None:
    """Read a signals file whole into a table of raw columns (JSONL: strings)."""
    name = str(path)
    if fmt == "jsonl":
        records: list[_SignalRecord] = []
        lines: list[int] = []
        with path.open("rb") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(_SIGNAL_DECODER.decode(line))
                    lines.append(number)
                except msgspec.MsgspecError as exc:
                    problems.add(f"{name} line {number}: {_msgspec_problem(exc)}")
        if problems.items:
            return None
        columns: dict[str, list[Any]] = {}
        for field in SIGNAL_FIELDS:
            values = [getattr(rec, field) for rec in records]
            columns[field] = [None if v is None else str(v) for v in values]
        table = pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})
        return _SignalTable(
            table, lambda i: f"{name} line {lines[i]}", lambda i: f"line {lines[i]}", False
        )
    if fmt == "csv":
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in SIGNAL_FIELDS},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            null_values=[""],
        )
        table = pacsv.read_csv(path, convert_options=convert)
        return _SignalTable(
            table,
            lambda i: f"{name} row {i + 1} (line {i + 2})",
            lambda i: f"row {i + 1} (line {i + 2})",
            True,
        )
    table = pq.read_table(path)
    return _SignalTable(table, lambda i: f"{name} row {i + 1}", lambda i: f"row {i + 1}", False)


def load_signals(
    path: str | Path, instruments: Sequence[Instrument], *, max_errors: int = MAX_ERRORS
) -> list[Signal]:
    """Load a signals file (Parquet, CSV or JSONL), check every row, sort by (ts, file order)."""
    path = Path(path)
    name = str(path)
    fmt = SIGNAL_FORMATS.get(path.suffix.lower())
    if fmt is None:
        kinds = ", ".join(SIGNAL_FORMATS)
        raise InputError([f"{name}: unknown signals file type {path.suffix!r}: expected {kinds}"])
    if not path.is_file():
        raise InputError([f"{name}: no such file"])
    problems = _Problems(max_errors)
    try:
        source = _signal_table(path, fmt, problems)
    except (OSError, pa.ArrowException) as exc:
        raise InputError([f"{name}: cannot read as {fmt}: {exc}"]) from None
    if source is None:
        raise problems.error()
    table = source.table
    for column in table.column_names:
        if column not in SIGNAL_FIELDS:
            problems.add(
                f"{name}: column {column!r} is unknown: expected only {', '.join(SIGNAL_FIELDS)}"
            )
    for column in _SIGNAL_REQUIRED:
        if column not in table.column_names:
            problems.add(f"{name}: column {column} is missing: required")
    table = table.combine_chunks()
    cols: dict[str, pa.Array] = {}
    for column in SIGNAL_FIELDS:
        if column not in table.column_names:
            cols[column] = pa.nulls(table.num_rows, pa.string())
            continue
        array = table.column(column).chunk(0) if table.num_rows else pa.array([], pa.string())
        if column in ("ts", "ts_event"):
            problem = _ts_type_problem(array.type)
        elif column in _SIGNAL_SIZES or column in _SIGNAL_PRICES:
            problem = _decimal_type_problem(array.type)
        else:
            ok = _is_stringlike(array.type) or pa.types.is_null(array.type)
            problem = None if ok else f"has type {array.type}: expected strings"
        if problem is not None:
            problems.add(f"{name}: column {column} {problem}")
        cols[column] = array
    if problems.items:
        raise problems.error()
    return _signals(source, cols, {i.instrument: i for i in instruments}, problems)


def _signals(
    source: _SignalTable,
    cols: dict[str, pa.Array],
    instruments: Mapping[str, Instrument],
    problems: _Problems,
) -> list[Signal]:
    """Check and build the signals of a file's columns."""
    check = _SignalCheck(source, cols, instruments, problems.room)
    built = [check.row(r) for r in range(check.n)]
    check.cancels(built)
    if check.errors.flush(problems) or problems.items:
        raise problems.error()
    ts = check.stamps["ts"]
    order = sorted((r for r in range(check.n) if built[r] is not None), key=lambda r: (ts[r], r))
    return [built[r] for r in order]  # type: ignore[misc]


class _SignalCheck:
    """The converted columns of a signals file and the row-by-row checks on them."""

    def __init__(
        self,
        source: _SignalTable,
        cols: dict[str, pa.Array],
        instruments: Mapping[str, Instrument],
        room: int,
    ) -> None:
        self.source = source
        self.cols = cols
        self.instruments = instruments
        self.n = len(cols["signal_id"])
        self.errors = _RowErrors(room, source.where)
        self.first_row: dict[str, int] = {}
        self.given = {f: _np_bool(a.is_valid()) for f, a in cols.items()}
        self.text = {
            f: pc.cast(cols[f], pa.string()).to_pylist()
            for f in SIGNAL_FIELDS
            if f not in (*_SIGNAL_SIZES, *_SIGNAL_PRICES, "ts", "ts_event")
        }
        self.refs = [instruments.get(i) if i is not None else None for i in self.text["instrument"]]
        self.values: dict[str, list[int | None]] = {}
        for field in (*_SIGNAL_SIZES, *_SIGNAL_PRICES):
            self._decimals(field)
        self.stamps: dict[str, list[int | None]] = {}
        for field in ("ts", "ts_event"):
            self._timestamps(field)

    def got(self, field: str, r: int) -> str:
        return _show(self.cols[field][r].as_py(), self.source.csv)

    def _decimals(self, field: str) -> None:
        size = field in _SIGNAL_SIZES
        places = np.array(
            [
                -1 if i is None else (i.size_precision if size else i.price_precision)
                for i in self.refs
            ],
            dtype=np.int64,
        )
        conv = _units(self.cols[field], places)
        flag, got = self.errors.flag, self.got

        def off_grid(r: int) -> str:
            p = int(places[r])
            which = "size" if size else "price"
            return (
                f"{field} must be a multiple of {Decimal(1).scaleb(-p):f} ({which}_precision "
                f"{p} of {self.text['instrument'][r]}), got {got(field, r)}"
            )

        flag(
            conv.why == _SYNTAX, lambda r: f"{field} must be a decimal number, got {got(field, r)}"
        )
        flag(conv.why == _OFF_GRID, off_grid)
        flag(
            conv.why == _RANGE,
            lambda r: (
                f"{field} must be below 10^{_MAX_DIGITS} instrument units, got {got(field, r)}"
            ),
        )
        ok = ~conv.null & (conv.why == 0) & (places >= 0)
        self.values[field] = [int(v) if k else None for v, k in zip(conv.values, ok, strict=True)]

    def _timestamps(self, field: str) -> None:
        conv = _timestamps(self.cols[field])
        self.errors.flag(
            conv.why != 0,
            lambda r: (
                f"{field} must be integer nanoseconds since the epoch or an ISO-8601 "
                f"timestamp, got {self.got(field, r)}"
            ),
        )
        ok = ~conv.null & (conv.why == 0)
        self.stamps[field] = [int(v) if k else None for v, k in zip(conv.values, ok, strict=True)]

    def _need(self, r: int, field: str, why: str) -> None:
        """Report a field that must be set and is not (a bad value is reported already)."""
        if not self.given[field][r]:
            self.errors.add(r, f"{field} must be set {why}, got {self.got(field, r)}")

    def _refuse(self, r: int, field: str, why: str) -> None:
        """Report a field that must be empty and is not."""
        if self.given[field][r]:
            self.errors.add(r, f"{field} must be empty {why}, got {self.got(field, r)}")

    def row(self, r: int) -> Signal | None:
        """Check one row's fields and their consistency; return its Signal or None."""
        errors, text, got = self.errors, self.text, self.got
        before = len(errors.found)
        for field in ("signal_id", "strategy", "account", "instrument"):
            if not (text[field][r] or "").strip():
                errors.add(r, f"{field} must be set, got {got(field, r)}")
        self._need(r, "ts", "(the time the signal reaches us)")
        sid = text["signal_id"][r]
        if sid:
            first = self.first_row.setdefault(sid, r)
            if first != r:
                errors.add(
                    r,
                    f"signal_id must be unique in the file, got {sid!r} again "
                    f"(first at {self.source.short(first)})",
                )
        ref, name = self.refs[r], text["instrument"][r]
        if ref is None and name:
            known = ", ".join(sorted(self.instruments)) or "none configured"
            errors.add(r, f"instrument must be one of {known}, got {name!r}")
        venue = text["venue"][r]
        if ref is not None and venue is not None and venue not in ref.venue_symbols:
            listed = ", ".join(ref.venue_symbols) or "none"
            errors.add(r, f"venue must be one listed for {name} ({listed}), got {venue!r}")
        enums: dict[str, Any] = {}
        for field, enum, default in (
            ("intent", SignalIntent, SignalIntent.ORDER),
            ("side", Side, None),
            ("order_type", OrderType, OrderType.MARKET),
            ("tif", TimeInForce, TimeInForce.GTC),
        ):
            raw = text[field][r]
            try:
                member = default if raw is None else enum(raw.strip().upper())
            except ValueError:
                allowed = ", ".join(m.value for m in enum)
                errors.add(r, f"{field} must be one of {allowed}, got {got(field, r)}")
                member = default
            enums[field] = member
        intent: SignalIntent = enums["intent"]
        qty = self.values["qty"][r]
        what = f"for a{'n' if intent is SignalIntent.ORDER else ''} {intent.value} signal"
        if intent is SignalIntent.ORDER:
            self._need(r, "side", f"{what} (BUY or SELL)")
            self._need(r, "qty", what)
            if qty is not None and qty <= 0:
                errors.add(r, f"qty must be > 0, got {got('qty', r)}")
            self._refuse(r, "target", what)
        else:
            self._refuse(r, "side", what)
            if qty:
                errors.add(r, f"qty must be empty or 0 {what}, got {got('qty', r)}")
        if intent is SignalIntent.TARGET:
            self._need(r, "target", what + " (the signed position wanted)")
        elif intent is SignalIntent.CANCEL:
            self._refuse(r, "target", what)
        if intent is SignalIntent.CANCEL:
            self._need(r, "cancels", what + " (the signal_id whose orders to cancel)")
            for field in ("price", "stop_price"):
                self._refuse(r, field, what)
        else:
            if intent is SignalIntent.TARGET:  # an ORDER may name the signal it replaces
                self._refuse(r, "cancels", what)
            order_type: OrderType = enums["order_type"]
            kind = f"for a {order_type.value} order"
            if order_type in _NEEDS_PRICE:
                self._need(r, "price", kind)
            else:
                self._refuse(r, "price", kind)
            if order_type in _NEEDS_STOP:
                self._need(r, "stop_price", kind)
            else:
                self._refuse(r, "stop_price", kind)
        ts = self.stamps["ts"][r]
        if len(errors.found) > before or ref is None or ts is None or sid is None:
            return None
        return Signal(
            ts_recv=ts,
            ts_event=self.stamps["ts_event"][r],
            signal_id=sid,
            strategy=text["strategy"][r] or "",
            account=text["account"][r] or "",
            instrument=ref.instrument,
            intent=intent,
            side=enums["side"],
            qty=qty or 0,
            target=self.values["target"][r],
            order_type=enums["order_type"],
            price=self.values["price"][r],
            stop_price=self.values["stop_price"][r],
            tif=enums["tif"],
            signal_price=self.values["signal_price"][r],
            venue=venue,
            cancels=text["cancels"][r],
        )

    def cancels(self, built: list[Signal | None]) -> None:
        """Check that each `cancels` (of a CANCEL, or of an ORDER replacing a signal) names
        a signal of the file that comes before it."""
        ts = self.stamps["ts"]
        for r, sig in enumerate(built):
            if sig is None or sig.cancels is None:
                continue
            target = self.first_row.get(sig.cancels)
            if target is None:
                self.errors.add(
                    r,
                    f"cancels must name a signal_id of this file, got {sig.cancels!r}",
                )
            elif ts[target] is not None and (ts[target], target) > (sig.ts_recv, r):
                self.errors.add(
                    r,
                    f"cancels must name an earlier signal (by ts, then file order), got "
                    f"{sig.cancels!r} at {self.source.short(target)} with ts {ts[target]}",
                )
