"""Seeded fault plans of a simulated venue: what goes wrong, how often, and when.

Invariants:
- A `FaultPlan` is data (a frozen msgspec Struct in the venue config, hence in the run
  manifest). The venue draws every random fault from its own seeded generator, and
  only when the fault's rate is above 0, so a plan with every rate at 0 draws nothing
  and changes nothing.
- Time windows are half-open `[start_ns, end_ns)`, sorted and non-overlapping.
- Faults and what they do at the venue:
  - `reject_rate`: a valid order is rejected anyway, with a reason drawn from
    `reject_reasons` (by weight); each reason says whether a retry may succeed.
  - `drop_ack_rate`: the `OrderAccepted` never arrives (fills still do).
  - `delay_ack_rate`, `delay_ack_ns`: the `OrderAccepted` arrives `delay_ack_ns` late
    (possibly after the order's first fill).
  - `duplicate_fill_rate`: an `OrderFilled` is delivered twice, identical (same
    `trade_id`).
  - `cancel_race_rate`: a cancel that reaches a resting order finds it filled first:
    the leaves fill at the order's price (maker) and the cancel is rejected with
    "order already filled". (A cancel that arrives after a real fill is rejected the
    same way with no fault at all.)
  - `disconnects`: `VenueDisconnected` at each start, `VenueConnected` at each end;
    commands arriving inside a window are lost silently (the engine's ack timeout must
    notice); resting orders keep working, and what the venue sends during the window
    is delivered after `VenueConnected`.
  - `lose_held`: what the venue sends inside a disconnect window is lost instead of
    delivered after `VenueConnected`; the venue's books (sim/ledger.py) still have it, so
    its reports after the reconnect (`RequestReports`) are the only way to recover it.
  - `stale_quotes`: windows in which the runner withholds the venue's market data from
    the engine, so from the journal too (`stale`, `stale_mask`; see sim/run.py): the
    engine keeps the last quote from before the window. The venue itself keeps seeing
    the market and matching against it.
"""

from __future__ import annotations

import bisect

import msgspec
import numpy as np

Window = tuple[int, int]


class RejectReason(msgspec.Struct, frozen=True, kw_only=True):
    """A reason a venue may reject a valid order, and whether retrying may succeed."""

    reason: str
    retryable: bool = False
    weight: int = 1


DEFAULT_REJECT_REASONS: tuple[RejectReason, ...] = (
    RejectReason(reason="rate limit exceeded", retryable=True),
    RejectReason(reason="insufficient margin", retryable=False),
)


def _check_windows(field: str, windows: tuple[Window, ...]) -> None:
    previous_end: int | None = None
    for n, (start, end) in enumerate(windows):
        if start >= end:
            raise ValueError(f"FaultPlan.{field}[{n}] ({start}, {end}): start must be < end")
        if previous_end is not None and start < previous_end:
            raise ValueError(
                f"FaultPlan.{field}[{n}] ({start}, {end}): windows must be sorted and must "
                f"not overlap (the previous one ends at {previous_end})"
            )
        previous_end = end


def _start(window: Window) -> int:
    return window[0]


def in_windows(windows: tuple[Window, ...], ts: int) -> bool:
    """Return True if `ts` falls in one of the sorted half-open windows."""
    n = bisect.bisect_right(windows, ts, key=_start) - 1
    return n >= 0 and ts < windows[n][1]


def windows_mask(windows: tuple[Window, ...], ts: np.ndarray) -> np.ndarray:
    """Return, for each timestamp, whether it falls in one of the windows (vectorised)."""
    if not windows:
        return np.zeros(len(ts), dtype=bool)
    edges = np.array(windows, dtype=np.int64).ravel()  # start0, end0, start1, end1, ...
    mask: np.ndarray = np.searchsorted(edges, ts, side="right") % 2 == 1
    return mask


class FaultPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What goes wrong at one simulated venue (see the module docstring)."""

    reject_rate: float = 0.0
    reject_reasons: tuple[RejectReason, ...] = DEFAULT_REJECT_REASONS
    drop_ack_rate: float = 0.0
    delay_ack_rate: float = 0.0
    delay_ack_ns: int = 0
    duplicate_fill_rate: float = 0.0
    cancel_race_rate: float = 0.0
    disconnects: tuple[Window, ...] = ()
    lose_held: bool = False  # what the venue sends while disconnected is lost, not delayed
    stale_quotes: tuple[Window, ...] = ()

    def __post_init__(self) -> None:
        for field, rate in (
            ("reject_rate", self.reject_rate),
            ("drop_ack_rate", self.drop_ack_rate),
            ("delay_ack_rate", self.delay_ack_rate),
            ("duplicate_fill_rate", self.duplicate_fill_rate),
            ("cancel_race_rate", self.cancel_race_rate),
        ):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"FaultPlan.{field} must be in [0, 1], got {rate}")
        if self.delay_ack_ns < 0:
            raise ValueError(f"FaultPlan.delay_ack_ns must be >= 0, got {self.delay_ack_ns}")
        if self.reject_rate > 0.0 and not self.reject_reasons:
            raise ValueError("FaultPlan.reject_reasons must not be empty when reject_rate > 0")
        for n, reason in enumerate(self.reject_reasons):
            if reason.weight <= 0:
                raise ValueError(
                    f"FaultPlan.reject_reasons[{n}].weight must be > 0, got {reason.weight}"
                )
        _check_windows("disconnects", self.disconnects)
        _check_windows("stale_quotes", self.stale_quotes)

    def disconnected(self, ts: int) -> bool:
        """Return True if the venue is disconnected at `ts`."""
        return bool(self.disconnects) and in_windows(self.disconnects, ts)

    def stale(self, ts: int) -> bool:
        """Return True if market data at `ts` is stale (the runner withholds it)."""
        return bool(self.stale_quotes) and in_windows(self.stale_quotes, ts)

    def stale_mask(self, ts: np.ndarray) -> np.ndarray:
        """Return `stale` of each timestamp of an int64 array, vectorised."""
        return windows_mask(self.stale_quotes, ts)
