"""Queue-position models for our resting orders, in the manner of hftbacktest.

A resting order sits behind `ahead` units of displayed quantity at its price. The venue
sets `ahead` when the order starts resting (the displayed size at its price; 0 when the
price improves the touch; `UNKNOWN` when the price is behind an L1 touch, until the level
becomes visible) and tells the model about two things only:
- `on_trade(pos, qty)`: a trade of `qty` printed at our price on our side; `ahead` goes
  down by `qty`. When it goes below 0, the venue fills the excess (up to the leaves)
  and sets `ahead` back to 0.
- `on_level(pos, new, rng)`: the displayed size at our price is now `new`.

Invariants:
- Quantities are ints in instrument units; probabilities are floats, used only to
  split an integer size change, never stored in a quantity.
- `RiskAverseQueueModel` (the default) assumes every cancel came from behind us, except
  what the level can no longer hold: `ahead = min(ahead, new)`. It is the closed form the
  venue's vectorised fast path reproduces (`closed_form` True).
- `ProbQueueModel` splits each size decrease between the front and the back of the
  queue with hftbacktest's power function (the probability that a cancel came from
  behind is `f(back) / (f(back) + f(front))`, `f(x) = x ** power`), after taking off the
  trades already counted; the fractional part of the front's share is rounded with one
  draw from the venue's seeded generator (unbiased stochastic rounding).
- Models hold no state and no generator: the per-order state is the `QueuePos`.
"""

from __future__ import annotations

import math
import random
from typing import ClassVar, Protocol

import msgspec

UNKNOWN = 1 << 62  # queue ahead of an order behind an L1 touch, before its level is seen


class QueuePos:
    """Queue state of one resting order."""

    __slots__ = ("ahead", "level", "traded")

    def __init__(self, ahead: int, level: int | None) -> None:
        self.ahead = ahead  # displayed quantity ahead of us (UNKNOWN: not seen yet)
        self.level = level  # last displayed size at our price, None while not visible
        self.traded = 0  # traded at our price since the last level update

    def __repr__(self) -> str:
        return f"QueuePos(ahead={self.ahead}, level={self.level}, traded={self.traded})"


class QueueModel(Protocol):
    """Advance a resting order's queue position on trades and level changes."""

    closed_form: ClassVar[bool]

    def on_trade(self, pos: QueuePos, qty: int) -> None:
        """Take a trade of `qty` at our price (ahead may go below 0: the excess fills)."""
        ...

    def on_level(self, pos: QueuePos, new: int, rng: random.Random) -> None:
        """Take the new displayed size at our price."""
        ...


class RiskAverseQueueModel(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Advance only on trades; a shrinking level caps the queue ahead (hftbacktest's
    RiskAdverseQueueModel)."""

    closed_form: ClassVar[bool] = True

    def on_trade(self, pos: QueuePos, qty: int) -> None:
        """Move up by the traded quantity."""
        pos.ahead -= qty

    def on_level(self, pos: QueuePos, new: int, rng: random.Random) -> None:
        """Cap the queue ahead at the level's size."""
        pos.ahead = min(pos.ahead, new)
        pos.level = new


class ProbQueueModel(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Attribute size decreases to the front of the queue with a power-function
    probability (hftbacktest's ProbQueueModel with PowerProbQueueFunc)."""

    closed_form: ClassVar[bool] = False
    power: float = 2.0

    def __post_init__(self) -> None:
        if not self.power > 0.0:
            raise ValueError(f"ProbQueueModel.power must be > 0, got {self.power}")

    def on_trade(self, pos: QueuePos, qty: int) -> None:
        """Move up by the traded quantity; remember it so the level change does not
        count it twice."""
        pos.ahead -= qty
        pos.traded += qty

    def on_level(self, pos: QueuePos, new: int, rng: random.Random) -> None:
        """Split the level's decrease (net of trades) between front and back."""
        prev = pos.level
        traded = pos.traded
        pos.level = new
        pos.traded = 0
        if prev is None:  # the level just became visible
            pos.ahead = min(pos.ahead, new)
            return
        change = prev - new - traded
        if change <= 0:  # the level grew (or only trades took from it): joiners go behind
            pos.ahead = min(pos.ahead, new)
            return
        front = max(pos.ahead, 0)
        back = max(prev - front, 0)
        fb, ff = back**self.power, front**self.power
        p_back = fb / (fb + ff) if fb + ff > 0 else 1.0
        share = (1.0 - p_back) * change + max(p_back * change - back, 0.0)
        whole = math.floor(share)
        if share > whole and rng.random() < share - whole:
            whole += 1
        pos.ahead = max(0, min(front - whole, new))


QueueModelConfig = RiskAverseQueueModel | ProbQueueModel
