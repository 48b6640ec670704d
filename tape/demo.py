"""`tape demo`: a small seeded market on three venues, a sim run, and its replay verified.

The sample data is generated, not downloaded: the same seed gives the same market,
signals and journal on every machine.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

from analytics.summary import render, summarize
from analytics.tca import aggregate, load_tca
from engine import native
from engine.config import EngineConfig
from engine.core import Engine
from engine.messages import AssetClass, Instrument, OrderType, Side, Signal, SignalIntent
from engine.replay import replay
from sim.config import SimResult, VenueConfig
from sim.market import MarketSpec, VenueQuoting, generate_quotes
from sim.run import SimRun

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
VENUES = ("ALPHA", "BETA", "GAMMA")


def demo_instruments() -> tuple[Instrument, ...]:
    """Three crypto instruments listed on the three demo venues."""
    symbols = {v: "" for v in VENUES}

    def crypto(name: str, base: str, tick: int, min_notional_usd: int) -> Instrument:
        return Instrument(
            instrument=name,
            asset_class=AssetClass.CRYPTO,
            currency="USD",
            price_precision=2,
            size_precision=4,
            tick_size=tick,
            lot_size=1,
            min_qty=1,
            min_notional=min_notional_usd * 10**6,
            venue_symbols={v: f"{base}/USD" if v != "GAMMA" else f"{base}USD" for v in symbols},
        )

    return (
        crypto("BTC-USD", "BTC", 1, 10),
        crypto("ETH-USD", "ETH", 1, 10),
        crypto("SOL-USD", "SOL", 1, 5),
    )


def demo_venues() -> tuple[VenueConfig, ...]:
    """Three venues with different fees and latency."""
    return (
        VenueConfig(name="ALPHA", maker_fee_bps=-1, taker_fee_bps=5, latency_ns=2_000_000),
        VenueConfig(name="BETA", maker_fee_bps=1, taker_fee_bps=3, latency_ns=5_000_000),
        VenueConfig(name="GAMMA", maker_fee_bps=0, taker_fee_bps=8, latency_ns=500_000),
    )


def demo_quoting() -> tuple[VenueQuoting, ...]:
    """How deep and wide each demo venue quotes."""
    return (
        VenueQuoting(venue="ALPHA", half_spread_ticks=1, mean_size_lots=400),
        VenueQuoting(venue="BETA", half_spread_ticks=2, mean_size_lots=1500),
        VenueQuoting(venue="GAMMA", half_spread_ticks=1, mean_size_lots=150),
    )


def demo_market(seed: int, ticks: int) -> pa.Table:
    """Generate the demo quote stream: `ticks` quotes per instrument and venue."""
    spec = MarketSpec(
        start_ns=START_NS,
        ticks=ticks,
        interval_ns=100_000_000,
        start_mid={"BTC-USD": 9_000_000, "ETH-USD": 300_000, "SOL-USD": 15_000},
        vol_ticks=2.0,
    )
    return generate_quotes(spec, demo_instruments(), demo_quoting(), seed)


def demo_signals(quotes: pa.Table, seed: int, every: int = 20) -> list[Signal]:
    """Draw signals from the market: every `every`-th quote, a seeded order or target."""
    rng = random.Random(seed)
    cols = [quotes.column(n).to_pylist() for n in ("ts", "instrument", "venue", "bid_price")]
    asks = quotes.column("ask_price").to_pylist()
    signals: list[Signal] = []
    for i in range(every, len(cols[0]), every):
        ts, inst, venue, bid = cols[0][i], cols[1][i], cols[2][i], cols[3][i]
        ask = asks[i]
        mid = (bid + ask) // 2
        strategy = rng.choice(("momentum", "meanrev"))
        account = rng.choice(("ACC-1", "ACC-2"))
        n = len(signals) + 1
        common: dict[str, Any] = {
            "ts_recv": ts + 1,
            "ts_event": ts,
            "signal_id": f"demo-sig-{n}",
            "strategy": strategy,
            "account": account,
            "instrument": inst,
            "signal_price": mid,
            "venue": venue if rng.random() < 0.5 else None,
        }
        usd = rng.choice((50, 100, 250, 500, 1_000))  # order size in notional terms
        lots = max(1, usd * 100 * 10**4 // mid)
        roll = rng.random()
        if roll < 0.15:
            target = rng.choice((-1, 1)) * lots * 2
            signals.append(Signal(**common, intent=SignalIntent.TARGET, target=target))
            continue
        side = rng.choice((Side.BUY, Side.SELL))
        if roll < 0.55:
            signals.append(Signal(**common, side=side, qty=lots, order_type=OrderType.MARKET))
        else:
            price = bid if side is Side.BUY else ask
            signals.append(
                Signal(**common, side=side, qty=lots, order_type=OrderType.LIMIT, price=price)
            )
    return signals


def run_demo(journals: Path, run_id: str, seed: int, ticks: int) -> tuple[SimResult, Engine]:
    """Run the demo sim into `journals/<run_id>`; return its result and engine."""
    config = EngineConfig(
        run_id=run_id,
        seed=seed,
        instruments=demo_instruments(),
        max_order_qty={"*": 100_000},
    )
    quotes = demo_market(seed, ticks)
    signals = demo_signals(quotes, seed)
    sim = SimRun(config, demo_venues(), journals)
    return sim.run(quotes, signals), sim.engine


def _free_run_id(journals: Path, wanted: str | None) -> str:
    """Use the run id asked for (which must be new), or the first free demo, demo-2, ..."""
    from tape.cli import UsageError

    if wanted is not None:
        if (journals / wanted).exists():
            raise UsageError(
                f"--run-id {wanted!r}: a journal already exists at {journals / wanted}; "
                "choose another run id"
            )
        return wanted
    n, run_id = 1, "demo"
    while (journals / run_id).exists():
        n += 1
        run_id = f"demo-{n}"
    return run_id


def cmd_demo(args: argparse.Namespace, out: Console) -> int:
    if args.ticks < 10:
        from tape.cli import UsageError

        raise UsageError(f"--ticks: expected at least 10 quotes per venue, got {args.ticks}")
    args.run_id = _free_run_id(args.journals, args.run_id)
    out.print(f"tape demo: 3 instruments x 3 venues, {args.ticks:,} quotes each, seed {args.seed}")
    result, _ = run_demo(args.journals, args.run_id, args.seed, args.ticks)
    out.print(
        f"sim: {result.inputs:,} inputs, {result.effects:,} effects, {result.orders:,} orders, "
        f"{result.fills:,} fills, {result.alerts:,} alerts in {result.wall_s:.2f} s "
        f"({result.inputs / max(result.wall_s, 1e-9):,.0f} events/s); "
        f"engine: {native.status().describe()}"
    )
    out.print(render(summarize(result.run_dir, wall_s=result.wall_s)))
    out.print(venue_table(Path(result.run_dir)))
    verified, _ = replay(Path(result.run_dir), verify=True)
    if verified.divergence is not None:
        out.print(f"replay DIVERGED: {verified.divergence.describe()}")
        return 1
    run_dir = result.run_dir
    out.print(
        f"replay OK: {verified.inputs + verified.effects:,} entries identical; "
        f"journal at {run_dir}\n"
        f"next: tape tca {run_dir} --html report.html | tape limits {run_dir} | "
        f"tape tca {run_dir} --fit-fill-model model.parquet"
    )
    return 0


def venue_table(run_dir: Path) -> Table:
    """Tabulate the run's TCA by venue: fill rate, slippage, shortfall, fees, ack latency."""
    by_venue = aggregate(load_tca(run_dir).orders, ["venue"])
    table = Table(title="transaction costs by venue (tape tca)")
    for col in ("venue", "orders", "fill rate", "slippage vs arrival bps", "shortfall bps",
                "fees bps", "ack p50 ms"):  # fmt: skip
        table.add_column(col, justify="left" if col == "venue" else "right")
    for row in by_venue.iter_rows(named=True):
        ack = row["sent_to_ack_p50_ns"]
        table.add_row(
            row["venue"],
            f"{row['orders']:,}",
            f"{row['fill_rate']:.1%}",
            _fmt(row["slippage_arrival_bps"]),
            _fmt(row["shortfall_bps"]),
            _fmt(row["fees_bps"]),
            "-" if ack is None else f"{ack / 1e6:.1f}",
        )
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `tape demo`."""
    p = sub.add_parser(
        "demo", parents=[common], help="run a seeded sim on sample data and verify its replay"
    )
    p.add_argument(
        "--run-id", default=None, help="run id (default: the first free of demo, demo-2, ...)"
    )
    p.add_argument("--seed", type=int, default=7, help="market and signal seed (default 7)")
    p.add_argument(
        "--ticks", type=int, default=3000, help="quotes per instrument and venue (default 3000)"
    )
    p.set_defaults(func=cmd_demo)
