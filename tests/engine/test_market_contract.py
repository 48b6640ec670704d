"""The engine's market-data contract: runners may hand it the last tick per key only.

Feeding every quote and trade, or only the last of each per (instrument, venue), must
leave an engine that answers every later input identically, and market data must never
produce effects.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.core import Engine
from engine.messages import (
    AssetClass,
    Instrument,
    Message,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SignalIntent,
    TradeTick,
)

INSTRUMENTS = tuple(
    Instrument(
        instrument=n,
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=2,
        size_precision=2,
        min_notional=500,
        venue_symbols={"A": n, "B": n},
    )
    for n in ("X", "Y")
)

_tick = st.one_of(
    st.builds(
        QuoteTick,
        ts_recv=st.just(0),
        instrument=st.sampled_from("XY"),
        venue=st.sampled_from("AB"),
        bid_price=st.none() | st.integers(1, 300),
        bid_size=st.integers(0, 50),
        ask_price=st.none() | st.integers(1, 300),
        ask_size=st.integers(0, 50),
    ),
    st.builds(
        TradeTick,
        ts_recv=st.just(0),
        instrument=st.sampled_from("XY"),
        venue=st.sampled_from("AB"),
        price=st.integers(1, 300),
        qty=st.integers(1, 50),
    ),
)
_signal = st.builds(
    Signal,
    ts_recv=st.just(0),
    signal_id=st.just("s"),
    strategy=st.just("p"),
    account=st.just("ACC"),
    instrument=st.sampled_from("XY"),
    venue=st.none() | st.sampled_from("AB"),
    intent=st.sampled_from([SignalIntent.ORDER, SignalIntent.TARGET]),
    side=st.sampled_from(list(Side)),
    qty=st.integers(1, 40),
    target=st.integers(-40, 40),
    order_type=st.sampled_from([OrderType.MARKET, OrderType.LIMIT]),
    price=st.integers(1, 300),
    signal_price=st.none() | st.integers(1, 300),
)


def last_per_key(ticks: list[Message]) -> list[Message]:
    last: dict[tuple[type, str, str], int] = {}
    for i, t in enumerate(ticks):
        last[type(t), t.instrument, t.venue] = i  # type: ignore[attr-defined]
    return [ticks[i] for i in sorted(last.values())]


@settings(max_examples=200)
@given(ticks=st.lists(_tick, max_size=40), probe=_signal)
def test_engine_when_only_last_tick_per_key_then_same_answers(
    ticks: list[Message], probe: Signal
) -> None:
    config = EngineConfig(run_id="r", instruments=INSTRUMENTS)
    every, last = Engine(config), Engine(config)
    assert all(every.handle(t) == [] for t in ticks)
    assert all(last.handle(t) == [] for t in last_per_key(ticks))
    for name in "XY":
        for venue in "AB":
            assert every.mark_price(name, venue) == last.mark_price(name, venue)
    if probe.order_type is not OrderType.LIMIT:
        probe = Signal(**{**{f: getattr(probe, f) for f in probe.__struct_fields__}, "price": None})
    assert every.handle(probe) == last.handle(probe)
