"""Bulk append: columns in (whole, or slices of rows made once), the same entries out as
message-by-message appends."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pytest

from engine.codec import CodecError, columns_rows
from engine.journal import JournalError, JournalReader, JournalWriter, Manifest
from engine.messages import KIND_CODE, BookDelta, QuoteTick, Side, Signal, TradeTick


def manifest(run_id: str = "bulk") -> Manifest:
    return Manifest(
        run_id=run_id,
        mode="test",
        seed=0,
        code_version="test",
        instruments=[{"instrument": "X", "venue_symbols": {"V": "X"}}],
    )


def test_append_columns_when_mixed_with_appends_then_entries_in_seq_order(tmp_path: Path) -> None:
    quotes = [
        QuoteTick(
            ts_recv=10 + i,
            ts_event=9 + i,
            instrument="X",
            venue="V",
            bid_price=100 + i,
            bid_size=5,
            ask_price=None if i == 2 else 102 + i,
            ask_size=7,
        )
        for i in range(4)
    ]
    trade = TradeTick(ts_recv=20, instrument="X", venue="V", price=101, qty=3, aggressor=Side.SELL)
    level = BookDelta(
        ts_recv=21, instrument="X", venue="V", side=Side.BUY, price=99, qty=4, clear=True
    )
    sig = Signal(
        ts_recv=5, signal_id="s", strategy="a", account="A", instrument="X", side=Side.BUY, qty=1
    )
    with JournalWriter(tmp_path, manifest(), batch_size=3) as w:
        assert w.append(sig) == 0
        kinds = np.array(
            [KIND_CODE[QuoteTick]] * 4 + [KIND_CODE[TradeTick], KIND_CODE[BookDelta]], dtype=np.int8
        )
        first = w.append_columns(
            kinds,
            {
                "ts_recv": [10, 11, 12, 13, 20, 21],
                "ts_event": [9, 10, 11, 12, None, None],
                "instrument": ["X"] * 6,
                "venue": ["V"] * 6,
                "bid_price": [100, 101, 102, 103, None, None],
                "bid_size": [5, 5, 5, 5, None, None],
                "ask_price": [102, 103, None, 105, None, None],
                "ask_size": [7, 7, 7, 7, None, None],
                "price": [None, None, None, None, 101, 99],
                "qty": [None, None, None, None, 3, 4],
                "aggressor": pa.array([None, None, None, None, 1, None], pa.int8()),
                "side": pa.array([None, None, None, None, None, 0], pa.int8()),
                "clear": [None, None, None, None, None, True],
            },
        )
        assert first == 1
        assert w.append(sig, 0) == 7
    entries = list(JournalReader(tmp_path / "bulk").entries())
    assert [e.seq for e in entries] == list(range(8))
    assert [e.msg for e in entries[1:7]] == [*quotes, trade, level]
    assert entries[7].cause == 0
    assert JournalReader(tmp_path / "bulk").verify().ok


def test_append_columns_when_unknown_column_or_wrong_length_then_clear_error(
    tmp_path: Path,
) -> None:
    with JournalWriter(tmp_path, manifest()) as w:
        kinds = np.array([KIND_CODE[QuoteTick]], dtype=np.int8)
        with pytest.raises(CodecError, match="no journal column 'bid'"):
            w.append_columns(kinds, {"bid": [1]})
        with pytest.raises(CodecError, match="column 'venue' has 2 rows, not 1"):
            w.append_columns(kinds, {"venue": ["V", "W"]})


def test_append_columns_when_null_enum_has_garbage_key_then_polars_reads_it(
    tmp_path: Path,
) -> None:
    import polars as pl

    kinds = np.array([KIND_CODE[TradeTick]] * 2, dtype=np.int8)
    aggressor = pa.Array.from_buffers(
        pa.int8(), 2, [pa.array([True, False]).buffers()[1], pa.py_buffer(bytes([1, 255]))]
    )  # row 1 is null with -1 under the mask: legal Arrow
    with JournalWriter(tmp_path, manifest()) as w:
        w.append_columns(
            kinds,
            {
                "ts_recv": [1, 2],
                "instrument": ["X"] * 2,
                "venue": ["V"] * 2,
                "price": [10, 11],
                "qty": [1, 2],
                "aggressor": aggressor,
            },
        )
    frame = pl.read_ipc(next((tmp_path / "bulk" / "market").glob("*.arrow")))  # market data
    assert frame["aggressor"].to_list() == ["SELL", None]


def test_append_rows_when_slices_interleave_with_appends_then_batches_split_at_batch_size(
    tmp_path: Path,
) -> None:
    n = 20
    quotes = [
        QuoteTick(
            ts_recv=i, instrument="X", venue="V", bid_price=i, bid_size=1, ask_price=i + 2,
            ask_size=2,
        )
        for i in range(n)
    ]  # fmt: skip
    rows = columns_rows(
        np.full(n, KIND_CODE[QuoteTick], dtype=np.int8),
        {
            "ts_recv": np.arange(n),
            "instrument": pa.array(["X"] * n),
            "venue": pa.array(["V"] * n),
            "bid_price": np.arange(n),
            "bid_size": np.ones(n, dtype=np.int64),
            "ask_price": np.arange(n) + 2,
            "ask_size": np.full(n, 2),
        },
    )
    sig = Signal(
        ts_recv=5, signal_id="s", strategy="a", account="A", instrument="X", side=Side.BUY, qty=1
    )
    want = []
    with JournalWriter(tmp_path, manifest(), batch_size=4) as w:
        for start, stop in ((0, 3), (3, 4), (4, 11), (11, 20)):
            assert w.append_rows(rows, start, stop) == len(want)
            want += quotes[start:stop]
            assert w.append(sig) == len(want)
            want.append(sig)
    reader = JournalReader(tmp_path / "bulk")
    assert [e.msg for e in reader.entries()] == want
    assert [b.num_rows for b in reader.batches()] == [4] * 6
    assert reader.verify().ok


def test_append_rows_when_range_or_rows_are_wrong_then_error_names_them(tmp_path: Path) -> None:
    rows = columns_rows(np.full(2, KIND_CODE[QuoteTick], dtype=np.int8), {"ts_recv": [1, 2]})
    with JournalWriter(tmp_path, manifest()) as w:
        with pytest.raises(JournalError, match=r"got Rows \[1, 3\)"):
            w.append_rows(rows, 1, 3)
        with pytest.raises(JournalError, match=r"expected codec.Rows .* got list \[0, 1\)"):
            w.append_rows([1], 0, 1)  # type: ignore[arg-type]
        assert w.next_seq == 0


def test_append_when_bad_value_follows_bulk_rows_then_refused_and_nothing_lost(
    tmp_path: Path,
) -> None:
    rows = columns_rows(np.full(3, KIND_CODE[QuoteTick], dtype=np.int8), {"ts_recv": [1, 2, 3]})
    sig = Signal(
        ts_recv=5, signal_id="s", strategy="a", account="A", instrument="X", side=Side.BUY, qty=1
    )
    w = JournalWriter(tmp_path, manifest(), batch_size=8)
    w.append(sig)
    w.append_rows(rows, 0, 3)
    w.append(sig)
    bad = Signal(**{**msgspec.structs.asdict(sig), "qty": 2**64})  # type: ignore[arg-type]
    with pytest.raises(CodecError, match=r"^Signal\.qty: expected an int64"):
        w.append(bad)  # refused at append, before it has a seq
    assert w.append(sig) == 5
    w.close()
    assert [e.seq for e in JournalReader(tmp_path / "bulk").entries()] == [0, 1, 2, 3, 4, 5]
