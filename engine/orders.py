"""The order state machine, as data, and the order it drives.

Invariants:
- `TRANSITIONS` is the whole state machine. Everything that moves an order's status
  goes through `Order.apply`; a (status, event) pair missing from the table raises
  `InvalidTransition` and leaves the order unchanged.
- Orders start in PENDING_NEW when the engine sends `SubmitOrder`. The engine decides
  PARTIAL_FILL vs FULL_FILL from the filled quantity and drops duplicate fills (same
  trade id) before the table.
- The table holds the real-venue edges and nothing else: a fill before the ack, a fill
  after a cancel request, after a cancel or an expiry (a late report of a trade that
  happened first), a cancel or replace reject that raced the order's end, a late or
  duplicate ack (the ack and the outcome often travel on different channels, such as a
  REST response and a stream update), a duplicate final report, IOC/FOK orders canceled
  or expired straight from PENDING_NEW, a stop order rejected when it triggers.
- Requests (CANCEL_REQUESTED, REPLACE_REQUESTED) are ours: one replace at a time, only
  for an acknowledged order; a cancel may overtake a pending replace.
- `PREVIOUS` in the table means "the status before the pending request". The order keeps
  it in `previous`, and advances it with the acks and fills that arrive while the request
  is pending, so a rejected cancel after a partial fill lands in PARTIALLY_FILLED.
- A cancel that overtakes a pending replace leaves the replace pending (`replace_pending`):
  if the venue rejects the cancel, the order goes back to PENDING_REPLACE, not to the
  status before the replace, so the replace's answer still applies.
- `trade_ids` is a set used for membership only, never iterated.
"""

from __future__ import annotations

import enum

from engine.messages import OrderStatus, OrderType, Side, SubmitOrder, TimeInForce


class OrderEvent(enum.StrEnum):
    """What happens to an order: our requests and the venue's reports."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    PARTIAL_FILL = "PARTIAL_FILL"
    FULL_FILL = "FULL_FILL"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    CANCELED = "CANCELED"
    CANCEL_REJECTED = "CANCEL_REJECTED"
    REPLACE_REQUESTED = "REPLACE_REQUESTED"
    REPLACED = "REPLACED"
    REPLACE_REJECTED = "REPLACE_REJECTED"
    EXPIRED = "EXPIRED"


class Previous(enum.Enum):
    """Table target meaning "the status before the pending request"."""

    PREVIOUS = "PREVIOUS"


PREVIOUS = Previous.PREVIOUS

_S = OrderStatus
_E = OrderEvent

TRANSITIONS: dict[tuple[OrderStatus, OrderEvent], OrderStatus | Previous] = {
    # Sent, not yet acknowledged.
    (_S.PENDING_NEW, _E.ACCEPTED): _S.ACCEPTED,
    (_S.PENDING_NEW, _E.REJECTED): _S.REJECTED,
    (_S.PENDING_NEW, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,  # fill before ack
    (_S.PENDING_NEW, _E.FULL_FILL): _S.FILLED,  # fill before ack
    (_S.PENDING_NEW, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,  # cancel before ack
    (_S.PENDING_NEW, _E.CANCELED): _S.CANCELED,  # IOC/FOK with nothing to match
    (_S.PENDING_NEW, _E.EXPIRED): _S.EXPIRED,  # IOC/FOK reported as expired
    # Working, nothing filled.
    (_S.ACCEPTED, _E.ACCEPTED): _S.ACCEPTED,  # duplicate ack
    (_S.ACCEPTED, _E.REJECTED): _S.REJECTED,  # stop order rejected when it triggers
    (_S.ACCEPTED, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.ACCEPTED, _E.FULL_FILL): _S.FILLED,
    (_S.ACCEPTED, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.ACCEPTED, _E.CANCELED): _S.CANCELED,  # unsolicited: venue risk, self-trade, session
    (_S.ACCEPTED, _E.REPLACE_REQUESTED): _S.PENDING_REPLACE,
    (_S.ACCEPTED, _E.EXPIRED): _S.EXPIRED,
    # Working, partly filled.
    (_S.PARTIALLY_FILLED, _E.ACCEPTED): _S.PARTIALLY_FILLED,  # late ack after fill before ack
    (_S.PARTIALLY_FILLED, _E.PARTIAL_FILL): _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, _E.FULL_FILL): _S.FILLED,
    (_S.PARTIALLY_FILLED, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.PARTIALLY_FILLED, _E.CANCELED): _S.CANCELED,  # unsolicited, or an IOC's rest
    (_S.PARTIALLY_FILLED, _E.REPLACE_REQUESTED): _S.PENDING_REPLACE,
    (_S.PARTIALLY_FILLED, _E.EXPIRED): _S.EXPIRED,  # a DAY or IOC order's rest
    # Cancel requested: the order lives until the venue says otherwise.
    (_S.PENDING_CANCEL, _E.ACCEPTED): _S.PENDING_CANCEL,  # ack of an order canceled before ack
    (_S.PENDING_CANCEL, _E.REJECTED): _S.REJECTED,  # the order itself rejected
    (_S.PENDING_CANCEL, _E.PARTIAL_FILL): _S.PENDING_CANCEL,  # fill after cancel request
    (_S.PENDING_CANCEL, _E.FULL_FILL): _S.FILLED,
    (_S.PENDING_CANCEL, _E.CANCELED): _S.CANCELED,
    (_S.PENDING_CANCEL, _E.CANCEL_REJECTED): PREVIOUS,
    (_S.PENDING_CANCEL, _E.REPLACED): _S.PENDING_CANCEL,  # the replace the cancel overtook
    (_S.PENDING_CANCEL, _E.REPLACE_REJECTED): _S.PENDING_CANCEL,
    (_S.PENDING_CANCEL, _E.EXPIRED): _S.EXPIRED,
    # Replace requested: the order works on its old terms meanwhile.
    (_S.PENDING_REPLACE, _E.ACCEPTED): _S.PENDING_REPLACE,  # late or duplicate ack
    (_S.PENDING_REPLACE, _E.PARTIAL_FILL): _S.PENDING_REPLACE,
    (_S.PENDING_REPLACE, _E.FULL_FILL): _S.FILLED,
    (_S.PENDING_REPLACE, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.PENDING_REPLACE, _E.CANCELED): _S.CANCELED,  # unsolicited
    (_S.PENDING_REPLACE, _E.REPLACED): PREVIOUS,  # ACCEPTED or PARTIALLY_FILLED
    (_S.PENDING_REPLACE, _E.REPLACE_REJECTED): PREVIOUS,
    (_S.PENDING_REPLACE, _E.EXPIRED): _S.EXPIRED,
    # Final. Only late reports of what already happened, and rejects of requests that raced.
    (_S.FILLED, _E.ACCEPTED): _S.FILLED,  # late ack after fill before ack
    (_S.FILLED, _E.CANCEL_REJECTED): _S.FILLED,  # too late to cancel
    (_S.FILLED, _E.REPLACE_REJECTED): _S.FILLED,  # too late to replace
    (_S.CANCELED, _E.ACCEPTED): _S.CANCELED,  # late ack
    (_S.CANCELED, _E.PARTIAL_FILL): _S.CANCELED,  # fill after cancel
    (_S.CANCELED, _E.FULL_FILL): _S.FILLED,  # fill after cancel
    (_S.CANCELED, _E.CANCELED): _S.CANCELED,  # duplicate report
    (_S.CANCELED, _E.CANCEL_REJECTED): _S.CANCELED,  # raced an unsolicited cancel
    (_S.CANCELED, _E.REPLACE_REJECTED): _S.CANCELED,
    (_S.EXPIRED, _E.ACCEPTED): _S.EXPIRED,  # late ack
    (_S.EXPIRED, _E.PARTIAL_FILL): _S.EXPIRED,  # fill after expiry
    (_S.EXPIRED, _E.FULL_FILL): _S.FILLED,  # fill after expiry
    (_S.EXPIRED, _E.CANCEL_REJECTED): _S.EXPIRED,  # raced the expiry
    (_S.EXPIRED, _E.REPLACE_REJECTED): _S.EXPIRED,
    (_S.EXPIRED, _E.EXPIRED): _S.EXPIRED,  # duplicate report
    (_S.REJECTED, _E.REJECTED): _S.REJECTED,  # duplicate report
    (_S.REJECTED, _E.CANCEL_REJECTED): _S.REJECTED,  # cancel before ack, order rejected
}

TERMINAL: frozenset[OrderStatus] = frozenset({_S.FILLED, _S.CANCELED, _S.REJECTED, _S.EXPIRED})
PENDING_REQUEST: frozenset[OrderStatus] = frozenset({_S.PENDING_CANCEL, _S.PENDING_REPLACE})


class InvalidTransition(Exception):
    """An event the state machine does not allow in the order's status."""

    def __init__(self, order_id: str, status: OrderStatus, event: OrderEvent) -> None:
        super().__init__(f"order {order_id}: {event.value} is not allowed in {status.value}")
        self.order_id = order_id
        self.status = status
        self.event = event


class Order:
    """One order's terms and lifecycle; its status moves only through `apply`."""

    __slots__ = (
        "account",
        "fees",
        "fill_value",
        "filled_qty",
        "instrument",
        "order_id",
        "order_type",
        "previous",
        "price",
        "qty",
        "recovered_qty",
        "replace_pending",
        "side",
        "signal_id",
        "status",
        "stop_price",
        "strategy",
        "tif",
        "trade_ids",
        "ts_created",
        "ts_last",
        "venue",
        "venue_order_id",
    )

    def __init__(
        self,
        *,
        order_id: str,
        signal_id: str | None,
        strategy: str,
        account: str,
        instrument: str,
        venue: str,
        side: Side,
        qty: int,
        order_type: OrderType,
        price: int | None,
        stop_price: int | None,
        tif: TimeInForce,
        ts_created: int,
    ) -> None:
        self.order_id = order_id
        self.signal_id = signal_id
        self.strategy = strategy
        self.account = account
        self.instrument = instrument
        self.venue = venue
        self.side = side
        self.qty = qty
        self.order_type = order_type
        self.price = price
        self.stop_price = stop_price
        self.tif = tif
        self.status = OrderStatus.PENDING_NEW
        self.previous = OrderStatus.PENDING_NEW
        self.filled_qty = 0
        self.fill_value = 0  # sum of price x qty over fills: the average price's numerator
        self.fees = 0  # notional units
        self.venue_order_id: str | None = None
        self.trade_ids: set[str] = set()
        # Filled quantity booked from a venue's status report (fills lost in a disconnect)
        # whose own fill reports have not arrived: the engine absorbs them when they do.
        self.recovered_qty = 0
        self.replace_pending = False  # a replace overtaken by a cancel still awaits its answer
        self.ts_created = ts_created
        self.ts_last = ts_created

    @classmethod
    def from_submit(cls, cmd: SubmitOrder) -> Order:
        """Create the order a `SubmitOrder` command sends, in PENDING_NEW."""
        return cls(
            order_id=cmd.order_id,
            signal_id=cmd.signal_id,
            strategy=cmd.strategy,
            account=cmd.account,
            instrument=cmd.instrument,
            venue=cmd.venue,
            side=cmd.side,
            qty=cmd.qty,
            order_type=cmd.order_type,
            price=cmd.price,
            stop_price=cmd.stop_price,
            tif=cmd.tif,
            ts_created=cmd.ts_recv,
        )

    @property
    def leaves_qty(self) -> int:
        """Return the quantity still open at the venue (0 once done or overfilled)."""
        if self.status in TERMINAL:
            return 0
        return max(self.qty - self.filled_qty, 0)

    @property
    def is_open(self) -> bool:
        """Say whether the order can still trade."""
        return self.status not in TERMINAL

    def apply(self, event: OrderEvent, ts: int) -> OrderStatus:
        """Move the status through `TRANSITIONS`; raise `InvalidTransition` on a miss."""
        status = self.status
        target = TRANSITIONS.get((status, event))
        if target is None:
            raise InvalidTransition(self.order_id, status, event)
        if target is PREVIOUS:
            if event is OrderEvent.CANCEL_REJECTED and self.replace_pending:
                target = OrderStatus.PENDING_REPLACE
            else:
                target = self.previous
        elif status in PENDING_REQUEST:
            if target is status:
                # An ack or a fill during a pending request changes where a reject returns.
                self.previous = _advance(self.previous, event)
        elif target in PENDING_REQUEST:
            self.previous = status
        if status is OrderStatus.PENDING_REPLACE and target is OrderStatus.PENDING_CANCEL:
            self.replace_pending = True
        elif self.replace_pending and (
            event in (OrderEvent.REPLACED, OrderEvent.REPLACE_REJECTED) or target in TERMINAL
        ):
            self.replace_pending = False
        self.status = target
        self.ts_last = ts
        return target

    def record_fill(self, trade_id: str, price: int, qty: int, fee: int, ts: int) -> None:
        """Add one fill's quantity, value and fee to the order."""
        self.trade_ids.add(trade_id)
        self.filled_qty += qty
        self.fill_value += price * qty
        self.fees += fee
        self.ts_last = ts


def _advance(previous: OrderStatus, event: OrderEvent) -> OrderStatus:
    """Return where `previous` goes on `event`, or `previous` if the event does not move it."""
    target = TRANSITIONS.get((previous, event), previous)
    return previous if target is PREVIOUS else target


_STATUS_RANK = {status: i for i, status in enumerate(OrderStatus)}
_EVENT_RANK = {event: i for i, event in enumerate(OrderEvent)}


def _rank(target: OrderStatus | Previous) -> int:
    """Sort statuses in definition order, PREVIOUS last."""
    return len(_STATUS_RANK) if target is PREVIOUS else _STATUS_RANK[target]


def mermaid_diagram() -> str:
    """Return a Mermaid state diagram of `TRANSITIONS`, in a fixed order."""
    edges: dict[tuple[OrderStatus, OrderStatus | Previous], list[OrderEvent]] = {}
    for (status, event), target in TRANSITIONS.items():
        edges.setdefault((status, target), []).append(event)
    lines = [
        "stateDiagram-v2",
        '    state "previous status" as PREVIOUS',
        "    [*] --> PENDING_NEW : SubmitOrder",
    ]
    for status, target in sorted(edges, key=lambda edge: (_rank(edge[0]), _rank(edge[1]))):
        events = sorted(edges[status, target], key=_EVENT_RANK.__getitem__)
        label = ", ".join(event.value for event in events)
        lines.append(f"    {status.value} --> {target.value} : {label}")
    lines.extend(f"    {status.value} --> [*]" for status in OrderStatus if status in TERMINAL)
    return "\n".join(lines) + "\n"


def state_machine_doc() -> str:
    """Return docs/state-machine.md: the diagram and the table, generated from TRANSITIONS."""
    pairs = sorted(TRANSITIONS, key=lambda pair: (_rank(pair[0]), _EVENT_RANK[pair[1]]))
    rows = [
        f"| {status.value} | {event.value} | {TRANSITIONS[status, event].value} |"
        for status, event in pairs
    ]
    return "\n".join(
        [
            "# Order state machine",
            "",
            "<!-- Generated from engine.orders.TRANSITIONS; do not edit by hand. Regenerate with",
            "     .venv/bin/python -m engine.orders > docs/state-machine.md -->",
            "",
            "Orders start in PENDING_NEW when the engine sends `SubmitOrder`. A (status, event)",
            "pair missing from the table is an `InvalidTransition`: a bug when the event is ours,",
            "an `ORDER_ANOMALY` alert when a venue sends it. PREVIOUS is the status before the",
            "pending cancel or replace request, moved on by the acks and fills that arrived",
            "meanwhile. Duplicate fills (same trade id) are dropped before the table.",
            "",
            "```mermaid",
            mermaid_diagram().rstrip("\n"),
            "```",
            "",
            "| status | event | next |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


if __name__ == "__main__":
    print(state_machine_doc(), end="")
