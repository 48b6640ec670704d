"""What an engine starts from: its configuration, checked, as it goes in the run manifest.

These frozen msgspec Structs are kept apart from the code that reads them (`engine.core`,
`engine.risk`): that code may be compiled (see `engine.native`), and a compiled module
drops the keywords of a class statement (`frozen=True`, `kw_only=True`, ...), which
these Structs need (mypy issue 21938).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.messages import Instrument, OrderType, TimeInForce
from engine.router import RouterConfig
from engine.sessions import Calendar

NS_PER_S = 1_000_000_000


class LimitSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits at one scope; None means no limit. Money fields are in money units."""

    max_order_qty: int | None = None  # size units (instrument scope)
    max_order_notional: int | None = None
    max_net_qty: int | None = None  # instrument scope: |account net| incl. working orders
    max_gross_qty: int | None = None  # instrument scope: sum over strategies of |position|
    max_net_notional: int | None = None  # firm, account, strategy
    max_gross_notional: int | None = None
    max_orders_per_window: int | None = None  # firm, account, strategy, venue
    daily_loss: int | None = None  # firm, account, strategy: halt when the day loses more
    max_drawdown: int | None = None  # firm, account, strategy: halt past this peak-to-trough


LIMIT_NAMES: tuple[str, ...] = tuple(LimitSet.__struct_fields__)
QTY_LIMITS = ("max_order_qty", "max_net_qty", "max_gross_qty")
_MONEY_SCOPE_LIMITS = (
    "max_order_notional",
    "max_net_notional",
    "max_gross_notional",
    "max_orders_per_window",
    "daily_loss",
    "max_drawdown",
)
# The limits the engine reads at each level (firm quantity limits: a default per instrument).
LIMITS_AT: dict[str, tuple[str, ...]] = {
    "firm": LIMIT_NAMES,
    "account": _MONEY_SCOPE_LIMITS,
    "strategy": _MONEY_SCOPE_LIMITS,
    "instrument": (*QTY_LIMITS, "max_order_notional"),
    "venue": ("max_orders_per_window",),
}
_LEVEL_OF_FIELD = {
    "accounts": "account",
    "strategies": "strategy",
    "instruments": "instrument",
    "venues": "venue",
}


def limit_not_read_at(level: str, name: str) -> str:
    where = [lvl for lvl, names in LIMITS_AT.items() if name in names]
    return f"{name} is not a limit at the {level} level: expected it at {' or '.join(where)}"


class LimitsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The limit hierarchy; `exposure` caps gross money per group or the whole portfolio.

    `exposure` keys: "portfolio", "asset_class:<CLASS>", "sector:<name>", "country:<code>".
    """

    firm: LimitSet = LimitSet()
    accounts: dict[str, LimitSet] = {}
    strategies: dict[str, LimitSet] = {}
    instruments: dict[str, LimitSet] = {}
    venues: dict[str, LimitSet] = {}
    exposure: dict[str, int] = {}
    rate_window_ns: int = 60 * NS_PER_S


class VenueRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a venue accepts, what we may not trade there, and its fees (for the router)."""

    order_types: tuple[OrderType, ...] = tuple(OrderType)
    tifs: tuple[TimeInForce, ...] = tuple(TimeInForce)
    do_not_trade: tuple[str, ...] = ()
    maker_fee_bps: float = 0.0  # what the router expects to pay (negative: a rebate)
    taker_fee_bps: float = 0.0


class MarketChecks(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Market-state checks; a None threshold turns its check off."""

    collar_bps: int | None = None  # limit or signal price vs the mid
    max_spread_bps: int | None = None
    max_quote_age_ns: int | None = None
    require_quote: bool = False  # deny when there is no two-sided quote
    vol_window_ns: int = 60 * NS_PER_S
    vol_pause_bps: int | None = None  # mid move within the window that pauses trading
    vol_pause_ns: int = 60 * NS_PER_S
    adv: dict[str, int] = {}  # instrument -> average daily volume, size units
    max_adv_participation_bps: int | None = None
    max_impact_bps: int | None = None  # estimated from the book (or the touch)
    liquidity_action: Literal["split", "hold"] = "split"
    slice_interval_ns: int = NS_PER_S


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A venue's circuit breaker: error rate over a rolling window."""

    window_ns: int = 60 * NS_PER_S
    threshold_bps: int = 500  # 5%
    min_events: int = 20  # orders sent in the window before the rate counts
    cooldown_ns: int = 60 * NS_PER_S
    on_recover: Literal["release", "drop"] = "release"
    max_queue_age_ns: int = 60 * NS_PER_S


class LifecycleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What to do with partial fills, rejects and orders that do not fill."""

    partial_fill: Literal["keep", "cancel_after", "chase"] = "keep"
    partial_fill_after_ns: int = 10 * NS_PER_S
    chase_interval_ns: int = NS_PER_S
    max_chases: int = 5
    max_retries: int = 3
    retry_backoff_ns: int = 100_000_000
    retry_backoff_max_ns: int = 10 * NS_PER_S
    retryable_reasons: tuple[str, ...] = ()  # reasons retried even if not flagged retryable
    stale_order_ns: int | None = None  # alert when an order works unfilled this long


class RiskConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the gauntlet and the lifecycle policies read; it goes in the manifest."""

    base_currency: str = "USD"
    money_precision: int = 2
    fx_rates: dict[str, str] = {}  # currency -> value of one unit in base_currency
    limits: LimitsConfig = LimitsConfig()
    venues: dict[str, VenueRules] = {}
    market: MarketChecks = MarketChecks()
    breaker: BreakerConfig = BreakerConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    recon_tolerance: dict[str, int] = {}  # instrument or "*" -> qty corrected silently
    loss_flatten: bool = False  # flatten a scope halted by its loss limits
    check_interval_ns: int = NS_PER_S  # periodic P&L and revaluation check while exposed


def config_problem(cfg: RiskConfig) -> str | None:
    """Return what makes a risk config unusable (field, value, expected), or None."""
    if cfg.money_precision < 0 or cfg.money_precision > 8:
        return f"risk.money_precision must be in 0..8, got {cfg.money_precision}"
    for cur, rate in cfg.fx_rates.items():
        if parse_rate(rate) is None:
            return f"risk.fx_rates[{cur!r}] must be a positive decimal string, got {rate!r}"
    scopes: list[tuple[str, str, LimitSet]] = [("firm", "firm", cfg.limits.firm)]
    for field, level in _LEVEL_OF_FIELD.items():
        scopes += [(f"{field}.{k}", level, v) for k, v in getattr(cfg.limits, field).items()]
    for where, level, limits in scopes:
        for name in LIMIT_NAMES:
            value = getattr(limits, name)
            if value is None:
                continue
            if value < 0:
                return f"risk.limits.{where}.{name} must be >= 0, got {value}"
            if name not in LIMITS_AT[level]:
                if name in QTY_LIMITS:
                    return (
                        f"risk.limits.{where}.{name}: quantity limits are in an instrument's "
                        "size units: expected them under risk.limits.instruments.<name> or "
                        "risk.limits.firm (a default for every instrument)"
                    )
                return f"risk.limits.{where}.{name}: {limit_not_read_at(level, name)}"
    for key, value in cfg.limits.exposure.items():
        group = key.split(":", 1)[0]
        if key != "portfolio" and group not in ("asset_class", "sector", "country"):
            return (
                f"risk.limits.exposure key {key!r}: expected 'portfolio', 'asset_class:X', "
                "'sector:X' or 'country:X'"
            )
        if value < 0:
            return f"risk.limits.exposure[{key!r}] must be >= 0, got {value}"
    for name, value in (
        ("limits.rate_window_ns", cfg.limits.rate_window_ns),
        ("breaker.window_ns", cfg.breaker.window_ns),
        ("check_interval_ns", cfg.check_interval_ns),
        ("market.slice_interval_ns", cfg.market.slice_interval_ns),
        ("lifecycle.retry_backoff_ns", cfg.lifecycle.retry_backoff_ns),
    ):
        if value <= 0:
            return f"risk.{name} must be > 0, got {value}"
    if not 0 < cfg.breaker.threshold_bps <= 10_000:
        return f"risk.breaker.threshold_bps must be in 1..10000, got {cfg.breaker.threshold_bps}"
    return None


def parse_rate(text: str) -> tuple[int, int] | None:
    """Parse a positive decimal string into (numerator, denominator), or None."""
    whole, _, frac = text.strip().partition(".")
    digits = whole + frac
    if not digits.isdigit() or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
        return None
    num, den = int(digits), 10 ** len(frac)
    return (num, den) if num > 0 else None


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine starts from; it goes in the run manifest."""

    run_id: str
    seed: int = 0
    instruments: tuple[Instrument, ...]
    max_order_qty: dict[str, int] = {}  # instrument (or "*" for the rest) -> max size units
    default_venue: dict[str, str] = {}  # instrument -> venue; else its first venue_symbols key
    ack_timeout_ns: int = 5_000_000_000
    risk: RiskConfig = RiskConfig()
    router: RouterConfig | None = None  # None: signal.venue, else default_venue
    calendars: dict[str, Calendar] = {}  # instrument (or "*" for the rest) -> its sessions
    fill_model_sha256: str | None = None  # the model the runner hands the engine
