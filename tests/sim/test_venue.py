"""The simulated venue: arrival after latency, matching against L1 and L2 data, queue
position, stops, DAY expiry, fees, rejects and hidden fills."""

from __future__ import annotations

import msgspec
import pytest

from engine.messages import (
    AssetClass,
    BookDelta,
    CancelOrder,
    CancelRejected,
    Instrument,
    Liquidity,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
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
    TradeTick,
)
from sim.config import DAY_NS, VenueConfig
from sim.latency import ConstantLatency, LognormalLatency
from sim.queue import UNKNOWN, ProbQueueModel, QueuePos, RiskAverseQueueModel
from sim.venue import SimVenue, _fee, next_close

INST = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=4,
    tick_size=5,
    lot_size=10,
    min_qty=20,
    venue_symbols={"V": "BTC/USD"},
)
LAT = 1_000


def venue(**kw: object) -> SimVenue:
    config = VenueConfig(name="V", latency_ns=LAT, taker_fee_bps=5, **kw)  # type: ignore[arg-type]
    v = SimVenue(config, (INST,))
    v.on_market(quote(1000, 100, 1010, 50))
    return v


def quote(bid: int | None, bid_size: int, ask: int | None, ask_size: int, ts: int = 0) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument="BTC-USD",
        venue="V",
        bid_price=bid,
        bid_size=bid_size,
        ask_price=ask,
        ask_size=ask_size,
    )


def trade(price: int, qty: int, aggressor: Side | None, ts: int = 0) -> TradeTick:
    return TradeTick(
        ts_recv=ts, instrument="BTC-USD", venue="V", price=price, qty=qty, aggressor=aggressor
    )


def level(side: Side, price: int, qty: int, ts: int = 0, clear: bool = False) -> BookDelta:
    return BookDelta(
        ts_recv=ts, instrument="BTC-USD", venue="V", side=side, price=price, qty=qty, clear=clear
    )


def submit(
    side: Side, qty: int, otype: OrderType = OrderType.MARKET, oid: str = "o1", **kw: object
) -> SubmitOrder:
    fields: dict[str, object] = {
        "ts_recv": 100,
        "order_id": oid,
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


def cancel(oid: str = "o1") -> CancelOrder:
    return CancelOrder(ts_recv=0, order_id=oid, venue="V", instrument="BTC-USD")


def replace(qty: int, price: int | None, oid: str = "o1") -> ReplaceOrder:
    return ReplaceOrder(
        ts_recv=0, order_id=oid, venue="V", instrument="BTC-USD", qty=qty, price=price
    )


def send(v: SimVenue, cmd: Message, now: int = 100) -> list[Message]:
    """Send a command and run the venue until it has handled it; return the responses."""
    assert v.on_command(cmd, now) == []
    at = v.wakeup_at()
    assert at is not None
    return v.on_wakeup(at)


def fills(msgs: list[Message]) -> list[tuple[int, int]]:
    return [(m.price, m.qty) for m in msgs if isinstance(m, OrderFilled)]


def kinds(msgs: list[Message]) -> list[type]:
    return [type(m) for m in msgs]


def ahead(v: SimVenue, oid: str = "o1") -> int:
    return v._orders[oid].pos.ahead


# --- taking liquidity ----------------------------------------------------------------------


def test_market_buy_when_larger_than_touch_then_walks_levels_and_cancels_rest() -> None:
    out = send(venue(depth_levels=2), submit(Side.BUY, 130))
    assert isinstance(out[0], OrderAccepted)
    got = [m for m in out if isinstance(m, OrderFilled)]
    assert [(f.price, f.qty) for f in got] == [(1010, 50), (1015, 50)]
    assert all(f.liquidity is Liquidity.TAKER for f in got)
    assert isinstance(out[-1], OrderCanceled)
    assert all(m.ts_recv == 100 + 2 * LAT and m.ts_event == 100 + LAT for m in out)  # type: ignore[attr-defined]
    assert len({f.trade_id for f in got}) == 2


def test_on_command_when_sent_then_nothing_until_arrival_after_entry_latency() -> None:
    v = venue()
    assert v.on_command(submit(Side.BUY, 20), 100) == []
    assert v.wakeup_at() == 100 + LAT
    assert v.on_wakeup(100 + LAT - 1) == []
    assert kinds(v.on_wakeup(100 + LAT)) == [OrderAccepted, OrderFilled]
    assert v.wakeup_at() is None


def test_submit_when_market_moves_during_entry_latency_then_matches_market_at_arrival() -> None:
    v = venue()
    v.on_command(submit(Side.BUY, 20), 100)
    v.on_market(quote(1020, 10, 1030, 50, ts=500))  # before the order arrives at 1100
    out = v.on_wakeup(1100)
    assert fills(out) == [(1030, 20)]


def test_ioc_limit_when_partly_marketable_then_fills_touch_and_cancels_remainder() -> None:
    out = send(venue(), submit(Side.BUY, 80, OrderType.LIMIT, price=1010, tif=TimeInForce.IOC))
    assert kinds(out) == [OrderAccepted, OrderFilled, OrderCanceled]
    assert fills(out) == [(1010, 50)]


def test_fok_when_liquidity_short_then_canceled_without_fill() -> None:
    out = send(
        venue(depth_levels=1),
        submit(Side.SELL, 200, OrderType.LIMIT, price=990, tif=TimeInForce.FOK),
    )
    assert kinds(out) == [OrderAccepted, OrderCanceled]
    assert out[1].reason == "FOK: not enough liquidity"  # type: ignore[attr-defined]


def test_fok_when_liquidity_enough_then_fills_completely() -> None:
    out = send(
        venue(depth_levels=2),
        submit(Side.SELL, 200, OrderType.LIMIT, price=995, tif=TimeInForce.FOK),
    )
    assert fills(out) == [(1000, 100), (995, 100)]
    assert kinds(out) == [OrderAccepted, OrderFilled, OrderFilled]


def test_taking_when_same_instant_then_displayed_size_not_taken_twice() -> None:
    v = venue(depth_levels=1)
    v.on_command(submit(Side.BUY, 40, oid="a"), 100)
    v.on_command(submit(Side.BUY, 40, oid="b"), 100)
    out = v.on_wakeup(100 + LAT)
    assert [(m.order_id, m.qty) for m in out if isinstance(m, OrderFilled)] == [
        ("a", 40),
        ("b", 10),
    ]


def test_taking_when_quote_updates_then_consumed_size_is_available_again() -> None:
    v = venue(depth_levels=1)
    send(v, submit(Side.BUY, 50, oid="a"))
    assert fills(send(v, submit(Side.BUY, 50, oid="b"))) == []
    v.on_market(quote(1000, 100, 1010, 50, ts=2_000))
    assert fills(send(v, submit(Side.BUY, 50, oid="c"), now=3_000)) == [(1010, 50)]


def test_fade_ratio_when_half_then_takes_half_of_each_displayed_level_rounded_to_lot() -> None:
    out = send(venue(depth_levels=2, fade_ratio=0.5), submit(Side.BUY, 100))
    assert fills(out) == [(1010, 20), (1015, 20)]  # 25 rounds down to the lot of 10


def test_l2_market_order_when_book_deep_then_walks_real_levels() -> None:
    v = venue(depth_levels=1)
    v.on_market(level(Side.SELL, 1010, 30, clear=True))
    v.on_market(level(Side.SELL, 1020, 20))
    v.on_market(level(Side.SELL, 1040, 50))
    v.on_market(level(Side.BUY, 1000, 10))
    out = send(v, submit(Side.BUY, 80, OrderType.LIMIT, price=1040, tif=TimeInForce.IOC))
    assert fills(out) == [(1010, 30), (1020, 20), (1040, 30)]
    # the book now drives matching: a quote no longer adds liquidity
    v.on_market(quote(1000, 100, 1005, 500, ts=50))
    assert fills(send(v, submit(Side.BUY, 20, oid="o2"), now=200)) == [(1040, 20)]


def test_l2_consumption_when_level_updated_then_available_again() -> None:
    v = venue()
    v.on_market(level(Side.SELL, 1010, 30, clear=True))
    assert fills(send(v, submit(Side.BUY, 30, oid="a"))) == [(1010, 30)]
    assert fills(send(v, submit(Side.BUY, 30, oid="b"))) == []
    v.on_market(level(Side.SELL, 1010, 30, ts=2_000))
    assert fills(send(v, submit(Side.BUY, 30, oid="c"), now=3_000)) == [(1010, 30)]


# --- resting orders and their queue --------------------------------------------------------


def test_limit_buy_when_passive_then_rests_and_fills_as_maker_when_ask_reaches_it() -> None:
    v = venue()
    out = send(v, submit(Side.BUY, 60, OrderType.LIMIT, price=1000))
    assert kinds(out) == [OrderAccepted]
    assert v.on_market(quote(995, 10, 1005, 40, ts=2_000)) == []
    out = v.on_market(quote(990, 10, 1000, 40, ts=3_000))
    got = [m for m in out if isinstance(m, OrderFilled)]
    assert [(f.price, f.qty, f.liquidity) for f in got] == [(1000, 40, Liquidity.MAKER)]
    assert got[0].ts_event == 3_000 and got[0].ts_recv == 3_000 + LAT
    assert fills(v.on_market(quote(990, 10, 995, 40, ts=4_000))) == [(1000, 20)]
    assert v.on_market(quote(990, 10, 995, 40, ts=5_000)) == []  # fully filled: gone


def test_queue_when_joining_touch_then_fills_only_trades_beyond_the_queue_ahead() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000))
    assert ahead(v) == 100  # the displayed bid
    assert v.on_market(trade(1000, 70, Side.SELL, ts=2_000)) == []
    assert ahead(v) == 30
    out = v.on_market(trade(1000, 60, Side.SELL, ts=3_000))
    got = [m for m in out if isinstance(m, OrderFilled)]
    assert [(f.price, f.qty, f.liquidity) for f in got] == [(1000, 30, Liquidity.MAKER)]
    assert ahead(v) == 0
    assert fills(v.on_market(trade(1000, 40, None, ts=4_000))) == [(1000, 20)]


def test_queue_when_trade_aggressor_on_our_side_then_queue_unchanged() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000))
    assert v.on_market(trade(1000, 500, Side.BUY, ts=2_000)) == []
    assert ahead(v) == 100


def test_queue_when_improving_touch_then_first_in_line() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1005))
    assert ahead(v) == 0
    assert fills(v.on_market(trade(1005, 20, Side.SELL, ts=2_000))) == [(1005, 20)]


def test_queue_when_level_shrinks_then_risk_averse_queue_capped_at_level() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000))
    v.on_market(quote(1000, 40, 1010, 50, ts=2_000))
    assert ahead(v) == 40
    v.on_market(quote(1000, 90, 1010, 50, ts=3_000))  # joiners queue behind us
    assert ahead(v) == 40
    v.on_market(quote(995, 90, 1010, 50, ts=4_000))  # our level is gone from the feed
    assert ahead(v) == 0


def test_queue_when_behind_touch_then_unknown_until_level_is_visible() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=995))
    assert ahead(v) == UNKNOWN
    assert v.on_market(trade(995, 1_000, Side.SELL, ts=2_000)) == []  # queue unknown
    v.on_market(quote(995, 70, 1005, 50, ts=3_000))
    assert ahead(v) == 70


def test_resting_when_trade_prints_through_price_then_fills_leaves() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=995))
    assert fills(v.on_market(trade(990, 10, Side.SELL, ts=2_000))) == [(995, 50)]


def test_resting_when_two_of_ours_at_one_price_then_time_priority_and_trade_qty_shared() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1005, oid="a"))
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1005, oid="b"), now=200)
    out = v.on_market(trade(1005, 70, Side.SELL, ts=2_000))
    assert [(m.order_id, m.qty) for m in out if isinstance(m, OrderFilled)] == [
        ("a", 50),
        ("b", 20),
    ]


def test_resting_when_better_price_then_filled_first_on_cross() -> None:
    v = venue()
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000, oid="a"))
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1005, oid="b"), now=200)
    out = v.on_market(quote(990, 10, 1000, 60, ts=2_000))
    assert [(m.order_id, m.price, m.qty) for m in out if isinstance(m, OrderFilled)] == [
        ("b", 1005, 50),
        ("a", 1000, 10),
    ]


def test_l2_resting_when_level_shrinks_then_queue_follows_book_and_cross_fills() -> None:
    v = venue()
    v.on_market(level(Side.BUY, 1000, 80, clear=True))
    v.on_market(level(Side.SELL, 1010, 30))
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000))
    assert ahead(v) == 80
    v.on_market(level(Side.BUY, 1000, 20, ts=2_000))
    assert ahead(v) == 20
    assert fills(v.on_market(level(Side.SELL, 995, 10, ts=3_000))) == [(1000, 10)]
    # both crossing levels now, at our price, as maker; 995 was consumed already
    assert fills(v.on_market(level(Side.SELL, 1000, 30, ts=4_000))) == [(1000, 30)]


def test_prob_queue_model_when_level_shrinks_then_part_of_the_cancel_is_ahead() -> None:
    import random

    model = ProbQueueModel(power=2.0)
    pos = QueuePos(30, 100)  # 30 ahead, 70 behind
    model.on_level(pos, 60, random.Random(1))  # 40 canceled
    # p(back) = 70^2 / (70^2 + 30^2) = 0.845: 6.2 of 40 from the front
    assert pos.ahead in (23, 24) and pos.level == 60
    pos = QueuePos(30, 100)
    model.on_trade(pos, 10)  # a trade: the level falls by it, not counted twice
    model.on_level(pos, 90, random.Random(1))
    assert pos.ahead == 20


def test_risk_averse_queue_model_when_level_changes_then_min_of_queue_and_level() -> None:
    import random

    model = RiskAverseQueueModel()
    pos = QueuePos(30, 100)
    model.on_level(pos, 60, random.Random(1))
    assert pos.ahead == 30
    model.on_level(pos, 10, random.Random(1))
    assert pos.ahead == 10
    model.on_trade(pos, 15)
    assert pos.ahead == -5  # the venue fills the excess


def test_venue_when_prob_queue_model_then_resting_order_advances_on_cancels() -> None:
    v = venue(queue_model=ProbQueueModel(power=1.0))
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1000))
    v.on_market(quote(1000, 150, 1010, 50, ts=2_000))  # 50 joined behind us
    v.on_market(quote(1000, 50, 1010, 50, ts=3_000))  # 100 canceled: some from the front
    assert 0 <= ahead(v) < 100


# --- stops -----------------------------------------------------------------------------------


def test_stop_when_trade_reaches_stop_price_then_triggers_as_market() -> None:
    v = venue()
    v.on_market(trade(1000, 10, None))
    out = send(v, submit(Side.BUY, 30, OrderType.STOP, stop_price=1020))
    assert kinds(out) == [OrderAccepted]
    assert v.on_market(trade(1015, 10, None, ts=2_000)) == []
    out = v.on_market(trade(1020, 10, None, ts=3_000))
    assert fills(out) == [(1010, 30)]
    assert all(f.liquidity is Liquidity.TAKER for f in out if isinstance(f, OrderFilled))


def test_stop_limit_when_no_trades_then_triggers_on_touch_and_rests_the_rest() -> None:
    v = venue(depth_levels=1)
    out = send(v, submit(Side.SELL, 80, OrderType.STOP_LIMIT, stop_price=990, price=985))
    assert kinds(out) == [OrderAccepted]
    assert v.on_market(quote(995, 30, 1000, 50, ts=2_000)) == []
    out = v.on_market(quote(990, 30, 1000, 50, ts=3_000))  # bid reaches the stop
    assert fills(out) == [(990, 30)]
    assert v._orders["o1"].price == 985 and v._orders["o1"].leaves == 50


def test_stop_when_already_through_at_arrival_then_triggers_immediately() -> None:
    v = venue()
    out = send(v, submit(Side.BUY, 30, OrderType.STOP, stop_price=1005))  # ask 1010 >= 1005
    assert kinds(out) == [OrderAccepted, OrderFilled]


# --- cancel, replace, expiry ---------------------------------------------------------------


def test_cancel_when_open_then_canceled_and_when_gone_then_cancel_rejected() -> None:
    v = venue()
    send(v, submit(Side.SELL, 30, OrderType.LIMIT, price=1100))
    assert kinds(send(v, cancel(), 200)) == [OrderCanceled]
    again = send(v, cancel(), 300)
    assert isinstance(again[0], CancelRejected) and again[0].reason == "order already canceled"
    unknown = send(v, cancel("nope"), 300)
    assert unknown[0].reason == "unknown order"  # type: ignore[attr-defined]


def test_cancel_when_it_arrives_after_the_fill_then_rejected_order_already_filled() -> None:
    v = venue()
    send(v, submit(Side.BUY, 30, OrderType.LIMIT, price=1000))
    v.on_command(cancel(), 1_500)  # reaches the venue at 2_500
    fill = v.on_market(quote(990, 10, 1000, 40, ts=2_000))
    assert fills(fill) == [(1000, 30)]
    out = v.on_wakeup(2_500)
    assert isinstance(out[0], CancelRejected) and out[0].reason == "order already filled"


def test_cancel_when_latency_differs_then_cancel_can_overtake_its_order() -> None:
    v = venue(latency=ConstantLatency(entry=1_000, cancel=100, response=10))
    v.on_command(submit(Side.BUY, 30, OrderType.LIMIT, price=1000), 0)
    v.on_command(cancel(), 10)
    out = v.on_wakeup(110)
    assert isinstance(out[0], CancelRejected) and out[0].reason == "unknown order"


def test_replace_when_open_then_replaced_and_below_filled_then_rejected() -> None:
    v = venue()
    send(v, submit(Side.BUY, 100, OrderType.LIMIT, price=1000))
    v.on_market(quote(990, 10, 1000, 30, ts=1_500))
    ok = send(v, replace(60, 995), 2_000)
    assert isinstance(ok[0], OrderReplaced) and ok[0].qty == 60 and ok[0].price == 995
    bad = send(v, replace(20, 995), 3_000)
    assert isinstance(bad[0], ReplaceRejected) and bad[0].reason == "qty 20 <= filled 30"


def test_replace_when_qty_reduced_then_queue_priority_kept() -> None:
    v = venue()
    send(v, submit(Side.BUY, 100, OrderType.LIMIT, price=1000))
    v.on_market(trade(1000, 60, Side.SELL, ts=1_500))
    assert ahead(v) == 40
    send(v, replace(50, None), 2_000)
    assert ahead(v) == 40


def test_replace_when_price_changes_then_priority_lost_and_marketable_part_taken() -> None:
    v = venue()
    send(v, submit(Side.BUY, 100, OrderType.LIMIT, price=1000))
    out = send(v, replace(100, 1010), 2_000)
    assert kinds(out) == [OrderReplaced, OrderFilled]
    assert fills(out) == [(1010, 50)]
    assert ahead(v) == 0  # rests alone at 1010 once the ask there is taken


def test_day_order_when_session_closes_then_expired_at_close() -> None:
    close = 3_600_000_000_000
    v = venue(day_close_ns=close)
    send(v, submit(Side.BUY, 30, OrderType.LIMIT, price=990, tif=TimeInForce.DAY))
    assert v.wakeup_at() == close
    out = v.on_wakeup(close)
    assert kinds(out) == [OrderExpired]
    assert out[0].ts_event == close and out[0].ts_recv == close + LAT  # type: ignore[attr-defined]
    assert send(v, cancel(), close + 10)[0].reason == "order already expired"  # type: ignore[attr-defined]


def test_next_close_when_after_today_close_then_tomorrow() -> None:
    assert next_close(10, 100) == 100
    assert next_close(100, 100) == DAY_NS + 100
    assert next_close(DAY_NS + 5, 0) == 2 * DAY_NS


# --- rejects, fees, config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (submit(Side.BUY, 20, instrument="XRP-USD"), "unknown symbol XRP-USD"),
        (submit(Side.BUY, 20, OrderType.LIMIT, price=1001), "invalid price 1001 (tick 5)"),
        (submit(Side.BUY, 20, OrderType.LIMIT, price=0), "invalid price 0 (must be > 0)"),
        (submit(Side.BUY, 20, OrderType.LIMIT), "missing price for LIMIT order"),
        (submit(Side.BUY, 20, OrderType.STOP), "missing stop price for STOP order"),
        (
            submit(Side.BUY, 20, OrderType.STOP, stop_price=1003),
            "invalid stop price 1003 (tick 5)",
        ),
        (submit(Side.BUY, 15), "invalid quantity 15 (lot 10)"),
        (submit(Side.BUY, 0), "invalid quantity 0 (must be > 0)"),
        (submit(Side.BUY, -10), "invalid quantity -10 (must be > 0)"),
        (submit(Side.BUY, 10), "invalid quantity 10 (below min_qty 20)"),
    ],
)
def test_submit_when_bad_symbol_price_or_size_then_rejected_with_reason(
    cmd: SubmitOrder, reason: str
) -> None:
    out = send(venue(), cmd)
    assert isinstance(out[0], OrderRejected) and len(out) == 1
    assert out[0].reason == reason and not out[0].retryable


def test_submit_when_type_or_tif_unsupported_then_rejected() -> None:
    v = venue(
        order_types=(OrderType.MARKET, OrderType.LIMIT),
        time_in_force=(TimeInForce.GTC, TimeInForce.IOC),
    )
    stop = send(v, submit(Side.BUY, 20, OrderType.STOP, stop_price=1020))
    day = send(v, submit(Side.BUY, 20, tif=TimeInForce.DAY))
    assert stop[0].reason == "order type STOP not supported by venue V"  # type: ignore[attr-defined]
    assert day[0].reason == "time in force DAY not supported by venue V"  # type: ignore[attr-defined]


def test_submit_when_order_id_reused_then_rejected_as_duplicate() -> None:
    v = venue()
    send(v, submit(Side.BUY, 20))
    assert send(v, submit(Side.BUY, 20))[0].reason == "duplicate order id o1"  # type: ignore[attr-defined]


def test_fee_when_rebate_or_half_then_rounds_half_away_from_zero() -> None:
    assert _fee(price=1000, qty=5, multiplier=1, bps=3) == 2  # 1.5 -> 2
    assert _fee(price=1000, qty=5, multiplier=1, bps=-3) == -2
    assert _fee(price=1000, qty=4, multiplier=1, bps=3) == 1  # 1.2 -> 1


def test_fills_when_maker_rebate_then_negative_fee_and_taker_positive() -> None:
    v = venue(maker_fee_bps=-2)
    taker = send(v, submit(Side.BUY, 20, oid="t"))
    send(v, submit(Side.BUY, 50, OrderType.LIMIT, price=1005, oid="m"))
    maker = v.on_market(trade(1005, 50, Side.SELL, ts=2_000))
    assert [m.fee for m in taker if isinstance(m, OrderFilled)] == [10]  # 1010*20*5/1e4
    assert [m.fee for m in maker if isinstance(m, OrderFilled)] == [-10]  # 1005*50*-2/1e4


def test_venue_config_when_invalid_then_error_names_venue_and_field() -> None:
    with pytest.raises(ValueError, match="VenueConfig 'V': fade_ratio must be in"):
        VenueConfig(name="V", fade_ratio=1.5)
    with pytest.raises(ValueError, match="depth_levels must be >= 1, got 0"):
        VenueConfig(name="V", depth_levels=0)


def test_venue_config_when_encoded_then_round_trips_with_tagged_models() -> None:
    config = VenueConfig(
        name="V",
        latency=LognormalLatency(median_ns=500, sigma=0.3),
        queue_model=ProbQueueModel(power=3.0),
    )
    data = msgspec.json.encode(config)
    assert msgspec.json.decode(data, type=VenueConfig) == config
    assert b'"type":"LognormalLatency"' in data


# --- responses, hidden flow, determinism ---------------------------------------------------------


def test_responses_when_lognormal_latency_then_ts_recv_never_decreases() -> None:
    v = venue(latency=LognormalLatency(median_ns=1_000, sigma=1.0), seed=3)
    recv: list[int] = []
    for n in range(30):
        v.on_command(submit(Side.BUY, 20, OrderType.LIMIT, price=990, oid=f"o{n}"), n * 10)
    while (at := v.wakeup_at()) is not None:
        recv += [m.ts_recv for m in v.on_wakeup(at)]
    assert len(recv) == 30 and recv == sorted(recv)


def test_hidden_fills_when_rate_set_then_resting_order_at_touch_fills_at_seeded_times() -> None:
    def run(seed: int) -> list[tuple[int, int]]:
        v = venue(hidden_fill_rate_per_s=1_000.0, hidden_fill_fraction=0.5, seed=seed)
        send(v, submit(Side.BUY, 80, OrderType.LIMIT, price=1000, oid="a"))  # at the touch
        send(v, submit(Side.SELL, 80, OrderType.LIMIT, price=1100, oid="b"))  # far behind
        got: list[tuple[int, int]] = []
        for _ in range(40):
            at = v.wakeup_at()
            if at is None:
                break
            got += [(m.ts_event, m.qty) for m in v.on_wakeup(at) if isinstance(m, OrderFilled)]  # type: ignore[misc]
        return got

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert sum(q for _, q in first) == 80  # 40, 20, 10, 10: halves of the leaves, >= a lot
    assert [q for _, q in first] == [40, 20, 10, 10]


def test_venue_when_same_seed_and_inputs_then_same_messages() -> None:
    def run() -> list[Message]:
        latency = LognormalLatency(median_ns=700, sigma=0.8, spike_prob=0.3, spike_ns=5_000)
        v = venue(latency=latency)
        out: list[Message] = []
        for n in range(10):
            v.on_command(submit(Side.BUY, 20, oid=f"o{n}"), n * 100)
        while (at := v.wakeup_at()) is not None:
            out += v.on_wakeup(at)
        return out

    assert run() == run()
