"""What a sim run is given (`VenueConfig`, one per simulated venue) and what it reports
(`SimResult`).

These msgspec Structs are kept apart from the code that uses them (`sim.venue`,
`sim.run`): that code may be compiled (see `engine.native`), and a compiled module drops
the keywords of a class statement (`frozen=True`, `kw_only=True`), which these need
(mypy issue 21938).
"""

from __future__ import annotations

import msgspec

from engine.messages import OrderType, TimeInForce
from sim.faults import FaultPlan
from sim.latency import ConstantLatency, Latency, LatencyModel
from sim.queue import QueueModelConfig, RiskAverseQueueModel

DAY_NS = 86_400_000_000_000


class VenueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one simulated venue behaves.

    - `name`: the venue's name (commands and market rows carry it).
    - `maker_fee_bps`, `taker_fee_bps`: fees in basis points of notional; a negative
      maker fee is a rebate.
    - `latency_ns`: shorthand for `ConstantLatency(entry=latency_ns)` (entry, cancel
      and response alike), used when `latency` is None.
    - `latency`: a latency model (`ConstantLatency`, `LognormalLatency`).
    - `depth_levels`: L1 only: how many synthetic levels a taker may walk (the touch,
      then one tick worse each time, each with the touch's size).
    - `order_types`, `time_in_force`: what the venue accepts; others are rejected.
    - `day_close_ns`: session close, nanoseconds after midnight UTC; DAY orders expire
      at the first close after acceptance.
    - `fade_ratio`: fraction of each displayed level a taking order can actually take
      (1.0: all of it; 0.5: the other half vanishes as we arrive).
    - `hidden_fill_rate_per_s`: arrival rate (Poisson, seeded) of hidden marketable flow.
      Each arrival is a buy or a sell (even odds) and fills, at their own price, each of
      our resting orders on the side it hits that is at or better than the touch, by
      `hidden_fill_fraction` of its leaves (rounded down to the lot, at least one lot).
    - `queue_model`: `RiskAverseQueueModel()` (default) or `ProbQueueModel(power=...)`.
    - `faults`: the seeded fault plan (`sim.faults.FaultPlan`).
    - `seed`: seeds every random draw of the venue.
    """

    name: str
    maker_fee_bps: int = 0
    taker_fee_bps: int = 5
    latency_ns: int = 1_000_000
    latency: Latency | None = None
    depth_levels: int = 5
    order_types: tuple[OrderType, ...] = tuple(OrderType)
    time_in_force: tuple[TimeInForce, ...] = tuple(TimeInForce)
    day_close_ns: int = 0
    fade_ratio: float = 1.0
    hidden_fill_rate_per_s: float = 0.0
    hidden_fill_fraction: float = 0.5
    queue_model: QueueModelConfig = RiskAverseQueueModel()
    faults: FaultPlan = FaultPlan()
    seed: int = 0

    def __post_init__(self) -> None:
        where = f"VenueConfig {self.name!r}"
        if self.latency_ns < 0:
            raise ValueError(f"{where}: latency_ns must be >= 0, got {self.latency_ns}")
        if self.depth_levels < 1:
            raise ValueError(f"{where}: depth_levels must be >= 1, got {self.depth_levels}")
        if not 0 <= self.day_close_ns < DAY_NS:
            raise ValueError(
                f"{where}: day_close_ns must be in [0, {DAY_NS}), got {self.day_close_ns}"
            )
        if not 0.0 <= self.fade_ratio <= 1.0:
            raise ValueError(f"{where}: fade_ratio must be in [0, 1], got {self.fade_ratio}")
        if self.hidden_fill_rate_per_s < 0.0:
            raise ValueError(
                f"{where}: hidden_fill_rate_per_s must be >= 0, got {self.hidden_fill_rate_per_s}"
            )
        if not 0.0 < self.hidden_fill_fraction <= 1.0:
            raise ValueError(
                f"{where}: hidden_fill_fraction must be in (0, 1], got {self.hidden_fill_fraction}"
            )

    def latency_model(self) -> LatencyModel:
        """Return the latency model: `latency`, else constant `latency_ns`."""
        if self.latency is not None:
            return self.latency
        return ConstantLatency(entry=self.latency_ns)


class SimResult(msgspec.Struct, kw_only=True):
    run_id: str
    run_dir: str
    market_rows: int
    inputs: int
    effects: int
    signals: int
    orders: int
    fills: int
    cancels: int
    alerts: int
    undone: int  # events after the drain horizon, never processed
    withheld: int = 0  # market rows of stale-quote windows, kept from the engine
    wall_s: float
