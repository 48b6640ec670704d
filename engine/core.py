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
- A signal either becomes exactly one `SubmitOrder` (watched by the ack watchdog),
  or a `SignalRejected` naming the check and why, or nothing (a
  target already reached), after the cancels of the signal it replaces (if it names
  one). A signal id is handled once.
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
- An ORDER signal naming `cancels` replaces that signal: its open orders are canceled
  first, as a CANCEL would (nothing open is no error), then the new order runs the
  gauntlet as any other; one input, so the pair cannot be split or half-journaled.
- Every other signal runs the gauntlet of engine/risk.py (schema, business, market state)
  and ends as orders sent, a `SignalRejected` naming the check, a hold for review (an
  `Alert`), or a wait in a tripped venue's breaker queue (an `Alert`). Orders approved
  later (slices, breaker releases, reviews, retries) pass the limit checks again when
  they go, so no order ever takes a scope past a limit.
- Nothing new is sent while a scope the order falls in is HALTED, or to a venue that is
  disconnected or still reconciling after a reconnect; REDUCING lets through only orders
  that bring their strategy's position (with its working orders) toward zero.
- Every order change (sent, filled, canceled, rejected, expired, replaced) goes through
  `_track`, which keeps the worst-case aggregates of engine/risk.py exact.
- Timers are the only way time acts: the ack watchdog (one timer for the earliest
  deadline of the orders not yet acknowledged), retries with backoff, partial-fill
  and chase policies, stale-order alerts, slices, breaker checks and the periodic risk
  check (armed only when a loss or notional limit exists) are `ScheduleTimer` effects
  that come back as `TimerFired` inputs.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, NamedTuple

import msgspec

from engine.book import Book
from engine.config import LIMIT_NAMES, EngineConfig, RiskConfig, config_problem
from engine.fillmodel import FillModel, model_sha256
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
    PositionAdjusted,
    PositionReport,
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    ReportsDone,
    RequestReports,
    Resume,
    ReviewDecision,
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
    TradingState,
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
from engine.risk import (
    Aggregate,
    Breaker,
    Limits,
    Money,
    QtyBook,
    RateWindow,
    StateBoard,
    collar_denial,
    impact_bps,
    mid_of,
    quote_denial,
    schema_denial,
    scope_of,
    venue_rules_denial,
)
from engine.router import RouteDecision, RouteRequest, VenueState, route
from engine.sessions import Calendar, SessionError, format_ts

ACK_TIMEOUT = "ack_timeout"
RETRY = "retry"
PARTIAL_TIMEOUT = "partial_timeout"
CHASE = "chase"
STALE_ORDER = "stale_order"
SLICE = "slice"
BREAKER = "breaker"
RISK_CHECK = "risk_check"
RECON_TIMEOUT = "recon_timeout"
SESSION = "session"
DAY_EXPIRY = "day_expiry"
CANCEL_RETRY = "cancel_retry"
TIMER_PURPOSES = (
    ACK_TIMEOUT,
    RETRY,
    PARTIAL_TIMEOUT,
    CHASE,
    STALE_ORDER,
    SLICE,
    BREAKER,
    RISK_CHECK,
    RECON_TIMEOUT,
    SESSION,
    DAY_EXPIRY,
    CANCEL_RETRY,
)
KNOWN_LIMITS = LIMIT_NAMES
RECON_STRATEGY = "_recon"  # the strategy reconciliation adjustments are booked to
NS_PER_DAY = 86_400_000_000_000

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
_FINAL_EVENT: dict[OrderStatus, OrderEvent] = {
    OrderStatus.CANCELED: OrderEvent.CANCELED,
    OrderStatus.EXPIRED: OrderEvent.EXPIRED,
    OrderStatus.REJECTED: OrderEvent.REJECTED,
}


class _Plan(NamedTuple):
    """An order a signal asks for, checked and normalised; `child_qty` slices it."""

    instrument: str
    venue: str
    side: Side
    qty: int
    price: int | None
    stop_price: int | None
    child_qty: int | None = None  # send in slices of this size (liquidity), None: at once
    hold: str | None = None  # why the order waits for an operator's review
    children: tuple[tuple[str, int], ...] = ()  # the router's split across venues


class _Slicing(NamedTuple):
    """The rest of a sliced parent order, sent one child per timer."""

    sig: Signal
    plan: _Plan
    left: int
    sent: int


class _Resolved(NamedTuple):
    """The limits an order of one (account, strategy, instrument, venue) faces."""

    qty_limits: tuple[tuple[str, int, str], ...]  # (limit, value, source)
    order_limit: tuple[int, str] | None  # tightest max_order_notional and where from
    aggregates: tuple[tuple[str, int | None, str, int | None, str], ...]  # scope, net, gross
    caps: tuple[tuple[str, int], ...]  # exposure group -> gross cap
    rates: tuple[tuple[str, int, str], ...]  # rate key, max orders, source
    needs_money: bool


class Engine:
    """The pure core: `handle` one input, get its effects."""

    __slots__ = (
        "_ack_timer",
        "_aggregates",
        "_anomalies",
        "_attempts",
        "_awaiting_ack",
        "_books",
        "_breaker_timers",
        "_breakers",
        "_cancel_attempts",
        "_chases",
        "_config",
        "_day",
        "_disconnected",
        "_duplicate_fills",
        "_exposure_groups",
        "_fill_model",
        "_groups",
        "_handlers",
        "_held",
        "_ids",
        "_instruments",
        "_last_route",
        "_latency",
        "_limits",
        "_money",
        "_open",
        "_orders",
        "_orders_by_signal",
        "_peak",
        "_positions",
        "_qty_overrides",
        "_qtys",
        "_quotes",
        "_rates",
        "_reconciling",
        "_reported",
        "_resolved",
        "_retries",
        "_risk",
        "_risk_limits_timed",
        "_risk_timer",
        "_rng",
        "_session_state",
        "_session_timers",
        "_signal_ids",
        "_signals",
        "_slices",
        "_states",
        "_timer_handlers",
        "_trades",
        "_venue_positions",
        "_vol",
        "_vol_pause",
        "_watch_pnl",
        "_working",
    )

    def __init__(self, config: EngineConfig, fill_model: FillModel | None = None) -> None:
        self._config = config
        expected = config.fill_model_sha256
        got = None if fill_model is None else model_sha256(fill_model)
        if expected != got:
            raise ValueError(
                f"EngineConfig.fill_model_sha256 is {expected}, but the fill model handed in "
                f"has {got}: expected the model the config names"
            )
        self._fill_model = fill_model
        self._rng = random.Random(config.seed)  # the router's only source of chance
        self._latency: dict[str, int] = {}  # venue -> smoothed submit-to-ack latency, ns
        self._last_route: RouteDecision | None = None
        self._ids = IdGenerator(config.run_id)
        problem = config_problem(config.risk)
        if problem is not None:
            raise ValueError(f"EngineConfig.{problem}")
        self._risk = config.risk
        self._money = Money(config.risk)
        # configured exposure or notional limits (the config does not change): a risk timer
        self._risk_limits_timed = bool(config.risk.limits.exposure) or _has_notional(config.risk)
        self._instruments: dict[str, Instrument] = {}
        for inst in config.instruments:
            problem = instrument_problem(inst)
            if problem is not None:
                raise ValueError(f"EngineConfig.instruments: {problem}")
            if inst.instrument in self._instruments:
                raise ValueError(f"EngineConfig.instruments: {inst.instrument} listed twice")
            self._instruments[inst.instrument] = inst
            self._money.set_instrument(inst)
        self._orders: dict[str, Order] = {}
        self._open: dict[str, Order] = {}  # the orders not yet final, in creation order
        self._working: dict[tuple[str, str, str], dict[str, Order]] = {}  # open, by strategy
        self._positions = PositionBook()
        self._venue_positions: dict[tuple[str, str, str], int] = {}  # venue, account, inst
        self._signal_ids: set[str] = set()
        self._signals: dict[str, Signal] = {}  # the signal of each order sent, by signal_id
        self._orders_by_signal: dict[str, list[Order]] = {}
        self._quotes: dict[tuple[str, str], QuoteTick] = {}
        self._trades: dict[tuple[str, str], TradeTick] = {}
        self._books: dict[tuple[str, str], Book] = {}
        self._states = StateBoard()
        self._qty_overrides: dict[str, LimitOverride] = {}
        self._limits = Limits(config.risk.limits)
        self._disconnected: dict[str, VenueDisconnected] = {}
        self._reconciling: dict[str, int] = {}  # venue -> ts of the reconnect
        self._reported: dict[str, set[str]] = {}  # venue -> order ids reported since then
        self._resolved: dict[tuple[str, str, str, str], _Resolved] = {}
        self._groups: dict[str, tuple[str, ...]] = {}  # instrument -> exposure groups
        self._session_state: dict[str, tuple[int, bool]] = {}  # calendar key -> (until, open)
        self._session_timers: dict[str, tuple[str, int]] = {}  # timer id -> (key, armed at)
        self._rates = RateWindow(config.risk.limits.rate_window_ns)
        self._aggregates: dict[str, Aggregate] = {}
        self._exposure_groups = tuple(k for k in config.risk.limits.exposure if k != "portfolio")
        self._qtys = QtyBook()
        self._breakers: dict[str, Breaker] = {}
        self._breaker_timers: dict[str, str] = {}  # timer id -> venue
        self._held: dict[str, tuple[Signal, _Plan]] = {}
        self._slices: dict[str, _Slicing] = {}  # timer id -> the rest of a sliced order
        self._retries: dict[str, Order] = {}  # timer id -> the rejected order to retry
        self._attempts: dict[str, int] = {}  # signal id -> retries so far
        self._chases: dict[str, int] = {}  # order id -> replaces sent by the chase policy
        self._cancel_attempts: dict[str, int] = {}  # order id -> cancels resent while halted
        self._vol: dict[tuple[str, str], tuple[deque[tuple[int, int]], ...]] = {}
        self._vol_pause: dict[tuple[str, str], int] = {}  # paused until
        self._risk_timer: str | None = None
        # order id -> ack deadline, in the order sent (so, of deadlines): the orders the
        # ack watchdog may have to alert on; the acknowledged are dropped as it goes by
        self._awaiting_ack: dict[str, int] = {}
        self._ack_timer: str | None = None  # the ack watchdog's timer, if it is armed
        self._watch_pnl = _has_pnl_limits(config.risk)
        self._day: dict[str, tuple[int, int]] = {}  # scope -> (day, P&L at its start)
        self._peak: dict[str, int] = {}  # scope -> highest P&L seen
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
            ReviewDecision: self._on_review,
            VenueConnected: self._on_venue_connected,
            VenueDisconnected: self._on_venue_disconnected,
            ReportsDone: self._on_reports_done,
            OrderStatusReport: self._on_status_report,
            PositionReport: self._on_position_report,
            Instrument: self._on_instrument,
        }
        self._timer_handlers: dict[str, Callable[[TimerFired], list[Message]]] = {
            ACK_TIMEOUT: self._on_ack_timeout,
            RETRY: self._on_retry,
            PARTIAL_TIMEOUT: self._on_partial_timeout,
            CHASE: self._on_chase,
            STALE_ORDER: self._on_stale_order,
            SLICE: self._on_slice,
            BREAKER: self._on_breaker_timer,
            RISK_CHECK: self._on_risk_check,
            RECON_TIMEOUT: self._on_recon_timeout,
            SESSION: self._on_session,
            DAY_EXPIRY: self._on_day_expiry,
            CANCEL_RETRY: self._on_cancel_retry,
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
        """Say whether the whole firm is halted."""
        return self._states.get("*") is TradingState.HALTED

    def trading_state(self, scope: str = "*") -> TradingState:
        """Return one scope's own trading state ("*", "account:A", "strategy:S", ...)."""
        return self._states.get(scope)

    def trading_states(self) -> list[tuple[str, TradingState, str]]:
        """Return every scope that is not ACTIVE, with why, sorted by scope."""
        return self._states.items()

    @property
    def duplicate_fills(self) -> int:
        """Return how many fills were dropped as duplicates (same trade id)."""
        return self._duplicate_fills

    @property
    def anomalies(self) -> int:
        """Return how many venue events contradicted the state or named unknown orders."""
        return self._anomalies

    @property
    def limits(self) -> Limits:
        """Return the limits with their operator overrides."""
        return self._limits

    @property
    def qty_overrides(self) -> Mapping[str, LimitOverride]:
        """Return the operator overrides of max_order_qty, by scope."""
        return self._qty_overrides

    @property
    def money(self) -> Money:
        """Return the money converter of the risk config."""
        return self._money

    def aggregates(self) -> Mapping[str, Aggregate]:
        """Return the worst-case money aggregates, by scope ("*", "account:A", ...)."""
        return self._aggregates

    def account_qty(self, account: str, instrument: str) -> tuple[int, int, int]:
        """Return an account's (position, working buys, working sells) in an instrument."""
        return self._qtys.net(account, instrument)

    def account_instruments(self) -> list[tuple[str, str]]:
        """Return every (account, instrument) with a position or an order, first seen first."""
        return self._qtys.keys()

    def order_rate(self, key: str, now: int) -> int:
        """Return orders sent in the rate window ending at `now` for a rate key."""
        return self._rates.count(key, now)

    def venue_position(self, venue: str, account: str, instrument: str) -> int:
        """Return the signed quantity an account holds in an instrument through one venue."""
        return self._venue_positions.get((venue, account, instrument), 0)

    def held_signals(self) -> list[str]:
        """Return the signal ids waiting for an operator's review, in arrival order."""
        return list(self._held)

    def breaker_open(self, venue: str) -> bool:
        """Say whether a venue's circuit breaker is open."""
        breaker = self._breakers.get(venue)
        return breaker is not None and breaker.open_since is not None

    def reconciling(self, venue: str) -> bool:
        """Say whether a venue is reconciling after a reconnect (no new orders yet)."""
        return venue in self._reconciling

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

    def pnl(self, scope: str) -> int:
        """Return a scope's P&L in money units: realised - fees + unrealised at marks."""
        level, name = scope_of(scope)
        total = 0
        for (account, strategy, instrument), pos in self._positions.strategy_positions():
            if (level == "account" and account != name) or (
                level == "strategy" and strategy != name
            ):
                continue
            amount = pos.realised - pos.fees
            if pos.qty:
                mark = self.mark_price(instrument)
                if mark is not None:
                    amount += pos.unrealised(mark)
            total += self._money.notional_to_money(instrument, amount)
        return total

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
        denial = self._duplicate(sig)
        if denial is None and sig.cancels is not None:
            denial = self._replaced_denial(sig)
        if denial is not None:
            return [self._signal_rejected(sig, denial)]
        if sig.cancels is None:
            return self._order_signal(sig)
        cancels, dropped = self._cancel_orders_of(sig.cancels, sig.ts_recv)
        if not cancels and dropped:
            cancels = [self._dropped_alert(sig, dropped)]
        return [*cancels, *self._order_signal(sig)]

    def _order_signal(self, sig: Signal) -> list[Message]:
        """Run a new ORDER or TARGET signal through the gauntlet and act on the outcome."""
        plan = self._plan(sig)
        if plan is None:
            return []
        if isinstance(plan, Denial):
            return [self._signal_rejected(sig, plan)]
        if plan.hold is not None:
            self._held[sig.signal_id] = (sig, plan)
            return [
                Alert(
                    ts_recv=sig.ts_recv,
                    severity=Severity.WARNING,
                    code="HELD_FOR_REVIEW",
                    text=f"signal {sig.signal_id} ({plan.side.value} {plan.qty} "
                    f"{plan.instrument} on {plan.venue}) held for review: {plan.hold}",
                    instrument=plan.instrument,
                    venue=plan.venue,
                )
            ]
        return self._send_or_queue(sig, plan)

    def _send_or_queue(self, sig: Signal, plan: _Plan) -> list[Message]:
        """Send an approved plan, or queue it while its venue's breaker is open."""
        breaker = self._breakers.get(plan.venue)
        if breaker is not None and breaker.open_since is not None:
            breaker.queue.append((sig.ts_recv, sig))
            return [
                Alert(
                    ts_recv=sig.ts_recv,
                    severity=Severity.WARNING,
                    code="ORDER_QUEUED",
                    text=f"signal {sig.signal_id} queued: circuit breaker of {plan.venue} open "
                    f"since ts {breaker.open_since}",
                    instrument=plan.instrument,
                    venue=plan.venue,
                )
            ]
        if len(plan.children) > 1:
            effects: list[Message] = []
            for venue, qty in plan.children:
                effects.extend(self._submit_plan(sig, plan._replace(venue=venue), qty))
            return effects
        if plan.child_qty is None or plan.child_qty >= plan.qty:
            return self._submit_plan(sig, plan, plan.qty)
        first = self._submit_plan(sig, plan, plan.child_qty)
        timer = self._timer(sig.ts_recv, self._risk.market.slice_interval_ns, SLICE, None)
        self._slices[timer.timer_id] = _Slicing(sig, plan, plan.qty - plan.child_qty, 1)
        return [*first, timer]

    def _submit_plan(self, sig: Signal, plan: _Plan, qty: int) -> list[Message]:
        return self._submit(
            SubmitOrder(
                ts_recv=sig.ts_recv,
                order_id=self._ids.next_order_id(),
                venue=plan.venue,
                instrument=plan.instrument,
                account=sig.account,
                strategy=sig.strategy,
                side=plan.side,
                qty=qty,
                order_type=sig.order_type,
                price=plan.price,
                stop_price=plan.stop_price,
                tif=sig.tif,
                signal_id=sig.signal_id,
            ),
            sig,
        )

    def _on_cancel_signal(self, sig: Signal) -> list[Message]:
        """Cancel the open orders of the signal `sig.cancels` (allowed while halted)."""
        denial = self._duplicate(sig)
        if denial is None:
            denial = self._cancel_target_denial(sig)
        if denial is not None:
            return [self._signal_rejected(sig, denial)]
        now = sig.ts_recv
        effects, dropped = self._cancel_orders_of(sig.cancels or "", now)
        if not effects and dropped:
            return [self._dropped_alert(sig, dropped)]
        if not effects:
            denial = Denial(
                code="nothing_to_cancel",
                reason=f"signal {sig.cancels} has no open order to cancel "
                "(filled, canceled or already pending cancel)",
            )
            return [self._signal_rejected(sig, denial)]
        return effects

    def _cancel_orders_of(self, signal_id: str, now: int) -> tuple[list[Message], int]:
        """Request the cancel of a signal's open orders and drop its unsent slices and
        retries; return the cancels and how many slices and retries were dropped."""
        cancels: list[Message] = []
        for order in self._orders_by_signal.get(signal_id, ()):
            cancel = self._request_cancel(order, now)
            if cancel is not None:
                cancels.append(cancel)
        return cancels, self._drop_slices(signal_id) + self._drop_retries(signal_id)

    def _dropped_alert(self, sig: Signal, dropped: int) -> Alert:
        """Say that a signal's cancel dropped only pending slices or retries."""
        text = (
            f"signal {sig.signal_id} canceled signal {sig.cancels}: {dropped} pending "
            "slice or retry dropped, nothing working at a venue"
        )
        return Alert(ts_recv=sig.ts_recv, severity=Severity.INFO, code="PENDING_DROPPED", text=text)

    def _replaced_denial(self, sig: Signal) -> Denial | None:
        """Say why a signal cannot replace the signal its `cancels` names, or None."""
        target = sig.cancels
        if sig.intent is not SignalIntent.ORDER:
            return Denial(
                code="intent",
                reason=f"cancels {target!r}: only CANCEL and ORDER signals name a signal to "
                f"cancel, got a {sig.intent.value} signal",
            )
        if target == sig.signal_id or target not in self._signal_ids:
            return Denial(
                code="unknown_signal",
                reason=f"cancels {target!r}: expected the signal_id of an earlier signal",
            )
        return self._owner_denial(sig, target)

    def _drop_slices(self, signal_id: str) -> int:
        """Forget the unsent slices of a signal; return how many were pending."""
        dropped = 0
        for timer_id, slicing in list(self._slices.items()):
            if slicing.sig.signal_id == signal_id:
                del self._slices[timer_id]
                dropped += 1
        return dropped

    def _drop_retries(self, signal_id: str) -> int:
        """Forget the scheduled retries of a signal; return how many were pending."""
        dropped = 0
        for timer_id, order in list(self._retries.items()):
            if order.signal_id == signal_id:
                del self._retries[timer_id]
                dropped += 1
        return dropped

    def _cancel_target_denial(self, sig: Signal) -> Denial | None:
        """Say why a CANCEL signal cannot act on its target, or None."""
        target = sig.cancels
        if target is None:
            return Denial(code="intent", reason="CANCEL signal needs cancels, got None")
        if target not in self._orders_by_signal:
            return Denial(
                code="unknown_signal",
                reason=f"cancels {target!r}: no order was sent for that signal_id",
            )
        return self._owner_denial(sig, target)

    def _owner_denial(self, sig: Signal, target: str) -> Denial | None:
        """Deny touching the orders of another account's or strategy's signal."""
        orders = self._orders_by_signal.get(target)
        if not orders:
            return None
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

    # --- the gauntlet -------------------------------------------------------------------

    def _plan(self, sig: Signal) -> _Plan | Denial | None:
        """Run the gauntlet (the signal id is known not to be a duplicate); return the order
        to send, a denial, or None (target met)."""
        sid = sig.signal_id
        # Stage 1: schema.
        denial = schema_denial(sig)
        if denial is not None:
            return denial
        now = sig.ts_recv
        # Stage 2: business rules.
        state, scope, why = self._states.effective(sig.account, sig.strategy, sig.instrument)
        if state is TradingState.HALTED:
            return Denial(
                code="halted",
                reason=f"trading halted for {_scope_text(scope)} ({why}): signal {sid} denied",
            )
        name = sig.instrument
        inst = self._instruments.get(name)
        if inst is None:
            known = ", ".join(sorted(self._instruments)) or "none configured"
            return Denial(
                code="unknown_instrument",
                reason=f"instrument {name!r} unknown: expected one of {known}",
            )
        if not inst.approved:
            return Denial(
                code="not_approved",
                reason=f"instrument {name} is not approved for trading in reference data "
                f"version {inst.version}",
            )
        routed = sig.venue is None and self._config.router is not None
        venue = sig.venue if sig.venue is not None else self._default_venue(name)
        # A routed order's venue-specific checks become the router's suitability reasons.
        if not routed and venue is None:
            return Denial(
                code="unknown_venue",
                reason=f"no venue for {name}: expected signal.venue, a default_venue "
                "or venue_symbols, got none",
            )
        if not routed and venue not in inst.venue_symbols:
            listed = ", ".join(sorted(inst.venue_symbols)) or "none"
            return Denial(
                code="unknown_venue",
                reason=f"venue {venue!r} not listed for {name}: expected one of {listed}",
            )
        denial = None if routed or venue is None else self._venue_denial(venue, name, sig)
        if denial is None and self._config.calendars:
            denial = self._session_denial(name, now)
        if denial is not None:
            return denial
        denial = _price_fields_denial(sig)
        if denial is not None:
            return denial
        wanted = self._wanted(sig)
        if wanted is None or isinstance(wanted, Denial):
            return wanted
        side, qty = wanted
        if state is TradingState.REDUCING:
            denial = self._reducing_denial(sig, side, qty, scope, why)
            if denial is not None:
                return denial
        limit = self._max_order_qty(name, now)
        if limit is not None and qty > limit[0]:
            _, lscope, override = limit
            source = "config" if override is None else f"override by {override.operator}"
            return Denial(
                code="max_order_qty",
                reason=f"qty {qty} above max_order_qty {limit[0]} for {name} "
                f"({source} for scope {lscope!r})",
            )
        quote = None if venue is None else self._quotes.get((name, venue))
        normalised = normalise_order(
            inst,
            side=side,
            qty=qty,
            price=sig.price,
            stop_price=sig.stop_price,
            signal_price=sig.signal_price,
            quote=quote,
        )
        if isinstance(normalised, Denial):
            return normalised
        qty, price, stop_price = normalised
        children: tuple[tuple[str, int], ...] = ()
        if routed:
            decision = self._route(sig, inst, side, qty, price)
            if decision.chosen is None or not decision.children:
                return Denial(code="no_route", reason=decision.explanation)
            venue = decision.chosen
            quote = self._quotes.get((name, venue))
            children = tuple((c.venue, c.qty) for c in decision.children)
        assert venue is not None
        plan = _Plan(name, venue, side, qty, price, stop_price, children=children)
        denial = self._limit_denial(sig, plan, qty)
        if denial is not None:
            return denial
        # Stage 3: market state.
        return self._market_stage(sig, plan, quote)

    def _venue_denial(self, venue: str, name: str, sig: Signal) -> Denial | None:
        """Deny an order to a venue that is down, reconciling or does not take it."""
        down = self._disconnected.get(venue)
        if down is not None:
            return Denial(
                code="venue_disconnected",
                reason=f"venue {venue} disconnected since ts {down.ts_recv} ({down.reason})",
            )
        since = self._reconciling.get(venue)
        if since is not None:
            return Denial(
                code="venue_reconciling",
                reason=f"venue {venue} reconnected at ts {since} and is reconciling orders "
                "and positions: no new order until its reports are in",
            )
        return venue_rules_denial(
            self._risk.venues.get(venue), venue, name, sig.order_type, sig.tif
        )

    def _route(
        self, sig: Signal, inst: Instrument, side: Side, qty: int, price: int | None
    ) -> RouteDecision:
        """Ask the router where to send an order; venues not usable say why."""
        assert self._config.router is not None
        now = sig.ts_recv
        name = inst.instrument
        venues: list[VenueState] = []
        for venue in inst.venue_symbols:
            rules = self._risk.venues.get(venue)
            quote = self._quotes.get((name, venue))
            unusable = None
            down = self._disconnected.get(venue)
            if down is not None:
                unusable = f"disconnected since ts {down.ts_recv}"
            elif venue in self._reconciling:
                unusable = "reconciling after a reconnect"
            elif self.breaker_open(venue):
                unusable = "circuit breaker open"
            elif rules is not None and name in rules.do_not_trade:
                unusable = "on its do-not-trade list"
            venues.append(
                VenueState(
                    name=venue,
                    bid_price=None if quote is None else quote.bid_price,
                    bid_size=None if quote is None else quote.bid_size,
                    ask_price=None if quote is None else quote.ask_price,
                    ask_size=None if quote is None else quote.ask_size,
                    quote_ts=None if quote is None else quote.ts_recv,
                    maker_fee_bps=0.0 if rules is None else rules.maker_fee_bps,
                    taker_fee_bps=0.0 if rules is None else rules.taker_fee_bps,
                    latency_ns=self._latency.get(venue),
                    order_types=tuple(OrderType) if rules is None else rules.order_types,
                    tifs=tuple(TimeInForce) if rules is None else rules.tifs,
                    unusable_reason=unusable,
                )
            )
        request = RouteRequest(
            instrument=name,
            side=side,
            qty=qty,
            order_type=sig.order_type,
            price=price,
            tif=sig.tif,
            ts=now,
            tick_size=inst.tick_size,
            lot_size=inst.lot_size,
            min_qty=inst.min_qty,
        )
        decision = route(request, venues, self._fill_model, self._config.router, self._rng)
        self._last_route = decision
        return decision

    @property
    def last_route(self) -> RouteDecision | None:
        """Return the router's last decision (for display and debugging)."""
        return self._last_route

    def _calendar(self, instrument: str) -> tuple[str, Calendar] | None:
        """Return the calendar key and calendar an instrument trades on, if any."""
        calendars = self._config.calendars
        key = instrument if instrument in calendars else "*"
        cal = calendars.get(key)
        return None if cal is None else (key, cal)

    def _session_open(self, key: str, cal: Calendar, now: int) -> bool:
        """Say whether a calendar's session is open, cached until its next event."""
        cached = self._session_state.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        is_open = cal.is_open(now)
        until = cal.next_event_ts(now)
        self._session_state[key] = (now + 1 if until is None else until, is_open)
        if until is None:
            self._session_state[key] = (1 << 62, is_open)
        return is_open

    def _session_denial(self, instrument: str, now: int) -> Denial | None:
        found = self._calendar(instrument)
        if found is None:
            return None
        key, cal = found
        try:
            if self._session_open(key, cal, now):
                return None
            nxt = cal.next_open(now)
        except SessionError as exc:
            return Denial(code="session_closed", reason=f"{instrument} session: {exc}")
        when = "no session ahead" if nxt is None else f"next open {format_ts(nxt)}"
        return Denial(
            code="session_closed",
            reason=f"{instrument} session ({cal.name}) closed at {format_ts(now)}: {when}",
        )

    def _session_timers_for(self, now: int) -> list[Message]:
        """Arm one timer per calendar at its next event (open, close, roll, expiry)."""
        armed = {key for key, _ in self._session_timers.values()}
        effects: list[Message] = []
        for key, cal in self._config.calendars.items():
            if key in armed:
                continue
            try:
                nxt = cal.next_event_ts(now)
            except SessionError:
                continue  # out of the calendar's range: the gauntlet says so per order
            if nxt is not None:
                timer = self._timer(now, nxt - now, SESSION, None)
                self._session_timers[timer.timer_id] = (key, now)
                effects.append(timer)
        return effects

    def _on_session(self, msg: TimerFired) -> list[Message]:
        """Say each session event that happened, and arm the next one."""
        armed = self._session_timers.pop(msg.timer_id, None)
        if armed is None:
            return []
        key, since = armed
        cal = self._config.calendars[key]
        now = msg.ts_recv
        effects: list[Message] = []
        try:
            events = cal.events(since, now)
            nxt = cal.next_event_ts(now)
        except SessionError as exc:
            text = f"{cal.name}: {exc}; session events stop"
            return [Alert(ts_recv=now, severity=Severity.WARNING, code="SESSION_ERROR", text=text)]
        for event in events:
            text = f"{cal.name}: {event.kind.value} at {format_ts(event.ts)}"
            if event.from_contract is not None:
                text += f" from {event.from_contract} to {event.to_contract}"
            elif event.contract is not None:
                text += f" ({event.contract})"
            effects.append(
                Alert(
                    ts_recv=now,
                    severity=Severity.INFO,
                    code=event.kind.value,
                    text=text,
                    instrument=None if key == "*" else key,
                )
            )
        if nxt is not None:
            timer = self._timer(now, nxt - now, SESSION, None)
            self._session_timers[timer.timer_id] = (key, now)
            effects.append(timer)
        return effects

    def _day_expiry(self, instrument: str, now: int) -> int:
        """Return when a DAY order placed now expires: its session's close, else UTC midnight."""
        found = self._calendar(instrument)
        if found is not None:
            try:
                close = found[1].session_close(now)
            except SessionError:
                close = None
            if close is not None:
                return close
        return (now // NS_PER_DAY + 1) * NS_PER_DAY

    def _on_day_expiry(self, msg: TimerFired) -> list[Message]:
        order = self._timer_order(msg)
        if order is None or not order.is_open:
            return []
        cancel = self._request_cancel(order, msg.ts_recv)
        if cancel is None:
            return []
        text = f"DAY order {order.order_id} still working at the session close: canceling it"
        return [self._info(msg.ts_recv, "DAY_EXPIRED", text, order), cancel]

    def _reducing_denial(
        self, sig: Signal, side: Side, qty: int, scope: str, why: str
    ) -> Denial | None:
        """Deny an order that would not bring its strategy's exposure toward zero."""
        pos = self._positions.strategy_qty(sig.account, sig.strategy, sig.instrument)
        pending = 0  # working orders already reducing the same position
        for order in self._working.get((sig.account, sig.strategy, sig.instrument), {}).values():
            if (order.side is Side.SELL) == (pos > 0):
                pending += order.leaves_qty
        room = abs(pos) - pending
        reduces = pos != 0 and (side is Side.SELL) == (pos > 0) and qty <= room
        if reduces:
            return None
        return Denial(
            code="reducing_only",
            reason=f"{_scope_text(scope)} is REDUCING ({why}): {side.value} {qty} "
            f"{sig.instrument} does not reduce position {pos} of {sig.account}/{sig.strategy} "
            f"(room {max(room, 0)} after working orders)",
        )

    def _reference_price(self, sig: Signal, plan: _Plan) -> int | None:
        if plan.price is not None:
            return plan.price
        if sig.signal_price is not None:
            return sig.signal_price
        quote = self._quotes.get((plan.instrument, plan.venue))
        if quote is not None:
            far = quote.ask_price if plan.side is Side.BUY else quote.bid_price
            if far is not None:
                return far
        return self.mark_price(plan.instrument, plan.venue)

    def _resolve(self, account: str, strategy: str, name: str, venue: str, now: int) -> _Resolved:
        """Resolve every limit an order of (account, strategy, instrument, venue) faces.

        Cached while no operator override exists (then the config alone decides, and it
        never changes); with overrides, resolved afresh so that expiries take effect.
        """
        limits = self._limits
        cacheable = not limits.has_overrides()
        key = (account, strategy, name, venue)
        if cacheable:
            cached = self._resolved.get(key)
            if cached is not None:
                return cached
        qty_limits: list[tuple[str, int, str]] = []
        for limit in ("max_order_qty", "max_net_qty", "max_gross_qty"):
            value, source = limits.value("instrument", name, limit, now)
            firm, firm_source = limits.value("firm", "*", limit, now)
            if firm is not None and (value is None or firm < value):
                value, source = firm, f"{firm_source} at the firm"
            if value is not None:
                qty_limits.append((limit, value, source))
        scopes = (("firm", "*"), ("account", account), ("strategy", strategy))
        order_limit: tuple[int, str] | None = None
        for level, scope_name in (*scopes, ("instrument", name)):
            value, source = limits.value(level, scope_name, "max_order_notional", now)
            if value is not None and (order_limit is None or value < order_limit[0]):
                where = _scope_text(_scope_key(level, scope_name))
                order_limit = (value, f"{source} for {where}")
        aggregates: list[tuple[str, int | None, str, int | None, str]] = []
        for level, scope_name in scopes:
            net, net_source = limits.value(level, scope_name, "max_net_notional", now)
            gross, gross_source = limits.value(level, scope_name, "max_gross_notional", now)
            if net is not None or gross is not None:
                scope = _scope_key(level, scope_name)
                aggregates.append((scope, net, net_source, gross, gross_source))
        exposure = self._risk.limits.exposure
        inst = self._instruments.get(name)
        groups = () if inst is None else self._groups_of(inst)
        caps = tuple((g, exposure[g]) for g in groups if g in exposure)
        rates: list[tuple[str, int, str]] = []
        for level, scope_name in (*scopes, ("venue", venue)):
            value, source = limits.value(level, scope_name, "max_orders_per_window", now)
            if value is not None:
                rates.append((_scope_key(level, scope_name), value, source))
        resolved = _Resolved(
            qty_limits=tuple(qty_limits),
            order_limit=order_limit,
            aggregates=tuple(aggregates),
            caps=caps,
            rates=tuple(rates),
            needs_money=order_limit is not None or bool(aggregates) or bool(exposure),
        )
        if cacheable:
            self._resolved[key] = resolved
        return resolved

    def _limit_denial(self, sig: Signal, plan: _Plan, qty: int) -> Denial | None:
        """Check the order-size, position, exposure and rate limits for `qty` of a plan."""
        now = sig.ts_recv
        account, strategy, name = sig.account, sig.strategy, plan.instrument
        resolved = self._resolve(account, strategy, name, plan.venue, now)
        # Quantity limits: the instrument's own value, tightened by the firm default.
        for limit, value, source in resolved.qty_limits:
            if limit == "max_order_qty":
                used = qty
            elif limit == "max_net_qty":
                used = self._qtys.net_worst(account, name, plan.side, qty)
            else:
                used = self._qtys.gross_worst(account, strategy, name, plan.side, qty)
            if used > value:
                what = {
                    "max_order_qty": f"order qty {qty}",
                    "max_net_qty": f"net position of {account} with working orders and this "
                    f"order would reach {used}",
                    "max_gross_qty": f"gross position of {account} over its strategies with "
                    f"working orders and this order would reach {used}",
                }[limit]
                return Denial(
                    code=limit,
                    reason=f"{what}: above {limit} {value} for {name} ({source})",
                )
        # Money limits: order notional (tightest scope), then the aggregates.
        if resolved.needs_money:
            ref = self._reference_price(sig, plan)
            if ref is None:
                return Denial(
                    code="no_reference_price",
                    reason=f"cannot value {plan.side.value} {qty} {name} for the notional "
                    "limits: expected a limit price, a signal_price or a quote, got none",
                )
            if not self._money.convertible(name):
                inst = self._instruments[name]
                return Denial(
                    code="no_fx_rate",
                    reason=f"{name} is priced in {inst.currency}: expected a rate to "
                    f"{self._money.base} in risk.fx_rates",
                )
            order_limit = resolved.order_limit
            if order_limit is not None:
                value = abs(self._money.of(name, ref, qty))
                if value > order_limit[0]:
                    return Denial(
                        code="max_order_notional",
                        reason=f"order notional {value} ({qty} {name} at {ref}) above "
                        f"max_order_notional {order_limit[0]} ({order_limit[1]})",
                    )
            for scope, net_limit, net_src, gross_limit, gross_src in resolved.aggregates:
                denial = self._aggregate_denial(
                    scope, (net_limit, net_src, gross_limit, gross_src), name, plan.side, qty, ref
                )
                if denial is not None:
                    return denial
            for group, cap in resolved.caps:
                agg = self._aggregate("*" if group == "portfolio" else group)
                _, _, gross = agg.with_order(self._money, name, plan.side, qty, ref)
                if gross > cap:
                    return Denial(
                        code="exposure",
                        reason=f"gross exposure of {group} would be {gross} with this order "
                        f"(working orders included): above its limit {cap}",
                    )
        # Order rates.
        for rate_key, value, source in resolved.rates:
            count = self._rates.count(rate_key, now)
            if count >= value:
                window_s = self._risk.limits.rate_window_ns / 1e9
                return Denial(
                    code="order_rate",
                    reason=f"{_scope_text(rate_key)} sent {count} orders in the last "
                    f"{window_s:g} s: max_orders_per_window {value} ({source})",
                )
        return None

    def _aggregate_denial(
        self,
        scope: str,
        limits: tuple[int | None, str, int | None, str],
        name: str,
        side: Side,
        qty: int,
        ref: int,
    ) -> Denial | None:
        """Deny an order that takes a scope's worst-case net or gross notional too far."""
        net_limit, net_source, gross_limit, gross_source = limits
        long, short, gross = self._aggregate(scope).with_order(self._money, name, side, qty, ref)
        net = max(abs(long), abs(short))
        if net_limit is not None and net > net_limit:
            return Denial(
                code="max_net_notional",
                reason=f"net notional of {_scope_text(scope)} would be {net} with working "
                f"orders and this order: above max_net_notional {net_limit} ({net_source})",
            )
        if gross_limit is not None and gross > gross_limit:
            return Denial(
                code="max_gross_notional",
                reason=f"gross notional of {_scope_text(scope)} would be {gross} with working "
                f"orders and this order: above max_gross_notional {gross_limit} "
                f"({gross_source})",
            )
        return None

    def _groups_of(self, inst: Instrument) -> tuple[str, ...]:
        """Return the exposure groups an instrument counts in (cached per reference data)."""
        cached = self._groups.get(inst.instrument)
        if cached is not None:
            return cached
        groups = ["portfolio"] if "portfolio" in self._risk.limits.exposure else []
        for group in self._exposure_groups:
            kind, _, value = group.partition(":")
            have = {
                "asset_class": inst.asset_class.value,
                "sector": inst.sector,
                "country": inst.country,
            }.get(kind)
            if have == value:
                groups.append(group)
        self._groups[inst.instrument] = found = tuple(groups)
        return found

    def _aggregate(self, scope: str) -> Aggregate:
        agg = self._aggregates.get(scope)
        if agg is None:
            agg = self._aggregates[scope] = Aggregate()
        return agg

    def _market_stage(self, sig: Signal, plan: _Plan, quote: QuoteTick | None) -> _Plan | Denial:
        """Stage 3: quote, collar, volatility and liquidity checks; may slice or hold."""
        cfg = self._risk.market
        now = sig.ts_recv
        name, venue = plan.instrument, plan.venue
        denial = quote_denial(cfg, quote, name, venue, now)
        if denial is not None:
            return denial
        mid = mid_of(quote)
        price = plan.price if plan.price is not None else sig.signal_price
        denial = collar_denial(cfg, plan.side, price, mid, name)
        if denial is not None:
            return denial
        if cfg.vol_pause_bps is not None and mid is not None:
            denial = self._volatility_denial(name, venue, mid, now)
            if denial is not None:
                return denial
        return self._liquidity(sig, plan, mid, quote)

    def _volatility_denial(self, name: str, venue: str, mid: int, now: int) -> Denial | None:
        """Pause after the mid moved too far within the window (sampled at signals).

        The window's highest and lowest mids are kept in monotonic deques, so a check is
        O(1) amortised: the largest move against any sample is against one of the two.
        """
        cfg = self._risk.market
        assert cfg.vol_pause_bps is not None
        key = (name, venue)
        window = self._vol.get(key)
        if window is None:
            window = self._vol[key] = (deque(), deque())
        highs, lows = window  # (ts, mid): mids falling in highs, rising in lows
        horizon = now - cfg.vol_window_ns
        for samples in window:
            while samples and samples[0][0] < horizon:
                samples.popleft()
        while highs and highs[-1][1] <= mid:
            highs.pop()
        highs.append((now, mid))
        while lows and lows[-1][1] >= mid:
            lows.pop()
        lows.append((now, mid))
        paused = self._vol_pause.get(key, 0)
        for ts, old in (lows[0], highs[0]):
            if old > 0 and abs(mid - old) * 10_000 // old > cfg.vol_pause_bps:
                paused = max(paused, now + cfg.vol_pause_ns)
                self._vol_pause[key] = paused
                moved = abs(mid - old) * 10_000 // old
                return Denial(
                    code="volatility_pause",
                    reason=f"{name} on {venue} moved {moved} bps ({old} -> {mid}) within "
                    f"{(now - ts) // 1_000_000} ms: trading paused until ts {paused}",
                )
        if now < paused:
            return Denial(
                code="volatility_pause",
                reason=f"{name} on {venue} is in a volatility pause until ts {paused}",
            )
        return None

    def _liquidity(
        self, sig: Signal, plan: _Plan, mid: int | None, quote: QuoteTick | None
    ) -> _Plan | Denial:
        """Compare size with ADV and with the book; slice or hold an order too big."""
        cfg = self._risk.market
        name = plan.instrument
        qty = plan.qty
        too_big: list[str] = []
        cap = qty
        adv = cfg.adv.get(name)
        if cfg.max_adv_participation_bps is not None and adv:
            part = qty * 10_000 // adv
            if part > cfg.max_adv_participation_bps:
                too_big.append(
                    f"{qty} is {part} bps of ADV {adv}, above {cfg.max_adv_participation_bps} bps"
                )
                cap = min(cap, adv * cfg.max_adv_participation_bps // 10_000)
        if cfg.max_impact_bps is not None and mid is not None and _takes(sig, plan, quote):
            levels = self._far_levels(name, plan.venue, plan.side)
            impact = impact_bps(plan.side, qty, levels, mid)
            if impact is None or impact > cfg.max_impact_bps:
                shown = "more than the book shows" if impact is None else f"{impact} bps"
                too_big.append(f"estimated impact {shown}, above {cfg.max_impact_bps} bps")
                cap = min(cap, _max_qty_within(plan.side, levels, mid, cfg.max_impact_bps))
        if not too_big:
            return plan
        why = "; ".join(too_big)
        if cfg.liquidity_action == "hold":
            return plan._replace(hold=why)
        inst = self._instruments[name]
        child = cap // inst.lot_size * inst.lot_size
        if child <= 0 or child < inst.min_qty:
            return Denial(
                code="liquidity",
                reason=f"{plan.side.value} {qty} {name}: {why}; no child order of at least "
                f"min_qty {inst.min_qty} fits",
            )
        return plan._replace(child_qty=child)

    def _far_levels(self, name: str, venue: str, side: Side) -> list[tuple[int, int]]:
        """Return (price, size) levels an order would take, touch first (book, else quote)."""
        book = self._books.get((name, venue))
        if book is not None:
            return list(islice(book.levels(Side.SELL if side is Side.BUY else Side.BUY), 64))
        quote = self._quotes.get((name, venue))
        if quote is None:
            return []
        if side is Side.BUY:
            return [] if quote.ask_price is None else [(quote.ask_price, quote.ask_size)]
        return [] if quote.bid_price is None else [(quote.bid_price, quote.bid_size)]

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

    # --- orders going out -----------------------------------------------------------------

    def _timer(self, now: int, delay: int, purpose: str, order_id: str | None) -> ScheduleTimer:
        """Return a timer set at `now` (the input's ts) to fire `delay` ns later."""
        return ScheduleTimer(
            ts_recv=now,
            timer_id=self._ids.next_timer_id(),
            fire_at=now + delay,
            purpose=purpose,
            order_id=order_id,
        )

    def _submit(self, cmd: SubmitOrder, sig: Signal | None = None) -> list[Message]:
        """Track a new order; return its command and its timers."""
        now = cmd.ts_recv
        order = Order.from_submit(cmd)
        self._orders[cmd.order_id] = order
        self._open[cmd.order_id] = order
        if cmd.signal_id is not None:
            self._orders_by_signal.setdefault(cmd.signal_id, []).append(order)
            if sig is not None:
                self._signals[cmd.signal_id] = sig
        key = (cmd.account, cmd.strategy, cmd.instrument)
        self._working.setdefault(key, {})[cmd.order_id] = order
        value_at = cmd.price
        if value_at is None and sig is not None:
            value_at = sig.signal_price  # what the gauntlet valued a market order at
        self._track(order, 0, cmd.qty, value_at)
        for rate_key in (
            "*",
            f"account:{cmd.account}",
            f"strategy:{cmd.strategy}",
            f"venue:{cmd.venue}",
        ):
            self._rates.add(rate_key, now)
        breaker = self._breakers.get(cmd.venue)
        if breaker is None:
            breaker = self._breakers[cmd.venue] = Breaker(self._risk.breaker)
        breaker.record_sent(now)
        effects: list[Message] = [cmd]
        self._awaiting_ack[cmd.order_id] = now + self._config.ack_timeout_ns
        if self._ack_timer is None:
            timer = self._timer(now, self._config.ack_timeout_ns, ACK_TIMEOUT, None)
            self._ack_timer = timer.timer_id
            effects.append(timer)
        if cmd.tif is TimeInForce.DAY:
            expires = self._day_expiry(cmd.instrument, now)
            effects.append(self._timer(now, max(expires - now, 0), DAY_EXPIRY, cmd.order_id))
        if self._config.calendars and len(self._session_timers) < len(self._config.calendars):
            effects.extend(self._session_timers_for(now))
        stale = self._risk.lifecycle.stale_order_ns
        if stale is not None:
            effects.append(self._timer(now, stale, STALE_ORDER, cmd.order_id))
        if self._risk_timer is None and self._needs_risk_timer():
            timer = self._timer(now, self._risk.check_interval_ns, RISK_CHECK, None)
            self._risk_timer = timer.timer_id
            effects.append(timer)
        return effects

    def _needs_risk_timer(self) -> bool:
        return self._watch_pnl or self._risk_limits_timed

    def _track(self, order: Order, dpos: int, dleaves: int, price: int | None) -> None:
        """Apply an order's change of position (`dpos` unsigned) and leaves to the books."""
        if dpos == 0 and dleaves == 0:
            return
        buy = order.side is Side.BUY
        spos = dpos if buy else -dpos
        dwb, dws = (dleaves, 0) if buy else (0, dleaves)
        name = order.instrument
        self._qtys.apply(order.account, order.strategy, name, spos, dwb, dws)
        if spos:
            key = (order.venue, order.account, name)
            self._venue_positions[key] = self._venue_positions.get(key, 0) + spos
        value_at = self.mark_price(name, order.venue)
        if value_at is None:
            value_at = price if price is not None else order.price
        if value_at is None:
            value_at = self._valued_at(name)
        self._apply_aggregates(order.account, order.strategy, name, spos, dwb, dws, value_at)

    def _apply_aggregates(
        self, account: str, strategy: str, name: str, spos: int, dwb: int, dws: int, price: int
    ) -> None:
        """Change one instrument's quantities in every aggregate it belongs to."""
        money = self._money
        for scope in ("*", f"account:{account}", f"strategy:{strategy}"):
            self._aggregate(scope).apply(money, name, spos, dwb, dws, price)
        if self._exposure_groups:
            inst = self._instruments.get(name)
            if inst is not None:
                for group in self._groups_of(inst):
                    if group != "portfolio":  # the portfolio is the firm aggregate, "*"
                        self._aggregate(group).apply(money, name, spos, dwb, dws, price)

    def _valued_at(self, name: str) -> int:
        """Return the price an instrument was last valued at in the firm aggregate."""
        agg = self._aggregates.get("*")
        term = None if agg is None else agg.terms.get(name)
        return 0 if term is None else term.price

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
        return self._order_alert(
            msg.ts_recv,
            Severity.WARNING,
            "ORDER_ANOMALY",
            f"{type(msg).__name__} ({event.value}) for order {order.order_id} "
            f"in {order.status.value}: {why}; order unchanged",
            order,
        )

    def _on_venue_event(self, msg: VenueEvent) -> list[Message]:
        order = self._order_of(msg)
        if isinstance(order, Alert):
            return [order]
        event = _EVENT_OF[type(msg)]
        if isinstance(msg, OrderReplaced) and msg.qty <= order.filled_qty:
            why = f"replaced qty {msg.qty} must exceed filled_qty {order.filled_qty}"
            return [self._anomaly(msg, order, event, why)]
        leaves = order.leaves_qty
        before = order.status
        try:
            status = order.apply(event, msg.ts_recv)
        except InvalidTransition:
            return [self._anomaly(msg, order, event, "not a legal transition")]
        if before is OrderStatus.PENDING_NEW and isinstance(msg, OrderAccepted):
            waited = msg.ts_recv - order.ts_created
            old = self._latency.get(order.venue)
            self._latency[order.venue] = waited if old is None else old + (waited - old) // 8
        if isinstance(msg, OrderAccepted | OrderReplaced) and msg.venue_order_id is not None:
            order.venue_order_id = msg.venue_order_id
        if isinstance(msg, OrderReplaced):
            order.qty = msg.qty
            if msg.price is not None:
                order.price = msg.price
        self._track(order, 0, order.leaves_qty - leaves, None)
        if status in TERMINAL:
            self._forget_open(order)
        if isinstance(msg, CancelRejected) and order.is_open and status is not before:
            return self._on_cancel_rejected(msg, order)
        if isinstance(msg, OrderRejected) and before is not OrderStatus.REJECTED:
            # A repeated reject is not a new one; an order we were canceling stays dead.
            return self._on_rejected(msg, order, retry=before is not OrderStatus.PENDING_CANCEL)
        return []

    def _on_cancel_rejected(self, msg: CancelRejected, order: Order) -> list[Message]:
        """The venue refused a cancel and the order still works: say so; while its scope is
        halted, send the cancel again with backoff, up to max_retries times."""
        now = msg.ts_recv
        policy = self._risk.lifecycle
        state, scope, _ = self._states.effective(order.account, order.strategy, order.instrument)
        head = (
            f"cancel of order {order.order_id} ({order.side.value} {order.leaves_qty} "
            f"{order.instrument} left) rejected by {order.venue}: {msg.reason}"
        )
        if state is not TradingState.HALTED:
            text = f"{head}; the order keeps working"
            return [self._order_alert(now, Severity.WARNING, "CANCEL_REJECTED", text, order)]
        attempts = self._cancel_attempts.get(order.order_id, 0)
        effects: list[Message] = []
        if attempts < policy.max_retries:
            backoff = self._backoff(attempts)
            self._cancel_attempts[order.order_id] = attempts + 1
            then = (
                f"cancel sent again in {backoff // 1_000_000} ms "
                f"(attempt {attempts + 1} of {policy.max_retries})"
            )
            effects.append(self._timer(now, backoff, CANCEL_RETRY, order.order_id))
        else:
            then = f"{attempts} cancels resent already: cancel it at the venue by hand"
        text = f"{head}; still working while {_scope_text(scope)} is halted: {then}"
        alert = self._order_alert(now, Severity.CRITICAL, "CANCEL_REJECTED", text, order)
        return [alert, *effects]

    def _backoff(self, attempts: int) -> int:
        """Return the wait before attempt `attempts + 1`: doubling, capped."""
        policy = self._risk.lifecycle
        return min(policy.retry_backoff_ns << attempts, policy.retry_backoff_max_ns)

    def _on_cancel_retry(self, msg: TimerFired) -> list[Message]:
        order = self._timer_order(msg)
        if order is None:
            return []
        state, _, _ = self._states.effective(order.account, order.strategy, order.instrument)
        if state is not TradingState.HALTED:
            return []  # resumed meanwhile: the order may work again
        cancel = self._request_cancel(order, msg.ts_recv)
        return [] if cancel is None else [cancel]

    def _on_rejected(self, msg: OrderRejected, order: Order, retry: bool = True) -> list[Message]:
        """Retry a retryable reject with backoff (a new order id); escalate the rest."""
        now = msg.ts_recv
        effects: list[Message] = []
        breaker = self._breakers.get(order.venue)
        if breaker is not None and breaker.record_error(now):
            effects.extend(self._open_breaker(order.venue, breaker, now))
        policy = self._risk.lifecycle
        retryable = retry and (msg.retryable or msg.reason in policy.retryable_reasons)
        sid = order.signal_id
        attempts = self._attempts.get(sid, 0) if sid is not None else policy.max_retries
        if retryable and attempts < policy.max_retries and order.filled_qty == 0:
            backoff = self._backoff(attempts)
            assert sid is not None
            self._attempts[sid] = attempts + 1
            timer = self._timer(now, backoff, RETRY, order.order_id)
            self._retries[timer.timer_id] = order
            effects.append(
                self._order_alert(
                    now,
                    Severity.INFO,
                    "ORDER_RETRY",
                    f"order {order.order_id} rejected by {order.venue} ({msg.reason}): "
                    f"retry {attempts + 1} of {policy.max_retries} in {backoff // 1_000_000} ms",
                    order,
                )
            )
            effects.append(timer)
            return effects
        if not retry:
            why = "a cancel was pending: not retried"
        elif retryable and attempts >= policy.max_retries:
            why = f"retryable, but {attempts} retries already made"
        else:
            why = "retryable, but partly filled" if retryable else "not retryable"
        effects.append(
            self._order_alert(
                now,
                Severity.WARNING,
                "ORDER_REJECTED",
                f"order {order.order_id} ({order.side.value} {order.qty} "
                f"{order.instrument}) rejected by {order.venue}: {msg.reason} ({why})",
                order,
            )
        )
        return effects

    def _on_filled(self, msg: OrderFilled) -> list[Message]:
        order = self._order_of(msg)
        if isinstance(order, Alert):
            return [order]
        if msg.trade_id in order.trade_ids:
            self._duplicate_fills += 1
            return []
        if order.recovered_qty and msg.qty > 0:
            return self._absorb_recovered(msg, order)
        filled = order.filled_qty + msg.qty
        event = OrderEvent.FULL_FILL if filled >= order.qty else OrderEvent.PARTIAL_FILL
        if msg.qty <= 0:
            return [self._anomaly(msg, order, event, f"fill qty must be > 0, got {msg.qty}")]
        overfill = filled > order.qty
        first_partial = order.filled_qty == 0 and not overfill and filled < order.qty
        leaves = order.leaves_qty
        after_reject = order.status is OrderStatus.REJECTED
        try:
            status = order.apply(event, msg.ts_recv)
        except InvalidTransition:
            if not (overfill or after_reject):
                return [self._anomaly(msg, order, event, "not a legal transition")]
            status = order.status  # booked anyway: the venue says it traded
        effects = self._book_fill(order, msg.trade_id, msg.price, msg.qty, msg.fee, msg.ts_recv)
        if after_reject:
            effects.extend(self._fill_after_reject(msg, order))
        self._track(order, msg.qty, order.leaves_qty - leaves, msg.price)
        if status in TERMINAL:
            self._forget_open(order)
        elif first_partial:
            effects.extend(self._partial_policy(order, msg.ts_recv))
        if self._watch_pnl:
            effects.extend(self._check_pnl(msg.ts_recv, order.account, order.strategy))
        if not overfill:
            return effects
        effects.append(
            self._order_alert(
                msg.ts_recv,
                Severity.CRITICAL,
                "OVERFILL",
                f"order {order.order_id} filled {order.filled_qty} of qty {order.qty} "
                f"(trade {msg.trade_id} for {msg.qty}): booked to positions; reconcile",
                order,
            )
        )
        return effects

    def _fill_after_reject(self, msg: OrderFilled, order: Order) -> list[Message]:
        """A venue fills an order it rejected, or one the engine closed as lost in a
        disconnect: the trade is booked (the venue says it happened), a retry not yet sent
        is dropped, and the operator is told the venue may still work the rest."""
        dropped = [tid for tid, rejected in self._retries.items() if rejected is order]
        for tid in dropped:
            del self._retries[tid]
        retry = "its pending retry dropped" if dropped else "no retry pending"
        text = (
            f"order {order.order_id} was rejected, yet {order.venue} reports fill "
            f"{msg.trade_id} of {msg.qty} at {msg.price}: booked to positions, {retry}; "
            "the venue may still work the rest: reconcile"
        )
        return [self._order_alert(msg.ts_recv, Severity.CRITICAL, "FILL_AFTER_REJECT", text, order)]

    def _absorb_recovered(self, msg: OrderFilled, order: Order) -> list[Message]:
        """A fill report for an order with fills recovered from a status report: the first
        reports to arrive are those fills (booked already); book only what goes beyond."""
        absorbed = min(order.recovered_qty, msg.qty)
        order.recovered_qty -= absorbed
        rest = msg.qty - absorbed
        rest_fee = msg.fee * rest // msg.qty
        # The recovered part was booked without its fee: book that now, with no quantity.
        self._book_fill(order, msg.trade_id, msg.price, 0, msg.fee - rest_fee, msg.ts_recv)
        text = (
            f"fill {msg.trade_id} of {msg.qty} on order {order.order_id} at {msg.price}: "
            f"{absorbed} already booked from {order.venue}'s status report after the "
            f"reconnect" + (f", the other {rest} booked now" if rest else "")
        )
        alert = self._info(msg.ts_recv, "RECOVERED_FILL_REPORTED", text, order)
        if not rest:
            return [alert]
        # The rest is a new fill, under a trade id of its own (the report's is recorded).
        part = msgspec.structs.replace(msg, qty=rest, trade_id=f"{msg.trade_id}:rest", fee=rest_fee)
        return [alert, *self._on_filled(part)]

    def _book_fill(
        self, order: Order, trade_id: str, price: int, qty: int, fee: int, now: int
    ) -> list[Message]:
        order.record_fill(trade_id, price, qty, fee, now)
        self._positions.apply_fill(
            order.account,
            order.strategy,
            order.instrument,
            side=order.side,
            qty=qty,
            price=price,
            fee=fee,
            multiplier=self._multiplier(order.instrument),
        )
        return []

    def _partial_policy(self, order: Order, now: int) -> list[Message]:
        """Schedule what the lifecycle config does with a partly filled order."""
        policy = self._risk.lifecycle
        if policy.partial_fill == "cancel_after":
            return [self._timer(now, policy.partial_fill_after_ns, PARTIAL_TIMEOUT, order.order_id)]
        if policy.partial_fill == "chase" and order.order_type is OrderType.LIMIT:
            return [self._timer(now, policy.chase_interval_ns, CHASE, order.order_id)]
        return []

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
        handler = self._timer_handlers.get(msg.purpose)
        if handler is None:
            return [
                Alert(
                    ts_recv=msg.ts_recv,
                    severity=Severity.WARNING,
                    code="UNKNOWN_TIMER",
                    text=f"timer {msg.timer_id} has purpose {msg.purpose!r}: "
                    f"expected one of {', '.join(TIMER_PURPOSES)}; ignored",
                    order_id=msg.order_id,
                )
            ]
        return handler(msg)

    def _timer_order(self, msg: TimerFired) -> Order | None:
        return self._orders.get(msg.order_id) if msg.order_id is not None else None

    def _on_ack_timeout(self, msg: TimerFired) -> list[Message]:
        """The ack watchdog: one timer, set for the earliest deadline of the orders sent
        and not yet acknowledged (an order's deadline is `ack_timeout_ns` after it was
        sent). Each order still PENDING_NEW at its deadline gets an ACK_TIMEOUT alert, at
        the deadline, and counts as an error of its venue's breaker; then the watchdog is
        set again for the next deadline, if an order is still waiting."""
        if msg.timer_id != self._ack_timer:
            return []  # not the armed watchdog: nothing to do
        self._ack_timer = None
        effects: list[Message] = []
        awaiting = self._awaiting_ack
        while awaiting:
            order_id, deadline = next(iter(awaiting.items()))
            order = self._orders.get(order_id)
            pending = order is not None and order.status is OrderStatus.PENDING_NEW
            if pending and deadline > msg.ts_recv:
                timer = self._timer(msg.ts_recv, deadline - msg.ts_recv, ACK_TIMEOUT, None)
                self._ack_timer = timer.timer_id
                effects.append(timer)
                break
            del awaiting[order_id]
            if pending:
                assert order is not None
                effects.extend(self._ack_overdue(msg.ts_recv, order))
        return effects

    def _ack_overdue(self, now: int, order: Order) -> list[Message]:
        """An order not acknowledged by its deadline: the alert, and an error of its
        venue's breaker (which may open it)."""
        waited_ms = (now - order.ts_created) // 1_000_000
        effects: list[Message] = [
            self._order_alert(
                now,
                Severity.WARNING,
                "ACK_TIMEOUT",
                f"order {order.order_id} on {order.venue} not acknowledged after {waited_ms} ms",
                order,
            )
        ]
        breaker = self._breakers.get(order.venue)
        if breaker is not None and breaker.record_error(now):
            effects.extend(self._open_breaker(order.venue, breaker, now))
        return effects

    def _on_retry(self, msg: TimerFired) -> list[Message]:
        """Resend a rejected order under a new order id, if nothing forbids it now."""
        rejected = self._retries.pop(msg.timer_id, None)
        if rejected is None or rejected.signal_id is None:
            return []
        sig = self._signals.get(rejected.signal_id)
        if sig is None:
            return []
        sig = msgspec.structs.replace(sig, ts_recv=msg.ts_recv)
        plan = _Plan(
            rejected.instrument,
            rejected.venue,
            rejected.side,
            rejected.qty,
            rejected.price,
            rejected.stop_price,
        )
        denial = self._resend_denial(sig, plan, rejected.qty)
        if denial is not None:
            return [self._signal_rejected(sig, denial)]
        if self.breaker_open(plan.venue):  # wait for it, without using up a retry
            timer = self._timer(msg.ts_recv, self._risk.lifecycle.retry_backoff_ns, RETRY, None)
            self._retries[timer.timer_id] = rejected
            return [timer]
        return self._submit_plan(sig, plan, rejected.qty)

    def _resend_denial(self, sig: Signal, plan: _Plan, qty: int) -> Denial | None:
        """Check an order approved earlier again before it goes (state, venue, limits)."""
        state, scope, why = self._states.effective(sig.account, sig.strategy, plan.instrument)
        if state is TradingState.HALTED:
            return Denial(
                code="halted",
                reason=f"trading halted for {_scope_text(scope)} ({why}): "
                f"signal {sig.signal_id} not resent",
            )
        if state is TradingState.REDUCING:
            denial = self._reducing_denial(sig, plan.side, qty, scope, why)
            if denial is not None:
                return denial
        if plan.venue in self._disconnected or plan.venue in self._reconciling:
            return Denial(
                code="venue_unavailable",
                reason=f"venue {plan.venue} is disconnected or reconciling: "
                f"signal {sig.signal_id} not resent",
            )
        return self._limit_denial(sig, plan, qty)

    def _on_partial_timeout(self, msg: TimerFired) -> list[Message]:
        order = self._timer_order(msg)
        if order is None or order.status is not OrderStatus.PARTIALLY_FILLED:
            return []
        cancel = self._request_cancel(order, msg.ts_recv)
        if cancel is None:
            return []
        text = (
            f"order {order.order_id} partly filled {order.filled_qty} of {order.qty}: "
            "canceling the remainder (partial_fill = cancel_after)"
        )
        return [self._info(msg.ts_recv, "PARTIAL_CANCEL", text, order), cancel]

    def _on_chase(self, msg: TimerFired) -> list[Message]:
        """Replace a partly filled limit order at the touch, up to max_chases times."""
        order = self._timer_order(msg)
        policy = self._risk.lifecycle
        if order is None:
            return []
        chased = self._chases.get(order.order_id, 0)
        if order.status is OrderStatus.PENDING_REPLACE:  # the last replace is unanswered
            again = self._timer(msg.ts_recv, policy.chase_interval_ns, CHASE, order.order_id)
            return [again] if chased < policy.max_chases else []
        if order.status not in (OrderStatus.PARTIALLY_FILLED, OrderStatus.ACCEPTED):
            return []
        state, _, _ = self._states.effective(order.account, order.strategy, order.instrument)
        if state is TradingState.HALTED:
            return []  # no replace while halted: the halt's cancels stand
        if order.venue in self._disconnected or order.venue in self._reconciling:
            again = self._timer(msg.ts_recv, policy.chase_interval_ns, CHASE, order.order_id)
            return [again] if chased < policy.max_chases else []
        quote = self._quotes.get((order.instrument, order.venue))
        touch = None
        if quote is not None:
            touch = quote.bid_price if order.side is Side.BUY else quote.ask_price
        again = self._timer(msg.ts_recv, policy.chase_interval_ns, CHASE, order.order_id)
        if touch is None or touch == order.price:
            return [again] if chased < policy.max_chases else []
        if chased >= policy.max_chases:
            return []
        order.apply(OrderEvent.REPLACE_REQUESTED, msg.ts_recv)
        self._chases[order.order_id] = chased + 1
        replace = ReplaceOrder(
            ts_recv=msg.ts_recv,
            order_id=order.order_id,
            venue=order.venue,
            instrument=order.instrument,
            venue_order_id=order.venue_order_id,
            qty=order.qty,
            price=touch,
        )
        return [replace, again]

    def _on_stale_order(self, msg: TimerFired) -> list[Message]:
        order = self._timer_order(msg)
        if order is None or not order.is_open or order.filled_qty > 0:
            return []
        waited_s = (msg.ts_recv - order.ts_created) / 1e9
        text = (
            f"order {order.order_id} ({order.side.value} {order.qty} {order.instrument} on "
            f"{order.venue}) has worked {waited_s:g} s without a fill"
        )
        return [self._order_alert(msg.ts_recv, Severity.WARNING, "ORDER_STALE", text, order)]

    def _on_slice(self, msg: TimerFired) -> list[Message]:
        slicing = self._slices.pop(msg.timer_id, None)
        if slicing is None:
            return []
        sig, plan, left, sent = slicing
        sig = msgspec.structs.replace(sig, ts_recv=msg.ts_recv)
        child = min(left, plan.child_qty or left)
        denial = self._resend_denial(sig, plan, child)
        if denial is not None:
            why = f"slice {sent + 1}: {denial.reason}; {left} of {plan.qty} not sent"
            return [self._signal_rejected(sig, Denial(code=denial.code, reason=why))]
        interval = self._risk.market.slice_interval_ns
        if self.breaker_open(plan.venue):  # the next child waits for the breaker to close
            timer = self._timer(msg.ts_recv, interval, SLICE, None)
            self._slices[timer.timer_id] = slicing._replace(sig=sig)
            return [timer]
        effects = self._submit_plan(sig, plan, child)
        if left > child:
            timer = self._timer(msg.ts_recv, self._risk.market.slice_interval_ns, SLICE, None)
            self._slices[timer.timer_id] = _Slicing(sig, plan, left - child, sent + 1)
            effects.append(timer)
        return effects

    # --- circuit breaker ------------------------------------------------------------------

    def _open_breaker(self, venue: str, breaker: Breaker, now: int) -> list[Message]:
        timer = self._timer(now, self._risk.breaker.cooldown_ns, BREAKER, None)
        self._breaker_timers[timer.timer_id] = venue
        breaker.timer_id = timer.timer_id
        return [
            Alert(
                ts_recv=now,
                severity=Severity.CRITICAL,
                code="CIRCUIT_OPEN",
                text=f"circuit breaker of {venue} open: {breaker.rate_text(now)}, threshold "
                f"{self._risk.breaker.threshold_bps / 100:g}%; new orders to it are queued",
                venue=venue,
            ),
            timer,
        ]

    def _on_breaker_timer(self, msg: TimerFired) -> list[Message]:
        venue = self._breaker_timers.pop(msg.timer_id, None)
        breaker = None if venue is None else self._breakers.get(venue)
        if venue is None or breaker is None or breaker.open_since is None:
            return []
        now = msg.ts_recv
        if breaker.tripped(now):
            timer = self._timer(now, self._risk.breaker.cooldown_ns, BREAKER, None)
            self._breaker_timers[timer.timer_id] = venue
            return [timer]
        breaker.open_since = None
        queued, breaker.queue = breaker.queue, []
        cfg = self._risk.breaker
        effects: list[Message] = [
            Alert(
                ts_recv=now,
                severity=Severity.INFO,
                code="CIRCUIT_CLOSED",
                text=f"circuit breaker of {venue} closed: {breaker.rate_text(now)}; "
                f"{len(queued)} queued orders go by rule (on_recover = {cfg.on_recover})",
                venue=venue,
            )
        ]
        for queued_at, sig in queued:
            waited = now - queued_at
            fresh = msgspec.structs.replace(sig, ts_recv=now)
            if cfg.on_recover == "drop" or waited > cfg.max_queue_age_ns:
                reason = (
                    f"queued {waited // 1_000_000} ms behind the circuit breaker of {venue}: "
                    + (
                        "dropped by rule (on_recover = drop)"
                        if cfg.on_recover == "drop"
                        else f"older than max_queue_age {cfg.max_queue_age_ns // 1_000_000} ms"
                    )
                )
                effects.append(
                    self._signal_rejected(fresh, Denial(code="circuit_breaker", reason=reason))
                )
                continue
            plan = self._plan(fresh)  # the gauntlet again (its id was handled once)
            if isinstance(plan, Denial):
                effects.append(self._signal_rejected(fresh, plan))
            elif plan is not None:
                effects.extend(self._send_or_queue(fresh, plan))
        return effects

    # --- operator ---------------------------------------------------------------------------

    def _on_kill_switch(self, msg: KillSwitch) -> list[Message]:
        level, name = scope_of(msg.scope)
        effects: list[Message] = []
        scope = _scope_key(level, name)
        if level not in ("firm", "account", "strategy", "instrument"):
            scope = "*"  # fail safe: an unreadable scope halts everything
            effects.append(
                Alert(
                    ts_recv=msg.ts_recv,
                    severity=Severity.CRITICAL,
                    code="INVALID_KILL_SWITCH",
                    text=f"KillSwitch by {msg.operator}: scope {msg.scope!r} unreadable "
                    "(expected '*', 'account:A', 'strategy:S' or 'instrument:X'); "
                    "applied to the whole firm",
                )
            )
        effects.extend(
            self._set_state(scope, msg.state, f"{msg.operator}: {msg.reason}", msg.ts_recv)
        )
        if msg.flatten:
            effects.extend(self._flatten_scope(scope, msg.ts_recv))
        return effects

    def _set_state(self, scope: str, state: TradingState, why: str, now: int) -> list[Message]:
        """Set a scope's trading state; halting cancels its working orders."""
        self._states.set(scope, state, why)
        effects: list[Message] = []
        if state is TradingState.HALTED:
            for order in list(self._open.values()):
                if _in_scope(scope, order.account, order.strategy, order.instrument):
                    cancel = self._request_cancel(order, now)
                    if cancel is not None:
                        effects.append(cancel)
            for timer_id, slicing in list(self._slices.items()):
                sig = slicing.sig
                if _in_scope(scope, sig.account, sig.strategy, slicing.plan.instrument):
                    del self._slices[timer_id]
        return effects

    def _flatten_scope(self, scope: str, now: int) -> list[Message]:
        effects: list[Message] = []
        positions = sorted(self._positions.strategy_positions(), key=lambda kv: kv[0])
        for (account, strategy, instrument), position in positions:
            if position.qty != 0 and _in_scope(scope, account, strategy, instrument):
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
        level, name = scope_of(msg.scope)
        self._states.set(_scope_key(level, name), TradingState.ACTIVE, "")
        if level == "firm":
            self._states.set("*", TradingState.ACTIVE, "")
        return []

    def _on_limit_override(self, msg: LimitOverride) -> list[Message]:
        if msg.limit == "max_order_qty" and (msg.scope == "*" or ":" not in msg.scope):
            problem = self._qty_override_problem(msg)
            if problem is None:
                # The legacy per-instrument table and the limit hierarchy both take it.
                self._qty_overrides[msg.scope] = msg
                self._limits.override(msg)
                return []
        else:
            problem = self._limits.override(msg)
            if problem is None:
                return []
        return [
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.WARNING,
                code="INVALID_OVERRIDE",
                text=f"LimitOverride by {msg.operator}: {problem}; ignored",
            )
        ]

    def _qty_override_problem(self, msg: LimitOverride) -> str | None:
        if msg.scope != "*" and msg.scope not in self._instruments:
            return f"scope {msg.scope!r} is not a known instrument or '*'"
        if msg.value < 0:
            return f"value must be >= 0, got {msg.value}"
        return None

    def _on_review(self, msg: ReviewDecision) -> list[Message]:
        held = self._held.pop(msg.signal_id, None)
        if held is None:
            return [
                Alert(
                    ts_recv=msg.ts_recv,
                    severity=Severity.WARNING,
                    code="INVALID_REVIEW",
                    text=f"ReviewDecision by {msg.operator}: signal {msg.signal_id!r} is not "
                    "held for review; ignored",
                )
            ]
        sig, plan = held
        sig = msgspec.structs.replace(sig, ts_recv=msg.ts_recv)
        if not msg.approve:
            reason = f"held for review ({plan.hold}); rejected by {msg.operator}: {msg.reason}"
            return [self._signal_rejected(sig, Denial(code="review_rejected", reason=reason))]
        denial = self._resend_denial(sig, plan, plan.qty)
        if denial is not None:
            return [self._signal_rejected(sig, denial)]
        return self._send_or_queue(sig, plan._replace(hold=None, child_qty=None))

    # --- loss limits ---------------------------------------------------------------------

    def _on_risk_check(self, msg: TimerFired) -> list[Message]:
        """Revalue the aggregates at marks and check the loss limits; re-arm while exposed."""
        now = msg.ts_recv
        self._risk_timer = None
        marks: dict[str, int] = {}
        for name in self._instruments:
            mark = self.mark_price(name)
            if mark is not None:
                marks[name] = mark
        for agg in self._aggregates.values():
            agg.revalue(self._money, marks)
        effects: list[Message] = []
        if self._watch_pnl:
            effects.extend(self._check_pnl(now, None, None))
        exposed = bool(self._open) or any(
            pos.qty for _, pos in self._positions.strategy_positions()
        )
        if exposed:
            timer = self._timer(now, self._risk.check_interval_ns, RISK_CHECK, None)
            self._risk_timer = timer.timer_id
            effects.append(timer)
        return effects

    def _check_pnl(self, now: int, account: str | None, strategy: str | None) -> list[Message]:
        """Halt a scope whose day loss or drawdown passes its limit."""
        scopes: list[tuple[str, str]] = [("firm", "*")]
        if account is not None and strategy is not None:
            scopes += [("account", account), ("strategy", strategy)]
        else:
            seen: dict[tuple[str, str], None] = {}
            for (a, s, _), _ in self._positions.strategy_positions():
                seen[("account", a)] = None
                seen[("strategy", s)] = None
            scopes += list(seen)
        effects: list[Message] = []
        day = now // NS_PER_DAY
        for level, name in scopes:
            loss_limit, loss_src = self._limits.value(level, name, "daily_loss", now)
            dd_limit, dd_src = self._limits.value(level, name, "max_drawdown", now)
            if loss_limit is None and dd_limit is None:
                continue
            scope = _scope_key(level, name)
            pnl = self.pnl(scope)
            start_day, start = self._day.get(scope, (None, 0))
            if start_day != day:
                # The day's baseline is the P&L at its first check (0 for a fresh run).
                start = pnl if start_day is not None else 0
                self._day[scope] = (day, start)
            peak = max(self._peak.get(scope, 0), pnl)
            self._peak[scope] = peak
            if self._states.get(scope) is TradingState.HALTED:
                continue
            breach = None
            if loss_limit is not None and start - pnl > loss_limit:
                breach = (
                    "DAILY_LOSS",
                    f"{_scope_text(scope)} lost {start - pnl} today (P&L {pnl}): above "
                    f"daily_loss {loss_limit} ({loss_src})",
                )
            elif dd_limit is not None and peak - pnl > dd_limit:
                breach = (
                    "DRAWDOWN",
                    f"{_scope_text(scope)} is {peak - pnl} below its peak P&L {peak}: above "
                    f"max_drawdown {dd_limit} ({dd_src})",
                )
            if breach is None:
                continue
            code, text = breach
            effects.append(
                Alert(ts_recv=now, severity=Severity.CRITICAL, code=code, text=text + "; halted")
            )
            effects.extend(self._set_state(scope, TradingState.HALTED, f"automatic: {code}", now))
            if self._risk.loss_flatten:
                effects.extend(self._flatten_scope(scope, now))
        return effects

    # --- connectivity, reference data, reconciliation ------------------------------------

    def _on_venue_connected(self, msg: VenueConnected) -> list[Message]:
        was_down = self._disconnected.pop(msg.venue, None)
        if was_down is None:
            return []
        self._reconciling[msg.venue] = msg.ts_recv
        self._reported[msg.venue] = set()
        timer = self._timer(msg.ts_recv, self._config.ack_timeout_ns, RECON_TIMEOUT, None)
        return [
            RequestReports(
                ts_recv=msg.ts_recv,
                venue=msg.venue,
                reason=f"reconnect after disconnect at ts {was_down.ts_recv} ({was_down.reason})",
            ),
            msgspec.structs.replace(timer, purpose=RECON_TIMEOUT, order_id=msg.venue),
        ]

    def _on_venue_disconnected(self, msg: VenueDisconnected) -> list[Message]:
        self._disconnected.setdefault(msg.venue, msg)
        return []

    def _on_reports_done(self, msg: ReportsDone) -> list[Message]:
        since = self._reconciling.pop(msg.venue, None)
        if since is None:
            return []
        reported = self._reported.pop(msg.venue, set())
        effects: list[Message] = []
        for order in list(self._open.values()):
            if order.venue != msg.venue or order.order_id in reported:
                continue
            unacked = order.status is OrderStatus.PENDING_NEW or (
                order.status is OrderStatus.PENDING_CANCEL
                and order.previous is OrderStatus.PENDING_NEW
            )
            if not unacked:
                continue  # acknowledged once: the venue knows it; a missing report is its gap
            # The venue never received it (lost in the disconnect): safe to close and retry.
            lost = OrderRejected(
                ts_recv=msg.ts_recv,
                order_id=order.order_id,
                venue=msg.venue,
                reason="lost in a disconnect: the venue reports no such order",
                retryable=True,
            )
            effects.extend(self._on_venue_event(lost))
        return [
            *effects,
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.INFO,
                code="RECONCILED",
                text=f"{msg.venue} reconciled after the reconnect at ts {since}: new orders "
                "may go out",
                venue=msg.venue,
            ),
        ]

    def _on_recon_timeout(self, msg: TimerFired) -> list[Message]:
        venue = msg.order_id or ""
        since = self._reconciling.get(venue)
        if since is None:
            return []
        return [
            Alert(
                ts_recv=msg.ts_recv,
                severity=Severity.CRITICAL,
                code="RECON_TIMEOUT",
                text=f"{venue} has not finished its reports since the reconnect at ts {since}: "
                "no new orders go to it",
                venue=venue,
            )
        ]

    def _on_instrument(self, msg: Instrument) -> list[Message]:
        problem = instrument_problem(msg)
        current = self._instruments.get(msg.instrument)
        if problem is None and current is not None and msg.version <= current.version:
            if msg == msgspec.structs.replace(current, ts_recv=msg.ts_recv):
                return []
            problem = (
                f"instrument {msg.instrument}: version {msg.version} is not newer than the "
                f"current version {current.version}"
            )
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
        self._money.set_instrument(msg)
        self._groups.pop(msg.instrument, None)  # sector or country may have changed
        self._resolved.clear()
        return []

    def _on_status_report(self, msg: OrderStatusReport) -> list[Message]:
        reported = self._reported.get(msg.venue)
        if reported is not None and msg.order_id is not None:
            reported.add(msg.order_id)
        order = self._orders.get(msg.order_id) if msg.order_id is not None else None
        if order is None:
            text = (
                f"{msg.venue} reports order order_id={msg.order_id!r} "
                f"venue_order_id={msg.venue_order_id!r} in {msg.status.value}: "
                "unknown to the engine"
            )
            return [self._mismatch(msg, Severity.WARNING, text, msg.order_id)]
        effects: list[Message] = []
        if msg.filled_qty > order.filled_qty and (msg.instrument, msg.side) == (
            order.instrument,
            order.side,
        ):
            effects.extend(self._recover_fill(msg, order))
        if msg.status in _FINAL_EVENT and order.is_open:
            effects.extend(self._close_from_report(msg, order))
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
            return effects
        theirs = ", ".join(f"{name}={value}" for name, value, _ in differ)
        ours = ", ".join(f"{name}={value}" for name, _, value in differ)
        text = (
            f"{msg.venue} reports order {order.order_id} with {theirs}; engine has {ours}: "
            f"instrument {order.instrument} halted until an operator resumes it"
        )
        effects.append(self._mismatch(msg, Severity.CRITICAL, text, order.order_id))
        effects.extend(
            self._set_state(
                f"instrument:{order.instrument}",
                TradingState.HALTED,
                f"reconciliation mismatch on order {order.order_id}",
                msg.ts_recv,
            )
        )
        return effects

    def _recover_fill(self, msg: OrderStatusReport, order: Order) -> list[Message]:
        """Book the fills a venue reports that never reached us (lost while disconnected)."""
        missed = msg.filled_qty - order.filled_qty
        if msg.avg_price is not None:
            value = msg.avg_price * msg.filled_qty - order.fill_value
            price: int | None = (2 * value + missed) // (2 * missed)
        else:
            price = order.price if order.price is not None else self.mark_price(order.instrument)
        if price is None or price <= 0:
            text = (
                f"{msg.venue} reports {missed} more filled on order {order.order_id} but no "
                "price to book it at: reconcile by hand"
            )
            return [self._mismatch(msg, Severity.CRITICAL, text, order.order_id)]
        filled = msg.filled_qty
        event = OrderEvent.FULL_FILL if filled >= order.qty else OrderEvent.PARTIAL_FILL
        leaves = order.leaves_qty
        if (order.status, event) in TRANSITIONS:
            order.apply(event, msg.ts_recv)
        trade_id = f"recon:{order.order_id}:{filled}"
        self._book_fill(order, trade_id, price, missed, 0, msg.ts_recv)
        order.recovered_qty += missed
        self._track(order, missed, order.leaves_qty - leaves, price)
        if order.status in TERMINAL:
            self._forget_open(order)
        signed = missed if order.side is Side.BUY else -missed
        return [
            PositionAdjusted(
                ts_recv=msg.ts_recv,
                account=order.account,
                strategy=order.strategy,
                instrument=order.instrument,
                venue=order.venue,
                qty=signed,
                price=price,
                code="RECOVERED_FILL",
                reason=f"{msg.venue} reports filled_qty {filled} on order {order.order_id}, "
                f"engine had {filled - missed}: booked the missing {missed} at {price}",
                order_id=order.order_id,
            )
        ]

    def _close_from_report(self, msg: OrderStatusReport, order: Order) -> list[Message]:
        """Finish an order the venue reports final while we still think it works."""
        event = _FINAL_EVENT[msg.status]
        leaves = order.leaves_qty
        before = order.status
        if (order.status, event) in TRANSITIONS:
            order.apply(event, msg.ts_recv)
        else:
            order.status = msg.status
        self._track(order, 0, order.leaves_qty - leaves, None)
        self._forget_open(order)
        text = (
            f"order {order.order_id}: engine had {before.value}, {msg.venue} reports "
            f"{msg.status.value}; corrected"
        )
        return [self._info(msg.ts_recv, "RECON_STATUS", text, order)]

    def _on_position_report(self, msg: PositionReport) -> list[Message]:
        ours = self._venue_positions.get((msg.venue, msg.account, msg.instrument), 0)
        diff = msg.qty - ours
        if diff == 0:
            return []
        tolerance = self._risk.recon_tolerance.get(
            msg.instrument, self._risk.recon_tolerance.get("*", 0)
        )
        if abs(diff) <= tolerance:
            price = msg.avg_price or self.mark_price(msg.instrument, msg.venue)
            if price is not None and price > 0:
                return self._adjust_position(msg, diff, price, tolerance)
        text = (
            f"{msg.venue} reports position {msg.qty} in {msg.instrument} for account "
            f"{msg.account}; engine has {ours} through {msg.venue} (difference {diff}, "
            f"tolerance {tolerance}): instrument halted until an operator resumes it"
        )
        return [
            self._mismatch(msg, Severity.CRITICAL, text, None),
            *self._set_state(
                f"instrument:{msg.instrument}",
                TradingState.HALTED,
                f"position mismatch at {msg.venue}",
                msg.ts_recv,
            ),
        ]

    def _adjust_position(
        self, msg: PositionReport, diff: int, price: int, tolerance: int
    ) -> list[Message]:
        side = Side.BUY if diff > 0 else Side.SELL
        self._positions.apply_fill(
            msg.account,
            RECON_STRATEGY,
            msg.instrument,
            side=side,
            qty=abs(diff),
            price=price,
            fee=0,
            multiplier=self._multiplier(msg.instrument),
        )
        key = (msg.venue, msg.account, msg.instrument)
        self._venue_positions[key] = self._venue_positions.get(key, 0) + diff
        self._qtys.apply(msg.account, RECON_STRATEGY, msg.instrument, diff, 0, 0)
        self._apply_aggregates(msg.account, RECON_STRATEGY, msg.instrument, diff, 0, 0, price)
        return [
            PositionAdjusted(
                ts_recv=msg.ts_recv,
                account=msg.account,
                strategy=RECON_STRATEGY,
                instrument=msg.instrument,
                venue=msg.venue,
                qty=diff,
                price=price,
                code="RECON_ADJUST",
                reason=f"{msg.venue} reports {msg.qty}, engine had {msg.qty - diff}: "
                f"difference {diff} within tolerance {tolerance}, booked at {price} to "
                f"strategy {RECON_STRATEGY}",
            )
        ]

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

    def _info(self, now: int, code: str, text: str, order: Order) -> Alert:
        return self._order_alert(now, Severity.INFO, code, text, order)

    def _order_alert(
        self, now: int, severity: Severity, code: str, text: str, order: Order
    ) -> Alert:
        """Return an alert about one order (its id, instrument and venue named)."""
        return Alert(
            ts_recv=now,
            severity=severity,
            code=code,
            text=text,
            order_id=order.order_id,
            instrument=order.instrument,
            venue=order.venue,
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


def _scope_key(level: str, name: str) -> str:
    return "*" if level == "firm" else f"{level}:{name}"


def _scope_text(scope: str) -> str:
    return "the firm" if scope in ("*", "") else scope.replace(":", " ", 1)


def _in_scope(scope: str, account: str, strategy: str, instrument: str) -> bool:
    if scope == "*":
        return True
    level, _, name = scope.partition(":")
    return {"account": account, "strategy": strategy, "instrument": instrument}.get(level) == name


def _has_pnl_limits(cfg: RiskConfig) -> bool:
    sets = [cfg.limits.firm, *cfg.limits.accounts.values(), *cfg.limits.strategies.values()]
    return any(s.daily_loss is not None or s.max_drawdown is not None for s in sets)


def _has_notional(cfg: RiskConfig) -> bool:
    sets = [cfg.limits.firm, *cfg.limits.accounts.values(), *cfg.limits.strategies.values()]
    return any(s.max_net_notional is not None or s.max_gross_notional is not None for s in sets)


def _takes(sig: Signal, plan: _Plan, quote: QuoteTick | None) -> bool:
    """Say whether an order takes liquidity: market and stop orders, or a crossing limit."""
    if sig.order_type in (OrderType.MARKET, OrderType.STOP):
        return True
    if plan.price is None or quote is None:
        return False
    if plan.side is Side.BUY:
        return quote.ask_price is not None and plan.price >= quote.ask_price
    return quote.bid_price is not None and plan.price <= quote.bid_price


def _max_qty_within(side: Side, levels: list[tuple[int, int]], mid: int, max_bps: int) -> int:
    """Return the largest quantity whose estimated impact stays within `max_bps`."""
    qty = 0
    cost = 0
    for price, size in levels:
        through = price - mid if side is Side.BUY else mid - price
        if through * 10_000 > max_bps * mid:
            # Take only as much of this level as keeps the average within the limit.
            room = max_bps * mid * qty - 10_000 * (
                (cost - mid * qty) if side is Side.BUY else (mid * qty - cost)
            )
            per_unit = 10_000 * through - max_bps * mid
            if per_unit > 0 and room > 0:
                qty += min(size, room // per_unit)
            break
        qty += size
        cost += price * size
    return qty


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
