"""hftbacktest's side of the sim benchmark: one workload as a Numba-jitted strategy loop.

Setup: `BacktestAsset().data([npz])` with the cached event array (each quote as its L1
book in depth events: see peers/common.py), `linear_asset(1.0)`,
`constant_order_latency(100_000, 100_000)` (the common 0.1 ms each way),
`risk_adverse_queue_model()`, `no_partial_fill_exchange()`, no fees, tick 0.01, lot
0.001, into a `HashMapMarketDepthBacktest`; the strategy is an `@njit` function driving
the backtester, the documented way to run hftbacktest fast. Numba compiles the
strategy functions on a small warm-up data set first (not timed).

Timed: building the backtester (its data file is loaded lazily, inside the run) and the
strategy loop to the end of the data.

- W0: data only: `elapse(1 s)` until the end of the data (no per-tick strategy code).
- W1: `wait_next_feed` returns once per quote; at each decision row (the row is read off
  `current_timestamp`) the strategy cancels the previous limit order if its local status
  is still NEW, then submits a GTC limit at the touch (buy at the bid on even decisions,
  sell at the ask on odd ones).
- W2: the same loop submits a market order at each decision row.

Fills are the backtester's own trade count (`state_values(0).num_trades`).

Run: `python -m peers.hftbacktest_peer --workload W1 --ticks 1000000 --cache DIR` (from the
repository root, with it and then `bench/` on PYTHONPATH); prints one JSON line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hftbacktest import GTC, LIMIT, MARKET, NEW, BacktestAsset, HashMapMarketDepthBacktest
from numba import njit

from peers import common

WARMUP_TICKS = 3_000
TIMEOUT_NS = 60_000_000_000


@njit
def data_only(hbt: Any) -> int:
    steps = 0
    while hbt.elapse(1_000_000_000) == 0:
        steps += 1
    return steps


@njit
def every_nth(
    hbt: Any,
    limit: bool,
    start_ns: int,
    spacing_ns: int,
    phase: int,
    every: int,
    qty: float,
) -> tuple[int, int, int, int]:
    seen = 0
    orders = 0
    cancels = 0
    prev = 0
    next_row = phase
    while True:
        r = hbt.wait_next_feed(False, TIMEOUT_NS)
        if r == 1:
            break
        if r != 2:
            continue
        seen += 1
        row = (hbt.current_timestamp - start_ns) // spacing_ns
        if row != next_row:
            continue
        next_row = row + every
        buy = orders % 2 == 0
        depth = hbt.depth(0)
        if limit:
            if prev != 0:
                open_orders = hbt.orders(0)
                if prev in open_orders:
                    order = open_orders.get(prev)
                    if order.status == NEW:
                        hbt.cancel(0, prev, False)
                        cancels += 1
            hbt.clear_inactive_orders(0)
        orders += 1
        if buy:
            price = depth.best_bid if limit else depth.best_ask
            kind = LIMIT if limit else MARKET
            hbt.submit_buy_order(0, orders, price, qty, GTC, kind, False)
        else:
            price = depth.best_ask if limit else depth.best_bid
            kind = LIMIT if limit else MARKET
            hbt.submit_sell_order(0, orders, price, qty, GTC, kind, False)
        prev = orders
    return seen, orders, cancels, hbt.state_values(0).num_trades


def backtest(path: Path) -> Any:
    asset = (
        BacktestAsset()
        .data([str(path)])
        .linear_asset(1.0)
        .constant_order_latency(common.LATENCY_NS, common.LATENCY_NS)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(10.0**-common.PRICE_PRECISION)
        .lot_size(10.0**-common.SIZE_PRECISION)
        .last_trades_capacity(0)
    )
    return HashMapMarketDepthBacktest([asset])


def strategy(hbt: Any, workload: str) -> tuple[int, int, int, int]:
    """Run one workload on `hbt`; return (ticks seen, orders, cancels, fills)."""
    if workload == "W0":
        data_only(hbt)
        return 0, 0, 0, 0
    qty = common.ORDER_QTY * 10.0**-common.SIZE_PRECISION
    return every_nth(
        hbt,
        workload == "W1",
        common.START_NS,
        common.SPACING_NS,
        common.PHASE,
        common.EVERY,
        qty,
    )


def warm_up(cache: Path, workload: str) -> None:
    """Compile the jitted strategy on a small data set, so the timed run compiles nothing."""
    path = cache / f"hbt-warmup-v{common.VERSION}.npz"
    if not path.exists():
        common.write_hbt(path, common.generate(WARMUP_TICKS))
    hbt = backtest(path)
    strategy(hbt, workload)
    hbt.close()


def run(workload: str, ticks: int, cache: Path) -> dict[str, Any]:
    started = time.perf_counter()
    warm_up(cache, workload)
    setup_s = time.perf_counter() - started
    t0, c0 = time.perf_counter(), time.process_time()
    hbt = backtest(common.hbt_path(cache, ticks))
    seen, orders, cancels, fills = strategy(hbt, workload)
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    hbt.close()
    out: dict[str, Any] = {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "setup_s": setup_s,
        "orders": orders,
        "fills": fills,
        "cancels": cancels,
    }
    if workload != "W0":
        out["ticks_seen"] = seen
    return out


if __name__ == "__main__":
    common.child_main("hftbacktest", run)
