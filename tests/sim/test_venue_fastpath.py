"""The venue's fast path (`horizon` + `skip`) against the slow path (`on_market` per row).

The property: for random markets (quotes, trades, book levels, several keys, another
venue's rows) and random order flows, a driver that skips every run of rows `horizon`
allows gives exactly the messages, in the same order, and the same venue state, as a
driver that feeds every row through `on_market`. Both drivers interleave commands and
wake-ups the way the sim runner does: a wake-up due at or before a row runs before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import (
    AssetClass,
    BookDelta,
    CancelOrder,
    Instrument,
    Message,
    OrderFilled,
    OrderType,
    QuoteTick,
    ReplaceOrder,
    Side,
    SubmitOrder,
    TimeInForce,
    TradeTick,
)
from sim import venue as venue_module
from sim.config import VenueConfig
from sim.faults import FaultPlan
from sim.latency import ConstantLatency, LognormalLatency
from sim.market import MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE, NULL, MarketView
from sim.queue import ProbQueueModel, RiskAverseQueueModel
from sim.venue import SimVenue


def inst(name: str, tick: int, lot: int) -> Instrument:
    return Instrument(
        instrument=name,
        asset_class=AssetClass.CRYPTO,
        currency="USD",
        price_precision=0,
        size_precision=0,
        tick_size=tick,
        lot_size=lot,
        venue_symbols={"V": name, "W": name},
    )


INSTRUMENTS = (inst("X", 1, 1), inst("Y", 2, 5))
KEYS = [("X", "V"), ("Y", "V"), ("X", "W"), ("Z", "V")]  # Z is not listed at V
SIDES = (Side.BUY, Side.SELL)

# --- building markets -----------------------------------------------------------------


Row = tuple[int, int, int, dict[str, int]]  # ts, key, mtype, fields


def build(rows: list[Row]) -> tuple[MarketView, list[QuoteTick | TradeTick | BookDelta]]:
    """Return the MarketView of the rows and each row's message (as the runner builds)."""
    n = len(rows)

    def col(dtype: Any, fill: int) -> np.ndarray:
        return np.full(n, fill, dtype=dtype)

    ts, key, mtype = col(np.int64, 0), col(np.int32, 0), col(np.int8, 0)
    bp, bs, ap, asz = (col(np.int64, NULL) for _ in range(4))
    price, qty = col(np.int64, NULL), col(np.int64, NULL)
    side, clear = col(np.int8, -1), np.zeros(n, dtype=bool)
    msgs: list[QuoteTick | TradeTick | BookDelta] = []
    for r, (t, k, m, f) in enumerate(rows):
        ts[r], key[r], mtype[r] = t, k, m
        instrument, venue = KEYS[k]
        if m == MTYPE_QUOTE:
            for arr, name in ((bp, "bp"), (bs, "bs"), (ap, "ap"), (asz, "as")):
                arr[r] = f[name]
            msgs.append(
                QuoteTick(
                    ts_recv=t,
                    ts_event=t,
                    instrument=instrument,
                    venue=venue,
                    bid_price=None if f["bp"] == NULL else f["bp"],
                    bid_size=f["bs"],
                    ask_price=None if f["ap"] == NULL else f["ap"],
                    ask_size=f["as"],
                )
            )
        elif m == MTYPE_TRADE:
            price[r], qty[r], side[r] = f["px"], f["qty"], f["side"]
            msgs.append(
                TradeTick(
                    ts_recv=t,
                    ts_event=t,
                    instrument=instrument,
                    venue=venue,
                    price=f["px"],
                    qty=f["qty"],
                    aggressor=SIDES[f["side"]] if f["side"] >= 0 else None,
                )
            )
        else:
            price[r], qty[r], side[r], clear[r] = f["px"], f["qty"], f["side"], f["clear"]
            msgs.append(
                BookDelta(
                    ts_recv=t,
                    ts_event=t,
                    instrument=instrument,
                    venue=venue,
                    side=SIDES[f["side"]],
                    price=f["px"],
                    qty=f["qty"],
                    clear=bool(f["clear"]),
                )
            )
    one_key = len(key) > 0 and key.min() == key.max()
    view = MarketView(
        ts,
        mtype,
        key,
        bp,
        bs,
        ap,
        asz,
        price,
        qty,
        side,
        clear,
        ts.copy(),
        single_key=int(key[0]) if one_key else -1,  # the fast paths of one key,
        quotes_only=bool((mtype == 0).all()),  # and of quotes only, when drawn
    )
    return view, msgs


@st.composite
def market_rows(draw: st.DrawFn, max_rows: int = 60) -> list[Row]:
    n = draw(st.integers(0, max_rows))
    book_keys = draw(st.sets(st.sampled_from([0, 1, 2])))  # keys that publish L2
    t = 0
    rows: list[Row] = []
    for _ in range(n):
        t += draw(st.sampled_from([0, 0, 1, 1, 2, 5]))
        k = draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))
        lot = 5 if KEYS[k][0] == "Y" else 1
        tick = 2 if KEYS[k][0] == "Y" else 1
        kinds = [MTYPE_QUOTE, MTYPE_QUOTE, MTYPE_TRADE, MTYPE_TRADE]
        if k in book_keys:
            kinds += [MTYPE_BOOK, MTYPE_BOOK, MTYPE_BOOK]
        m = draw(st.sampled_from(kinds))
        f: dict[str, int] = {}
        if m == MTYPE_QUOTE:
            bid = draw(st.integers(48, 52)) * tick
            spread = draw(st.integers(1, 2)) * tick
            f["bp"], f["ap"] = bid, bid + spread
            f["bs"], f["as"] = (draw(st.integers(0, 5)) * lot for _ in range(2))
            if draw(st.integers(0, 15)) == 0:
                f["bp"], f["bs"] = NULL, NULL
            if draw(st.integers(0, 15)) == 0:
                f["ap"], f["as"] = NULL, NULL
        elif m == MTYPE_TRADE:
            f["px"] = draw(st.integers(47, 54)) * tick
            f["qty"] = draw(st.integers(1, 8)) * lot
            f["side"] = draw(st.sampled_from([-1, 0, 1]))
        else:
            f["side"] = draw(st.sampled_from([0, 1]))
            f["px"] = draw(st.integers(46, 55)) * tick
            f["qty"] = draw(st.integers(0, 6)) * lot
            f["clear"] = int(draw(st.integers(0, 12)) == 0)
        rows.append((t, k, m, f))
    return rows


# --- order flow ----------------------------------------------------------------------------


@st.composite
def order_flow(draw: st.DrawFn, n_rows: int) -> list[tuple[int, Message]]:
    n = draw(st.integers(0, 12))
    positions = sorted(draw(st.lists(st.integers(0, n_rows), min_size=n, max_size=n)))
    cmds: list[tuple[int, Message]] = []
    submitted: list[SubmitOrder] = []
    for r in positions:
        roll = draw(st.integers(0, 9))
        if roll < 2 and submitted:
            target = draw(st.sampled_from(submitted))
            cmds.append(
                (r, CancelOrder(ts_recv=0, order_id=target.order_id, venue="V", instrument="X"))
            )
            continue
        if roll < 3 and submitted:
            target = draw(st.sampled_from(submitted))
            tick, lot = (2, 5) if target.instrument == "Y" else (1, 1)
            prices = [p * tick for p in range(46, 56)]
            new_price = draw(st.one_of(st.none(), st.sampled_from(prices)))
            cmds.append(
                (
                    r,
                    ReplaceOrder(
                        ts_recv=0,
                        order_id=target.order_id,
                        venue="V",
                        instrument=target.instrument,
                        qty=draw(st.integers(1, 12)) * lot,
                        price=new_price,
                    ),
                )
            )
            continue
        instrument = draw(st.sampled_from(["X", "X", "X", "Y", "Z"]))
        tick, lot = (2, 5) if instrument == "Y" else (1, 1)
        otype = draw(st.sampled_from(list(OrderType) + [OrderType.LIMIT] * 3))
        tif = draw(st.sampled_from(list(TimeInForce) + [TimeInForce.GTC] * 2))
        price = draw(st.integers(47, 54)) * tick
        stop = draw(st.integers(47, 54)) * tick
        cmd = SubmitOrder(
            ts_recv=0,
            order_id=f"o{len(cmds)}",
            venue="V",
            instrument=instrument,
            account="A",
            strategy="S",
            side=draw(st.sampled_from(SIDES)),
            qty=draw(st.integers(1, 12)) * lot,
            order_type=otype,
            price=price if otype in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
            stop_price=stop if otype in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
            tif=tif,
        )
        submitted.append(cmd)
        cmds.append((r, cmd))
    return cmds


@st.composite
def venue_configs(draw: st.DrawFn) -> VenueConfig:
    latency = draw(
        st.one_of(
            st.builds(ConstantLatency, entry=st.integers(0, 4), response=st.integers(0, 3)),
            st.builds(
                LognormalLatency,
                median_ns=st.integers(1, 4),
                sigma=st.just(0.7),
                spike_prob=st.sampled_from([0.0, 0.2]),
                spike_ns=st.just(7),
            ),
        )
    )
    window = st.tuples(st.integers(0, 80), st.integers(1, 30)).map(lambda w: (w[0], w[0] + w[1]))
    faults = draw(
        st.one_of(
            st.just(FaultPlan()),
            st.builds(
                FaultPlan,
                reject_rate=st.sampled_from([0.0, 0.2]),
                drop_ack_rate=st.sampled_from([0.0, 0.3]),
                delay_ack_rate=st.sampled_from([0.0, 0.3]),
                delay_ack_ns=st.just(3),
                duplicate_fill_rate=st.sampled_from([0.0, 0.3]),
                cancel_race_rate=st.sampled_from([0.0, 0.5]),
                disconnects=st.lists(window, max_size=1).map(tuple),
            ),
        )
    )
    return VenueConfig(
        name="V",
        maker_fee_bps=draw(st.sampled_from([-2, 0, 1])),
        taker_fee_bps=5,
        latency=latency,
        depth_levels=draw(st.integers(1, 3)),
        day_close_ns=draw(st.integers(0, 120)),
        fade_ratio=draw(st.sampled_from([1.0, 0.5])),
        hidden_fill_rate_per_s=draw(st.sampled_from([0.0, 0.0, 5e7])),
        queue_model=draw(st.sampled_from([RiskAverseQueueModel(), ProbQueueModel(power=2.0)])),
        faults=faults,
        seed=draw(st.integers(0, 3)),
    )


# --- drivers -------------------------------------------------------------------------------


def drive(
    venue: SimVenue,
    view: MarketView,
    msgs: list[QuoteTick | TradeTick | BookDelta],
    cmds: list[tuple[int, Message]],
    *,
    fast: bool,
    chunk: int = 1 << 30,
) -> list[Message]:
    """Run rows, commands and wake-ups through the venue, in the sim runner's order."""
    venue.bind_keys(KEYS)
    ts = view.ts
    n = len(ts)
    end = (int(ts[-1]) if n else 0) + 200
    mine = [k[1] == "V" for k in KEYS]
    out: list[Message] = []
    i = ci = 0
    while True:
        w = venue.wakeup_at()
        if ci < len(cmds) and cmds[ci][0] <= i:
            now = int(ts[i]) if i < n else (int(ts[-1]) if n else 0)
            if w is not None and w <= now:
                out += venue.on_wakeup(w)
                continue
            out += venue.on_command(cmds[ci][1], now)
            ci += 1
            continue
        if i >= n:
            if w is not None and w <= end:
                out += venue.on_wakeup(w)
                continue
            return out
        if w is not None and w <= ts[i]:
            out += venue.on_wakeup(w)
            continue
        if not fast:
            if mine[view.key[i]]:
                out += venue.on_market(msgs[i])
            i += 1
            continue
        j = min(n, i + chunk)
        if ci < len(cmds):
            j = min(j, max(cmds[ci][0], i + 1))
        if w is not None:
            j = min(j, max(int(np.searchsorted(ts, w, side="left")), i + 1))
        h = venue.horizon(view, i, j)
        assert i <= h <= j
        venue.skip(view, i, h)
        if h < j:
            assert mine[view.key[h]]
            out += venue.on_market(msgs[h])
            i = h + 1
        else:
            i = j


def state(venue: SimVenue) -> list[object]:
    """The venue's fill-relevant state, for comparing the two paths."""
    snap: list[object] = []
    for name, mkt in venue._mkts.items():
        book = None
        if mkt.book is not None:
            book = (list(mkt.book.levels(Side.BUY)), list(mkt.book.levels(Side.SELL)))
        orders = [(o.oid, o.price, o.leaves, o.pos.ahead) for o in [*mkt.buys, *mkt.sells]] + [
            (o.oid, o.stop, o.leaves) for o in mkt.stops.values()
        ]
        consumed = sorted((str(s), p, q) for (s, p), q in mkt.consumed.items())
        snap.append(
            (name, mkt.bid, mkt.bid_size, mkt.ask, mkt.ask_size, mkt.last_trade, book, orders)
        )
        snap.append(consumed)
    return snap


@settings(max_examples=400)
@given(data=st.data())
def test_fastpath_when_random_market_and_orders_then_same_messages_and_state(
    data: st.DataObject,
) -> None:
    rows = data.draw(market_rows())
    cmds = data.draw(order_flow(len(rows)))
    config = data.draw(venue_configs())
    chunk = data.draw(st.sampled_from([1, 3, 1 << 30]))
    window = data.draw(st.sampled_from([1, 2, 5, venue_module._FIRST_WINDOW]))
    view, msgs = build(rows)
    slow = SimVenue(config, INSTRUMENTS)
    fast = SimVenue(config, INSTRUMENTS)
    expected = drive(slow, view, msgs, cmds, fast=False)
    saved = venue_module._FIRST_WINDOW
    venue_module._FIRST_WINDOW = window  # horizon's growing windows, on small data
    try:
        got = drive(fast, view, msgs, cmds, fast=True, chunk=chunk)
    finally:
        venue_module._FIRST_WINDOW = saved
    assert got == expected
    assert state(fast) == state(slow)


# --- targeted cases --------------------------------------------------------------------------


def quote_rows(bids: list[int], asks: list[int], size: int = 10, key: int = 0) -> list[Row]:
    return [
        (t, key, MTYPE_QUOTE, {"bp": b, "bs": size, "ap": a, "as": size})
        for t, (b, a) in enumerate(zip(bids, asks, strict=True), start=1)
    ]


def resting_venue(side: Side, price: int, first: list[Row]) -> SimVenue:
    venue = SimVenue(VenueConfig(name="V", latency_ns=0), INSTRUMENTS)
    venue.bind_keys(KEYS)
    _, msgs = build(first)
    for msg in msgs:
        venue.on_market(msg)
    cmd = SubmitOrder(
        ts_recv=0,
        order_id="o1",
        venue="V",
        instrument="X",
        account="A",
        strategy="S",
        side=side,
        qty=5,
        order_type=OrderType.LIMIT,
        price=price,
        tif=TimeInForce.GTC,
    )
    venue.on_command(cmd, 0)
    venue.on_wakeup(0)
    return venue


def test_horizon_when_no_live_orders_then_stop() -> None:
    venue = SimVenue(VenueConfig(name="V"), INSTRUMENTS)
    venue.bind_keys(KEYS)
    view, _ = build(quote_rows([50] * 100, [51] * 100))
    assert venue.horizon(view, 0, 100) == 100
    assert venue.horizon(view, 7, 7) == 7


def test_horizon_when_resting_at_touch_on_quotes_then_skips_to_first_cross() -> None:
    venue = resting_venue(Side.BUY, 50, quote_rows([50], [51]))
    bids = [50, 49, 50, 50, 49] * 200 + [49]  # the bid moves around us...
    asks = [51, 51, 52, 51, 53] * 200 + [50]  # ...and the ask reaches us only at the end
    view, msgs = build(quote_rows(bids, asks))
    h = venue.horizon(view, 0, len(bids))
    assert h == len(bids) - 1  # one stop: the ask reaching our price
    venue.skip(view, 0, h)
    fills = venue.on_market(msgs[h])
    assert [(type(m), m.qty) for m in fills] == [(OrderFilled, 5)]  # type: ignore[attr-defined]


def test_horizon_when_level_disappears_then_queue_zero_without_stopping() -> None:
    venue = resting_venue(Side.BUY, 50, quote_rows([50], [51], size=30))
    assert venue._mkts["X"].buys[0].pos.ahead == 30
    view, _ = build(quote_rows([49, 50], [51, 51], size=30))  # bid drops below us, returns
    assert venue.horizon(view, 0, 2) == 2
    venue.skip(view, 0, 2)
    assert venue._mkts["X"].buys[0].pos.ahead == 0  # the level vanished: nothing ahead


def test_horizon_when_trades_at_price_then_stops_where_queue_ahead_is_exceeded() -> None:
    venue = resting_venue(Side.BUY, 50, quote_rows([50], [51], size=10))  # 10 ahead
    trade = {"px": 50, "qty": 4, "side": 1}
    rows: list[Row] = [(t, 0, MTYPE_TRADE, dict(trade)) for t in range(1, 5)]
    view, msgs = build(rows)
    assert venue.horizon(view, 0, 4) == 2  # 4 + 4 = 8 <= 10; the third trade exceeds
    venue.skip(view, 0, 2)
    assert venue._mkts["X"].buys[0].pos.ahead == 2
    fills = venue.on_market(msgs[2])
    assert [(m.price, m.qty) for m in fills] == [(50, 2)]  # type: ignore[attr-defined]


def test_horizon_when_rows_of_other_keys_then_ignored() -> None:
    venue = resting_venue(Side.BUY, 50, quote_rows([50], [51]))
    other = quote_rows([60] * 5, [49] * 5, key=2)  # X on venue W crosses us: not our venue
    other += quote_rows([60] * 5, [49] * 5, key=3)  # Z at V: not listed
    view, _ = build(sorted(other, key=lambda r: r[0]))
    assert venue.horizon(view, 0, 10) == 10


def test_horizon_when_prob_queue_model_then_stops_at_first_row_of_key() -> None:
    venue = SimVenue(VenueConfig(name="V", latency_ns=0, queue_model=ProbQueueModel()), INSTRUMENTS)
    venue.bind_keys(KEYS)
    venue.on_market(build(quote_rows([50], [51]))[1][0])
    cmd = SubmitOrder(
        ts_recv=0,
        order_id="o1",
        venue="V",
        instrument="X",
        account="A",
        strategy="S",
        side=Side.BUY,
        qty=5,
        order_type=OrderType.LIMIT,
        price=50,
        tif=TimeInForce.GTC,
    )
    venue.on_command(cmd, 0)
    venue.on_wakeup(0)
    rows = quote_rows([50] * 3, [51] * 3, key=2) + quote_rows([50], [51])
    view, _ = build(rows)
    assert venue.horizon(view, 0, 4) == 3


def test_skip_when_book_rows_then_book_equals_row_by_row() -> None:
    rows: list[Row] = []
    for t, (side, px, qty, clear) in enumerate(
        [(0, 50, 10, 1), (1, 52, 5, 0), (0, 49, 3, 0), (0, 50, 0, 0), (1, 52, 7, 0), (0, 48, 2, 0)]
    ):
        rows.append((t, 0, MTYPE_BOOK, {"side": side, "px": px, "qty": qty, "clear": clear}))
    view, msgs = build(rows)
    fast = SimVenue(VenueConfig(name="V"), INSTRUMENTS)
    slow = SimVenue(VenueConfig(name="V"), INSTRUMENTS)
    fast.bind_keys(KEYS)
    slow.bind_keys(KEYS)
    fast.skip(view, 0, len(rows))
    for msg in msgs:
        slow.on_market(msg)
    assert state(fast) == state(slow)
    assert state(fast)[0][6] == ([(49, 3), (48, 2)], [(52, 7)])  # type: ignore[index]


# --- quotes only: the reductions against the general formulas ----------------------------


@st.composite
def quote_columns(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Bid and ask prices (NULL: that side empty) and sizes of 1-40 quote rows."""
    n = draw(st.integers(1, 40))
    price = st.one_of(st.just(NULL), st.integers(95, 105))
    size = st.integers(-1, 6)  # a negative size shows as 0
    bp, bs, ap, asz = (
        np.array(draw(st.lists(s, min_size=n, max_size=n)), dtype=np.int64)
        for s in (price, size, price, size)
    )
    return bp, bs, ap, asz


@settings(max_examples=300, deadline=None)
@given(
    quote_columns(),
    st.booleans(),
    st.integers(95, 105),
    st.integers(0, 8),
    st.integers(0, 45),
    st.integers(0, 10),
)
def test_l1_arrays_when_quotes_only_then_reductions_equal_the_row_formulas(
    columns: tuple[np.ndarray, ...], buy: bool, price: int, ahead: int, before: int, start: int
) -> None:
    """`first_fill` and `queue_cap` on quote-only rows (a reduction first, then at most
    one mask) give what the per-row formulas give (`fill_candidates`, `_level`), over a
    slice of the batch (one key) and over gathered rows (several keys)."""
    bp, bs, ap, asz = columns
    n = len(bp)
    filler = np.zeros(n, dtype=np.int64)
    view = MarketView(
        filler,
        np.full(n, MTYPE_QUOTE, dtype=np.int8),
        filler.astype(np.int32),
        bp,
        bs,
        ap,
        asz,
        np.full(n, NULL),
        np.full(n, NULL),
        np.full(n, -1, dtype=np.int8),
        np.zeros(n, dtype=bool),
        filler,
        single_key=0,
        quotes_only=True,
    )
    start = min(start, n - 1)
    for rows in (slice(start, n), np.arange(start, n)):
        a = venue_module._L1Arrays(view, rows, view.mtype[rows])
        assert not a.any_trade
        limit = min(before, a.n)
        expected_first = venue_module._first_true(a.fill_candidates(buy, price, ahead), limit)
        assert a.first_fill(buy, price, ahead, limit) == expected_first
        assert a.queue_cap(buy, price) == (int(a._level(buy, price).min()), 0)
