"""Positions per (account, strategy, instrument) and net per (account, instrument).

Invariants:
- Everything is an int: `qty` in size units (signed: long > 0, short < 0); `cost`,
  `realised` and `fees` in notional units. No floats.
- `cost` is the signed sum of price x qty of the open position, without the multiplier.
  Reducing removes cost in proportion to the quantity closed (`cost * closed // |qty|`);
  closing the whole position removes all of it, so a flat position has cost exactly 0.
- A fill that crosses zero (long 5, sell 8) closes the position, then opens the rest
  (short 3) at the fill price.
- The multiplier applies to P&L: realised and unrealised are (price x qty - cost) x
  multiplier. A position's multiplier is fixed by the fill that creates it.
- realised + unrealised(mark) equals the cash-flow P&L (mark x qty - sum of signed
  price x qty) x multiplier exactly; fees are kept apart, in `fees`.
- Every fill updates the strategy position and the net position of its account.
"""

from __future__ import annotations

from collections.abc import Iterator

from engine.messages import Side

StrategyKey = tuple[str, str, str]  # (account, strategy, instrument)
NetKey = tuple[str, str]  # (account, instrument)


class Position:
    """A signed position in one instrument with its cost, realised P&L and fees."""

    __slots__ = (
        "account",
        "cost",
        "fees",
        "instrument",
        "multiplier",
        "qty",
        "realised",
        "strategy",
    )

    def __init__(
        self, account: str, strategy: str | None, instrument: str, multiplier: int = 1
    ) -> None:
        self.account = account
        self.strategy = strategy  # None for the account's net position
        self.instrument = instrument
        self.multiplier = multiplier
        self.qty = 0
        self.cost = 0
        self.realised = 0
        self.fees = 0

    def apply(self, side: Side, qty: int, price: int, fee: int) -> None:
        """Book one fill: open, add, reduce, close or cross through zero."""
        signed = qty if side is Side.BUY else -qty
        self.fees += fee
        held = self.qty
        if held == 0 or (held > 0) == (signed > 0):
            self.qty = held + signed
            self.cost += price * signed
            return
        closed = min(qty, abs(held))
        removed = self.cost if closed == abs(held) else self.cost * closed // abs(held)
        closed_signed = closed if held > 0 else -closed
        self.realised += (price * closed_signed - removed) * self.multiplier
        self.cost -= removed
        self.qty = held - closed_signed
        opened = signed + closed_signed  # what is left of the fill after closing
        if opened:
            self.qty += opened
            self.cost += price * opened

    @property
    def avg_price(self) -> int | None:
        """Return the average entry price rounded half away from zero, None when flat."""
        if self.qty == 0:
            return None
        quotient = (2 * abs(self.cost) + abs(self.qty)) // (2 * abs(self.qty))
        return quotient if (self.cost >= 0) == (self.qty > 0) else -quotient

    def unrealised(self, mark_price: int) -> int:
        """Return the open position's P&L at `mark_price`, in notional units."""
        return (mark_price * self.qty - self.cost) * self.multiplier


class PositionBook:
    """Every strategy position and every net position, in the order they first traded."""

    __slots__ = ("_net", "_strategy")

    def __init__(self) -> None:
        self._strategy: dict[StrategyKey, Position] = {}
        self._net: dict[NetKey, Position] = {}

    def apply_fill(
        self,
        account: str,
        strategy: str,
        instrument: str,
        *,
        side: Side,
        qty: int,
        price: int,
        fee: int,
        multiplier: int,
    ) -> None:
        """Book a fill to the strategy position and to the account's net position."""
        key = (account, strategy, instrument)
        position = self._strategy.get(key)
        if position is None:
            position = self._strategy[key] = Position(account, strategy, instrument, multiplier)
        position.apply(side, qty, price, fee)
        net_key = (account, instrument)
        net = self._net.get(net_key)
        if net is None:
            net = self._net[net_key] = Position(account, None, instrument, multiplier)
        net.apply(side, qty, price, fee)

    def strategy_position(self, account: str, strategy: str, instrument: str) -> Position | None:
        """Return a strategy's position in an instrument, None if it never traded it."""
        return self._strategy.get((account, strategy, instrument))

    def net_position(self, account: str, instrument: str) -> Position | None:
        """Return an account's net position in an instrument, None if it never traded it."""
        return self._net.get((account, instrument))

    def strategy_qty(self, account: str, strategy: str, instrument: str) -> int:
        """Return a strategy's signed quantity in an instrument (0 if it never traded it)."""
        position = self._strategy.get((account, strategy, instrument))
        return 0 if position is None else position.qty

    def strategy_positions(self) -> Iterator[tuple[StrategyKey, Position]]:
        """Yield every strategy position with its key, in the order they first traded."""
        yield from self._strategy.items()

    def net_positions(self) -> Iterator[tuple[NetKey, Position]]:
        """Yield every net position with its key, in the order they first traded."""
        yield from self._net.items()
