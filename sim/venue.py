"""The simulated venue: our orders matched against recorded market data (L1 and L2),
with latency, queue position, fees, hidden liquidity and seeded faults.

It speaks the interface the live adapters implement: commands in (`on_command`), venue
events out, each stamped `ts_event` = venue time and `ts_recv` = venue time + response
latency (the time the engine receives it; the runner pushes it on its heap at that time).

Invariants:
- Deterministic: the only inputs are commands, market rows and the wake-up calls, with
  their timestamps. Every random draw comes from generators derived from
  `random.Random(config.seed)` (one stream each for latency, faults, hidden flow and the
  queue model, so that turning one on does not shift the draws of another); nothing
  reads a clock, ids are counters (`{venue}-{n}`, `{venue}-T{n}`), no set is iterated.
- Time: the venue's clock is the runner's. A market row takes effect at its `ts`. A
  command sent at `now` reaches the matching engine at `now + entry_ns` (submit) or
  `now + cancel_ns` (cancel, replace): `on_command` only queues it; it is handled when
  the runner calls `on_wakeup` at `wakeup_at()`, which it must do before it hands the
  venue any market row with `ts >= wakeup_at()`. So an order matches the market as of
  its arrival. Responses go out over one ordered session: `ts_recv` never decreases
  from one response to the next (a delayed ack is the one deliberate exception).
- Market state per instrument: the last quote (L1) and, once a book row has been seen,
  an L2 `Book`; from then on the book alone drives matching (quotes are kept but
  ignored). L1 depth is synthetic: `depth_levels` levels, each one tick worse than the
  touch, each with the touch's displayed size.
- Taking (marketable orders, MARKET, triggered STOP): walk the opposite levels, best
  first, up to the limit price; at each level take `fade_ratio` of the displayed size
  (rounded down to the lot) less what we already took there. What we take is consumed
  until the next market update of that level (for L1, the next quote of the key).
  FOK takes nothing unless it can take all. MARKET, IOC and FOK never rest.
- Resting (maker fills at the order's own price, in price-time priority among our
  orders): (1) a trade at our price on our side (aggressor opposite, or unknown)
  advances the queue (`sim.queue`); what exceeds the queue ahead fills, up to the leaves
  and to the trade's quantity left after our better-placed orders; (2) a trade through
  our price fills the leaves; (3) an opposite touch at or through our price fills up
  to its displayed size (L1: the touch; L2: every crossing level), less what was
  consumed. The queue ahead starts at the displayed size at our price (0 when we improve
  the touch; unknown when behind an L1 touch, then the displayed size once the level is
  seen). A snapshot (`clear`) leaves queue positions alone: the snapshot's levels update
  them. Our orders never trade with each other.
- Stops trigger when a trade prints at or through the stop price; on a key with no
  trade seen yet, when the touch reaches it (buy: ask >= stop; sell: bid <= stop); also
  at arrival. They then act as MARKET (STOP) or LIMIT (STOP_LIMIT).
- DAY orders expire at the first session close (`day_close_ns` after midnight UTC, each
  day) after they are accepted, with `OrderExpired`.
- Fees: `notional x bps / 10_000`, in notional units, rounded half away from zero; a
  negative maker fee is a rebate. Every fill has a venue-unique trade id; quantities
  never overfill; every fill is a whole number of lots.
- Fast path: `horizon` and `skip` (see their docstrings) give exactly the messages of
  feeding every row through `on_market`; tests/sim/test_venue_fastpath.py holds them
  to it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence

import msgspec
import numpy as np
from sortedcontainers import SortedKeyList

from engine.book import Book
from engine.messages import (
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
    RequestReports,
    Side,
    SubmitOrder,
    TimeInForce,
    TradeTick,
    VenueConnected,
    VenueDisconnected,
)
from sim.config import DAY_NS, VenueConfig
from sim.faults import in_windows
from sim.ledger import VenueLedger
from sim.market import MTYPE_BOOK, MTYPE_QUOTE, MTYPE_TRADE, NULL, MarketView
from sim.queue import UNKNOWN, QueuePos

_NEVER = np.iinfo(np.int64).max
_PPM = 1_000_000
_FIRST_WINDOW = 1_024  # rows of the first window `horizon` scans
_LIMIT_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)

# Wake-up kinds, in the order they run at equal times.
_EV_EDGE, _EV_EXPIRE, _EV_ARRIVE, _EV_HIDDEN = 0, 1, 2, 3


def _fee(price: int, qty: int, multiplier: int, bps: int) -> int:
    num = price * qty * multiplier * bps
    q, r = divmod(abs(num), 10_000)
    if 2 * r >= 10_000:
        q += 1
    return q if num >= 0 else -q


def next_close(t: int, day_close_ns: int) -> int:
    """Return the first session close strictly after `t`."""
    close = t - t % DAY_NS + day_close_ns
    return close if close > t else close + DAY_NS


class _Order:
    """One of our orders at the venue (live: resting, or a stop waiting to trigger)."""

    __slots__ = (
        "buy",
        "cmd",
        "expire_at",
        "filled",
        "limit",
        "live",
        "mkt",
        "oid",
        "otype",
        "pos",
        "price",
        "qty",
        "seq",
        "stop",
        "tif",
        "venue_order_id",
    )

    def __init__(self, cmd: SubmitOrder, venue_order_id: str, mkt: _Mkt, seq: int) -> None:
        self.cmd = cmd
        self.oid = cmd.order_id
        self.venue_order_id = venue_order_id
        self.mkt = mkt
        self.seq = seq
        self.buy = cmd.side is Side.BUY
        self.otype = cmd.order_type
        self.tif = cmd.tif
        self.qty = cmd.qty
        self.filled = 0
        self.price: int | None = cmd.price if cmd.order_type in _LIMIT_TYPES else None
        self.stop: int | None = cmd.stop_price if cmd.order_type in _STOP_TYPES else None
        self.limit = cmd.order_type in _LIMIT_TYPES  # rests (at `price`) when not filled
        self.pos = QueuePos(0, None)
        self.live = False
        self.expire_at: int | None = None

    @property
    def leaves(self) -> int:
        return self.qty - self.filled


def _buy_key(o: _Order) -> tuple[int, int]:
    return (-(o.price or 0), o.seq)


def _sell_key(o: _Order) -> tuple[int, int]:
    return (o.price or 0, o.seq)


class _Mkt:
    """Market state of one instrument at this venue, and our orders on it."""

    __slots__ = (
        "ask",
        "ask_size",
        "bid",
        "bid_size",
        "book",
        "buys",
        "consumed",
        "inst",
        "key",
        "last_trade",
        "lot",
        "n_live",
        "sells",
        "stops",
        "tick",
    )

    def __init__(self, inst: Instrument) -> None:
        self.inst = inst
        self.lot = inst.lot_size
        self.tick = inst.tick_size
        self.key = -1
        self.bid: int | None = None
        self.bid_size = 0
        self.ask: int | None = None
        self.ask_size = 0
        self.book: Book | None = None
        self.last_trade: int | None = None
        self.consumed: dict[tuple[Side, int], int] = {}
        self.buys: SortedKeyList = SortedKeyList(key=_buy_key)
        self.sells: SortedKeyList = SortedKeyList(key=_sell_key)
        self.stops: dict[str, _Order] = {}
        self.n_live = 0

    def best(self, side: Side) -> tuple[int, int] | None:
        """Return (price, size) of the touch on one side (book if L2, else the quote)."""
        if self.book is not None:
            return self.book.best_bid() if side is Side.BUY else self.book.best_ask()
        if side is Side.BUY:
            return None if self.bid is None else (self.bid, self.bid_size)
        return None if self.ask is None else (self.ask, self.ask_size)


Pending = list[tuple[Message, int]]  # messages of one venue event, each with extra delay


class SimVenue:
    """A simulated venue: commands and market data in, venue events out.

    The runner's side of the contract:
    - `bind_keys(keys)` whenever its list of (instrument, venue) keys grows;
    - `on_command(cmd, now)` for each command sent (returns nothing: the command is
      handled when it arrives);
    - `on_wakeup(t)` at `t = wakeup_at()`, before any market row with `ts >= t`;
    - per market row of this venue, either `on_market(msg)`, or, for a run of rows
      [a, b) with `horizon(view, a, b) == b`, one `skip(view, a, b)`;
    - every returned message is an input at its `ts_recv`.
    """

    def __init__(self, config: VenueConfig, instruments: Sequence[Instrument]) -> None:
        self.config = config
        self.name = config.name
        self.latency = config.latency_model()
        self.queue_model = config.queue_model
        self.faults = config.faults
        root = random.Random(config.seed)
        self._rng_latency = random.Random(root.getrandbits(64))
        self._rng_faults = random.Random(root.getrandbits(64))
        self._rng_hidden = random.Random(root.getrandbits(64))
        self._rng_queue = random.Random(root.getrandbits(64))
        self._mkts = {i.instrument: _Mkt(i) for i in instruments if config.name in i.venue_symbols}
        self._fade_ppm = round(config.fade_ratio * _PPM)
        self._hidden_ppm = round(config.hidden_fill_fraction * _PPM)
        self._closed_form = self.queue_model.closed_form
        # keys of the run: (instrument, venue) -> id; ours map to a market state
        self._key_mkt: list[_Mkt | None] = []
        self._mine: np.ndarray = np.zeros(0, dtype=bool)
        self._my_keys: list[tuple[int, _Mkt]] = []
        self._live: dict[int, _Mkt] = {}  # key id -> market with live orders
        self._orders: dict[str, _Order] = {}  # live orders by order id
        self._closed: dict[str, str] = {}  # order id -> why it is no longer live
        self._events: list[tuple[int, int, int, object]] = []  # (t, kind, seq, payload)
        self._seq = 0
        self._next_order = 0
        self._next_trade = 0
        self._n_resting = 0
        self._hidden_at: int | None = None
        self._last_recv = -(1 << 62)
        self._held: Pending = []  # produced while disconnected
        self.ledger = VenueLedger(self.name)  # what the venue knows, delivered or not
        self._disconnects = self.faults.disconnects
        for start, end in self._disconnects:
            self._push(start, _EV_EDGE, True)
            self._push(end, _EV_EDGE, False)

    # --- keys, stale data ----------------------------------------------------------------

    def bind_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Learn the (instrument, venue) of each market key id (the list only grows)."""
        for k in range(len(self._key_mkt), len(keys)):
            instrument, venue = keys[k]
            mkt = self._mkts.get(instrument) if venue == self.name else None
            self._key_mkt.append(mkt)
            if mkt is not None:
                mkt.key = k
                self._my_keys.append((k, mkt))
                if mkt.n_live:
                    self._live[k] = mkt
        self._mine = np.array([m is not None for m in self._key_mkt], dtype=bool)

    def stale(self, ts: int) -> bool:
        """Return True if the fault plan makes market data at `ts` stale."""
        return self.faults.stale(ts)

    def stale_mask(self, ts: np.ndarray) -> np.ndarray:
        """Return `stale` of each timestamp of an int64 array, vectorised."""
        return self.faults.stale_mask(ts)

    # --- commands and wake-ups -------------------------------------------------------------

    def on_command(self, cmd: Message, now: int) -> list[Message]:
        """Send a command at `now`; it reaches the matching engine after the entry (or
        cancel) latency and is handled then, by `on_wakeup`. Returns nothing now."""
        if isinstance(cmd, SubmitOrder):
            arrive = now + self.latency.entry_ns(self._rng_latency)
        elif isinstance(cmd, CancelOrder | ReplaceOrder | RequestReports):
            arrive = now + self.latency.cancel_ns(self._rng_latency)
        else:
            raise TypeError(f"venue {self.name}: not a venue command: {type(cmd).__name__}")
        if self._disconnects and in_windows(self._disconnects, arrive):
            return []  # lost on the way: the engine's ack timeout must notice
        self._push(arrive, _EV_ARRIVE, cmd)
        return []

    def wakeup_at(self) -> int | None:
        """Return the earliest time the venue has something to do on its own, or None."""
        events = self._events
        while events and events[0][1] == _EV_EXPIRE and not self._expiry_due(events[0]):
            heapq.heappop(events)
        return events[0][0] if events else None

    def on_wakeup(self, now: int) -> list[Message]:
        """Do everything due at or before `now`, in time order; return the responses."""
        events = self._events
        out: list[Message] = []
        while events and events[0][0] <= now:
            t, kind, _, payload = heapq.heappop(events)
            if kind == _EV_ARRIVE:
                out += self._arrive(payload, t)  # type: ignore[arg-type]
            elif kind == _EV_EXPIRE:
                out += self._expire(payload, t)  # type: ignore[arg-type]
            elif kind == _EV_HIDDEN:
                out += self._hidden(t)
            else:
                out += self._edge(bool(payload), t)
        return out

    def _push(self, t: int, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, payload))

    def _expiry_due(self, event: tuple[int, int, int, object]) -> bool:
        order = event[3]
        assert isinstance(order, _Order)
        return order.live and order.expire_at == event[0]

    def _edge(self, start: bool, t: int) -> list[Message]:
        if start:
            return [VenueDisconnected(ts_recv=t, venue=self.name, reason="simulated disconnect")]
        held, self._held = self._held, []
        if self.faults.lose_held:
            held = []  # lost for good: only the reports after the reconnect recover them
        return [VenueConnected(ts_recv=t, venue=self.name), *self._deliver(held, t)]

    def _deliver(self, out: Pending, t: int) -> list[Message]:
        """Stamp one venue event's messages (ts_recv); hold them while disconnected."""
        if not out:
            return []
        record = self.ledger.record
        for msg, _ in out:
            record(msg)
        if self._disconnects and in_windows(self._disconnects, t):
            self._held += out
            return []
        recv = max(t + self.latency.response_ns(self._rng_latency), self._last_recv)
        self._last_recv = recv
        replace = msgspec.structs.replace
        return [replace(msg, ts_recv=recv + extra) for msg, extra in out]

    # --- arrivals ----------------------------------------------------------------------------

    def _arrive(self, cmd: Message, t: int) -> list[Message]:
        out: Pending = []
        if isinstance(cmd, SubmitOrder):
            self.ledger.received(cmd)
            self._arrive_submit(cmd, t, out)
        elif isinstance(cmd, RequestReports):
            out += [(msg, 0) for msg in self.ledger.reports(t)]
        elif isinstance(cmd, CancelOrder):
            self._arrive_cancel(cmd, t, out)
        else:
            assert isinstance(cmd, ReplaceOrder)
            self._arrive_replace(cmd, t, out)
        return self._deliver(out, t)

    def _invalid(self, cmd: SubmitOrder) -> str | None:
        mkt = self._mkts.get(cmd.instrument)
        if mkt is None:
            return f"unknown symbol {cmd.instrument}"
        if cmd.order_type not in self.config.order_types:
            return f"order type {cmd.order_type} not supported by venue {self.name}"
        if cmd.tif not in self.config.time_in_force:
            return f"time in force {cmd.tif} not supported by venue {self.name}"
        problem = self._bad_qty(cmd.qty, mkt.inst)
        if problem is not None:
            return problem
        if cmd.order_type in _LIMIT_TYPES:
            problem = self._bad_price("price", cmd.price, cmd.order_type, mkt.inst)
            if problem is not None:
                return problem
        if cmd.order_type in _STOP_TYPES:
            problem = self._bad_price("stop price", cmd.stop_price, cmd.order_type, mkt.inst)
            if problem is not None:
                return problem
        if cmd.order_id in self._orders or cmd.order_id in self._closed:
            return f"duplicate order id {cmd.order_id}"
        return None

    @staticmethod
    def _bad_qty(qty: int, inst: Instrument) -> str | None:
        if qty <= 0:
            return f"invalid quantity {qty} (must be > 0)"
        if qty % inst.lot_size:
            return f"invalid quantity {qty} (lot {inst.lot_size})"
        if qty < inst.min_qty:
            return f"invalid quantity {qty} (below min_qty {inst.min_qty})"
        return None

    @staticmethod
    def _bad_price(what: str, price: int | None, otype: OrderType, inst: Instrument) -> str | None:
        if price is None:
            return f"missing {what} for {otype} order"
        if price <= 0:
            return f"invalid {what} {price} (must be > 0)"
        if price % inst.tick_size:
            return f"invalid {what} {price} (tick {inst.tick_size})"
        return None

    def _arrive_submit(self, cmd: SubmitOrder, t: int, out: Pending) -> None:
        reason = self._invalid(cmd)
        faults = self.faults
        rng = self._rng_faults
        retryable = False
        if reason is None and faults.reject_rate > 0.0 and rng.random() < faults.reject_rate:
            reasons = faults.reject_reasons
            pick = rng.choices(reasons, weights=[r.weight for r in reasons])[0]
            reason, retryable = pick.reason, pick.retryable
        if reason is not None:
            rejected = OrderRejected(
                ts_recv=0,
                ts_event=t,
                order_id=cmd.order_id,
                venue=self.name,
                reason=reason,
                retryable=retryable,
            )
            out.append((rejected, 0))
            return
        mkt = self._mkts[cmd.instrument]
        self._next_order += 1
        self._seq += 1
        order = _Order(cmd, f"{self.name}-{self._next_order}", mkt, self._seq)
        ack = OrderAccepted(
            ts_recv=0,
            ts_event=t,
            order_id=cmd.order_id,
            venue=self.name,
            venue_order_id=order.venue_order_id,
        )
        if not (faults.drop_ack_rate > 0.0 and rng.random() < faults.drop_ack_rate):
            delayed = faults.delay_ack_rate > 0.0 and rng.random() < faults.delay_ack_rate
            out.append((ack, faults.delay_ack_ns if delayed else 0))
        if order.tif is TimeInForce.DAY:
            order.expire_at = next_close(t, self.config.day_close_ns)
            self._push(order.expire_at, _EV_EXPIRE, order)
        if order.stop is not None and not self._stop_hit(order, mkt):
            mkt.stops[order.oid] = order
            self._make_live(order)
            return
        self._execute(order, t, out)

    def _arrive_cancel(self, cmd: CancelOrder, t: int, out: Pending) -> None:
        order = self._orders.get(cmd.order_id)
        if order is None:
            out.append((self._cancel_rejected(cmd.order_id, t, self._gone(cmd.order_id)), 0))
            return
        rate = self.faults.cancel_race_rate
        resting = order.stop is None or order.oid not in order.mkt.stops
        if resting and rate > 0.0 and self._rng_faults.random() < rate:
            self._fill(order, order.price or 0, order.leaves, Liquidity.MAKER, t, out)
            out.append((self._cancel_rejected(order.oid, t, "order already filled"), 0))
            return
        self._finish(order, "canceled")
        out.append((self._canceled(order, t, "canceled by request"), 0))

    def _arrive_replace(self, cmd: ReplaceOrder, t: int, out: Pending) -> None:
        order = self._orders.get(cmd.order_id)
        reason: str | None = None
        if order is None:
            reason = self._gone(cmd.order_id)
        else:
            inst = order.mkt.inst
            reason = self._bad_qty(cmd.qty, inst)
            if reason is None and cmd.qty <= order.filled:
                reason = f"qty {cmd.qty} <= filled {order.filled}"
            if reason is None and cmd.price is not None:
                if not order.limit:
                    reason = f"price not allowed for {order.otype} order"
                else:
                    reason = self._bad_price("price", cmd.price, order.otype, inst)
        if reason is not None or order is None:
            rejected = ReplaceRejected(
                ts_recv=0,
                ts_event=t,
                order_id=cmd.order_id,
                venue=self.name,
                reason=reason or "",
            )
            out.append((rejected, 0))
            return
        price = order.price if cmd.price is None else cmd.price
        waiting = order.oid in order.mkt.stops
        lose_priority = not waiting and (price != order.price or cmd.qty > order.qty)
        if lose_priority:
            self._unlive(order)
            self._seq += 1
            order.seq = self._seq
        order.qty = cmd.qty
        order.price = price
        replaced = OrderReplaced(
            ts_recv=0,
            ts_event=t,
            order_id=order.oid,
            venue=self.name,
            qty=order.qty,
            price=order.price,
            venue_order_id=order.venue_order_id,
        )
        out.append((replaced, 0))
        if lose_priority:
            self._execute(order, t, out)

    def _gone(self, order_id: str) -> str:
        status = self._closed.get(order_id)
        return "unknown order" if status is None else f"order already {status}"

    def _expire(self, order: _Order, t: int) -> list[Message]:
        if not (order.live and order.expire_at == t):
            return []
        self._finish(order, "expired")
        expired = OrderExpired(ts_recv=0, ts_event=t, order_id=order.oid, venue=self.name)
        return self._deliver([(expired, 0)], t)

    # --- order book of our orders -------------------------------------------------------------

    def _make_live(self, order: _Order) -> None:
        order.live = True
        self._orders[order.oid] = order
        mkt = order.mkt
        mkt.n_live += 1
        if mkt.key >= 0:
            self._live[mkt.key] = mkt

    def _unlive(self, order: _Order) -> None:
        if not order.live:
            return
        order.live = False
        del self._orders[order.oid]
        mkt = order.mkt
        if mkt.stops.pop(order.oid, None) is None:
            (mkt.buys if order.buy else mkt.sells).remove(order)
            self._n_resting -= 1
        mkt.n_live -= 1
        if mkt.n_live == 0:
            self._live.pop(mkt.key, None)

    def _finish(self, order: _Order, status: str) -> None:
        self._unlive(order)
        self._closed[order.oid] = status

    def _rest(self, order: _Order, t: int) -> None:
        order.pos = self._queue_start(order)
        (order.mkt.buys if order.buy else order.mkt.sells).add(order)
        self._n_resting += 1
        self._make_live(order)
        rate = self.config.hidden_fill_rate_per_s
        if rate > 0.0 and self._hidden_at is None:
            gap = max(1, math.ceil(self._rng_hidden.expovariate(rate) * 1e9))
            self._hidden_at = t + gap
            self._push(self._hidden_at, _EV_HIDDEN, None)

    def _queue_start(self, order: _Order) -> QueuePos:
        mkt = order.mkt
        price = order.price
        assert price is not None
        side = Side.BUY if order.buy else Side.SELL
        if mkt.book is not None:
            size = mkt.book.size_at(side, price)
            return QueuePos(size, size)
        level = self._l1_level(mkt, order.buy, price)
        return QueuePos(UNKNOWN if level is None else level, level)

    @staticmethod
    def _l1_level(mkt: _Mkt, buy: bool, price: int) -> int | None:
        """Return the L1 displayed size at our price: 0 if we are better than the touch
        (or it is empty), None if we are behind it (not visible)."""
        if buy:
            touch, size = mkt.bid, mkt.bid_size
            if touch is None or touch < price:
                return 0
            return size if touch == price else None
        touch, size = mkt.ask, mkt.ask_size
        if touch is None or touch > price:
            return 0
        return size if touch == price else None

    # --- matching ----------------------------------------------------------------------------

    def _take_levels(self, mkt: _Mkt, buy: bool, limit: int | None) -> list[tuple[int, int]]:
        """Return (price, quantity we may take) of the opposite levels, best first."""
        opp = Side.SELL if buy else Side.BUY
        levels: list[tuple[int, int]] = []
        if mkt.book is not None:
            source = list(mkt.book.levels(opp))
        else:
            touch = mkt.ask if buy else mkt.bid
            size = mkt.ask_size if buy else mkt.bid_size
            if touch is None or size <= 0:
                return levels
            step = mkt.tick if buy else -mkt.tick
            source = [(touch + k * step, size) for k in range(self.config.depth_levels)]
        consumed = mkt.consumed
        for price, size in source:
            if price <= 0 or (limit is not None and (price > limit if buy else price < limit)):
                break
            avail = size * self._fade_ppm // _PPM - consumed.get((opp, price), 0)
            avail -= avail % mkt.lot
            if avail > 0:
                levels.append((price, avail))
        return levels

    def _execute(self, order: _Order, t: int, out: Pending) -> None:
        """Match an order that just became active: take what it can, then rest or cancel."""
        mkt = order.mkt
        limit = order.price if order.limit else None
        levels = self._take_levels(mkt, order.buy, limit)
        if order.tif is TimeInForce.FOK and sum(q for _, q in levels) < order.leaves:
            self._finish(order, "canceled")
            out.append((self._canceled(order, t, "FOK: not enough liquidity"), 0))
            return
        opp = Side.SELL if order.buy else Side.BUY
        for price, avail in levels:
            qty = min(avail, order.leaves)
            if qty <= 0:
                break
            mkt.consumed[opp, price] = mkt.consumed.get((opp, price), 0) + qty
            self._fill(order, price, qty, Liquidity.TAKER, t, out)
        if order.leaves > 0:
            if limit is None or order.tif in (TimeInForce.IOC, TimeInForce.FOK):
                self._finish(order, "canceled")
                out.append((self._canceled(order, t, "unfilled remainder canceled"), 0))
            else:
                self._rest(order, t)

    def _fill(
        self, order: _Order, price: int, qty: int, liq: Liquidity, t: int, out: Pending
    ) -> None:
        order.filled += qty
        self._next_trade += 1
        bps = self.config.maker_fee_bps if liq is Liquidity.MAKER else self.config.taker_fee_bps
        fill = OrderFilled(
            ts_recv=0,
            ts_event=t,
            order_id=order.oid,
            venue=self.name,
            trade_id=f"{self.name}-T{self._next_trade}",
            price=price,
            qty=qty,
            fee=_fee(price, qty, order.mkt.inst.multiplier, bps),
            liquidity=liq,
        )
        out.append((fill, 0))
        rate = self.faults.duplicate_fill_rate
        if rate > 0.0 and self._rng_faults.random() < rate:
            out.append((fill, 0))
        if order.leaves == 0:
            self._finish(order, "filled")

    def _canceled(self, order: _Order, t: int, reason: str) -> OrderCanceled:
        return OrderCanceled(
            ts_recv=0, ts_event=t, order_id=order.oid, venue=self.name, reason=reason
        )

    def _cancel_rejected(self, order_id: str, t: int, reason: str) -> CancelRejected:
        return CancelRejected(
            ts_recv=0, ts_event=t, order_id=order_id, venue=self.name, reason=reason
        )

    def _stop_hit(self, order: _Order, mkt: _Mkt) -> bool:
        stop = order.stop
        assert stop is not None
        if mkt.last_trade is not None:
            return mkt.last_trade >= stop if order.buy else mkt.last_trade <= stop
        touch = mkt.best(Side.SELL if order.buy else Side.BUY)
        if touch is None:
            return False
        return touch[0] >= stop if order.buy else touch[0] <= stop

    def _check_stops(self, mkt: _Mkt, t: int, out: Pending) -> None:
        for order in list(mkt.stops.values()):
            if self._stop_hit(order, mkt):
                self._unlive(order)
                self._execute(order, t, out)

    # --- market data: the slow path, one row -------------------------------------------------

    def on_market(self, msg: QuoteTick | TradeTick | BookDelta) -> list[Message]:
        """Take one market row of this venue; return the responses it causes."""
        mkt = self._mkts.get(msg.instrument)
        if mkt is None or msg.venue != self.name:
            return []
        out: Pending = []
        t = msg.ts_recv
        if type(msg) is QuoteTick:
            self._on_quote(mkt, msg, t, out)
        elif type(msg) is TradeTick:
            self._on_trade(mkt, msg, t, out)
        else:
            assert type(msg) is BookDelta
            self._on_book(mkt, msg, t, out)
        return self._deliver(out, t)

    def _on_quote(self, mkt: _Mkt, quote: QuoteTick, t: int, out: Pending) -> None:
        mkt.bid = quote.bid_price
        mkt.bid_size = max(quote.bid_size, 0) if quote.bid_price is not None else 0
        mkt.ask = quote.ask_price
        mkt.ask_size = max(quote.ask_size, 0) if quote.ask_price is not None else 0
        if mkt.book is not None:
            return  # L2: the book drives matching
        if mkt.consumed:
            mkt.consumed.clear()
        if not mkt.n_live:
            return
        model, rng = self.queue_model, self._rng_queue
        for buy, orders in ((True, mkt.buys), (False, mkt.sells)):
            if not orders:
                continue
            touch, size = (mkt.ask, mkt.ask_size) if buy else (mkt.bid, mkt.bid_size)
            opp = Side.SELL if buy else Side.BUY
            for order in list(orders):
                price = order.price
                if touch is not None and (touch <= price if buy else touch >= price):
                    avail = size - mkt.consumed.get((opp, touch), 0)
                    qty = min(avail - avail % mkt.lot, order.leaves)
                    if qty > 0:
                        mkt.consumed[opp, touch] = mkt.consumed.get((opp, touch), 0) + qty
                        self._fill(order, price, qty, Liquidity.MAKER, t, out)
                        if not order.live:
                            continue
                level = self._l1_level(mkt, buy, price)
                if level is None:
                    order.pos.level = None
                else:
                    model.on_level(order.pos, level, rng)
        if mkt.stops and mkt.last_trade is None:
            self._check_stops(mkt, t, out)

    def _on_trade(self, mkt: _Mkt, trade: TradeTick, t: int, out: Pending) -> None:
        mkt.last_trade = trade.price
        if not mkt.n_live:
            return
        qty = max(trade.qty, 0)
        if trade.aggressor is not Side.BUY and mkt.buys:
            self._trade_side(mkt, True, trade.price, qty, t, out)
        if trade.aggressor is not Side.SELL and mkt.sells:
            self._trade_side(mkt, False, trade.price, qty, t, out)
        if mkt.stops:
            self._check_stops(mkt, t, out)

    def _trade_side(self, mkt: _Mkt, buy: bool, px: int, qty: int, t: int, out: Pending) -> None:
        """A trade at `px` against resting orders of one side, best first."""
        left = qty
        model = self.queue_model
        for order in list(mkt.buys if buy else mkt.sells):
            price = order.price
            assert price is not None
            if price > px if buy else price < px:  # printed through our price
                self._fill(order, price, order.leaves, Liquidity.MAKER, t, out)
            elif price == px:
                pos = order.pos
                model.on_trade(pos, qty)
                if pos.ahead < 0:
                    n = min(-pos.ahead, order.leaves, left)
                    n -= n % mkt.lot
                    pos.ahead = 0
                    if n > 0:
                        left -= n
                        self._fill(order, price, n, Liquidity.MAKER, t, out)
            else:
                break

    def _on_book(self, mkt: _Mkt, delta: BookDelta, t: int, out: Pending) -> None:
        if mkt.book is None:
            mkt.book = Book()
            mkt.consumed.clear()
        if delta.clear:
            mkt.consumed.clear()
        elif mkt.consumed:
            mkt.consumed.pop((delta.side, delta.price), None)
        mkt.book.apply(delta)
        if not mkt.n_live:
            return
        model, rng = self.queue_model, self._rng_queue
        for order in list(mkt.buys if delta.side is Side.BUY else mkt.sells):
            if order.price == delta.price:
                model.on_level(order.pos, max(delta.qty, 0), rng)
        for buy, orders in ((True, mkt.buys), (False, mkt.sells)):
            opp = Side.SELL if buy else Side.BUY
            for order in list(orders):
                price = order.price
                assert price is not None
                qty = 0
                for level, size in mkt.book.levels(opp):
                    if level > price if buy else level < price:
                        break
                    avail = size - mkt.consumed.get((opp, level), 0)
                    take = min(avail - avail % mkt.lot, order.leaves - qty)
                    if take > 0:
                        mkt.consumed[opp, level] = mkt.consumed.get((opp, level), 0) + take
                        qty += take
                if qty == 0:
                    break  # a worse-priced order of ours cannot cross either
                self._fill(order, price, qty, Liquidity.MAKER, t, out)
        if mkt.stops and mkt.last_trade is None:
            self._check_stops(mkt, t, out)

    # --- hidden flow -----------------------------------------------------------------------

    def _hidden(self, t: int) -> list[Message]:
        self._hidden_at = None
        if not self._n_resting:
            return []
        out: Pending = []
        buy_flow = self._rng_hidden.random() < 0.5  # buy flow hits our sells
        for mkt in self._mkts.values():
            orders = mkt.sells if buy_flow else mkt.buys
            if not orders:
                continue
            touch = mkt.best(Side.SELL if buy_flow else Side.BUY)
            for order in list(orders):
                price = order.price
                assert price is not None
                if touch is not None and (price > touch[0] if buy_flow else price < touch[0]):
                    break  # behind the touch, as is every later order
                qty = order.leaves * self._hidden_ppm // _PPM
                qty = min(order.leaves, max(mkt.lot, qty - qty % mkt.lot))
                self._fill(order, price, qty, Liquidity.MAKER, t, out)
        if self._n_resting:
            rate = self.config.hidden_fill_rate_per_s
            gap = max(1, math.ceil(self._rng_hidden.expovariate(rate) * 1e9))
            self._hidden_at = t + gap
            self._push(self._hidden_at, _EV_HIDDEN, None)
        return self._deliver(out, t)

    # --- market data: the fast path -----------------------------------------------------------

    def horizon(self, view: MarketView, start: int, stop: int) -> int:
        """Return the first row in [start, stop) whose processing could make this venue
        emit anything, or change state in a way `skip` cannot reproduce; `stop` if none.

        Only keys with live orders are looked at (none: `stop` at once). A key in L2
        mode stops at its first book or trade row; an L1 key at its first book row, and
        before that, for each (side, price) of our resting orders (risk-averse model),
        at the first quote whose opposite touch reaches the price, the first trade
        through it, or the first trade at it that exceeds the queue ahead (the queue
        evolves in closed form: q_t = min(q_{t-1} - traded_t, level_t), computed with a
        running minimum); for stops, at the first row that could trigger one. With the
        probabilistic queue model, at the key's first row.

        Rows are scanned in windows growing fourfold from `_FIRST_WINDOW`, the queue
        ahead carried from one window to the next, so a stop near `start` costs little
        however far away `stop` is.
        """
        if not self._live or start >= stop:
            return stop
        keys = view.key
        carry: dict[int, list[tuple[bool, int, int]]] = {}
        lo, width = start, _FIRST_WINDOW
        while True:
            hi = min(stop, lo + width)
            last = hi == stop
            h = hi
            for k, mkt in self._live.items():
                if view.single_key == k:
                    h = min(h, self._key_horizon(view, slice(lo, h), mkt, carry, k, last))
                    continue
                rows = np.flatnonzero(keys[lo:h] == k)
                if rows.size:
                    h = min(h, self._key_horizon(view, rows + lo, mkt, carry, k, last))
            if h < hi or last:
                return h
            lo, width = hi, width * 4

    def _key_horizon(
        self,
        view: MarketView,
        rows: KeyRows,
        mkt: _Mkt,
        carry: dict[int, list[tuple[bool, int, int]]],
        key: int,
        last: bool,
    ) -> int:
        """Return the first of one key's rows that matters, `_NEVER` if none; then,
        unless `last`, leave in `carry[key]` each price group's queue ahead after them."""
        mtype = view.mtype[rows]
        if mkt.book is not None:
            if view.quotes_only:
                return _NEVER
            hits = np.flatnonzero(mtype != MTYPE_QUOTE)
            return _row(rows, int(hits[0])) if hits.size else _NEVER
        resting = bool(mkt.buys) or bool(mkt.sells)
        if resting and not self._closed_form:
            return _row(rows, 0)
        books = _NO_ROWS if view.quotes_only else np.flatnonzero(mtype == MTYPE_BOOK)
        if books.size:
            if books[0] == 0:
                return _row(rows, 0)
            # the rows before the first book row may hold an earlier stop
            end = _row(rows, int(books[0]))
            rows, mtype = _head(rows, int(books[0])), mtype[: books[0]]
        else:
            end = _NEVER
        a = _L1Arrays(view, rows, mtype)
        first = len(mtype)
        groups = (carry.get(key) or _price_groups(mkt)) if resting else []
        for buy, price, ahead in groups:
            first = a.first_fill(buy, price, ahead, first)
        if mkt.stops:
            buy_stops = [o.stop for o in mkt.stops.values() if o.buy and o.stop is not None]
            sell_stops = [o.stop for o in mkt.stops.values() if not o.buy and o.stop is not None]
            touch_mode = mkt.last_trade is None
            if buy_stops:
                first = _first_true(a.stop_candidates(True, min(buy_stops), touch_mode), first)
            if sell_stops:
                first = _first_true(a.stop_candidates(False, max(sell_stops), touch_mode), first)
        if first < len(mtype):
            return _row(rows, first)
        if groups and not last and end == _NEVER:
            moved = []
            for buy, price, ahead in groups:
                cap, traded = a.queue_cap(buy, price)
                moved.append((buy, price, min(ahead, cap) - traded))
            carry[key] = moved
        return end

    def skip(self, view: MarketView, start: int, stop: int) -> None:
        """Absorb rows [start, stop) (of every venue: other keys are ignored) exactly as
        `on_market` would, given that `horizon` found none of them matters: the last
        quote and trade of each key, book levels (last write per level), consumption
        resets, and the queue ahead of resting orders in closed form."""
        if start >= stop or not self._my_keys:
            return
        keys = view.key[start:stop]
        if len(self._my_keys) == 1:
            k, mkt = self._my_keys[0]
            if view.single_key >= 0:
                if view.single_key == k:
                    self._skip_key(view, slice(start, stop), mkt)
                return
            rows = np.flatnonzero(keys == k)
            if rows.size:
                self._skip_key(view, rows + start, mkt)
            return
        idx = np.flatnonzero(self._mine[keys])
        if not idx.size:
            return
        sub = keys[idx]
        present = np.flatnonzero(np.bincount(sub, minlength=len(self._mine)))
        for k in present.tolist():
            mkt = self._key_mkt[k]
            assert mkt is not None
            rows = idx if len(present) == 1 else idx[sub == k]
            self._skip_key(view, rows + start, mkt)

    def _skip_key(self, view: MarketView, rows: KeyRows, mkt: _Mkt) -> None:
        mtype = view.mtype[rows]
        quotes_only = view.quotes_only or bool((mtype == MTYPE_QUOTE).all())
        if mkt.book is None and (mkt.buys or mkt.sells):
            # L1 resting orders (risk-averse): horizon saw to it that no fill and no
            # book row is among these rows.
            a = _L1Arrays(view, rows, mtype)
            for buy, price, _ in _price_groups(mkt):
                cap, traded = a.queue_cap(buy, price)
                for order in mkt.buys if buy else mkt.sells:
                    if order.price == price:
                        order.pos.ahead = min(order.pos.ahead, cap) - traded
        if quotes_only:
            last_quote = _row(rows, len(mtype) - 1)
            trades = books = _NO_ROWS
        else:
            rows = _indices(rows)
            q = rows[mtype == MTYPE_QUOTE]
            last_quote = int(q[-1]) if q.size else -1
            trades = rows[mtype == MTYPE_TRADE]
            books = rows[mtype == MTYPE_BOOK]
        if last_quote >= 0:
            bid, ask = int(view.bid_price[last_quote]), int(view.ask_price[last_quote])
            mkt.bid = None if bid == NULL else bid
            mkt.bid_size = max(int(view.bid_size[last_quote]), 0) if bid != NULL else 0
            mkt.ask = None if ask == NULL else ask
            mkt.ask_size = max(int(view.ask_size[last_quote]), 0) if ask != NULL else 0
            if mkt.book is None and mkt.consumed:
                mkt.consumed.clear()
        if trades.size:
            mkt.last_trade = int(view.price[trades[-1]])
        if books.size:
            self._skip_book(view, books, mkt)

    @staticmethod
    def _skip_book(view: MarketView, rows: np.ndarray, mkt: _Mkt) -> None:
        if mkt.book is None:
            mkt.book = Book()
            mkt.consumed.clear()
        clears = np.flatnonzero(view.clear[rows])
        if clears.size:
            mkt.book.clear()
            mkt.consumed.clear()
            rows = rows[clears[-1] :]
        side = view.side[rows].astype(np.int64)
        price = view.price[rows]
        if mkt.consumed:
            for level_side, level_price in list(mkt.consumed):
                code = 0 if level_side is Side.BUY else 1
                if bool(((side == code) & (price == level_price)).any()):
                    del mkt.consumed[level_side, level_price]
        codes = price * 2 + side
        _, last = np.unique(codes[::-1], return_index=True)
        picks = len(rows) - 1 - last
        qty = view.qty[rows]
        for r in picks.tolist():
            mkt.book.set_level(Side.BUY if side[r] == 0 else Side.SELL, int(price[r]), int(qty[r]))


# A key's rows of a batch: their indices, or a slice when they are every row in a range
# (a batch of one key), so that its columns are views, not gathered copies.
KeyRows = np.ndarray | slice
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_TRADES = np.zeros(0, dtype=bool)  # is_trade of rows of a quotes-only batch (not read)


def _row(rows: KeyRows, i: int) -> int:
    """The batch row of the i-th of `rows`."""
    return rows.start + i if isinstance(rows, slice) else int(rows[i])


def _head(rows: KeyRows, n: int) -> KeyRows:
    """The first n of `rows`."""
    return slice(rows.start, rows.start + n) if isinstance(rows, slice) else rows[:n]


def _indices(rows: KeyRows) -> np.ndarray:
    return np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows


def _first_true(mask: np.ndarray, before: int) -> int:
    """Return the index of the first True in mask[:before], else `before`."""
    if before <= 0:
        return before
    head = mask[:before]
    i = int(head.argmax())
    return i if head[i] else before


def _price_groups(mkt: _Mkt) -> list[tuple[bool, int, int]]:
    """Return (buy, price, least queue ahead) per price of our resting orders."""
    groups: dict[tuple[bool, int], int] = {}
    for buy, orders in ((True, mkt.buys), (False, mkt.sells)):
        for order in orders:
            key = (buy, order.price)
            ahead = order.pos.ahead
            if key not in groups or ahead < groups[key]:
                groups[key] = ahead
    return [(buy, price, ahead) for (buy, price), ahead in groups.items()]


class _L1Arrays:
    """The columns of one L1 key's rows (quotes and trades, no book rows), gathered
    when first used, with the quote columns NULL on trade rows."""

    __slots__ = (
        "_ap",
        "_asz",
        "_bp",
        "_bs",
        "any_trade",
        "is_quote",
        "is_trade",
        "n",
        "px",
        "qty",
        "rows",
        "sd",
        "view",
    )

    def __init__(self, view: MarketView, rows: KeyRows, mtype: np.ndarray) -> None:
        self.view = view
        self.rows = rows
        self.n = len(mtype)
        self.is_trade = _NO_TRADES if view.quotes_only else mtype == MTYPE_TRADE
        self.any_trade = not view.quotes_only and bool(self.is_trade.any())
        self._bp: np.ndarray | None = None
        self._ap: np.ndarray | None = None
        self._bs: np.ndarray | None = None
        self._asz: np.ndarray | None = None
        if self.any_trade:
            self.is_quote = ~self.is_trade
            self.px = view.price[rows]
            self.qty = np.maximum(view.qty[rows], 0)
            self.sd = view.side[rows]

    def _quote_column(self, column: np.ndarray) -> np.ndarray:
        values = column[self.rows]
        if self.any_trade:
            values = np.where(self.is_quote, values, NULL)
        return values

    @property
    def bp(self) -> np.ndarray:
        if self._bp is None:
            self._bp = self._quote_column(self.view.bid_price)
        return self._bp

    @property
    def ap(self) -> np.ndarray:
        if self._ap is None:
            self._ap = self._quote_column(self.view.ask_price)
        return self._ap

    @property
    def bs(self) -> np.ndarray:
        if self._bs is None:
            self._bs = self.view.bid_size[self.rows]
        return self._bs

    @property
    def asz(self) -> np.ndarray:
        if self._asz is None:
            self._asz = self.view.ask_size[self.rows]
        return self._asz

    def _level(self, buy: bool, price: int) -> np.ndarray:
        """Displayed size at `price` after each row (UNKNOWN: not visible or not a quote)."""
        if buy:
            own, size = self.bp, self.bs
            empty = own < price  # NULL (no bid) included
        else:
            own, size = self.ap, self.asz
            empty = (own > price) | (own == NULL)
        level = np.where(own == price, np.maximum(size, 0), np.where(empty, 0, UNKNOWN))
        if self.any_trade:
            level = np.where(self.is_quote, level, UNKNOWN)
        return level

    def _at_price(self, buy: bool, price: int) -> np.ndarray:
        """Trade rows at `price` that hit our side (aggressor opposite or unknown)."""
        return self.is_trade & (self.sd != (0 if buy else 1)) & (self.px == price)

    def first_fill(self, buy: bool, price: int, ahead: int, before: int) -> int:
        """Return the first row before `before` at which a resting order at `price` with
        `ahead` queued could fill, else `before`."""
        if before <= 0:
            return before
        if self.any_trade:
            return _first_true(self.fill_candidates(buy, price, ahead), before)
        # quotes only: the opposite touch reaching the price; one reduction says "none"
        if buy:
            ask = self.ap[:before]
            if ask.min() > price:  # NULL (no ask) is the least int64: looked at below
                return before
            hits = (ask <= price) & (ask != NULL)
        else:
            bid = self.bp[:before]
            if bid.max() < price:
                return before
            hits = bid >= price
        i = int(hits.argmax())
        return i if hits[i] else before

    def fill_candidates(self, buy: bool, price: int, ahead: int) -> np.ndarray:
        """Rows at which a resting order at `price` with `ahead` queued could fill."""
        if buy:
            hits = (self.ap <= price) & (self.ap != NULL)
        else:
            hits = self.bp >= price
        if not self.any_trade:
            return hits
        hit_side = self.is_trade & (self.sd != (0 if buy else 1))
        hits |= hit_side & ((self.px < price) if buy else (self.px > price))
        at = hit_side & (self.px == price)
        if at.any():
            traded = np.cumsum(np.where(at, self.qty, 0))
            level = self._level(buy, price)
            running = np.minimum.accumulate(np.concatenate(([ahead], level + traded)))
            hits |= at & (running[:-1] < traded)
        return hits

    def queue_cap(self, buy: bool, price: int) -> tuple[int, int]:
        """Return (cap, traded): after these rows, ahead = min(ahead, cap) - traded."""
        if not self.any_trade:
            # quotes only: the least `_level`, found with reductions (a row where the
            # level is empty makes it 0; else the least size shown at the price, if any)
            if buy:
                own, size = self.bp, self.bs
                if own.min() < price:  # no bid, or a bid below the price
                    return 0, 0
            else:
                own, size = self.ap, self.asz
                if own.max() > price or own.min() == NULL:
                    return 0, 0
            shown = size[own == price]
            return (max(int(shown.min()), 0) if shown.size else UNKNOWN), 0
        level = self._level(buy, price)
        at = self._at_price(buy, price)
        if at.any():
            cum = np.cumsum(np.where(at, self.qty, 0))
            return int((level + cum).min()), int(cum[-1])
        return int(level.min()), 0

    def stop_candidates(self, buy: bool, stop: int, touch_mode: bool) -> np.ndarray:
        """Rows at which a stop at `stop` could trigger."""
        if touch_mode:
            hits = (self.ap >= stop) if buy else (self.bp <= stop) & (self.bp != NULL)
            if self.any_trade:
                hits = hits | self.is_trade  # the first trade ends touch mode
            return hits
        if not self.any_trade:
            return np.zeros(self.n, dtype=bool)
        return self.is_trade & ((self.px >= stop) if buy else (self.px <= stop))
