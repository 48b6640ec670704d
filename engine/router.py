"""The smart order router: one parent order in, child orders by venue out.

`route(order, venues, model, config, rng) -> RouteDecision` is the only entry point; the
engine calls it once per parent order, with the venues as it sees them at `order.ts`.

Invariants:
- Pure and deterministic: the decision is a function of the arguments. The only
  randomness is `rng`, and `route` draws from it exactly once per call (one
  `rng.random()`, whatever the mode, `top_k` or outcome, even when nothing is routable),
  so a replay with the same seed makes the same choices, and a what-if with another
  config keeps the generator in step with the original run.
- Venue order in the input does not matter: candidates are ranked by a total order
  (score, then venue name; static rules end on the name too). No set is iterated.
- Candidates are the venues that are usable, list the instrument, support the order type
  and TIF and pass the suitability rules (`RouterConfig.max_spread_ticks`,
  `max_quote_age_ns`, a MARKET order needs a displayed far side). Every venue handed in
  comes back in `RouteDecision.candidates`: the suitable ones ranked best first, then
  the unsuitable ones by name, each with the reason it was excluded.
- Model mode scores each candidate in points:
  `w_fill * p_fill - w_fee * fee_bps - w_latency * latency_ms - w_slippage * slippage_bps`.
  `p_fill` and `slippage_bps` come from `FillModel.lookup` on the key built from the
  order (`engine.fillmodel` buckets); a venue the model does not know falls back to
  static estimates (`fallback_p_fill`, slippage from its quote) and says so
  (`source="static"`). When no candidate has model data (or there is no model, or the
  mode is static) the whole order follows the static rules.
- The choice: model mode takes the `top_k` best scores and draws one with probabilities
  softmax(score / temperature); with `top_k=1` it is the best score, ties to the
  smallest venue name. Static rules are deterministic: best displayed far-side price,
  then lowest applicable fee, then `venue_preference`, then name.
- Fees are in basis points of notional (`maker_fee_bps`, `taker_fee_bps`, as
  `sim.venue.VenueConfig`); the taker fee applies to MARKET and STOP orders and to limit
  prices that cross the spread, the maker fee otherwise. Slippage is in bps against the
  arrival mid, positive = worse for us (as the fill model). Latency is submit ->
  acknowledgement: the venue's measured value, else the model cell's, else
  `default_latency_ns`. These floats steer the choice only.
- Child quantities are ints: they sum to the parent qty, each is a multiple of the lot
  and at least the instrument's min qty (and one lot); the split threshold is applied
  in exact rational arithmetic (`fractions.Fraction`), never float rounding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

import msgspec

from engine.fillmodel import (
    BUCKETS_VERSION,
    FillModel,
    Key,
    distance_bucket,
    size_bucket,
    tod_bucket,
    touch_distance_ticks,
)
from engine.messages import OrderType, Side, TimeInForce

MAX_TOP_K = 3
NS_PER_MS = 1_000_000
BPS = 10_000.0

SOURCE_MODEL = "model"
SOURCE_STATIC = "static"
SOURCE_NONE = "none"  # an unsuitable venue: not scored

MODE_MODEL = "model"  # every candidate scored from the model
MODE_MIXED = "mixed"  # model mode, some candidates on static estimates
MODE_STATIC = "static"  # the whole order on the static rules
MODE_NONE = "none"  # no routable venue

_TAKING_TYPES = (OrderType.MARKET, OrderType.STOP)


class RouteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One parent order to route, already normalised to the instrument's grid.

    `price` is the limit price (None for MARKET and STOP); `ts` (ns) is "now";
    `tick_size`, `lot_size` and `min_qty` are the instrument's, in instrument units.
    """

    instrument: str
    side: Side
    qty: int
    order_type: OrderType
    price: int | None
    tif: TimeInForce
    ts: int
    tick_size: int
    lot_size: int
    min_qty: int = 0

    def __post_init__(self) -> None:
        where = f"RouteRequest for {self.instrument}"
        if self.tick_size < 1:
            raise ValueError(f"{where}: tick_size must be >= 1, got {self.tick_size}")
        if self.lot_size < 1:
            raise ValueError(f"{where}: lot_size must be >= 1, got {self.lot_size}")
        if self.min_qty < 0:
            raise ValueError(f"{where}: min_qty must be >= 0, got {self.min_qty}")
        if self.qty <= 0 or self.qty % self.lot_size:
            raise ValueError(
                f"{where}: qty must be a positive multiple of lot_size {self.lot_size}, "
                f"got {self.qty}"
            )
        if self.qty < self.min_qty:
            raise ValueError(f"{where}: qty must be >= min_qty {self.min_qty}, got {self.qty}")

    @property
    def is_buy(self) -> bool:
        """Say whether the order buys."""
        return self.side is Side.BUY


class VenueState(msgspec.Struct, frozen=True, kw_only=True):
    """One candidate venue for the order's instrument, as the engine sees it now.

    - `listed`: the venue lists the instrument (it is in the instrument's venue_symbols).
    - `bid_price`, `bid_size`, `ask_price`, `ask_size`: the last quote, None if unknown;
      `quote_ts`: when it was received (ns), None if unknown.
    - `maker_fee_bps`, `taker_fee_bps`: fees in bps of notional (negative = rebate).
    - `latency_ns`: measured submit -> ack latency, None if not measured.
    - `order_types`, `tifs`: what the venue accepts.
    - `unusable_reason`: why the venue may not be used now (disconnected, circuit
      breaker, do-not-trade list), None when usable.
    """

    name: str
    listed: bool = True
    bid_price: int | None = None
    bid_size: int | None = None
    ask_price: int | None = None
    ask_size: int | None = None
    quote_ts: int | None = None
    maker_fee_bps: float = 0.0
    taker_fee_bps: float = 0.0
    latency_ns: int | None = None
    order_types: tuple[OrderType, ...] = tuple(OrderType)
    tifs: tuple[TimeInForce, ...] = tuple(TimeInForce)
    unusable_reason: str | None = None

    def __post_init__(self) -> None:
        where = f"VenueState {self.name!r}"
        if not self.name:
            raise ValueError("VenueState.name: expected a non-empty venue name, got ''")
        for field, size in (("bid_size", self.bid_size), ("ask_size", self.ask_size)):
            if size is not None and size < 0:
                raise ValueError(f"{where}: {field} must be >= 0, got {size}")
        for field, fee in (
            ("maker_fee_bps", self.maker_fee_bps),
            ("taker_fee_bps", self.taker_fee_bps),
        ):
            if not math.isfinite(fee):
                raise ValueError(f"{where}: {field} must be a finite number, got {fee}")
        if self.latency_ns is not None and self.latency_ns < 0:
            raise ValueError(f"{where}: latency_ns must be >= 0, got {self.latency_ns}")


class RouterConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the router chooses; it goes in the run manifest.

    - `mode`: "model" scores venues from the fill model; "static" uses the static rules.
    - `top_k` (1-3): how many of the best scores the draw chooses among.
    - `temperature` (> 0, score points): softmax temperature of that draw; small is
      greedy, large is uniform.
    - `w_fill` (per unit of probability), `w_fee` (per bps), `w_latency` (per ms),
      `w_slippage` (per bps): score weights, all >= 0.
    - `fallback_p_fill` (0-1): the fill probability assumed, in model mode, for a venue
      the model has no data for.
    - `default_latency_ns`: latency assumed when neither the venue nor the model knows.
    - `split_fraction` (> 0, or None to never split): split the parent across venues
      when its qty exceeds this fraction of the displayed size at the chosen venue's
      touch (the far side for a taking order, the own side for a resting one); each
      venue then takes up to that fraction of its own displayed size, the chosen venue
      the rest.
    - `max_children` (>= 1): most venues one parent is split across.
    - `venue_preference`: static tie-break order of venue names (others after, by name).
    - `max_spread_ticks`: a venue quoting a wider spread is unsuitable (None: no limit).
    - `max_quote_age_ns`: a venue whose quote is older is unsuitable (None: no limit).
    """

    mode: Literal["static", "model"] = "static"
    top_k: int = 1
    temperature: float = 1.0
    w_fill: float = 100.0
    w_fee: float = 1.0
    w_latency: float = 0.1
    w_slippage: float = 1.0
    fallback_p_fill: float = 0.5
    default_latency_ns: int = 0
    split_fraction: float | None = None
    max_children: int = 3
    venue_preference: tuple[str, ...] = ()
    max_spread_ticks: int | None = None
    max_quote_age_ns: int | None = None

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(f"RouterConfig.{problem}")

    def _problem(self) -> str | None:
        """Return the first invalid field and why, or None."""
        if self.mode not in ("static", "model"):
            return f"mode: expected 'static' or 'model', got {self.mode!r}"
        if not 1 <= self.top_k <= MAX_TOP_K:
            return f"top_k: expected 1 to {MAX_TOP_K}, got {self.top_k}"
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            return f"temperature: expected a finite number > 0, got {self.temperature}"
        for field in ("w_fill", "w_fee", "w_latency", "w_slippage"):
            weight = getattr(self, field)
            if not (math.isfinite(weight) and weight >= 0):
                return f"{field}: expected a finite weight >= 0, got {weight}"
        if not 0.0 <= self.fallback_p_fill <= 1.0:
            return f"fallback_p_fill: expected 0 to 1, got {self.fallback_p_fill}"
        if self.default_latency_ns < 0:
            return f"default_latency_ns: expected >= 0, got {self.default_latency_ns}"
        fraction = self.split_fraction
        if fraction is not None and not (math.isfinite(fraction) and fraction > 0):
            return f"split_fraction: expected None or a finite number > 0, got {fraction}"
        if self.max_children < 1:
            return f"max_children: expected >= 1, got {self.max_children}"
        seen: dict[str, int] = {}
        for i, name in enumerate(self.venue_preference):
            if name in seen:
                return (
                    f"venue_preference: expected each venue once, got {name!r} "
                    f"at {seen[name]} and {i}"
                )
            seen[name] = i
        if self.max_spread_ticks is not None and self.max_spread_ticks < 0:
            return f"max_spread_ticks: expected None or >= 0, got {self.max_spread_ticks}"
        if self.max_quote_age_ns is not None and self.max_quote_age_ns < 0:
            return f"max_quote_age_ns: expected None or >= 0, got {self.max_quote_age_ns}"
        return None


class Child(msgspec.Struct, frozen=True, kw_only=True):
    """One child order: `qty` of the parent sent to `venue`."""

    venue: str
    qty: int


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """One venue as the router judged it.

    `source` is "model" (scored from the model cell at `level`), "static" (static rules
    or estimates; `reason` says why) or "none" (unsuitable; `reason` says why).
    `rank` is 1 for the best suitable venue; `p_choose` is its probability of being
    drawn (0 outside the top k).
    """

    venue: str
    suitable: bool
    source: str
    reason: str | None = None
    rank: int | None = None
    score: float | None = None
    p_choose: float = 0.0
    p_fill: float | None = None
    slippage_bps: float | None = None
    fee_bps: float | None = None
    latency_ns: int | None = None
    level: int | None = None


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """The router's answer for one parent order.

    `children` are in a fixed order: the chosen venue first, then the others of the
    split by rank. Empty when nothing is routable; `candidates` then say why, venue by
    venue. `mode_used` is "model", "mixed", "static" or "none"; `draw` is the one value
    taken from the generator.
    """

    children: tuple[Child, ...]
    candidates: tuple[Candidate, ...]
    chosen: str | None
    mode_used: str
    draw: float
    explanation: str

    @property
    def routable(self) -> bool:
        """Say whether the order goes anywhere."""
        return bool(self.children)


class _Scored(msgspec.Struct, kw_only=True):
    """A suitable venue with its estimates, before ranking."""

    venue: VenueState
    source: str
    reason: str | None
    level: int | None
    p_fill: float | None
    slippage_bps: float | None
    fee_bps: float
    latency_ns: int
    score: float | None = None


def route(
    order: RouteRequest,
    venues: Sequence[VenueState],
    model: FillModel | None,
    config: RouterConfig,
    rng: random.Random,
) -> RouteDecision:
    """Route one parent order: choose venues and child sizes, drawing once from `rng`."""
    draw = rng.random()
    if model is not None and model.buckets_version != BUCKETS_VERSION:
        raise ValueError(
            f"FillModel.buckets_version: expected {BUCKETS_VERSION}, got {model.buckets_version}"
        )
    _check_unique(venues)
    suitable: list[VenueState] = []
    rejected: list[Candidate] = []
    for venue in sorted(venues, key=lambda v: v.name):
        reason = unsuitable_reason(order, venue, config)
        if reason is None:
            suitable.append(venue)
        else:
            rejected.append(
                Candidate(venue=venue.name, suitable=False, source=SOURCE_NONE, reason=reason)
            )
    if not suitable:
        return RouteDecision(
            children=(),
            candidates=tuple(rejected),
            chosen=None,
            mode_used=MODE_NONE,
            draw=draw,
            explanation=_explain_none(order, rejected),
        )
    scored, mode_used, static_why = _estimate(order, suitable, model, config)
    if mode_used == MODE_STATIC:
        ranked = sorted(scored, key=lambda s: _static_key(order, s, config))
        chances = [1.0] + [0.0] * (len(ranked) - 1)
        pick = 0
    else:
        for s in scored:
            s.score = _score(s, config)
        ranked = sorted(scored, key=lambda s: (-_known(s.score), s.venue.name))
        chances = _softmax([_known(s.score) for s in ranked[: config.top_k]], config.temperature)
        pick = _pick(chances, draw)
        chances += [0.0] * (len(ranked) - len(chances))
    children, split_note = _split(order, ranked, pick, config)
    candidates = tuple(
        Candidate(
            venue=s.venue.name,
            suitable=True,
            source=s.source,
            reason=s.reason,
            rank=i + 1,
            score=s.score,
            p_choose=chances[i],
            p_fill=s.p_fill,
            slippage_bps=s.slippage_bps,
            fee_bps=s.fee_bps,
            latency_ns=s.latency_ns,
            level=s.level,
        )
        for i, s in enumerate(ranked)
    )
    chosen = candidates[pick]
    explanation = _explain(order, chosen, mode_used, static_why, draw, config, candidates)
    return RouteDecision(
        children=children,
        candidates=candidates + tuple(rejected),
        chosen=chosen.venue,
        mode_used=mode_used,
        draw=draw,
        explanation=f"{explanation}; {split_note}",
    )


def unsuitable_reason(order: RouteRequest, venue: VenueState, config: RouterConfig) -> str | None:
    """Return why a venue cannot take the order now, or None if it can."""
    if venue.unusable_reason is not None:
        return f"unusable: {venue.unusable_reason}"
    if not venue.listed:
        return f"does not list {order.instrument}"
    if order.order_type not in venue.order_types:
        offered = ", ".join(t.value for t in venue.order_types) or "none"
        return f"order type {order.order_type.value} not supported: expected one of {offered}"
    if order.tif not in venue.tifs:
        offered = ", ".join(t.value for t in venue.tifs) or "none"
        return f"tif {order.tif.value} not supported: expected one of {offered}"
    far_price, far_size = _far_side(order, venue)
    if order.order_type is OrderType.MARKET and (far_price is None or not far_size):
        side = "ask" if order.is_buy else "bid"
        return f"MARKET {order.side.value} needs a displayed {side}, got none"
    if (
        config.max_spread_ticks is not None
        and venue.bid_price is not None
        and venue.ask_price is not None
    ):
        spread = (venue.ask_price - venue.bid_price) // order.tick_size
        if spread > config.max_spread_ticks:
            return f"spread {spread} ticks above max_spread_ticks {config.max_spread_ticks}"
    if config.max_quote_age_ns is not None and venue.quote_ts is not None:
        age = order.ts - venue.quote_ts
        if age > config.max_quote_age_ns:
            return f"quote {age} ns old, above max_quote_age_ns {config.max_quote_age_ns}"
    return None


def model_key(order: RouteRequest, venue: VenueState) -> Key:
    """Return the fill-model key of the order on a venue (its buckets as at fit time)."""
    ticks = touch_distance_ticks(
        order.is_buy, order.price, venue.bid_price, venue.ask_price, order.tick_size
    )
    return Key(
        venue=venue.name,
        instrument=order.instrument,
        side=order.side.value,
        order_type=order.order_type.value,
        distance=distance_bucket(ticks),
        size=size_bucket(order.qty, order.lot_size),
        tod=tod_bucket(order.ts),
    )


def is_taking(order: RouteRequest, venue: VenueState) -> bool:
    """Say whether the order takes liquidity on the venue (pays the taker fee)."""
    if order.order_type in _TAKING_TYPES:
        return True
    price = order.price
    if price is None:
        return False
    if order.is_buy:
        return venue.ask_price is not None and price >= venue.ask_price
    return venue.bid_price is not None and price <= venue.bid_price


def quote_slippage_bps(order: RouteRequest, venue: VenueState) -> float | None:
    """Estimate slippage vs the venue's mid from its quote (bps, positive = worse)."""
    bid, ask = venue.bid_price, venue.ask_price
    if bid is None or ask is None or bid + ask <= 0:
        return None
    mid = (bid + ask) / 2
    if is_taking(order, venue):
        price = ask if order.is_buy else bid
    elif order.price is not None:
        price = order.price
    else:
        return None
    signed = price - mid if order.is_buy else mid - price
    return signed / mid * BPS


def _check_unique(venues: Sequence[VenueState]) -> None:
    seen: dict[str, int] = {}
    for i, venue in enumerate(venues):
        if venue.name in seen:
            raise ValueError(
                f"venues[{i}].name: expected each venue once, got {venue.name!r} "
                f"again (also venues[{seen[venue.name]}])"
            )
        seen[venue.name] = i


def _far_side(order: RouteRequest, venue: VenueState) -> tuple[int | None, int | None]:
    """Return the touch the order would take from: the ask for a buy, the bid for a sell."""
    if order.is_buy:
        return venue.ask_price, venue.ask_size
    return venue.bid_price, venue.bid_size


def _touch_size(order: RouteRequest, venue: VenueState) -> int | None:
    """Return the displayed size the split compares with: far side if taking, else own."""
    if is_taking(order, venue) == order.is_buy:
        return venue.ask_size
    return venue.bid_size


def _estimate(
    order: RouteRequest,
    suitable: list[VenueState],
    model: FillModel | None,
    config: RouterConfig,
) -> tuple[list[_Scored], str, str | None]:
    """Estimate each suitable venue; return them, the mode used and why static if so."""
    if config.mode == "static":
        whole: str | None = "mode static"
    elif model is None:
        whole = "no fill model loaded"
    else:
        whole = None
    scored: list[_Scored] = []
    model_hits = 0
    for venue in suitable:
        taking = is_taking(order, venue)
        fee = venue.taker_fee_bps if taking else venue.maker_fee_bps
        match = (
            None if whole is not None or model is None else model.lookup(model_key(order, venue))
        )
        if match is None:
            latency = (
                venue.latency_ns if venue.latency_ns is not None else config.default_latency_ns
            )
            scored.append(
                _Scored(
                    venue=venue,
                    source=SOURCE_STATIC,
                    reason=whole or f"no fill model data for {venue.name}",
                    level=None,
                    p_fill=None if whole is not None else config.fallback_p_fill,
                    slippage_bps=quote_slippage_bps(order, venue),
                    fee_bps=fee,
                    latency_ns=latency,
                )
            )
            continue
        model_hits += 1
        cell = match.cell
        scored.append(
            _Scored(
                venue=venue,
                source=SOURCE_MODEL,
                reason=None,
                level=match.level,
                p_fill=cell.p_fill,
                slippage_bps=cell.slippage_bps,
                fee_bps=fee,
                latency_ns=venue.latency_ns if venue.latency_ns is not None else cell.latency_ns,
            )
        )
    if whole is None and model_hits == 0:
        whole = "fill model has no data for any candidate"
        for s in scored:
            s.reason = whole
            s.p_fill = None
    if whole is not None:
        return scored, MODE_STATIC, whole
    return scored, MODE_MODEL if model_hits == len(scored) else MODE_MIXED, None


def _score(s: _Scored, config: RouterConfig) -> float:
    """Score a candidate in points (higher is better); unknown slippage counts as 0."""
    p_fill = config.fallback_p_fill if s.p_fill is None else s.p_fill
    slippage = 0.0 if s.slippage_bps is None else s.slippage_bps
    return (
        config.w_fill * p_fill
        - config.w_fee * s.fee_bps
        - config.w_latency * (s.latency_ns / NS_PER_MS)
        - config.w_slippage * slippage
    )


def _known(value: float | None) -> float:
    """Return a value model mode always sets (a score, a p_fill)."""
    if value is None:
        raise AssertionError("a model-mode candidate lacks its score or p_fill")
    return value


def _static_key(
    order: RouteRequest, s: _Scored, config: RouterConfig
) -> tuple[int, int, float, int, str]:
    """Sort key of the static rules: best far-side price, lowest fee, preference, name."""
    price, _ = _far_side(order, s.venue)
    if price is None:
        shown, value = 1, 0
    else:
        shown, value = 0, price if order.is_buy else -price
    prefs = config.venue_preference
    name = s.venue.name
    preference = prefs.index(name) if name in prefs else len(prefs)
    return shown, value, s.fee_bps, preference, name


def _softmax(scores: list[float], temperature: float) -> list[float]:
    """Return the softmax of the scores at a temperature."""
    top = max(scores)
    weights = [math.exp((s - top) / temperature) for s in scores]
    total = math.fsum(weights)
    return [w / total for w in weights]


def _pick(chances: list[float], draw: float) -> int:
    """Return the index the draw in [0, 1) lands on in the cumulative chances."""
    acc = 0.0
    for i, chance in enumerate(chances):
        acc += chance
        if draw < acc:
            return i
    return len(chances) - 1


def _split(
    order: RouteRequest, ranked: list[_Scored], pick: int, config: RouterConfig
) -> tuple[tuple[Child, ...], str]:
    """Split the parent over the chosen venue and the next by rank; say what was done."""
    primary = ranked[pick].venue
    whole = (Child(venue=primary.name, qty=order.qty),)
    if config.split_fraction is None:
        return whole, "no split (split_fraction None)"
    size = _touch_size(order, primary)
    if size is None:
        return whole, f"no split ({primary.name} shows no size at its touch)"
    fraction = Fraction(config.split_fraction)
    lot = order.lot_size
    least = max(-(-order.min_qty // lot) * lot, lot)
    cap = math.floor(fraction * size) // lot * lot
    if order.qty <= cap:
        return whole, f"no split (qty {order.qty} within {config.split_fraction} x {size})"
    first = min(order.qty, max(cap, least))
    left = order.qty - first
    extra: list[Child] = []
    for s in ranked:
        if left < least or len(extra) + 1 >= config.max_children:
            break
        if s.venue is primary:
            continue
        other = _touch_size(order, s.venue)
        if other is None:
            continue
        give = min(left, math.floor(fraction * other) // lot * lot)
        if give >= least:
            extra.append(Child(venue=s.venue.name, qty=give))
            left -= give
    children = (Child(venue=primary.name, qty=first + left), *extra)
    shown = " + ".join(f"{c.venue} {c.qty}" for c in children)
    return children, (
        f"split {shown} (qty {order.qty} above {config.split_fraction} x {size} at {primary.name})"
        if extra
        else f"no split possible (qty {order.qty} above {config.split_fraction} x {size} "
        f"at {primary.name}, no other venue can take >= {least})"
    )


def _describe(order: RouteRequest) -> str:
    price = "" if order.price is None else f" @ {order.price}"
    return f"{order.side.value} {order.qty} {order.instrument} {order.order_type.value}{price}"


def _explain_none(order: RouteRequest, rejected: list[Candidate]) -> str:
    if not rejected:
        return f"{_describe(order)}: no routable venue: no venues given"
    why = "; ".join(f"{c.venue}: {c.reason}" for c in rejected)
    return f"{_describe(order)}: no routable venue: {why}"


def _explain(
    order: RouteRequest,
    chosen: Candidate,
    mode_used: str,
    static_why: str | None,
    draw: float,
    config: RouterConfig,
    candidates: tuple[Candidate, ...],
) -> str:
    head = f"{_describe(order)}: {mode_used} chose {chosen.venue}"
    if mode_used == MODE_STATIC:
        return (
            f"{head} by static rules ({static_why}; far-side price, fee {chosen.fee_bps} bps, "
            "preference, name)"
        )
    among = min(config.top_k, len(candidates))
    chances = ", ".join(f"{c.venue} {c.p_choose:.3f}" for c in candidates[:among])
    text = (
        f"{head} (score {_known(chosen.score):.3f}, p_fill {_known(chosen.p_fill):.3f}, "
        f"draw {draw:.4f} among top {among}: {chances})"
    )
    fallbacks = [c.venue for c in candidates if c.source == SOURCE_STATIC]
    if fallbacks:
        text += f"; static estimates for {', '.join(fallbacks)} (no fill model data)"
    return text
