"""Seeded fault plans: rejects, lost and late acks, duplicate fills, disconnects,
stale quote windows, cancel/fill races; each deterministic given the seed."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from engine.messages import (
    AssetClass,
    CancelOrder,
    CancelRejected,
    Instrument,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderType,
    QuoteTick,
    Side,
    SubmitOrder,
    TimeInForce,
    VenueConnected,
    VenueDisconnected,
)
from sim.config import VenueConfig
from sim.faults import FaultPlan, RejectReason
from sim.latency import ConstantLatency, LognormalLatency
from sim.venue import SimVenue

INST = Instrument(
    instrument="X",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=0,
    size_precision=0,
    venue_symbols={"V": "X"},
)
LAT = ConstantLatency(entry=100, response=10)


def venue(faults: FaultPlan, seed: int = 0) -> SimVenue:
    v = SimVenue(VenueConfig(name="V", latency=LAT, faults=faults, seed=seed), (INST,))
    v.on_market(quote(0))
    return v


def quote(ts: int, ask: int = 101) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts, instrument="X", venue="V", bid_price=99, bid_size=50, ask_price=ask, ask_size=50
    )


def order(oid: str, otype: OrderType = OrderType.MARKET, price: int | None = None) -> SubmitOrder:
    return SubmitOrder(
        ts_recv=0,
        order_id=oid,
        venue="V",
        instrument="X",
        account="A",
        strategy="S",
        side=Side.BUY,
        qty=10,
        order_type=otype,
        price=price,
        tif=TimeInForce.GTC,
    )


def drain(v: SimVenue, until: int = 1 << 60) -> list[Message]:
    out: list[Message] = []
    while (at := v.wakeup_at()) is not None and at <= until:
        out += v.on_wakeup(at)
    return out


def flow(v: SimVenue, n: int = 40) -> list[Message]:
    for k in range(n):
        v.on_command(order(f"o{k}"), k * 1_000)
    return drain(v)


def test_fault_plan_when_reject_rate_then_reasons_drawn_with_retryable_flag() -> None:
    out = flow(venue(FaultPlan(reject_rate=0.5)), 200)
    rejects = [m for m in out if isinstance(m, OrderRejected)]
    assert 60 < len(rejects) < 140
    assert {(m.reason, m.retryable) for m in rejects} == {
        ("rate limit exceeded", True),
        ("insufficient margin", False),
    }


def test_fault_plan_when_custom_reasons_then_only_those_used() -> None:
    plan = FaultPlan(reject_rate=1.0, reject_reasons=(RejectReason(reason="halted"),))
    out = flow(venue(plan), 5)
    assert [(m.reason, m.retryable) for m in out] == [("halted", False)] * 5  # type: ignore[attr-defined]


def test_fault_plan_when_drop_ack_then_no_accepted_but_fills_arrive() -> None:
    out = flow(venue(FaultPlan(drop_ack_rate=1.0)), 3)
    assert [type(m) for m in out] == [OrderFilled] * 3


def test_fault_plan_when_delay_ack_then_ack_arrives_after_its_fill() -> None:
    out = flow(venue(FaultPlan(delay_ack_rate=1.0, delay_ack_ns=500)), 1)
    ack, fill = out
    assert isinstance(ack, OrderAccepted) and isinstance(fill, OrderFilled)
    assert ack.ts_recv == fill.ts_recv + 500


def test_fault_plan_when_duplicate_fills_then_same_fill_delivered_twice() -> None:
    out = flow(venue(FaultPlan(duplicate_fill_rate=1.0)), 1)
    got = [m for m in out if isinstance(m, OrderFilled)]
    assert len(got) == 2 and got[0] == got[1]
    assert got[0].trade_id == got[1].trade_id


def test_fault_plan_when_cancel_race_then_leaves_fill_and_cancel_rejected_as_filled() -> None:
    v = venue(FaultPlan(cancel_race_rate=1.0))
    v.on_command(order("o1", OrderType.LIMIT, price=95), 0)
    drain(v)
    v.on_command(CancelOrder(ts_recv=0, order_id="o1", venue="V", instrument="X"), 1_000)
    out = drain(v)
    assert [type(m) for m in out] == [OrderFilled, CancelRejected]
    assert out[0].price == 95 and out[0].qty == 10  # type: ignore[attr-defined]
    assert out[1].reason == "order already filled"  # type: ignore[attr-defined]


def test_fault_plan_when_disconnect_window_then_events_at_edges_and_commands_lost() -> None:
    v = venue(FaultPlan(disconnects=((5_000, 9_000),)))
    v.on_command(order("lost"), 4_950)  # arrives at 5_050: inside the window
    v.on_command(order("late"), 9_000)  # arrives at 9_100: after it
    out = drain(v)
    assert [type(m) for m in out] == [
        VenueDisconnected,
        VenueConnected,
        OrderAccepted,
        OrderFilled,
    ]
    assert (out[0].ts_recv, out[1].ts_recv) == (5_000, 9_000)
    assert all(getattr(m, "order_id", "late") == "late" for m in out)


def test_fault_plan_when_disconnected_then_resting_fills_delivered_after_reconnect() -> None:
    v = venue(FaultPlan(disconnects=((5_000, 9_000),)))
    v.on_command(order("r", OrderType.LIMIT, price=100), 0)
    drain(v, until=4_000)
    assert v.on_wakeup(5_000)[0] == VenueDisconnected(
        ts_recv=5_000, venue="V", reason="simulated disconnect"
    )
    assert v.on_market(quote(6_000, ask=100)) == []  # the fill happens, but is held
    out = drain(v)
    assert [type(m) for m in out] == [VenueConnected, OrderFilled]
    fill = out[1]
    assert fill.ts_event == 6_000 and fill.ts_recv >= 9_000  # type: ignore[attr-defined]


def test_fault_plan_when_stale_windows_then_stale_and_mask_agree() -> None:
    plan = FaultPlan(stale_quotes=((10, 20), (30, 31)))
    ts = np.arange(0, 40, dtype=np.int64)
    mask = plan.stale_mask(ts)
    assert mask.tolist() == [plan.stale(int(t)) for t in ts]
    assert np.flatnonzero(mask).tolist() == [*range(10, 20), 30]
    v = venue(plan)
    assert v.stale(15) and not v.stale(20)
    assert v.stale_mask(ts).tolist() == mask.tolist()
    assert FaultPlan().stale_mask(ts).sum() == 0


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (
            lambda: FaultPlan(disconnects=((5, 5),)),
            r"disconnects\[0\] \(5, 5\): start must be < end",
        ),
        (
            lambda: FaultPlan(stale_quotes=((0, 10), (5, 20))),
            r"stale_quotes\[1\] \(5, 20\): windows must be sorted and must not overlap",
        ),
        (lambda: FaultPlan(reject_rate=1.5), r"reject_rate must be in \[0, 1\], got 1.5"),
        (lambda: FaultPlan(delay_ack_ns=-1), "delay_ack_ns must be >= 0"),
    ],
)
def test_fault_plan_when_invalid_then_value_error_names_field(plan: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan()  # type: ignore[operator]


def test_fault_plan_when_same_seed_then_same_faults_and_other_seed_differs() -> None:
    plan = FaultPlan(
        reject_rate=0.2, drop_ack_rate=0.2, delay_ack_rate=0.2, delay_ack_ns=50,
        duplicate_fill_rate=0.2,
    )  # fmt: skip
    assert flow(venue(plan, seed=1)) == flow(venue(plan, seed=1))
    assert flow(venue(plan, seed=1)) != flow(venue(plan, seed=2))


def test_fault_plan_when_all_rates_zero_then_same_messages_as_no_plan() -> None:
    assert flow(venue(FaultPlan())) == flow(
        venue(FaultPlan(reject_rate=0.0, stale_quotes=((0, 10),)))
    )


def test_fault_plan_when_fault_toggled_then_latency_draws_unchanged() -> None:
    def recv(plan: FaultPlan) -> list[int]:
        latency = LognormalLatency(median_ns=100, sigma=0.5)
        v = SimVenue(VenueConfig(name="V", latency=latency, faults=plan, seed=4), (INST,))
        v.on_market(quote(0))
        return [m.ts_recv for m in flow(v, 10) if isinstance(m, OrderFilled)]

    assert recv(FaultPlan()) == recv(FaultPlan(duplicate_fill_rate=1.0))[::2]


def test_cancel_when_order_canceled_by_venue_then_cancel_rejected_names_state() -> None:
    v = venue(FaultPlan())
    ioc = msgspec.structs.replace(order("ioc", OrderType.LIMIT, price=90), tif=TimeInForce.IOC)
    v.on_command(ioc, 0)
    assert [type(m) for m in drain(v)] == [OrderAccepted, OrderCanceled]
    v.on_command(CancelOrder(ts_recv=0, order_id="ioc", venue="V", instrument="X"), 1_000)
    assert drain(v)[0].reason == "order already canceled"  # type: ignore[attr-defined]
