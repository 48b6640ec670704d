"""Deterministic ids for the orders and timers of one run.

Invariants:
- Order ids are `f"{run_id}-{n}"` and timer ids `f"{run_id}-t{n}"`, each n counting
  from 1 in the order the engine asks: the same inputs give the same ids, in a live run
  and in its replay.
- No randomness and no clock are involved; ids are never random UUIDs.
"""

from __future__ import annotations


class IdGenerator:
    """Number the orders and timers of one run."""

    __slots__ = ("_orders", "_run_id", "_timers")

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._orders = 0
        self._timers = 0

    def next_order_id(self) -> str:
        """Return the next order id, `{run_id}-{n}`."""
        self._orders += 1
        return f"{self._run_id}-{self._orders}"

    def next_timer_id(self) -> str:
        """Return the next timer id, `{run_id}-t{n}`."""
        self._timers += 1
        return f"{self._run_id}-t{self._timers}"
