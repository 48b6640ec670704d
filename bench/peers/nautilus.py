"""NautilusTrader's side of the sim benchmark: one workload on its low-level BacktestEngine.

Setup (not timed): a BacktestEngine with logging bypassed and no post-run analysis; venue
SIM (OMS NETTING, CASH account with 10,000,000 USD and 1,000 BTC, L1 book, default fill
model, `LatencyModel(base_latency_nanos=100_000)`: the common 0.1 ms order latency, no
fees: the instrument's maker and taker fees are 0); the instrument a `CurrencyPair`
BTC/USD.SIM with price precision 2 and size precision 3; the quotes as Nautilus
`QuoteTick` objects built from the cached Arrow file's columns with
`QuoteTick.from_raw_arrays_to_list` (the fast path its `QuoteTickDataWrangler` uses)
and added with `add_data`. The risk engine and everything else keep their defaults.

Timed: `engine.run()` over all the ticks.

- W0: data only: no strategy; every tick still goes through the data engine and the
  simulated exchange's matching engine.
- subscribe: a strategy subscribes to the quote ticks and does nothing in
  `on_quote_tick`: the cost of showing every tick to Python strategy code (the issue's
  "subscribe mode"; Tape's per-tick callback mode is compared with it).
- W1: the subscribed strategy counts ticks and, at each decision row, cancels the
  previous limit order if it is still open (`order.is_open`) and submits a GTC limit at
  the touch (buy at the bid on even decisions, sell at the ask on odd ones).
- W2: the subscribed strategy submits a market order at each decision row.

A Nautilus strategy sees ticks only through a subscription, so W1 and W2 are
necessarily per-tick callback workloads here.

Run: `python -m peers.nautilus --workload W1 --ticks 1000000 --cache DIR` (from the
repository root, with it and then `bench/` on PYTHONPATH); prints one JSON line.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import LatencyModel
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import BTC, USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, BookType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import CurrencyPair
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.trading.strategy import Strategy

from peers import common

VENUE = Venue(common.VENUE)
INSTRUMENT_ID = InstrumentId(Symbol("BTC/USD"), VENUE)


def instrument() -> CurrencyPair:
    pp, sp = common.PRICE_PRECISION, common.SIZE_PRECISION
    return CurrencyPair(
        instrument_id=INSTRUMENT_ID,
        raw_symbol=Symbol("BTC/USD"),
        base_currency=BTC,
        quote_currency=USD,
        price_precision=pp,
        size_precision=sp,
        price_increment=Price(10.0**-pp, pp),
        size_increment=Quantity(10.0**-sp, sp),
        lot_size=None,
        max_quantity=None,
        min_quantity=Quantity(10.0**-sp, sp),
        max_notional=None,
        min_notional=None,
        max_price=None,
        min_price=None,
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=Decimal(0),
        taker_fee=Decimal(0),
        ts_event=0,
        ts_init=0,
    )


def quote_ticks(path: Path) -> list[QuoteTick]:
    """Nautilus QuoteTicks of the cached quotes (prices and sizes as decimals)."""
    cols = common.read_columns(path)
    price_scale = 10.0**common.PRICE_PRECISION
    size_scale = 10.0**common.SIZE_PRECISION
    ts = cols["ts"].astype(np.uint64)
    return QuoteTick.from_raw_arrays_to_list(
        INSTRUMENT_ID,
        common.PRICE_PRECISION,
        common.SIZE_PRECISION,
        cols["bid"] / price_scale,
        cols["ask"] / price_scale,
        cols["bid_size"] / size_scale,
        cols["ask_size"] / size_scale,
        ts,
        ts,
    )


class BenchConfig(StrategyConfig, frozen=True):
    workload: str = "W1"


class BenchStrategy(Strategy):
    """Subscribes to the quotes; W1/W2 act on every EVERY-th tick, "subscribe" never."""

    def __init__(self, config: BenchConfig) -> None:
        super().__init__(config)
        self.workload = config.workload
        self.row = 0
        self.next_row = common.PHASE if config.workload in ("W1", "W2") else -1
        self.k = 0
        self.qty = Quantity(common.ORDER_QTY * 10.0**-common.SIZE_PRECISION, common.SIZE_PRECISION)
        self.prev: Any = None
        self.orders = self.fills = self.cancels = 0

    def on_start(self) -> None:
        self.subscribe_quote_ticks(INSTRUMENT_ID)

    def on_quote_tick(self, tick: QuoteTick) -> None:
        row = self.row
        self.row = row + 1
        if row != self.next_row:
            return
        self.next_row = row + common.EVERY
        k = self.k
        self.k = k + 1
        buy = k % 2 == 0
        side = OrderSide.BUY if buy else OrderSide.SELL
        if self.workload == "W1":
            if self.prev is not None and self.prev.is_open:
                self.cancel_order(self.prev)
                self.cancels += 1
            price = tick.bid_price if buy else tick.ask_price
            order = self.order_factory.limit(INSTRUMENT_ID, side, self.qty, price)
        else:
            order = self.order_factory.market(INSTRUMENT_ID, side, self.qty)
        self.submit_order(order)
        self.orders += 1
        self.prev = order

    def on_order_filled(self, event: Any) -> None:
        self.fills += 1


def run(workload: str, ticks: int, cache: Path) -> dict[str, Any]:
    started = time.perf_counter()
    data = quote_ticks(common.arrow_path(cache, ticks))
    engine = BacktestEngine(
        BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True), run_analysis=False)
    )
    engine.add_venue(
        VENUE,
        OmsType.NETTING,
        AccountType.CASH,
        [Money(10_000_000, USD), Money(1_000, BTC)],
        book_type=BookType.L1_MBP,
        latency_model=LatencyModel(base_latency_nanos=common.LATENCY_NS),
    )
    engine.add_instrument(instrument())
    engine.add_data(data, sort=False)  # already in time order
    del data
    strategy = None
    if workload != "W0":
        strategy = BenchStrategy(BenchConfig(workload=workload))
        engine.add_strategy(strategy)
    setup_s = time.perf_counter() - started
    t0, c0 = time.perf_counter(), time.process_time()
    engine.run()
    wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    if strategy is not None and strategy.row != ticks:
        raise SystemExit(f"nautilus {workload}: the strategy saw {strategy.row} ticks, not {ticks}")
    out = {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "setup_s": setup_s,
        "orders": strategy.orders if strategy else 0,
        "fills": strategy.fills if strategy else 0,
        "cancels": strategy.cancels if strategy else 0,
    }
    engine.dispose()
    return out


if __name__ == "__main__":
    common.child_main("nautilus", run)
