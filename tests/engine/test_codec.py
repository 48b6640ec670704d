"""Tests of the journal schema and the message <-> Arrow codec."""

from __future__ import annotations

import enum
import typing
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import codec
from engine.codec import SCHEMA, CodecError, Entry, decode, decode_messages, encode
from engine.messages import (
    KINDS,
    AssetClass,
    Instrument,
    Message,
    OrderFilled,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
    TradeTick,
)

INT64 = st.integers(-(2**63), 2**63 - 1)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy for one field, from its annotation (new kinds are covered as they come)."""
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = tuple(a for a in args if a is not type(None))
        base = rest[0] if len(rest) == 1 else typing.Union[rest]  # noqa: UP007
        return st.none() | strategy_for(base)
    if annotation is int:
        return INT64
    if annotation is str:
        return st.text(max_size=12)
    if annotation is bool:
        return st.booleans()
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return st.sampled_from(list(annotation))
    return st.from_type(annotation)


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    fields = msgspec.structs.fields(cls)
    return st.builds(cls, **{f.name: strategy_for(f.type) for f in fields})


ANY_MESSAGE = st.one_of([message_strategy(cls) for cls in KINDS])


def assert_same(got: Message, want: Message) -> None:
    """Equal, same class, and every field of the same type (enum members stay members)."""
    assert type(got) is type(want)
    assert got == want
    for field in msgspec.structs.fields(want):
        assert type(getattr(got, field.name)) is type(getattr(want, field.name)), field.name
    assert msgspec.json.encode(got) == msgspec.json.encode(want)  # includes the struct tag


def quote(ts: int = 1, **overrides: Any) -> QuoteTick:
    values: dict[str, Any] = {
        "ts_recv": ts,
        "instrument": "BTC-USD",
        "venue": "sim",
        "bid_price": 100,
        "bid_size": 1,
        "ask_price": 101,
        "ask_size": 2,
    }
    values.update(overrides)
    return QuoteTick(**values)


def ipc_round_trip(batch: pa.RecordBatch) -> pa.RecordBatch:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_batch(batch)
    return pa.ipc.open_stream(sink.getvalue()).read_next_batch()


# --- schema ---------------------------------------------------------------------------------


def test_schema_when_built_then_header_columns_come_first_with_fixed_types() -> None:
    assert SCHEMA.names[:4] == ["seq", "cause", "kind", "ts_recv"]
    assert SCHEMA.field("seq").type == pa.uint64() and not SCHEMA.field("seq").nullable
    assert SCHEMA.field("cause").type == pa.uint64() and SCHEMA.field("cause").nullable
    assert SCHEMA.field("kind").type == pa.dictionary(pa.int8(), pa.utf8())
    assert codec.KIND_DICTIONARY.to_pylist() == [cls.__name__ for cls in KINDS]


def test_schema_when_built_then_fields_map_to_typed_nullable_columns() -> None:
    assert SCHEMA.field("price").type == pa.int64()
    assert SCHEMA.field("instrument").type == pa.utf8()
    assert SCHEMA.field("retryable").type == pa.bool_()
    assert SCHEMA.field("side").type == pa.dictionary(pa.int8(), pa.utf8())
    assert SCHEMA.field("venue_symbols").type == pa.utf8()  # dict -> JSON
    assert all(SCHEMA.field(c.name).nullable for c in codec.COLUMNS if c.name != "ts_recv")
    side = next(c for c in codec.COLUMNS if c.name == "side")
    assert side.dictionary is not None
    assert side.dictionary.to_pylist() == [m.value for m in Side]


def test_schema_when_built_then_every_field_of_every_kind_has_a_column_in_order() -> None:
    expected: list[str] = []
    for cls in KINDS:
        for field in msgspec.structs.fields(cls):
            if field.name not in expected:
                expected.append(field.name)
    assert SCHEMA.names[3:] == expected


def test_build_schema_when_a_field_has_two_types_then_it_fails_naming_both() -> None:
    class A(Message, frozen=True, kw_only=True):
        price: int

    class B(Message, frozen=True, kw_only=True):
        price: str | None = None

    with pytest.raises(TypeError, match=r"'price'.*B.*A.*one type"):
        codec._build_schema((A, B))


def test_build_schema_when_a_field_is_named_like_a_journal_column_then_it_fails() -> None:
    class C(Message, frozen=True, kw_only=True):
        seq: int

    with pytest.raises(TypeError, match="reserved"):
        codec._build_schema((C,))


# --- round trip -----------------------------------------------------------------------------


@given(msgs=st.lists(ANY_MESSAGE, min_size=1, max_size=25), data=st.data())
def test_decode_when_any_mix_of_messages_is_encoded_then_it_round_trips(
    msgs: list[Message], data: st.DataObject
) -> None:
    entries = []
    for seq, msg in enumerate(msgs):
        cause = data.draw(st.none() | st.integers(0, seq - 1)) if seq else None
        entries.append(Entry(seq + 1000, None if cause is None else cause + 1000, msg))
    decoded = decode(ipc_round_trip(encode(entries)))
    assert [(e.seq, e.cause) for e in decoded] == [(e.seq, e.cause) for e in entries]
    for got, want in zip(decoded, entries, strict=True):
        assert_same(got.msg, want.msg)


@pytest.mark.parametrize("cls", KINDS, ids=lambda cls: cls.__name__)
@settings(max_examples=10)
@given(data=st.data())
def test_decode_when_each_kind_is_encoded_then_it_round_trips(
    cls: type[Message], data: st.DataObject
) -> None:
    msgs = data.draw(st.lists(message_strategy(cls), min_size=1, max_size=5))
    batch = encode(Entry(seq, None, msg) for seq, msg in enumerate(msgs))
    for got, want in zip(decode_messages(batch), msgs, strict=True):
        assert_same(got, want)


def test_decode_when_none_zero_and_empty_differ_then_they_stay_distinct() -> None:
    msgs = [
        Signal(ts_recv=0, signal_id="", strategy="s", account="a", instrument="i", price=None),
        Signal(ts_recv=0, signal_id="x", strategy="", account="a", instrument="i", price=0),
        Signal(ts_recv=0, signal_id="x", strategy="s", account="a", instrument="", venue=""),
        Signal(ts_recv=0, signal_id="x", strategy="s", account="a", instrument="i", venue=None),
    ]
    got = decode_messages(encode(Entry(i, None, m) for i, m in enumerate(msgs)))
    assert got == msgs
    assert got[0].price is None and got[1].price == 0  # type: ignore[attr-defined]
    assert got[2].venue == "" and got[3].venue is None  # type: ignore[attr-defined]


def test_decode_when_batch_uses_another_dictionary_order_then_values_are_translated() -> None:
    msgs = [
        TradeTick(ts_recv=1, instrument="X", venue="v", price=1, qty=1, aggressor=Side.SELL),
        quote(),
    ]
    batch = encode(Entry(i, None, m) for i, m in enumerate(msgs))
    kind = batch.column(2)
    names = codec.KIND_DICTIONARY.to_pylist()[::-1]
    remap = {i: names.index(n) for i, n in enumerate(codec.KIND_DICTIONARY.to_pylist())}
    indices = pa.array([remap[i] for i in kind.indices.to_pylist()], pa.int8())
    side_index = SCHEMA.get_field_index("aggressor")
    side = batch.column(side_index)
    side_indices = pa.array([None if i is None else 1 - i for i in side.indices.to_pylist()])
    columns = list(batch.columns)
    columns[2] = pa.DictionaryArray.from_arrays(indices, pa.array(names))
    columns[side_index] = pa.DictionaryArray.from_arrays(
        side_indices.cast(pa.int8()), pa.array(["SELL", "BUY"])
    )
    got = decode_messages(pa.RecordBatch.from_arrays(columns, schema=SCHEMA))
    assert got == msgs
    assert got[0].aggressor is Side.SELL  # type: ignore[attr-defined]


def test_encode_when_batch_has_one_kind_then_other_kinds_columns_are_null() -> None:
    batch = encode([Entry(0, None, quote())])
    assert batch.column(SCHEMA.get_field_index("price")).null_count == 1
    assert batch.column(SCHEMA.get_field_index("bid_price")).to_pylist() == [100]


def test_encode_when_batches_are_built_then_they_share_the_fixed_dictionaries() -> None:
    fill = OrderFilled(ts_recv=1, order_id="o", venue="v", trade_id="t", price=1, qty=1)
    a = encode([Entry(0, None, quote())])
    b = encode([Entry(1, None, fill)])
    for index, _, fixed in codec.DICTIONARIES:
        assert a.column(index).dictionary.equals(fixed)
        assert b.column(index).dictionary.equals(fixed)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (quote(bid_size="5"), r"QuoteTick\.bid_size: expected int, got str '5'"),
        (quote(bid_size=True), r"QuoteTick\.bid_size: expected int, got bool"),
        (quote(bid_price=1.5), r"QuoteTick\.bid_price: expected int, got float"),
        (quote(venue=None), r"QuoteTick\.venue: expected a value, got None"),
        (quote(venue=b"sim"), r"QuoteTick\.venue: expected str, got bytes"),
        (
            TradeTick(ts_recv=1, instrument="X", venue="v", price=1, qty=1, aggressor="HOLD"),  # type: ignore[arg-type]
            r"TradeTick\.aggressor: expected a Side \(BUY, SELL\), got 'HOLD'",
        ),
        (
            Instrument(
                instrument="X",
                asset_class=AssetClass.FX,
                currency="USD",
                price_precision=2,
                size_precision=0,
                venue_symbols={1: "x"},  # type: ignore[dict-item]
            ),
            r"Instrument\.venue_symbols: .*JSON",
        ),
        ("not a message", r"expected a message of a kind in messages\.KINDS, got str"),
    ],
)
def test_encode_when_a_value_cannot_round_trip_then_error_names_kind_field_and_expected(
    msg: Any, match: str
) -> None:
    with pytest.raises(CodecError, match=match):
        encode([Entry(0, None, msg)])


def test_encode_when_int_is_out_of_int64_range_then_error_names_seq_and_field() -> None:
    with pytest.raises(CodecError, match=r"entry seq 7: QuoteTick\.ask_size: expected an int64"):
        encode([Entry(7, None, quote(ask_size=2**63))])


def test_encode_when_cause_is_not_an_earlier_seq_then_it_is_refused() -> None:
    with pytest.raises(CodecError, match="cause"):
        encode([Entry(3, 3, quote())])


def test_encode_when_enum_field_holds_an_equal_plain_str_then_it_decodes_to_the_member() -> None:
    order = SubmitOrder(
        ts_recv=1,
        order_id="o",
        venue="v",
        instrument="i",
        account="a",
        strategy="s",
        side=Side.BUY,
        qty=1,
        order_type="LIMIT",  # type: ignore[arg-type]
        tif=TimeInForce.GTC,
    )
    assert codec.check_message(order) is None
    decoded = decode_messages(encode([Entry(0, None, order)]))[0]
    assert decoded == order
    assert decoded.order_type is OrderType.LIMIT


# --- assembling batches from rows -------------------------------------------------------------


@settings(max_examples=60)
@given(msgs=st.lists(ANY_MESSAGE, min_size=1, max_size=30), data=st.data())
def test_assemble_when_rows_of_several_sources_interleave_then_same_batch_as_encoding(
    msgs: list[Message], data: st.DataObject
) -> None:
    first = data.draw(st.integers(0, 10_000), label="first seq")
    source_of = data.draw(st.lists(st.integers(0, 2), min_size=len(msgs), max_size=len(msgs)))
    causes = [
        data.draw(st.none() | st.integers(first, first + n - 1)) if n else None
        for n in range(len(msgs))
    ]
    builders = {s: codec.BatchBuilder(len(msgs)) for s in set(source_of)}
    row_in_source: list[int] = []
    for msg, s, cause in zip(msgs, source_of, causes):
        builder = builders[s]
        row = sum(1 for t in source_of[: len(row_in_source)] if t == s)
        builder.encoders[type(msg)](msg, row, cause)
        row_in_source.append(row)
    built = {s: b.build_rows(source_of.count(s)) for s, b in builders.items()}
    parts: list[tuple[codec.Rows, int, int]] = []
    for n, (s, row) in enumerate(zip(source_of, row_in_source)):
        if parts and n and source_of[n - 1] == s:
            rows, start, stop = parts[-1]
            parts[-1] = (rows, start, stop + 1)
        else:
            parts.append((built[s], row, row + 1))
    got = codec.assemble(first, parts)
    want = encode(Entry(first + n, c, m) for n, (c, m) in enumerate(zip(causes, msgs)))
    assert got.equals(want)
    assert got.serialize().to_pybytes() == want.serialize().to_pybytes()  # nulls hold zeros


def test_columns_rows_when_sliced_then_assembled_batch_decodes_to_the_rows_messages() -> None:
    kinds = [codec.KINDS.index(QuoteTick)] * 3 + [codec.KINDS.index(TradeTick)]
    rows = codec.columns_rows(
        pa.array(kinds, pa.int8()),
        {
            "ts_recv": [1, 2, 3, 4],
            "instrument": ["X"] * 4,
            "venue": ["v"] * 4,
            "bid_price": [10, 11, None, None],
            "bid_size": [1, 1, 1, None],
            "ask_price": [12, 13, 14, None],
            "ask_size": [2, 2, 2, None],
            "price": [None, None, None, 11],
            "qty": [None, None, None, 5],
            "aggressor": pa.array([None, None, None, 1], pa.int8()),
        },
    )
    builder = codec.BatchBuilder(2)
    signal = Signal(ts_recv=3, signal_id="s", strategy="a", account="A", instrument="X")
    builder.encoders[Signal](signal, 0, None)
    signals = builder.build_rows(1)
    batch = codec.assemble(7, [(rows, 1, 3), (signals, 0, 1), (rows, 3, 4)])
    assert batch.column(0).to_pylist() == [7, 8, 9, 10]
    assert decode_messages(batch) == [
        quote(2, bid_price=11, ask_price=13, venue="v", instrument="X", bid_size=1, ask_size=2),
        quote(3, bid_price=None, ask_price=14, venue="v", instrument="X", bid_size=1, ask_size=2),
        signal,
        TradeTick(ts_recv=4, instrument="X", venue="v", price=11, qty=5, aggressor=Side.SELL),
    ]


def test_assemble_when_part_is_out_of_range_then_value_error_names_it() -> None:
    rows = codec.columns_rows(pa.array([0], pa.int8()), {"ts_recv": [1]})
    with pytest.raises(ValueError, match=r"part \[0, 2\) of 1 rows"):
        codec.assemble(0, [(rows, 0, 2)])


@pytest.mark.parametrize("compression", ["lz4", "zstd", None])
def test_nulls_when_sliced_from_a_longer_array_then_ipc_bytes_are_those_of_exact_nulls(
    compression: str | None,
) -> None:
    """Null columns are slices of kept arrays for some types: the bytes an IPC stream
    writes for them must be those of nulls made at the exact length (the journal's
    bytes may not depend on the groups before)."""

    def ipc(array: pa.Array) -> bytes:
        batch = pa.RecordBatch.from_arrays([array], names=["c"])
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=compression, use_threads=False)
        with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
            writer.write_batch(batch)
        return bytes(sink.getvalue())

    nulls = codec._Nulls()
    for rows in (70_001, 1, 7, 9, 100, 65_535, 65_536, 300_000, 4_095):  # down, up, down
        for j, t in enumerate(codec._ROW_TYPES):
            got = nulls.column(rows, j)
            d = codec._DICT_AT[j]
            exact = pa.nulls(rows, t)
            want = exact if d is None else pa.DictionaryArray.from_arrays(exact, d)
            assert len(got) == rows and got.null_count == rows
            assert ipc(got) == ipc(want), (rows, codec.SCHEMA.field(j).name, str(t))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=20))
def test_strings_equal_pa_array(values: list[str]) -> None:
    """The dictionaries made from buffers (no pandas import) are the arrays pa.array makes."""
    made = codec._strings(values)
    made.validate(full=True)
    assert made.equals(pa.array(values, pa.utf8()))
    assert made.type == pa.utf8() and made.null_count == 0
