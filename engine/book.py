"""An L2 order book: aggregated size per price level on each side.

Invariants:
- Prices and sizes are ints in instrument units; a level with size 0 does not exist.
- Bids iterate best (highest) first, asks best (lowest) first: `SortedDict` keys, so the
  order never depends on insertion or hashing.
- A crossed or locked book is kept as given (feeds do publish them); `best_bid` and
  `best_ask` report what is there, they do not repair it.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from engine.messages import BookDelta, Side


class Book:
    """Aggregated L2 levels of one instrument on one venue."""

    __slots__ = ("_asks", "_bids")

    def __init__(self) -> None:
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()

    def apply(self, delta: BookDelta) -> None:
        """Apply one level update (a snapshot's first level clears the book first)."""
        if delta.clear:
            self.clear()
        self.set_level(delta.side, delta.price, delta.qty)

    def set_level(self, side: Side, price: int, qty: int) -> None:
        """Set the size at one price on one side; 0 removes the level."""
        levels = self._bids if side is Side.BUY else self._asks
        if qty > 0:
            levels[price] = qty
        else:
            levels.pop(price, None)

    def clear(self) -> None:
        """Remove every level on both sides."""
        self._bids.clear()
        self._asks.clear()

    def best_bid(self) -> tuple[int, int] | None:
        """Return (price, size) of the highest bid, None if there is none."""
        if not self._bids:
            return None
        price, size = self._bids.peekitem(-1)
        return int(price), int(size)

    def best_ask(self) -> tuple[int, int] | None:
        """Return (price, size) of the lowest ask, None if there is none."""
        if not self._asks:
            return None
        price, size = self._asks.peekitem(0)
        return int(price), int(size)

    def size_at(self, side: Side, price: int) -> int:
        """Return the displayed size at one price on one side (0 if no level)."""
        levels = self._bids if side is Side.BUY else self._asks
        return int(levels.get(price, 0))

    def levels(self, side: Side) -> Iterator[tuple[int, int]]:
        """Yield (price, size) from the best level outwards."""
        if side is Side.BUY:
            for price in reversed(self._bids):
                yield price, self._bids[price]
        else:
            for price in self._asks:
                yield price, self._asks[price]

    def depth(self, side: Side, levels: int) -> int:
        """Return the total size of the best `levels` levels of one side."""
        total = 0
        for n, (_, size) in enumerate(self.levels(side)):
            if n >= levels:
                break
            total += size
        return total

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)
