"""Positions: integer cost and P&L, crossing zero, multiplier, the strategy and net books."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.messages import Side
from engine.positions import Position, PositionBook

BUY, SELL = Side.BUY, Side.SELL


def position(*fills: tuple[Side, int, int], multiplier: int = 1) -> Position:
    pos = Position("acc", "s1", "X", multiplier)
    for side, qty, price in fills:
        pos.apply(side, qty, price, 0)
    return pos


def test_position_apply_when_opening_and_adding_then_cost_accumulates() -> None:
    pos = position((BUY, 2, 100), (BUY, 3, 110))
    assert (pos.qty, pos.cost, pos.realised) == (5, 530, 0)
    assert pos.avg_price == 106


def test_position_apply_when_reducing_then_cost_removed_proportionally() -> None:
    pos = position((BUY, 3, 100), (BUY, 1, 101), (SELL, 1, 110))
    # cost 401 for 4; one closed removes 401 * 1 // 4 = 100
    assert (pos.qty, pos.cost, pos.realised) == (3, 301, 10)


def test_position_apply_when_closed_then_cost_exactly_zero() -> None:
    pos = position((BUY, 3, 100), (BUY, 1, 101), (SELL, 1, 110), (SELL, 3, 90))
    assert (pos.qty, pos.cost) == (0, 0)
    assert pos.realised == (110 + 3 * 90) - 401
    assert pos.avg_price is None


def test_position_apply_when_crossing_zero_then_closes_and_opens_rest() -> None:
    pos = position((BUY, 5, 100), (SELL, 8, 120))
    assert (pos.qty, pos.cost, pos.realised) == (-3, -360, 100)
    assert pos.avg_price == 120


def test_position_apply_when_short_covered_lower_then_profit() -> None:
    pos = position((SELL, 4, 50), (BUY, 4, 45))
    assert (pos.qty, pos.cost, pos.realised) == (0, 0, 20)


def test_position_when_multiplier_then_applies_to_realised_and_unrealised() -> None:
    pos = position((BUY, 2, 100), (SELL, 1, 103), multiplier=50)
    assert pos.realised == 3 * 50
    assert pos.cost == 100  # cost carries no multiplier
    assert pos.unrealised(104) == 4 * 50


def test_position_apply_when_fees_then_kept_apart_from_pnl() -> None:
    pos = Position("acc", "s1", "X")
    pos.apply(BUY, 1, 100, 3)
    pos.apply(SELL, 1, 100, -1)
    assert (pos.fees, pos.realised) == (2, 0)


def test_position_avg_price_when_fractional_then_rounds_half_away_from_zero() -> None:
    assert position((BUY, 2, 100), (BUY, 1, 101)).avg_price == 100  # 100.33
    assert position((BUY, 1, 100), (BUY, 1, 101)).avg_price == 101  # 100.5
    assert position((SELL, 1, 100), (SELL, 1, 101)).avg_price == 101
    assert position((BUY, 1, -100), (BUY, 1, -101)).avg_price == -101


def test_position_unrealised_when_short_and_price_falls_then_positive() -> None:
    assert position((SELL, 3, 100)).unrealised(90) == 30


def test_position_book_apply_fill_when_two_strategies_then_net_sums_them() -> None:
    book = PositionBook()
    book.apply_fill("acc", "s1", "X", side=BUY, qty=5, price=100, fee=1, multiplier=1)
    book.apply_fill("acc", "s2", "X", side=SELL, qty=2, price=101, fee=1, multiplier=1)
    s1 = book.strategy_position("acc", "s1", "X")
    net = book.net_position("acc", "X")
    assert s1 is not None and net is not None
    assert (s1.qty, book.strategy_qty("acc", "s2", "X"), net.qty) == (5, -2, 3)
    assert net.strategy is None
    assert (net.realised, net.fees) == (2, 2)
    assert [key for key, _ in book.strategy_positions()] == [("acc", "s1", "X"), ("acc", "s2", "X")]
    assert [key for key, _ in book.net_positions()] == [("acc", "X")]


def test_position_book_when_never_traded_then_none_and_zero() -> None:
    book = PositionBook()
    assert book.strategy_position("acc", "s1", "X") is None
    assert book.net_position("acc", "X") is None
    assert book.strategy_qty("acc", "s1", "X") == 0


fills = st.lists(
    st.tuples(
        st.sampled_from([BUY, SELL]),
        st.integers(min_value=1, max_value=1_000),
        st.integers(min_value=-10_000, max_value=10_000),
        st.integers(min_value=-50, max_value=50),
    ),
    max_size=60,
)


@given(fills, st.integers(min_value=-10_000, max_value=10_000), st.integers(1, 1_000))
def test_position_when_random_fills_then_matches_cash_flows_exactly(
    trades: list[tuple[Side, int, int, int]], mark: int, multiplier: int
) -> None:
    pos = Position("acc", "s1", "X", multiplier)
    signed_qty = cash = fees = 0
    for side, qty, price, fee in trades:
        pos.apply(side, qty, price, fee)
        signed = qty if side is BUY else -qty
        signed_qty += signed
        cash -= price * signed
        fees += fee
    assert pos.qty == signed_qty
    assert pos.realised + pos.unrealised(mark) == (cash + mark * signed_qty) * multiplier
    assert pos.fees == fees
    if pos.qty == 0:
        assert pos.cost == 0
        assert pos.unrealised(mark) == 0


@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3"]), fills.map(tuple)), max_size=5))
def test_position_book_when_random_fills_then_net_is_sum_of_strategies(
    per_strategy: list[tuple[str, tuple[tuple[Side, int, int, int], ...]]],
) -> None:
    book = PositionBook()
    for strategy, trades in per_strategy:
        for side, qty, price, fee in trades:
            book.apply_fill(
                "acc", strategy, "X", side=side, qty=qty, price=price, fee=fee, multiplier=2
            )
    net = book.net_position("acc", "X")
    total = sum(pos.qty for _, pos in book.strategy_positions())
    assert (net.qty if net is not None else 0) == total
    if net is not None:
        legs = [pos for _, pos in book.strategy_positions()]
        assert net.fees == sum(pos.fees for pos in legs)
        mark = 7
        assert net.realised + net.unrealised(mark) == sum(
            pos.realised + pos.unrealised(mark) for pos in legs
        )
