"""Order lifecycle review: fills racing cancels and replaces, anomalies, positions, determinism.

Each test drives `Engine.handle` with the message sequence a venue can really produce and
asserts what a professional execution system must do. Six of them showed bugs when they
were written (a recovered fill booked twice, a replace lost under a rejected cancel, a chase
stopped by a slow replace ack, a rejected cancel left silent while halted, an unacked order
canceled in a disconnect left open, a fill on an order closed as lost dropped).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.config import EngineConfig, LifecycleConfig, RiskConfig
from engine.core import Engine
from engine.messages import (
    Alert,
    AssetClass,
    CancelOrder,
    CancelRejected,
    Instrument,
    KillSwitch,
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
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    ReportsDone,
    Resume,
    ScheduleTimer,
    Severity,
    Side,
    Signal,
    SignalIntent,
    SignalRejected,
    SubmitOrder,
    TimerFired,
    VenueConnected,
    VenueDisconnected,
)
from engine.orders import TERMINAL, Order

S = OrderStatus
NOW = 1_000
ROOT = Path(__file__).resolve().parents[2]

XYZ = Instrument(
    instrument="XYZ",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V1": "XYZ"},
)
ES = Instrument(
    instrument="ES",
    asset_class=AssetClass.FUTURE,
    currency="USD",
    price_precision=2,
    size_precision=0,
    multiplier=50,
    venue_symbols={"V1": "ES"},
)


def make_engine(**kw: Any) -> Engine:
    return Engine(EngineConfig(run_id="run", instruments=(XYZ, ES), **kw))


def chase_engine() -> Engine:
    return make_engine(risk=RiskConfig(lifecycle=LifecycleConfig(partial_fill="chase")))


def signal(n: int = 1, **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": NOW,
        "signal_id": f"sig-{n}",
        "strategy": "s1",
        "account": "acc",
        "instrument": "XYZ",
        "side": Side.BUY,
        "qty": 10,
    }
    fields.update(kw)
    return Signal(**fields)


def submit(engine: Engine, n: int = 1, **kw: Any) -> Order:
    effects = engine.handle(signal(n, **kw))
    assert isinstance(effects[0], SubmitOrder), effects
    return engine.orders[effects[0].order_id]


def limit_order(engine: Engine, n: int = 1, qty: int = 10, price: int = 100, **kw: Any) -> Order:
    return submit(engine, n, qty=qty, order_type=OrderType.LIMIT, price=price, **kw)


def ack(order: Order, ts: int = NOW + 1, venue_order_id: str | None = "A") -> OrderAccepted:
    return OrderAccepted(
        ts_recv=ts, order_id=order.order_id, venue=order.venue, venue_order_id=venue_order_id
    )


def fill(
    order: Order, qty: int, price: int = 100, trade: str = "t1", ts: int = NOW + 10, fee: int = 0
) -> OrderFilled:
    return OrderFilled(
        ts_recv=ts,
        order_id=order.order_id,
        venue=order.venue,
        trade_id=trade,
        price=price,
        qty=qty,
        fee=fee,
    )


def canceled(order: Order, ts: int = NOW + 20) -> OrderCanceled:
    return OrderCanceled(ts_recv=ts, order_id=order.order_id, venue=order.venue)


def cancel_signal(n: int, target: str, ts: int = NOW + 5) -> Signal:
    return signal(n, ts_recv=ts, intent=SignalIntent.CANCEL, cancels=target, side=None, qty=0)


def alerts(effects: list[Message], code: str | None = None) -> list[Alert]:
    return [e for e in effects if isinstance(e, Alert) and (code is None or e.code == code)]


def timers(effects: list[Message], purpose: str) -> list[ScheduleTimer]:
    return [e for e in effects if isinstance(e, ScheduleTimer) and e.purpose == purpose]


def fire(timer: ScheduleTimer, ts: int | None = None) -> TimerFired:
    return TimerFired(
        ts_recv=timer.fire_at if ts is None else ts,
        timer_id=timer.timer_id,
        purpose=timer.purpose,
        order_id=timer.order_id,
    )


def quote(bid: int, ask: int, ts: int, instrument: str = "XYZ") -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument=instrument,
        venue="V1",
        bid_price=bid,
        bid_size=100,
        ask_price=ask,
        ask_size=100,
    )


def working(engine: Engine, instrument: str = "XYZ", account: str = "acc") -> tuple[int, int]:
    """Return (working buys, working sells) in the qty book and check the firm aggregate."""
    _, wb, ws = engine.account_qty(account, instrument)
    term = engine.aggregates()["*"].terms[instrument]
    assert (term.wb, term.ws) == (wb, ws)
    return wb, ws


def position(engine: Engine, instrument: str = "XYZ", strategy: str = "s1") -> int:
    pos = engine.positions.strategy_qty("acc", strategy, instrument)
    net = engine.positions.net_position("acc", instrument)
    assert engine.account_qty("acc", instrument)[0] == (0 if net is None else net.qty)
    return pos


def is_open(engine: Engine, order: Order) -> bool:
    """Say whether the engine's open-order index (halts, reconciliation) still holds it."""
    return order.order_id in engine._open


def disconnect_and_reconnect(engine: Engine, ts: int = NOW + 1) -> None:
    engine.handle(VenueDisconnected(ts_recv=ts, venue="V1", reason="link down"))
    engine.handle(VenueConnected(ts_recv=ts + 10, venue="V1"))


def four_filled(order: Order, ts: int) -> OrderStatusReport:
    """The venue's status report of a buy 10 filled 4 at an average of 100."""
    return OrderStatusReport(
        ts_recv=ts,
        venue="V1",
        order_id=order.order_id,
        instrument="XYZ",
        status=S.PARTIALLY_FILLED,
        side=Side.BUY,
        qty=10,
        filled_qty=4,
        avg_price=100,
    )


def recover_four(engine: Engine, order: Order) -> None:
    """Disconnect, reconnect, and recover a fill of 4 from the venue's status report."""
    engine.handle(VenueDisconnected(ts_recv=NOW + 2, venue="V1", reason="link down"))
    engine.handle(VenueConnected(ts_recv=NOW + 3, venue="V1"))
    engine.handle(four_filled(order, NOW + 4))
    engine.handle(ReportsDone(ts_recv=NOW + 5, venue="V1"))


# --- 1. partial fills, cancels, late and duplicate fills, overfills ----------------------------


def test_partial_fill_then_cancel_then_fill_during_cancel_then_ack_releases_leaves() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(fill(order, 4, trade="a"))
    assert working(engine) == (6, 0)
    effects = engine.handle(cancel_signal(2, "sig-1"))
    assert [type(e) for e in effects] == [CancelOrder]
    assert order.status is S.PENDING_CANCEL
    assert working(engine) == (6, 0)  # the order can still fill until the venue says so
    assert engine.handle(fill(order, 2, trade="b", ts=NOW + 15)) == []
    assert (order.status, order.previous, order.filled_qty) == (
        S.PENDING_CANCEL,
        S.PARTIALLY_FILLED,
        6,
    )
    assert working(engine) == (4, 0)
    assert engine.handle(canceled(order)) == []
    assert (order.status, order.leaves_qty) == (S.CANCELED, 0)
    assert working(engine) == (0, 0)
    assert position(engine) == 6
    rejected = engine.handle(cancel_signal(3, "sig-1", ts=NOW + 30))
    assert isinstance(rejected[0], SignalRejected)
    assert rejected[0].code == "nothing_to_cancel"


def test_late_fill_after_cancel_ack_booked_without_reopening_and_completion_is_filled() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(cancel_signal(2, "sig-1"))
    engine.handle(canceled(order))
    assert working(engine) == (0, 0)
    assert engine.handle(fill(order, 3, trade="late1", ts=NOW + 30)) == []
    assert (order.status, order.filled_qty, order.leaves_qty) == (S.CANCELED, 3, 0)
    assert working(engine) == (0, 0)
    assert position(engine) == 3
    assert engine.handle(fill(order, 7, trade="late2", ts=NOW + 31)) == []
    assert (order.status, order.filled_qty) == (S.FILLED, 10)
    assert working(engine) == (0, 0)
    assert position(engine) == 10
    assert engine.anomalies == 0


def test_cancel_raced_by_full_fill_then_cancel_rejected_is_filled_without_alert() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(fill(order, 4, trade="a"))
    engine.handle(cancel_signal(2, "sig-1"))
    assert engine.handle(fill(order, 6, trade="b", ts=NOW + 15)) == []
    assert order.status is S.FILLED
    late = CancelRejected(
        ts_recv=NOW + 16, order_id=order.order_id, venue="V1", reason="order already filled"
    )
    assert engine.handle(late) == []
    assert (order.status, order.leaves_qty, engine.anomalies) == (S.FILLED, 0, 0)
    assert working(engine) == (0, 0)
    assert position(engine) == 10


@pytest.mark.parametrize("when", ["working", "pending_cancel", "canceled", "filled"])
def test_duplicate_fill_report_never_double_counts(when: str) -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    first_qty = 10 if when == "filled" else 4
    engine.handle(fill(order, first_qty, trade="a", fee=7))
    if when == "pending_cancel":
        engine.handle(cancel_signal(2, "sig-1"))
    elif when == "canceled":
        engine.handle(cancel_signal(2, "sig-1"))
        engine.handle(canceled(order))
    status = order.status
    wb = working(engine)
    effects = engine.handle(fill(order, first_qty, trade="a", ts=NOW + 40, fee=7))
    assert effects == []  # no OVERFILL either: the duplicate is dropped before the check
    assert (order.status, order.filled_qty, order.fees) == (status, first_qty, 7)
    assert working(engine) == wb
    assert position(engine) == first_qty
    pos = engine.positions.strategy_position("acc", "s1", "XYZ")
    assert pos is not None and pos.fees == 7
    assert (engine.duplicate_fills, engine.anomalies) == (1, 0)


@pytest.mark.parametrize("cancel_first", [False, True])
def test_overfill_is_booked_with_critical_alert_and_leaves_never_negative(
    cancel_first: bool,
) -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(fill(order, 8, trade="a"))
    if cancel_first:
        engine.handle(cancel_signal(2, "sig-1"))
    effects = engine.handle(fill(order, 5, trade="b", ts=NOW + 15))
    (alert,) = alerts(effects, "OVERFILL")
    assert alert.severity is Severity.CRITICAL
    assert (order.status, order.filled_qty, order.leaves_qty) == (S.FILLED, 13, 0)
    assert working(engine) == (0, 0)
    assert position(engine) == 13
    assert not is_open(engine, order)


def test_overfill_in_one_fill_before_ack_then_late_ack_keeps_order_filled() -> None:
    engine = make_engine()
    order = submit(engine, qty=10, side=Side.SELL)
    effects = engine.handle(fill(order, 12, trade="a"))
    assert [a.code for a in alerts(effects)] == ["OVERFILL"]
    assert (order.status, order.leaves_qty) == (S.FILLED, 0)
    assert working(engine) == (0, 0)
    assert engine.handle(ack(order, ts=NOW + 20)) == []
    assert order.status is S.FILLED
    assert position(engine) == -12


def test_fill_recovered_by_reconciliation_then_delayed_report_is_not_double_counted() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    recover_four(engine, order)
    assert (order.filled_qty, position(engine)) == (4, 4)
    # The execution report held during the outage arrives after the status report.
    engine.handle(fill(order, 4, price=100, trade="a", ts=NOW + 6))
    assert (order.filled_qty, position(engine)) == (4, 4)
    assert working(engine) == (6, 0)


def test_fill_held_during_outage_then_matching_status_report_books_once() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    disconnect_and_reconnect(engine)
    assert engine.handle(fill(order, 4, price=100, trade="a", ts=NOW + 12)) == []
    report = four_filled(order, NOW + 13)
    assert engine.handle(report) == []
    assert (order.filled_qty, position(engine)) == (4, 4)
    assert working(engine) == (6, 0)


# --- 2. cancel/replace ------------------------------------------------------------------------


def chased(engine: Engine) -> tuple[Order, ScheduleTimer]:
    """Return a LIMIT buy 10 @ 100, 2 filled, with a chase replace to 105 in flight."""
    order = limit_order(engine)
    engine.handle(ack(order))
    (chase,) = timers(engine.handle(fill(order, 2, trade="a")), "chase")
    engine.handle(quote(105, 110, NOW + 20))
    effects = engine.handle(fire(chase))
    replace = [e for e in effects if isinstance(e, ReplaceOrder)]
    assert [(r.qty, r.price, r.venue_order_id) for r in replace] == [(10, 105, "A")]
    assert order.status is S.PENDING_REPLACE
    (again,) = timers(effects, "chase")
    return order, again


def test_replace_raced_by_fill_at_old_price_then_ack_keeps_leaves_right() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    assert engine.handle(fill(order, 3, price=100, trade="b", ts=NOW + 30)) == []
    assert (order.status, order.filled_qty, order.leaves_qty) == (S.PENDING_REPLACE, 5, 5)
    assert working(engine) == (5, 0)
    replaced = OrderReplaced(
        ts_recv=NOW + 31, order_id=order.order_id, venue="V1", qty=10, price=105, venue_order_id="B"
    )
    assert engine.handle(replaced) == []
    assert (order.status, order.price, order.qty, order.venue_order_id) == (
        S.PARTIALLY_FILLED,
        105,
        10,
        "B",
    )
    assert working(engine) == (5, 0)
    assert position(engine) == 5


def test_replace_rejected_returns_to_partially_filled_with_old_terms() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    engine.handle(fill(order, 1, price=100, trade="b", ts=NOW + 30))
    rejected = ReplaceRejected(
        ts_recv=NOW + 31, order_id=order.order_id, venue="V1", reason="price out of band"
    )
    assert engine.handle(rejected) == []
    assert (order.status, order.price, order.qty, order.leaves_qty) == (
        S.PARTIALLY_FILLED,
        100,
        10,
        7,
    )
    assert working(engine) == (7, 0)


def test_replace_raced_by_full_fill_then_replace_rejected_or_acked_leaves_order_filled() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    assert engine.handle(fill(order, 8, price=100, trade="b", ts=NOW + 30)) == []
    assert (order.status, order.leaves_qty) == (S.FILLED, 0)
    assert working(engine) == (0, 0)
    too_late = ReplaceRejected(
        ts_recv=NOW + 31, order_id=order.order_id, venue="V1", reason="order already filled"
    )
    assert engine.handle(too_late) == []
    assert engine.anomalies == 0
    # A venue that acks the replace of a filled order anyway: an anomaly, never a reopening.
    acked = OrderReplaced(ts_recv=NOW + 32, order_id=order.order_id, venue="V1", qty=10, price=105)
    (alert,) = alerts(engine.handle(acked), "ORDER_ANOMALY")
    assert alert.order_id == order.order_id
    assert (order.status, order.qty, order.price, order.leaves_qty) == (S.FILLED, 10, 100, 0)
    assert working(engine) == (0, 0)
    assert position(engine) == 10


def test_replaced_qty_below_filled_is_an_anomaly_and_leaves_stay_non_negative() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    engine.handle(fill(order, 3, trade="b", ts=NOW + 30))
    bad = OrderReplaced(ts_recv=NOW + 31, order_id=order.order_id, venue="V1", qty=4, price=105)
    assert [a.code for a in alerts(engine.handle(bad))] == ["ORDER_ANOMALY"]
    assert (order.qty, order.filled_qty, order.leaves_qty) == (10, 5, 5)
    assert working(engine) == (5, 0)


def test_cancel_overtaking_replace_then_replace_ack_then_cancel_ack() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    effects = engine.handle(KillSwitch(ts_recv=NOW + 30, operator="op", reason="stop"))
    assert [type(e) for e in effects] == [CancelOrder]
    assert order.status is S.PENDING_CANCEL
    replaced = OrderReplaced(
        ts_recv=NOW + 31, order_id=order.order_id, venue="V1", qty=10, price=105, venue_order_id="B"
    )
    assert engine.handle(replaced) == []
    assert (order.status, order.price, order.venue_order_id) == (S.PENDING_CANCEL, 105, "B")
    assert engine.handle(canceled(order, ts=NOW + 32)) == []
    assert (order.status, order.leaves_qty) == (S.CANCELED, 0)
    assert working(engine) == (0, 0)


def test_cancel_overtaking_replace_rejected_then_replace_ack_applies_new_terms() -> None:
    engine = chase_engine()
    order, _ = chased(engine)
    engine.handle(KillSwitch(ts_recv=NOW + 30, operator="op", reason="stop"))
    busy = CancelRejected(
        ts_recv=NOW + 31, order_id=order.order_id, venue="V1", reason="order being modified"
    )
    effects = engine.handle(busy)
    assert order.status is S.PENDING_REPLACE  # the replace still awaits its answer
    (alert,) = alerts(effects, "CANCEL_REJECTED")
    assert alert.severity is Severity.CRITICAL and "halted" in alert.text
    (again,) = timers(effects, "cancel_retry")
    replaced = OrderReplaced(
        ts_recv=NOW + 32, order_id=order.order_id, venue="V1", qty=10, price=105, venue_order_id="B"
    )
    assert engine.handle(replaced) == []
    assert engine.anomalies == 0
    assert (order.status, order.price, order.venue_order_id) == (S.PARTIALLY_FILLED, 105, "B")
    (cancel,) = engine.handle(fire(again))  # still halted: the cancel goes again
    assert isinstance(cancel, CancelOrder) and cancel.venue_order_id == "B"
    assert order.status is S.PENDING_CANCEL


def test_chase_survives_a_replace_ack_slower_than_the_chase_interval() -> None:
    engine = chase_engine()
    order, again = chased(engine)
    effects = engine.handle(fire(again))  # the replace is still pending
    (rearmed,) = timers(effects, "chase")
    replaced = OrderReplaced(
        ts_recv=again.fire_at + 1, order_id=order.order_id, venue="V1", qty=10, price=105
    )
    engine.handle(replaced)
    engine.handle(quote(110, 115, again.fire_at + 2))
    replace = [e for e in engine.handle(fire(rearmed)) if isinstance(e, ReplaceOrder)]
    assert [(r.qty, r.price) for r in replace] == [(10, 110)]


# --- 3. rejects, cancel rejects, expiries, unknown orders -------------------------------------


def test_reject_after_ack_releases_working_qty_and_says_why() -> None:
    engine = make_engine()
    order = submit(engine, qty=10, order_type=OrderType.STOP, stop_price=120)
    engine.handle(ack(order))
    assert working(engine) == (10, 0)
    rejected = OrderRejected(
        ts_recv=NOW + 5, order_id=order.order_id, venue="V1", reason="stop triggered: no liquidity"
    )
    (alert,) = alerts(engine.handle(rejected), "ORDER_REJECTED")
    assert alert.order_id == order.order_id
    assert (order.status, order.leaves_qty) == (S.REJECTED, 0)
    assert working(engine) == (0, 0)
    assert not is_open(engine, order)


def test_cancel_rejected_after_fills_during_the_request_returns_to_partially_filled() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(cancel_signal(2, "sig-1", ts=NOW + 1))  # cancel before the ack
    assert (order.status, order.previous) == (S.PENDING_CANCEL, S.PENDING_NEW)
    engine.handle(ack(order, ts=NOW + 2))
    engine.handle(fill(order, 3, trade="a", ts=NOW + 3))
    rejected = CancelRejected(
        ts_recv=NOW + 4, order_id=order.order_id, venue="V1", reason="try again"
    )
    (alert,) = engine.handle(rejected)  # not halted: said, and the order keeps working
    assert isinstance(alert, Alert)
    assert (alert.code, alert.severity, alert.order_id) == (
        "CANCEL_REJECTED",
        Severity.WARNING,
        order.order_id,
    )
    assert "try again" in alert.text and "keeps working" in alert.text
    assert (order.status, order.venue_order_id, order.leaves_qty) == (S.PARTIALLY_FILLED, "A", 7)
    assert working(engine) == (7, 0)
    cancel = engine.handle(cancel_signal(3, "sig-1", ts=NOW + 5))
    assert [type(e) for e in cancel] == [CancelOrder]


@pytest.mark.parametrize("pending", [None, "cancel", "replace"])
def test_expiry_releases_leaves_and_a_late_fill_is_still_booked(pending: str | None) -> None:
    engine = chase_engine()
    if pending == "replace":
        order, _ = chased(engine)
    else:
        order = limit_order(engine)
        engine.handle(ack(order))
        engine.handle(fill(order, 2, trade="a"))
        if pending == "cancel":
            engine.handle(cancel_signal(2, "sig-1", ts=NOW + 15))
    expired = OrderExpired(ts_recv=NOW + 40, order_id=order.order_id, venue="V1")
    assert engine.handle(expired) == []
    assert (order.status, order.leaves_qty) == (S.EXPIRED, 0)
    assert working(engine) == (0, 0)
    assert engine.handle(fill(order, 3, trade="late", ts=NOW + 41)) == []
    assert (order.status, order.filled_qty) == (S.EXPIRED, 5)
    assert working(engine) == (0, 0)
    assert position(engine) == 5


def test_halt_cancel_rejected_while_order_still_live_is_escalated() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    cancels = engine.handle(KillSwitch(ts_recv=NOW + 5, operator="op", reason="stop"))
    assert [type(e) for e in cancels] == [CancelOrder]
    busy = CancelRejected(ts_recv=NOW + 6, order_id=order.order_id, venue="V1", reason="busy")
    effects = engine.handle(busy)
    assert order.status is S.ACCEPTED  # still working at the venue, while halted
    assert any(
        isinstance(e, CancelOrder) or (isinstance(e, Alert) and e.order_id == order.order_id)
        for e in effects
    ), effects


def test_retryable_reject_releases_then_resend_counts_working_qty_once() -> None:
    engine = make_engine()
    order = limit_order(engine)
    rejected = OrderRejected(
        ts_recv=NOW + 1, order_id=order.order_id, venue="V1", reason="busy", retryable=True
    )
    effects = engine.handle(rejected)
    (retry,) = timers(effects, "retry")
    assert working(engine) == (0, 0)
    resent = [e for e in engine.handle(fire(retry)) if isinstance(e, SubmitOrder)]
    assert [(r.qty, r.price, r.signal_id) for r in resent] == [(10, 100, "sig-1")]
    assert resent[0].order_id != order.order_id
    assert working(engine) == (10, 0)
    again = engine.orders[resent[0].order_id]
    engine.handle(ack(again, ts=retry.fire_at + 1))
    engine.handle(fill(again, 10, trade="a", ts=retry.fire_at + 2))
    assert working(engine) == (0, 0)
    assert position(engine) == 10


UNKNOWN_EVENTS: list[Message] = [
    OrderAccepted(ts_recv=NOW, order_id="ghost", venue="V1"),
    OrderRejected(ts_recv=NOW, order_id="ghost", venue="V1", reason="x"),
    OrderFilled(ts_recv=NOW, order_id="ghost", venue="V1", trade_id="t", price=100, qty=5),
    OrderCanceled(ts_recv=NOW, order_id="ghost", venue="V1"),
    CancelRejected(ts_recv=NOW, order_id="ghost", venue="V1", reason="x"),
    OrderReplaced(ts_recv=NOW, order_id="ghost", venue="V1", qty=5),
    ReplaceRejected(ts_recv=NOW, order_id="ghost", venue="V1", reason="x"),
    OrderExpired(ts_recv=NOW, order_id="ghost", venue="V1"),
]


@pytest.mark.parametrize("msg", UNKNOWN_EVENTS, ids=lambda m: type(m).__name__)
def test_event_for_unknown_order_is_an_alert_and_changes_nothing(msg: Message) -> None:
    engine = make_engine()
    order = limit_order(engine)
    effects = engine.handle(msg)
    (alert,) = alerts(effects, "UNKNOWN_ORDER")
    assert len(effects) == 1
    expected = Severity.CRITICAL if isinstance(msg, OrderFilled) else Severity.WARNING
    assert (alert.severity, alert.order_id) == (expected, "ghost")
    assert (order.status, order.filled_qty) == (S.PENDING_NEW, 0)
    assert working(engine) == (10, 0)
    assert engine.positions.strategy_position("acc", "s1", "XYZ") is None
    assert engine.anomalies == 1


def test_unacked_order_unknown_to_venue_after_reconnect_is_closed_and_released() -> None:
    engine = make_engine()
    order = limit_order(engine)
    disconnect_and_reconnect(engine)
    effects = engine.handle(ReportsDone(ts_recv=NOW + 20, venue="V1"))
    assert [a.code for a in alerts(effects)] == ["ORDER_RETRY", "RECONCILED"]
    assert (order.status, order.leaves_qty) == (S.REJECTED, 0)
    assert working(engine) == (0, 0)


def test_unacked_order_canceled_during_disconnect_is_closed_when_venue_never_had_it() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(VenueDisconnected(ts_recv=NOW + 1, venue="V1", reason="link down"))
    cancels = engine.handle(KillSwitch(ts_recv=NOW + 2, operator="op", reason="outage"))
    assert [type(e) for e in cancels] == [CancelOrder]  # lost: the link is down
    engine.handle(VenueConnected(ts_recv=NOW + 3, venue="V1"))
    engine.handle(ReportsDone(ts_recv=NOW + 4, venue="V1"))  # the venue has no such order
    assert order.status in TERMINAL
    assert working(engine) == (0, 0)


def test_fill_on_order_closed_as_lost_is_booked_with_critical_alert() -> None:
    engine = make_engine()
    order = limit_order(engine)
    disconnect_and_reconnect(engine)
    engine.handle(ReportsDone(ts_recv=NOW + 20, venue="V1"))  # closed as lost, retry armed
    assert order.status is S.REJECTED
    effects = engine.handle(fill(order, 4, trade="a", ts=NOW + 21))  # it was live after all
    assert position(engine) == 4
    assert any(a.severity is Severity.CRITICAL for a in alerts(effects))


# --- 4. positions, P&L, attribution, working quantities -----------------------------------------


def test_flip_long_to_short_in_one_fill_realises_closed_part_and_opens_rest_at_fill_price() -> None:
    engine = make_engine()
    buy = submit(engine, 1, qty=5)
    engine.handle(fill(buy, 5, price=100, trade="a", fee=1))
    sell = submit(engine, 2, qty=8, side=Side.SELL)
    engine.handle(fill(sell, 8, price=110, trade="b", fee=2))
    for pos in (
        engine.positions.strategy_position("acc", "s1", "XYZ"),
        engine.positions.net_position("acc", "XYZ"),
    ):
        assert pos is not None
        assert (pos.qty, pos.cost, pos.avg_price, pos.realised, pos.fees) == (
            -3,
            -330,
            110,
            50,
            3,
        )
        assert pos.unrealised(105) == 15
    engine.handle(quote(104, 106, NOW + 50))
    assert engine.pnl("strategy:s1") == engine.money.notional_to_money("XYZ", 50 + 15 - 3)
    cover = submit(engine, 3, qty=3)
    engine.handle(fill(cover, 3, price=105, trade="c"))
    pos = engine.positions.strategy_position("acc", "s1", "XYZ")
    assert pos is not None
    assert (pos.qty, pos.cost, pos.avg_price, pos.realised) == (0, 0, None, 65)
    assert working(engine) == (0, 0)


def test_flip_short_to_long_with_multiplier_scales_realised_not_cost() -> None:
    engine = make_engine()
    sell = submit(engine, 1, instrument="ES", qty=2, side=Side.SELL)
    engine.handle(fill(sell, 2, price=5000, trade="a"))
    buy = submit(engine, 2, instrument="ES", qty=5)
    engine.handle(fill(buy, 5, price=4990, trade="b"))
    pos = engine.positions.strategy_position("acc", "s1", "ES")
    assert pos is not None
    assert (pos.qty, pos.cost, pos.avg_price, pos.realised) == (3, 3 * 4990, 4990, 2 * 10 * 50)
    assert pos.unrealised(5000) == 3 * 10 * 50


def test_attribution_per_strategy_and_account_with_fees_and_rebates() -> None:
    engine = make_engine()
    a = submit(engine, 1, qty=5)
    engine.handle(fill(a, 5, price=100, trade="a", fee=4))
    b = submit(engine, 2, qty=5, side=Side.SELL, strategy="s2")
    engine.handle(fill(b, 5, price=110, trade="b", fee=-1))  # a maker rebate
    c = submit(engine, 3, qty=2, account="acc2", strategy="s3")
    engine.handle(fill(c, 2, price=120, trade="c", fee=1))
    s1 = engine.positions.strategy_position("acc", "s1", "XYZ")
    s2 = engine.positions.strategy_position("acc", "s2", "XYZ")
    net = engine.positions.net_position("acc", "XYZ")
    other = engine.positions.net_position("acc2", "XYZ")
    assert s1 is not None and s2 is not None and net is not None and other is not None
    assert (s1.qty, s1.realised, s1.fees) == (5, 0, 4)
    assert (s2.qty, s2.realised, s2.fees) == (-5, 0, -1)
    assert (net.qty, net.cost, net.realised, net.fees) == (0, 0, 50, 3)
    assert (other.qty, other.cost, other.fees) == (2, 240, 1)
    assert engine.account_qty("acc", "XYZ") == (0, 0, 0)
    assert engine.account_qty("acc2", "XYZ") == (2, 0, 0)
    engine.handle(quote(104, 106, NOW + 50))
    money = engine.money.notional_to_money
    assert engine.pnl("strategy:s1") == money("XYZ", 5 * 105 - 500 - 4)
    assert engine.pnl("strategy:s2") == money("XYZ", 550 - 5 * 105 + 1)
    assert engine.pnl("account:acc2") == money("XYZ", 2 * 105 - 240 - 1)


def _terminal_path(engine: Engine, path: str) -> Order:
    """Drive one order of 10 to its end along `path`; return it."""
    order = limit_order(engine)
    late_ts = NOW + 100
    if path == "reject_before_ack":
        engine.handle(
            OrderRejected(ts_recv=NOW + 1, order_id=order.order_id, venue="V1", reason="x")
        )
        return order
    if path == "ioc_canceled_before_ack":
        engine.handle(canceled(order, ts=NOW + 1))
        return order
    engine.handle(ack(order))
    if path == "filled_in_pieces":
        engine.handle(fill(order, 3, trade="a"))
        engine.handle(fill(order, 7, trade="b", ts=NOW + 11))
    elif path == "unsolicited_cancel_after_partial":
        engine.handle(fill(order, 3, trade="a"))
        engine.handle(canceled(order))
    elif path == "cancel_then_cancel_ack":
        engine.handle(cancel_signal(2, "sig-1"))
        engine.handle(canceled(order))
    elif path == "cancel_then_reject":
        engine.handle(cancel_signal(2, "sig-1"))
        engine.handle(
            OrderRejected(ts_recv=NOW + 20, order_id=order.order_id, venue="V1", reason="x")
        )
    elif path == "expired_after_partial":
        engine.handle(fill(order, 3, trade="a"))
        engine.handle(OrderExpired(ts_recv=NOW + 20, order_id=order.order_id, venue="V1"))
    elif path == "overfill":
        engine.handle(fill(order, 14, trade="a"))
    elif path == "halt_then_cancel_ack":
        engine.handle(KillSwitch(ts_recv=NOW + 5, operator="op", reason="x"))
        engine.handle(canceled(order))
        engine.handle(Resume(ts_recv=NOW + 30, operator="op", reason="ok"))
    elif path == "late_fill_after_cancel":
        engine.handle(canceled(order))
        engine.handle(fill(order, 4, trade="late", ts=late_ts))
    elif path == "recon_report_canceled":
        disconnect_and_reconnect(engine, ts=NOW + 2)
        engine.handle(
            OrderStatusReport(
                ts_recv=NOW + 30,
                venue="V1",
                order_id=order.order_id,
                instrument="XYZ",
                status=S.CANCELED,
                side=Side.BUY,
                qty=10,
                filled_qty=2,
                avg_price=100,
            )
        )
        engine.handle(ReportsDone(ts_recv=NOW + 31, venue="V1"))
    else:
        raise AssertionError(path)
    return order


TERMINAL_PATHS = [
    "reject_before_ack",
    "ioc_canceled_before_ack",
    "filled_in_pieces",
    "unsolicited_cancel_after_partial",
    "cancel_then_cancel_ack",
    "cancel_then_reject",
    "expired_after_partial",
    "overfill",
    "halt_then_cancel_ack",
    "late_fill_after_cancel",
    "recon_report_canceled",
]


@pytest.mark.parametrize("path", TERMINAL_PATHS)
def test_working_quantities_return_to_zero_on_every_terminal_path(path: str) -> None:
    engine = make_engine()
    order = _terminal_path(engine, path)
    assert order.status in TERMINAL
    assert order.leaves_qty == 0
    assert working(engine) == (0, 0)
    assert not is_open(engine, order)
    assert position(engine) == order.filled_qty
    # A TARGET signal sees only the position: no ghost working quantity of the ended order.
    effects = engine.handle(
        signal(99, ts_recv=NOW + 500, intent=SignalIntent.TARGET, target=order.filled_qty + 2)
    )
    sent = [e for e in effects if isinstance(e, SubmitOrder)]
    assert [(s.side, s.qty) for s in sent] == [(Side.BUY, 2)], effects


# --- 5. determinism ------------------------------------------------------------------------------

_DETERMINISM_SCRIPT = """
import hashlib, sys
import msgspec
sys.path.insert(0, sys.argv[1])
from tests.engine.test_lifecycle_review import run_mixed_scenario
effects = run_mixed_scenario()
print(hashlib.sha256(msgspec.json.encode(effects)).hexdigest(), len(effects))
"""


def run_mixed_scenario() -> list[Message]:
    """Drive several accounts, strategies and instruments through fills, halts and flattens."""
    risk = RiskConfig(
        lifecycle=LifecycleConfig(partial_fill="chase"),
        check_interval_ns=1_000_000,
    )
    engine = make_engine(risk=risk)
    out: list[Message] = []
    ts = NOW
    orders: list[Order] = []
    for n, (account, strategy, instrument, side) in enumerate(
        [
            ("acc", "zeta", "XYZ", Side.BUY),
            ("acc2", "alpha", "ES", Side.SELL),
            ("acc", "mid", "ES", Side.BUY),
            ("acc3", "beta", "XYZ", Side.SELL),
            ("acc2", "alpha", "XYZ", Side.BUY),
        ],
        start=1,
    ):
        ts += 7
        effects = engine.handle(
            signal(
                n,
                ts_recv=ts,
                account=account,
                strategy=strategy,
                instrument=instrument,
                side=side,
                order_type=OrderType.LIMIT,
                price=100,
            )
        )
        out += effects
        orders.append(engine.orders[effects[0].order_id])  # type: ignore[attr-defined]
    for k, order in enumerate(orders):
        ts += 3
        out += engine.handle(ack(order, ts=ts, venue_order_id=f"v{k}"))
        out += engine.handle(fill(order, 3 + k, price=100 + k, trade=f"t{k}", ts=ts + 1))
    out += engine.handle(quote(101, 103, ts + 5))
    out += engine.handle(quote(101, 103, ts + 5, instrument="ES"))
    for effect in list(out):
        if isinstance(effect, ScheduleTimer) and effect.purpose in ("chase", "risk_check"):
            out += engine.handle(fire(effect, ts=max(effect.fire_at, ts + 10)))
    out += engine.handle(
        KillSwitch(ts_recv=ts + 2_000_000_000, operator="op", reason="end", flatten=True)
    )
    return out


def test_same_inputs_give_same_effects_under_different_hash_seeds() -> None:
    digests = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT, str(ROOT)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1, digests
    effects = run_mixed_scenario()
    assert sum(isinstance(e, CancelOrder) for e in effects) >= 1
    assert sum(isinstance(e, SubmitOrder) for e in effects) >= 8  # orders and flattens


def test_recovered_fill_then_bigger_report_books_only_the_rest_with_its_fee_share() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    recover_four(engine, order)
    # One report of 6: the 4 recovered plus 2 traded since.
    effects = engine.handle(fill(order, 6, price=100, trade="a", ts=NOW + 6, fee=12))
    (alert,) = alerts(effects, "RECOVERED_FILL_REPORTED")
    assert "4 already booked" in alert.text and "other 2 booked now" in alert.text
    assert (order.filled_qty, order.fees, position(engine)) == (6, 12, 6)
    assert working(engine) == (4, 0)
    assert engine.handle(fill(order, 6, price=100, trade="a", ts=NOW + 7)) == []  # duplicate


def test_halt_cancel_rejected_every_time_then_retries_end_with_a_manual_call() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(KillSwitch(ts_recv=NOW + 5, operator="op", reason="stop"))
    ts = NOW + 6
    sent = 0
    while True:
        busy = CancelRejected(ts_recv=ts, order_id=order.order_id, venue="V1", reason="busy")
        effects = engine.handle(busy)
        (alert,) = alerts(effects, "CANCEL_REJECTED")
        assert alert.severity is Severity.CRITICAL
        again = timers(effects, "cancel_retry")
        if not again:
            assert "by hand" in alert.text
            break
        (cancel,) = engine.handle(fire(again[0]))
        assert isinstance(cancel, CancelOrder)
        sent += 1
        ts = again[0].fire_at + 1
    assert sent == 3  # max_retries
    assert order.status is S.ACCEPTED


def test_halt_cancel_rejected_then_resumed_before_the_retry_then_no_cancel() -> None:
    engine = make_engine()
    order = limit_order(engine)
    engine.handle(ack(order))
    engine.handle(KillSwitch(ts_recv=NOW + 5, operator="op", reason="stop"))
    busy = CancelRejected(ts_recv=NOW + 6, order_id=order.order_id, venue="V1", reason="busy")
    (again,) = timers(engine.handle(busy), "cancel_retry")
    engine.handle(Resume(ts_recv=NOW + 7, operator="op", reason="all clear"))
    assert engine.handle(fire(again)) == []
    assert order.status is S.ACCEPTED
