"""engine.router: candidate filtering, model scoring, the seeded choice, fallback, splitting."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.fillmodel import (
    ANY,
    NS_PER_HOUR,
    Cell,
    FillModel,
    Key,
    distance_bucket,
    size_bucket,
    smoothed,
    tod_bucket,
)
from engine.messages import OrderType, Side, TimeInForce
from engine.router import (
    MODE_MIXED,
    MODE_MODEL,
    MODE_NONE,
    MODE_STATIC,
    SOURCE_MODEL,
    SOURCE_NONE,
    SOURCE_STATIC,
    RouteDecision,
    RouterConfig,
    RouteRequest,
    VenueState,
    model_key,
    route,
)

TS = 14 * NS_PER_HOUR + 5  # 14:00 UTC on day 0
MODEL = RouterConfig(mode="model", w_fill=100.0, w_fee=1.0, w_latency=1.0, w_slippage=1.0)


def order(**kw: Any) -> RouteRequest:
    fields: dict[str, Any] = {
        "instrument": "BTC-USD",
        "side": Side.BUY,
        "qty": 100,
        "order_type": OrderType.LIMIT,
        "price": 999,
        "tif": TimeInForce.GTC,
        "ts": TS,
        "tick_size": 1,
        "lot_size": 10,
        "min_qty": 0,
    }
    fields.update(kw)
    return RouteRequest(**fields)


def venue(name: str, **kw: Any) -> VenueState:
    fields: dict[str, Any] = {
        "bid_price": 999,
        "bid_size": 1_000,
        "ask_price": 1_001,
        "ask_size": 1_000,
        "quote_ts": TS,
        "maker_fee_bps": 0.0,
        "taker_fee_bps": 0.0,
        "latency_ns": 1_000_000,
    }
    fields.update(kw)
    return VenueState(name=name, **fields)


def cell(fills: int, n: int, *, slippage_bps: float = 0.0, latency_ns: int = 1_000_000) -> Cell:
    p = smoothed(fills, n, 0.5, 10.0)
    return Cell(n=n, fills=fills, p_fill=p, slippage_bps=slippage_bps, latency_ns=latency_ns)


def fill_model(cells: dict[str, Cell]) -> FillModel:
    """A model with one venue-level cell per venue (every lookup lands at level 4)."""
    return FillModel(
        horizon_ns=10_000_000_000,
        prior_strength=10.0,
        cells={Key(name): c for name, c in cells.items()},
    )


def by_venue(decision: RouteDecision) -> dict[str, Any]:
    return {c.venue: c for c in decision.candidates}


def expected_score(p: float, fee: float, latency_ns: int, slip: float, cfg: RouterConfig) -> float:
    return (
        cfg.w_fill * p - cfg.w_fee * fee - cfg.w_latency * latency_ns / 1e6 - cfg.w_slippage * slip
    )


# --- candidates ----------------------------------------------------------------------


def test_route_when_venues_unsuitable_then_each_excluded_with_its_reason() -> None:
    cfg = RouterConfig(max_spread_ticks=5, max_quote_age_ns=1_000)
    venues = [
        venue("down", unusable_reason="disconnected since ts 7 (socket closed)"),
        venue("unlisted", listed=False),
        venue("no-limit", order_types=(OrderType.MARKET,)),
        venue("ioc-only", tifs=(TimeInForce.IOC,)),
        venue("wide", bid_price=990, ask_price=1_010),
        venue("stale", quote_ts=TS - 5_000),
    ]
    decision = route(order(), venues, None, cfg, random.Random(1))
    assert not decision.routable
    assert decision.chosen is None
    assert decision.mode_used == MODE_NONE
    reasons = {c.venue: c.reason for c in decision.candidates}
    assert "disconnected since ts 7" in reasons["down"]
    assert "does not list BTC-USD" in reasons["unlisted"]
    assert "order type LIMIT not supported: expected one of MARKET" in reasons["no-limit"]
    assert "tif GTC not supported: expected one of IOC" in reasons["ioc-only"]
    assert "spread 20 ticks above max_spread_ticks 5" in reasons["wide"]
    assert "5000 ns old, above max_quote_age_ns 1000" in reasons["stale"]
    assert all(not c.suitable and c.source == SOURCE_NONE for c in decision.candidates)
    for name, reason in reasons.items():
        assert f"{name}: {reason}" in decision.explanation


def test_route_when_some_unsuitable_then_suitable_ranked_first_and_rest_by_name() -> None:
    venues = [
        venue("z-down", unusable_reason="circuit breaker"),
        venue("ok"),
        venue("a-off", listed=False),
    ]
    decision = route(order(), venues, None, RouterConfig(), random.Random(1))
    assert decision.chosen == "ok"
    assert [c.venue for c in decision.candidates] == ["ok", "a-off", "z-down"]
    assert [c.suitable for c in decision.candidates] == [True, False, False]


@pytest.mark.parametrize(("side", "missing"), [(Side.BUY, "ask"), (Side.SELL, "bid")])
def test_route_when_market_order_and_no_far_side_then_venue_unsuitable(
    side: Side, missing: str
) -> None:
    empty = venue("empty", **{f"{missing}_price": None, f"{missing}_size": None})
    mkt = order(side=side, order_type=OrderType.MARKET, price=None, tif=TimeInForce.IOC)
    decision = route(mkt, [empty, venue("full")], None, RouterConfig(), random.Random(1))
    assert decision.chosen == "full"
    assert (
        by_venue(decision)["empty"].reason
        == f"MARKET {side.value} needs a displayed {missing}, got none"
    )


def test_route_when_no_venues_then_unroutable_and_says_so() -> None:
    decision = route(order(), [], None, RouterConfig(), random.Random(1))
    assert not decision.routable
    assert decision.explanation.endswith("no routable venue: no venues given")


# --- model scoring -------------------------------------------------------------------


@pytest.mark.parametrize(("fills_a", "fills_b"), [(18, 2), (2, 18)])
def test_route_when_model_smoothed_fill_higher_then_that_venue_chosen(
    fills_a: int, fills_b: int
) -> None:
    model = fill_model({"A": cell(fills_a, 20), "B": cell(fills_b, 20)})
    decision = route(order(), [venue("A"), venue("B")], model, MODEL, random.Random(3))
    better = "A" if fills_a > fills_b else "B"
    assert decision.chosen == better
    assert decision.children[0].venue == better
    assert decision.mode_used == MODE_MODEL
    cands = by_venue(decision)
    assert cands["A"].p_fill == smoothed(fills_a, 20, 0.5, 10.0)
    assert cands["B"].p_fill == smoothed(fills_b, 20, 0.5, 10.0)
    assert all(c.source == SOURCE_MODEL and c.level == 4 for c in decision.candidates)


def test_route_when_model_cell_matches_order_buckets_then_finest_level_used() -> None:
    req = order(price=999, qty=100)  # at the bid: distance 0; 10 lots; 14:00 UTC
    key = Key("A", "BTC-USD", "BUY", "LIMIT", 0, 2, 14)
    assert model_key(req, venue("A")) == key
    assert (distance_bucket(0), size_bucket(100, 10), tod_bucket(TS)) == (0, 2, 14)
    model = FillModel(
        horizon_ns=1,
        prior_strength=10.0,
        cells={key: cell(9, 10), Key("A"): cell(1, 10), Key("B"): cell(5, 10)},
    )
    decision = route(req, [venue("A"), venue("B")], model, MODEL, random.Random(0))
    cands = by_venue(decision)
    assert (cands["A"].level, cands["A"].p_fill) == (0, cell(9, 10).p_fill)
    assert decision.chosen == "A"
    far = route(order(price=990), [venue("A"), venue("B")], model, MODEL, random.Random(0))
    assert by_venue(far)["A"].level == 4  # 9 ticks away: bucket 6 has no cell, venue level
    assert far.chosen == "B"
    assert Key("A", "BTC-USD", "BUY", "LIMIT", 6, 2, ANY) not in model.cells


def test_route_when_fee_or_latency_weighted_then_choice_follows_the_weights() -> None:
    cheap_slow = venue("cheap", maker_fee_bps=0.0, latency_ns=20_000_000)
    dear_fast = venue("dear", maker_fee_bps=5.0, latency_ns=1_000_000)
    model = fill_model({"cheap": cell(5, 10), "dear": cell(5, 10)})
    fees_matter = RouterConfig(mode="model", w_fee=10.0, w_latency=0.1)
    speed_matters = RouterConfig(mode="model", w_fee=0.1, w_latency=10.0)
    venues = [cheap_slow, dear_fast]
    assert route(order(), venues, model, fees_matter, random.Random(0)).chosen == "cheap"
    assert route(order(), venues, model, speed_matters, random.Random(0)).chosen == "dear"


@given(
    fees=st.tuples(st.floats(-2, 10), st.floats(-2, 10)),
    latencies=st.tuples(st.integers(0, 50_000_000), st.integers(0, 50_000_000)),
    slips=st.tuples(st.floats(-5, 5), st.floats(-5, 5)),
    fills=st.tuples(st.integers(0, 20), st.integers(0, 20)),
    weights=st.tuples(*[st.floats(0, 100)] * 4),
)
def test_route_when_top_k_1_then_argmax_of_the_weighted_score(
    fees: tuple[float, float],
    latencies: tuple[int, int],
    slips: tuple[float, float],
    fills: tuple[int, int],
    weights: tuple[float, float, float, float],
) -> None:
    w_fill, w_fee, w_latency, w_slippage = weights
    cfg = RouterConfig(
        mode="model", w_fill=w_fill, w_fee=w_fee, w_latency=w_latency, w_slippage=w_slippage
    )
    names = ("A", "B")
    venues = [venue(n, maker_fee_bps=fees[i], latency_ns=None) for i, n in enumerate(names)]
    cells = {
        n: cell(fills[i], 20, slippage_bps=slips[i], latency_ns=latencies[i])
        for i, n in enumerate(names)
    }
    scores = [
        expected_score(cells[n].p_fill, fees[i], latencies[i], slips[i], cfg)
        for i, n in enumerate(names)
    ]
    assume(abs(scores[0] - scores[1]) > 1e-6)
    decision = route(order(), venues, fill_model(cells), cfg, random.Random(0))
    assert decision.chosen == names[0 if scores[0] > scores[1] else 1]
    cands = by_venue(decision)
    for i, n in enumerate(names):
        assert cands[n].score == pytest.approx(scores[i], rel=1e-9, abs=1e-9)
        assert cands[n].latency_ns == latencies[i]  # the venue measured none: the model's


def test_route_when_venue_latency_measured_then_it_beats_the_model_cell() -> None:
    model = fill_model({"A": cell(5, 10, latency_ns=50_000_000)})
    decision = route(order(), [venue("A", latency_ns=2_000_000)], model, MODEL, random.Random(0))
    assert decision.candidates[0].latency_ns == 2_000_000


def test_route_when_limit_crosses_then_taker_fee_and_quote_side_used() -> None:
    v = venue("A", maker_fee_bps=-1.0, taker_fee_bps=4.0)
    resting = route(order(price=999), [v], None, RouterConfig(), random.Random(0))
    crossing = route(order(price=1_001), [v], None, RouterConfig(), random.Random(0))
    assert resting.candidates[0].fee_bps == -1.0
    assert crossing.candidates[0].fee_bps == 4.0
    assert crossing.candidates[0].slippage_bps == pytest.approx((1_001 - 1_000) / 1_000 * 1e4)
    assert resting.candidates[0].slippage_bps == pytest.approx((999 - 1_000) / 1_000 * 1e4)
    inside = venue("B", ask_price=1_003, maker_fee_bps=-1.0, taker_fee_bps=4.0)
    improving = route(order(price=1_001), [inside], None, RouterConfig(), random.Random(0))
    assert improving.candidates[0].fee_bps == -1.0  # inside the spread: rests, maker fee


# --- the choice ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_route_when_top_k_1_and_scores_tie_then_smallest_name_always(seed: int) -> None:
    names = ["zeta", "alpha", "mid"]
    model = fill_model({n: cell(5, 10) for n in names})
    decision = route(order(), [venue(n) for n in names], model, MODEL, random.Random(seed))
    assert decision.chosen == "alpha"
    assert [c.venue for c in decision.candidates] == ["alpha", "mid", "zeta"]
    assert [c.p_choose for c in decision.candidates] == [1.0, 0.0, 0.0]


def choices(seed: int, n: int, cfg: RouterConfig) -> list[str | None]:
    names = ["A", "B", "C"]
    model = fill_model({"A": cell(6, 10), "B": cell(5, 10), "C": cell(4, 10)})
    rng = random.Random(seed)
    venues = [venue(x) for x in names]
    return [route(order(), venues, model, cfg, rng).chosen for _ in range(n)]


def test_route_when_same_seed_then_same_choices_and_other_seeds_differ() -> None:
    cfg = RouterConfig(mode="model", top_k=3, temperature=50.0)
    first = choices(7, 60, cfg)
    assert first == choices(7, 60, cfg)
    assert len(set(first)) == 3
    assert any(choices(seed, 60, cfg) != first for seed in (8, 9))


@pytest.mark.parametrize(
    "cfg",
    [
        RouterConfig(),
        RouterConfig(mode="model", top_k=1),
        RouterConfig(mode="model", top_k=3, split_fraction=0.1),
    ],
)
@pytest.mark.parametrize("routable", [True, False])
def test_route_when_called_then_exactly_one_draw_taken(cfg: RouterConfig, routable: bool) -> None:
    venues = [venue("A"), venue("B")] if routable else [venue("A", listed=False)]
    model = fill_model({"A": cell(3, 10), "B": cell(7, 10)})
    rng, reference = random.Random(11), random.Random(11)
    decision = route(order(qty=5_000), venues, model, cfg, rng)
    assert decision.draw == reference.random()
    assert rng.getstate() == reference.getstate()
    assert decision.routable is routable


def test_route_when_top_k_draws_then_frequencies_follow_softmax_of_scores() -> None:
    cfg = RouterConfig(mode="model", top_k=2, temperature=3.0, w_fill=10.0)
    names = ["A", "B", "C"]
    model = fill_model({"A": cell(9, 10), "B": cell(5, 10), "C": cell(1, 10)})
    venues = [venue(n) for n in names]
    rng = random.Random(2024)
    decisions = [route(order(), venues, model, cfg, rng) for _ in range(3_000)]
    cands = decisions[0].candidates
    top = [c.score for c in cands[:2]]
    assert all(s is not None for s in top)
    weights = [math.exp(s / 3.0) for s in top if s is not None]
    expected = [w / sum(weights) for w in weights]
    assert [c.p_choose for c in cands[:2]] == pytest.approx(expected)
    assert cands[2].p_choose == 0.0
    counts = Counter(d.chosen for d in decisions)
    assert counts[cands[2].venue] == 0  # outside the top 2: never drawn
    for c, p in zip(cands[:2], expected, strict=True):
        assert counts[c.venue] / len(decisions) == pytest.approx(p, abs=0.04)


venue_names = st.lists(
    st.text("abcdef", min_size=1, max_size=3), min_size=1, max_size=5, unique=True
)


@given(names=venue_names, data=st.data(), seed=st.integers(0, 2**32))
def test_route_when_venues_reordered_then_same_decision(
    names: list[str], data: st.DataObject, seed: int
) -> None:
    venues = [
        venue(
            n,
            ask_price=data.draw(st.integers(1_000, 1_003)),
            ask_size=data.draw(st.integers(0, 300)),
            maker_fee_bps=data.draw(st.sampled_from([0.0, 1.0])),
            listed=data.draw(st.booleans()),
        )
        for n in names
    ]
    model = fill_model({n: cell(data.draw(st.integers(0, 10)), 10) for n in names[::2]})
    cfg = RouterConfig(
        mode=data.draw(st.sampled_from(["static", "model"])), top_k=3, split_fraction=0.5
    )
    shuffled = data.draw(st.permutations(venues))
    first = route(order(qty=200), venues, model, cfg, random.Random(seed))
    assert route(order(qty=200), shuffled, model, cfg, random.Random(seed)) == first


# --- static rules and fallback -------------------------------------------------------------


def test_route_when_model_lacks_a_venue_then_that_venue_on_static_estimates() -> None:
    model = fill_model({"A": cell(5, 10)})
    cfg = RouterConfig(mode="model", fallback_p_fill=0.9)
    decision = route(order(), [venue("A"), venue("B")], model, cfg, random.Random(0))
    assert decision.mode_used == MODE_MIXED
    cands = by_venue(decision)
    assert cands["A"].source == SOURCE_MODEL
    assert cands["B"].source == SOURCE_STATIC
    assert cands["B"].reason == "no fill model data for B"
    assert cands["B"].p_fill == 0.9
    assert decision.chosen == "B"  # 0.9 assumed beats A's smoothed 0.5
    assert "static estimates for B" in decision.explanation


@pytest.mark.parametrize(
    ("model", "cfg", "why"),
    [
        (None, RouterConfig(mode="model"), "no fill model loaded"),
        (fill_model({"Z": cell(9, 10)}), RouterConfig(mode="model"), "no data for any candidate"),
        (fill_model({"A": cell(9, 10)}), RouterConfig(mode="static"), "mode static"),
    ],
)
def test_route_when_model_has_nothing_then_whole_order_static(
    model: FillModel | None, cfg: RouterConfig, why: str
) -> None:
    venues = [venue("A", ask_price=1_002), venue("B", ask_price=1_001)]
    decision = route(order(), venues, model, cfg, random.Random(0))
    assert decision.mode_used == MODE_STATIC
    assert decision.chosen == "B"  # the better displayed ask
    assert all(c.source == SOURCE_STATIC and c.score is None for c in decision.candidates)
    assert all(why in (c.reason or "") for c in decision.candidates)
    assert why in decision.explanation


@pytest.mark.parametrize(
    ("side", "a", "b", "prefs", "winner"),
    [
        (Side.BUY, {"ask_price": 1_002}, {"ask_price": 1_001}, (), "B"),
        (Side.SELL, {"bid_price": 998}, {"bid_price": 999}, (), "B"),
        (Side.BUY, {"ask_price": None}, {}, (), "B"),
        (Side.BUY, {"maker_fee_bps": 2.0}, {"maker_fee_bps": 1.0}, (), "B"),
        (Side.BUY, {}, {}, ("B", "A"), "B"),
        (Side.BUY, {}, {}, ("B",), "B"),
        (Side.BUY, {}, {}, (), "A"),
        (Side.BUY, {"maker_fee_bps": 1.0}, {}, ("A",), "B"),  # fee beats preference
    ],
)
def test_route_when_static_then_price_fee_preference_name_in_that_order(
    side: Side, a: dict[str, Any], b: dict[str, Any], prefs: tuple[str, ...], winner: str
) -> None:
    req = order(side=side, price=999 if side is Side.BUY else 1_001)
    cfg = RouterConfig(venue_preference=prefs)
    decision = route(req, [venue("A", **a), venue("B", **b)], None, cfg, random.Random(0))
    assert decision.chosen == winner
    assert decision.candidates[0].rank == 1
    assert decision.candidates[0].p_choose == 1.0


# --- splitting ----------------------------------------------------------------------------


def test_route_when_qty_within_fraction_of_touch_then_one_child() -> None:
    cfg = RouterConfig(split_fraction=0.5)
    decision = route(order(qty=500), [venue("A"), venue("B")], None, cfg, random.Random(0))
    assert [(c.venue, c.qty) for c in decision.children] == [("A", 500)]


def test_route_when_qty_exceeds_fraction_of_touch_then_split_by_rank() -> None:
    cfg = RouterConfig(split_fraction=0.5)
    venues = [venue("A", bid_size=1_000), venue("B", bid_size=400), venue("C", bid_size=10)]
    decision = route(order(qty=800), venues, None, cfg, random.Random(0))
    # A (chosen) up to half its bid 500, B half of 400, C's 5 is below a lot: A keeps the rest
    assert [(c.venue, c.qty) for c in decision.children] == [("A", 600), ("B", 200)]
    assert "split A 600 + B 200" in decision.explanation


def test_route_when_secondary_share_below_min_qty_then_skipped() -> None:
    cfg = RouterConfig(split_fraction=0.5)
    venues = [venue("A", bid_size=100), venue("B", bid_size=100), venue("C", bid_size=1_000)]
    decision = route(order(qty=400, min_qty=60), venues, None, cfg, random.Random(0))
    assert [(c.venue, c.qty) for c in decision.children] == [("A", 60), ("C", 340)]


@given(
    lot=st.integers(1, 10),
    lots=st.integers(1, 500),
    min_lots=st.integers(0, 20),
    sizes=st.lists(st.one_of(st.none(), st.integers(0, 3_000)), min_size=1, max_size=4),
    fraction=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    max_children=st.integers(1, 4),
    side=st.sampled_from(list(Side)),
    model_mode=st.booleans(),
    seed=st.integers(0, 1_000),
)
def test_route_when_split_then_children_sum_to_parent_in_lots_above_min_qty(
    lot: int,
    lots: int,
    min_lots: int,
    sizes: list[int | None],
    fraction: float,
    max_children: int,
    side: Side,
    model_mode: bool,
    seed: int,
) -> None:
    qty = lots * lot
    min_qty = min(min_lots * lot - (lot // 2 if min_lots else 0), qty)
    names = [f"V{i}" for i in range(len(sizes))]
    venues = [venue(n, bid_size=s, ask_size=s) for n, s in zip(names, sizes, strict=True)]
    cfg = RouterConfig(
        mode="model" if model_mode else "static",
        top_k=3,
        temperature=5.0,
        split_fraction=fraction,
        max_children=max_children,
    )
    model = fill_model({n: cell(i, 5) for i, n in enumerate(names)})
    req = order(
        side=side, qty=qty, lot_size=lot, min_qty=min_qty, price=None, order_type=OrderType.STOP
    )
    decision = route(req, venues, model, cfg, random.Random(seed))
    children = decision.children
    assert sum(c.qty for c in children) == qty
    assert all(c.qty % lot == 0 and c.qty >= max(min_qty, lot) for c in children)
    assert len({c.venue for c in children}) == len(children) <= max_children
    assert children[0].venue == decision.chosen


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_k", 0),
        ("top_k", 4),
        ("w_fill", -1.0),
        ("w_fee", -0.5),
        ("w_latency", -1.0),
        ("w_slippage", math.inf),
        ("temperature", 0.0),
        ("fallback_p_fill", 1.5),
        ("split_fraction", 0.0),
        ("max_children", 0),
        ("venue_preference", ("A", "A")),
        ("max_spread_ticks", -1),
        ("mode", "greedy"),
    ],
)
def test_router_config_when_field_invalid_then_error_names_the_field(
    field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=rf"RouterConfig\.{field}: expected"):
        RouterConfig(**{field: value})
    raw: Any = list(value) if isinstance(value, tuple) else value
    if isinstance(raw, float) and not math.isfinite(raw):
        return  # JSON-like dicts from TOML carry no inf
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({field: raw}, RouterConfig)


def test_router_config_when_unknown_field_then_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="top_n"):
        msgspec.convert({"top_n": 2}, RouterConfig)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"qty": 15}, "qty must be a positive multiple of lot_size 10, got 15"),
        ({"qty": 0}, "qty must be a positive multiple"),
        ({"qty": 10, "min_qty": 20}, "qty must be >= min_qty 20, got 10"),
        ({"lot_size": 0}, "lot_size must be >= 1, got 0"),
        ({"tick_size": 0}, "tick_size must be >= 1, got 0"),
    ],
)
def test_route_request_when_invalid_then_error_names_the_field(
    kw: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        order(**kw)


def test_route_when_venue_given_twice_then_error_names_both_positions() -> None:
    with pytest.raises(ValueError, match=r"venues\[2\]\.name: .*'A' again \(also venues\[0\]\)"):
        route(order(), [venue("A"), venue("B"), venue("A")], None, RouterConfig(), random.Random(0))


def test_route_when_model_from_other_bucket_version_then_refused() -> None:
    model = msgspec.structs.replace(fill_model({"A": cell(1, 2)}), buckets_version=0)
    with pytest.raises(ValueError, match=r"FillModel\.buckets_version: expected 1, got 0"):
        route(order(), [venue("A")], model, MODEL, random.Random(0))
