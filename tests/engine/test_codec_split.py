"""The two-table split of a group: `assemble_split` then `merge` gives back `assemble`."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import (
    MARKET_SCHEMA,
    SCHEMA,
    BatchBuilder,
    CodecError,
    RunValues,
    assemble,
    assemble_split,
    columns_rows,
    decode,
    merge,
)
from engine.messages import KINDS, Alert, QuoteTick, Severity, TradeTick


def quote(ts: int, instrument: str = "X") -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument=instrument,
        venue="V",
        bid_price=ts,
        bid_size=1,
        ask_price=ts + 1,
        ask_size=2,
    )


def trade(ts: int) -> TradeTick:
    return TradeTick(ts_recv=ts, instrument="X", venue="V", price=ts, qty=3)


def alert(ts: int) -> Alert:
    return Alert(ts_recv=ts, severity=Severity.INFO, code="C", text="m", venue="V")


def other(ts: int) -> QuoteTick:
    """A quote of an instrument not among the run's: it stays in the wide table."""
    return quote(ts, "Y")


MAKERS = {"quote": quote, "trade": trade, "alert": alert, "other": other}
RUN = RunValues(["X"], ["V"])


@settings(max_examples=80, deadline=None)
@given(
    kinds=st.lists(
        st.sampled_from(["quote", "trade", "alert", "quote-caused", "other"]), min_size=1
    ),
    bulk=st.integers(0, 40),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    others=st.sampled_from(["none", "all", "some"]),
    declared=st.booleans(),
)
def test_split_when_rows_mix_kinds_and_parts_then_merge_equals_assemble(
    kinds: list[str], bulk: int, cuts: list[int], others: str, declared: bool
) -> None:
    """`declared`: the bulk rows come with their one instrument and venue said (as a
    sim's batch of one key does), which must change nothing but the work done."""
    builder = BatchBuilder(len(kinds))
    for row, kind in enumerate(kinds):
        msg = MAKERS["quote" if kind == "quote-caused" else kind](row)
        cause = 0 if kind == "quote-caused" and row else None
        builder.encoders[type(msg)](msg, row, cause)
    built = builder.build_rows(len(kinds))
    parts = [(built, 0, len(kinds))]
    if bulk:  # bulk quotes, appended in slices between the builder's rows
        code = KINDS.index(QuoteTick)
        rows = columns_rows(
            pa.array([code] * bulk, pa.int8()),
            {
                "ts_recv": list(range(bulk)),
                "instrument": {
                    "none": ["X"] * bulk,
                    "all": ["Y"] * bulk,
                    "some": ["XY"[i % 3 == 1] for i in range(bulk)],
                }[others],
                "venue": ["V"] * bulk,
                "bid_price": list(range(bulk)),
                "bid_size": [1] * bulk,
                "ask_price": list(range(1, bulk + 1)),
                "ask_size": [2] * bulk,
            },
            {"instrument": "XY"[others == "all"], "venue": "V"}
            if declared and others != "some"
            else None,
        )
        bounds = sorted({0, bulk, *(c for c in cuts if c < bulk)})
        slices = [(rows, a, b) for a, b in itertools.pairwise(bounds) if b > a]
        parts = [slices[0], (built, 0, len(kinds)), *slices[1:]]
    market, entries = assemble_split(7, parts, RUN)
    whole = assemble(7, parts)
    assert market is None or market.schema.equals(MARKET_SCHEMA)
    assert entries is None or entries.schema.equals(SCHEMA)
    # quotes with a cause stay in the wide table; alerts never go to the market table
    if market is not None:
        assert set(market.column("kind").to_pylist()) <= {"QuoteTick", "TradeTick"}
        # and only the run's instruments and venues, coded in its dictionaries
        assert set(market.column("instrument").to_pylist()) == {"X"}
        assert market.column("instrument").dictionary.equals(
            RUN.dictionaries[SCHEMA.get_field_index("instrument")]
        )
    merged = merge(entries, market)
    assert decode(merged) == decode(whole)
    assert merged.column(0).to_pylist() == list(range(7, 7 + whole.num_rows))


def test_columns_rows_when_one_value_names_a_column_not_given_then_error() -> None:
    code = KINDS.index(QuoteTick)
    with pytest.raises(CodecError, match="one value given for 'venue', not a column given"):
        columns_rows(pa.array([code], pa.int8()), {"instrument": ["X"]}, {"venue": "V"})
    with pytest.raises(CodecError, match="one value given for 'nope', not a column given"):
        columns_rows(pa.array([code], pa.int8()), {"instrument": ["X"]}, {"nope": "V"})
