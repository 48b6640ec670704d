"""CANCEL signals: cancel the open orders of an earlier signal, or say why not; ORDER
signals naming `cancels`: replace an earlier signal (cancel its open orders, then order)."""

from __future__ import annotations

from engine.config import EngineConfig
from engine.core import Engine
from engine.messages import (
    AssetClass,
    CancelOrder,
    Instrument,
    KillSwitch,
    OrderAccepted,
    OrderFilled,
    OrderType,
    Side,
    Signal,
    SignalIntent,
    SignalRejected,
    SubmitOrder,
)

INST = Instrument(
    instrument="X",
    asset_class=AssetClass.EQUITY,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V": "X"},
)


def engine() -> Engine:
    return Engine(EngineConfig(run_id="r", instruments=(INST,)))


def limit(
    ts: int, sid: str, strategy: str = "s", replaces: str | None = None, qty: int = 10
) -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy=strategy,
        account="A",
        instrument="X",
        side=Side.BUY,
        qty=qty,
        order_type=OrderType.LIMIT,
        price=100,
        cancels=replaces,
    )


def cancel(ts: int, sid: str, target: str | None, strategy: str = "s") -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy=strategy,
        account="A",
        instrument="X",
        intent=SignalIntent.CANCEL,
        cancels=target,
    )


def submitted(e: Engine, sig: Signal) -> SubmitOrder:
    effects = e.handle(sig)
    assert isinstance(effects[0], SubmitOrder)
    return effects[0]


def test_cancel_signal_when_order_open_then_cancel_sent() -> None:
    e = engine()
    order = submitted(e, limit(1, "a"))
    e.handle(OrderAccepted(ts_recv=2, order_id=order.order_id, venue="V", venue_order_id="v1"))
    effects = e.handle(cancel(3, "c", "a"))
    assert effects == [
        CancelOrder(
            ts_recv=3, order_id=order.order_id, venue="V", instrument="X", venue_order_id="v1"
        )
    ]
    again = e.handle(cancel(4, "c2", "a"))
    assert isinstance(again[0], SignalRejected) and again[0].code == "nothing_to_cancel"


def test_cancel_signal_when_order_filled_then_nothing_to_cancel_with_reason() -> None:
    e = engine()
    order = submitted(e, limit(1, "a"))
    e.handle(
        OrderFilled(ts_recv=2, order_id=order.order_id, venue="V", trade_id="t", price=100, qty=10)
    )
    (rejected,) = e.handle(cancel(3, "c", "a"))
    assert isinstance(rejected, SignalRejected)
    assert rejected.reason == (
        "signal a has no open order to cancel (filled, canceled or already pending cancel)"
    )


def test_cancel_signal_when_target_unknown_missing_or_foreign_then_denied() -> None:
    e = engine()
    submitted(e, limit(1, "a"))
    codes = [
        e.handle(sig)[0]
        for sig in (
            cancel(2, "c1", "zzz"),
            cancel(3, "c2", None),
            cancel(4, "c3", "a", strategy="other"),
        )
    ]
    assert [c.code for c in codes] == ["unknown_signal", "intent", "not_owner"]  # type: ignore[attr-defined]
    assert "belong to account A strategy s, not A other" in codes[2].reason  # type: ignore[attr-defined]


def test_cancel_signal_when_halted_then_not_denied_as_halted() -> None:
    e = engine()
    submitted(e, limit(1, "a"))
    e.handle(KillSwitch(ts_recv=2, operator="ops", reason="x"))  # already requested the cancel
    (rejected,) = e.handle(cancel(3, "c", "a"))
    assert rejected.code == "nothing_to_cancel"  # type: ignore[attr-defined]


def test_cancel_signal_when_id_reused_then_duplicate_denied() -> None:
    e = engine()
    submitted(e, limit(1, "a"))
    assert isinstance(e.handle(cancel(2, "c", "a"))[0], CancelOrder)
    (dup,) = e.handle(cancel(3, "c", "a"))
    assert dup.code == "duplicate_signal"  # type: ignore[attr-defined]


def test_order_replacing_when_its_order_open_then_cancel_then_new_order() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    e.handle(OrderAccepted(ts_recv=2, order_id=old.order_id, venue="V", venue_order_id="v1"))
    effects = e.handle(limit(3, "b", replaces="a"))
    assert [type(x) for x in effects] == [CancelOrder, SubmitOrder]  # the ack watchdog is set
    assert effects[0] == CancelOrder(
        ts_recv=3, order_id=old.order_id, venue="V", instrument="X", venue_order_id="v1"
    )
    new = effects[1]
    assert isinstance(new, SubmitOrder) and new.signal_id == "b" and new.order_id != old.order_id
    (again,) = e.handle(cancel(4, "c", "a"))  # the old order is pending cancel now
    assert again.code == "nothing_to_cancel"  # type: ignore[attr-defined]


def test_order_replacing_when_its_order_filled_or_never_sent_then_just_the_order() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    e.handle(
        OrderFilled(ts_recv=2, order_id=old.order_id, venue="V", trade_id="t", price=100, qty=10)
    )
    effects = e.handle(limit(3, "b", replaces="a"))
    assert [type(x) for x in effects] == [SubmitOrder]  # no denial: nothing open
    (denied,) = e.handle(limit(4, "d", qty=-1))  # denied: no order was sent for it
    assert denied.code == "schema"  # type: ignore[attr-defined]
    effects = e.handle(limit(5, "e", replaces="d"))
    assert [type(x) for x in effects] == [SubmitOrder]


def test_order_replacing_when_target_unknown_itself_foreign_or_not_an_order_then_denied() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    target = Signal(
        ts_recv=5,
        signal_id="t",
        strategy="s",
        account="A",
        instrument="X",
        intent=SignalIntent.TARGET,
        target=0,
        cancels="a",
    )
    outcomes = [
        e.handle(sig)
        for sig in (
            limit(2, "b", replaces="zzz"),
            limit(3, "c", replaces="c"),
            limit(4, "d", strategy="other", replaces="a"),
            target,
        )
    ]
    assert all(len(x) == 1 and isinstance(x[0], SignalRejected) for x in outcomes)
    codes = [x[0].code for x in outcomes]  # type: ignore[attr-defined]
    assert codes == ["unknown_signal", "unknown_signal", "not_owner", "intent"]
    assert "expected the signal_id of an earlier signal" in outcomes[0][0].reason  # type: ignore[attr-defined]
    assert "got a TARGET signal" in outcomes[3][0].reason  # type: ignore[attr-defined]
    # nothing was canceled: the old order is still open to its own strategy
    (still,) = e.handle(cancel(6, "x", "a"))
    assert isinstance(still, CancelOrder) and still.order_id == old.order_id


def test_order_replacing_when_new_order_denied_then_old_still_canceled() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    e.handle(OrderAccepted(ts_recv=2, order_id=old.order_id, venue="V", venue_order_id="v1"))
    effects = e.handle(limit(3, "b", replaces="a", qty=-5))
    assert [type(x) for x in effects] == [CancelOrder, SignalRejected]
    assert effects[1].code == "schema"  # type: ignore[attr-defined]


def test_order_replacing_when_halted_then_cancel_sent_and_order_denied_as_halted() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    e.handle(OrderAccepted(ts_recv=2, order_id=old.order_id, venue="V", venue_order_id="v1"))
    e.handle(KillSwitch(ts_recv=3, operator="ops", reason="x"))  # requests the cancel itself
    (denied,) = e.handle(limit(4, "b", replaces="a"))
    assert denied.code == "halted"  # type: ignore[attr-defined]


def test_order_replacing_when_id_reused_then_duplicate_denied_and_nothing_canceled() -> None:
    e = engine()
    old = submitted(e, limit(1, "a"))
    submitted(e, limit(2, "b"))
    (dup,) = e.handle(limit(3, "b", replaces="a"))
    assert dup.code == "duplicate_signal"  # type: ignore[attr-defined]
    (still,) = e.handle(cancel(4, "x", "a"))
    assert isinstance(still, CancelOrder) and still.order_id == old.order_id
