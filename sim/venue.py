"""A simulated venue that matches our orders against L1 market data.

Invariants:
- The venue is deterministic: its only inputs are commands and market data with their
  timestamps.
- It speaks the engine's messages: commands in (`SubmitOrder`, `CancelOrder`,
  `ReplaceOrder`), venue events out, each stamped with the time the engine receives it
  (`ts_recv` = venue time + latency) and the venue's own `ts_event`.
- Matching (L1 with synthetic depth): a marketable order takes the displayed size at
  the touch, then each further level one tick worse with the same displayed size, up to
  `depth_levels` levels; a resting limit order fills (as maker, at its own price) when the
  opposite touch reaches it. Fees are `notional x bps / 10_000`, rounded half away from
  zero, in notional units (a negative maker fee is a rebate).
- Every fill has a venue-unique trade id; quantities never overfill.
"""

from __future__ import annotations

import msgspec

from engine.messages import (
    CancelOrder,
    CancelRejected,
    Instrument,
    Liquidity,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    QuoteTick,
    ReplaceOrder,
    ReplaceRejected,
    Side,
    SubmitOrder,
    TimeInForce,
)


class VenueConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one simulated venue behaves."""

    name: str
    maker_fee_bps: int = 0  # may be negative: a rebate
    taker_fee_bps: int = 5
    latency_ns: int = 1_000_000  # one way, order entry and acknowledgement alike
    depth_levels: int = 5


class _Resting:
    __slots__ = ("cmd", "filled", "price", "qty", "venue_order_id")

    def __init__(self, cmd: SubmitOrder, venue_order_id: str) -> None:
        self.cmd = cmd
        self.venue_order_id = venue_order_id
        self.qty = cmd.qty
        self.price = cmd.price
        self.filled = 0


def _fee(price: int, qty: int, multiplier: int, bps: int) -> int:
    num = price * qty * multiplier * bps
    q, r = divmod(abs(num), 10_000)
    if 2 * r >= 10_000:
        q += 1
    return q if num >= 0 else -q


class SimVenue:
    """Match commands against the last quote of each instrument; emit venue events."""

    def __init__(self, config: VenueConfig, instruments: tuple[Instrument, ...]) -> None:
        self.config = config
        self.name = config.name
        self._instruments = {i.instrument: i for i in instruments if config.name in i.venue_symbols}
        self._quotes: dict[str, QuoteTick] = {}
        self._resting: dict[str, _Resting] = {}  # insertion order = time priority
        self._next_order = 0
        self._next_trade = 0

    # --- market data -------------------------------------------------------------------

    def on_quote(self, quote: QuoteTick) -> list[Message]:
        """Take a quote of this venue; return fills of resting orders it crosses."""
        self._quotes[quote.instrument] = quote
        if not self._resting:
            return []
        out: list[Message] = []
        now = quote.ts_recv
        for oid in list(self._resting):
            rest = self._resting[oid]
            if rest.cmd.instrument != quote.instrument or rest.price is None:
                continue
            if rest.cmd.side is Side.BUY:
                touch, size = quote.ask_price, quote.ask_size
                crossed = touch is not None and touch <= rest.price
            else:
                touch, size = quote.bid_price, quote.bid_size
                crossed = touch is not None and touch >= rest.price
            if not crossed or size <= 0:
                continue
            qty = min(size, rest.qty - rest.filled)
            out.append(self._fill(rest, rest.price, qty, Liquidity.MAKER, now))
            if rest.filled >= rest.qty:
                del self._resting[oid]
        return out

    # --- commands ------------------------------------------------------------------------

    def on_command(self, cmd: Message, now: int) -> list[Message]:
        """Take a command sent at `now`; return the venue's responses."""
        arrive = now + self.config.latency_ns
        if isinstance(cmd, SubmitOrder):
            return self._submit(cmd, arrive)
        if isinstance(cmd, CancelOrder):
            return self._cancel(cmd, arrive)
        if isinstance(cmd, ReplaceOrder):
            return self._replace(cmd, arrive)
        raise TypeError(f"venue {self.name}: not a venue command: {type(cmd).__name__}")

    def _stamp(self, t: int) -> int:
        return t + self.config.latency_ns

    def _reject(self, cmd: SubmitOrder, t: int, reason: str) -> list[Message]:
        return [
            OrderRejected(
                ts_recv=self._stamp(t),
                ts_event=t,
                order_id=cmd.order_id,
                venue=self.name,
                reason=reason,
            )
        ]

    def _submit(self, cmd: SubmitOrder, t: int) -> list[Message]:
        inst = self._instruments.get(cmd.instrument)
        if inst is None:
            return self._reject(cmd, t, f"unknown symbol {cmd.instrument}")
        if cmd.qty <= 0 or cmd.qty % inst.lot_size:
            return self._reject(cmd, t, f"invalid quantity {cmd.qty} (lot {inst.lot_size})")
        if cmd.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and (
            cmd.price is None or cmd.price <= 0 or cmd.price % inst.tick_size
        ):
            return self._reject(cmd, t, f"invalid price {cmd.price} (tick {inst.tick_size})")
        if cmd.order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            return self._reject(cmd, t, "stop orders not supported by this venue")
        self._next_order += 1
        rest = _Resting(cmd, f"{self.name}-{self._next_order}")
        out: list[Message] = [
            OrderAccepted(
                ts_recv=self._stamp(t),
                ts_event=t,
                order_id=cmd.order_id,
                venue=self.name,
                venue_order_id=rest.venue_order_id,
            )
        ]
        limit = cmd.price if cmd.order_type is OrderType.LIMIT else None
        levels = self._available(cmd.instrument, cmd.side, limit, inst.tick_size)
        if cmd.tif is TimeInForce.FOK and sum(q for _, q in levels) < cmd.qty:
            out.append(self._canceled(rest, t, "FOK: not enough liquidity"))
            return out
        for price, avail in levels:
            qty = min(avail, rest.qty - rest.filled)
            if qty <= 0:
                break
            out.append(self._fill(rest, price, qty, Liquidity.TAKER, t))
        if rest.filled < rest.qty:
            if cmd.order_type is OrderType.MARKET or cmd.tif in (TimeInForce.IOC, TimeInForce.FOK):
                out.append(self._canceled(rest, t, "unfilled remainder canceled"))
            else:
                self._resting[cmd.order_id] = rest
        return out

    def _available(
        self, instrument: str, side: Side, limit: int | None, tick: int
    ) -> list[tuple[int, int]]:
        quote = self._quotes.get(instrument)
        if quote is None:
            return []
        if side is Side.BUY:
            touch, size, step = quote.ask_price, quote.ask_size, tick
        else:
            touch, size, step = quote.bid_price, quote.bid_size, -tick
        if touch is None or size <= 0:
            return []
        levels = []
        for k in range(self.config.depth_levels):
            price = touch + k * step
            if limit is not None and (price > limit if side is Side.BUY else price < limit):
                break
            levels.append((price, size))
        return levels

    def _cancel(self, cmd: CancelOrder, t: int) -> list[Message]:
        rest = self._resting.pop(cmd.order_id, None)
        if rest is None:
            return [
                CancelRejected(
                    ts_recv=self._stamp(t),
                    ts_event=t,
                    order_id=cmd.order_id,
                    venue=self.name,
                    reason="order not open",
                )
            ]
        return [self._canceled(rest, t, "canceled by request")]

    def _replace(self, cmd: ReplaceOrder, t: int) -> list[Message]:
        rest = self._resting.get(cmd.order_id)
        if rest is None or cmd.qty <= rest.filled:
            reason = "order not open" if rest is None else f"qty {cmd.qty} <= filled {rest.filled}"
            return [
                ReplaceRejected(
                    ts_recv=self._stamp(t),
                    ts_event=t,
                    order_id=cmd.order_id,
                    venue=self.name,
                    reason=reason,
                )
            ]
        rest.qty = cmd.qty
        rest.price = cmd.price
        return [
            OrderReplaced(
                ts_recv=self._stamp(t),
                ts_event=t,
                order_id=cmd.order_id,
                venue=self.name,
                qty=cmd.qty,
                price=cmd.price,
                venue_order_id=rest.venue_order_id,
            )
        ]

    def _canceled(self, rest: _Resting, t: int, reason: str) -> OrderCanceled:
        return OrderCanceled(
            ts_recv=self._stamp(t),
            ts_event=t,
            order_id=rest.cmd.order_id,
            venue=self.name,
            reason=reason,
        )

    def _fill(self, rest: _Resting, price: int, qty: int, liq: Liquidity, t: int) -> OrderFilled:
        rest.filled += qty
        self._next_trade += 1
        inst = self._instruments[rest.cmd.instrument]
        bps = self.config.maker_fee_bps if liq is Liquidity.MAKER else self.config.taker_fee_bps
        return OrderFilled(
            ts_recv=self._stamp(t),
            ts_event=t,
            order_id=rest.cmd.order_id,
            venue=self.name,
            trade_id=f"{self.name}-T{self._next_trade}",
            price=price,
            qty=qty,
            fee=_fee(price, qty, inst.multiplier, bps),
            liquidity=liq,
        )
