"""A simulated venue's books of record: every order it received and every position it holds.

Invariants:
- The ledger records what the venue *says* (its outgoing messages), at the moment it says
  it, whether or not the message reaches the engine: a fill lost in a disconnect is in
  the ledger, which is what lets reconciliation recover it.
- A trade id is counted once (a duplicated fill report does not double the position).
- Reports come out in a fixed order: orders in the order the venue received them, then
  positions by (account, instrument) in the order they first traded, then `ReportsDone`.
"""

from __future__ import annotations

from engine.messages import (
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderStatus,
    OrderStatusReport,
    PositionReport,
    ReportsDone,
    Side,
    SubmitOrder,
)


class _Record:
    __slots__ = ("cmd", "filled", "qty", "status", "trades", "value", "venue_order_id")

    def __init__(self, cmd: SubmitOrder) -> None:
        self.cmd = cmd
        self.status = OrderStatus.PENDING_NEW
        self.qty = cmd.qty
        self.filled = 0
        self.value = 0
        self.trades: set[str] = set()
        self.venue_order_id: str | None = None


class VenueLedger:
    """What one simulated venue knows of our orders and positions."""

    __slots__ = ("_orders", "_positions", "venue")

    def __init__(self, venue: str) -> None:
        self.venue = venue
        self._orders: dict[str, _Record] = {}
        self._positions: dict[tuple[str, str], int] = {}

    def received(self, cmd: SubmitOrder) -> None:
        """Record an order that reached the venue (valid or not)."""
        if cmd.order_id not in self._orders:
            self._orders[cmd.order_id] = _Record(cmd)

    def record(self, msg: Message) -> None:
        """Update the books from one message the venue sends."""
        rec = self._orders.get(getattr(msg, "order_id", ""))
        if rec is None:
            return
        if isinstance(msg, OrderFilled):
            if msg.trade_id in rec.trades:
                return
            rec.trades.add(msg.trade_id)
            rec.filled += msg.qty
            rec.value += msg.price * msg.qty
            rec.status = (
                OrderStatus.FILLED if rec.filled >= rec.qty else OrderStatus.PARTIALLY_FILLED
            )
            key = (rec.cmd.account, rec.cmd.instrument)
            signed = msg.qty if rec.cmd.side is Side.BUY else -msg.qty
            self._positions[key] = self._positions.get(key, 0) + signed
        elif isinstance(msg, OrderAccepted):
            rec.venue_order_id = msg.venue_order_id
            if rec.status is OrderStatus.PENDING_NEW:
                rec.status = OrderStatus.ACCEPTED
        elif isinstance(msg, OrderReplaced):
            rec.qty = msg.qty
        elif isinstance(msg, OrderCanceled):
            rec.status = OrderStatus.CANCELED
        elif isinstance(msg, OrderExpired):
            rec.status = OrderStatus.EXPIRED
        elif isinstance(msg, OrderRejected):
            rec.status = OrderStatus.REJECTED

    def reports(self, now: int) -> list[Message]:
        """Return a status report per order, a position report per holding, then done."""
        out: list[Message] = []
        for oid, rec in self._orders.items():
            avg = None if rec.filled == 0 else (2 * rec.value + rec.filled) // (2 * rec.filled)
            out.append(
                OrderStatusReport(
                    ts_recv=now,
                    ts_event=now,
                    venue=self.venue,
                    order_id=oid,
                    venue_order_id=rec.venue_order_id,
                    instrument=rec.cmd.instrument,
                    status=rec.status,
                    side=rec.cmd.side,
                    qty=rec.qty,
                    filled_qty=rec.filled,
                    avg_price=avg,
                )
            )
        for (account, instrument), qty in self._positions.items():
            out.append(
                PositionReport(
                    ts_recv=now,
                    ts_event=now,
                    venue=self.venue,
                    account=account,
                    instrument=instrument,
                    qty=qty,
                )
            )
        out.append(ReportsDone(ts_recv=now, ts_event=now, venue=self.venue))
        return out

    def position(self, account: str, instrument: str) -> int:
        """Return the venue's signed position for an account in an instrument."""
        return self._positions.get((account, instrument), 0)
