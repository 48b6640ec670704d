"""The engine with a router: signals without a venue are routed, children sent, reasons kept."""

from __future__ import annotations

from typing import Any

from engine.config import EngineConfig, RiskConfig, VenueRules
from engine.core import Engine
from engine.fillmodel import Cell, FillModel, Key, decode_model, encode_model, model_sha256
from engine.messages import (
    AssetClass,
    Instrument,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SignalRejected,
    SubmitOrder,
    VenueDisconnected,
)
from engine.router import RouterConfig

BTC = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=0,
    venue_symbols={"A": "BTCUSD", "B": "BTC-USD", "C": "XBT"},
)
NOW = 1_000_000_000


def engine(router: RouterConfig, model: FillModel | None = None, **kw: Any) -> Engine:
    risk = RiskConfig(
        venues={
            "A": VenueRules(taker_fee_bps=5.0),
            "B": VenueRules(taker_fee_bps=1.0),
            "C": VenueRules(taker_fee_bps=1.0),
        }
    )
    sha = None if model is None else model_sha256(model)
    config = EngineConfig(
        run_id="r", instruments=(BTC,), router=router, risk=risk, fill_model_sha256=sha, **kw
    )
    eng = Engine(config, fill_model=model)
    for venue, bid, ask, size in (
        ("A", 9990, 10000, 50),
        ("B", 9990, 10000, 50),
        ("C", 9980, 10010, 50),
    ):
        eng.handle(
            QuoteTick(
                ts_recv=NOW - 1,
                instrument="BTC-USD",
                venue=venue,
                bid_price=bid,
                bid_size=size,
                ask_price=ask,
                ask_size=size,
            )
        )
    return eng


def signal(n: int, qty: int = 10, **kw: Any) -> Signal:
    fields: dict[str, Any] = {
        "ts_recv": NOW + n,
        "signal_id": f"s{n}",
        "strategy": "st",
        "account": "acc",
        "instrument": "BTC-USD",
        "side": Side.BUY,
        "qty": qty,
        "order_type": OrderType.MARKET,
    }
    fields.update(kw)
    return Signal(**fields)


def submits(effects: list[Any]) -> list[SubmitOrder]:
    return [e for e in effects if isinstance(e, SubmitOrder)]


def test_engine_route_when_static_then_best_price_then_lowest_fee() -> None:
    eng = engine(RouterConfig(mode="static"))
    [order] = submits(eng.handle(signal(1)))
    assert order.venue == "B"  # A and B show the best ask; B charges less
    assert eng.last_route is not None and eng.last_route.mode_used == "static"


def test_engine_route_when_signal_names_venue_then_router_not_asked() -> None:
    eng = engine(RouterConfig(mode="static"))
    [order] = submits(eng.handle(signal(1, venue="C")))
    assert order.venue == "C"
    assert eng.last_route is None


def test_engine_route_when_model_prefers_venue_then_it_is_chosen() -> None:
    cells = {
        Key("A"): Cell(n=100, fills=95, p_fill=0.95, slippage_bps=0.0, latency_ns=1_000),
        Key("B"): Cell(n=100, fills=20, p_fill=0.2, slippage_bps=0.0, latency_ns=1_000),
        Key("C"): Cell(n=100, fills=20, p_fill=0.2, slippage_bps=0.0, latency_ns=1_000),
    }
    model = FillModel(horizon_ns=10**10, prior_strength=10.0, cells=cells)
    eng = engine(RouterConfig(mode="model", top_k=1), model)
    [order] = submits(eng.handle(signal(1)))
    assert order.venue == "A"


def test_engine_route_when_top_k_then_same_seed_same_choices() -> None:
    def choices(seed: int) -> list[str]:
        eng = engine(RouterConfig(mode="model", top_k=3, temperature=50.0), None, seed=seed)
        model_free = [submits(eng.handle(signal(n)))[0].venue for n in range(1, 30)]
        return model_free

    assert choices(7) == choices(7)


def test_engine_route_when_parent_large_then_split_across_venues() -> None:
    eng = engine(RouterConfig(mode="static", split_fraction=0.5, max_children=3))
    orders = submits(eng.handle(signal(1, qty=60)))
    assert sum(o.qty for o in orders) == 60
    assert len({o.venue for o in orders}) == len(orders) > 1
    assert {o.signal_id for o in orders} == {"s1"}


def test_engine_route_when_every_venue_unusable_then_no_route_with_reasons() -> None:
    eng = engine(RouterConfig(mode="static"))
    for venue in ("A", "B", "C"):
        eng.handle(VenueDisconnected(ts_recv=NOW, venue=venue, reason="down"))
    [rejected] = eng.handle(signal(1))
    assert isinstance(rejected, SignalRejected) and rejected.code == "no_route"
    for venue in ("A", "B", "C"):
        assert f"{venue}: unusable: disconnected since ts {NOW}" in rejected.reason


def test_engine_fill_model_when_sha_differs_then_refused() -> None:
    model = FillModel(horizon_ns=1, prior_strength=1.0, cells={})
    try:
        Engine(EngineConfig(run_id="r", instruments=(BTC,), fill_model_sha256="00"), model)
    except ValueError as exc:
        assert "fill_model_sha256 is 00" in str(exc)
    else:
        raise AssertionError("a model that is not the one the config names was accepted")


def test_fill_model_when_encoded_then_decodes_equal_with_stable_sha() -> None:
    cells = {
        Key("B", "X", "BUY", "LIMIT", 0, 1, 3): Cell(
            n=3, fills=1, p_fill=0.4, slippage_bps=1.5, latency_ns=9
        ),
        Key("A"): Cell(n=9, fills=9, p_fill=0.9, slippage_bps=0.0, latency_ns=1),
    }
    model = FillModel(horizon_ns=5, prior_strength=10.0, cells=cells, fitted_on=("r1",))
    again = decode_model(encode_model(model))
    assert again == model
    shuffled = FillModel(
        horizon_ns=5, prior_strength=10.0, cells=dict(reversed(cells.items())), fitted_on=("r1",)
    )
    assert model_sha256(shuffled) == model_sha256(model)
