"""engine/risk.py on its own: config validation, money, each check, limits, aggregates, breaker."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import (
    LIMIT_NAMES,
    BreakerConfig,
    EngineConfig,
    LimitsConfig,
    LimitSet,
    MarketChecks,
    RiskConfig,
    VenueRules,
    config_problem,
)
from engine.core import Engine
from engine.instruments import Denial
from engine.messages import (
    AssetClass,
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
    state_rank,
    venue_rules_denial,
)

NS = 1_000_000_000
SAP = Instrument(
    instrument="SAP",
    asset_class=AssetClass.EQUITY,
    currency="EUR",
    price_precision=2,
    size_precision=3,
    multiplier=5,
    venue_symbols={"XETRA": "SAP"},
)
BTC = Instrument(
    instrument="BTC",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"V1": "BTC"},
)


# --- config validation -------------------------------------------------------------------


def test_config_problem_when_default_then_none() -> None:
    assert config_problem(RiskConfig()) is None


CONFIG_PROBLEMS: list[tuple[str, dict[str, Any], str]] = [
    ("precision", {"money_precision": 9}, "risk.money_precision must be in 0..8, got 9"),
    ("negative precision", {"money_precision": -1}, "risk.money_precision must be in 0..8, got -1"),
    (
        "fx rate text",
        {"fx_rates": {"EUR": "abc"}},
        "risk.fx_rates['EUR'] must be a positive decimal string, got 'abc'",
    ),
    (
        "fx rate zero",
        {"fx_rates": {"EUR": "0.0"}},
        "risk.fx_rates['EUR'] must be a positive decimal string, got '0.0'",
    ),
    (
        "fx rate negative",
        {"fx_rates": {"JPY": "-0.0067"}},
        "risk.fx_rates['JPY'] must be a positive decimal string, got '-0.0067'",
    ),
    (
        "fx rate exponent",
        {"fx_rates": {"GBP": "1e3"}},
        "risk.fx_rates['GBP'] must be a positive decimal string, got '1e3'",
    ),
    (
        "negative firm limit",
        {"limits": {"firm": {"max_order_qty": -1}}},
        "risk.limits.firm.max_order_qty must be >= 0, got -1",
    ),
    (
        "negative account loss",
        {"limits": {"accounts": {"A": {"daily_loss": -5}}}},
        "risk.limits.accounts.A.daily_loss must be >= 0, got -5",
    ),
    (
        "qty limit at account",
        {"limits": {"accounts": {"A": {"max_net_qty": 5}}}},
        "risk.limits.accounts.A.max_net_qty: quantity limits are in an instrument's size units: "
        "expected them under risk.limits.instruments.<name> or risk.limits.firm (a default for "
        "every instrument)",
    ),
    (
        "qty limit at strategy",
        {"limits": {"strategies": {"S": {"max_order_qty": 5}}}},
        "risk.limits.strategies.S.max_order_qty: quantity limits are in an instrument's size "
        "units: expected them under risk.limits.instruments.<name> or risk.limits.firm (a "
        "default for every instrument)",
    ),
    (
        "qty limit at venue",
        {"limits": {"venues": {"V": {"max_gross_qty": 5}}}},
        "risk.limits.venues.V.max_gross_qty: quantity limits are in an instrument's size units: "
        "expected them under risk.limits.instruments.<name> or risk.limits.firm (a default for "
        "every instrument)",
    ),
    (
        "exposure key",
        {"limits": {"exposure": {"desk:rates": 5}}},
        "risk.limits.exposure key 'desk:rates': expected 'portfolio', 'asset_class:X', "
        "'sector:X' or 'country:X'",
    ),
    (
        "exposure value",
        {"limits": {"exposure": {"sector:tech": -1}}},
        "risk.limits.exposure['sector:tech'] must be >= 0, got -1",
    ),
    (
        "rate window",
        {"limits": {"rate_window_ns": 0}},
        "risk.limits.rate_window_ns must be > 0, got 0",
    ),
    (
        "breaker window",
        {"breaker": {"window_ns": -1}},
        "risk.breaker.window_ns must be > 0, got -1",
    ),
    ("check interval", {"check_interval_ns": 0}, "risk.check_interval_ns must be > 0, got 0"),
    (
        "slice interval",
        {"market": {"slice_interval_ns": 0}},
        "risk.market.slice_interval_ns must be > 0, got 0",
    ),
    (
        "retry backoff",
        {"lifecycle": {"retry_backoff_ns": 0}},
        "risk.lifecycle.retry_backoff_ns must be > 0, got 0",
    ),
    (
        "threshold zero",
        {"breaker": {"threshold_bps": 0}},
        "risk.breaker.threshold_bps must be in 1..10000, got 0",
    ),
    (
        "threshold above 100%",
        {"breaker": {"threshold_bps": 10_001}},
        "risk.breaker.threshold_bps must be in 1..10000, got 10001",
    ),
]


@pytest.mark.parametrize(
    ("raw", "problem"), [c[1:] for c in CONFIG_PROBLEMS], ids=[c[0] for c in CONFIG_PROBLEMS]
)
def test_config_problem_when_field_invalid_then_names_field_value_and_expectation(
    raw: dict[str, Any], problem: str
) -> None:
    cfg = msgspec.convert(raw, RiskConfig)
    assert config_problem(cfg) == problem
    with pytest.raises(ValueError) as info:
        Engine(EngineConfig(run_id="r", instruments=(BTC,), risk=cfg))
    assert str(info.value) == f"EngineConfig.{problem}"


def test_config_problem_when_rates_well_formed_then_none() -> None:
    cfg = RiskConfig(fx_rates={"EUR": "1.0850", "JPY": ".0067", "GBP": " 1.27 ", "CHF": "1."})
    assert config_problem(cfg) is None


def test_risk_config_when_unknown_field_then_decode_error_names_it() -> None:
    with pytest.raises(msgspec.ValidationError, match="unknown field `max_qty`"):
        msgspec.convert({"limits": {"firm": {"max_qty": 5}}}, RiskConfig)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            {"instruments": {"BTC": {"max_net_notional": 5}}},
            "risk.limits.instruments.BTC.max_net_notional: max_net_notional is not a limit at "
            "the instrument level: expected it at firm or account or strategy",
        ),
        (
            {"venues": {"V1": {"daily_loss": 5}}},
            "risk.limits.venues.V1.daily_loss: daily_loss is not a limit at the venue level: "
            "expected it at firm or account or strategy",
        ),
    ],
)
def test_config_problem_when_limit_at_scope_never_read_then_named(
    raw: dict[str, Any], problem: str
) -> None:
    # regression: such limits were accepted and silently never applied
    assert config_problem(msgspec.convert({"limits": raw}, RiskConfig)) == problem


# --- scopes and states -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", ("firm", "*")),
        ("firm", ("firm", "*")),
        ("account:A", ("account", "A")),
        ("strategy:mm:v2", ("strategy", "mm:v2")),
        ("BTC-USD", ("instrument", "BTC-USD")),
        ("venue:V1", ("venue", "V1")),
    ],
)
def test_scope_of_when_text_then_level_and_name(text: str, expected: tuple[str, str]) -> None:
    assert scope_of(text) == expected


def test_state_rank_when_states_then_strictness_order() -> None:
    ranks = [
        state_rank(s) for s in (TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED)
    ]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3


def test_state_board_when_scopes_set_then_strictest_wins_with_its_scope() -> None:
    board = StateBoard()
    assert board.effective("A", "S", "X") == (TradingState.ACTIVE, "", "")
    board.set("strategy:S", TradingState.REDUCING, "loss")
    board.set("instrument:Y", TradingState.HALTED, "recon")
    assert board.effective("A", "S", "X") == (TradingState.REDUCING, "strategy:S", "loss")
    assert board.effective("A", "S", "Y") == (TradingState.HALTED, "instrument:Y", "recon")
    assert board.effective("B", "T", "X") == (TradingState.ACTIVE, "", "")
    board.set("*", TradingState.HALTED, "ops")
    assert board.effective("B", "T", "X") == (TradingState.HALTED, "*", "ops")
    # The first scope of the strictest rank is reported (firm before instrument).
    assert board.effective("A", "S", "Y")[1] == "*"
    assert [scope for scope, _, _ in board.items()] == ["*", "instrument:Y", "strategy:S"]
    board.set("*", TradingState.ACTIVE, "")
    assert board.get("*") is TradingState.ACTIVE
    assert len(board.items()) == 2


# --- money -------------------------------------------------------------------------------


def test_money_when_base_currency_then_price_times_qty_in_money_units() -> None:
    money = Money(RiskConfig())
    money.set_instrument(BTC)
    # price 100.50 (2 dp) x 3 units = 301.50 USD = 30150 cents.
    assert money.of("BTC", 100_50, 3) == 30_150
    assert money.convertible("BTC")


def test_money_when_foreign_currency_then_converted_exactly_and_truncated_toward_zero() -> None:
    money = Money(RiskConfig(fx_rates={"EUR": "1.1"}))
    money.set_instrument(SAP)
    # 123.45 EUR x 2.500 x multiplier 5 x 1.1 = 1697.4375 USD -> 169743 cents.
    assert money.of("SAP", 123_45, 2_500) == 169_743
    assert money.of("SAP", 123_45, -2_500) == -169_743
    # P&L of the same amount in notional units (multiplier included) converts the same way.
    assert money.notional_to_money("SAP", 123_45 * 2_500 * 5) == 169_743


def test_money_when_no_rate_then_not_convertible_and_zero() -> None:
    money = Money(RiskConfig(fx_rates={"GBP": "1.27"}))
    money.set_instrument(SAP)
    assert not money.convertible("SAP")
    assert money.of("SAP", 100, 100) == 0
    assert not money.convertible("UNKNOWN")
    money.set_instrument(msgspec.structs.replace(SAP, currency="GBP"))
    assert money.convertible("SAP")


def test_money_when_precision_changes_then_scale_follows() -> None:
    money = Money(RiskConfig(money_precision=0))
    money.set_instrument(BTC)
    assert money.of("BTC", 100_99, 1) == 100  # 100.99 USD in whole dollars, truncated


@given(
    price=st.integers(1, 10**9),
    qty=st.integers(-(10**6), 10**6),
    rate=st.decimals(min_value="0.0001", max_value="1000", places=4),
)
def test_money_of_when_any_values_then_equals_exact_fraction_truncated(
    price: int, qty: int, rate: Any
) -> None:
    money = Money(RiskConfig(fx_rates={"EUR": format(rate, "f")}))
    money.set_instrument(SAP)
    exact = Fraction(price * qty * SAP.multiplier) * Fraction(rate) * 100 / 10**5
    expected = int(exact)  # int() truncates toward zero
    assert money.of("SAP", price, qty) == expected


# --- schema ------------------------------------------------------------------------------------


def sig(**kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": 1,
        "signal_id": "s-1",
        "strategy": "mm",
        "account": "A",
        "instrument": "BTC",
        "side": Side.BUY,
        "qty": 5,
    }
    fields.update(kw)
    return Signal(**fields)


SCHEMA: list[tuple[dict[str, Any], str]] = [
    (
        {"signal_id": ""},
        "signal '': signal_id must be a non-empty name without surrounding spaces, got ''",
    ),
    (
        {"strategy": " mm"},
        "signal 's-1': strategy must be a non-empty name without surrounding spaces, got ' mm'",
    ),
    (
        {"account": ""},
        "signal 's-1': account must be a non-empty name without surrounding spaces, got ''",
    ),
    (
        {"instrument": "BTC\t"},
        "signal 's-1': instrument must be a non-empty name without surrounding spaces, "
        "got 'BTC\\t'",
    ),
    ({"qty": -1}, "signal s-1: qty must be >= 0, got -1"),
    ({"price": 0}, "signal s-1: price must be > 0 and fit int64, got 0"),
    ({"price": 2**63}, f"signal s-1: price must be > 0 and fit int64, got {2**63}"),
    ({"stop_price": -5}, "signal s-1: stop_price must be > 0 and fit int64, got -5"),
    ({"signal_price": 0}, "signal s-1: signal_price must be > 0 and fit int64, got 0"),
    (
        {"intent": SignalIntent.TARGET, "target": -(2**63)},
        "signal s-1: target out of range",
    ),
]


@pytest.mark.parametrize(("kw", "reason"), SCHEMA)
def test_schema_denial_when_field_out_of_range_then_schema_with_reason(
    kw: dict[str, Any], reason: str
) -> None:
    assert schema_denial(sig(**kw)) == Denial(code="schema", reason=reason)


def test_schema_denial_when_fields_valid_then_none() -> None:
    assert schema_denial(sig(price=1, stop_price=2**63 - 2, signal_price=5)) is None
    assert schema_denial(sig(qty=0)) is None  # qty 0 is the intent check's business


# --- venue rules ----------------------------------------------------------------------------


RULES = VenueRules(
    order_types=(OrderType.LIMIT, OrderType.MARKET),
    tifs=(TimeInForce.GTC, TimeInForce.IOC),
    do_not_trade=("GME",),
)


def test_venue_rules_denial_when_no_rules_then_anything_goes() -> None:
    assert venue_rules_denial(None, "V", "GME", OrderType.STOP, TimeInForce.FOK) is None


def test_venue_rules_denial_when_supported_then_none() -> None:
    assert venue_rules_denial(RULES, "V", "BTC", OrderType.LIMIT, TimeInForce.IOC) is None


@pytest.mark.parametrize(
    ("instrument", "order_type", "tif", "code", "reason"),
    [
        (
            "BTC",
            OrderType.STOP,
            TimeInForce.GTC,
            "order_type_unsupported",
            "venue V does not take STOP orders: expected one of LIMIT, MARKET",
        ),
        (
            "BTC",
            OrderType.LIMIT,
            TimeInForce.DAY,
            "tif_unsupported",
            "venue V does not take time in force DAY: expected one of GTC, IOC",
        ),
        (
            "GME",
            OrderType.LIMIT,
            TimeInForce.GTC,
            "do_not_trade",
            "GME is on the do-not-trade list of venue V",
        ),
    ],
)
def test_venue_rules_denial_when_rule_broken_then_code_and_reason(
    instrument: str, order_type: OrderType, tif: TimeInForce, code: str, reason: str
) -> None:
    denial = venue_rules_denial(RULES, "V", instrument, order_type, tif)
    assert denial == Denial(code=code, reason=reason)


# --- market state --------------------------------------------------------------------------


def quote(bid: int | None = 99_00, ask: int | None = 101_00, ts: int = 0) -> QuoteTick:
    return QuoteTick(
        ts_recv=ts,
        instrument="BTC",
        venue="V1",
        bid_price=bid,
        bid_size=5,
        ask_price=ask,
        ask_size=5,
    )


def test_mid_of_when_one_sided_or_missing_then_none_else_floor_mid() -> None:
    assert mid_of(None) is None
    assert mid_of(quote(bid=None)) is None
    assert mid_of(quote(ask=None)) is None
    assert mid_of(quote(bid=100, ask=103)) == 101


def test_quote_denial_when_no_quote_then_denied_only_if_required() -> None:
    assert quote_denial(MarketChecks(), None, "BTC", "V1", 0) is None
    cfg = MarketChecks(require_quote=True)
    expected = Denial(
        code="no_quote",
        reason="no two-sided quote for BTC on V1: the market checks need one",
    )
    assert quote_denial(cfg, None, "BTC", "V1", 0) == expected
    assert quote_denial(cfg, quote(ask=None), "BTC", "V1", 0) == expected


def test_quote_denial_when_older_than_max_age_then_stale() -> None:
    cfg = MarketChecks(max_quote_age_ns=500_000_000)
    assert quote_denial(cfg, quote(ts=0), "BTC", "V1", 500_000_000) is None
    denial = quote_denial(cfg, quote(ts=0), "BTC", "V1", 1_250_000_000)
    assert denial == Denial(
        code="stale_quote",
        reason="last quote for BTC on V1 is 1250 ms old: max_quote_age 500 ms",
    )


def test_quote_denial_when_spread_wider_than_max_then_spread() -> None:
    cfg = MarketChecks(max_spread_bps=200)
    # spread 200 on mid 10000 is exactly 200 bps: allowed.
    assert quote_denial(cfg, quote(99_00, 101_00), "BTC", "V1", 0) is None
    denial = quote_denial(cfg, quote(99_00, 101_10), "BTC", "V1", 0)
    # (10110 - 9900) * 10000 // 10005 = 209 bps.
    assert denial == Denial(
        code="spread",
        reason="spread of BTC on V1 is 209 bps (bid 9900 ask 10110): max_spread 200 bps",
    )


def test_collar_denial_when_aggressive_beyond_collar_then_price_collar() -> None:
    cfg = MarketChecks(collar_bps=100)
    assert collar_denial(cfg, Side.BUY, 101_00, 100_00, "BTC") is None  # exactly 100 bps
    assert collar_denial(cfg, Side.BUY, 50_00, 100_00, "BTC") is None  # passive: no fat finger
    assert collar_denial(cfg, Side.SELL, 150_00, 100_00, "BTC") is None
    assert collar_denial(cfg, Side.BUY, 102_00, None, "BTC") is None
    assert collar_denial(MarketChecks(), Side.BUY, 900_00, 100_00, "BTC") is None
    assert collar_denial(cfg, Side.BUY, 101_02, 100_00, "BTC") == Denial(
        code="price_collar",
        reason="BUY BTC at 10102 is 102 bps through the mid 10000: collar 100 bps",
    )
    assert collar_denial(cfg, Side.SELL, 98_00, 100_00, "BTC") == Denial(
        code="price_collar",
        reason="SELL BTC at 9800 is 200 bps through the mid 10000: collar 100 bps",
    )


def test_impact_bps_when_levels_then_vwap_through_mid() -> None:
    asks = [(101, 10), (103, 10), (110, 100)]
    # 15 at (101 x 10 + 103 x 5) = 1525 vs mid 100 x 15 = 1500: 25 x 10000 // 1500 = 166.
    assert impact_bps(Side.BUY, 15, asks, 100) == 166
    assert impact_bps(Side.BUY, 10, asks, 100) == 100
    bids = [(99, 4), (97, 4)]
    # 6 at 99 x 4 + 97 x 2 = 590 vs 600: 10 x 10000 // 600 = 166.
    assert impact_bps(Side.SELL, 6, bids, 100) == 166
    assert impact_bps(Side.SELL, 9, bids, 100) is None  # the book cannot fill it
    assert impact_bps(Side.BUY, 1, [], 100) is None


# --- rolling counters ----------------------------------------------------------------------


def test_rate_window_when_time_passes_then_old_events_roll_out() -> None:
    rates = RateWindow(10)
    for ts in (1, 5, 9):
        rates.add("k", ts)
    assert rates.count("k", 9) == 3
    assert rates.count("k", 11) == 2  # (1, 11]: the event at 1 is out
    assert rates.count("k", 15) == 1  # (5, 15]
    assert rates.count("k", 19) == 0
    assert rates.count("other", 19) == 0


# --- limits with overrides --------------------------------------------------------------------


CFG = LimitsConfig(
    firm=LimitSet(max_order_notional=1_000),
    accounts={"A": LimitSet(max_net_notional=500)},
    instruments={"BTC": LimitSet(max_order_qty=7)},
    venues={"V1": LimitSet(max_orders_per_window=3)},
)


def override(limit: str, scope: str, value: int, expires_at: int | None = None) -> LimitOverride:
    return LimitOverride(
        ts_recv=0,
        operator="ann",
        reason="desk ask",
        limit=limit,
        scope=scope,
        value=value,
        expires_at=expires_at,
    )


def test_limits_value_when_configured_then_config_else_none() -> None:
    limits = Limits(CFG)
    assert limits.value("firm", "*", "max_order_notional", 0) == (1_000, "config")
    assert limits.value("account", "A", "max_net_notional", 0) == (500, "config")
    assert limits.value("account", "B", "max_net_notional", 0) == (None, "config")
    assert limits.value("instrument", "BTC", "max_order_qty", 0) == (7, "config")
    assert limits.value("venue", "V1", "max_orders_per_window", 0) == (3, "config")
    assert limits.configured("desk", "x") is None
    assert limits.config is CFG


def test_limits_override_when_active_then_replaces_config_until_expiry() -> None:
    limits = Limits(CFG)
    assert limits.override(override("max_net_notional", "account:A", 900, 100)) is None
    assert limits.override(override("max_net_notional", "account:B", 50)) is None
    assert limits.value("account", "A", "max_net_notional", 99) == (900, "override by ann")
    assert limits.value("account", "A", "max_net_notional", 100) == (500, "config")
    assert limits.value("account", "B", "max_net_notional", 10**18) == (50, "override by ann")
    # The latest override of a scope and limit replaces the earlier one.
    limits.override(override("max_net_notional", "account:A", 10, None))
    assert limits.value("account", "A", "max_net_notional", 10**18) == (10, "override by ann")
    assert [(o.scope, o.value) for o in limits.overrides()] == [
        ("account:A", 10),
        ("account:B", 50),
    ]
    assert limits.has_overrides()


def test_limits_override_when_bare_instrument_or_star_then_scoped_accordingly() -> None:
    limits = Limits(CFG)
    assert limits.override(override("max_net_qty", "BTC", 3)) is None
    assert limits.override(override("max_gross_qty", "*", 4)) is None
    assert limits.value("instrument", "BTC", "max_net_qty", 0) == (3, "override by ann")
    assert limits.value("firm", "*", "max_gross_qty", 0) == (4, "override by ann")


@pytest.mark.parametrize(
    ("limit", "scope", "value", "problem"),
    [
        (
            "max_net_notional",
            "desk:rates",
            5,
            "scope 'desk:rates': expected '*', 'account:A', 'strategy:S', 'instrument:X' "
            "or 'venue:V'",
        ),
        (
            "max_position",
            "*",
            5,
            "limit 'max_position' unknown, expected one of " + ", ".join(LIMIT_NAMES),
        ),
        (
            "max_net_qty",
            "account:A",
            5,
            "limit max_net_qty is in size units: expected an instrument scope or '*'",
        ),
        ("daily_loss", "strategy:S", -1, "value must be >= 0, got -1"),
        (
            "max_net_notional",
            "instrument:BTC",
            5,
            "max_net_notional is not a limit at the instrument level: expected it at firm or "
            "account or strategy",
        ),
    ],
)
def test_limits_override_when_invalid_then_problem_and_nothing_recorded(
    limit: str, scope: str, value: int, problem: str
) -> None:
    limits = Limits(CFG)
    assert limits.override(override(limit, scope, value)) == problem
    assert not limits.has_overrides()


# --- aggregates ------------------------------------------------------------------------------


def money_usd() -> Money:
    money = Money(RiskConfig())
    money.set_instrument(BTC)
    money.set_instrument(msgspec.structs.replace(BTC, instrument="ETH"))
    return money


def test_aggregate_when_orders_and_fills_then_worst_case_long_short_gross() -> None:
    money = money_usd()
    agg = Aggregate()
    agg.apply(money, "BTC", 0, 10, 0, 100)  # working buy 10 at 1.00
    agg.apply(money, "ETH", 0, 0, 4, 200)  # working sell 4 at 2.00
    assert (agg.long, agg.short, agg.gross) == (1_000, -800, 1_800)
    agg.apply(money, "BTC", 6, -6, 0, 100)  # 6 of the buy filled
    assert (agg.long, agg.short, agg.gross) == (1_000, -200, 1_800)
    # Both sides of one instrument: the gross term is the worse of the two.
    agg.apply(money, "BTC", 0, 0, 20, 100)  # pos 6, wb 4, ws 20: long 10, short -14
    assert agg.terms["BTC"].gross == 1_400
    assert (agg.long, agg.short, agg.gross) == (1_000, -2_200, 2_200)


def test_aggregate_with_order_when_added_then_state_unchanged_and_term_revalued() -> None:
    money = money_usd()
    agg = Aggregate()
    agg.apply(money, "BTC", 5, 0, 0, 100)
    before = (agg.long, agg.short, agg.gross)
    # The instrument's whole term is valued at the order's reference price.
    assert agg.with_order(money, "BTC", Side.BUY, 5, 300) == (3_000, 1_500, 3_000)
    assert agg.with_order(money, "ETH", Side.SELL, 2, 200) == (500, 100, 900)
    assert (agg.long, agg.short, agg.gross) == before


def test_aggregate_revalue_when_marks_then_terms_at_marks() -> None:
    money = money_usd()
    agg = Aggregate()
    agg.apply(money, "BTC", 5, 0, 0, 100)
    agg.apply(money, "ETH", -3, 0, 0, 200)
    agg.revalue(money, {"BTC": 120})
    assert (agg.long, agg.short, agg.gross) == (600 - 600, 600 - 600, 600 + 600)
    assert agg.terms["ETH"].price == 200 and agg.terms["BTC"].price == 120


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BTC", "ETH"]),
            st.integers(-20, 20),
            st.integers(-20, 20),
            st.integers(-20, 20),
            st.integers(1, 500),
        ),
        max_size=30,
    )
)
def test_aggregate_when_random_changes_then_totals_equal_sum_of_terms(
    changes: list[tuple[str, int, int, int, int]],
) -> None:
    money = money_usd()
    agg = Aggregate()
    for name, dpos, dwb, dws, price in changes:
        agg.apply(money, name, dpos, dwb, dws, price)
    long = sum(money.of(n, t.price, t.pos + t.wb) for n, t in agg.terms.items())
    short = sum(money.of(n, t.price, t.pos - t.ws) for n, t in agg.terms.items())
    gross = sum(
        max(abs(money.of(n, t.price, t.pos + t.wb)), abs(money.of(n, t.price, t.pos - t.ws)))
        for n, t in agg.terms.items()
    )
    assert (agg.long, agg.short, agg.gross) == (long, short, gross)


def test_qty_book_when_strategies_then_net_and_gross_worst_cases() -> None:
    book = QtyBook()
    book.apply("A", "s1", "BTC", 10, 0, 0)  # long 10
    book.apply("A", "s2", "BTC", -4, 0, 3)  # short 4, working sell 3
    book.apply("B", "s1", "BTC", 0, 8, 0)  # another account
    assert book.net("A", "BTC") == (6, 0, 3)
    # Net worst with a buy of 5: max(|6 + 5|, |6 - 3|) = 11.
    assert book.net_worst("A", "BTC", Side.BUY, 5) == 11
    assert book.net_worst("A", "BTC", Side.SELL, 10) == 7  # |6 - 13|
    # Gross: s1 |10| + s2 max(|-4|, |-7|) = 17; s1 selling 12 keeps its worst at |10|.
    assert book.gross_worst("A", "s1", "BTC", Side.SELL, 12) == 10 + 7
    assert book.gross_worst("A", "s3", "BTC", Side.BUY, 2) == 10 + 7 + 2
    assert book.gross_worst("C", "s1", "BTC", Side.BUY, 2) == 2
    assert book.keys() == [("A", "BTC"), ("B", "BTC")]
    assert book.net("Z", "BTC") == (0, 0, 0)


# --- circuit breaker -----------------------------------------------------------------------


def test_breaker_when_errors_reach_threshold_with_min_events_then_opens_once() -> None:
    breaker = Breaker(BreakerConfig(window_ns=100, threshold_bps=2_500, min_events=4))
    for ts in range(3):
        breaker.record_sent(ts)
    assert not breaker.record_error(3)  # 1 of 3 sent: under min_events
    breaker.record_sent(4)
    assert breaker.tripped(4)  # 1 of 4 = 25%: at the threshold counts
    assert breaker.record_error(5)  # 2 of 4
    assert breaker.open_since == 5
    assert not breaker.record_error(6)  # already open
    assert breaker.rate_text(6) == "3 errors / 4 orders (75.00%) in the last 0 s"


def test_breaker_when_window_passes_then_rate_counts_only_recent() -> None:
    breaker = Breaker(BreakerConfig(window_ns=10 * NS, threshold_bps=5_000, min_events=2))
    breaker.record_sent(0)
    breaker.record_sent(1)
    breaker.record_error(2)
    assert breaker.tripped(2)
    for ts in (11 * NS, 11 * NS + 1):
        breaker.record_sent(ts)
    assert not breaker.tripped(11 * NS + 1)  # the old error rolled out
    assert breaker.rate_text(11 * NS + 1) == "0 errors / 2 orders (0.00%) in the last 10 s"


def test_breaker_when_below_threshold_then_stays_closed() -> None:
    breaker = Breaker(BreakerConfig(threshold_bps=500, min_events=20))
    for ts in range(40):
        breaker.record_sent(ts)
    assert not breaker.record_error(41)  # 1 of 40 = 2.5%
    assert breaker.record_error(42)  # 2 of 40 = 5%
    assert breaker.open_since == 42
