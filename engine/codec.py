"""Journal schema and the message <-> Arrow record batch codec.

Invariants:
- The schema is derived from `messages.KINDS` alone: `seq` uint64 (not null), `cause`
  uint64 (null for inputs), `kind` dictionary<int8, utf8> over the names of `KINDS` in
  order, `ts_recv` int64 (not null), then the union of every message field, in `KINDS`
  order and then field order, as a nullable column.
- Field types map one way: int -> int64, str -> utf8, bool -> bool, StrEnum ->
  dictionary<int8, utf8> over the enum's values in definition order, `X | None` ->
  nullable X, anything else (dict, list, nested Struct, unions) -> utf8 holding msgspec
  JSON. A field name has one type in every message; importing this module fails if not.
- Dictionary columns always carry the same dictionary object, so an IPC stream emits it
  once and the IPC file format accepts it. The market-data table's instrument and venue
  (RUN_DICTIONARY_COLUMNS) carry the run's own (`RunValues`), fixed when it starts.
- A row of kind K has values only in K's columns; every other column is null there.
- Encoding then decoding gives back an equal message of the same class: None, 0 and ""
  stay distinct, defaults are stored explicitly, enums come back as members. A value
  that would not come back equal (a float in an int field, a bool in an int field, a
  non-member in an enum field, JSON that decodes differently) is refused when encoded.
- Batches are assembled column by column from `Rows` (entries without seqs, from the
  message builder or from bulk columns) in parts: a column no part has is a shared
  all-null array of exactly the batch's length, and rows gathered from several parts
  get zeros under their nulls (one part is used as it is), so a batch of builder rows
  has the same IPC bytes however it was split into parts.
- Encoders and decoders are generated once per kind at import. They are pure functions
  of their arguments: no clock, no randomness, no set iteration.
"""

from __future__ import annotations

import enum
import functools
import struct
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise, repeat
from typing import Any, Literal, NamedTuple

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.messages import KIND_BY_NAME, KINDS, BookDelta, Message, QuoteTick, TradeTick

__all__ = [
    "COLUMNS",
    "DICTIONARIES",
    "KIND_DICTIONARY",
    "MARKET_DICTIONARIES",
    "MARKET_KINDS",
    "MARKET_SCHEMA",
    "RUN_DICTIONARY_COLUMNS",
    "SCHEMA",
    "BatchBuilder",
    "CodecError",
    "Column",
    "Encoder",
    "Entry",
    "Rows",
    "RunValues",
    "assemble",
    "assemble_split",
    "check_message",
    "columns_batch",
    "columns_rows",
    "decode",
    "decode_messages",
    "encode",
    "merge",
    "message_error",
    "one_value",
    "widen",
]

Codec = Literal["int", "str", "bool", "enum", "json"]
Encoder = Callable[[Message, int, "int | None"], None]


class CodecError(ValueError):
    """A message that cannot be journaled, or a batch that cannot be decoded."""


class Entry(NamedTuple):
    """One journal entry: its position, the input that caused it (None for inputs), itself."""

    seq: int
    cause: int | None
    msg: Message


class Column(NamedTuple):
    """One message-field column of the journal schema."""

    name: str
    type: pa.DataType  # the Arrow type as stored
    codec: Codec
    py_type: Any  # int, str, bool, the enum class, or the type JSON decodes to
    dictionary: pa.Array | None  # the fixed dictionary of an enum column


class _Field(NamedTuple):
    """One field of one message kind."""

    name: str
    column: int  # index into COLUMNS
    optional: bool  # the annotation admits None


# --- schema ---------------------------------------------------------------------------------


def _strings(values: Sequence[str]) -> pa.Array:
    """A utf8 array of `values` made from its buffers: `pa.array` imports pandas (when it
    is installed) on its first call, ~1 s that importing this module should not cost
    (`tape --help` builds no array; `tape journal verify`, `tca` and `limits` still pay it
    when they read a journal)."""
    data = [v.encode() for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum([len(d) for d in data], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.utf8(), len(data), buffers)


KIND_DICTIONARY: pa.Array = _strings([cls.__name__ for cls in KINDS])
_DICT_TYPE = pa.dictionary(pa.int8(), pa.utf8())
_RESERVED = ("seq", "cause", "kind")
_JSON_ENCODE = msgspec.json.Encoder().encode


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """Return (the annotation without None, whether None is allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = tuple(a for a in args if a is not type(None))
        if len(rest) < len(args):
            return (rest[0] if len(rest) == 1 else typing.Union[rest]), True  # noqa: UP007
    return annotation, False


def _classify(base: Any) -> tuple[Codec, pa.DataType, pa.Array | None]:
    """Map a field's non-None annotation to its codec, Arrow type and fixed dictionary."""
    if base is bool:
        return "bool", pa.bool_(), None
    if base is int:
        return "int", pa.int64(), None
    if base is str:
        return "str", pa.utf8(), None
    if isinstance(base, type) and issubclass(base, enum.StrEnum):
        values = [member.value for member in base]
        if len(values) > 127:
            raise TypeError(f"enum {base.__name__}: more than 127 members do not fit int8")
        return "enum", _DICT_TYPE, _strings(values)
    return "json", pa.utf8(), None


def _build_schema(
    kinds: Sequence[type[Message]],
) -> tuple[tuple[Column, ...], tuple[tuple[_Field, ...], ...]]:
    """Derive the union of the kinds' fields and each kind's fields; fail if a name has two
    types."""
    columns: dict[str, Column] = {}
    first_seen: dict[str, str] = {}
    per_kind: list[tuple[_Field, ...]] = []
    for cls in kinds:
        fields = []
        for field in msgspec.structs.fields(cls):
            name = field.name
            if name in _RESERVED:
                raise TypeError(f"{cls.__name__}.{name}: {name!r} is a reserved journal column")
            base, optional = _split_optional(field.type)
            known = columns.get(name)
            if known is None:
                codec, arrow_type, dictionary = _classify(base)
                columns[name] = Column(name, arrow_type, codec, base, dictionary)
                first_seen[name] = cls.__name__
            elif known.py_type != base:
                raise TypeError(
                    f"field {name!r} is {base!r} in {cls.__name__} but {known.py_type!r} in "
                    f"{first_seen[name]}: a field name must have one type in every message"
                )
            fields.append(_Field(name, list(columns).index(name), optional))
        per_kind.append(tuple(fields))
    return tuple(columns.values()), tuple(per_kind)


COLUMNS, _FIELDS = _build_schema(KINDS)
_FIRST_FIELD = 3  # schema position of COLUMNS[0] (ts_recv, first field of every message)

SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("cause", pa.uint64()),
        pa.field("kind", _DICT_TYPE, nullable=False),
    ]
    + [pa.field(c.name, c.type, nullable=c.name != "ts_recv") for c in COLUMNS]
)

# (schema index, column name, fixed dictionary) of every dictionary column.
DICTIONARIES: tuple[tuple[int, str, pa.Array], ...] = (
    (2, "kind", KIND_DICTIONARY),
    *(
        (_FIRST_FIELD + j, c.name, c.dictionary)
        for j, c in enumerate(COLUMNS)
        if c.dictionary is not None
    ),
)


# The market-data table: market-data inputs (no cause) are journaled apart from every other
# entry, in a narrow projection of SCHEMA onto `seq`, `kind` and their kinds' columns.
MARKET_KINDS: tuple[type[Message], ...] = (QuoteTick, TradeTick, BookDelta)
_MARKET_AT: tuple[int, ...] = (
    0,
    2,
    *sorted({_FIRST_FIELD + f.column for cls in MARKET_KINDS for f in _FIELDS[KINDS.index(cls)]}),
)
# Columns of the market-data table whose dictionary is the run's own (its instruments, its
# venues, fixed when the run starts: see `RunValues`); a market-data row with another value
# is journaled with the other entries.
RUN_DICTIONARY_COLUMNS: tuple[str, ...] = ("instrument", "venue")
_RUN_DICT_TYPE = pa.dictionary(pa.int32(), pa.utf8())
_RUN_AT: tuple[int, ...] = tuple(SCHEMA.get_field_index(n) for n in RUN_DICTIONARY_COLUMNS)
MARKET_SCHEMA: pa.Schema = pa.schema(
    [
        SCHEMA.field(i).with_type(_RUN_DICT_TYPE) if i in _RUN_AT else SCHEMA.field(i)
        for i in _MARKET_AT
    ]
)
MARKET_DICTIONARIES: tuple[tuple[int, str, pa.Array], ...] = tuple(
    (_MARKET_AT.index(i), name, fixed) for i, name, fixed in DICTIONARIES if i in _MARKET_AT
)


class RunValues:
    """A run's values of the RUN_DICTIONARY_COLUMNS (its instruments and venues): the
    dictionaries of those columns in its market-data table, made once when it starts."""

    __slots__ = ("_codes", "dictionaries")

    def __init__(self, instruments: Iterable[str], venues: Iterable[str]) -> None:
        values = [list(dict.fromkeys(instruments)), list(dict.fromkeys(venues))]
        self.dictionaries = {
            j: pa.array(v, pa.utf8()) for j, v in zip(_RUN_AT, values, strict=True)
        }
        self._codes = {j: {name: n for n, name in enumerate(v)} for j, v in zip(_RUN_AT, values)}

    def code(self, j: int, value: str) -> int:
        """The code of `value` in schema column j's dictionary, -1 if not in it."""
        return self._codes[j].get(value, -1)

    def one_code(self, j: int, column: pa.Array) -> int | None:
        """The code in schema column j's dictionary of the one value of `column` (-1 for
        a value not in it), None if its rows hold more than one value (or a null)."""
        one = one_value(column)
        return None if one is None else self.code(j, one)

    def codes(self, j: int, column: pa.Array) -> np.ndarray[Any, np.dtype[np.int32]]:
        """Each row's code in schema column j's dictionary, -1 for a value not in it."""
        one = self.one_code(j, column)
        if one is not None:
            return np.full(len(column), one, dtype=np.int32)
        found = pc.index_in(column, value_set=self.dictionaries[j])
        codes: np.ndarray[Any, np.dtype[np.int32]] = pc.fill_null(found, -1).to_numpy()
        return codes.astype(np.int32, copy=False)

    def describe(self) -> str:
        return ", ".join(
            f"{SCHEMA.field(j).name}: {d.to_pylist()}" for j, d in self.dictionaries.items()
        )


def one_value(column: pa.Array) -> str | None:
    """The value of a string column holding one value in every row, else None; read off
    its buffers with two byte comparisons and no copies (it runs on every market batch):
    the offsets against a regular sequence, the characters against themselves one value
    further on."""
    if column.null_count or column.type != pa.utf8() or not len(column):
        return None
    n = len(column)
    buffers = column.buffers()
    offsets = buffers[1].slice(4 * column.offset, 4 * (n + 1))
    first, second = struct.unpack_from("<ii", offsets)
    (last,) = struct.unpack_from("<i", offsets, 4 * n)
    width = second - first
    if last - first != n * width or not offsets.equals(_regular_offsets(n, width, first)):
        return None
    data = buffers[2]
    if width == 0 or data is None:  # every value empty
        return ""
    size = (n - 1) * width
    if not data.slice(first + width, size).equals(data.slice(first, size)):
        return None  # some value differs from the one before it
    value: str = data.slice(first, width).to_pybytes().decode()
    return value


@functools.lru_cache(maxsize=4)
def _regular_offsets(n: int, width: int, first: int) -> pa.Buffer:
    """The int32 offsets of n values of `width` bytes from byte `first` on (kept: a sim's
    batches mostly have one length and one width, and start at 0)."""
    return pa.py_buffer(first + width * np.arange(n + 1, dtype=np.int32))


# --- checking -------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_problem(col: Column, value: object) -> str | None:
    try:
        same = msgspec.json.decode(_JSON_ENCODE(value), type=col.py_type) == value
    except (TypeError, msgspec.MsgspecError) as exc:
        return f"expected JSON-encodable {col.py_type!r}, got {value!r:.200} ({exc})"
    return None if same else f"{value!r:.200} does not survive a JSON round trip as {col.py_type!r}"


def _value_problem(col: Column, optional: bool, value: object) -> str | None:
    """Describe why `value` cannot be stored losslessly in `col`, or return None."""
    if value is None:
        return None if optional else "expected a value, got None"
    if col.codec == "int":
        if not _is_int(value):
            return f"expected int, got {type(value).__name__} {value!r:.200}"
        if not -(2**63) <= value < 2**63:  # type: ignore[operator]
            return f"expected an int64, got {value!r} (out of range)"
    elif col.codec == "str":
        if not isinstance(value, str):
            return f"expected str, got {type(value).__name__} {value!r:.200}"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"expected valid UTF-8 text, got {value!r:.200}"
    elif col.codec == "bool":
        if type(value) is not bool:
            return f"expected bool, got {type(value).__name__} {value!r:.200}"
    elif col.codec == "enum":
        if value not in col.py_type.__members__.values():
            allowed = ", ".join(m.value for m in col.py_type)
            return f"expected a {col.py_type.__name__} ({allowed}), got {value!r:.200}"
    else:
        return _json_problem(col, value)
    return None


def check_message(msg: object) -> str | None:
    """Describe why `msg` cannot be journaled losslessly, or return None if it can."""
    cls = type(msg)
    if cls not in KINDS:
        return f"expected a message of a kind in messages.KINDS, got {cls.__name__} {msg!r:.200}"
    for field in _FIELDS[KINDS.index(cls)]:
        value = getattr(msg, field.name)
        problem = _value_problem(COLUMNS[field.column], field.optional, value)
        if problem:
            return f"{cls.__name__}.{field.name}: {problem}"
    return None


def message_error(msg: object, exc: BaseException | None = None) -> CodecError:
    """Return a CodecError naming the message, the field and what was expected."""
    if isinstance(exc, CodecError):
        return exc
    problem = check_message(msg)
    return CodecError(problem or f"{type(msg).__name__}: cannot be encoded ({exc!r})")


# --- encoding -------------------------------------------------------------------------------


def _json_encoder(col: Column, optional: bool) -> Callable[[Any], bytes | None]:
    """Encode a JSON field, refusing values that would not decode back equal."""
    decode_json = msgspec.json.Decoder(col.py_type).decode

    def encode_json(value: Any) -> bytes | None:
        if value is None and optional:
            return None
        try:
            data = _JSON_ENCODE(value)
            same = decode_json(data) == value
        except (TypeError, msgspec.MsgspecError) as exc:
            raise ValueError(str(exc)) from None
        if not same:
            raise ValueError("JSON round trip differs")
        return data

    return encode_json


_CHECKS = {
    "int": "type(v) is not int{none} and not is_int(v)",
    "str": "type(v) is not str{none} and not isinstance(v, str)",
    "bool": "type(v) is not bool{none}",
}


EncoderFactory = Callable[[list[Any], list[Any], list[list[Any]]], Encoder]


def _encoder_factory(code: int) -> EncoderFactory:
    """Generate (once per kind) `make(kinds, causes, columns) -> encode(msg, row, cause)`;
    `encode` checks msg's fields and stores them at `row` of the builder's lists."""
    cls = KINDS[code]
    env: dict[str, Any] = {"is_int": _is_int, "bad": message_error}
    bind = []
    body = [f"K[i] = {code}", "C[i] = cause"]
    for field in _FIELDS[code]:
        j = field.column
        col = COLUMNS[j]
        bind.append(f"c{j} = cols[{j}]")
        body.append(f"v = m.{field.name}")
        if col.codec in _CHECKS:
            check = _CHECKS[col.codec].format(none=" and v is not None" if field.optional else "")
            body.append(f"if {check}: raise bad(m)")
            # What only the batch build would find, found here, before the entry has a seq:
            # an int past int64, text that is not UTF-8 (a lone surrogate).
            some = "v is not None and " if field.optional else ""
            if col.codec == "int":
                body.append(f"if {some}not {-(2**63)} <= v < {2**63}: raise bad(m)")
            elif col.codec == "str":
                body.append(f"if {some}not v.isascii(): v.encode()")
            body.append(f"c{j}[i] = v")
        elif col.codec == "enum":
            codes: dict[Any, int | None] = {m: n for n, m in enumerate(col.py_type)}
            if field.optional:
                codes[None] = None
            env[f"e{j}"] = codes
            body.append(f"c{j}[i] = e{j}[v]")  # KeyError: not a member
        else:
            env[f"j{j}"] = _json_encoder(col, field.optional)
            body.append(f"c{j}[i] = j{j}(v)")
    src = "def make(K, C, cols):\n"
    src += "".join(f"    {line}\n" for line in bind)
    src += "    def encode(m, i, cause):\n"
    src += "".join(f"        {line}\n" for line in body)
    src += "    return encode\n"
    exec(compile(src, f"<encode {cls.__name__}>", "exec"), env)
    factory: EncoderFactory = env["make"]
    return factory


_ENCODER_FACTORIES: tuple[EncoderFactory, ...] = tuple(
    _encoder_factory(code) for code in range(len(KINDS))
)


# --- rows and batches -----------------------------------------------------------------------

# Per schema column: the fixed dictionary of a dictionary column (its rows hold int8 codes).
_DICT_AT: tuple[pa.Array | None, ...] = (
    None,
    None,
    KIND_DICTIONARY,
    *(c.dictionary for c in COLUMNS),
)
# Per schema column: the Arrow type of its values in `Rows` (int8 codes for dictionaries).
_ROW_TYPES: tuple[pa.DataType, ...] = tuple(
    pa.int8() if d is not None else SCHEMA.field(i).type for i, d in enumerate(_DICT_AT)
)
_CAUSE, _KIND = 1, 2


class Rows:
    """Journal rows without seqs, column by column: what record batches are assembled from.

    `columns` maps a schema index (1 `cause`, 2 `kind`, 3... the message fields) to an
    array of `length` values of that column; dictionary columns (`kind` and the enums)
    hold int8 codes into their fixed dictionary, with code 0 under a null. A column not
    in `columns` is null in every row. Only this module builds one (`BatchBuilder`,
    `columns_rows`), so every row is a valid entry but for its seq. `one_values` maps
    the schema index of a string column its maker knows to hold one value to that value.
    """

    __slots__ = ("_codes", "_market", "_mix", "columns", "length", "one_values")

    def __init__(self, length: int, columns: dict[int, pa.Array]) -> None:
        self.length = length
        self.columns = columns
        self.one_values: dict[int, str] = {}
        self._market: np.ndarray[Any, np.dtype[np.bool_]] | None = None
        self._mix = -2  # 1 every row is market data, 0 none is, -1 some are; -2 not known
        self._codes: dict[int, pa.Array] = {}  # run dictionary codes, per schema column

    def mix(self, run: RunValues) -> int:
        """1 if every row belongs in the market-data table, 0 if none does, -1 if some
        (for one run: the answer is kept)."""
        if self._mix == -2:
            market = self.market(run)
            self._mix = 1 if market.all() else 0 if not market.any() else -1
        return self._mix

    def market(self, run: RunValues) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Which rows belong in the market-data table: a market-data kind without a cause
        whose instrument and venue are the run's (kept, as are their codes)."""
        if self._market is None:
            kinds = self.columns[_KIND].to_numpy(zero_copy_only=False)
            cause = self.columns.get(_CAUSE)
            caused = cause is not None and cause.null_count < self.length
            one_kind = kinds.min() == kinds.max() and _IS_MARKET[kinds[0]]
            if not caused and one_kind and self._one_key(run):  # a sim's common batch
                self._market = np.ones(self.length, dtype=bool)  # no per-row work
                return self._market
            market = _IS_MARKET[kinds]
            if caused:
                assert cause is not None
                market &= ~cause.is_valid().to_numpy(zero_copy_only=False)
            for j in _RUN_AT:
                column = self.columns.get(j)
                if column is None:  # rows without it are not the run's market data
                    market[:] = False
                if not market.any():
                    break
                codes = run.codes(j, column)
                market &= codes >= 0
                self._codes[j] = pa.array(codes)
            self._market = market
        return self._market

    def _one_key(self, run: RunValues) -> bool:
        """True (and the run codes kept) if each run dictionary column holds one value in
        every row, a value of the run's."""
        codes = {}
        for j in _RUN_AT:
            column = self.columns.get(j)
            value = self.one_values.get(j)
            if value is not None:
                code: int | None = run.code(j, value)
            else:
                code = None if column is None else run.one_code(j, column)
            if code is None or code < 0:
                return False
            codes[j] = code
        for j, code in codes.items():
            self._codes[j] = pa.array(np.full(self.length, code, dtype=np.int32))
        return True

    def run_codes(self, j: int) -> pa.Array:
        """The run dictionary codes of schema column j (once `market` has found them)."""
        return self._codes[j]


class _Nulls:
    """All-null arrays of schema columns, `rows` long, made when first asked for.

    Columns of 64-bit, bool and string values are slices of one array per type, kept at
    least as long as the most rows asked for: a sim's groups differ in length, so arrays
    of exactly `rows` would be made afresh for nearly every group, with fresh pages.
    Arrow's IPC writer writes a slice that starts at 0 exactly as an array of its length
    (tested), so the journal's bytes do not depend on it. The others (int8 codes of the
    dictionary columns) are made at the exact length, for the last two row counts."""

    __slots__ = ("_exact", "_sliced")

    def __init__(self) -> None:
        self._sliced: dict[pa.DataType, pa.Array] = {}
        self._exact: dict[int, tuple[dict[pa.DataType, pa.Array], list[pa.Array | None]]] = {}

    def column(self, rows: int, j: int) -> pa.Array:
        """Return an all-null array of schema column `j`, `rows` long."""
        t = _ROW_TYPES[j]
        if t in _SLICED_NULLS:
            kept = self._sliced.get(t)
            if kept is None or len(kept) < rows:
                grown = 2 * len(kept) if kept is not None else _NULLS_ROWS
                kept = self._sliced[t] = pa.nulls(max(rows, grown), t)
            return kept if len(kept) == rows else kept.slice(0, rows)
        found = self._exact.get(rows)
        if found is None:
            if len(self._exact) >= 2:
                self._exact.clear()
            found = self._exact[rows] = ({}, [None] * len(_ROW_TYPES))
        by_type, columns = found
        array = columns[j]
        if array is None:
            values = by_type.get(t)
            if values is None:
                values = by_type[t] = pa.nulls(rows, t)
            d = _DICT_AT[j]
            array = columns[j] = values if d is None else pa.DictionaryArray.from_arrays(values, d)
        return array


# Value types whose null arrays are sliced from a longer one (see `_Nulls`), and the
# length those are first made at (a sim run's largest group).
_SLICED_NULLS = frozenset({pa.int64(), pa.uint64(), pa.bool_(), pa.utf8()})
_NULLS_ROWS = 131_072


_NULLS = _Nulls()


Part = tuple[Rows, int, int]
_IS_MARKET = np.zeros(len(KINDS), dtype=bool)
_IS_MARKET[[KINDS.index(cls) for cls in MARKET_KINDS]] = True


def assemble(first_seq: int, parts: Sequence[Part]) -> pa.RecordBatch:
    """Build the record batch of `parts` (rows [start, stop) of each, in order) with seqs
    first_seq, first_seq + 1, ...: column by column, absent columns shared nulls."""
    if not parts:
        raise ValueError("assemble: expected at least one part")
    total = 0
    for rows, start, stop in parts:
        if not 0 <= start < stop <= rows.length:
            raise ValueError(f"assemble: part [{start}, {stop}) of {rows.length} rows")
        total += stop - start
    seq = pa.array(np.arange(first_seq, first_seq + total, dtype=np.uint64))
    return _batch(parts, total, seq, None)


def assemble_split(
    first_seq: int, parts: Sequence[Part], run: RunValues
) -> tuple[pa.RecordBatch | None, pa.RecordBatch | None]:
    """Split the entries of `parts` (seqs first_seq, first_seq + 1, ... in order) into a
    market-data batch (MARKET_SCHEMA, its instruments and venues coded in the dictionaries
    of `run`) and a batch of the others (SCHEMA), each in seq order, None where there are
    no such rows. Adjacent slices of one `Rows` are joined, so market data appended in
    slices of a bulk `Rows` costs no gather."""
    # per table (0 market data, 1 the others): each run's first seq and length, and the
    # parts its rows come from, adjacent slices of one Rows joined as they come
    firsts: tuple[list[int], list[int]] = ([], [])
    lengths: tuple[list[int], list[int]] = ([], [])
    joined: tuple[list[Part], list[Part]] = ([], [])

    def add(k: int, rows: Rows, start: int, stop: int, seq: int) -> None:
        firsts[k].append(seq)
        lengths[k].append(stop - start)
        out = joined[k]
        if out and out[-1][0] is rows and out[-1][2] == start:
            out[-1] = (rows, out[-1][1], stop)
        else:
            out.append((rows, start, stop))

    seq = first_seq
    for rows, start, stop in parts:
        if not 0 <= start < stop <= rows.length:
            raise ValueError(f"assemble_split: part [{start}, {stop}) of {rows.length} rows")
        mix = rows.mix(run)
        if mix >= 0:
            add(1 - mix, rows, start, stop, seq)
        else:  # some rows of `rows` are market data: split into runs
            market = rows.market(run)[start:stop]
            bounds = [0, *(np.flatnonzero(market[1:] != market[:-1]) + 1).tolist(), stop - start]
            for a, b in pairwise(bounds):
                add(0 if market[a] else 1, rows, start + a, start + b, seq + a)
        seq += stop - start
    return (
        _split_batch(firsts[0], lengths[0], joined[0], run),
        _split_batch(firsts[1], lengths[1], joined[1], None),
    )


def _split_batch(
    firsts: list[int], lengths: list[int], parts: list[Part], run: RunValues | None
) -> pa.RecordBatch | None:
    """The batch of one table's runs of rows (each run's first seq and length, the parts
    holding them): market data coded in the dictionaries of `run`, or (run None) the
    other entries."""
    if not parts:
        return None
    length = np.array(lengths, dtype=np.int64)
    total = int(length.sum())
    starts = (np.cumsum(length) - length).astype(np.uint64)
    first = np.array(firsts, dtype=np.uint64)
    seq = np.repeat(first - starts, length)
    seq += np.arange(total, dtype=np.uint64)
    return _batch(parts, total, pa.array(seq), run)


def _batch(
    parts: Sequence[Part], total: int, seq: pa.Array, run: RunValues | None
) -> pa.RecordBatch:
    """The batch of `parts` with the given seq column: SCHEMA's columns, or (given the
    `run`) MARKET_SCHEMA's, instrument and venue coded in the run's dictionaries."""
    if len(parts) == 1:
        rows, start, stop = parts[0]
        whole = start == 0 and stop == rows.length
        columns = {
            j: array if whole else array.slice(start, stop - start)
            for j, array in rows.columns.items()
        }
    else:
        columns = _interleave(parts, total)
    if _KIND not in columns:
        raise ValueError("assemble: rows without a kind column")
    at = range(len(_ROW_TYPES)) if run is None else _MARKET_AT
    arrays = []
    for i in at:
        array = seq if i == 0 else columns.get(i)
        if array is None:
            array = _NULLS.column(total, i)
        elif i and _DICT_AT[i] is not None:
            array = pa.DictionaryArray.from_arrays(array, _DICT_AT[i])
        arrays.append(array)
    if run is None:
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
    for j in _RUN_AT:  # the run's codes in place of the strings, found when the rows were
        # split (`Rows.market`): slices of them, in the parts' order as the columns are
        slices = [rows.run_codes(j).slice(start, stop - start) for rows, start, stop in parts]
        codes = slices[0] if len(slices) == 1 else pa.concat_arrays(slices)
        arrays[_MARKET_AT.index(j)] = pa.DictionaryArray.from_arrays(codes, run.dictionaries[j])
    return pa.RecordBatch.from_arrays(arrays, schema=MARKET_SCHEMA)


def widen(market: pa.RecordBatch) -> pa.RecordBatch:
    """A MARKET_SCHEMA batch as a SCHEMA batch (every other column null)."""
    rows = market.num_rows
    arrays = [_NULLS.column(rows, i) for i in range(len(_ROW_TYPES))]
    for k, i in enumerate(_MARKET_AT):
        column = market.column(k)
        arrays[i] = column.dictionary_decode() if i in _RUN_AT else column
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


def merge(entries: pa.RecordBatch | None, market: pa.RecordBatch | None) -> pa.RecordBatch:
    """One SCHEMA batch in seq order from a group's batch of entries and its market-data
    batch (either None when the group had none, not both)."""
    if market is None:
        if entries is None:
            raise ValueError("merge: expected a batch of entries or of market data")
        return entries
    wide = widen(market)
    if entries is None:
        return wide
    both = pa.concat_batches([wide, entries])
    return both.take(pc.sort_indices(both.column(0)))


def _interleave(parts: Sequence[Part], total: int) -> dict[int, pa.Array]:
    """Gather each column present in some part: one `take` per column from the used
    ranges of the distinct sources (Arrow writes zeros under the nulls it takes)."""
    slot: dict[int, int] = {}
    sources: list[Rows] = []
    lo: list[int] = []
    hi: list[int] = []
    part_source = []
    for rows, start, stop in parts:
        s = slot.get(id(rows))
        if s is None:
            s = slot[id(rows)] = len(sources)
            sources.append(rows)
            lo.append(start)
            hi.append(stop)
        else:
            lo[s] = min(lo[s], start)
            hi[s] = max(hi[s], stop)
        part_source.append(s)
    src = np.array(part_source, dtype=np.int64)
    starts = np.array([start for _, start, _ in parts], dtype=np.int64)
    lengths = np.array([stop - start for _, start, stop in parts], dtype=np.int64)
    out_starts = np.cumsum(lengths) - lengths
    ramp = np.arange(total, dtype=np.int64)
    by_pattern: dict[tuple[int, ...], list[int]] = {}
    for j in sorted({j for rows in sources for j in rows.columns}):
        pattern = tuple(s for s, rows in enumerate(sources) if j in rows.columns)
        by_pattern.setdefault(pattern, []).append(j)
    out: dict[int, pa.Array] = {}
    for pattern, columns in by_pattern.items():
        base = np.zeros(len(sources), dtype=np.int64)
        has = np.zeros(len(sources), dtype=bool)
        offset = 0
        for s in pattern:
            base[s] = offset - lo[s]
            has[s] = True
            offset += hi[s] - lo[s]
        shift = np.repeat(starts + base[src] - out_starts, lengths)
        index = (ramp + shift).astype(np.int32 if offset < 2**31 else np.int64)
        missing = ~has[src]
        indices = (
            pa.array(index, mask=np.repeat(missing, lengths)) if missing.any() else pa.array(index)
        )
        for j in columns:
            chunks = [sources[s].columns[j].slice(lo[s], hi[s] - lo[s]) for s in pattern]
            values = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
            out[j] = values.take(indices)
    return out


class BatchBuilder:
    """Accumulate up to `capacity` entries in column lists; build them into `Rows` (or a
    record batch) at once.

    `encoders[type(msg)](msg, row, cause)` checks a message and stores it at `row` (it
    raises KeyError, TypeError or ValueError for a bad one: see `message_error`). The
    caller fills rows 0, 1, 2, ... and calls `build_rows(rows)` or `build(first_seq,
    rows)`, which clear them.
    """

    __slots__ = ("_cause", "_cols", "_kind", "capacity", "encoders")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"BatchBuilder capacity: expected >= 1, got {capacity}")
        self.capacity = capacity
        self._kind: list[Any] = [None] * capacity
        self._cause: list[Any] = [None] * capacity
        self._cols: list[list[Any]] = [[None] * capacity for _ in COLUMNS]
        self.encoders: dict[type[Message], Encoder] = {
            cls: make(self._kind, self._cause, self._cols)
            for cls, make in zip(KINDS, _ENCODER_FACTORIES)
        }

    def build(self, first_seq: int, rows: int) -> pa.RecordBatch:
        """Turn rows [0, rows) into a record batch with seqs first_seq.. and clear them."""
        return assemble(first_seq, [(self.build_rows(rows, first_seq), 0, rows)])

    def build_rows(
        self, rows: int, first_seq: int = 0, seq_of: Callable[[int], int] | None = None
    ) -> Rows:
        """Turn rows [0, rows) into `Rows` and clear them. Errors name row r's entry as
        seq `seq_of(r)` (default `first_seq + r`)."""
        if not 0 < rows <= self.capacity:
            raise ValueError(f"BatchBuilder.build rows: expected 1..{self.capacity}, got {rows}")
        full = rows == self.capacity
        kinds = self._kind if full else self._kind[:rows]
        touched = [False] * len(COLUMNS)
        for code in dict.fromkeys(kinds):
            for field in _FIELDS[code]:
                touched[field.column] = True
        columns: dict[int, pa.Array] = {}
        try:
            columns[_CAUSE] = pa.array(self._cause if full else self._cause[:rows], pa.uint64())
            columns[_KIND] = pa.array(kinds, pa.int8())
            for j, col in enumerate(COLUMNS):
                if touched[j]:
                    values = self._cols[j] if full else self._cols[j][:rows]
                    row_type = pa.int8() if col.dictionary is not None else col.type
                    columns[_FIRST_FIELD + j] = pa.array(values, row_type)
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise self._diagnose(seq_of or first_seq.__add__, rows, exc) from exc
        finally:
            self._clear(rows, touched)
        return Rows(rows, columns)

    def clear_row(self, row: int) -> None:
        """Forget whatever a failed encoder left in `row`."""
        self._kind[row] = None
        self._cause[row] = None
        for values in self._cols:
            values[row] = None

    def _clear(self, rows: int, touched: list[bool]) -> None:
        nones = [None] * rows
        self._cause[:rows] = nones
        for j, values in enumerate(self._cols):
            if touched[j]:
                values[:rows] = nones

    def _diagnose(self, seq_of: Callable[[int], int], rows: int, exc: BaseException) -> CodecError:
        """Find the first entry Arrow refused (an int out of int64 range, say)."""
        for row in range(rows):
            code = self._kind[row]
            cause = self._cause[row]
            if cause is not None and not (_is_int(cause) and 0 <= cause < 2**64):
                return CodecError(f"entry seq {seq_of(row)}: cause {cause!r} is not a seq")
            for field in _FIELDS[code]:
                col = COLUMNS[field.column]
                if col.codec in ("enum", "json"):
                    continue  # stored as codes and bytes already checked by the encoder
                problem = _value_problem(col, field.optional, self._cols[field.column][row])
                if problem:
                    name = f"{KINDS[code].__name__}.{field.name}"
                    return CodecError(f"entry seq {seq_of(row)}: {name}: {problem}")
        return CodecError(f"batch seq {seq_of(0)}..{seq_of(rows - 1)}: {exc}")


def encode(entries: Iterable[Entry | tuple[int, int | None, Message]]) -> pa.RecordBatch:
    """Encode entries with contiguous seqs into one record batch (tests, tools)."""
    items = list(entries)
    if not items:
        raise CodecError("encode: expected at least one entry, got none")
    first = items[0][0]
    builder = BatchBuilder(len(items))
    for row, (seq, cause, msg) in enumerate(items):
        if seq != first + row:
            raise CodecError(f"encode: entry {row} has seq {seq}, expected {first + row}")
        if cause is not None and not (_is_int(cause) and 0 <= cause < seq):
            raise CodecError(f"entry seq {seq}: cause: expected an earlier seq, got {cause!r}")
        encoder = builder.encoders.get(type(msg))
        if encoder is None:
            raise message_error(msg)
        try:
            encoder(msg, row, cause)
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"entry seq {seq}: {message_error(msg, exc)}") from None
    return builder.build(first, len(items))


# --- decoding -------------------------------------------------------------------------------

Builder = Callable[..., list[Message]]


def _make_builder(code: int) -> Builder:
    """Generate `build(*columns) -> [K(...), ...]` over the kind's decoded column lists."""
    cls = KINDS[code]
    names = [field.name for field in _FIELDS[code]]
    args = ", ".join(f"a{n}" for n in range(len(names)))
    kwargs = ", ".join(f"{name}=a{n}" for n, name in enumerate(names))
    src = f"def build({args}):\n    return [K({kwargs}) for {args}, in zip({args})]\n"
    namespace: dict[str, Any] = {"K": cls}
    exec(compile(src, f"<decode {cls.__name__}>", "exec"), namespace)
    builder: Builder = namespace["build"]
    return builder


_BUILDERS: tuple[Builder, ...] = tuple(_make_builder(code) for code in range(len(KINDS)))
_MEMBERS: dict[str, dict[int | None, Any]] = {
    c.name: {**dict(enumerate(c.py_type)), None: None} for c in COLUMNS if c.codec == "enum"
}
_JSON_DECODERS: dict[str, Callable[[Any], Any]] = {
    c.name: msgspec.json.Decoder(c.py_type).decode for c in COLUMNS if c.codec == "json"
}
_KIND_CODES: dict[int | None, int] = dict(enumerate(range(len(KINDS))))


def _translation(
    array: pa.DictionaryArray, fixed: pa.Array, known: dict[int | None, Any], lookup: Any
) -> dict[int | None, Any]:
    """Map the batch's dictionary indices to our values (`known` for the fixed dictionary)."""
    dictionary = array.dictionary
    if dictionary.equals(fixed):
        return known
    out: dict[int | None, Any] = {None: None}
    for index, value in enumerate(dictionary.to_pylist()):
        try:
            out[index] = lookup(value)
        except (KeyError, ValueError):
            raise CodecError(f"unknown dictionary value {value!r}") from None
    return out


def _column_values(array: Any, col: Column) -> list[Any]:
    """Python values of one column, with enums as members and JSON decoded."""
    if col.codec == "enum":
        members = _translation(array, col.dictionary, _MEMBERS[col.name], col.py_type)
        return list(map(members.__getitem__, array.indices.to_pylist()))
    values: list[Any] = array.to_pylist()
    if col.codec == "json":
        decode_json = _JSON_DECODERS[col.name]
        try:
            return [None if v is None else decode_json(v) for v in values]
        except msgspec.DecodeError as exc:
            raise CodecError(f"column {col.name!r}: {exc}") from exc
    return values


def _build(code: int, arrays: list[Any]) -> list[Message]:
    """Build the messages of one kind from its field columns."""
    columns = [_column_values(a, COLUMNS[f.column]) for a, f in zip(arrays, _FIELDS[code])]
    return _BUILDERS[code](*columns)


def _kind_code(name: str) -> int:
    return KINDS.index(KIND_BY_NAME[name])


def _grouped(batch: pa.RecordBatch) -> tuple[list[Message], list[int] | None]:
    """Decode a batch's messages grouped by kind; also return the permutation that puts
    them back in row order (None if they already are).

    One stable sort by kind and one `take` of the columns in use group the rows; each kind
    is then built from a contiguous slice (measured faster than per-kind filters).
    """
    if not batch.schema.equals(SCHEMA):
        raise CodecError(f"record batch: {schema_difference(batch.schema)}")
    if batch.num_rows == 0:
        return [], None
    kinds = batch.column(2)
    codes = _translation(kinds, KIND_DICTIONARY, _KIND_CODES, _kind_code)
    indices = kinds.indices
    present = sorted((c["values"], c["counts"]) for c in pc.value_counts(indices).to_pylist())
    if len(present) == 1:
        code = codes[present[0][0]]
        return _build(code, [batch.column(_FIRST_FIELD + f.column) for f in _FIELDS[code]]), None
    order = pc.sort_indices(indices)
    in_use = sorted({f.column for index, _ in present for f in _FIELDS[codes[index]]})
    position = {column: n for n, column in enumerate(in_use)}
    grouped = batch.select([_FIRST_FIELD + column for column in in_use]).take(order)
    msgs: list[Message] = []
    start = 0
    for index, count in present:
        code = codes[index]
        part = grouped.slice(start, count)
        msgs += _build(code, [part.column(position[f.column]) for f in _FIELDS[code]])
        start += count
    return msgs, pc.sort_indices(order).to_pylist()


_COLUMN_INDEX: dict[str, int] = {c.name: j for j, c in enumerate(COLUMNS)}


def columns_rows(
    kinds: Any, columns: dict[str, Any], one_values: Mapping[str, str] | None = None
) -> Rows:
    """Make `Rows` of inputs from ready columns: the bulk path for market data.

    `kinds` holds each row's KINDS code (int8); `columns` maps journal column names to
    arrays of the rows' values (pyarrow or numpy; enum columns as int8 member indices);
    every other column is null, `cause` too (inputs have none). The caller vouches that
    each row is a valid message of its kind: `decode` must give back what it means.
    Arrays already of the column's type are used as they are (no copy). `one_values`
    names string columns the caller knows hold one value in every row, and the value
    (kept: splitting the rows by run then need not read those columns again).
    """
    rows = len(kinds)
    if rows == 0:
        raise ValueError("columns_rows: expected at least one row")
    out: dict[int, pa.Array] = {
        _KIND: kinds if isinstance(kinds, pa.Array) else pa.array(kinds, pa.int8())
    }
    if out[_KIND].type != pa.int8():
        out[_KIND] = out[_KIND].cast(pa.int8())
    for name, values in columns.items():
        j = _COLUMN_INDEX.get(name)
        if j is None:
            raise CodecError(f"columns_rows: no journal column {name!r}")
        col = COLUMNS[j]
        if len(values) != rows:
            raise CodecError(f"columns_rows: column {name!r} has {len(values)} rows, not {rows}")
        if col.dictionary is None:
            array = (
                pa.array(values, col.type)
                if not isinstance(values, pa.Array)
                else (values if values.type == col.type else values.cast(col.type))
            )
        else:
            array = values if isinstance(values, pa.Array) else pa.array(values, pa.int8())
            array = array.cast(pa.int8())
            if array.null_count:  # Arrow allows any value under a null; Polars wants a key
                missing = pc.is_null(array).to_numpy(zero_copy_only=False)
                keys = pc.fill_null(array, 0).to_numpy()
                array = pa.array(keys, pa.int8(), mask=missing)
        out[_FIRST_FIELD + j] = array
    made = Rows(rows, out)
    for name, value in (one_values or {}).items():
        column = _COLUMN_INDEX.get(name)
        j = -1 if column is None else _FIRST_FIELD + column
        if j not in out:
            raise CodecError(f"columns_rows: one value given for {name!r}, not a column given")
        made.one_values[j] = value
    return made


def columns_batch(first_seq: int, kinds: Any, columns: dict[str, Any]) -> pa.RecordBatch:
    """Build a batch of inputs with seqs first_seq.. from ready columns (see
    `columns_rows`)."""
    rows = columns_rows(kinds, columns)
    return assemble(first_seq, [(rows, 0, rows.length)])


def schema_difference(schema: pa.Schema) -> str:
    """Say how a journal schema differs from this code's (for errors)."""
    ours, theirs = set(SCHEMA.names), set(schema.names)
    parts = []
    if theirs - ours:
        parts.append(f"columns unknown to this code: {', '.join(sorted(theirs - ours))}")
    if ours - theirs:
        parts.append(f"columns missing: {', '.join(sorted(ours - theirs))}")
    changed = sorted(n for n in ours & theirs if schema.field(n).type != SCHEMA.field(n).type)
    if changed:
        parts.append(f"columns of another type: {', '.join(changed)}")
    detail = "; ".join(parts) or "column order or metadata differ"
    return f"journal schema differs from this code's ({detail}): written by another version"


def decode_messages(batch: pa.RecordBatch) -> list[Message]:
    """Decode the messages of a journal record batch, in row (seq) order."""
    msgs, inverse = _grouped(batch)
    return msgs if inverse is None else list(map(msgs.__getitem__, inverse))


def decode(batch: pa.RecordBatch) -> list[Entry]:
    """Decode a journal record batch into entries, in seq order."""
    msgs, inverse = _grouped(batch)
    in_order = msgs if inverse is None else map(msgs.__getitem__, inverse)
    seqs = batch.column(0).to_pylist()
    causes = batch.column(1).to_pylist()
    # tuple.__new__ builds the NamedTuple without its Python-level constructor (faster).
    return list(map(tuple.__new__, repeat(Entry), zip(seqs, causes, in_order)))
