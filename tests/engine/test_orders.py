"""The order state machine: every (status, event) pair, the PREVIOUS rule, the diagram."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.messages import OrderStatus, OrderType, Side, SubmitOrder, TimeInForce
from engine.orders import (
    PENDING_REQUEST,
    PREVIOUS,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Order,
    OrderEvent,
    mermaid_diagram,
    state_machine_doc,
)

S = OrderStatus
E = OrderEvent
ALL_PAIRS = list(itertools.product(OrderStatus, OrderEvent))
DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def new_order(qty: int = 10) -> Order:
    return Order.from_submit(
        SubmitOrder(
            ts_recv=1,
            order_id="r-1",
            venue="V1",
            instrument="BTC-USD",
            account="acc",
            strategy="s1",
            side=Side.BUY,
            qty=qty,
            order_type=OrderType.LIMIT,
            price=100,
            tif=TimeInForce.GTC,
            signal_id="sig-1",
        )
    )


def order_in(status: OrderStatus, previous: OrderStatus = S.ACCEPTED) -> Order:
    order = new_order()
    order.status = status
    order.previous = previous
    return order


def walk(*events: OrderEvent) -> Order:
    order = new_order()
    for ts, event in enumerate(events, start=2):
        order.apply(event, ts)
    return order


@pytest.mark.parametrize(("status", "event"), ALL_PAIRS, ids=str)
def test_order_apply_when_any_pair_then_follows_table_or_raises(
    status: OrderStatus, event: OrderEvent
) -> None:
    order = order_in(status, previous=S.PARTIALLY_FILLED)
    target = TRANSITIONS.get((status, event))
    if target is None:
        with pytest.raises(InvalidTransition, match=f"{event.value} is not allowed in"):
            order.apply(event, 5)
        assert order.status is status
        assert order.ts_last == 1
    else:
        expected = S.PARTIALLY_FILLED if target is PREVIOUS else target
        assert order.apply(event, 5) is expected
        assert order.status is expected
        assert order.ts_last == 5


def test_transitions_when_scanned_then_only_pending_requests_lead_to_previous() -> None:
    sources = {status for (status, _), target in TRANSITIONS.items() if target is PREVIOUS}
    assert sources == PENDING_REQUEST


def test_transitions_when_scanned_then_terminal_states_only_reach_terminal_states() -> None:
    for (status, event), target in TRANSITIONS.items():
        if status in TERMINAL:
            assert target in TERMINAL, (status, event)


def test_transitions_when_scanned_then_fill_after_cancel_edges_present() -> None:
    assert TRANSITIONS[S.CANCELED, E.PARTIAL_FILL] is S.CANCELED
    assert TRANSITIONS[S.CANCELED, E.FULL_FILL] is S.FILLED
    assert TRANSITIONS[S.EXPIRED, E.PARTIAL_FILL] is S.EXPIRED
    assert TRANSITIONS[S.EXPIRED, E.FULL_FILL] is S.FILLED
    assert TRANSITIONS[S.PENDING_CANCEL, E.PARTIAL_FILL] is S.PENDING_CANCEL
    assert TRANSITIONS[S.PENDING_CANCEL, E.FULL_FILL] is S.FILLED


def test_order_when_new_then_pending_new_with_nothing_filled() -> None:
    order = new_order()
    assert order.status is S.PENDING_NEW
    assert (order.filled_qty, order.leaves_qty, order.fill_value, order.fees) == (0, 10, 0, 0)
    assert order.is_open
    assert order.ts_created == order.ts_last == 1


def test_order_cancel_rejected_when_requested_from_accepted_then_accepted() -> None:
    order = walk(E.ACCEPTED, E.CANCEL_REQUESTED, E.CANCEL_REJECTED)
    assert order.status is S.ACCEPTED


def test_order_cancel_rejected_when_filled_during_pending_cancel_then_partially_filled() -> None:
    order = walk(E.ACCEPTED, E.CANCEL_REQUESTED, E.PARTIAL_FILL, E.CANCEL_REJECTED)
    assert order.status is S.PARTIALLY_FILLED


def test_order_cancel_rejected_when_requested_before_ack_then_pending_new() -> None:
    order = walk(E.CANCEL_REQUESTED, E.CANCEL_REJECTED)
    assert order.status is S.PENDING_NEW


def test_order_cancel_rejected_when_acked_during_pending_cancel_then_accepted() -> None:
    order = walk(E.CANCEL_REQUESTED, E.ACCEPTED, E.CANCEL_REJECTED)
    assert order.status is S.ACCEPTED


def test_order_replaced_when_filled_during_pending_replace_then_partially_filled() -> None:
    order = walk(E.ACCEPTED, E.REPLACE_REQUESTED, E.PARTIAL_FILL, E.REPLACED)
    assert order.status is S.PARTIALLY_FILLED


def test_order_replace_rejected_when_nothing_filled_then_accepted() -> None:
    order = walk(E.ACCEPTED, E.REPLACE_REQUESTED, E.REPLACE_REJECTED)
    assert order.status is S.ACCEPTED


def test_order_cancel_rejected_when_cancel_overtook_replace_then_status_before_replace() -> None:
    order = walk(E.ACCEPTED, E.REPLACE_REQUESTED, E.CANCEL_REQUESTED, E.REPLACED)
    assert order.status is S.PENDING_CANCEL
    assert order.apply(E.CANCEL_REJECTED, 9) is S.ACCEPTED


def test_order_fill_when_before_ack_then_late_ack_is_harmless() -> None:
    order = walk(E.PARTIAL_FILL, E.ACCEPTED)
    assert order.status is S.PARTIALLY_FILLED
    assert walk(E.FULL_FILL, E.ACCEPTED).status is S.FILLED


def test_order_cancel_rejected_when_order_filled_meanwhile_then_stays_filled() -> None:
    order = walk(E.ACCEPTED, E.CANCEL_REQUESTED, E.FULL_FILL, E.CANCEL_REJECTED)
    assert order.status is S.FILLED
    assert not order.is_open
    assert order.leaves_qty == 0


def test_order_record_fill_when_called_then_adds_qty_value_fee_and_trade_id() -> None:
    order = new_order()
    order.record_fill("t1", 100, 3, 7, 4)
    order.record_fill("t2", 102, 2, -1, 5)
    assert order.filled_qty == 5
    assert order.fill_value == 100 * 3 + 102 * 2
    assert order.fees == 6
    assert order.leaves_qty == 5
    assert "t1" in order.trade_ids and "t2" in order.trade_ids
    assert order.ts_last == 5


# The quantities are modelled the way the engine drives them: a fill is PARTIAL_FILL
# while it leaves something open, FULL_FILL when it completes the order.
@given(st.lists(st.sampled_from(list(OrderEvent)), max_size=40))
def test_order_when_random_events_then_status_agrees_with_fills(events: list[OrderEvent]) -> None:
    order = new_order(qty=6)
    for ts, event in enumerate(events, start=2):
        if event is E.PARTIAL_FILL and order.filled_qty + 1 >= order.qty:
            event = E.FULL_FILL
        try:
            order.apply(event, ts)
        except InvalidTransition:
            continue
        if event is E.PARTIAL_FILL:
            order.record_fill(f"t{ts}", 100, 1, 0, ts)
        elif event is E.FULL_FILL:
            order.record_fill(f"t{ts}", 100, order.qty - order.filled_qty, 0, ts)
        assert order.previous in {S.PENDING_NEW, S.ACCEPTED, S.PARTIALLY_FILLED}
        if order.status in {S.ACCEPTED, S.PENDING_NEW}:
            assert order.filled_qty == 0
        if order.status is S.PARTIALLY_FILLED:
            assert 0 < order.filled_qty < order.qty
        if order.status is S.FILLED:
            assert order.filled_qty == order.qty
        if order.status in PENDING_REQUEST:
            assert (order.previous is S.PARTIALLY_FILLED) == (order.filled_qty > 0)


def test_mermaid_diagram_when_generated_then_has_every_transition() -> None:
    diagram = mermaid_diagram()
    assert diagram.startswith("stateDiagram-v2\n")
    assert diagram == mermaid_diagram()
    edges = {}
    for line in diagram.splitlines()[3:]:
        if " : " in line:
            arrow, labels = line.strip().split(" : ")
            edges[arrow] = labels.split(", ")
    for (status, event), target in TRANSITIONS.items():
        assert event.value in edges[f"{status.value} --> {target.value}"]
    assert sum(len(labels) for labels in edges.values()) == len(TRANSITIONS)


def test_state_machine_doc_when_compared_then_docs_file_is_up_to_date() -> None:
    assert DOC.read_text() == state_machine_doc(), (
        "docs/state-machine.md is out of date with engine.orders.TRANSITIONS; regenerate it "
        "with: .venv/bin/python -m engine.orders > docs/state-machine.md"
    )
