"""Hypothesis properties of the risk defences over random input sequences.

A sequence mixes signals (buys, sells, targets, cancels; several accounts, strategies and
instruments; market and limit), venue events for the engine's own open orders (acks,
partial and full fills, cancels, rejects, answers to its cancel and replace requests),
quotes, operator commands and the timers the engine scheduled (the earliest, or the
earliest of a drawn purpose: a loaded runner delivers timers late). Fills never exceed an
order's leaves: an overfill is a venue contradiction the engine books and alerts on,
outside these properties; so is a fill after an order is final (a trade that raced our
cancel: no pre-trade check can prevent it).

- (a) no (account, instrument) net or gross position plus working orders ever passes its
  limit, checked after every input from the engine's own orders and positions;
- (b) between a firm-wide KillSwitch HALTED and a Resume nothing new leaves the engine (no
  SubmitOrder, no ReplaceOrder): trading, then one or two halts with the venue answering
  (refusing some of the halt's cancels), timers firing and signals arriving, then more;
- (c) with retries off, one signal id never yields more than one SubmitOrder, however
  often it is sent, queued behind a breaker or held for review;
- (d) the incremental worst-case aggregates (money, per scope and exposure group) and the
  quantity books equal a recomputation from the orders and positions, with position
  reports booked within tolerance among the inputs.

Run against the engine before 2b15341, (b) finds the ReplaceOrder the chase policy sent
while halted after a refused cancel, and (d) the reconciliation adjustments missing from
the exposure groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import (
    BreakerConfig,
    EngineConfig,
    LifecycleConfig,
    LimitsConfig,
    LimitSet,
    MarketChecks,
    RiskConfig,
)
from engine.core import Engine
from engine.messages import (
    AssetClass,
    CancelRejected,
    Instrument,
    KillSwitch,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderStatus,
    OrderType,
    PositionReport,
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    Resume,
    ReviewDecision,
    ScheduleTimer,
    Side,
    Signal,
    SignalIntent,
    SubmitOrder,
    TimerFired,
)
from engine.orders import PENDING_REQUEST, Order

NS = 1_000_000_000
T0 = 10 * NS
# 150 examples each (about a second apiece here), more under a deeper profile.
EXAMPLES = max(150, settings.default.max_examples)


def _inst(name: str, venues: tuple[str, ...], **kw: Any) -> Instrument:
    return Instrument(
        instrument=name,
        asset_class=kw.pop("asset_class", AssetClass.CRYPTO),
        currency="USD",
        price_precision=2,
        size_precision=0,
        venue_symbols={v: name for v in venues},
        **kw,
    )


INSTRUMENTS = (
    _inst("BTC", ("V1", "V2")),
    _inst("ETH", ("V1",)),
    _inst("AAPL", ("V2",), asset_class=AssetClass.EQUITY, sector="tech", country="US"),
)
NAMES = tuple(i.instrument for i in INSTRUMENTS)
ACCOUNTS = ("A", "B")
STRATEGIES = ("s1", "s2", "s3")
MID = {"BTC": 100_00, "ETH": 50_00, "AAPL": 200_00}

# Qty limits: the instrument's own, tightened by the firm default.
NET = {"BTC": 20, "ETH": 25, "AAPL": 25}
GROSS = {"BTC": 30, "ETH": 40, "AAPL": 40}
LIMITS = LimitsConfig(
    firm=LimitSet(max_net_qty=25, max_gross_qty=40, max_gross_notional=20_000_000),
    accounts={"A": LimitSet(max_net_notional=5_000_000)},
    strategies={"s2": LimitSet(max_gross_notional=3_000_000)},
    instruments={"BTC": LimitSet(max_net_qty=20, max_gross_qty=30)},
    exposure={"portfolio": 12_000_000, "asset_class:CRYPTO": 8_000_000, "sector:tech": 6_000_000},
)


# --- inputs ---------------------------------------------------------------------------------

signal_action = st.tuples(
    st.just("signal"),
    st.integers(0, 30),  # signal id (a small pool makes duplicates)
    st.sampled_from(ACCOUNTS),
    st.sampled_from(STRATEGIES),
    st.sampled_from(NAMES),
    st.sampled_from([Side.BUY, Side.SELL]),
    st.integers(1, 26),  # qty
    st.sampled_from(["market", "limit", "limit", "target"]),
    st.integers(-300, 300),  # price offset from the mid (limit) or the target (target)
)
# "next" fires the earliest pending timer but the periodic risk check; a purpose fires the
# earliest of that purpose (the ones due before it then fire late, as under a loaded runner).
TIMER_KINDS = (
    "next",
    "next",
    "retry",
    "slice",
    "breaker",
    "partial_timeout",
    "chase",
    "risk_check",
)
VENUE_KINDS = ("ack", "fill", "fill", "fill", "cancel", "reject", "reject", "refuse", "replaced")
venue_action = st.tuples(
    st.sampled_from(VENUE_KINDS),
    st.integers(0, 50),  # which open order
    st.integers(1, 26),  # fill qty, capped at the order's leaves
    st.booleans(),  # retryable (reject)
)
ACTIONS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "signal": signal_action,
    "venue": venue_action,
    "timer": st.tuples(st.just("timer"), st.sampled_from(TIMER_KINDS)),
    "quote": st.tuples(st.just("quote"), st.sampled_from(NAMES), st.integers(-500, 500)),
    "wait": st.tuples(st.just("wait"), st.integers(1, 3 * NS)),
    "cancel_signal": st.tuples(st.just("cancel_signal"), st.integers(0, 50)),
    "review": st.tuples(st.just("review"), st.integers(0, 50), st.booleans()),
    "operator": st.tuples(st.sampled_from(["kill", "resume"])),
    "refuse": st.tuples(st.just("refuse"), st.integers(0, 50), st.just(1), st.just(False)),
    "position_report": st.tuples(
        st.just("position_report"),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(NAMES),
        st.integers(-4, 4),  # the venue's position minus ours
    ),
}
# How often each kind of action comes (relative weights).
MIX = {"signal": 6, "venue": 6, "timer": 3, "quote": 2, "wait": 1, "cancel_signal": 1, "review": 2}


def mixed(weights: dict[str, int]) -> st.SearchStrategy[tuple[Any, ...]]:
    """Draw one action, its kind picked with the given relative weights."""
    kinds = [kind for kind, weight in weights.items() for _ in range(weight)]
    return st.sampled_from(kinds).flatmap(ACTIONS.__getitem__)


def actions(
    operator: bool = False, reports: bool = False, size: tuple[int, int] = (20, 80)
) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """Draw `size` (20 to 80) actions: signals, venue events, timers and market data, mixed.

    `operator` adds kill switches and resumes, `reports` venue position reports.
    """
    weights = dict(MIX)
    if operator:
        weights["operator"] = 2
    if reports:
        weights["position_report"] = 2
    return st.lists(mixed(weights), min_size=size[0], max_size=size[1])


@st.composite
def halt_phases(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Draw trading, then a firm halt with activity under it, a resume, and more of both.

    The first phase builds working orders, partial fills and armed timers; under the halt
    the venue answers the halt's cancels (some refused), timers fire, signals come.
    """
    drawn = draw(actions(size=(10, 50)))
    halted = mixed({"refuse": 3, "venue": 3, "timer": 4, "signal": 2, "quote": 1, "review": 1})
    for _ in range(draw(st.integers(1, 2))):
        under = draw(st.lists(halted, min_size=5, max_size=40))
        drawn += [("kill",), *under, ("resume",)]
    return drawn + draw(actions(operator=True, size=(0, 30)))


class Driver:
    """Turn drawn actions into inputs against the engine's state; fire timers in time order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.now = T0
        self.timers: list[ScheduleTimer] = []
        self.trade = 0
        self.replaces: dict[str, ReplaceOrder] = {}
        self.log: list[tuple[Message, list[Message]]] = []
        for name in NAMES:
            self.send(self._quote(name, 0))

    def send(self, msg: Message) -> list[Message]:
        effects = self.engine.handle(msg)
        for effect in effects:
            if isinstance(effect, ScheduleTimer):
                self.timers.append(effect)
            elif isinstance(effect, ReplaceOrder):
                self.replaces[effect.order_id] = effect
        self.log.append((msg, effects))
        return effects

    def _quote(self, name: str, offset: int) -> QuoteTick:
        mid = MID[name] + offset
        return QuoteTick(
            ts_recv=self.now,
            instrument=name,
            venue=next(iter(INSTRUMENTS[NAMES.index(name)].venue_symbols)),
            bid_price=mid - 5,
            bid_size=50,
            ask_price=mid + 5,
            ask_size=50,
        )

    def _open(self, pick: int) -> Order | None:
        open_orders = [o for o in self.engine.orders.values() if o.is_open]
        return open_orders[pick % len(open_orders)] if open_orders else None

    def step(self, action: tuple[Any, ...]) -> Message | None:
        """Build the input for one action, hand it to the engine; None if it has no input."""
        self.now += 1
        kind = action[0]
        msg: Message | None = None
        if kind == "signal":
            msg = self._signal(action)
        elif kind in VENUE_KINDS:
            msg = self._venue(action)
        elif kind == "quote":
            msg = self._quote(action[1], action[2])
        elif kind == "wait":
            self.now += action[1]
        elif kind == "timer":
            purpose = action[1]
            if purpose == "next":
                msg = self._next_timer(lambda t: t.purpose != "risk_check")
            else:
                msg = self._next_timer(lambda t: t.purpose == purpose)
        elif kind == "cancel_signal":
            msg = self._cancel_signal(action[1])
        elif kind == "position_report":
            _, account, name, diff = action
            venue = next(iter(INSTRUMENTS[NAMES.index(name)].venue_symbols))
            held = self.engine.venue_position(venue, account, name)
            msg = PositionReport(
                ts_recv=self.now, venue=venue, account=account, instrument=name, qty=held + diff
            )
        elif kind == "review":
            held = self.engine.held_signals()
            if held:
                msg = ReviewDecision(
                    ts_recv=self.now,
                    operator="ann",
                    signal_id=held[action[1] % len(held)],
                    approve=action[2],
                    reason="checked",
                )
        elif kind == "kill":
            msg = KillSwitch(ts_recv=self.now, operator="ann", reason="test")
        elif kind == "resume":
            msg = Resume(ts_recv=self.now, operator="ann", reason="test")
        if msg is not None:
            self.send(msg)
        return msg

    def _signal(self, action: tuple[Any, ...]) -> Signal:
        _, n, account, strategy, name, side, qty, how, offset = action
        fields: dict[str, Any] = {
            "ts_recv": self.now,
            "signal_id": f"sig-{n}",
            "strategy": strategy,
            "account": account,
            "instrument": name,
        }
        if how == "target":
            return Signal(**fields, intent=SignalIntent.TARGET, target=offset // 15)
        if how == "limit":
            return Signal(
                **fields,
                side=side,
                qty=qty,
                order_type=OrderType.LIMIT,
                price=MID[name] + offset,
            )
        return Signal(**fields, side=side, qty=qty, signal_price=MID[name])

    def _venue(self, action: tuple[Any, ...]) -> Message | None:
        kind, pick, qty, retryable = action
        if kind in ("refuse", "replaced"):
            return self._answer(kind, pick)
        order = self._open(pick)
        if order is None:
            return None
        base = {"ts_recv": self.now, "order_id": order.order_id, "venue": order.venue}
        if kind == "ack":
            return OrderAccepted(**base)
        if kind == "cancel":
            return OrderCanceled(**base)
        if kind == "reject":
            return OrderRejected(**base, reason="venue busy", retryable=retryable)
        leaves = order.leaves_qty
        if leaves <= 0:
            return None
        self.trade += 1
        price = order.price if order.price is not None else MID[order.instrument]
        return OrderFilled(**base, trade_id=f"t{self.trade}", price=price, qty=min(qty, leaves))

    def _answer(self, kind: str, pick: int) -> Message | None:
        """Answer a pending cancel (refused) or replace (refused or done) of an open order."""
        pending = [o for o in self.engine.orders.values() if o.status in PENDING_REQUEST]
        if not pending:
            return None
        order = pending[pick % len(pending)]
        base = {"ts_recv": self.now, "order_id": order.order_id, "venue": order.venue}
        if order.status is OrderStatus.PENDING_CANCEL:
            return CancelRejected(**base, reason="too late")
        if kind == "refuse":
            return ReplaceRejected(**base, reason="no")
        asked = self.replaces.get(order.order_id)
        return OrderReplaced(**base, qty=order.qty, price=None if asked is None else asked.price)

    def _next_timer(self, wanted: Callable[[ScheduleTimer], bool]) -> TimerFired | None:
        """Fire the earliest pending timer of a kind (the periodic risk check apart)."""
        pending = sorted((t for t in self.timers if wanted(t)), key=lambda t: t.fire_at)
        if not pending:
            return None
        due = pending[0]
        self.timers.remove(due)
        self.now = max(self.now, due.fire_at)
        return TimerFired(
            ts_recv=self.now, timer_id=due.timer_id, purpose=due.purpose, order_id=due.order_id
        )

    def _cancel_signal(self, pick: int) -> Signal | None:
        order = self._open(pick)
        if order is None or order.signal_id is None:
            return None
        return Signal(
            ts_recv=self.now,
            signal_id=f"cancel-{self.now}",
            strategy=order.strategy,
            account=order.account,
            instrument=order.instrument,
            intent=SignalIntent.CANCEL,
            cancels=order.signal_id,
        )


def run(
    engine: Engine, drawn: list[tuple[Any, ...]], check: Callable[[Driver, Message], None]
) -> Driver:
    driver = Driver(engine)
    for action in drawn:
        msg = driver.step(action)
        if msg is not None:
            check(driver, msg)
    return driver


def engine_with(risk: RiskConfig) -> Engine:
    return Engine(EngineConfig(run_id="p", instruments=INSTRUMENTS, risk=risk))


# --- (a) positions plus working orders stay within limits -----------------------------------------


def _worst(pos: int, buys: int, sells: int) -> int:
    return max(abs(pos + buys), abs(pos - sells))


def check_position_limits(driver: Driver, msg: Message) -> None:
    """Recompute every (account, instrument) from orders and positions; compare with limits."""
    engine = driver.engine
    qty: dict[tuple[str, str, str], list[int]] = {}
    for (account, strategy, name), position in engine.positions.strategy_positions():
        qty.setdefault((account, name, strategy), [0, 0, 0])[0] += position.qty
    for order in engine.orders.values():
        if order.is_open:
            row = qty.setdefault((order.account, order.instrument, order.strategy), [0, 0, 0])
            row[1 if order.side is Side.BUY else 2] += order.leaves_qty
    net: dict[tuple[str, str], list[int]] = {}
    gross: Counter[tuple[str, str]] = Counter()
    for (account, name, _), (pos, buys, sells) in qty.items():
        total = net.setdefault((account, name), [0, 0, 0])
        total[0] += pos
        total[1] += buys
        total[2] += sells
        gross[account, name] += _worst(pos, buys, sells)
    for (account, name), (pos, buys, sells) in net.items():
        worst = _worst(pos, buys, sells)
        assert worst <= NET[name], (msg, account, name, pos, buys, sells)
        assert gross[account, name] <= GROSS[name], (msg, account, name, gross[account, name])


POSITION_RISK = RiskConfig(
    limits=LIMITS,
    lifecycle=LifecycleConfig(max_retries=2, partial_fill="chase", chase_interval_ns=NS),
    market=MarketChecks(
        adv={"BTC": 2_000}, max_adv_participation_bps=50, slice_interval_ns=NS
    ),  # BTC orders above 10 go in slices
    breaker=BreakerConfig(min_events=3, threshold_bps=3_000, cooldown_ns=2 * NS),
)


@settings(max_examples=EXAMPLES)
@given(actions())
def test_limits_when_random_inputs_then_position_plus_working_never_exceeds_limits(
    drawn: list[tuple[Any, ...]],
) -> None:
    run(engine_with(POSITION_RISK), drawn, check_position_limits)


# --- (b) nothing new leaves while the firm is halted -----------------------------------------


HALT_RISK = RiskConfig(
    limits=LIMITS,
    lifecycle=LifecycleConfig(
        max_retries=3, partial_fill="chase", chase_interval_ns=NS // 2, stale_order_ns=NS
    ),
    market=MarketChecks(
        adv={"BTC": 2_000}, max_adv_participation_bps=50, slice_interval_ns=NS
    ),  # BTC orders above 10 go in slices
    breaker=BreakerConfig(min_events=2, threshold_bps=3_000, cooldown_ns=2 * NS),
)
HALT_HOLD_RISK = msgspec.structs.replace(
    HALT_RISK,
    lifecycle=LifecycleConfig(max_retries=3, partial_fill="cancel_after", stale_order_ns=NS),
    market=MarketChecks(adv={"BTC": 2_000}, max_adv_participation_bps=50, liquidity_action="hold"),
)


@pytest.mark.parametrize(
    "risk", [HALT_RISK, HALT_HOLD_RISK], ids=["slices_and_chase", "holds_and_cancel_after"]
)
@settings(max_examples=EXAMPLES)
@given(drawn=halt_phases())
def test_kill_switch_when_firm_halted_then_nothing_sent_until_resume(
    risk: RiskConfig, drawn: list[tuple[Any, ...]]
) -> None:
    halted = False

    def check(driver: Driver, msg: Message) -> None:
        nonlocal halted
        effects = driver.log[-1][1]
        if isinstance(msg, KillSwitch):
            halted = True
        if halted:
            new = [e for e in effects if isinstance(e, SubmitOrder | ReplaceOrder)]
            assert new == [], (msg, new)
        if isinstance(msg, Resume):
            halted = False
        assert driver.engine.halted is halted

    run(engine_with(risk), drawn, check)


# --- (c) a signal id never sends twice ---------------------------------------------------------


IDEMPOTENT_RISK = RiskConfig(
    limits=LIMITS,
    lifecycle=LifecycleConfig(max_retries=0),
    market=MarketChecks(
        adv={"BTC": 2_400, "ETH": 2_400, "AAPL": 2_400},
        max_adv_participation_bps=50,
        liquidity_action="hold",
    ),  # orders above 12 wait for a review
    breaker=BreakerConfig(min_events=2, threshold_bps=3_000, cooldown_ns=2 * NS),
)


@settings(max_examples=EXAMPLES)
@given(actions())
def test_idempotency_when_signal_ids_repeat_then_at_most_one_submit_each(
    drawn: list[tuple[Any, ...]],
) -> None:
    submits: Counter[str] = Counter()

    def check(driver: Driver, msg: Message) -> None:
        for effect in driver.log[-1][1]:
            if isinstance(effect, SubmitOrder) and effect.signal_id is not None:
                submits[effect.signal_id] += 1
                assert submits[effect.signal_id] <= 1, (msg, effect)

    run(engine_with(IDEMPOTENT_RISK), drawn, check)


# --- (d) incremental aggregates equal a recomputation ----------------------------------------


def _scopes_of(account: str, strategy: str, inst: Instrument) -> list[str]:
    scopes = ["*", f"account:{account}", f"strategy:{strategy}"]
    for group in LIMITS.exposure:
        kind, _, value = group.partition(":")
        have = {"asset_class": inst.asset_class.value, "sector": inst.sector}.get(kind)
        if have == value:
            scopes.append(group)
    return scopes


def check_aggregates(driver: Driver, msg: Message) -> None:
    """Recompute each scope's per-instrument quantities and money totals from scratch."""
    engine = driver.engine
    expected: dict[str, dict[str, list[int]]] = {}

    def add(account: str, strategy: str, name: str, index: int, amount: int) -> None:
        inst = engine.instruments[name]
        for scope in _scopes_of(account, strategy, inst):
            row = expected.setdefault(scope, {}).setdefault(name, [0, 0, 0])
            row[index] += amount

    for (account, strategy, name), position in engine.positions.strategy_positions():
        add(account, strategy, name, 0, position.qty)
    for order in engine.orders.values():
        if order.is_open:
            side = 1 if order.side is Side.BUY else 2
            add(order.account, order.strategy, order.instrument, side, order.leaves_qty)
    money = engine.money
    aggregates = engine.aggregates()
    for scope, agg in aggregates.items():
        got = {
            name: [t.pos, t.wb, t.ws]
            for name, t in agg.terms.items()
            if (t.pos, t.wb, t.ws) != (0, 0, 0)
        }
        want = {name: row for name, row in expected.get(scope, {}).items() if row != [0, 0, 0]}
        assert got == want, (msg, scope)
        long = short = gross = 0
        for name, term in agg.terms.items():
            up = money.of(name, term.price, term.pos + term.wb)
            down = money.of(name, term.price, term.pos - term.ws)
            long, short, gross = long + up, short + down, gross + max(abs(up), abs(down))
        assert (agg.long, agg.short, agg.gross) == (long, short, gross), (msg, scope)
    assert set(expected) <= set(aggregates), (msg, sorted(set(expected) - set(aggregates)))
    for account, name in engine.account_instruments():
        pos, buys, sells = expected.get(f"account:{account}", {}).get(name, [0, 0, 0])
        assert engine.account_qty(account, name) == (pos, buys, sells), (msg, account, name)


AGGREGATE_RISK = RiskConfig(
    limits=LIMITS,
    lifecycle=LifecycleConfig(max_retries=2, partial_fill="cancel_after"),
    market=MarketChecks(adv={"BTC": 2_000}, max_adv_participation_bps=50, slice_interval_ns=NS),
    check_interval_ns=NS,
    recon_tolerance={"*": 3},  # reports 1-3 off are booked to _recon, 4 off halt
)


@settings(max_examples=EXAMPLES)
@given(actions(reports=True))
def test_aggregates_when_random_inputs_then_equal_recomputation(
    drawn: list[tuple[Any, ...]],
) -> None:
    run(engine_with(AGGREGATE_RISK), drawn, check_aggregates)
