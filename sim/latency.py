"""Latency models of a simulated venue: how long an order takes to reach the matching
engine, how long a cancel or replace takes, and how long a response takes to come back.

Invariants:
- A model is a tiny interface (`LatencyModel`): `entry_ns(rng)`, `cancel_ns(rng)`,
  `response_ns(rng)`, each returning a non-negative integer of nanoseconds.
- Every draw comes from the `random.Random` handed in (the venue's own, seeded from its
  config); a model holds no generator and no state, so the same generator state gives
  the same draws. Never the global `random`.
- Models are frozen msgspec Structs tagged by class name, so a venue config that holds
  one round-trips through the run manifest.
- A spike adds `spike_ns` to a draw with probability `spike_prob`; with `spike_prob` 0
  no extra draw is made (the generator advances once per latency, not twice).
"""

from __future__ import annotations

import math
import random
from typing import Protocol

import msgspec


class LatencyModel(Protocol):
    """Draw the three latencies of a venue from a seeded generator."""

    def entry_ns(self, rng: random.Random) -> int:
        """Draw the time a new order takes to reach the matching engine."""
        ...

    def cancel_ns(self, rng: random.Random) -> int:
        """Draw the time a cancel or replace takes to reach the matching engine."""
        ...

    def response_ns(self, rng: random.Random) -> int:
        """Draw the time a venue response takes to reach us."""
        ...


def _spike(rng: random.Random, prob: float, size: int) -> int:
    if prob > 0.0 and rng.random() < prob:
        return size
    return 0


def _check(name: str, prob: float, spike_ns: int) -> None:
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"{name}.spike_prob must be in [0, 1], got {prob}")
    if spike_ns < 0:
        raise ValueError(f"{name}.spike_ns must be >= 0, got {spike_ns}")


class ConstantLatency(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Fixed latencies (nanoseconds), plus optional random spikes.

    `cancel_ns` and `response_ns` default to `entry_ns` when left None.
    """

    entry: int = 1_000_000
    cancel: int | None = None
    response: int | None = None
    spike_prob: float = 0.0
    spike_ns: int = 0

    def __post_init__(self) -> None:
        for field, value in (
            ("entry", self.entry),
            ("cancel", self.cancel),
            ("response", self.response),
        ):
            if value is not None and value < 0:
                raise ValueError(f"ConstantLatency.{field} must be >= 0 ns, got {value}")
        _check("ConstantLatency", self.spike_prob, self.spike_ns)

    def entry_ns(self, rng: random.Random) -> int:
        """Return the entry latency (plus a spike, if one is drawn)."""
        return self.entry + _spike(rng, self.spike_prob, self.spike_ns)

    def cancel_ns(self, rng: random.Random) -> int:
        """Return the cancel latency (plus a spike, if one is drawn)."""
        base = self.entry if self.cancel is None else self.cancel
        return base + _spike(rng, self.spike_prob, self.spike_ns)

    def response_ns(self, rng: random.Random) -> int:
        """Return the response latency (plus a spike, if one is drawn)."""
        base = self.entry if self.response is None else self.response
        return base + _spike(rng, self.spike_prob, self.spike_ns)


class LognormalLatency(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Lognormal latencies: `median_ns x exp(sigma x N(0, 1))`, rounded to the ns.

    `cancel_median_ns` and `response_median_ns` default to `median_ns`; `sigma` is
    shared. A spike adds `spike_ns` with probability `spike_prob` to each draw.
    """

    median_ns: int = 1_000_000
    sigma: float = 0.25
    cancel_median_ns: int | None = None
    response_median_ns: int | None = None
    spike_prob: float = 0.0
    spike_ns: int = 0

    def __post_init__(self) -> None:
        for field, value in (
            ("median_ns", self.median_ns),
            ("cancel_median_ns", self.cancel_median_ns),
            ("response_median_ns", self.response_median_ns),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"LognormalLatency.{field} must be > 0 ns, got {value}")
        if self.sigma < 0.0:
            raise ValueError(f"LognormalLatency.sigma must be >= 0, got {self.sigma}")
        _check("LognormalLatency", self.spike_prob, self.spike_ns)

    def _draw(self, rng: random.Random, median: int) -> int:
        value = round(rng.lognormvariate(math.log(median), self.sigma))
        return value + _spike(rng, self.spike_prob, self.spike_ns)

    def entry_ns(self, rng: random.Random) -> int:
        """Draw an entry latency."""
        return self._draw(rng, self.median_ns)

    def cancel_ns(self, rng: random.Random) -> int:
        """Draw a cancel latency."""
        return self._draw(rng, self.cancel_median_ns or self.median_ns)

    def response_ns(self, rng: random.Random) -> int:
        """Draw a response latency."""
        return self._draw(rng, self.response_median_ns or self.median_ns)


Latency = ConstantLatency | LognormalLatency
