"""The routing loop, measured: static router -> fill model -> model-driven router.

Three simulated venues quote one instrument around a shared mid, each sometimes a tick
wider on either side (fragmented best prices), and differ in what the quotes do not
show: the rate of hidden marketable flow that fills resting orders
(`hidden_fill_rate_per_s`). A strategy posts passive limit orders at the consolidated
touch every `--every-ms` and cancels each one `--life-ms` later.

1. A run with the static router (best displayed price, then fee, then preference) on
   market seed 1: the learning run.
2. `analytics.fill_model` fits a fill model on that run's journal (horizon = order life).
3. On fresh market data of the same generator (seed 2), the same order flow runs twice:
   with the static router (the baseline) and with the model-driven router.

Prints fill rate, slippage against arrival and implementation shortfall (bps) per run
and the venue mix, then, last, one JSON line with `static_fill_rate`, `model_fill_rate`
and `fill_rate_improvement` (relative: 0.15 = 15%). Target: >= 0.15.

    python bench/routing.py [--quick] [--minutes N] [--every-ms N] [--life-ms N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/sim.py would shadow the `sim` package: import from the project, not this folder.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from analytics.fill_model import fit_fill_model, load_fill_model, write_fill_model  # noqa: E402
from analytics.tca import aggregate, load_tca  # noqa: E402
from engine.config import EngineConfig, RiskConfig, VenueRules  # noqa: E402
from engine.fillmodel import FillModel, model_sha256  # noqa: E402
from engine.messages import AssetClass, Instrument, OrderType, Side, Signal, SignalIntent  # noqa: E402
from engine.router import RouterConfig  # noqa: E402
from sim.config import VenueConfig  # noqa: E402
from sim.market import quote_table  # noqa: E402
from sim.run import SimRun  # noqa: E402

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
INTERVAL_NS = 100_000_000
VOL_TICKS = 0.35  # std dev of the mid's 100 ms step, in ticks (before rounding)
TICK = 1
INSTRUMENT = Instrument(
    instrument="BTC-USD",
    asset_class=AssetClass.CRYPTO,
    currency="USD",
    price_precision=2,
    size_precision=4,
    tick_size=TICK,
    lot_size=100,
    min_qty=100,
    venue_symbols={"A": "BTC/USD", "B": "BTC/USD", "C": "BTCUSD"},
)
# Fees and latency alike; hidden flow (what quotes do not show) is what differs.
VENUES = (
    VenueConfig(name="A", maker_fee_bps=0, taker_fee_bps=4, latency_ns=2_000_000,
                hidden_fill_rate_per_s=0.05, seed=11),
    VenueConfig(name="B", maker_fee_bps=0, taker_fee_bps=4, latency_ns=2_000_000,
                hidden_fill_rate_per_s=0.15, seed=12),
    VenueConfig(name="C", maker_fee_bps=0, taker_fee_bps=4, latency_ns=2_000_000,
                hidden_fill_rate_per_s=0.4, seed=13),
)  # fmt: skip
RULES = {v.name: VenueRules(maker_fee_bps=0.0, taker_fee_bps=4.0) for v in VENUES}


def market(seed: int, ticks: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Quotes of the three venues; also the consolidated best bid and ask per tick."""
    rng = np.random.default_rng(seed)
    ts = START_NS + np.arange(ticks, dtype=np.int64) * INTERVAL_NS
    mid = 9_000_000 + np.cumsum(np.rint(rng.normal(0.0, VOL_TICKS, ticks)).astype(np.int64))
    parts, bids, asks = [], [], []
    for venue in VENUES:
        wide_bid = rng.integers(0, 2, ticks)  # a venue sometimes quotes a tick wider
        wide_ask = rng.integers(0, 2, ticks)
        bid = (mid - 1 - wide_bid) * TICK
        ask = (mid + 1 + wide_ask) * TICK
        size = (rng.poisson(20, ticks) + 1) * INSTRUMENT.lot_size
        parts.append(quote_table(ts, "BTC-USD", venue.name, bid, size, ask, size))
        bids.append(bid)
        asks.append(ask)
    table = pa.concat_tables(parts).sort_by([("ts", "ascending"), ("venue", "ascending")])
    return table, np.max(bids, axis=0), np.min(asks, axis=0)


def order_flow(
    best_bid: np.ndarray, best_ask: np.ndarray, seed: int, every_ms: int, life_ms: int
) -> list[Signal]:
    """Passive limit orders at the consolidated touch, each canceled `life_ms` later."""
    rng = np.random.default_rng(seed + 1_000)
    step = every_ms * 1_000_000 // INTERVAL_NS
    out: list[Signal] = []
    for n, i in enumerate(range(step, len(best_bid) - 1, step)):
        at = START_NS + i * INTERVAL_NS + 1  # just after tick i: the engine has seen it
        buy = bool(rng.integers(0, 2))
        sid = f"o{n}"
        out.append(
            Signal(
                ts_recv=at,
                signal_id=sid,
                strategy="maker",
                account="ACC",
                instrument="BTC-USD",
                side=Side.BUY if buy else Side.SELL,
                qty=int(rng.integers(1, 4)) * INSTRUMENT.lot_size,
                order_type=OrderType.LIMIT,
                price=int(best_bid[i] if buy else best_ask[i]),
                signal_price=int((best_bid[i] + best_ask[i]) // 2),
            )
        )
        out.append(
            Signal(
                ts_recv=at + life_ms * 1_000_000,
                signal_id=f"{sid}-cancel",
                strategy="maker",
                account="ACC",
                instrument="BTC-USD",
                intent=SignalIntent.CANCEL,
                cancels=sid,
            )
        )
    out.sort(key=lambda s: s.ts_recv)
    return out


def run(
    journals: Path,
    run_id: str,
    table: pa.Table,
    signals: list[Signal],
    router: RouterConfig,
    model: FillModel | None = None,
) -> tuple[Path, float]:
    """Run one sim; return its journal and wall time."""
    config = EngineConfig(
        run_id=run_id,
        seed=7,
        instruments=(INSTRUMENT,),
        risk=RiskConfig(venues=RULES),
        router=router,
        fill_model_sha256=None if model is None else model_sha256(model),
    )
    sim = SimRun(config, VENUES, journals, fill_model=model)
    started = time.perf_counter()
    result = sim.run(table.to_batches(max_chunksize=65_536), signals)
    return Path(result.run_dir), time.perf_counter() - started


def figures(run_dir: Path) -> dict[str, Any]:
    """Fill rate, slippage and shortfall of a run, and its venue mix."""
    orders = load_tca(run_dir).orders
    overall = aggregate(orders).row(0, named=True)
    mix = orders.group_by("venue").agg(pl.len().alias("n")).sort("venue")
    by_venue = aggregate(orders, ["venue"])
    return {
        "orders": overall["orders"],
        "fill_rate": overall["fill_rate"],
        "slippage_arrival_bps": overall["slippage_arrival_bps"],
        "shortfall_bps": overall["shortfall_bps"],
        "mix": {r["venue"]: r["n"] for r in mix.iter_rows(named=True)},
        "venue_fill_rate": {r["venue"]: r["fill_rate"] for r in by_venue.iter_rows(named=True)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 minutes of market, not 60")
    parser.add_argument("--minutes", type=int, help="minutes of market per run")
    parser.add_argument("--every-ms", type=int, default=500, help="one order every N ms")
    parser.add_argument("--life-ms", type=int, default=2_000, help="cancel after N ms")
    args = parser.parse_args(argv)
    minutes = args.minutes or (10 if args.quick else 60)
    ticks = minutes * 60 * 1_000_000_000 // INTERVAL_NS
    out = Console(width=160)
    horizon = args.life_ms * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        journals = Path(tmp)
        learn_market, bid1, ask1 = market(1, ticks)
        learn_flow = order_flow(bid1, ask1, 1, args.every_ms, args.life_ms)
        static = RouterConfig(mode="static")
        learn_dir, learn_s = run(journals, "learn-static", learn_market, learn_flow, static)
        started = time.perf_counter()
        cells, info = fit_fill_model(load_tca(learn_dir), horizon_ns=horizon)
        model_path = journals / "model.parquet"
        write_fill_model(model_path, cells, info)
        model, file_sha = load_fill_model(model_path)
        fit_s = time.perf_counter() - started
        test_market, bid2, ask2 = market(2, ticks)
        test_flow = order_flow(bid2, ask2, 2, args.every_ms, args.life_ms)
        base_dir, base_s = run(journals, "test-static", test_market, test_flow, static)
        routed = RouterConfig(mode="model", top_k=2, temperature=5.0)
        model_dir, model_s = run(journals, "test-model", test_market, test_flow, routed, model)
        learn, base, tuned = figures(learn_dir), figures(base_dir), figures(model_dir)
    improvement = tuned["fill_rate"] / base["fill_rate"] - 1.0 if base["fill_rate"] else 0.0
    table = Table(
        title=f"routing loop: {minutes} min of market per run, an order every "
        f"{args.every_ms} ms living {args.life_ms} ms"
    )
    for col in ("run", "market", "router", "orders", "fill rate", "slippage bps",
                "shortfall bps", "venue mix (A/B/C)", "wall s"):  # fmt: skip
        table.add_column(col)
    for name, seed, router, f, wall in (
        ("learn", 1, "static", learn, learn_s),
        ("baseline", 2, "static", base, base_s),
        ("model", 2, "model top-2", tuned, model_s),
    ):
        mix = "/".join(str(f["mix"].get(v.name, 0)) for v in VENUES)
        table.add_row(
            name,
            f"seed {seed}",
            router,
            f"{f['orders']:,}",
            f"{f['fill_rate']:.3f}",
            _bps(f["slippage_arrival_bps"]),
            _bps(f["shortfall_bps"]),
            mix,
            f"{wall:.2f}",
        )
    out.print(table)
    venues = ", ".join(f"{v}: {rate:.2f}" for v, rate in sorted(learn["venue_fill_rate"].items()))
    out.print(f"fill rate by venue in the learning run: {venues}")
    out.print(
        f"model: {model.n_orders:,} orders, {len(model.cells)} cells, fitted in {fit_s:.2f} s "
        f"(file sha256 {file_sha[:12]}...)"
    )
    verdict = "met" if improvement >= 0.15 else "NOT met"
    out.print(
        f"fill rate {base['fill_rate']:.3f} (static) -> {tuned['fill_rate']:.3f} (model): "
        f"{improvement:+.1%} for the same order flow on the same market; target +15% {verdict}"
    )
    result = {
        "minutes": minutes,
        "orders": tuned["orders"],
        "learn_fill_rate": learn["fill_rate"],
        "static_fill_rate": base["fill_rate"],
        "model_fill_rate": tuned["fill_rate"],
        "fill_rate_improvement": improvement,
        "static_slippage_bps": base["slippage_arrival_bps"],
        "model_slippage_bps": tuned["slippage_arrival_bps"],
        "static_shortfall_bps": base["shortfall_bps"],
        "model_shortfall_bps": tuned["shortfall_bps"],
    }
    print(json.dumps(result))
    return 0


def _bps(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    sys.exit(main())
