"""The L2 book: levels, snapshots, best prices, depth."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.book import Book
from engine.messages import BookDelta, Side


def delta(side: Side, price: int, qty: int, clear: bool = False) -> BookDelta:
    return BookDelta(
        ts_recv=0, instrument="X", venue="V", side=side, price=price, qty=qty, clear=clear
    )


def test_book_when_levels_set_and_removed_then_best_and_depth_follow() -> None:
    book = Book()
    for d in (
        delta(Side.BUY, 100, 5),
        delta(Side.BUY, 101, 3),
        delta(Side.SELL, 103, 4),
        delta(Side.SELL, 105, 9),
    ):
        book.apply(d)
    assert book.best_bid() == (101, 3) and book.best_ask() == (103, 4)
    assert list(book.levels(Side.BUY)) == [(101, 3), (100, 5)]
    assert book.depth(Side.SELL, 1) == 4 and book.depth(Side.SELL, 5) == 13
    book.apply(delta(Side.BUY, 101, 0))
    assert book.best_bid() == (100, 5) and book.size_at(Side.BUY, 101) == 0


def test_book_when_snapshot_starts_then_old_levels_gone() -> None:
    book = Book()
    book.apply(delta(Side.BUY, 100, 5))
    book.apply(delta(Side.SELL, 200, 1))
    book.apply(delta(Side.SELL, 150, 2, clear=True))
    assert book.best_bid() is None and book.best_ask() == (150, 2) and len(book) == 1


@given(st.lists(st.tuples(st.sampled_from(list(Side)), st.integers(1, 20), st.integers(0, 9))))
def test_book_when_random_updates_then_matches_dict_model(
    updates: list[tuple[Side, int, int]],
) -> None:
    book, model = Book(), {Side.BUY: {}, Side.SELL: {}}  # type: dict[Side, dict[int, int]]
    for side, price, qty in updates:
        book.apply(delta(side, price, qty))
        if qty:
            model[side][price] = qty
        else:
            model[side].pop(price, None)
    assert list(book.levels(Side.BUY)) == sorted(model[Side.BUY].items(), reverse=True)
    assert list(book.levels(Side.SELL)) == sorted(model[Side.SELL].items())
