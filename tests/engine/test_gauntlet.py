"""The engine's risk defences end to end: every gauntlet check's denial with its reason text,
the limit hierarchy and overrides, trading states and the kill switch, loss halts, the circuit
breaker, lifecycle policies, reconciliation and multi-account limits.

Each test drives `Engine.handle` with inputs only (signals, venue events, quotes, operator
commands, and the `TimerFired` a runner would hand back for each `ScheduleTimer`).
Tests named "regression" below first showed a bug (fixed in 2b15341): the portfolio
limit, market orders valued without a quote, max_order_qty overrides, retries and slices
past an open breaker, CANCEL signals and pending retries, rejects of orders being
canceled, chasing while halted or disconnected, reconciliation and exposure groups.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from engine.config import (
    BreakerConfig,
    EngineConfig,
    LifecycleConfig,
    LimitsConfig,
    LimitSet,
    MarketChecks,
    RiskConfig,
    VenueRules,
)
from engine.core import Engine
from engine.messages import (
    Alert,
    AssetClass,
    BookDelta,
    CancelOrder,
    CancelRejected,
    Instrument,
    KillSwitch,
    LimitOverride,
    Message,
    OrderAccepted,
    OrderCanceled,
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
    TradingState,
    VenueConnected,
    VenueDisconnected,
)
from engine.orders import Order

S = OrderStatus
NS = 1_000_000_000
MS = 1_000_000
T0 = 10 * NS


def _inst(name: str, asset_class: AssetClass, venues: tuple[str, ...], **kw: Any) -> Instrument:
    fields: dict[str, Any] = {
        "instrument": name,
        "asset_class": asset_class,
        "currency": "USD",
        "price_precision": 2,  # with size precision 0, money (cents) = price x qty
        "size_precision": 0,
        "venue_symbols": {v: name for v in venues},
    }
    fields.update(kw)
    return Instrument(**fields)


BTC = _inst("BTC", AssetClass.CRYPTO, ("V1", "V2"))
ETH = _inst("ETH", AssetClass.CRYPTO, ("V1",))
AAPL = _inst("AAPL", AssetClass.EQUITY, ("NYSE",), sector="tech", country="US")
XOM = _inst("XOM", AssetClass.EQUITY, ("NYSE",), sector="energy", country="US")
SAP = _inst("SAP", AssetClass.EQUITY, ("XETRA",), currency="EUR", sector="tech", country="DE")
ES = _inst("ES", AssetClass.FUTURE, ("CME",), multiplier=50)
LOTS = _inst("LOTS", AssetClass.CRYPTO, ("V1",), lot_size=10, min_qty=20, min_notional=500_00)
INSTRUMENTS = (BTC, ETH, AAPL, XOM, SAP, ES, LOTS)


def make_engine(risk: RiskConfig | None = None, **kw: Any) -> Engine:
    return Engine(
        EngineConfig(
            run_id="r",
            instruments=INSTRUMENTS,
            risk=risk if risk is not None else RiskConfig(),
            **kw,
        )
    )


def limits(**kw: Any) -> RiskConfig:
    return RiskConfig(limits=LimitsConfig(**kw))


def signal(n: int = 1, **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": T0,
        "signal_id": f"sig-{n}",
        "strategy": "s1",
        "account": "A",
        "instrument": "BTC",
        "side": Side.BUY,
        "qty": 10,
    }
    fields.update(kw)
    return Signal(**fields)


def limit_signal(n: int, price: int = 100_00, **kw: Any) -> Signal:
    return signal(n, order_type=OrderType.LIMIT, price=price, **kw)


def sent(effects: list[Message]) -> list[SubmitOrder]:
    return [e for e in effects if isinstance(e, SubmitOrder)]


def submit_sig(engine: Engine, sig: Signal) -> Order:
    effects = engine.handle(sig)
    assert effects and isinstance(effects[0], SubmitOrder), effects
    return engine.orders[effects[0].order_id]


def submit(engine: Engine, n: int = 1, **kw: Any) -> Order:
    return submit_sig(engine, signal(n, **kw))


def submit_limit(engine: Engine, n: int, price: int = 100_00, **kw: Any) -> Order:
    return submit_sig(engine, limit_signal(n, price, **kw))


def fill(
    order: Order, qty: int, price: int = 100_00, trade: str | None = None, ts: int = T0 + 1
) -> OrderFilled:
    return OrderFilled(
        ts_recv=ts,
        order_id=order.order_id,
        venue=order.venue,
        trade_id=trade if trade is not None else f"{order.order_id}-{order.filled_qty}",
        price=price,
        qty=qty,
    )


def reject(order: Order, reason: str = "busy", retryable: bool = False, ts: int = T0 + 1) -> Any:
    return OrderRejected(
        ts_recv=ts, order_id=order.order_id, venue=order.venue, reason=reason, retryable=retryable
    )


def accept(order: Order, ts: int = T0 + 1) -> OrderAccepted:
    return OrderAccepted(ts_recv=ts, order_id=order.order_id, venue=order.venue)


def denial(engine: Engine, sig: Signal) -> SignalRejected:
    effects = engine.handle(sig)
    assert len(effects) == 1 and isinstance(effects[0], SignalRejected), effects
    return effects[0]


def denied(engine: Engine, sig: Signal) -> tuple[str, str]:
    rejected = denial(engine, sig)
    return rejected.code, rejected.reason


def only_alert(effects: list[Message], code: str) -> Alert:
    assert len(effects) == 1 and isinstance(effects[0], Alert), effects
    assert effects[0].code == code, effects
    return effects[0]


def alerts(effects: list[Message], code: str) -> list[Alert]:
    return [e for e in effects if isinstance(e, Alert) and e.code == code]


def quote(
    instrument: str = "BTC",
    bid: int | None = 99_00,
    ask: int | None = 101_00,
    ts: int = T0,
    venue: str = "V1",
    size: int = 100,
) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument=instrument,
        venue=venue,
        bid_price=bid,
        bid_size=size,
        ask_price=ask,
        ask_size=size,
    )


def timers(effects: list[Message], purpose: str) -> list[ScheduleTimer]:
    return [e for e in effects if isinstance(e, ScheduleTimer) and e.purpose == purpose]


def timer(effects: list[Message], purpose: str) -> ScheduleTimer:
    [found] = timers(effects, purpose)
    return found


def fire(scheduled: ScheduleTimer, ts: int | None = None) -> TimerFired:
    return TimerFired(
        ts_recv=scheduled.fire_at if ts is None else ts,
        timer_id=scheduled.timer_id,
        purpose=scheduled.purpose,
        order_id=scheduled.order_id,
    )


def kill(scope: str = "*", ts: int = T0 + 2, **kw: Any) -> KillSwitch:
    fields: dict[str, Any] = {"ts_recv": ts, "operator": "ann", "reason": "runaway", "scope": scope}
    fields.update(kw)
    return KillSwitch(**fields)


def cancel_signal(n: int, target: str, ts: int = T0 + 2) -> Signal:
    return signal(n, ts_recv=ts, intent=SignalIntent.CANCEL, side=None, qty=0, cancels=target)


# --- stage 1: schema, idempotency ----------------------------------------------------------


SCHEMA: list[tuple[str, dict[str, Any], str]] = [
    (
        "empty signal_id",
        {"signal_id": ""},
        "signal '': signal_id must be a non-empty name without surrounding spaces, got ''",
    ),
    (
        "empty strategy",
        {"strategy": ""},
        "signal 'sig-1': strategy must be a non-empty name without surrounding spaces, got ''",
    ),
    (
        "account with spaces",
        {"account": " A "},
        "signal 'sig-1': account must be a non-empty name without surrounding spaces, got ' A '",
    ),
    (
        "empty instrument",
        {"instrument": ""},
        "signal 'sig-1': instrument must be a non-empty name without surrounding spaces, got ''",
    ),
    ("negative qty", {"qty": -3}, "signal sig-1: qty must be >= 0, got -3"),
    (
        "zero limit price",
        {"order_type": OrderType.LIMIT, "price": 0},
        "signal sig-1: price must be > 0 and fit int64, got 0",
    ),
    (
        "negative stop price",
        {"order_type": OrderType.STOP, "stop_price": -1},
        "signal sig-1: stop_price must be > 0 and fit int64, got -1",
    ),
    (
        "zero signal price",
        {"signal_price": 0},
        "signal sig-1: signal_price must be > 0 and fit int64, got 0",
    ),
]


@pytest.mark.parametrize(("kw", "reason"), [c[1:] for c in SCHEMA], ids=[c[0] for c in SCHEMA])
def test_gauntlet_schema_when_field_invalid_then_schema_denial_and_nothing_sent(
    kw: dict[str, Any], reason: str
) -> None:
    engine = make_engine()
    assert denied(engine, signal(**kw)) == ("schema", reason)
    assert not engine.orders


def test_gauntlet_duplicate_when_same_signal_id_again_then_denied_and_state_unchanged() -> None:
    engine = make_engine(limits(firm=LimitSet(max_orders_per_window=5)))
    submit(engine, 1)
    before = (len(engine.orders), engine.order_rate("*", T0), engine.account_qty("A", "BTC"))
    again = signal(1, qty=20, strategy="s2", ts_recv=T0 + 5)
    assert denied(engine, again) == (
        "duplicate_signal",
        "duplicate signal_id sig-1: already handled, nothing sent",
    )
    assert (
        len(engine.orders),
        engine.order_rate("*", T0),
        engine.account_qty("A", "BTC"),
    ) == before


def test_gauntlet_duplicate_when_first_was_denied_then_still_duplicate() -> None:
    engine = make_engine()
    assert denied(engine, signal(1, instrument="DOGE"))[0] == "unknown_instrument"
    assert denied(engine, signal(1))[0] == "duplicate_signal"


# --- stage 2: trading states ----------------------------------------------------------------

SCOPES: list[tuple[str, str, dict[str, Any]]] = [
    # (scope, how the reason names it, a signal outside the scope)
    ("*", "the firm", {}),
    ("account:A", "account A", {"account": "B"}),
    ("strategy:s1", "strategy s1", {"strategy": "s2"}),
    ("instrument:BTC", "instrument BTC", {"instrument": "ETH"}),
]


@pytest.mark.parametrize(("scope", "text", "outside"), SCOPES, ids=[s[0] for s in SCOPES])
def test_gauntlet_halted_when_scope_halted_then_denied_inside_only(
    scope: str, text: str, outside: dict[str, Any]
) -> None:
    engine = make_engine()
    engine.handle(kill(scope, ts=T0 - 1))
    assert denied(engine, signal(1)) == (
        "halted",
        f"trading halted for {text} (ann: runaway): signal sig-1 denied",
    )
    if outside:
        submit(engine, 2, **outside)
    else:
        assert denied(engine, signal(2, account="B", strategy="s9"))[0] == "halted"
    engine.handle(Resume(ts_recv=T0, operator="bob", reason="ok", scope=scope))
    submit(engine, 3)


@pytest.mark.parametrize(("scope", "text", "outside"), SCOPES, ids=[s[0] for s in SCOPES])
def test_gauntlet_reducing_when_scope_reducing_then_only_reducing_orders_counting_working(
    scope: str, text: str, outside: dict[str, Any]
) -> None:
    engine = make_engine()
    long = submit(engine, 1)
    engine.handle(fill(long, 10))
    working_buy = submit(engine, 2, qty=2)
    assert engine.handle(kill(scope, state=TradingState.REDUCING, reason="trim")) == []
    assert working_buy.status is S.PENDING_NEW  # REDUCING cancels nothing
    assert denied(engine, signal(3, qty=4)) == (
        "reducing_only",
        f"{text} is REDUCING (ann: trim): BUY 4 BTC does not reduce position 10 of A/s1 "
        "(room 10 after working orders)",
    )
    submit(engine, 4, side=Side.SELL, qty=4)
    # The working sell of 4 already reduces: 6 left to reduce.
    assert denied(engine, signal(5, side=Side.SELL, qty=7))[1].endswith(
        "SELL 7 BTC does not reduce position 10 of A/s1 (room 6 after working orders)"
    )
    submit(engine, 6, side=Side.SELL, qty=6)
    assert denied(engine, signal(7, side=Side.SELL, qty=1))[0] == "reducing_only"
    if outside:
        submit(engine, 8, **outside)
    else:
        assert denied(engine, signal(8, account="B", strategy="s9"))[0] == "reducing_only"


def test_gauntlet_reducing_when_flat_then_nothing_reduces() -> None:
    engine = make_engine()
    engine.handle(kill("strategy:s1", state=TradingState.REDUCING, ts=T0 - 1))
    assert denied(engine, signal(1, side=Side.SELL))[1] == (
        "strategy s1 is REDUCING (ann: runaway): SELL 10 BTC does not reduce position 0 of "
        "A/s1 (room 0 after working orders)"
    )


# --- stage 2: reference data and venues -------------------------------------------------------


def test_gauntlet_unknown_instrument_when_not_configured_then_lists_known() -> None:
    assert denied(make_engine(), signal(instrument="DOGE")) == (
        "unknown_instrument",
        "instrument 'DOGE' unknown: expected one of AAPL, BTC, ES, ETH, LOTS, SAP, XOM",
    )


def test_gauntlet_not_approved_when_reference_data_unapproves_then_denied() -> None:
    engine = make_engine()
    update = msgspec.structs.replace(BTC, approved=False, version=2, ts_recv=T0 - 1)
    assert engine.handle(update) == []
    assert denied(engine, signal()) == (
        "not_approved",
        "instrument BTC is not approved for trading in reference data version 2",
    )
    engine.handle(msgspec.structs.replace(BTC, version=3, ts_recv=T0))
    submit(engine, 2)


@pytest.mark.parametrize(
    ("venue", "default_venue", "reason"),
    [
        ("V9", {}, "venue 'V9' not listed for BTC: expected one of V1, V2"),
        (None, {"BTC": "V3"}, "venue 'V3' not listed for BTC: expected one of V1, V2"),
    ],
)
def test_gauntlet_unknown_venue_when_not_listed_then_denied(
    venue: str | None, default_venue: dict[str, str], reason: str
) -> None:
    engine = make_engine(default_venue=default_venue)
    assert denied(engine, signal(venue=venue)) == ("unknown_venue", reason)


def test_gauntlet_unknown_venue_when_instrument_has_none_then_denied() -> None:
    engine = make_engine()
    engine.handle(msgspec.structs.replace(BTC, instrument="BARE", venue_symbols={}))
    assert denied(engine, signal(instrument="BARE")) == (
        "unknown_venue",
        "no venue for BARE: expected signal.venue, a default_venue or venue_symbols, got none",
    )


def test_gauntlet_venue_when_disconnected_then_reconciling_then_open() -> None:
    engine = make_engine()
    engine.handle(VenueDisconnected(ts_recv=T0 - 5, venue="V1", reason="socket closed"))
    assert denied(engine, signal(1)) == (
        "venue_disconnected",
        f"venue V1 disconnected since ts {T0 - 5} (socket closed)",
    )
    submit(engine, 2, venue="V2")  # the other venue is fine
    engine.handle(VenueConnected(ts_recv=T0 + 1, venue="V1"))
    assert denied(engine, signal(3, ts_recv=T0 + 2)) == (
        "venue_reconciling",
        f"venue V1 reconnected at ts {T0 + 1} and is reconciling orders and positions: "
        "no new order until its reports are in",
    )
    engine.handle(ReportsDone(ts_recv=T0 + 3, venue="V1"))
    submit(engine, 4, ts_recv=T0 + 4)


RULES = RiskConfig(
    venues={
        "V1": VenueRules(
            order_types=(OrderType.LIMIT, OrderType.MARKET),
            tifs=(TimeInForce.GTC, TimeInForce.IOC),
            do_not_trade=("ETH",),
        )
    }
)


@pytest.mark.parametrize(
    ("kw", "code", "reason"),
    [
        (
            {"order_type": OrderType.STOP, "stop_price": 90_00},
            "order_type_unsupported",
            "venue V1 does not take STOP orders: expected one of LIMIT, MARKET",
        ),
        (
            {"tif": TimeInForce.FOK},
            "tif_unsupported",
            "venue V1 does not take time in force FOK: expected one of GTC, IOC",
        ),
        ({"instrument": "ETH"}, "do_not_trade", "ETH is on the do-not-trade list of venue V1"),
    ],
    ids=["order_type", "tif", "do_not_trade"],
)
def test_gauntlet_venue_rules_when_broken_then_denied_and_other_venue_takes_it(
    kw: dict[str, Any], code: str, reason: str
) -> None:
    engine = make_engine(RULES)
    assert denied(engine, signal(1, **kw)) == (code, reason)
    if kw.get("instrument") != "ETH":  # ETH is listed on V1 only
        submit(engine, 2, venue="V2", **kw)


@pytest.mark.parametrize(
    ("kw", "code", "reason"),
    [
        ({"order_type": OrderType.LIMIT}, "price", "LIMIT order needs price, got None"),
        (
            {"order_type": OrderType.MARKET, "price": 100_00},
            "price",
            "MARKET order takes no price: expected None, got 10000",
        ),
        (
            {"order_type": OrderType.STOP_LIMIT, "price": 100_00},
            "stop_price",
            "STOP_LIMIT order needs stop_price, got None",
        ),
        (
            {"order_type": OrderType.MARKET, "stop_price": 100_00},
            "stop_price",
            "MARKET order takes no stop_price: expected None, got 10000",
        ),
        (
            {"instrument": "LOTS", "qty": 5},
            "lot_size",
            "qty 5 rounds to 0 at lot_size 10 for LOTS: expected at least 10",
        ),
        (
            {"instrument": "LOTS", "qty": 15},
            "min_qty",
            "qty 15 (rounded to lot_size 10: 10) below min_qty 20 for LOTS",
        ),
        (
            {"instrument": "LOTS", "qty": 29, "signal_price": 10_00},
            "min_notional",
            "notional 20000 (qty 20 x signal_price 1000 x multiplier 1) below min_notional "
            "50000 for LOTS",
        ),
    ],
    ids=[
        "limit_without_price",
        "market_with_price",
        "stop_limit_without_stop",
        "market_with_stop",
        "lot_size",
        "min_qty",
        "min_notional",
    ],
)
def test_gauntlet_order_terms_when_invalid_then_denied_with_field(
    kw: dict[str, Any], code: str, reason: str
) -> None:
    assert denied(make_engine(), signal(**kw)) == (code, reason)


# --- stage 2: order size limits -------------------------------------------------------------


def test_gauntlet_max_order_qty_when_legacy_config_then_instrument_beats_default() -> None:
    engine = make_engine(max_order_qty={"BTC": 20, "*": 5})
    submit(engine, 1, qty=20)
    assert denied(engine, signal(2, qty=22)) == (
        "max_order_qty",
        "qty 22 above max_order_qty 20 for BTC (config for scope 'BTC')",
    )
    assert denied(engine, signal(3, instrument="ETH", qty=6)) == (
        "max_order_qty",
        "qty 6 above max_order_qty 5 for ETH (config for scope '*')",
    )


@pytest.mark.parametrize(
    ("firm", "instrument", "qty", "reason"),
    [
        (None, 15, 16, "order qty 16: above max_order_qty 15 for BTC (config)"),
        (12, None, 13, "order qty 13: above max_order_qty 12 for BTC (config at the firm)"),
        (12, 15, 13, "order qty 13: above max_order_qty 12 for BTC (config at the firm)"),
        (30, 15, 16, "order qty 16: above max_order_qty 15 for BTC (config)"),
    ],
)
def test_gauntlet_max_order_qty_when_limit_sets_then_tightest_of_instrument_and_firm(
    firm: int | None, instrument: int | None, qty: int, reason: str
) -> None:
    instruments = {} if instrument is None else {"BTC": LimitSet(max_order_qty=instrument)}
    engine = make_engine(limits(firm=LimitSet(max_order_qty=firm), instruments=instruments))
    assert denied(engine, signal(1, qty=qty)) == ("max_order_qty", reason)
    submit(engine, 2, qty=qty - 1)


NOTIONAL_SCOPES = [
    ("firm", "the firm"),
    ("account", "account A"),
    ("strategy", "strategy s1"),
    ("instrument", "instrument BTC"),
]


@pytest.mark.parametrize(("tightest", "text"), NOTIONAL_SCOPES)
def test_gauntlet_max_order_notional_when_scopes_configured_then_tightest_applies(
    tightest: str, text: str
) -> None:
    loose = LimitSet(max_order_notional=1_000_000)
    tight = LimitSet(max_order_notional=100_000)

    def pick(level: str) -> LimitSet:
        return tight if level == tightest else loose

    engine = make_engine(
        limits(
            firm=pick("firm"),
            accounts={"A": pick("account")},
            strategies={"s1": pick("strategy")},
            instruments={"BTC": pick("instrument")},
        )
    )
    # 10 BTC at 150.00 = 150000 cents.
    assert denied(engine, limit_signal(1, 150_00)) == (
        "max_order_notional",
        f"order notional 150000 (10 BTC at 15000) above max_order_notional 100000 "
        f"(config for {text})",
    )
    submit_limit(engine, 2, 100_00)  # 100000: at the limit passes


# --- stage 2: position limits (working orders count) ------------------------------------------


def test_gauntlet_max_net_qty_when_working_orders_then_counted_at_worst() -> None:
    engine = make_engine(limits(instruments={"BTC": LimitSet(max_net_qty=15)}))
    order = submit(engine, 1, qty=10)
    assert denied(engine, signal(2, qty=6)) == (
        "max_net_qty",
        "net position of A with working orders and this order would reach 16: above "
        "max_net_qty 15 for BTC (config)",
    )
    engine.handle(fill(order, 10))
    submit(engine, 3, side=Side.SELL, qty=6)  # worst case is still the long side: 10
    submit(engine, 4, qty=5)  # 10 + 5 = 15
    assert denied(engine, signal(5, qty=1))[0] == "max_net_qty"
    # Short side: 10 - 6 working - 19 = -15 passes; one more does not.
    assert denied(engine, signal(6, side=Side.SELL, qty=20))[1].startswith(
        "net position of A with working orders and this order would reach 16"
    )
    submit(engine, 7, side=Side.SELL, qty=19)
    # Another account has its own net position.
    submit(engine, 8, account="B", qty=15)


def test_gauntlet_max_gross_qty_when_strategies_offset_then_gross_still_counts() -> None:
    engine = make_engine(limits(firm=LimitSet(max_gross_qty=15)))
    long = submit(engine, 1, qty=10)
    engine.handle(fill(long, 10))
    # s2 selling 6 makes the net 4, the gross over strategies 16.
    assert denied(engine, signal(2, strategy="s2", side=Side.SELL, qty=6)) == (
        "max_gross_qty",
        "gross position of A over its strategies with working orders and this order would "
        "reach 16: above max_gross_qty 15 for BTC (config at the firm)",
    )
    submit(engine, 3, strategy="s2", side=Side.SELL, qty=5)


MONEY_SCOPES = [
    # (level, how reasons name it, an order outside the scope or None for the firm)
    ("firm", "the firm", None),
    ("account", "account A", {"account": "B"}),
    ("strategy", "strategy s1", {"strategy": "s2"}),
]


def _money_limits(level: str, limit_set: LimitSet) -> RiskConfig:
    if level == "firm":
        return limits(firm=limit_set)
    if level == "account":
        return limits(accounts={"A": limit_set})
    return limits(strategies={"s1": limit_set})


@pytest.mark.parametrize(
    ("level", "text", "outside"), MONEY_SCOPES, ids=[m[0] for m in MONEY_SCOPES]
)
def test_gauntlet_max_net_notional_when_scope_long_then_denied_inside_only(
    level: str, text: str, outside: dict[str, Any] | None
) -> None:
    engine = make_engine(_money_limits(level, LimitSet(max_net_notional=250_000)))
    submit_limit(engine, 1)  # 10 x 100.00 = 100000 cents
    submit_limit(engine, 2, instrument="ETH")  # 200000 in the scope
    # The firm adds up every account and strategy.
    third = {"account": "B", "strategy": "s9"} if level == "firm" else {}
    submit_limit(engine, 3, qty=5, **third)  # 250000: at the limit
    assert denied(engine, limit_signal(4, qty=1)) == (
        "max_net_notional",
        f"net notional of {text} would be 260000 with working orders and this order: above "
        "max_net_notional 250000 (config)",
    )
    # Selling does not add to the long side: the worst case stays 250000.
    submit_limit(engine, 5, side=Side.SELL, qty=5)
    if outside is not None:
        submit_limit(engine, 6, **outside)


@pytest.mark.parametrize(
    ("level", "text", "outside"), MONEY_SCOPES, ids=[m[0] for m in MONEY_SCOPES]
)
def test_gauntlet_max_gross_notional_when_hedged_then_gross_still_counts(
    level: str, text: str, outside: dict[str, Any] | None
) -> None:
    engine = make_engine(_money_limits(level, LimitSet(max_gross_notional=350_000)))
    submit_limit(engine, 1, qty=20)  # long BTC 200000
    submit_limit(engine, 2, instrument="ETH", side=Side.SELL)  # short ETH 100000: net 200000
    assert denied(engine, limit_signal(3, instrument="ETH", side=Side.SELL, qty=6)) == (
        "max_gross_notional",
        f"gross notional of {text} would be 360000 with working orders and this order: above "
        "max_gross_notional 350000 (config)",
    )
    submit_limit(engine, 4, instrument="ETH", side=Side.SELL, qty=5)
    if outside is not None:
        submit_limit(engine, 5, qty=40, **outside)


@pytest.mark.parametrize(
    ("group", "first", "outside", "last"),
    [
        ("asset_class:CRYPTO", "BTC", "AAPL", "ETH"),
        ("sector:tech", "AAPL", "XOM", "AAPL"),
        ("country:US", "AAPL", "SAP", "XOM"),
    ],
)
def test_gauntlet_exposure_when_group_over_limit_then_denied(
    group: str, first: str, outside: str, last: str
) -> None:
    risk = RiskConfig(fx_rates={"EUR": "1"}, limits=LimitsConfig(exposure={group: 250_000}))
    engine = make_engine(risk)
    submit_limit(engine, 1, instrument=first, qty=20)  # 200000 in the group
    submit_limit(engine, 2, instrument=outside, qty=50)  # outside the group: not counted
    assert denied(engine, limit_signal(3, instrument=last, qty=10)) == (
        "exposure",
        f"gross exposure of {group} would be 300000 with this order (working orders "
        "included): above its limit 250000",
    )
    submit_limit(engine, 4, instrument=last, qty=5)  # 250000: at the limit


def test_gauntlet_exposure_when_portfolio_over_limit_then_denied() -> None:
    # regression: the portfolio aggregate was never updated, so only the new order counted
    engine = make_engine(limits(exposure={"portfolio": 250_000}))
    submit_limit(engine, 1, qty=20)
    assert denied(engine, limit_signal(2, instrument="AAPL", qty=10)) == (
        "exposure",
        "gross exposure of portfolio would be 300000 with this order (working orders "
        "included): above its limit 250000",
    )


def test_gauntlet_gross_notional_when_market_orders_without_quotes_then_counted() -> None:
    # regression: a market order without a quote was tracked at price 0
    engine = make_engine(limits(firm=LimitSet(max_gross_notional=150_000)))
    submit(engine, 1, signal_price=100_00)  # 100000
    assert denied(engine, signal(2, instrument="ETH", signal_price=100_00)) == (
        "max_gross_notional",
        "gross notional of the firm would be 200000 with working orders and this order: above "
        "max_gross_notional 150000 (config)",
    )


# --- stage 2: order rates ------------------------------------------------------------------


RATE_SCOPES = [
    # (level, how reasons name it, the third order, an order outside the scope)
    ("firm", "the firm", {"account": "B", "strategy": "s2", "venue": "V2"}, None),
    ("account", "account A", {"venue": "V1"}, {"account": "B"}),
    ("strategy", "strategy s1", {"venue": "V1"}, {"strategy": "s2"}),
    ("venue", "venue V1", {"venue": "V1"}, {"venue": "V2"}),
]


@pytest.mark.parametrize(
    ("level", "text", "third", "outside"), RATE_SCOPES, ids=[r[0] for r in RATE_SCOPES]
)
def test_gauntlet_order_rate_when_window_full_then_denied_until_it_rolls(
    level: str, text: str, third: dict[str, Any], outside: dict[str, Any] | None
) -> None:
    rate = LimitSet(max_orders_per_window=2)
    table = {
        "firm": {"firm": rate},
        "account": {"accounts": {"A": rate}},
        "strategy": {"strategies": {"s1": rate}},
        "venue": {"venues": {"V1": rate}},
    }[level]
    engine = make_engine(limits(rate_window_ns=10 * NS, **table))
    submit(engine, 1, venue="V1")
    submit(engine, 2, ts_recv=T0 + 1, venue="V1")
    assert denied(engine, signal(3, ts_recv=T0 + 2, **third)) == (
        "order_rate",
        f"{text} sent 2 orders in the last 10 s: max_orders_per_window 2 (config)",
    )
    if outside is not None:
        submit(engine, 4, ts_recv=T0 + 2, **outside)
    # The window is (now - 10 s, now]: at T0 + 10 s the first order has rolled out.
    assert denied(engine, signal(5, ts_recv=T0 + 10 * NS - 1, venue="V1"))[0] == "order_rate"
    submit(engine, 6, ts_recv=T0 + 10 * NS, venue="V1")
    assert denied(engine, signal(7, ts_recv=T0 + 10 * NS, venue="V1"))[0] == "order_rate"


# --- stage 2: valuing an order -------------------------------------------------------------


def test_gauntlet_no_reference_price_when_notional_limit_and_nothing_to_value_at() -> None:
    engine = make_engine(limits(firm=LimitSet(max_net_notional=10**9)))
    assert denied(engine, signal()) == (
        "no_reference_price",
        "cannot value BUY 10 BTC for the notional limits: expected a limit price, a "
        "signal_price or a quote, got none",
    )
    engine.handle(quote())
    submit(engine, 2)  # valued at the ask


def test_gauntlet_no_fx_rate_when_foreign_currency_and_money_limit_then_denied() -> None:
    engine = make_engine(limits(firm=LimitSet(max_order_notional=10**9)))
    assert denied(engine, limit_signal(1, instrument="SAP")) == (
        "no_fx_rate",
        "SAP is priced in EUR: expected a rate to USD in risk.fx_rates",
    )
    submit_limit(make_engine(), 2, instrument="SAP")  # no money limit: no rate needed


def test_gauntlet_fx_when_rate_configured_then_notional_converted_exactly() -> None:
    risk = RiskConfig(
        fx_rates={"EUR": "1.1"}, limits=LimitsConfig(firm=LimitSet(max_order_notional=110_000))
    )
    engine = make_engine(risk)
    # 10 x 100.00 EUR x 1.1 = 1100.00 USD: at the limit.
    submit_limit(engine, 1, 100_00, instrument="SAP")
    assert denied(engine, limit_signal(2, 100_01, instrument="SAP")) == (
        "max_order_notional",
        "order notional 110011 (10 SAP at 10001) above max_order_notional 110000 (config for "
        "the firm)",
    )


def test_gauntlet_notional_when_multiplier_then_counted() -> None:
    engine = make_engine(limits(firm=LimitSet(max_order_notional=500_000)))
    # ES: 1 x 100.00 x multiplier 50 = 5000.00 USD.
    submit_limit(engine, 1, instrument="ES", qty=1)
    assert denied(engine, limit_signal(2, instrument="ES", qty=2))[1].startswith(
        "order notional 1000000 (2 ES at 10000)"
    )


# --- stage 3: market state ----------------------------------------------------------------------


def market(**kw: Any) -> RiskConfig:
    return RiskConfig(market=MarketChecks(**kw))


def test_gauntlet_no_quote_when_required_and_missing_then_denied() -> None:
    engine = make_engine(market(require_quote=True))
    assert denied(engine, signal(1)) == (
        "no_quote",
        "no two-sided quote for BTC on V1: the market checks need one",
    )
    engine.handle(quote(ask=None))
    assert denied(engine, signal(2))[0] == "no_quote"
    engine.handle(quote())
    submit(engine, 3)


def test_gauntlet_stale_quote_when_older_than_max_age_then_denied() -> None:
    engine = make_engine(market(max_quote_age_ns=NS))
    engine.handle(quote(ts=T0))
    submit(engine, 1, ts_recv=T0 + NS)
    assert denied(engine, signal(2, ts_recv=T0 + 2 * NS)) == (
        "stale_quote",
        "last quote for BTC on V1 is 2000 ms old: max_quote_age 1000 ms",
    )


def test_gauntlet_spread_when_wider_than_max_then_denied() -> None:
    engine = make_engine(market(max_spread_bps=100))
    engine.handle(quote(bid=99_00, ask=101_00))
    assert denied(engine, signal(1)) == (
        "spread",
        "spread of BTC on V1 is 200 bps (bid 9900 ask 10100): max_spread 100 bps",
    )
    engine.handle(quote(bid=99_50, ask=100_50))
    submit(engine, 2)


def test_gauntlet_price_collar_when_aggressive_beyond_collar_then_denied() -> None:
    engine = make_engine(market(collar_bps=50))
    engine.handle(quote())  # mid 100.00
    assert denied(engine, limit_signal(1, 100_60)) == (
        "price_collar",
        "BUY BTC at 10060 is 60 bps through the mid 10000: collar 50 bps",
    )
    assert denied(engine, signal(2, side=Side.SELL, signal_price=99_00)) == (
        "price_collar",
        "SELL BTC at 9900 is 100 bps through the mid 10000: collar 50 bps",
    )
    submit_limit(engine, 3, 100_50)  # 50 bps: within
    submit_limit(engine, 4, 90_00)  # passive, however far


def test_gauntlet_volatility_when_mid_jumps_then_paused_for_vol_pause_ns() -> None:
    engine = make_engine(market(vol_pause_bps=100, vol_window_ns=10 * NS, vol_pause_ns=30 * NS))
    engine.handle(quote(ts=T0))
    submit(engine, 1)  # samples mid 100.00
    engine.handle(quote(bid=101_00, ask=103_00, ts=T0 + NS))
    until = T0 + NS + 30 * NS
    assert denied(engine, signal(2, ts_recv=T0 + NS)) == (
        "volatility_pause",
        f"BTC on V1 moved 200 bps (10000 -> 10200) within 1000 ms: trading paused until ts {until}",
    )
    # The window has moved past the jump, yet the pause lasts vol_pause_ns.
    engine.handle(quote(bid=101_00, ask=103_00, ts=until - 1))
    assert denied(engine, signal(3, ts_recv=until - 1)) == (
        "volatility_pause",
        f"BTC on V1 is in a volatility pause until ts {until}",
    )
    submit(engine, 4, ts_recv=until)


# --- stage 3: liquidity ----------------------------------------------------------------------


ADV = {"adv": {"BTC": 1_000}, "max_adv_participation_bps": 100, "slice_interval_ns": NS}


def test_gauntlet_liquidity_when_above_adv_then_split_into_children_on_timers() -> None:
    engine = make_engine(market(**ADV))
    effects = engine.handle(signal(1, qty=25))
    assert [(o.qty, o.signal_id) for o in sent(effects)] == [(10, "sig-1")]
    first = timer(effects, "slice")
    assert first.fire_at == T0 + NS
    effects = engine.handle(fire(first))
    assert [o.qty for o in sent(effects)] == [10]
    second = timer(effects, "slice")
    assert second.fire_at == T0 + 2 * NS
    effects = engine.handle(fire(second))
    assert [o.qty for o in sent(effects)] == [5]
    assert timers(effects, "slice") == []
    assert [o.qty for o in engine.orders.values()] == [10, 10, 5]
    assert len(set(engine.orders)) == 3
    assert all(o.signal_id == "sig-1" for o in engine.orders.values())


def test_gauntlet_liquidity_when_slice_goes_then_rest_rechecked_against_limits() -> None:
    risk = RiskConfig(
        market=MarketChecks(**ADV),
        limits=LimitsConfig(instruments={"BTC": LimitSet(max_net_qty=25)}),
    )
    engine = make_engine(risk)
    first = timer(engine.handle(signal(1, qty=25)), "slice")
    submit(engine, 2, qty=10, ts_recv=T0 + 1)  # net worst 20: fits
    assert engine.handle(fire(first)) == [
        SignalRejected(
            ts_recv=T0 + NS,
            signal_id="sig-1",
            strategy="s1",
            account="A",
            instrument="BTC",
            code="max_net_qty",
            reason="slice 2: net position of A with working orders and this order would reach "
            "30: above max_net_qty 25 for BTC (config); 15 of 25 not sent",
        )
    ]


def test_gauntlet_liquidity_when_halted_between_slices_then_rest_dropped() -> None:
    engine = make_engine(market(**ADV))
    first = timer(engine.handle(signal(1, qty=25)), "slice")
    engine.handle(kill())
    engine.handle(Resume(ts_recv=T0 + 3, operator="ann", reason="ok"))
    assert engine.handle(fire(first)) == []


def test_gauntlet_liquidity_when_impact_too_high_then_child_fits_the_book() -> None:
    engine = make_engine(market(max_impact_bps=150))
    engine.handle(quote(bid=99_00, ask=101_00, size=5))  # mid 100.00
    for price, size in ((101_00, 5), (102_00, 5), (110_00, 100)):
        engine.handle(
            BookDelta(
                ts_recv=T0, instrument="BTC", venue="V1", side=Side.SELL, price=price, qty=size
            )
        )
    # 10 takes 5 at 101 and 5 at 102: exactly 150 bps; 11 would be more.
    effects = engine.handle(signal(1, qty=20))
    assert [o.qty for o in sent(effects)] == [10]
    assert [o.qty for o in sent(engine.handle(fire(timer(effects, "slice"))))] == [10]
    # A passive limit order takes nothing: no impact check.
    assert [o.qty for o in sent(engine.handle(limit_signal(2, 99_00, qty=20)))] == [20]


def test_gauntlet_liquidity_when_no_child_fits_then_liquidity_denial() -> None:
    engine = make_engine(market(adv={"BTC": 50, "LOTS": 1_500}, max_adv_participation_bps=100))
    assert denied(engine, signal(1, qty=25)) == (
        "liquidity",
        "BUY 25 BTC: 25 is 5000 bps of ADV 50, above 100 bps; no child order of at least "
        "min_qty 0 fits",
    )
    # LOTS: 1% of 1500 is 15, 10 after the lot: below min_qty 20.
    assert denied(engine, signal(2, instrument="LOTS", qty=40, signal_price=100_00))[1] == (
        "BUY 40 LOTS: 40 is 266 bps of ADV 1500, above 100 bps; no child order of at least "
        "min_qty 20 fits"
    )


HOLD = {**ADV, "liquidity_action": "hold"}


def test_gauntlet_hold_when_too_big_then_alert_and_approve_sends_whole_order() -> None:
    engine = make_engine(market(**HOLD))
    alert = only_alert(engine.handle(signal(1, qty=25)), "HELD_FOR_REVIEW")
    assert alert.severity is Severity.WARNING
    assert alert.text == (
        "signal sig-1 (BUY 25 BTC on V1) held for review: 25 is 250 bps of ADV 1000, above 100 bps"
    )
    assert engine.held_signals() == ["sig-1"]
    effects = engine.handle(
        ReviewDecision(ts_recv=T0 + 5, operator="bob", signal_id="sig-1", approve=True, reason="ok")
    )
    [order] = sent(effects)
    assert (order.qty, order.signal_id, order.ts_recv) == (25, "sig-1", T0 + 5)
    assert engine.held_signals() == []


def test_gauntlet_hold_when_rejected_then_signal_rejected_with_reason() -> None:
    engine = make_engine(market(**HOLD))
    engine.handle(signal(1, qty=25))
    decision = ReviewDecision(
        ts_recv=T0 + 5, operator="bob", signal_id="sig-1", approve=False, reason="too big"
    )
    assert engine.handle(decision) == [
        SignalRejected(
            ts_recv=T0 + 5,
            signal_id="sig-1",
            strategy="s1",
            account="A",
            instrument="BTC",
            code="review_rejected",
            reason="held for review (25 is 250 bps of ADV 1000, above 100 bps); rejected by "
            "bob: too big",
        )
    ]
    assert only_alert(engine.handle(decision), "INVALID_REVIEW").text == (
        "ReviewDecision by bob: signal 'sig-1' is not held for review; ignored"
    )


def test_gauntlet_hold_when_approved_after_halt_then_rechecked_and_denied() -> None:
    engine = make_engine(market(**HOLD))
    engine.handle(signal(1, qty=25))
    engine.handle(kill())
    effects = engine.handle(
        ReviewDecision(ts_recv=T0 + 5, operator="bob", signal_id="sig-1", approve=True, reason="ok")
    )
    [rejected] = effects
    assert isinstance(rejected, SignalRejected) and rejected.code == "halted"


# --- limits: hierarchy and overrides ------------------------------------------------------------


def override(
    limit: str, scope: str, value: int, expires_at: int | None = None, ts: int = T0 - 1
) -> LimitOverride:
    return LimitOverride(
        ts_recv=ts,
        operator="ann",
        reason="desk ask",
        limit=limit,
        scope=scope,
        value=value,
        expires_at=expires_at,
    )


def test_limits_when_finer_scope_looser_then_coarser_still_applies() -> None:
    engine = make_engine(
        limits(
            firm=LimitSet(max_order_notional=100_000, max_net_qty=15),
            strategies={"s1": LimitSet(max_order_notional=1_000_000)},
            instruments={"BTC": LimitSet(max_net_qty=100)},
        )
    )
    assert denied(engine, limit_signal(1, qty=11))[1].endswith("(config for the firm)")
    assert denied(engine, limit_signal(2, 10_00, qty=16)) == (
        "max_net_qty",
        "net position of A with working orders and this order would reach 16: above "
        "max_net_qty 15 for BTC (config at the firm)",
    )
    # An override at the finer scope cannot loosen the coarser one either.
    assert engine.handle(override("max_order_notional", "strategy:s1", 5_000_000)) == []
    assert denied(engine, limit_signal(3, qty=11))[1].endswith("(config for the firm)")


def test_limits_when_override_active_then_replaces_config_at_its_scope_until_expiry() -> None:
    engine = make_engine(limits(accounts={"A": LimitSet(max_net_notional=150_000)}))
    assert denied(engine, limit_signal(1, qty=20))[1].endswith("(config)")
    engine.handle(override("max_net_notional", "account:A", 250_000, expires_at=T0 + 5))
    submit_limit(engine, 2, qty=20)
    assert denied(engine, limit_signal(3, qty=6, ts_recv=T0 + 4)) == (
        "max_net_notional",
        "net notional of account A would be 260000 with working orders and this order: "
        "above max_net_notional 250000 (override by ann)",
    )
    # At expires_at the configured value is back (and the working 200000 is above it).
    assert denied(engine, limit_signal(4, qty=1, ts_recv=T0 + 5)) == (
        "max_net_notional",
        "net notional of account A would be 210000 with working orders and this order: "
        "above max_net_notional 150000 (config)",
    )
    assert [o.scope for o in engine.limits.overrides()] == ["account:A"]


def test_limits_when_override_tightens_firm_then_applies_at_once() -> None:
    engine = make_engine()
    engine.handle(override("max_gross_qty", "*", 5))
    assert denied(engine, signal(1, qty=6))[1] == (
        "gross position of A over its strategies with working orders and this order would "
        "reach 6: above max_gross_qty 5 for BTC (override by ann at the firm)"
    )
    engine.handle(override("max_orders_per_window", "venue:V1", 0))
    assert denied(engine, signal(2, qty=5))[1] == (
        "venue V1 sent 0 orders in the last 60 s: max_orders_per_window 0 (override by ann)"
    )
    submit(engine, 3, qty=5, venue="V2")


@pytest.mark.parametrize(
    ("limit", "scope", "value", "text"),
    [
        (
            "max_net_notional",
            "desk:rates",
            5,
            "scope 'desk:rates': expected '*', 'account:A', 'strategy:S', 'instrument:X' or "
            "'venue:V'",
        ),
        (
            "max_net_qty",
            "strategy:s1",
            5,
            "limit max_net_qty is in size units: expected an instrument scope or '*'",
        ),
        ("daily_loss", "account:A", -1, "value must be >= 0, got -1"),
        ("max_order_qty", "DOGE", 5, "scope 'DOGE' is not a known instrument or '*'"),
        ("max_order_qty", "*", -2, "value must be >= 0, got -2"),
    ],
)
def test_limits_when_override_invalid_then_alert_with_reason_and_ignored(
    limit: str, scope: str, value: int, text: str
) -> None:
    engine = make_engine(limits(firm=LimitSet(max_net_qty=50)))
    alert = only_alert(engine.handle(override(limit, scope, value)), "INVALID_OVERRIDE")
    assert alert.severity is Severity.WARNING
    assert alert.text == f"LimitOverride by ann: {text}; ignored"
    assert not engine.limits.has_overrides()
    submit(engine, 1, qty=50)


@pytest.mark.parametrize(
    ("config", "scope"),
    [
        (LimitsConfig(firm=LimitSet(max_order_qty=20)), "*"),
        (LimitsConfig(instruments={"BTC": LimitSet(max_order_qty=20)}), "BTC"),
    ],
)
def test_limits_when_max_order_qty_override_then_replaces_limit_set(
    config: LimitsConfig, scope: str
) -> None:
    # regression: these overrides reached only the legacy EngineConfig.max_order_qty table
    engine = make_engine(RiskConfig(limits=config))
    assert engine.handle(override("max_order_qty", scope, 50)) == []
    submit(engine, 1, qty=30)
    assert denied(engine, signal(2, qty=52)) == (
        "max_order_qty",
        f"qty 52 above max_order_qty 50 for BTC (override by ann for scope {scope!r})",
    )


def test_limits_when_max_order_qty_override_at_instrument_scope_then_replaces_limit_set() -> None:
    engine = make_engine(limits(instruments={"BTC": LimitSet(max_order_qty=20)}))
    engine.handle(override("max_order_qty", "instrument:BTC", 50, expires_at=T0 + 1))
    submit(engine, 1, qty=30)
    assert denied(engine, signal(2, qty=30, ts_recv=T0 + 1))[1] == (
        "order qty 30: above max_order_qty 20 for BTC (config)"
    )


# --- kill switch and trading states ------------------------------------------------------------


def four_orders(engine: Engine) -> dict[str, Order]:
    return {
        "A/s1/BTC": submit(engine, 1),
        "B/s1/BTC": submit(engine, 2, account="B"),
        "A/s2/BTC": submit(engine, 3, strategy="s2"),
        "A/s1/ETH": submit(engine, 4, instrument="ETH"),
    }


@pytest.mark.parametrize(
    ("scope", "canceled"),
    [
        ("*", ["A/s1/BTC", "B/s1/BTC", "A/s2/BTC", "A/s1/ETH"]),
        ("account:A", ["A/s1/BTC", "A/s2/BTC", "A/s1/ETH"]),
        ("strategy:s1", ["A/s1/BTC", "B/s1/BTC", "A/s1/ETH"]),
        ("instrument:ETH", ["A/s1/ETH"]),
        ("ETH", ["A/s1/ETH"]),
    ],
)
def test_kill_switch_when_halted_at_scope_then_cancels_that_scopes_orders_only(
    scope: str, canceled: list[str]
) -> None:
    engine = make_engine()
    orders = four_orders(engine)
    effects = engine.handle(kill(scope))
    assert all(isinstance(e, CancelOrder) for e in effects)
    ids = {key: o.order_id for key, o in orders.items()}
    assert [e.order_id for e in effects if isinstance(e, CancelOrder)] == [ids[k] for k in canceled]
    for key, order in orders.items():
        assert order.status is (S.PENDING_CANCEL if key in canceled else S.PENDING_NEW)


def test_kill_switch_when_flatten_at_scope_then_closing_orders_for_that_scope() -> None:
    engine = make_engine()
    for n, (account, strategy, name, side, qty) in enumerate(
        [
            ("A", "s1", "BTC", Side.BUY, 10),
            ("A", "s2", "ETH", Side.SELL, 4),
            ("B", "s1", "BTC", Side.BUY, 6),
        ],
        start=1,
    ):
        order = submit(
            engine, n, account=account, strategy=strategy, instrument=name, side=side, qty=qty
        )
        engine.handle(fill(order, qty))
    working = submit(engine, 9, qty=2)
    effects = engine.handle(kill("account:A", flatten=True))
    assert isinstance(effects[0], CancelOrder) and effects[0].order_id == working.order_id
    closing = [(o.account, o.strategy, o.instrument, o.side, o.qty) for o in sent(effects)]
    assert closing == [("A", "s1", "BTC", Side.SELL, 10), ("A", "s2", "ETH", Side.BUY, 4)]
    assert all(
        (o.order_type, o.tif, o.signal_id) == (OrderType.MARKET, TimeInForce.IOC, None)
        for o in sent(effects)
    )
    assert engine.trading_state("account:A") is TradingState.HALTED
    assert engine.trading_state("*") is TradingState.ACTIVE


def test_kill_switch_when_resumed_then_only_that_scope_resumes() -> None:
    engine = make_engine()
    engine.handle(kill("*", ts=T0 - 2))
    engine.handle(kill("instrument:BTC", ts=T0 - 1))
    engine.handle(Resume(ts_recv=T0, operator="bob", reason="ok", scope="instrument:BTC"))
    assert denied(engine, signal(1, ts_recv=T0 + 1))[1].startswith("trading halted for the firm")
    engine.handle(Resume(ts_recv=T0 + 2, operator="bob", reason="ok", scope="*"))
    submit(engine, 2, ts_recv=T0 + 3)
    assert engine.trading_states() == []


def test_kill_switch_when_scope_unreadable_then_firm_halted_with_alert() -> None:
    engine = make_engine()
    orders = four_orders(engine)
    effects = engine.handle(kill("desk:rates"))
    alert = effects[0]
    assert isinstance(alert, Alert) and alert.code == "INVALID_KILL_SWITCH"
    assert alert.severity is Severity.CRITICAL
    assert alert.text == (
        "KillSwitch by ann: scope 'desk:rates' unreadable (expected '*', 'account:A', "
        "'strategy:S' or 'instrument:X'); applied to the whole firm"
    )
    assert [e.order_id for e in effects[1:] if isinstance(e, CancelOrder)] == [
        o.order_id for o in orders.values()
    ]
    assert engine.halted
    assert denied(engine, signal(5))[1] == (
        "trading halted for the firm (ann: runaway): signal sig-5 denied"
    )


# --- automatic halts on losses -------------------------------------------------------------------


LOSS_SCOPES = [
    # (level, scope, how alerts name it, an order outside the scope)
    ("account", "account:A", "account A", {"account": "B"}),
    ("strategy", "strategy:s1", "strategy s1", {"strategy": "s2"}),
]


def _loss_limits(level: str, limit_set: LimitSet, flatten: bool = False) -> RiskConfig:
    if level == "account":
        table: dict[str, Any] = {"accounts": {"A": limit_set}}
    else:
        table = {"strategies": {"s1": limit_set}}
    return RiskConfig(limits=LimitsConfig(**table), loss_flatten=flatten)


def long_position(engine: Engine, n: int = 1, qty: int = 10) -> ScheduleTimer:
    """Buy `qty` BTC at 100.00 for A/s1; return the periodic risk check the order armed."""
    effects = engine.handle(signal(n, qty=qty))
    order = engine.orders[sent(effects)[0].order_id]
    engine.handle(fill(order, qty, 100_00))
    return timer(effects, "risk_check")


@pytest.mark.parametrize(
    ("level", "scope", "text", "outside"), LOSS_SCOPES, ids=[s[0] for s in LOSS_SCOPES]
)
def test_loss_halt_when_daily_loss_passed_on_risk_check_then_scope_halted(
    level: str, scope: str, text: str, outside: dict[str, Any]
) -> None:
    engine = make_engine(_loss_limits(level, LimitSet(daily_loss=50_00)))
    engine.handle(quote(ts=T0))
    check = long_position(engine)  # 10 at 100.00
    assert check.fire_at == T0 + NS
    working = submit(engine, 2, qty=1, ts_recv=T0 + 2)
    other = submit(engine, 3, qty=1, ts_recv=T0 + 3, **outside)
    engine.handle(quote(bid=94_50, ask=95_50, ts=T0 + 5))  # mark 95.00: -50.00, not above
    effects = engine.handle(fire(check))
    assert alerts(effects, "DAILY_LOSS") == []
    check = timer(effects, "risk_check")
    engine.handle(quote(bid=94_49, ask=95_49, ts=check.fire_at - 1))  # mark 94.99: -50.10
    effects = engine.handle(fire(check))
    [halt] = alerts(effects, "DAILY_LOSS")
    assert halt.severity is Severity.CRITICAL
    assert (
        halt.text == f"{text} lost 5010 today (P&L -5010): above daily_loss 5000 (config); halted"
    )
    assert [e.order_id for e in effects if isinstance(e, CancelOrder)] == [working.order_id]
    assert other.status is S.PENDING_NEW
    assert engine.trading_states() == [(scope, TradingState.HALTED, "automatic: DAILY_LOSS")]
    assert timers(effects, "risk_check")  # still exposed: the check re-arms
    assert denied(engine, signal(4, ts_recv=check.fire_at))[0] == "halted"
    submit(engine, 5, ts_recv=check.fire_at, **outside)


@pytest.mark.parametrize(
    ("level", "scope", "text", "outside"), LOSS_SCOPES, ids=[s[0] for s in LOSS_SCOPES]
)
def test_loss_halt_when_drawdown_from_peak_passed_then_halted_and_flattened(
    level: str, scope: str, text: str, outside: dict[str, Any]
) -> None:
    engine = make_engine(_loss_limits(level, LimitSet(max_drawdown=30_00), flatten=True))
    engine.handle(quote(ts=T0))
    check = long_position(engine, 1)
    outsider = submit(engine, 2, ts_recv=T0 + 2, **outside)
    engine.handle(quote(bid=104_00, ask=106_00, ts=T0 + 5))  # P&L +50.00: the peak
    effects = engine.handle(fire(check))
    assert alerts(effects, "DRAWDOWN") == []
    check = timer(effects, "risk_check")
    engine.handle(quote(bid=100_00, ask=102_00, ts=check.fire_at - 1))  # P&L +10.00
    effects = engine.handle(fire(check))
    [halt] = alerts(effects, "DRAWDOWN")
    assert halt.text == (
        f"{text} is 4000 below its peak P&L 5000: above max_drawdown 3000 (config); halted"
    )
    [closing] = sent(effects)
    assert (closing.side, closing.qty, closing.order_type, closing.tif) == (
        Side.SELL,
        10,
        OrderType.MARKET,
        TimeInForce.IOC,
    )
    assert engine.trading_state(scope) is TradingState.HALTED
    assert outsider.status is S.PENDING_NEW


def test_loss_halt_when_fill_realises_loss_then_halted_at_once() -> None:
    engine = make_engine(_loss_limits("strategy", LimitSet(daily_loss=20_00)))
    long_position(engine)  # no quote: no mark, P&L is what is realised
    sell = submit(engine, 2, side=Side.SELL, ts_recv=T0 + 2)
    effects = engine.handle(fill(sell, 10, 97_00, ts=T0 + 3))  # realised -30.00
    [halt] = alerts(effects, "DAILY_LOSS")
    assert halt.text == (
        "strategy s1 lost 3000 today (P&L -3000): above daily_loss 2000 (config); halted"
    )


def test_loss_halt_when_new_day_then_loss_counted_from_days_start() -> None:
    engine = make_engine(_loss_limits("account", LimitSet(daily_loss=50_00)))
    engine.handle(quote(ts=T0))
    check = long_position(engine)
    day = 86_400 * NS
    engine.handle(quote(bid=95_00, ask=97_00, ts=day - 1))  # -40.00 on day 0
    effects = engine.handle(fire(check, ts=day - 1))
    assert alerts(effects, "DAILY_LOSS") == []
    effects = engine.handle(fire(timer(effects, "risk_check"), ts=day))  # day 1 starts at -40.00
    engine.handle(quote(bid=91_00, ask=93_00, ts=day + 1))  # -80.00: 40.00 lost today
    effects = engine.handle(fire(timer(effects, "risk_check"), ts=day + 2))
    assert alerts(effects, "DAILY_LOSS") == []
    engine.handle(quote(bid=90_00, ask=91_98, ts=day + 3))  # mark 90.99: 50.10 lost today
    effects = engine.handle(fire(timer(effects, "risk_check"), ts=day + 4))
    assert alerts(effects, "DAILY_LOSS")[0].text.startswith("account A lost 5010 today (P&L -9010)")


# --- circuit breaker ------------------------------------------------------------------------------


BREAKER = BreakerConfig(
    window_ns=5 * NS,
    threshold_bps=2_500,
    min_events=4,
    cooldown_ns=10 * NS,
    max_queue_age_ns=8 * NS,
)


def tripped_engine(cfg: BreakerConfig = BREAKER) -> tuple[Engine, ScheduleTimer]:
    engine = make_engine(RiskConfig(breaker=cfg))
    orders = [submit(engine, n, ts_recv=T0 + n) for n in range(1, 4)]
    # 1 error in 3 orders: 33%, but under min_events.
    effects = engine.handle(reject(orders[0], ts=T0 + 10))
    assert alerts(effects, "CIRCUIT_OPEN") == []
    assert only_alert(effects, "ORDER_REJECTED")
    fourth = submit(engine, 4, ts_recv=T0 + 11)
    assert fourth.venue == "V1"
    effects = engine.handle(reject(orders[1], ts=T0 + 12))
    [opened] = alerts(effects, "CIRCUIT_OPEN")
    assert opened.severity is Severity.CRITICAL
    assert opened.text == (
        f"circuit breaker of V1 open: 2 errors / 4 orders (50.00%) in the last "
        f"{cfg.window_ns // NS} s, threshold 25%; new orders to it are queued"
    )
    check = timer(effects, "breaker")
    assert check.fire_at == T0 + 12 + 10 * NS
    assert engine.breaker_open("V1")
    return engine, check


def test_breaker_when_rejects_over_threshold_then_open_and_new_signals_queued() -> None:
    engine, _ = tripped_engine()
    queued = only_alert(engine.handle(signal(5, ts_recv=T0 + 20)), "ORDER_QUEUED")
    assert queued.text == f"signal sig-5 queued: circuit breaker of V1 open since ts {T0 + 12}"
    submit(engine, 6, ts_recv=T0 + 21, venue="V2")  # other venues trade on
    assert len(engine.orders) == 5


def test_breaker_when_cooldown_passes_then_closed_and_queue_released_rechecked() -> None:
    engine, check = tripped_engine()
    engine.handle(signal(5, ts_recv=check.fire_at - 5 * NS))
    engine.handle(signal(6, ts_recv=check.fire_at - 4 * NS, instrument="ETH"))
    engine.handle(kill("instrument:ETH", ts=check.fire_at - 3 * NS))
    effects = engine.handle(fire(check))
    closed = effects[0]
    assert isinstance(closed, Alert) and closed.code == "CIRCUIT_CLOSED"
    assert closed.text == (
        "circuit breaker of V1 closed: 0 errors / 0 orders (0.00%) in the last 5 s; "
        "2 queued orders go by rule (on_recover = release)"
    )
    [released] = sent(effects)
    assert (released.signal_id, released.ts_recv) == ("sig-5", check.fire_at)
    [rejected] = [e for e in effects if isinstance(e, SignalRejected)]
    assert (rejected.signal_id, rejected.code) == ("sig-6", "halted")
    assert not engine.breaker_open("V1")


def test_breaker_when_queued_too_long_then_dropped_with_reason() -> None:
    engine, check = tripped_engine()
    engine.handle(signal(5, ts_recv=T0 + 20))
    late = check.fire_at - 8 * NS
    engine.handle(signal(6, ts_recv=late))
    effects = engine.handle(fire(check))
    [rejected] = [e for e in effects if isinstance(e, SignalRejected)]
    waited_ms = (check.fire_at - T0 - 20) // MS
    assert (rejected.signal_id, rejected.code, rejected.reason) == (
        "sig-5",
        "circuit_breaker",
        f"queued {waited_ms} ms behind the circuit breaker of V1: older than max_queue_age 8000 ms",
    )
    assert [o.signal_id for o in sent(effects)] == ["sig-6"]


def test_breaker_when_on_recover_drop_then_every_queued_signal_dropped() -> None:
    engine, check = tripped_engine(msgspec.structs.replace(BREAKER, on_recover="drop"))
    engine.handle(signal(5, ts_recv=T0 + 20))
    engine.handle(signal(6, ts_recv=check.fire_at - 1))
    effects = engine.handle(fire(check))
    rejected = [e for e in effects if isinstance(e, SignalRejected)]
    assert [(r.signal_id, r.code) for r in rejected] == [
        ("sig-5", "circuit_breaker"),
        ("sig-6", "circuit_breaker"),
    ]
    assert rejected[1].reason == (
        "queued 0 ms behind the circuit breaker of V1: dropped by rule (on_recover = drop)"
    )
    assert sent(effects) == []


def test_breaker_when_still_tripped_at_check_then_rearmed_and_still_queueing() -> None:
    engine, check = tripped_engine(msgspec.structs.replace(BREAKER, window_ns=60 * NS))
    effects = engine.handle(fire(check))
    again = timer(effects, "breaker")
    assert effects == [again] and again.fire_at == check.fire_at + 10 * NS
    assert engine.breaker_open("V1")
    only_alert(engine.handle(signal(5, ts_recv=check.fire_at)), "ORDER_QUEUED")


def test_breaker_when_acks_missing_then_counted_as_errors() -> None:
    engine = make_engine(
        RiskConfig(breaker=msgspec.structs.replace(BREAKER, threshold_bps=5_000)),
        ack_timeout_ns=4 * NS,
    )
    armed = timer(engine.handle(signal(1, ts_recv=T0 + 1)), "ack_timeout")
    for n in range(2, 5):  # the ack watchdog is set already
        assert timers(engine.handle(signal(n, ts_recv=T0 + n)), "ack_timeout") == []
    alert, armed = engine.handle(fire(armed))
    assert isinstance(alert, Alert) and alert.code == "ACK_TIMEOUT" and alert.order_id == "r-1"
    assert isinstance(armed, ScheduleTimer) and armed.fire_at == T0 + 2 + 4 * NS
    effects = engine.handle(fire(armed))  # the second error of four orders sent: 50%
    assert [type(e).__name__ for e in effects] == [
        "Alert",
        "Alert",
        "ScheduleTimer",
        "ScheduleTimer",
    ]
    assert [a.code for a in effects if isinstance(a, Alert)] == ["ACK_TIMEOUT", "CIRCUIT_OPEN"]
    assert [t.purpose for t in effects if isinstance(t, ScheduleTimer)] == [
        "breaker",
        "ack_timeout",
    ]


def test_breaker_when_open_then_retry_is_not_sent_to_the_venue() -> None:
    # regression: the retry timer sent straight to a venue whose breaker was open
    engine = make_engine(RiskConfig(breaker=BreakerConfig(min_events=1, threshold_bps=5_000)))
    order = submit(engine)
    effects = engine.handle(reject(order, retryable=True))
    assert engine.breaker_open("V1")
    waiting = engine.handle(fire(timer(effects, "retry")))
    assert sent(waiting) == []
    # It waits, without using up a retry, and goes once the breaker has closed.
    engine.handle(fire(timer(effects, "breaker")))
    assert not engine.breaker_open("V1")
    [resent] = sent(engine.handle(fire(timer(waiting, "retry"), ts=T0 + 61 * NS)))
    assert resent.signal_id == "sig-1"


def test_breaker_when_open_then_next_slice_is_not_sent_to_the_venue() -> None:
    risk = RiskConfig(
        market=MarketChecks(**ADV), breaker=BreakerConfig(min_events=1, threshold_bps=5_000)
    )
    # regression: the next child went straight to a venue whose breaker was open
    engine = make_engine(risk)
    first = timer(engine.handle(signal(1, qty=25)), "slice")
    opened = engine.handle(reject(submit(engine, 2, qty=5)))
    assert engine.breaker_open("V1")
    waiting = engine.handle(fire(first))
    assert sent(waiting) == []
    engine.handle(fire(timer(opened, "breaker")))
    [child] = sent(engine.handle(fire(timer(waiting, "slice"), ts=T0 + 61 * NS)))
    assert (child.signal_id, child.qty) == ("sig-1", 10)


# --- lifecycle: rejects and retries ---------------------------------------------------------------


RETRY = LifecycleConfig(max_retries=4, retry_backoff_ns=100 * MS, retry_backoff_max_ns=300 * MS)


def test_retry_when_retryable_reject_then_backoff_doubles_capped_then_escalates() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    ids = [order.order_id]
    backoffs = []
    now = T0
    for attempt in range(1, 5):
        now += 1
        effects = engine.handle(reject(order, retryable=True, ts=now))
        retry = only_alert([e for e in effects if isinstance(e, Alert)], "ORDER_RETRY")
        scheduled = timer(effects, "retry")
        backoffs.append(scheduled.fire_at - now)
        assert retry.severity is Severity.INFO
        assert retry.text == (
            f"order {order.order_id} rejected by V1 (busy): retry {attempt} of 4 in "
            f"{backoffs[-1] // MS} ms"
        )
        [resent] = sent(engine.handle(fire(scheduled)))
        now = scheduled.fire_at
        assert (resent.signal_id, resent.qty, resent.side) == ("sig-1", 10, Side.BUY)
        order = engine.orders[resent.order_id]
        ids.append(order.order_id)
    assert backoffs == [100 * MS, 200 * MS, 300 * MS, 300 * MS]
    assert len(set(ids)) == 5
    effects = engine.handle(reject(order, retryable=True, ts=now + 1))
    assert only_alert(effects, "ORDER_REJECTED").text == (
        f"order {order.order_id} (BUY 10 BTC) rejected by V1: busy (retryable, but 4 retries "
        "already made)"
    )


def test_retry_when_not_retryable_then_escalated_at_once() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    alert = only_alert(engine.handle(reject(order, "insufficient margin")), "ORDER_REJECTED")
    assert alert.severity is Severity.WARNING
    assert alert.text == (
        "order r-1 (BUY 10 BTC) rejected by V1: insufficient margin (not retryable)"
    )


def test_retry_when_reason_listed_as_retryable_then_retried() -> None:
    cfg = msgspec.structs.replace(RETRY, retryable_reasons=("rate limit",))
    engine = make_engine(RiskConfig(lifecycle=cfg))
    order = submit(engine)
    effects = engine.handle(reject(order, "rate limit"))
    assert [a.code for a in effects if isinstance(a, Alert)] == ["ORDER_RETRY"]


def test_retry_when_reject_repeated_then_no_second_retry() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    first = engine.handle(reject(order, retryable=True))
    assert len(timers(first, "retry")) == 1
    assert engine.handle(reject(order, retryable=True, ts=T0 + 2)) == []
    assert len(sent(engine.handle(fire(timer(first, "retry"))))) == 1


def test_retry_when_halted_before_timer_then_not_resent() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    scheduled = timer(engine.handle(reject(order, retryable=True)), "retry")
    engine.handle(kill(reason="stop"))
    [rejected] = engine.handle(fire(scheduled))
    assert isinstance(rejected, SignalRejected)
    assert (rejected.code, rejected.reason) == (
        "halted",
        "trading halted for the firm (ann: stop): signal sig-1 not resent",
    )


def test_retry_when_venue_down_at_timer_then_not_resent() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    scheduled = timer(engine.handle(reject(order, retryable=True)), "retry")
    engine.handle(VenueDisconnected(ts_recv=T0 + 2, venue="V1", reason="down"))
    [rejected] = engine.handle(fire(scheduled))
    assert isinstance(rejected, SignalRejected)
    assert (rejected.code, rejected.reason) == (
        "venue_unavailable",
        "venue V1 is disconnected or reconciling: signal sig-1 not resent",
    )


def test_retry_when_signal_canceled_while_retry_pending_then_nothing_resent() -> None:
    # regression: the retry used to go out after the CANCEL answered nothing_to_cancel
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    scheduled = timer(engine.handle(reject(order, retryable=True)), "retry")
    dropped = only_alert(engine.handle(cancel_signal(2, "sig-1")), "PENDING_DROPPED")
    assert dropped.text == (
        "signal sig-2 canceled signal sig-1: 1 pending slice or retry dropped, nothing "
        "working at a venue"
    )
    assert engine.handle(fire(scheduled)) == []


def test_retry_when_signal_replaced_while_retry_pending_then_dropped_said_and_new_order() -> None:
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    scheduled = timer(engine.handle(reject(order, retryable=True)), "retry")
    effects = engine.handle(signal(2, ts_recv=T0 + 2, cancels="sig-1"))
    assert [type(e) for e in effects] == [Alert, SubmitOrder]  # the ack watchdog is set
    assert effects[0].code == "PENDING_DROPPED"  # type: ignore[attr-defined]
    assert effects[1].signal_id == "sig-2"  # type: ignore[attr-defined]
    assert engine.handle(fire(scheduled)) == []


def test_retry_when_rejected_after_cancel_request_then_not_retried() -> None:
    # regression: the reject of an order we were canceling scheduled a retry
    engine = make_engine(RiskConfig(lifecycle=RETRY))
    order = submit(engine)
    assert isinstance(engine.handle(cancel_signal(2, "sig-1"))[0], CancelOrder)
    effects = engine.handle(reject(order, retryable=True, ts=T0 + 3))
    assert only_alert(effects, "ORDER_REJECTED").text == (
        "order r-1 (BUY 10 BTC) rejected by V1: busy (a cancel was pending: not retried)"
    )


# --- lifecycle: partial fills, chasing, stale orders ---------------------------------------------


def test_partial_fill_when_cancel_after_then_remainder_canceled_if_still_partial() -> None:
    cfg = LifecycleConfig(partial_fill="cancel_after", partial_fill_after_ns=5 * NS)
    engine = make_engine(RiskConfig(lifecycle=cfg))
    order = submit_limit(engine, 1)
    effects = engine.handle(fill(order, 4))
    scheduled = timer(effects, "partial_timeout")
    assert (scheduled.fire_at, scheduled.order_id) == (T0 + 1 + 5 * NS, order.order_id)
    assert timers(engine.handle(fill(order, 2)), "partial_timeout") == []  # first partial only
    effects = engine.handle(fire(scheduled))
    info, cancel = effects
    assert isinstance(info, Alert) and info.code == "PARTIAL_CANCEL"
    assert info.text == (
        "order r-1 partly filled 6 of 10: canceling the remainder (partial_fill = cancel_after)"
    )
    assert isinstance(cancel, CancelOrder) and cancel.order_id == order.order_id
    assert order.status is S.PENDING_CANCEL


def test_partial_fill_when_filled_or_canceled_before_timer_then_nothing() -> None:
    cfg = LifecycleConfig(partial_fill="cancel_after")
    engine = make_engine(RiskConfig(lifecycle=cfg))
    done = submit_limit(engine, 1)
    first = timer(engine.handle(fill(done, 4)), "partial_timeout")
    engine.handle(fill(done, 6))
    assert engine.handle(fire(first)) == []
    gone = submit_limit(engine, 2)
    second = timer(engine.handle(fill(gone, 4)), "partial_timeout")
    engine.handle(OrderCanceled(ts_recv=T0 + 2, order_id=gone.order_id, venue="V1"))
    assert engine.handle(fire(second)) == []


def chase_engine(max_chases: int = 2) -> tuple[Engine, Order, ScheduleTimer]:
    cfg = LifecycleConfig(partial_fill="chase", chase_interval_ns=NS, max_chases=max_chases)
    engine = make_engine(RiskConfig(lifecycle=cfg))
    engine.handle(quote(bid=99_00, ask=101_00))
    order = submit_limit(engine, 1, 99_00)
    engine.handle(accept(order))
    scheduled = timer(engine.handle(fill(order, 3, 99_00)), "chase")
    return engine, order, scheduled


def test_chase_when_touch_moves_then_replace_at_touch_at_most_max_chases() -> None:
    engine, order, scheduled = chase_engine()
    engine.handle(quote(bid=99_50, ask=101_00, ts=T0 + 5))
    replace, again = engine.handle(fire(scheduled))
    assert replace == ReplaceOrder(
        ts_recv=scheduled.fire_at,
        order_id=order.order_id,
        venue="V1",
        instrument="BTC",
        qty=10,
        price=99_50,
    )
    assert isinstance(again, ScheduleTimer) and again.fire_at == scheduled.fire_at + NS
    assert order.status is S.PENDING_REPLACE
    # A fill racing the replace is booked; the replace then lands on the partly filled order.
    engine.handle(fill(order, 2, 99_00, ts=scheduled.fire_at + 1))
    assert (order.status, order.filled_qty) == (S.PENDING_REPLACE, 5)
    engine.handle(
        OrderReplaced(
            ts_recv=scheduled.fire_at + 2, order_id=order.order_id, venue="V1", qty=10, price=99_50
        )
    )
    assert (order.status, order.price, order.leaves_qty) == (S.PARTIALLY_FILLED, 99_50, 5)
    # Touch unchanged: no replace, the timer re-arms.
    effects = engine.handle(fire(again))
    [third] = timers(effects, "chase")
    assert effects == [third]
    engine.handle(quote(bid=99_75, ask=101_00, ts=third.fire_at - 1))
    replace, fourth = engine.handle(fire(third))
    assert isinstance(replace, ReplaceOrder) and replace.price == 99_75
    engine.handle(
        ReplaceRejected(ts_recv=third.fire_at + 1, order_id=order.order_id, venue="V1", reason="x")
    )
    assert order.status is S.PARTIALLY_FILLED
    engine.handle(quote(bid=100_00, ask=101_00, ts=fourth.fire_at - 1))
    assert engine.handle(fire(fourth)) == []  # max_chases (2) reached


def test_chase_when_full_fill_races_replace_then_filled_and_reject_absorbed() -> None:
    engine, order, scheduled = chase_engine()
    engine.handle(quote(bid=99_50, ask=101_00, ts=T0 + 5))
    _, again = engine.handle(fire(scheduled))
    engine.handle(fill(order, 7, 99_00, ts=scheduled.fire_at + 1))
    assert order.status is S.FILLED
    too_late = ReplaceRejected(
        ts_recv=scheduled.fire_at + 2, order_id=order.order_id, venue="V1", reason="filled"
    )
    assert engine.handle(too_late) == []
    assert order.status is S.FILLED and engine.anomalies == 0
    assert engine.handle(fire(again)) == []
    assert engine.positions.strategy_qty("A", "s1", "BTC") == 10


def test_chase_when_halted_and_cancel_rejected_then_no_replace() -> None:
    # regression: a ReplaceOrder went out while HALTED
    engine, order, scheduled = chase_engine()
    engine.handle(kill(ts=T0 + 2))
    engine.handle(CancelRejected(ts_recv=T0 + 3, order_id=order.order_id, venue="V1", reason="x"))
    assert order.status is S.PARTIALLY_FILLED
    engine.handle(quote(bid=99_50, ask=101_00, ts=T0 + 5))
    effects = engine.handle(fire(scheduled))
    assert [e for e in effects if isinstance(e, ReplaceOrder)] == []


def test_chase_when_venue_disconnected_then_no_replace() -> None:
    # regression: a ReplaceOrder went to a disconnected venue
    engine, _, scheduled = chase_engine()
    engine.handle(VenueDisconnected(ts_recv=T0 + 2, venue="V1", reason="down"))
    engine.handle(quote(bid=99_50, ask=101_00, ts=T0 + 5))
    effects = engine.handle(fire(scheduled))
    assert effects == timers(effects, "chase")  # it waits, re-armed
    # Back and reconciled, the chase goes on.
    engine.handle(VenueConnected(ts_recv=T0 + 6, venue="V1"))
    engine.handle(ReportsDone(ts_recv=T0 + 7, venue="V1"))
    effects = engine.handle(fire(timer(effects, "chase")))
    assert [e.price for e in effects if isinstance(e, ReplaceOrder)] == [99_50]


def test_stale_order_when_unfilled_past_limit_then_alert_only_if_still_unfilled() -> None:
    engine = make_engine(RiskConfig(lifecycle=LifecycleConfig(stale_order_ns=30 * NS)))
    effects = engine.handle(limit_signal(1))
    idle = engine.orders[sent(effects)[0].order_id]
    first = timer(effects, "stale_order")
    assert first.fire_at == T0 + 30 * NS
    alert = only_alert(engine.handle(fire(first)), "ORDER_STALE")
    assert alert.severity is Severity.WARNING
    assert alert.text == "order r-1 (BUY 10 BTC on V1) has worked 30 s without a fill"
    assert alert.order_id == idle.order_id
    effects = engine.handle(limit_signal(2))
    busy = engine.orders[sent(effects)[0].order_id]
    engine.handle(fill(busy, 1))
    assert engine.handle(fire(timer(effects, "stale_order"))) == []
    effects = engine.handle(limit_signal(3))
    engine.handle(OrderCanceled(ts_recv=T0 + 2, order_id=sent(effects)[0].order_id, venue="V1"))
    assert engine.handle(fire(timer(effects, "stale_order"))) == []


# --- reconciliation -------------------------------------------------------------------------------


def status_report(order: Order, **kw: Any) -> OrderStatusReport:
    fields: dict[str, Any] = {
        "ts_recv": T0 + 50,
        "venue": order.venue,
        "order_id": order.order_id,
        "instrument": order.instrument,
        "status": order.status,
        "side": order.side,
        "qty": order.qty,
        "filled_qty": order.filled_qty,
    }
    fields.update(kw)
    return OrderStatusReport(**fields)


def test_recon_when_venue_filled_more_then_fill_recovered_at_its_price() -> None:
    engine = make_engine()
    order = submit_limit(engine, 1, 100_00, side=Side.SELL)
    engine.handle(accept(order))
    engine.handle(fill(order, 4, 101_00))  # 404.00
    # The venue's average over 10 is 100.40: 1004.00 - 404.00 = 600.00 for 6, at 100.00.
    report = status_report(order, status=S.FILLED, filled_qty=10, avg_price=100_40)
    [adjusted] = engine.handle(report)
    assert adjusted == PositionAdjusted(
        ts_recv=T0 + 50,
        account="A",
        strategy="s1",
        instrument="BTC",
        venue="V1",
        qty=-6,
        price=100_00,
        code="RECOVERED_FILL",
        reason="V1 reports filled_qty 10 on order r-1, engine had 4: booked the missing 6 at 10000",
        order_id="r-1",
    )
    assert (order.status, order.filled_qty, order.fill_value) == (S.FILLED, 10, 1004_00)
    assert engine.positions.strategy_qty("A", "s1", "BTC") == -10
    assert engine.account_qty("A", "BTC") == (-10, 0, 0)


def test_recon_when_no_average_price_then_limit_price_else_mark() -> None:
    engine = make_engine()
    limit = submit_limit(engine, 1, 98_00)
    [adjusted] = engine.handle(status_report(limit, status=S.PARTIALLY_FILLED, filled_qty=3))
    assert isinstance(adjusted, PositionAdjusted) and (adjusted.qty, adjusted.price) == (3, 98_00)
    assert limit.status is S.PARTIALLY_FILLED
    engine.handle(quote(bid=99_00, ask=101_00))
    market = submit(engine, 2)
    [adjusted] = engine.handle(status_report(market, status=S.FILLED, filled_qty=10))
    assert isinstance(adjusted, PositionAdjusted) and adjusted.price == 100_00


def test_recon_when_venue_canceled_while_we_think_accepted_then_closed() -> None:
    engine = make_engine()
    order = submit_limit(engine, 1)
    engine.handle(accept(order))
    assert engine.account_qty("A", "BTC") == (0, 10, 0)
    alert = only_alert(engine.handle(status_report(order, status=S.CANCELED)), "RECON_STATUS")
    assert alert.severity is Severity.INFO
    assert alert.text == "order r-1: engine had ACCEPTED, V1 reports CANCELED; corrected"
    assert order.status is S.CANCELED
    assert engine.account_qty("A", "BTC") == (0, 0, 0)


def test_recon_when_other_difference_then_critical_mismatch_halts_that_instrument() -> None:
    engine = make_engine()
    order = submit_limit(engine, 1)
    other_btc = submit_limit(engine, 2, strategy="s2")
    eth = submit_limit(engine, 3, instrument="ETH")
    effects = engine.handle(status_report(order, side=Side.SELL))
    mismatch = effects[0]
    assert isinstance(mismatch, Alert) and mismatch.code == "RECON_MISMATCH"
    assert mismatch.severity is Severity.CRITICAL
    assert mismatch.text == (
        "V1 reports order r-1 with side=SELL; engine has side=BUY: instrument BTC halted "
        "until an operator resumes it"
    )
    assert [e.order_id for e in effects[1:] if isinstance(e, CancelOrder)] == [
        order.order_id,
        other_btc.order_id,
    ]
    assert eth.status is S.PENDING_NEW
    assert engine.trading_state("instrument:BTC") is TradingState.HALTED
    assert denied(engine, limit_signal(4))[0] == "halted"


def test_recon_when_position_within_tolerance_then_adjusted_to_recon_strategy() -> None:
    engine = make_engine(RiskConfig(recon_tolerance={"*": 1, "BTC": 5}))
    order = submit(engine)
    engine.handle(fill(order, 10))
    report = PositionReport(ts_recv=T0 + 50, venue="V1", account="A", instrument="BTC", qty=13)
    assert engine.handle(msgspec.structs.replace(report, qty=10)) == []
    engine.handle(quote(bid=99_00, ask=101_00))
    [adjusted] = engine.handle(report)
    assert adjusted == PositionAdjusted(
        ts_recv=T0 + 50,
        account="A",
        strategy="_recon",
        instrument="BTC",
        venue="V1",
        qty=3,
        price=100_00,
        code="RECON_ADJUST",
        reason="V1 reports 13, engine had 10: difference 3 within tolerance 5, booked at 10000 "
        "to strategy _recon",
    )
    assert engine.positions.strategy_qty("A", "_recon", "BTC") == 3
    net = engine.positions.net_position("A", "BTC")
    assert net is not None and net.qty == 13
    assert engine.venue_position("V1", "A", "BTC") == 13
    assert engine.handle(report) == []  # reconciled: the same report is now silent


def test_recon_when_position_beyond_tolerance_then_mismatch_and_halt() -> None:
    engine = make_engine(RiskConfig(recon_tolerance={"*": 1, "BTC": 5}))
    eth = submit(engine, 1, instrument="ETH")
    engine.handle(fill(eth, 10))
    working = submit(engine, 2, instrument="ETH")
    report = PositionReport(
        ts_recv=T0 + 50, venue="V1", account="A", instrument="ETH", qty=8, avg_price=100_00
    )
    effects = engine.handle(report)
    assert effects[0] == Alert(
        ts_recv=T0 + 50,
        severity=Severity.CRITICAL,
        code="RECON_MISMATCH",
        text="V1 reports position 8 in ETH for account A; engine has 10 through V1 (difference "
        "-2, tolerance 1): instrument halted until an operator resumes it",
        instrument="ETH",
        venue="V1",
    )
    assert [e.order_id for e in effects[1:] if isinstance(e, CancelOrder)] == [working.order_id]
    assert engine.trading_state("instrument:ETH") is TradingState.HALTED


def test_recon_when_adjusted_then_exposure_groups_count_it() -> None:
    # regression: RECON_ADJUST reached the firm, account and strategy aggregates only
    risk = RiskConfig(
        recon_tolerance={"*": 5}, limits=LimitsConfig(exposure={"asset_class:CRYPTO": 10**9})
    )
    engine = make_engine(risk)
    engine.handle(quote())
    order = submit(engine)
    engine.handle(fill(order, 10))
    engine.handle(
        PositionReport(ts_recv=T0 + 50, venue="V1", account="A", instrument="BTC", qty=13)
    )
    group = engine.aggregates()["asset_class:CRYPTO"].terms["BTC"]
    assert group.pos == engine.aggregates()["*"].terms["BTC"].pos == 13


def test_reconnect_when_reports_done_then_reconciled_before_new_orders() -> None:
    engine = make_engine(ack_timeout_ns=3 * NS)
    order = submit_limit(engine, 1)
    engine.handle(accept(order))
    assert engine.handle(VenueConnected(ts_recv=T0 + 2, venue="V1")) == []  # was never down
    engine.handle(VenueDisconnected(ts_recv=T0 + 3, venue="V1", reason="heartbeat lost"))
    effects = engine.handle(VenueConnected(ts_recv=T0 + 4, venue="V1"))
    request, recon_timer = effects
    assert request == RequestReports(
        ts_recv=T0 + 4,
        venue="V1",
        reason=f"reconnect after disconnect at ts {T0 + 3} (heartbeat lost)",
    )
    assert isinstance(recon_timer, ScheduleTimer)
    assert (recon_timer.purpose, recon_timer.order_id, recon_timer.fire_at) == (
        "recon_timeout",
        "V1",
        T0 + 4 + 3 * NS,
    )
    assert engine.reconciling("V1")
    assert denied(engine, signal(2, ts_recv=T0 + 5))[0] == "venue_reconciling"
    # A fill missed while disconnected comes back in the status report.
    [recovered] = engine.handle(status_report(order, status=S.PARTIALLY_FILLED, filled_qty=4))
    assert isinstance(recovered, PositionAdjusted) and recovered.code == "RECOVERED_FILL"
    assert engine.positions.strategy_qty("A", "s1", "BTC") == 4
    done = only_alert(engine.handle(ReportsDone(ts_recv=T0 + 60, venue="V1")), "RECONCILED")
    assert done.text == (f"V1 reconciled after the reconnect at ts {T0 + 4}: new orders may go out")
    assert engine.handle(fire(recon_timer)) == []
    submit(engine, 3, ts_recv=T0 + 61)


def test_reconnect_when_reports_late_then_recon_timeout_alert_and_still_gated() -> None:
    engine = make_engine(ack_timeout_ns=3 * NS)
    engine.handle(VenueDisconnected(ts_recv=T0, venue="V1", reason="down"))
    _, recon_timer = engine.handle(VenueConnected(ts_recv=T0 + 1, venue="V1"))
    assert isinstance(recon_timer, ScheduleTimer)
    alert = only_alert(engine.handle(fire(recon_timer)), "RECON_TIMEOUT")
    assert alert.severity is Severity.CRITICAL
    assert alert.text == (
        f"V1 has not finished its reports since the reconnect at ts {T0 + 1}: no new orders "
        "go to it"
    )
    assert denied(engine, signal(1, ts_recv=recon_timer.fire_at))[0] == "venue_reconciling"


# --- multi-account, multi-strategy ---------------------------------------------------------------


def test_multi_account_when_account_and_firm_limits_then_both_apply() -> None:
    engine = make_engine(
        limits(
            firm=LimitSet(max_gross_notional=300_000),
            accounts={"A": LimitSet(max_gross_notional=150_000)},
        )
    )
    submit_limit(engine, 1)  # A 100000
    assert denied(engine, limit_signal(2))[1] == (
        "gross notional of account A would be 200000 with working orders and this order: "
        "above max_gross_notional 150000 (config)"
    )
    submit_limit(engine, 3, account="B")  # firm 200000
    submit_limit(engine, 4, account="B")  # firm 300000: at the limit
    assert denied(engine, limit_signal(5, account="C", qty=1))[1] == (
        "gross notional of the firm would be 310000 with working orders and this order: "
        "above max_gross_notional 300000 (config)"
    )


def test_multi_strategy_when_fills_then_attributed_to_each_orders_strategy_and_netted() -> None:
    engine = make_engine(limits(instruments={"BTC": LimitSet(max_net_qty=8)}))
    s1 = submit(engine, 1, qty=8)
    s2 = submit(engine, 2, strategy="s2", side=Side.SELL, qty=4)
    engine.handle(fill(s2, 4, 101_00))
    engine.handle(fill(s1, 8, 100_00))
    book = engine.positions
    assert book.strategy_qty("A", "s1", "BTC") == 8
    assert book.strategy_qty("A", "s2", "BTC") == -4
    net = book.net_position("A", "BTC")
    assert net is not None and net.qty == 4
    assert engine.account_qty("A", "BTC") == (4, 0, 0)
    # The net limit is on the account's net across strategies: s1 may add 4, not 5.
    assert denied(engine, signal(3, qty=5))[1].startswith(
        "net position of A with working orders and this order would reach 9"
    )
    submit(engine, 4, qty=4)
