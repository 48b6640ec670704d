"""The pre-trade gauntlet's checks and the state they read (its configuration: engine.config).

Invariants:
- Three stages (DESIGN.md "Risk"): *schema* (the signal's own fields), *business* (reference
  data, venue rules, sessions, limits, rates, idempotency) and *market state* (collar,
  spread, staleness, volatility, liquidity). Each check is a function returning a
  `Denial` (a code naming the check and a reason naming the value and the limit) or None;
  none raises. `Engine._gauntlet` runs them in that order and stops at the first denial.
- Limits form a hierarchy, firm > account > strategy > instrument: an order-level limit
  (max order qty or notional) is the tightest of the values set at the scopes the order
  falls in, and a finer scope can only tighten a coarser one; an aggregate limit (net or
  gross position, exposure, order rate, loss) applies to the aggregate of its own scope.
  An unexpired operator override replaces the configured value at its scope.
- Position limits count working orders at their worst: a scope's long side is its
  position plus every working buy, its short side its position minus every working sell.
  An order passes only if that worst case stays within the limit with the order added, so
  no sequence of fills can take a position plus its working orders past a limit.
- Money (notional limits, exposure, P&L limits) is an int in `money_precision` decimals of
  `base_currency`: price x qty x multiplier converted exactly with integer arithmetic,
  truncated toward zero. Aggregates are kept incrementally; each instrument's term is
  valued at the price seen when its quantities last changed (a fill, an order), and every
  term is revalued at marks on the periodic risk check.
- State here is updated only by the engine, from inputs; nothing reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from engine.config import (
    LIMIT_NAMES,
    LIMITS_AT,
    NS_PER_S,
    QTY_LIMITS,
    BreakerConfig,
    LimitsConfig,
    LimitSet,
    MarketChecks,
    RiskConfig,
    VenueRules,
    limit_not_read_at,
    parse_rate,
)
from engine.instruments import Denial
from engine.messages import (
    Instrument,
    LimitOverride,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SignalIntent,
    TimeInForce,
    TradingState,
)

_STATE_RANK = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
_INT64 = 2**63 - 1


def scope_of(text: str) -> tuple[str, str]:
    """Split an operator scope ("*", "account:A", "X") into (level, name)."""
    if text in ("*", "firm"):
        return "firm", "*"
    level, sep, name = text.partition(":")
    if not sep:
        return "instrument", text
    return level, name


# --- money ------------------------------------------------------------------------------


class Money:
    """Convert price x qty of each instrument into money units of the base currency."""

    __slots__ = ("_factors", "_mults", "_precision", "_rates", "base")

    def __init__(self, cfg: RiskConfig) -> None:
        self.base = cfg.base_currency
        self._precision = cfg.money_precision
        self._rates = {cur: parse_rate(r) for cur, r in cfg.fx_rates.items()}
        self._factors: dict[str, tuple[int, int] | None] = {}
        self._mults: dict[str, int] = {}

    def set_instrument(self, inst: Instrument) -> None:
        """(Re)compute the conversion factor of an instrument."""
        self._mults[inst.instrument] = inst.multiplier
        if inst.currency == self.base:
            rate: tuple[int, int] | None = (1, 1)
        else:
            rate = self._rates.get(inst.currency)
        if rate is None:
            self._factors[inst.instrument] = None
            return
        num = inst.multiplier * rate[0] * 10**self._precision
        den = rate[1] * 10 ** (inst.price_precision + inst.size_precision)
        self._factors[inst.instrument] = (num, den)

    def factor(self, instrument: str) -> tuple[int, int] | None:
        """Return (numerator, denominator) turning price x qty into money, or None."""
        return self._factors.get(instrument)

    def convertible(self, instrument: str) -> bool:
        """Say whether the instrument's currency has a rate to the base currency."""
        return self._factors.get(instrument) is not None

    def of(self, instrument: str, price: int, qty: int) -> int:
        """Return price x qty x multiplier in money units (0 if not convertible)."""
        factor = self._factors.get(instrument)
        if factor is None:
            return 0
        value = price * qty * factor[0]
        return value // factor[1] if value >= 0 else -(-value // factor[1])

    def notional_to_money(self, instrument: str, amount: int) -> int:
        """Convert an amount in notional units (P&L, fees: multiplier included) to money."""
        factor = self._factors.get(instrument)
        if factor is None:
            return 0
        mult = self._mults[instrument]
        value = amount * (factor[0] // mult)
        return value // factor[1] if value >= 0 else -(-value // factor[1])


# --- schema ------------------------------------------------------------------------------


def schema_denial(sig: Signal) -> Denial | None:
    """Check a signal's own fields: ids present, quantities and prices in range."""
    for field, value in (
        ("signal_id", sig.signal_id),
        ("strategy", sig.strategy),
        ("account", sig.account),
        ("instrument", sig.instrument),
    ):
        if not value or value != value.strip():
            return Denial(
                code="schema",
                reason=f"signal {sig.signal_id!r}: {field} must be a non-empty name without "
                f"surrounding spaces, got {value!r}",
            )
    if sig.qty < 0:
        return Denial(
            code="schema", reason=f"signal {sig.signal_id}: qty must be >= 0, got {sig.qty}"
        )
    for field, price in (
        ("price", sig.price),
        ("stop_price", sig.stop_price),
        ("signal_price", sig.signal_price),
    ):
        if price is not None and not 0 < price < _INT64:
            return Denial(
                code="schema",
                reason=f"signal {sig.signal_id}: {field} must be > 0 and fit int64, got {price}",
            )
    if sig.intent is SignalIntent.TARGET and sig.target is not None and abs(sig.target) >= _INT64:
        return Denial(code="schema", reason=f"signal {sig.signal_id}: target out of range")
    return None


# --- venue rules ---------------------------------------------------------------------------


def venue_rules_denial(
    rules: VenueRules | None, venue: str, instrument: str, order_type: OrderType, tif: TimeInForce
) -> Denial | None:
    """Deny an order the venue does not support, or an instrument on its do-not-trade list."""
    if rules is None:
        return None
    if order_type not in rules.order_types:
        supported = ", ".join(t.value for t in rules.order_types)
        return Denial(
            code="order_type_unsupported",
            reason=f"venue {venue} does not take {order_type.value} orders: expected one of "
            f"{supported}",
        )
    if tif not in rules.tifs:
        supported = ", ".join(t.value for t in rules.tifs)
        return Denial(
            code="tif_unsupported",
            reason=f"venue {venue} does not take time in force {tif.value}: expected one of "
            f"{supported}",
        )
    if instrument in rules.do_not_trade:
        return Denial(
            code="do_not_trade",
            reason=f"{instrument} is on the do-not-trade list of venue {venue}",
        )
    return None


# --- market state ----------------------------------------------------------------------------


def mid_of(quote: QuoteTick | None) -> int | None:
    """Return the mid of a two-sided quote, else None."""
    if quote is None or quote.bid_price is None or quote.ask_price is None:
        return None
    return (quote.bid_price + quote.ask_price) // 2


def quote_denial(
    cfg: MarketChecks, quote: QuoteTick | None, instrument: str, venue: str, now: int
) -> Denial | None:
    """Deny on a missing or stale quote, or a spread wider than allowed."""
    mid = mid_of(quote)
    if mid is None or quote is None:
        if cfg.require_quote:
            return Denial(
                code="no_quote",
                reason=f"no two-sided quote for {instrument} on {venue}: the market checks "
                "need one",
            )
        return None
    if cfg.max_quote_age_ns is not None:
        age = now - quote.ts_recv
        if age > cfg.max_quote_age_ns:
            return Denial(
                code="stale_quote",
                reason=f"last quote for {instrument} on {venue} is {age // 1_000_000} ms old: "
                f"max_quote_age {cfg.max_quote_age_ns // 1_000_000} ms",
            )
    if cfg.max_spread_bps is not None and mid > 0:
        assert quote.ask_price is not None and quote.bid_price is not None
        spread_bps = (quote.ask_price - quote.bid_price) * 10_000 // mid
        if spread_bps > cfg.max_spread_bps:
            return Denial(
                code="spread",
                reason=f"spread of {instrument} on {venue} is {spread_bps} bps "
                f"(bid {quote.bid_price} ask {quote.ask_price}): "
                f"max_spread {cfg.max_spread_bps} bps",
            )
    return None


def collar_denial(
    cfg: MarketChecks, side: Side, price: int | None, mid: int | None, instrument: str
) -> Denial | None:
    """Deny a price further through the mid than the collar allows (fat finger)."""
    if cfg.collar_bps is None or price is None or mid is None or mid <= 0:
        return None
    # Only an aggressive price is a fat finger: a buy far above, a sell far below the mid.
    through = price - mid if side is Side.BUY else mid - price
    bps = through * 10_000 // mid
    if bps > cfg.collar_bps:
        return Denial(
            code="price_collar",
            reason=f"{side.value} {instrument} at {price} is {bps} bps through the mid {mid}: "
            f"collar {cfg.collar_bps} bps",
        )
    return None


def impact_bps(side: Side, qty: int, levels: Iterable[tuple[int, int]], mid: int) -> int | None:
    """Estimate the cost of taking `qty` through book levels, in bps of the mid.

    `levels` are (price, size) from the touch outward on the side the order takes. None
    when the book cannot fill the quantity (the impact is unbounded as far as we know).
    """
    left = qty
    cost = 0
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left == 0:
            break
    if left > 0 or mid <= 0:
        return None
    vwap_through = cost - mid * qty if side is Side.BUY else mid * qty - cost
    return vwap_through * 10_000 // (mid * qty)


# --- rolling counters ----------------------------------------------------------------------


class RateWindow:
    """Timestamps of events in a rolling window, per key."""

    __slots__ = ("_events", "window")

    def __init__(self, window_ns: int) -> None:
        self.window = window_ns
        self._events: dict[str, deque[int]] = {}

    def count(self, key: str, now: int) -> int:
        """Return how many events of `key` fall in (now - window, now]."""
        events = self._events.get(key)
        if events is None:
            return 0
        horizon = now - self.window
        while events and events[0] <= horizon:
            events.popleft()
        return len(events)

    def add(self, key: str, now: int) -> None:
        """Record one event of `key` at `now`."""
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        events.append(now)


class StateBoard:
    """Trading states per scope ("*", "account:A", "strategy:S", "instrument:X")."""

    __slots__ = ("_states",)

    def __init__(self) -> None:
        self._states: dict[str, tuple[TradingState, str]] = {}

    def set(self, scope: str, state: TradingState, why: str) -> None:
        """Set a scope's state (ACTIVE removes it)."""
        if state is TradingState.ACTIVE:
            self._states.pop(scope, None)
        else:
            self._states[scope] = (state, why)

    def get(self, scope: str) -> TradingState:
        """Return one scope's own state."""
        entry = self._states.get(scope)
        return TradingState.ACTIVE if entry is None else entry[0]

    def effective(
        self, account: str, strategy: str, instrument: str
    ) -> tuple[TradingState, str, str]:
        """Return the strictest state over the scopes an order falls in, its scope and why."""
        if not self._states:
            return TradingState.ACTIVE, "", ""
        best = (TradingState.ACTIVE, "", "")
        for scope in (
            "*",
            f"account:{account}",
            f"strategy:{strategy}",
            f"instrument:{instrument}",
        ):
            entry = self._states.get(scope)
            if entry is not None and _STATE_RANK[entry[0]] > _STATE_RANK[best[0]]:
                best = (entry[0], scope, entry[1])
        return best

    def items(self) -> list[tuple[str, TradingState, str]]:
        """Return every scope not ACTIVE, sorted by scope."""
        return [(scope, s, why) for scope, (s, why) in sorted(self._states.items())]


# --- limits with overrides -----------------------------------------------------------------


class Limits:
    """Resolve a limit at a scope: an unexpired override, else the configured value."""

    __slots__ = ("_cfg", "_overrides", "_sets", "version")

    def __init__(self, cfg: LimitsConfig) -> None:
        self._cfg = cfg
        self._overrides: dict[tuple[str, str, str], LimitOverride] = {}
        self._sets: dict[tuple[str, str], LimitSet] = {("firm", "*"): cfg.firm}
        for level, table in (
            ("account", cfg.accounts),
            ("strategy", cfg.strategies),
            ("instrument", cfg.instruments),
            ("venue", cfg.venues),
        ):
            for name, limits in table.items():
                self._sets[level, name] = limits
        self.version = 0  # counts overrides: a cache of resolved values keys on it

    @property
    def config(self) -> LimitsConfig:
        """Return the configured limits."""
        return self._cfg

    def configured(self, level: str, name: str) -> LimitSet | None:
        """Return the configured limits of one scope."""
        return self._sets.get((level, "*" if level == "firm" else name))

    def override(self, msg: LimitOverride) -> str | None:
        """Record an operator override; return why it cannot apply, or None."""
        level, name = scope_of(msg.scope)
        if level not in ("firm", "account", "strategy", "instrument", "venue"):
            return (
                f"scope {msg.scope!r}: expected '*', 'account:A', 'strategy:S', "
                "'instrument:X' or 'venue:V'"
            )
        if msg.limit not in LIMIT_NAMES:
            return f"limit {msg.limit!r} unknown, expected one of {', '.join(LIMIT_NAMES)}"
        if msg.limit in QTY_LIMITS and level not in ("instrument", "firm"):
            return f"limit {msg.limit} is in size units: expected an instrument scope or '*'"
        if msg.limit not in LIMITS_AT[level]:
            return limit_not_read_at(level, msg.limit)
        if msg.value < 0:
            return f"value must be >= 0, got {msg.value}"
        self._overrides[level, name, msg.limit] = msg
        self.version += 1
        return None

    def value(self, level: str, name: str, limit: str, now: int) -> tuple[int | None, str]:
        """Return the limit at one scope and where it comes from ("config", "override by X")."""
        if self._overrides:
            override = self._overrides.get((level, name, limit))
            if override is not None and (override.expires_at is None or now < override.expires_at):
                return override.value, f"override by {override.operator}"
        configured = self._sets.get((level, "*" if level == "firm" else name))
        if configured is None:
            return None, "config"
        return getattr(configured, limit), "config"

    def has_overrides(self) -> bool:
        """Say whether any override was ever recorded (cached resolutions stay exact if not)."""
        return bool(self._overrides)

    def overrides(self) -> list[LimitOverride]:
        """Return every override ever recorded (the latest per scope and limit)."""
        return [self._overrides[k] for k in sorted(self._overrides)]


# --- worst-case exposure ----------------------------------------------------------------------


class _Term:
    """One instrument inside one aggregate: quantities and its valued contribution."""

    __slots__ = ("gross", "long", "pos", "price", "short", "wb", "ws")

    def __init__(self) -> None:
        self.pos = 0
        self.wb = 0  # working buys
        self.ws = 0  # working sells
        self.price = 0
        self.long = 0  # money of pos + wb
        self.short = 0  # money of pos - ws
        self.gross = 0  # money of max(|pos + wb|, |pos - ws|)


class Aggregate:
    """Worst-case long, short and gross money of one scope, kept incrementally."""

    __slots__ = ("gross", "long", "short", "terms")

    def __init__(self) -> None:
        self.terms: dict[str, _Term] = {}
        self.long = 0
        self.short = 0
        self.gross = 0

    def apply(
        self, money: Money, instrument: str, dpos: int, dwb: int, dws: int, price: int
    ) -> None:
        """Change one instrument's quantities and revalue its term at `price`."""
        term = self.terms.get(instrument)
        if term is None:
            term = self.terms[instrument] = _Term()
        term.pos += dpos
        term.wb += dwb
        term.ws += dws
        self._revalue(money, instrument, term, price)

    def _revalue(self, money: Money, instrument: str, term: _Term, price: int) -> None:
        factor = money.factor(instrument)
        if factor is None:
            long = short = 0
        else:  # money.of twice, inline (the hot path of every order and fill)
            num, den = factor
            value = price * (term.pos + term.wb) * num
            long = value // den if value >= 0 else -(-value // den)
            value = price * (term.pos - term.ws) * num
            short = value // den if value >= 0 else -(-value // den)
        gross = max(abs(long), abs(short))
        self.long += long - term.long
        self.short += short - term.short
        self.gross += gross - term.gross
        term.long, term.short, term.gross, term.price = long, short, gross, price

    def revalue(self, money: Money, marks: dict[str, int]) -> None:
        """Revalue every term whose instrument has a mark."""
        for instrument, term in self.terms.items():
            price = marks.get(instrument)
            if price is not None and price != term.price:
                self._revalue(money, instrument, term, price)

    def with_order(
        self, money: Money, instrument: str, side: Side, qty: int, price: int
    ) -> tuple[int, int, int]:
        """Return (long, short, gross) money if an order of `qty` were added."""
        term = self.terms.get(instrument)
        if term is None:
            pos = wb = ws = old_l = old_s = old_g = 0
        else:
            pos, wb, ws = term.pos, term.wb, term.ws
            old_l, old_s, old_g = term.long, term.short, term.gross
        if side is Side.BUY:
            wb += qty
        else:
            ws += qty
        factor = money.factor(instrument)
        if factor is None:
            long = short = 0
        else:
            num, den = factor
            unit = price * num  # the order is checked in the hot path: one lookup, no calls
            value = unit * (pos + wb)
            long = value // den if value >= 0 else -(-value // den)
            value = unit * (pos - ws)
            short = value // den if value >= 0 else -(-value // den)
        gross = max(abs(long), abs(short))
        return self.long + long - old_l, self.short + short - old_s, self.gross + gross - old_g


class QtyBook:
    """Per (account, instrument): net and per-strategy quantities with working orders."""

    __slots__ = ("_net", "_strategy")

    def __init__(self) -> None:
        self._net: dict[tuple[str, str], list[int]] = {}  # pos, wb, ws
        self._strategy: dict[tuple[str, str], dict[str, list[int]]] = {}

    def apply(
        self, account: str, strategy: str, instrument: str, dpos: int, dwb: int, dws: int
    ) -> None:
        """Change the quantities of one (account, strategy, instrument)."""
        key = (account, instrument)
        net = self._net.get(key)
        if net is None:
            net = self._net[key] = [0, 0, 0]
        net[0] += dpos
        net[1] += dwb
        net[2] += dws
        by_strategy = self._strategy.get(key)
        if by_strategy is None:
            by_strategy = self._strategy[key] = {}
        triple = by_strategy.get(strategy)
        if triple is None:
            triple = by_strategy[strategy] = [0, 0, 0]
        triple[0] += dpos
        triple[1] += dwb
        triple[2] += dws

    def net_worst(self, account: str, instrument: str, side: Side, qty: int) -> int:
        """Return the account's worst |net| in the instrument with the order added."""
        pos, wb, ws = self._net.get((account, instrument), (0, 0, 0))
        if side is Side.BUY:
            wb += qty
        else:
            ws += qty
        return max(abs(pos + wb), abs(pos - ws))

    def gross_worst(
        self, account: str, strategy: str, instrument: str, side: Side, qty: int
    ) -> int:
        """Return the sum over strategies of worst |position| with the order added."""
        total = 0
        found = False
        for name, (pos, wb, ws) in self._strategy.get((account, instrument), {}).items():
            if name == strategy:
                found = True
                if side is Side.BUY:
                    wb += qty
                else:
                    ws += qty
            total += max(abs(pos + wb), abs(pos - ws))
        if not found:
            total += qty
        return total

    def net(self, account: str, instrument: str) -> tuple[int, int, int]:
        """Return (position, working buys, working sells) of an account in an instrument."""
        pos, wb, ws = self._net.get((account, instrument), (0, 0, 0))
        return pos, wb, ws

    def keys(self) -> list[tuple[str, str]]:
        """Return every (account, instrument) seen, in first-seen order."""
        return list(self._net)


def state_rank(state: TradingState) -> int:
    """Return how strict a trading state is (ACTIVE 0, REDUCING 1, HALTED 2)."""
    return _STATE_RANK[state]


# --- circuit breaker ---------------------------------------------------------------------------


class Breaker:
    """One venue's circuit breaker: orders sent and errors in a rolling window.

    Closed, it counts; when errors / orders in the window reach the threshold (with at
    least `min_events` orders) it opens: new orders to the venue wait in `queue` until a
    check after the cooldown finds the rate back under the threshold.
    """

    __slots__ = ("_cfg", "_errors", "_sent", "open_since", "queue", "timer_id")

    def __init__(self, cfg: BreakerConfig) -> None:
        self._cfg = cfg
        self._sent: deque[int] = deque()
        self._errors: deque[int] = deque()
        self.open_since: int | None = None
        self.queue: list[tuple[int, Signal]] = []  # (queued at, signal), in arrival order
        self.timer_id: str | None = None

    def _trim(self, now: int) -> None:
        horizon = now - self._cfg.window_ns
        for events in (self._sent, self._errors):
            while events and events[0] <= horizon:
                events.popleft()

    def record_sent(self, now: int) -> None:
        """Count an order sent to the venue."""
        self._sent.append(now)

    def record_error(self, now: int) -> bool:
        """Count a reject or a missing ack; return True if this opens the breaker."""
        self._errors.append(now)
        if self.open_since is not None:
            return False
        if self.tripped(now):
            self.open_since = now
            return True
        return False

    def tripped(self, now: int) -> bool:
        """Say whether the error rate in the window is at or over the threshold."""
        self._trim(now)
        sent = len(self._sent)
        if sent < self._cfg.min_events:
            return False
        return len(self._errors) * 10_000 >= self._cfg.threshold_bps * sent

    def rate_text(self, now: int) -> str:
        """Describe the window's counts, e.g. "3 errors / 40 orders (7.50%)"."""
        self._trim(now)
        sent, errors = len(self._sent), len(self._errors)
        pct = 100.0 * errors / sent if sent else 0.0
        window_s = self._cfg.window_ns // NS_PER_S
        return f"{errors} errors / {sent} orders ({pct:.2f}%) in the last {window_s} s"
