"""CANCEL signals: cancel the open orders of an earlier signal, or say why not."""

from __future__ import annotations

from engine.core import Engine, EngineConfig
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


def limit(ts: int, sid: str, strategy: str = "s") -> Signal:
    return Signal(
        ts_recv=ts,
        signal_id=sid,
        strategy=strategy,
        account="A",
        instrument="X",
        side=Side.BUY,
        qty=10,
        order_type=OrderType.LIMIT,
        price=100,
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
