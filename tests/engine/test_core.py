"""Engine.handle: signals and their denials, venue events, operator inputs, reconciliation."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.core import Engine
from engine.ids import IdGenerator
from engine.instruments import normalise_order, notional, round_price, round_qty
from engine.messages import (
    Alert,
    AssetClass,
    CancelOrder,
    CancelRejected,
    Instrument,
    KillSwitch,
    LimitOverride,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderStatus,
    OrderStatusReport,
    OrderType,
    PositionAdjusted,
    PositionReport,
    QuoteTick,
    ReplaceRejected,
    ReportsDone,
    RequestReports,
    Resume,
    ScheduleTimer,
    Severity,
    Side,
    Signal,
    SignalIntent,
    SignalRejected,
    SubmitOrder,
    TimeInForce,
    TimerFired,
    TradeTick,
    VenueConnected,
    VenueDisconnected,
)
from engine.orders import PREVIOUS, TRANSITIONS, Order, OrderEvent

S = OrderStatus
BTC = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=4,
    tick_size=5,
    lot_size=2,
    min_qty=4,
    venue_symbols={"V1": "BTC/USD", "V2": "BTCUSD"},
)
AAPL = Instrument(
    instrument="AAPL",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    min_notional=100_00,
    venue_symbols={"V1": "AAPL"},
)
ES = Instrument(
    instrument="ES",
    asset_class=AssetClass.FUTURE,
    currency="USD",
    price_precision=2,
    size_precision=0,
    tick_size=25,
    multiplier=50,
    venue_symbols={"CME": "ES"},
)
NOW = 1_000


def make_engine(**kw: Any) -> Engine:
    return Engine(EngineConfig(run_id="run", instruments=(BTC, AAPL, ES), **kw))


def signal(n: int = 1, **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": NOW,
        "signal_id": f"sig-{n}",
        "strategy": "s1",
        "account": "acc",
        "instrument": "BTC-USD",
        "side": Side.BUY,
        "qty": 10,
    }
    fields.update(kw)
    return Signal(**fields)


def submit(engine: Engine, n: int = 1, **kw: Any) -> Order:
    effects = engine.handle(signal(n, **kw))
    assert isinstance(effects[0], SubmitOrder), effects
    return engine.orders[effects[0].order_id]


def fill(order: Order, qty: int, price: int = 100, trade: str = "t1", **kw: Any) -> OrderFilled:
    fields: dict[str, Any] = {
        "ts_recv": NOW + 10,
        "order_id": order.order_id,
        "venue": order.venue,
        "trade_id": trade,
        "price": price,
        "qty": qty,
    }
    fields.update(kw)
    return OrderFilled(**fields)


def denial(engine: Engine, sig: Signal) -> SignalRejected:
    effects = engine.handle(sig)
    assert len(effects) == 1 and isinstance(effects[0], SignalRejected), effects
    return effects[0]


def only_alert(effects: list[Message], code: str) -> Alert:
    assert len(effects) == 1 and isinstance(effects[0], Alert), effects
    assert effects[0].code == code
    return effects[0]


# --- signals ------------------------------------------------------------------------


def test_engine_signal_when_valid_then_submit_and_ack_watchdog_armed() -> None:
    engine = make_engine()
    effects = engine.handle(signal(signal_price=100))
    assert effects == [
        SubmitOrder(
            ts_recv=NOW,
            order_id="run-1",
            venue="V1",
            instrument="BTC-USD",
            account="acc",
            strategy="s1",
            side=Side.BUY,
            qty=10,
            order_type=OrderType.MARKET,
            tif=TimeInForce.GTC,
            signal_id="sig-1",
        ),
        ScheduleTimer(
            ts_recv=NOW,
            timer_id="run-t1",
            fire_at=NOW + 5_000_000_000,
            purpose="ack_timeout",
            order_id=None,
        ),
    ]
    order = engine.orders["run-1"]
    assert (order.status, order.leaves_qty, order.signal_id) == (S.PENDING_NEW, 10, "sig-1")


def test_engine_signal_when_limit_orders_then_prices_round_never_worse() -> None:
    engine = make_engine()
    buy = submit(engine, 1, order_type=OrderType.LIMIT, price=103, qty=7)
    sell = submit(engine, 2, order_type=OrderType.LIMIT, price=103, side=Side.SELL)
    stop = submit(engine, 3, order_type=OrderType.STOP_LIMIT, price=99, stop_price=101)
    assert (buy.price, buy.qty) == (100, 6)
    assert sell.price == 105
    assert (stop.price, stop.stop_price) == (95, 100)
    assert list(engine.orders) == ["run-1", "run-2", "run-3"]


def test_engine_signal_when_venue_given_or_configured_then_used() -> None:
    engine = make_engine(default_venue={"BTC-USD": "V2"})
    assert submit(engine, 1).venue == "V2"
    assert submit(engine, 2, venue="V1").venue == "V1"


DENIALS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "unknown instrument",
        {"instrument": "DOGE"},
        "unknown_instrument",
        "instrument 'DOGE' unknown: expected one of AAPL, BTC-USD, ES",
    ),
    (
        "venue not listed",
        {"venue": "V9"},
        "unknown_venue",
        "venue 'V9' not listed for BTC-USD: expected one of V1, V2",
    ),
    ("order without side", {"side": None}, "intent", "ORDER signal needs side, got None"),
    ("order with qty 0", {"qty": 0}, "intent", "ORDER signal needs qty > 0, got 0"),
    ("order with qty < 0", {"qty": -5}, "schema", "signal sig-1: qty must be >= 0, got -5"),
    ("order with qty 0", {"qty": 0}, "intent", "ORDER signal needs qty > 0, got 0"),
    (
        "target without target",
        {"intent": SignalIntent.TARGET},
        "intent",
        "TARGET signal needs target, got None",
    ),
    (
        "limit without price",
        {"order_type": OrderType.LIMIT},
        "price",
        "LIMIT order needs price, got None",
    ),
    (
        "market with price",
        {"price": 100},
        "price",
        "MARKET order takes no price: expected None, got 100",
    ),
    (
        "stop without stop_price",
        {"order_type": OrderType.STOP},
        "stop_price",
        "STOP order needs stop_price, got None",
    ),
    (
        "limit with stop_price",
        {"order_type": OrderType.LIMIT, "price": 100, "stop_price": 90},
        "stop_price",
        "LIMIT order takes no stop_price: expected None, got 90",
    ),
    (
        "qty above max",
        {"qty": 102},
        "max_order_qty",
        "qty 102 above max_order_qty 100 for BTC-USD (config for scope '*')",
    ),
    (
        "qty below lot",
        {"qty": 1},
        "lot_size",
        "qty 1 rounds to 0 at lot_size 2 for BTC-USD: expected at least 2",
    ),
    ("qty below min_qty", {"qty": 2}, "min_qty", "qty 2 below min_qty 4 for BTC-USD"),
    (
        "qty rounds below min_qty",
        {"qty": 3},
        "min_qty",
        "qty 3 (rounded to lot_size 2: 2) below min_qty 4 for BTC-USD",
    ),
    (
        "notional below min",
        {"instrument": "AAPL", "qty": 3, "signal_price": 30_00},
        "min_notional",
        "notional 9000 (qty 3 x signal_price 3000 x multiplier 1) below min_notional 10000 "
        "for AAPL",
    ),
    (
        "notional without reference",
        {"instrument": "AAPL", "qty": 3},
        "min_notional",
        "min_notional 10000 for AAPL needs a reference price: expected a limit price, "
        "a signal_price or a quote on the far side, got none",
    ),
]


@pytest.mark.parametrize(
    ("kw", "code", "reason"), [d[1:] for d in DENIALS], ids=[d[0] for d in DENIALS]
)
def test_engine_signal_when_check_fails_then_rejected_with_reason(
    kw: dict[str, Any], code: str, reason: str
) -> None:
    engine = make_engine(max_order_qty={"*": 100})
    rejected = denial(engine, signal(**kw))
    assert (rejected.code, rejected.reason) == (code, reason)
    assert (rejected.signal_id, rejected.strategy, rejected.account) == ("sig-1", "s1", "acc")
    assert rejected.instrument == kw.get("instrument", "BTC-USD")
    assert rejected.ts_recv == NOW
    assert not engine.orders


def test_engine_signal_when_instrument_has_no_venue_then_unknown_venue() -> None:
    bare = msgspec.structs.replace(BTC, instrument="BARE", venue_symbols={})
    engine = Engine(EngineConfig(run_id="run", instruments=(bare,)))
    rejected = denial(engine, signal(instrument="BARE"))
    assert rejected.code == "unknown_venue"
    assert rejected.reason == (
        "no venue for BARE: expected signal.venue, a default_venue or venue_symbols, got none"
    )


def test_engine_signal_when_notional_from_quote_far_side_then_checked() -> None:
    engine = make_engine()
    engine.handle(
        QuoteTick(
            ts_recv=NOW,
            instrument="AAPL",
            venue="V1",
            bid_price=20_00,
            bid_size=1,
            ask_price=40_00,
            ask_size=1,
        )
    )
    submit(engine, 1, instrument="AAPL", qty=3)  # 3 x ask 4000 = 12000
    rejected = denial(engine, signal(2, instrument="AAPL", qty=3, side=Side.SELL))
    assert rejected.reason == (
        "notional 6000 (qty 3 x bid 2000 x multiplier 1) below min_notional 10000 for AAPL"
    )


def test_engine_signal_when_duplicate_id_then_rejected_and_nothing_sent() -> None:
    engine = make_engine()
    submit(engine)
    rejected = denial(engine, signal(qty=20))
    assert rejected.code == "duplicate_signal"
    assert rejected.reason == "duplicate signal_id sig-1: already handled, nothing sent"
    assert len(engine.orders) == 1


def test_engine_signal_when_first_was_denied_then_duplicate_still_denied() -> None:
    engine = make_engine()
    assert denial(engine, signal(qty=0)).code == "intent"
    assert denial(engine, signal(qty=10)).code == "duplicate_signal"


def test_engine_signal_when_venue_disconnected_then_denied_until_reconnected() -> None:
    engine = make_engine()
    assert engine.handle(VenueDisconnected(ts_recv=500, venue="V1", reason="socket closed")) == []
    engine.handle(VenueDisconnected(ts_recv=700, venue="V1", reason="again"))
    rejected = denial(engine, signal())
    assert rejected.code == "venue_disconnected"
    assert rejected.reason == "venue V1 disconnected since ts 500 (socket closed)"
    submit(engine, 2, venue="V2")
    effects = engine.handle(VenueConnected(ts_recv=800, venue="V1"))
    assert effects[0] == RequestReports(
        ts_recv=800, venue="V1", reason="reconnect after disconnect at ts 500 (socket closed)"
    )
    assert denial(engine, signal(3)).code == "venue_reconciling"
    done = engine.handle(ReportsDone(ts_recv=900, venue="V1"))
    assert only_alert(done, "RECONCILED").severity is Severity.INFO
    submit(engine, 4)


# --- TARGET signals -----------------------------------------------------------------


def target(n: int, value: int, **kw: Any) -> Signal:
    return signal(n, intent=SignalIntent.TARGET, side=None, qty=0, target=value, **kw)


def test_engine_target_when_flat_then_order_for_target() -> None:
    engine = make_engine()
    order = submit(engine, 1, intent=SignalIntent.TARGET, side=None, qty=0, target=-8)
    assert (order.side, order.qty) == (Side.SELL, 8)


def test_engine_target_when_position_and_working_orders_then_order_for_difference() -> None:
    engine = make_engine()
    first = submit(engine, 1, qty=10)
    engine.handle(fill(first, 4))  # position 4, working 6 more
    other = submit(engine, 2, qty=8, strategy="s2")  # another strategy: not counted
    assert other.strategy == "s2"
    order = submit(engine, 3, intent=SignalIntent.TARGET, side=None, qty=0, target=20)
    assert (order.side, order.qty) == (Side.BUY, 10)
    order = submit(engine, 4, intent=SignalIntent.TARGET, side=None, qty=0, target=0)
    assert (order.side, order.qty) == (Side.SELL, 20)


def test_engine_target_when_already_met_then_no_effect() -> None:
    engine = make_engine()
    submit(engine, 1, qty=6)
    assert engine.handle(target(2, 6)) == []
    assert len(engine.orders) == 1


def test_engine_target_when_order_finished_then_leaves_no_longer_counted() -> None:
    engine = make_engine()
    order = submit(engine, 1, qty=6)
    engine.handle(OrderCanceled(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    assert submit(engine, 2, intent=SignalIntent.TARGET, side=None, qty=0, target=6).qty == 6


# --- limits -------------------------------------------------------------------------


def test_engine_max_order_qty_when_instrument_and_default_then_instrument_wins() -> None:
    engine = make_engine(max_order_qty={"BTC-USD": 20, "*": 4})
    submit(engine, 1, qty=20)
    assert denial(engine, signal(2, qty=22)).code == "max_order_qty"
    assert denial(engine, signal(3, instrument="ES", qty=5)).reason == (
        "qty 5 above max_order_qty 4 for ES (config for scope '*')"
    )


def test_engine_limit_override_when_active_then_replaces_config_until_expiry() -> None:
    engine = make_engine(max_order_qty={"BTC-USD": 20})
    override = LimitOverride(
        ts_recv=NOW,
        operator="ann",
        reason="size up",
        limit="max_order_qty",
        scope="BTC-USD",
        value=50,
        expires_at=NOW + 100,
    )
    assert engine.handle(override) == []
    submit(engine, 1, qty=50)
    assert denial(engine, signal(2, qty=52)).reason == (
        "qty 52 above max_order_qty 50 for BTC-USD (override by ann for scope 'BTC-USD')"
    )
    assert denial(engine, signal(3, qty=22, ts_recv=NOW + 100)).reason == (
        "qty 22 above max_order_qty 20 for BTC-USD (config for scope 'BTC-USD')"
    )


def test_engine_limit_override_when_default_scope_then_applies_to_unconfigured() -> None:
    engine = make_engine()
    engine.handle(
        LimitOverride(ts_recv=NOW, operator="ann", reason="r", limit="max_order_qty", value=4)
    )
    assert denial(engine, signal(qty=6)).code == "max_order_qty"


@pytest.mark.parametrize(
    ("limit", "scope", "value", "text"),
    [
        (
            "max_notional",
            "*",
            5,
            "LimitOverride by ann: limit 'max_notional' unknown, expected one of "
            "max_order_qty, max_order_notional, max_net_qty, max_gross_qty, max_net_notional, "
            "max_gross_notional, max_orders_per_window, daily_loss, max_drawdown; ignored",
        ),
        (
            "max_order_qty",
            "DOGE",
            5,
            "LimitOverride by ann: scope 'DOGE' is not a known instrument or '*'; ignored",
        ),
        ("max_order_qty", "*", -1, "LimitOverride by ann: value must be >= 0, got -1; ignored"),
    ],
)
def test_engine_limit_override_when_invalid_then_alert_and_ignored(
    limit: str, scope: str, value: int, text: str
) -> None:
    engine = make_engine()
    effects = engine.handle(
        LimitOverride(
            ts_recv=NOW, operator="ann", reason="r", limit=limit, scope=scope, value=value
        )
    )
    assert only_alert(effects, "INVALID_OVERRIDE").text == text
    submit(engine, qty=100)


# --- venue events ----------------------------------------------------------------------


def test_engine_accepted_when_pending_then_accepted_with_venue_order_id() -> None:
    engine = make_engine()
    order = submit(engine)
    effects = engine.handle(
        OrderAccepted(ts_recv=NOW + 1, order_id=order.order_id, venue="V1", venue_order_id="X9")
    )
    assert effects == []
    assert (order.status, order.venue_order_id, order.ts_last) == (S.ACCEPTED, "X9", NOW + 1)


def test_engine_fill_when_partial_then_full_then_positions_follow() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    assert engine.handle(fill(order, 4, price=100, trade="a", fee=3)) == []
    assert order.status is S.PARTIALLY_FILLED
    assert engine.handle(fill(order, 6, price=110, trade="b", fee=2)) == []
    assert (order.status, order.filled_qty, order.fill_value, order.fees) == (
        S.FILLED,
        10,
        400 + 660,
        5,
    )
    pos = engine.positions.strategy_position("acc", "s1", "BTC-USD")
    net = engine.positions.net_position("acc", "BTC-USD")
    assert pos is not None and net is not None
    assert (pos.qty, pos.cost, pos.fees) == (10, 1060, 5)
    assert (net.qty, net.cost, net.fees) == (10, 1060, 5)


def test_engine_fill_when_multiplier_then_pnl_scaled() -> None:
    engine = make_engine()
    buy = submit(engine, 1, instrument="ES", qty=2)
    engine.handle(fill(buy, 2, price=5000))
    sell = submit(engine, 2, instrument="ES", qty=1, side=Side.SELL)
    engine.handle(fill(sell, 1, price=5025, trade="t2"))
    pos = engine.positions.strategy_position("acc", "s1", "ES")
    assert pos is not None
    assert (pos.qty, pos.realised, pos.unrealised(5050)) == (1, 25 * 50, 50 * 50)


def test_engine_fill_when_duplicate_trade_id_then_dropped_and_counted() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    engine.handle(fill(order, 4, trade="a"))
    assert engine.handle(fill(order, 4, trade="a")) == []
    assert (order.filled_qty, engine.duplicate_fills) == (4, 1)
    assert engine.positions.strategy_qty("acc", "s1", "BTC-USD") == 4


def test_engine_fill_when_duplicate_trade_id_after_cancel_then_dropped_before_table() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    engine.handle(fill(order, 4, trade="a"))
    engine.handle(OrderCanceled(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    assert engine.handle(fill(order, 4, trade="a")) == []
    assert engine.duplicate_fills == 1
    assert engine.anomalies == 0


def test_engine_fill_when_overfill_then_booked_and_critical_alert() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    engine.handle(fill(order, 8, trade="a"))
    alert = only_alert(engine.handle(fill(order, 4, trade="b")), "OVERFILL")
    assert alert.severity is Severity.CRITICAL
    assert alert.text == (
        "order run-1 filled 12 of qty 10 (trade b for 4): booked to positions; reconcile"
    )
    assert (order.status, order.filled_qty, order.leaves_qty) == (S.FILLED, 12, 0)
    only_alert(engine.handle(fill(order, 1, trade="c")), "OVERFILL")
    assert engine.positions.strategy_qty("acc", "s1", "BTC-USD") == 13


def test_engine_fill_when_after_cancel_then_booked_and_status_kept() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    engine.handle(OrderCanceled(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    assert engine.handle(fill(order, 4)) == []
    assert (order.status, order.filled_qty) == (S.CANCELED, 4)
    assert engine.positions.strategy_qty("acc", "s1", "BTC-USD") == 4


def test_engine_fill_when_qty_not_positive_then_anomaly() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    alert = only_alert(engine.handle(fill(order, 0)), "ORDER_ANOMALY")
    assert alert.text == (
        "OrderFilled (PARTIAL_FILL) for order run-1 in PENDING_NEW: fill qty must be > 0, "
        "got 0; order unchanged"
    )
    assert order.filled_qty == 0


def test_engine_venue_event_when_unknown_order_then_alert() -> None:
    engine = make_engine()
    effects = engine.handle(OrderAccepted(ts_recv=NOW, order_id="nope", venue="V1"))
    alert = only_alert(effects, "UNKNOWN_ORDER")
    assert alert.text == "OrderAccepted from V1 for order_id 'nope': no such order; ignored"
    assert alert.severity is Severity.WARNING
    fill_alert = only_alert(
        engine.handle(
            OrderFilled(ts_recv=NOW, order_id="nope", venue="V1", trade_id="t", price=1, qty=1)
        ),
        "UNKNOWN_ORDER",
    )
    assert fill_alert.severity is Severity.CRITICAL
    assert engine.anomalies == 2


def test_engine_venue_event_when_from_other_venue_then_anomaly_and_unchanged() -> None:
    engine = make_engine()
    order = submit(engine)
    alert = only_alert(
        engine.handle(OrderAccepted(ts_recv=NOW, order_id=order.order_id, venue="V2")),
        "ORDER_ANOMALY",
    )
    assert alert.text == "OrderAccepted for order run-1 came from venue V2, expected V1; ignored"
    assert order.status is S.PENDING_NEW


def test_engine_replaced_when_pending_replace_then_terms_updated() -> None:
    engine = make_engine()
    order = submit(engine, qty=10, order_type=OrderType.LIMIT, price=100)
    engine.handle(OrderAccepted(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    order.apply(OrderEvent.REPLACE_REQUESTED, NOW)
    engine.handle(fill(order, 2))
    replaced = OrderReplaced(
        ts_recv=NOW, order_id=order.order_id, venue="V1", qty=14, price=95, venue_order_id="X2"
    )
    assert engine.handle(replaced) == []
    assert (order.status, order.qty, order.price, order.venue_order_id) == (
        S.PARTIALLY_FILLED,
        14,
        95,
        "X2",
    )
    assert order.leaves_qty == 12


def test_engine_replaced_when_qty_not_above_filled_then_anomaly() -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    engine.handle(fill(order, 4))
    order.apply(OrderEvent.REPLACE_REQUESTED, NOW)
    alert = only_alert(
        engine.handle(OrderReplaced(ts_recv=NOW, order_id=order.order_id, venue="V1", qty=4)),
        "ORDER_ANOMALY",
    )
    assert "replaced qty 4 must exceed filled_qty 4" in alert.text
    assert (order.status, order.qty) == (S.PENDING_REPLACE, 10)


# Every (status, venue event) pair. Requests are ours, not venue events; a fill on a
# FILLED order is an overfill (booked, tested above), so those pairs are left out here.
def venue_message(event: OrderEvent, order: Order) -> Message:
    base: dict[str, Any] = {"ts_recv": NOW + 5, "order_id": order.order_id, "venue": "V1"}
    if event is OrderEvent.PARTIAL_FILL:
        return OrderFilled(**base, trade_id="p", price=100, qty=1)
    if event is OrderEvent.FULL_FILL:
        return OrderFilled(**base, trade_id="f", price=100, qty=order.qty - order.filled_qty)
    if event is OrderEvent.REPLACED:
        return OrderReplaced(**base, qty=order.qty + 2)
    classes: dict[OrderEvent, type[Message]] = {
        OrderEvent.ACCEPTED: OrderAccepted,
        OrderEvent.REJECTED: OrderRejected,
        OrderEvent.CANCELED: OrderCanceled,
        OrderEvent.CANCEL_REJECTED: CancelRejected,
        OrderEvent.REPLACE_REJECTED: ReplaceRejected,
        OrderEvent.EXPIRED: OrderExpired,
    }
    cls = classes[event]
    if cls in (OrderRejected, CancelRejected, ReplaceRejected):
        base["reason"] = "venue says no"
    return cls(**base)


VENUE_PAIRS = [
    (status, event)
    for status, event in itertools.product(OrderStatus, OrderEvent)
    if event not in (OrderEvent.CANCEL_REQUESTED, OrderEvent.REPLACE_REQUESTED)
    and not (status is S.FILLED and event in (OrderEvent.PARTIAL_FILL, OrderEvent.FULL_FILL))
]


@pytest.mark.parametrize(("status", "event"), VENUE_PAIRS, ids=str)
def test_engine_venue_event_when_any_status_then_table_or_anomaly(
    status: OrderStatus, event: OrderEvent
) -> None:
    engine = make_engine()
    order = submit(engine, qty=10)
    filled = {S.PARTIALLY_FILLED: 4, S.FILLED: 10}.get(status, 0)
    if filled:
        engine.handle(fill(order, filled, trade="setup"))
    order.status = status
    order.previous = S.PARTIALLY_FILLED if filled else S.ACCEPTED
    before = (order.filled_qty, order.qty)
    effects = engine.handle(venue_message(event, order))
    target = TRANSITIONS.get((status, event))
    if status is S.REJECTED and event in (OrderEvent.PARTIAL_FILL, OrderEvent.FULL_FILL):
        # The venue says it traded: booked, whatever the order's state says.
        alert = only_alert(effects, "FILL_AFTER_REJECT")
        assert alert.severity is Severity.CRITICAL and "booked to positions" in alert.text
        assert order.status is S.REJECTED and order.filled_qty > before[0]
    elif target is None:
        alert = only_alert(effects, "ORDER_ANOMALY")
        assert f"({event.value}) for order run-1 in {status.value}" in alert.text
        assert alert.text.endswith("not a legal transition; order unchanged")
        assert (order.status, order.filled_qty, order.qty) == (status, *before)
        assert engine.anomalies == 1
    else:
        if event is OrderEvent.REJECTED and status is not S.REJECTED:
            alert = only_alert(effects, "ORDER_REJECTED")
            why = (
                "a cancel was pending: not retried"
                if status is S.PENDING_CANCEL
                else "not retryable"
            )
            assert alert.text.endswith(f"rejected by V1: venue says no ({why})")
        elif event is OrderEvent.CANCEL_REJECTED and status is S.PENDING_CANCEL:
            alert = only_alert(effects, "CANCEL_REJECTED")  # the order works on: said so
            assert alert.severity is Severity.WARNING and "keeps working" in alert.text
        else:
            assert effects == []
        assert order.status is (order.previous if target is PREVIOUS else target)
        assert engine.anomalies == 0


# --- timers -------------------------------------------------------------------------


def ack_timer(ts: int = NOW + 5_000_000_000, timer_id: str = "run-t1") -> TimerFired:
    """The ack watchdog firing (armed by the first order sent: the first timer id)."""
    return TimerFired(ts_recv=ts, timer_id=timer_id, purpose="ack_timeout")


def test_engine_ack_timeout_when_still_pending_new_then_warning() -> None:
    engine = make_engine()
    submit(engine)
    alert = only_alert(engine.handle(ack_timer()), "ACK_TIMEOUT")
    assert alert.severity is Severity.WARNING
    assert alert.text == "order run-1 on V1 not acknowledged after 5000 ms"
    assert (alert.order_id, alert.venue, alert.instrument) == ("run-1", "V1", "BTC-USD")


def test_engine_ack_timeout_when_acknowledged_or_not_the_watchdog_then_nothing() -> None:
    engine = make_engine()
    order = submit(engine)
    assert engine.handle(ack_timer(timer_id="other")) == []  # not the armed watchdog
    engine.handle(OrderAccepted(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    assert engine.handle(ack_timer()) == []
    assert engine.handle(ack_timer()) == []  # fired already: disarmed


def test_engine_ack_watchdog_when_many_orders_then_one_timer_each_alert_at_its_deadline() -> None:
    """One timer watches every order sent: set for the earliest deadline, it alerts each
    order still unacknowledged at its own deadline, then is set for the next one; an
    acknowledged order is passed over, and with nothing waiting it is not set again until
    the next order."""
    engine = make_engine()
    timeout = 5_000_000_000
    sent_at = [NOW + n * 1_000_000_000 for n in range(4)]
    effects = [e for n, ts in enumerate(sent_at, 1) for e in engine.handle(signal(n, ts_recv=ts))]
    armed = [e for e in effects if isinstance(e, ScheduleTimer)]
    assert [(t.purpose, t.fire_at, t.order_id) for t in armed] == [
        ("ack_timeout", sent_at[0] + timeout, None)
    ]
    for n in (1, 3):  # orders 1 and 3 are acknowledged, 2 and 4 never are
        accepted = OrderAccepted(ts_recv=sent_at[n - 1] + 5, order_id=f"run-{n}", venue="V1")
        assert engine.handle(accepted) == []
    [again] = engine.handle(ack_timer(armed[0].fire_at, armed[0].timer_id))
    assert isinstance(again, ScheduleTimer) and again.fire_at == sent_at[1] + timeout
    alert, again = engine.handle(ack_timer(again.fire_at, again.timer_id))
    assert isinstance(alert, Alert) and (alert.code, alert.order_id) == ("ACK_TIMEOUT", "run-2")
    assert alert.ts_recv == sent_at[1] + timeout
    assert isinstance(again, ScheduleTimer) and again.fire_at == sent_at[3] + timeout
    alert = only_alert(engine.handle(ack_timer(again.fire_at, again.timer_id)), "ACK_TIMEOUT")
    assert (alert.order_id, alert.ts_recv) == ("run-4", sent_at[3] + timeout)
    # nothing waits now: the next order arms the watchdog again
    later = again.fire_at + 1
    [rearmed] = [e for e in engine.handle(signal(9, ts_recv=later)) if isinstance(e, ScheduleTimer)]
    assert (rearmed.purpose, rearmed.fire_at) == ("ack_timeout", later + timeout)


def test_engine_timer_when_unknown_purpose_then_alert() -> None:
    engine = make_engine()
    effects = engine.handle(TimerFired(ts_recv=NOW, timer_id="x", purpose="coffee"))
    assert only_alert(effects, "UNKNOWN_TIMER").text == (
        "timer x has purpose 'coffee': expected one of ack_timeout, retry, partial_timeout, "
        "chase, stale_order, slice, breaker, risk_check, recon_timeout, session, "
        "day_expiry, cancel_retry; ignored"
    )


# --- kill switch ----------------------------------------------------------------------


def test_engine_kill_switch_when_orders_working_then_cancels_in_creation_order() -> None:
    engine = make_engine()
    a = submit(engine, 1)
    b = submit(engine, 2, venue="V2")
    done = submit(engine, 3)
    engine.handle(fill(done, 10))
    engine.handle(OrderAccepted(ts_recv=NOW, order_id=a.order_id, venue="V1", venue_order_id="VA"))
    c = submit(engine, 4)
    effects = engine.handle(KillSwitch(ts_recv=2_000, operator="ann", reason="runaway"))
    assert effects == [
        CancelOrder(
            ts_recv=2_000, order_id="run-1", venue="V1", instrument="BTC-USD", venue_order_id="VA"
        ),
        CancelOrder(ts_recv=2_000, order_id="run-2", venue="V2", instrument="BTC-USD"),
        CancelOrder(ts_recv=2_000, order_id="run-4", venue="V1", instrument="BTC-USD"),
    ]
    assert [a.status, b.status, c.status] == [S.PENDING_CANCEL] * 3
    assert engine.halted
    # Orders already pending cancel are not canceled twice.
    assert engine.handle(KillSwitch(ts_recv=2_001, operator="ann", reason="again")) == []


def test_engine_kill_switch_when_halted_then_signals_denied_until_resume() -> None:
    engine = make_engine()
    engine.handle(KillSwitch(ts_recv=2_000, operator="ann", reason="runaway"))
    rejected = denial(engine, signal(1))
    assert rejected.code == "halted"
    assert rejected.reason == "trading halted for the firm (ann: runaway): signal sig-1 denied"
    assert engine.handle(Resume(ts_recv=3_000, operator="bob", reason="fixed")) == []
    assert not engine.halted
    submit(engine, 2)


def test_engine_kill_switch_when_flatten_then_market_orders_close_positions() -> None:
    engine = make_engine()
    s2 = submit(engine, 1, strategy="s2", qty=6)
    engine.handle(fill(s2, 6, trade="a"))
    s1 = submit(engine, 2, strategy="s1", qty=4, side=Side.SELL, venue="V2")
    engine.handle(fill(s1, 4, trade="b"))
    es = submit(engine, 3, instrument="ES", qty=2)
    engine.handle(fill(es, 2, price=5000, trade="c"))
    effects = engine.handle(KillSwitch(ts_recv=2_000, operator="ann", reason="r", flatten=True))
    submits = [e for e in effects if isinstance(e, SubmitOrder)]
    assert [(e.strategy, e.instrument, e.side, e.qty, e.venue) for e in submits] == [
        ("s1", "BTC-USD", Side.BUY, 4, "V1"),
        ("s1", "ES", Side.SELL, 2, "CME"),
        ("s2", "BTC-USD", Side.SELL, 6, "V1"),
    ]
    assert all(e.order_type is OrderType.MARKET and e.tif is TimeInForce.IOC for e in submits)
    assert all(e.signal_id is None for e in submits)
    # the ack watchdog, armed by the first order, watches these too: no timer of their own
    assert [e for e in effects if isinstance(e, ScheduleTimer)] == []
    [again] = engine.handle(ack_timer())  # the first orders filled: set for these
    assert isinstance(again, ScheduleTimer) and again.fire_at == 2_000 + 5_000_000_000
    alerts = engine.handle(ack_timer(again.fire_at, again.timer_id))
    assert [a.order_id for a in alerts if isinstance(a, Alert)] == [e.order_id for e in submits]


# --- reconciliation ---------------------------------------------------------------------


def status_report(order: Order, **kw: Any) -> OrderStatusReport:
    fields: dict[str, Any] = {
        "ts_recv": NOW,
        "venue": order.venue,
        "order_id": order.order_id,
        "instrument": order.instrument,
        "status": order.status,
        "side": order.side,
        "qty": order.qty,
        "filled_qty": order.filled_qty,
    }
    fields.update(kw)
    return OrderStatusReport(**fields)


def test_engine_status_report_when_matching_then_nothing() -> None:
    engine = make_engine()
    order = submit(engine)
    assert engine.handle(status_report(order)) == []


def test_engine_status_report_when_request_pending_and_venue_shows_previous_then_nothing() -> None:
    engine = make_engine()
    order = submit(engine)
    engine.handle(OrderAccepted(ts_recv=NOW, order_id=order.order_id, venue="V1"))
    engine.handle(KillSwitch(ts_recv=NOW, operator="ann", reason="r"))
    assert engine.handle(status_report(order, status=S.ACCEPTED)) == []


def test_engine_status_report_when_more_filled_then_fill_recovered() -> None:
    engine = make_engine()
    order = submit(engine)
    engine.handle(fill(order, 4, price=100))
    report = status_report(order, status=S.FILLED, filled_qty=10, avg_price=106)
    effects = engine.handle(report)
    [adjusted] = effects
    assert isinstance(adjusted, PositionAdjusted)
    assert (adjusted.code, adjusted.qty, adjusted.price) == ("RECOVERED_FILL", 6, 110)
    assert adjusted.reason == (
        "V1 reports filled_qty 10 on order run-1, engine had 4: booked the missing 6 at 110"
    )
    assert (order.status, order.filled_qty) == (S.FILLED, 10)
    assert engine.positions.strategy_qty("acc", "s1", "BTC-USD") == 10


def test_engine_status_report_when_different_then_recon_mismatch_and_instrument_halted() -> None:
    engine = make_engine()
    order = submit(engine)
    engine.handle(fill(order, 4))
    effects = engine.handle(status_report(order, qty=12))
    alert = effects[0]
    assert isinstance(alert, Alert) and alert.code == "RECON_MISMATCH"
    assert alert.severity is Severity.CRITICAL
    assert alert.text == (
        "V1 reports order run-1 with qty=12; engine has qty=10: "
        "instrument BTC-USD halted until an operator resumes it"
    )
    assert isinstance(effects[1], CancelOrder) and effects[1].order_id == "run-1"
    assert denial(engine, signal(2)).code == "halted"
    assert (
        engine.handle(Resume(ts_recv=NOW, operator="ann", reason="ok", scope="instrument:BTC-USD"))
        == []
    )
    submit(engine, 3)


def test_engine_status_report_when_unknown_order_then_recon_mismatch() -> None:
    engine = make_engine()
    order = submit(engine)
    effects = engine.handle(status_report(order, order_id=None, venue_order_id="X1"))
    assert only_alert(effects, "RECON_MISMATCH").text == (
        "V1 reports order order_id=None venue_order_id='X1' in PENDING_NEW: unknown to the engine"
    )


def test_engine_position_report_when_different_then_critical_mismatch() -> None:
    engine = make_engine()
    order = submit(engine)
    engine.handle(fill(order, 4))
    report = PositionReport(ts_recv=NOW, venue="V1", account="acc", instrument="BTC-USD", qty=4)
    assert engine.handle(report) == []
    effects = engine.handle(msgspec.structs.replace(report, qty=6))
    alert = effects[0]
    assert isinstance(alert, Alert) and alert.code == "RECON_MISMATCH"
    assert alert.severity is Severity.CRITICAL
    assert alert.text == (
        "V1 reports position 6 in BTC-USD for account acc; engine has 4 through V1 "
        "(difference 2, tolerance 0): instrument halted until an operator resumes it"
    )
    assert [type(e) for e in effects[1:]] == [CancelOrder]  # the working rest of run-1


# --- reference data, market data, anything else -----------------------------------------


def test_engine_instrument_when_new_then_tradable() -> None:
    engine = make_engine()
    eth = msgspec.structs.replace(BTC, instrument="ETH-USD", ts_recv=NOW)
    assert engine.handle(eth) == []
    assert engine.instruments["ETH-USD"] is eth
    submit(engine, instrument="ETH-USD")


def test_engine_instrument_when_invalid_then_alert_and_unchanged() -> None:
    engine = make_engine()
    bad = msgspec.structs.replace(BTC, tick_size=0, ts_recv=NOW)
    alert = only_alert(engine.handle(bad), "INVALID_INSTRUMENT")
    assert alert.text == (
        "instrument BTC-USD: tick_size must be >= 1, got 0; reference data unchanged"
    )
    assert engine.instruments["BTC-USD"] is BTC


def test_engine_config_when_invalid_instrument_then_value_error() -> None:
    with pytest.raises(ValueError, match="lot_size must be >= 1, got 0"):
        Engine(EngineConfig(run_id="r", instruments=(msgspec.structs.replace(BTC, lot_size=0),)))
    with pytest.raises(ValueError, match="BTC-USD listed twice"):
        Engine(EngineConfig(run_id="r", instruments=(BTC, BTC)))


def test_engine_config_when_converted_from_builtins_then_equal() -> None:
    config = EngineConfig(run_id="r", instruments=(BTC,), max_order_qty={"*": 5})
    assert msgspec.convert(msgspec.to_builtins(config), EngineConfig) == config


def test_engine_market_data_when_ticks_then_stored_without_effects() -> None:
    engine = make_engine()
    quote = QuoteTick(
        ts_recv=NOW,
        instrument="BTC-USD",
        venue="V1",
        bid_price=100,
        bid_size=1,
        ask_price=105,
        ask_size=2,
    )
    trade = TradeTick(ts_recv=NOW, instrument="BTC-USD", venue="V2", price=103, qty=1)
    assert engine.handle(quote) == []
    assert engine.handle(trade) == []
    assert engine.last_quote("BTC-USD", "V1") is quote
    assert engine.last_trade("BTC-USD", "V2") is trade
    assert engine.mark_price("BTC-USD") == 102
    assert engine.mark_price("BTC-USD", "V2") == 103
    assert engine.mark_price("ES") is None


@pytest.mark.parametrize(
    "msg",
    [
        CancelOrder(ts_recv=NOW, order_id="run-1", venue="V1", instrument="BTC-USD"),
        Alert(ts_recv=NOW, severity=Severity.INFO, code="X", text="x"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_engine_handle_when_not_an_input_then_alert(msg: Message) -> None:
    alert = only_alert(make_engine().handle(msg), "UNEXPECTED_INPUT")
    assert alert.text == f"{type(msg).__name__} is not an engine input; ignored"


# --- random venue event sequences ---------------------------------------------------------

_oid = st.sampled_from(["run-1", "run-2", "run-3", "run-9"])


@st.composite
def venue_inputs(draw: st.DrawFn) -> Message:
    oid = draw(_oid)
    venue = draw(st.sampled_from(["V1", "V1", "V1", "V2"]))
    base: dict[str, Any] = {
        "ts_recv": NOW + draw(st.integers(0, 10**10)),
        "order_id": oid,
        "venue": venue,
    }
    kind = draw(st.integers(0, 11))
    if kind <= 2:
        return OrderFilled(
            **base,
            trade_id=f"t{draw(st.integers(0, 8))}",
            price=draw(st.integers(-100, 200)),
            qty=draw(st.integers(-1, 7)),
            fee=draw(st.integers(-3, 3)),
        )
    if kind == 3:
        return OrderReplaced(
            **base, qty=draw(st.integers(0, 15)), price=draw(st.none() | st.integers(90, 110))
        )
    if kind == 4:
        return TimerFired(
            ts_recv=base["ts_recv"], timer_id="t", purpose="ack_timeout", order_id=oid
        )
    if kind == 5:
        return KillSwitch(
            ts_recv=base["ts_recv"], operator="ann", reason="r", flatten=draw(st.booleans())
        )
    if kind == 6:
        return status_report_for(base, draw)
    classes: list[type[Message]] = [
        OrderAccepted,
        OrderRejected,
        OrderCanceled,
        CancelRejected,
        ReplaceRejected,
    ]
    cls = classes[kind - 7]
    if cls in (OrderRejected, CancelRejected, ReplaceRejected):
        base["reason"] = "no"
    return cls(**base)


def status_report_for(base: dict[str, Any], draw: st.DrawFn) -> OrderStatusReport:
    return OrderStatusReport(
        **base,
        instrument="BTC-USD",
        status=draw(st.sampled_from(list(OrderStatus))),
        side=Side.BUY,
        qty=10,
        filled_qty=draw(st.integers(0, 10)),
    )


def run(inputs: list[Message]) -> tuple[Engine, list[list[Message]]]:
    engine = make_engine()
    outputs = [
        engine.handle(signal(1, qty=10)),
        engine.handle(signal(2, qty=6, side=Side.SELL, strategy="s2")),
        engine.handle(signal(3, qty=4, order_type=OrderType.LIMIT, price=100)),
    ]
    outputs.extend(engine.handle(msg) for msg in inputs)
    return engine, outputs


@given(st.lists(venue_inputs(), max_size=40))
def test_engine_when_random_venue_events_then_never_raises_and_books_consistently(
    inputs: list[Message],
) -> None:
    engine, outputs = run(inputs)
    for msg, effects in zip(inputs, outputs[3:]):
        assert all(effect.ts_recv == msg.ts_recv for effect in effects)
    book = engine.positions
    for (account, strategy, instrument), position in book.strategy_positions():
        booked = sum(
            (o.filled_qty if o.side is Side.BUY else -o.filled_qty)
            for o in engine.orders.values()
            if (o.account, o.strategy, o.instrument) == (account, strategy, instrument)
        )
        assert position.qty == booked
    for order in engine.orders.values():
        if order.status in (S.PENDING_NEW, S.ACCEPTED):
            assert order.filled_qty == 0
        if order.status is S.PARTIALLY_FILLED:
            assert 0 < order.filled_qty < order.qty
        if order.status is S.FILLED:
            assert order.filled_qty >= order.qty
    # Same inputs, same effects: the engine is a function of its inputs.
    assert run(inputs)[1] == outputs


# --- ids and instrument arithmetic, as the engine uses them -----------------------------


def test_id_generator_when_asked_then_counts_orders_and_timers_apart() -> None:
    ids = IdGenerator("r7")
    assert [ids.next_order_id(), ids.next_timer_id(), ids.next_order_id()] == [
        "r7-1",
        "r7-t1",
        "r7-2",
    ]


@pytest.mark.parametrize(
    ("price", "side", "expected"),
    [
        (103, Side.BUY, 100),
        (103, Side.SELL, 105),
        (100, Side.SELL, 100),
        (-103, Side.BUY, -105),
        (-103, Side.SELL, -100),
    ],
)
def test_round_price_when_off_tick_then_never_worse_than_asked(
    price: int, side: Side, expected: int
) -> None:
    assert round_price(price, side, BTC) == expected


def test_normalise_order_when_valid_then_rounded_terms() -> None:
    assert normalise_order(BTC, side=Side.SELL, qty=9, price=101, stop_price=None) == (8, 105, None)
    assert round_qty(9, BTC) == 8
    assert notional(5000, 2, ES) == 500_000
