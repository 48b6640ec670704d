"""The simulated venue: matching against L1 with synthetic depth, fees, rejects."""

from __future__ import annotations

from engine.messages import (
    AssetClass,
    CancelOrder,
    CancelRejected,
    Instrument,
    Liquidity,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    Side,
    SubmitOrder,
    TimeInForce,
)
from sim.venue import SimVenue, VenueConfig, _fee

INST = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=4,
    tick_size=5,
    lot_size=10,
    venue_symbols={"V": "BTC/USD"},
)
LAT = 1_000


def venue(**kw: int) -> SimVenue:
    v = SimVenue(VenueConfig(name="V", latency_ns=LAT, taker_fee_bps=5, **kw), (INST,))
    v.on_quote(quote(1000, 100, 1010, 50))
    return v


def quote(bid: int, bid_size: int, ask: int, ask_size: int, ts: int = 0) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument="BTC-USD",
        venue="V",
        bid_price=bid,
        bid_size=bid_size,
        ask_price=ask,
        ask_size=ask_size,
    )


def submit(side: Side, qty: int, otype: OrderType = OrderType.MARKET, **kw: object) -> SubmitOrder:
    fields: dict[str, object] = {
        "ts_recv": 100,
        "order_id": "o1",
        "venue": "V",
        "instrument": "BTC-USD",
        "account": "A",
        "strategy": "S",
        "side": side,
        "qty": qty,
        "order_type": otype,
        "tif": TimeInForce.GTC,
    }
    fields.update(kw)
    return SubmitOrder(**fields)  # type: ignore[arg-type]


def test_market_buy_when_larger_than_touch_then_walks_levels_and_cancels_rest() -> None:
    out = venue(depth_levels=2).on_command(submit(Side.BUY, 130), 100)
    assert isinstance(out[0], OrderAccepted)
    fills = [m for m in out if isinstance(m, OrderFilled)]
    assert [(f.price, f.qty) for f in fills] == [(1010, 50), (1015, 50)]
    assert all(f.liquidity is Liquidity.TAKER for f in fills)
    assert isinstance(out[-1], OrderCanceled)
    assert all(m.ts_recv == 100 + 2 * LAT and m.ts_event == 100 + LAT for m in out)
    assert len({f.trade_id for f in fills}) == 2


def test_limit_buy_when_passive_then_rests_and_fills_as_maker_when_ask_reaches_it() -> None:
    v = venue()
    out = v.on_command(submit(Side.BUY, 60, OrderType.LIMIT, price=1000), 100)
    assert [type(m) for m in out] == [OrderAccepted]
    assert v.on_quote(quote(995, 10, 1005, 40, ts=200)) == []
    fills = v.on_quote(quote(990, 10, 1000, 40, ts=300))
    assert [(f.price, f.qty, f.liquidity) for f in fills] == [(1000, 40, Liquidity.MAKER)]
    fills = v.on_quote(quote(990, 10, 995, 40, ts=400))
    assert [(f.price, f.qty) for f in fills] == [(1000, 20)]
    assert v.on_quote(quote(990, 10, 995, 40, ts=500)) == []  # fully filled: gone


def test_ioc_limit_when_partly_marketable_then_fills_touch_and_cancels_remainder() -> None:
    out = venue().on_command(
        submit(Side.BUY, 80, OrderType.LIMIT, price=1010, tif=TimeInForce.IOC), 100
    )
    assert [type(m) for m in out] == [OrderAccepted, OrderFilled, OrderCanceled]
    assert out[1].qty == 50  # type: ignore[attr-defined]


def test_fok_when_liquidity_short_then_canceled_without_fill() -> None:
    out = venue(depth_levels=1).on_command(
        submit(Side.SELL, 200, OrderType.LIMIT, price=990, tif=TimeInForce.FOK), 100
    )
    assert [type(m) for m in out] == [OrderAccepted, OrderCanceled]


def test_cancel_when_open_then_canceled_and_when_gone_then_cancel_rejected() -> None:
    v = venue()
    v.on_command(submit(Side.SELL, 30, OrderType.LIMIT, price=1100), 100)
    cancel = CancelOrder(ts_recv=200, order_id="o1", venue="V", instrument="BTC-USD")
    assert [type(m) for m in v.on_command(cancel, 200)] == [OrderCanceled]
    again = v.on_command(cancel, 300)
    assert isinstance(again[0], CancelRejected) and again[0].reason == "order not open"


def test_replace_when_open_then_replaced_and_below_filled_then_rejected() -> None:
    v = venue()
    v.on_command(submit(Side.BUY, 100, OrderType.LIMIT, price=1000), 100)
    v.on_quote(quote(990, 10, 1000, 30, ts=150))
    ok = v.on_command(
        ReplaceOrder(
            ts_recv=200, order_id="o1", venue="V", instrument="BTC-USD", qty=60, price=995
        ),
        200,
    )
    assert isinstance(ok[0], OrderReplaced) and ok[0].qty == 60
    bad = v.on_command(
        ReplaceOrder(
            ts_recv=300, order_id="o1", venue="V", instrument="BTC-USD", qty=20, price=995
        ),
        300,
    )
    assert isinstance(bad[0], ReplaceRejected) and "filled 30" in bad[0].reason


def test_submit_when_bad_symbol_tick_or_lot_then_rejected_with_reason() -> None:
    v = venue()
    unknown = v.on_command(submit(Side.BUY, 10, instrument="XRP-USD"), 100)
    off_tick = v.on_command(submit(Side.BUY, 10, OrderType.LIMIT, price=1001), 100)
    off_lot = v.on_command(submit(Side.BUY, 15), 100)
    reasons = [m[0].reason for m in (unknown, off_tick, off_lot)]  # type: ignore[attr-defined]
    assert all(isinstance(m[0], OrderRejected) for m in (unknown, off_tick, off_lot))
    assert reasons == [
        "unknown symbol XRP-USD",
        "invalid price 1001 (tick 5)",
        "invalid quantity 15 (lot 10)",
    ]


def test_fee_when_rebate_or_half_then_rounds_half_away_from_zero() -> None:
    assert _fee(price=1000, qty=5, multiplier=1, bps=3) == 2  # 1.5 -> 2
    assert _fee(price=1000, qty=5, multiplier=1, bps=-3) == -2
    assert _fee(price=1000, qty=4, multiplier=1, bps=3) == 1  # 1.2 -> 1
