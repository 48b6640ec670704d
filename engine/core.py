"""The engine: one pure entry point, `Engine.handle(input) -> effects`.

Invariants (DESIGN.md, "The one rule"):
- The engine's state is a function of its config and the inputs handed to it, in order.
  It reads no clock, no IO, no environment and no randomness: "now" is the input's
  `ts_recv`, and every effect carries that `ts_recv`.
- Effects come back in a fixed order: cancels in order creation order, flattening
  orders by (account, strategy, instrument); sets are used for membership only.
- Inputs never raise. A venue event that contradicts the order state machine, or names
  an unknown order, becomes an `Alert` and leaves the state unchanged; an input that is
  not an input (a command, an effect) becomes an `Alert` too.
- A signal either becomes exactly one `SubmitOrder` (with its ack-timeout
  `ScheduleTimer`), or a `SignalRejected` naming the check and why, or nothing (a
  target already reached). A signal id is handled once.
- Duplicate fills (same trade id for the order) are dropped before the state machine.
  An overfill is booked (the venue says it traded) and raises a CRITICAL alert.
- Market data is the hot path, and its contract lets runners skip it in bulk:
  QuoteTick, TradeTick and BookDelta never produce effects; after a run of quotes and
  trades the state depends only on the last QuoteTick and the last TradeTick of each
  (instrument, venue); book levels apply in order. A runner that journals every row may
  therefore hand the engine only those (sim/run.py does); tests/engine/
  test_market_contract.py holds the engine to it. A change that needs every tick (a
  volatility estimate, say) must keep a bulk form of itself and change that test.
- A CANCEL signal cancels the open orders of the signal it names (allowed while halted,
  as it only reduces risk), or is denied saying why nothing was sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import msgspec

from engine.book import Book
from engine.ids import IdGenerator
from engine.instruments import Denial, instrument_problem, normalise_order
from engine.messages import (
    Alert,
    BookDelta,
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
    PositionReport,
    QuoteTick,
    ReplaceRejected,
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
    VenueEvent,
)
from engine.orders import (
    PENDING_REQUEST,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderEvent,
)
from engine.positions import PositionBook

ACK_TIMEOUT = "ack_timeout"
KNOWN_LIMITS = ("max_order_qty",)

_NEEDS_PRICE = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT})
_NEEDS_STOP = frozenset({OrderType.STOP, OrderType.STOP_LIMIT})
_EVENT_OF: dict[type[Message], OrderEvent] = {
    OrderAccepted: OrderEvent.ACCEPTED,
    OrderRejected: OrderEvent.REJECTED,
    OrderCanceled: OrderEvent.CANCELED,
    CancelRejected: OrderEvent.CANCEL_REJECTED,
    OrderReplaced: OrderEvent.REPLACED,
    ReplaceRejected: OrderEvent.REPLACE_REJECTED,
    OrderExpired: OrderEvent.EXPIRED,
}


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine starts from; it goes in the run manifest."""

    run_id: str
    seed: int = 0
    instruments: tuple[Instrument, ...]
    max_order_qty: dict[str, int] = {}  # instrument (or "*" for the rest) -> max size units
    default_venue: dict[str, str] = {}  # instrument -> venue; else its first venue_symbols key
    ack_timeout_ns: int = 5_000_000_000


class _Plan(NamedTuple):
    """An order a signal asks for, checked and normalised."""

    instrument: str
    venue: str
    side: Side
    qty: int
    price: int | None
    stop_price: int | None


class Engine:
    """The pure core: `handle` one input, get its effects."""

    __slots__ = (
        "_anomalies",
        "_books",
        "_config",
        "_disconnected",
        "_duplicate_fills",
        "_halt",
        "_handlers",
        "_ids",
        "_instruments",
        "_open",
        "_orders",
        "_orders_by_signal",
        "_positions",
        "_qty_overrides",
        "_quotes",
        "_signal_ids",
        "_trades",
        "_working",
    )

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._ids = IdGenerator(config.run_id)
        self._instruments: dict[str, Instrument] = {}
        for inst in config.instruments:
            problem = instrument_problem(inst)
            if problem is not None:
                raise ValueError(f"EngineConfig.instruments: {problem}")
            if inst.instrument in self._instruments:
                raise ValueError(f"EngineConfig.instruments: {inst.instrument} listed twice")
            self._instruments[inst.instrument] = inst
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}  # the orders not yet final, in creation order
        self._working: dict[tuple[str, str, str], dict[str, Order]] = {}  # open, by strategy
        self._positions = PositionBook()
        self._signal_ids: set[str] = set()
        self._orders_by_signal: dict[str, list[Order]] = {}
        self._quotes: dict[tuple[str, str], QuoteTick] = {}
        self._trades: dict[tuple[str, str], TradeTick] = {}
        self._books: dict[tuple[str, str], Book] = {}
        self._halt: KillSwitch | None = None
        self._qty_overrides: dict[str, LimitOverride] = {}
        self._disconnected: dict[str, VenueDisconnected] = {}
        self._duplicate_fills = 0
        self._anomalies = 0
        self._handlers: dict[type[Message], Callable[[Any], list[Message]]] = {
            QuoteTick: self._on_quote,
            TradeTick: self._on_trade,
            BookDelta: self._on_book_delta,
            Signal: self._on_signal,
            OrderFilled: self._on_filled,
            OrderAccepted: self._on_venue_event,
            OrderRejected: self._on_venue_event,
            OrderCanceled: self._on_venue_event,
            CancelRejected: self._on_venue_event,
            OrderReplaced: self._on_venue_event,
            ReplaceRejected: self._on_venue_event,
            OrderExpired: self._on_venue_event,
            TimerFired: self._on_timer,
            KillSwitch: self._on_kill_switch,
            Resume: self._on_resume,
            LimitOverride: self._on_limit_override,
            VenueConnected: self._on_venue_connected,
            VenueDisconnected: self._on_venue_disconnected,
            OrderStatusReport: self._on_status_report,
            PositionReport: self._on_position_report,
            Instrument: self._on_instrument,
        }

    # --- the entry point ------------------------------------------------------------

    def handle(self, msg: Message) -> list[Message]:
        """Handle one input; return its effects in the order they must be dispatched."""
        if type(msg) is QuoteTick:  # the hot path, inlined: a quote only updates the mark
            self._quotes[msg.instrument, msg.venue] = msg
            return []
        handler = self._handlers.get(type(msg))
        if handler is None:
            return self._on_unexpected(msg)
        return handler(msg)

    # --- read-only state --------------------------------------------------------------

    @property
    def config(self) -> EngineConfig:
        """Return the config the engine started from."""
        return self._config

    @property
    def orders(self) -> Mapping[str, Order]:
        """Return every order by id, in creation order."""
        return self._orders

    @property
    def positions(self) -> PositionBook:
        """Return the strategy and net positions."""
        return self._positions

    @property
    def instruments(self) -> Mapping[str, Instrument]:
        """Return the current reference data by instrument name."""
        return self._instruments

    @property
    def halted(self) -> bool:
        """Say whether a kill switch is in force."""
        return self._halt is not None

    @property
    def duplicate_fills(self) -> int:
        """Return how many fills were dropped as duplicates (same trade id)."""
        return self._duplicate_fills

    @property
    def anomalies(self) -> int:
        """Return how many venue events contradicted the state or named unknown orders."""
        return self._anomalies

    def last_quote(self, instrument: str, venue: str) -> QuoteTick | None:
        """Return the last quote seen for an instrument on a venue."""
        return self._quotes.get((instrument, venue))

    def book(self, instrument: str, venue: str) -> Book | None:
        """Return the L2 book of an instrument on a venue, None if no level was seen."""
        return self._books.get((instrument, venue))

    def last_trade(self, instrument: str, venue: str) -> TradeTick | None:
        """Return the last market trade seen for an instrument on a venue."""
        return self._trades.get((instrument, venue))

    def mark_price(self, instrument: str, venue: str | None = None) -> int | None:
        """Return the mid of the last two-sided quote, else the last trade price, else None."""
        venue = venue if venue is not None else self._default_venue(instrument)
        if venue is None:
            return None
        quote = self._quotes.get((instrument, venue))
        if quote is not None and quote.bid_price is not None and quote.ask_price is not None:
            return (quote.bid_price + quote.ask_price) // 2
        trade = self._trades.get((instrument, venue))
        return None if trade is None else trade.price

    # --- market data ------------------------------------------------------------------

    def _on_quote(self, msg: QuoteTick) -> list[Message]:
        self._quotes[msg.instrument, msg.venue] = msg
        return []

    def _on_trade(self, msg: TradeTick) -> list[Message]:
        self._trades[msg.instrument, msg.venue] = msg
        return []

    def _on_book_delta(self, msg: BookDelta) -> list[Message]:
        key = (msg.instrument, msg.venue)
        book = self._books.get(key)
        if book is None:
            book = self._books[key] = Book()
        book.apply(msg)
        return []

    # --- signals ----------------------------------------------------------------------

    def _on_signal(self, sig: Signal) -> list[Message]:
        if sig.intent is SignalIntent.CANCEL:
            return self._on_cancel_signal(sig)
        plan = self._plan(sig)
        if plan is None:
            return []
        if isinstance(plan, Denial):
            return [self._signal_rejected(sig, plan)]
        return self._submit(
            SubmitOrder(
                ts_recv=sig.ts_recv,
                order_id=self._ids.next_order_id(),
                venue=plan.venue,
                instrument=plan.instrument,
                account=sig.account,
                strategy=sig.strategy,
                side=plan.side,
                qty=plan.qty,
                order_type=sig.order_type,
                price=plan.price,
                stop_price=plan.stop_price,
                tif=sig.tif,
                signal_id=sig.signal_id,
            )
        )

    def _on_cancel_signal(self, sig: Signal) -> list[Message]:
        """Cancel the open orders of the signal `sig.cancels` (allowed while halted)."""
        denial = self._duplicate(sig)
        if denial is None:
            denial = self._cancel_target_denial(sig)
        if denial is not None:
            return [self._signal_rejected(sig, denial)]
        now = sig.ts_recv
        effects: list[Message] = []
        for order in self._orders_by_signal.get(sig.cancels or "", ()):
            cancel = self._request_cancel(order, now)
            if cancel is not None:
                effects.append(cancel)
        if not effects:
            denial = Denial(
                code="nothing_to_cancel",
                reason=f"signal {sig.cancels} has no open order to cancel "
                "(filled, canceled or already pending cancel)",
            )
            return [self._signal_rejected(sig, denial)]
        return effects

    def _cancel_target_denial(self, sig: Signal) -> Denial | None:
        """Say why a CANCEL signal cannot act on its target, or None."""
        target = sig.cancels
        if target is None:
            return Denial(code="intent", reason="CANCEL signal needs cancels, got None")
        orders = self._orders_by_signal.get(target)
        if orders is None:
            return Denial(
                code="unknown_signal",
                reason=f"cancels {target!r}: no order was sent for that signal_id",
            )
        owner = orders[0]
        if (owner.account, owner.strategy) != (sig.account, sig.strategy):
            return Denial(
                code="not_owner",
                reason=f"cancels {target!r}: its orders belong to account {owner.account} "
                f"strategy {owner.strategy}, not {sig.account} {sig.strategy}",
            )
        return None

    def _duplicate(self, sig: Signal) -> Denial | None:
        """Deny a signal_id seen before (idempotency); remember a new one."""
        sid = sig.signal_id
        if sid in self._signal_ids:
            return Denial(
                code="duplicate_signal",
                reason=f"duplicate signal_id {sid}: already handled, nothing sent",
            )
        self._signal_ids.add(sid)
        return None

    def _signal_rejected(self, sig: Signal, denial: Denial) -> SignalRejected:
        return SignalRejected(
            ts_recv=sig.ts_recv,
            signal_id=sig.signal_id,
            strategy=sig.strategy,
            account=sig.account,
            instrument=sig.instrument,
            code=denial.code,
            reason=denial.reason,
        )

    def _request_cancel(self, order: Order, now: int) -> CancelOrder | None:
        """Move an open order to PENDING_CANCEL and return its cancel; None if it can't."""
        if (order.status, OrderEvent.CANCEL_REQUESTED) not in TRANSITIONS:
            return None  # final, or a cancel is already pending
        order.apply(OrderEvent.CANCEL_REQUESTED, now)
        return CancelOrder(
            ts_recv=now,
            order_id=order.order_id,
            venue=order.venue,
            instrument=order.instrument,
            venue_order_id=order.venue_order_id,
        )

    def _plan(self, sig: Signal) -> _Plan | Denial | None:
        """Check a signal and work out its order; None when a target is already met."""
        sid = sig.signal_id
        denial = self._duplicate(sig)
        if denial is not None:
            return denial
        if self._halt is not None:
            halt = self._halt
            return Denial(
                code="halted",
                reason=f"trading halted by {halt.operator} at ts {halt.ts_recv} "
                f"({halt.reason}): signal {sid} denied",
            )
        name = sig.instrument
        inst = self._instruments.get(name)
        if inst is None:
            known = ", ".join(sorted(self._instruments)) or "none configured"
            return Denial(
                code="unknown_instrument",
                reason=f"instrument {name!r} unknown: expected one of {known}",
            )
        venue = sig.venue if sig.venue is not None else self._default_venue(name)
        if venue is None:
            return Denial(
                code="unknown_venue",
                reason=f"no venue for {name}: expected signal.venue, a default_venue "
                "or venue_symbols, got none",
            )
        if venue not in inst.venue_symbols:
            listed = ", ".join(sorted(inst.venue_symbols)) or "none"
            return Denial(
                code="unknown_venue",
                reason=f"venue {venue!r} not listed for {name}: expected one of {listed}",
            )
        down = self._disconnected.get(venue)
        if down is not None:
            return Denial(
                code="venue_disconnected",
                reason=f"venue {venue} disconnected since ts {down.ts_recv} ({down.reason})",
            )
        denial = _price_fields_denial(sig)
        if denial is not None:
            return denial
        wanted = self._wanted(sig)
        if wanted is None or isinstance(wanted, Denial):
            return wanted
        side, qty = wanted
        limit = self._max_order_qty(name, sig.ts_recv)
        if limit is not None and qty > limit[0]:
            _, scope, override = limit
            source = "config" if override is None else f"override by {override.operator}"
            return Denial(
                code="max_order_qty",
                reason=f"qty {qty} above max_order_qty {limit[0]} for {name} "
                f"({source} for scope {scope!r})",
            )
        normalised = normalise_order(
            inst,
            side=side,
            qty=qty,
            price=sig.price,
            stop_price=sig.stop_price,
            signal_price=sig.signal_price,
            quote=self._quotes.get((name, venue)),
        )
        if isinstance(normalised, Denial):
            return normalised
        qty, price, stop_price = normalised
        return _Plan(name, venue, side, qty, price, stop_price)

    def _wanted(self, sig: Signal) -> tuple[Side, int] | Denial | None:
        """Return the side and quantity a signal asks for; None when its target is met."""
        if sig.intent is SignalIntent.TARGET:
            if sig.target is None:
                return Denial(code="intent", reason="TARGET signal needs target, got None")
            delta = sig.target - self._exposure(sig.account, sig.strategy, sig.instrument)
            if delta == 0:
                return None
            return (Side.BUY, delta) if delta > 0 else (Side.SELL, -delta)
        if sig.side is None:
            return Denial(code="intent", reason="ORDER signal needs side, got None")
        if sig.qty <= 0:
            return Denial(code="intent", reason=f"ORDER signal needs qty > 0, got {sig.qty}")
        return sig.side, sig.qty

    def _exposure(self, account: str, strategy: str, instrument: str) -> int:
        """Return a strategy's position plus the signed open quantity of its orders."""
        total = self._positions.strategy_qty(account, strategy, instrument)
        working = self._working.get((account, strategy, instrument))
        if working is not None:
            for order in working.values():
                leaves = order.leaves_qty
                total += leaves if order.side is Side.BUY else -leaves
        return total

    def _max_order_qty(
        self, instrument: str, now: int
    ) -> tuple[int, str, LimitOverride | None] | None:
        """Return the max order qty, its scope and the override it comes from, if any.

        The instrument's own limit beats the "*" default; at each scope an unexpired
        operator override beats the config. None means unlimited.
        """
        for scope in (instrument, "*"):
            override = self._qty_overrides.get(scope)
            if override is not None and (override.expires_at is None or now < override.expires_at):
                return override.value, scope, override
            configured = self._config.max_order_qty.get(scope)
            if configured is not None:
                return configured, scope, None
        return None

    def _default_venue(self, instrument: str) -> str | None:
        """Return the configured venue of an instrument, else the first it is listed on."""
        venue = self._config.default_venue.get(instrument)
        if venue is not None:
            return venue
        inst = self._instruments.get(instrument)
        if inst is None:
            return None
        return next(iter(inst.venue_symbols), None)

    def _submit(self, cmd: SubmitOrder) -> list[Message]:
        """Track a new order; return its command and its ack-timeout timer."""
        order = Order.from_submit(cmd)
        self._orders[cmd.order_id] = order
        self._open[cmd.order_id] = order
        if cmd.signal_id is not None:
            self._orders_by_signal.setdefault(cmd.signal_id, []).append(order)
        key = (cmd.account, cmd.strategy, cmd.instrument)
        self._working.setdefault(key, {})[cmd.order_id] = order
        timer = ScheduleTimer(
            ts_recv=cmd.ts_recv,
            timer_id=self._ids.next_timer_id(),
            fire_at=cmd.ts_recv + self._config.ack_timeout_ns,
            purpose=ACK_TIMEOUT,
            order_id=cmd.order_id,
        )
        return [cmd, timer]

    # --- venue events -----------------------------------------------------------------

    def _order_of(self, msg: VenueEvent) -> Order | Alert:
        """Return the order a venue event is about, or the alert saying it is unknown."""
        order = self._orders.get(msg.order_id)
        kind = type(msg).__name__
        if order is None:
            self._anomalies += 1
            return Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.CRITICAL if type(msg) is OrderFilled else Severity.WARNING,
                code="UNKNOWN_ORDER",
                text=f"{kind} from {msg.venue} for order_id {msg.order_id!r}: "
                "no such order; ignored",
                order_id=msg.order_id,
                venue=msg.venue,
            )
        if msg.venue != order.venue:
            self._anomalies += 1
            return Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.WARNING,
                code="ORDER_ANOMALY",
                text=f"{kind} for order {order.order_id} came from venue {msg.venue}, "
                f"expected {order.venue}; ignored",
                order_id=order.order_id,
                instrument=order.instrument,
                venue=msg.venue,
            )
        return order

    def _anomaly(self, msg: VenueEvent, order: Order, event: OrderEvent, why: str) -> Alert:
        """Count and describe a venue event that contradicts the order's state."""
        self._anomalies += 1
        return Alert(
            ts_recv=msg.ts_recv,
            severity=Severity.WARNING,
            code="ORDER_ANOMALY",
            text=f"{type(msg).__name__} ({event.value}) for order {order.order_id} "
            f"in {order.status.value}: {why}; order unchanged",
            order_id=order.order_id,
            instrument=order.instrument,
            venue=order.venue,
        )

    def _on_venue_event(self, msg: VenueEvent) -> list[Message]:
        order = self._order_of(msg)
        if isinstance(order, Alert):
            return [order]
        event = _EVENT_OF[type(msg)]
        if isinstance(msg, OrderReplaced) and msg.qty <= order.filled_qty:
            why = f"replaced qty {msg.qty} must exceed filled_qty {order.filled_qty}"
            return [self._anomaly(msg, order, event, why)]
        try:
            status = order.apply(event, msg.ts_recv)
        except InvalidTransition:
            return [self._anomaly(msg, order, event, "not a legal transition")]
        if isinstance(msg, OrderAccepted | OrderReplaced) and msg.venue_order_id is not None:
            order.venue_order_id = msg.venue_order_id
        if isinstance(msg, OrderReplaced):
            order.qty = msg.qty
            if msg.price is not None:
                order.price = msg.price
        if status in TERMINAL:
            self._forget_open(order)
        return []

    def _on_filled(self, msg: OrderFilled) -> list[Message]:
        order = self._order_of(msg)
        if isinstance(order, Alert):
            return [order]
        if msg.trade_id in order.trade_ids:
            self._duplicate_fills += 1
            return []
        filled = order.filled_qty + msg.qty
        event = OrderEvent.FULL_FILL if filled >= order.qty else OrderEvent.PARTIAL_FILL
        if msg.qty <= 0:
            return [self._anomaly(msg, order, event, f"fill qty must be > 0, got {msg.qty}")]
        overfill = filled > order.qty
        try:
            status = order.apply(event, msg.ts_recv)
        except InvalidTransition:
            if not overfill:
                return [self._anomaly(msg, order, event, "not a legal transition")]
            status = order.status  # booked anyway: the venue says it traded
        order.record_fill(msg.trade_id, msg.price, msg.qty, msg.fee, msg.ts_recv)
        self._positions.apply_fill(
            order.account,
            order.strategy,
            order.instrument,
            side=order.side,
            qty=msg.qty,
            price=msg.price,
            fee=msg.fee,
            multiplier=self._multiplier(order.instrument),
        )
        if status in TERMINAL:
            self._forget_open(order)
        if not overfill:
            return []
        return [
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.CRITICAL,
                code="OVERFILL",
                text=f"order {order.order_id} filled {order.filled_qty} of qty {order.qty} "
                f"(trade {msg.trade_id} for {msg.qty}): booked to positions; reconcile",
                order_id=order.order_id,
                instrument=order.instrument,
                venue=order.venue,
            )
        ]

    def _forget_open(self, order: Order) -> None:
        """Drop a final order from the open-order indexes."""
        if self._open.pop(order.order_id, None) is not None:
            del self._working[order.account, order.strategy, order.instrument][order.order_id]

    def _multiplier(self, instrument: str) -> int:
        """Return an instrument's contract multiplier (1 if it is no longer known)."""
        inst = self._instruments.get(instrument)
        return 1 if inst is None else inst.multiplier

    # --- timers -----------------------------------------------------------------------

    def _on_timer(self, msg: TimerFired) -> list[Message]:
        if msg.purpose != ACK_TIMEOUT:
            return [
                Alert(
                    ts_recv=msg.ts_recv,
                    severity=Severity.WARNING,
                    code="UNKNOWN_TIMER",
                    text=f"timer {msg.timer_id} has purpose {msg.purpose!r}: "
                    f"expected {ACK_TIMEOUT!r}; ignored",
                    order_id=msg.order_id,
                )
            ]
        order = self._orders.get(msg.order_id) if msg.order_id is not None else None
        if order is None or order.status is not OrderStatus.PENDING_NEW:
            return []
        waited_ms = (msg.ts_recv - order.ts_created) // 1_000_000
        return [
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.WARNING,
                code="ACK_TIMEOUT",
                text=f"order {order.order_id} on {order.venue} not acknowledged "
                f"after {waited_ms} ms",
                order_id=order.order_id,
                instrument=order.instrument,
                venue=order.venue,
            )
        ]

    # --- operator -----------------------------------------------------------------------

    def _on_kill_switch(self, msg: KillSwitch) -> list[Message]:
        self._halt = msg
        now = msg.ts_recv
        effects: list[Message] = []
        for order in self._open.values():
            cancel = self._request_cancel(order, now)
            if cancel is not None:
                effects.append(cancel)
        if msg.flatten:
            positions = sorted(self._positions.strategy_positions(), key=lambda kv: kv[0])
            for (account, strategy, instrument), position in positions:
                if position.qty != 0:
                    effects.extend(self._flatten(account, strategy, instrument, position.qty, now))
        return effects

    def _flatten(
        self, account: str, strategy: str, instrument: str, qty: int, now: int
    ) -> list[Message]:
        """Send a market order that closes a strategy position."""
        venue = self._default_venue(instrument)
        if venue is None:
            return [
                Alert(
                    ts_recv=now,
                    severity=Severity.CRITICAL,
                    code="FLATTEN_FAILED",
                    text=f"cannot flatten {qty} {instrument} of {account}/{strategy}: "
                    "no default_venue and no venue_symbols",
                    instrument=instrument,
                )
            ]
        return self._submit(
            SubmitOrder(
                ts_recv=now,
                order_id=self._ids.next_order_id(),
                venue=venue,
                instrument=instrument,
                account=account,
                strategy=strategy,
                side=Side.SELL if qty > 0 else Side.BUY,
                qty=abs(qty),
                order_type=OrderType.MARKET,
                tif=TimeInForce.IOC,
            )
        )

    def _on_resume(self, msg: Resume) -> list[Message]:
        self._halt = None
        return []

    def _on_limit_override(self, msg: LimitOverride) -> list[Message]:
        if msg.limit not in KNOWN_LIMITS:
            text = (
                f"LimitOverride by {msg.operator}: limit {msg.limit!r} unknown, "
                f"expected one of {', '.join(KNOWN_LIMITS)}; ignored"
            )
        elif msg.scope != "*" and msg.scope not in self._instruments:
            text = (
                f"LimitOverride by {msg.operator}: scope {msg.scope!r} is not a known "
                "instrument or '*'; ignored"
            )
        elif msg.value < 0:
            text = f"LimitOverride by {msg.operator}: value must be >= 0, got {msg.value}; ignored"
        else:
            self._qty_overrides[msg.scope] = msg
            return []
        return [
            Alert(
                ts_recv=msg.ts_recv, severity=Severity.WARNING, code="INVALID_OVERRIDE", text=text
            )
        ]

    # --- connectivity, reference data, reconciliation ------------------------------------

    def _on_venue_connected(self, msg: VenueConnected) -> list[Message]:
        self._disconnected.pop(msg.venue, None)
        return []

    def _on_venue_disconnected(self, msg: VenueDisconnected) -> list[Message]:
        self._disconnected.setdefault(msg.venue, msg)
        return []

    def _on_instrument(self, msg: Instrument) -> list[Message]:
        problem = instrument_problem(msg)
        if problem is not None:
            return [
                Alert(
                    ts_recv=msg.ts_recv,
                    severity=Severity.WARNING,
                    code="INVALID_INSTRUMENT",
                    text=f"{problem}; reference data unchanged",
                    instrument=msg.instrument,
                )
            ]
        self._instruments[msg.instrument] = msg
        return []

    def _on_status_report(self, msg: OrderStatusReport) -> list[Message]:
        order = self._orders.get(msg.order_id) if msg.order_id is not None else None
        if order is None:
            text = (
                f"{msg.venue} reports order order_id={msg.order_id!r} "
                f"venue_order_id={msg.venue_order_id!r} in {msg.status.value}: "
                "unknown to the engine"
            )
            return [self._mismatch(msg, Severity.WARNING, text, msg.order_id)]
        status = order.status
        if status in PENDING_REQUEST and msg.status is order.previous:
            status = msg.status  # the venue has not seen our request yet
        compared: tuple[tuple[str, object, object], ...] = (
            ("status", msg.status, status),
            ("instrument", msg.instrument, order.instrument),
            ("side", msg.side, order.side),
            ("qty", msg.qty, order.qty),
            ("filled_qty", msg.filled_qty, order.filled_qty),
        )
        differ = [item for item in compared if item[1] != item[2]]
        if not differ:
            return []
        theirs = ", ".join(f"{name}={value}" for name, value, _ in differ)
        ours = ", ".join(f"{name}={value}" for name, _, value in differ)
        text = f"{msg.venue} reports order {order.order_id} with {theirs}; engine has {ours}"
        return [self._mismatch(msg, Severity.WARNING, text, order.order_id)]

    def _on_position_report(self, msg: PositionReport) -> list[Message]:
        net = self._positions.net_position(msg.account, msg.instrument)
        qty = 0 if net is None else net.qty
        if qty == msg.qty:
            return []
        text = (
            f"{msg.venue} reports position {msg.qty} in {msg.instrument} for account "
            f"{msg.account}; engine has {qty} (net across venues)"
        )
        return [self._mismatch(msg, Severity.CRITICAL, text, None)]

    def _mismatch(
        self,
        msg: OrderStatusReport | PositionReport,
        severity: Severity,
        text: str,
        order_id: str | None,
    ) -> Alert:
        return Alert(
            ts_recv=msg.ts_recv,
            severity=severity,
            code="RECON_MISMATCH",
            text=text,
            order_id=order_id,
            instrument=msg.instrument,
            venue=msg.venue,
        )

    # --- anything else ------------------------------------------------------------------

    def _on_unexpected(self, msg: Message) -> list[Message]:
        return [
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.WARNING,
                code="UNEXPECTED_INPUT",
                text=f"{type(msg).__name__} is not an engine input; ignored",
            )
        ]


def _price_fields_denial(sig: Signal) -> Denial | None:
    """Deny a signal whose order type lacks a price it needs, or has one it cannot use."""
    order_type = sig.order_type.value
    if sig.order_type in _NEEDS_PRICE:
        if sig.price is None:
            return Denial(code="price", reason=f"{order_type} order needs price, got None")
    elif sig.price is not None:
        return Denial(
            code="price",
            reason=f"{order_type} order takes no price: expected None, got {sig.price}",
        )
    if sig.order_type in _NEEDS_STOP:
        if sig.stop_price is None:
            reason = f"{order_type} order needs stop_price, got None"
            return Denial(code="stop_price", reason=reason)
    elif sig.stop_price is not None:
        return Denial(
            code="stop_price",
            reason=f"{order_type} order takes no stop_price: expected None, got {sig.stop_price}",
        )
    return None
