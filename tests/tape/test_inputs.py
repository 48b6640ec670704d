"""Market and signal loaders: formats, exact decimals, streaming, and every error class."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.messages import AssetClass, Instrument, OrderType, Side, SignalIntent
from sim.market import MARKET_SCHEMA
from tape.demo import demo_instruments
from tape.inputs import InputError, MarketInput, _units, load_signals, market_files

SAMPLES = Path(__file__).resolve().parents[2] / "tape" / "samples"
INSTRUMENTS = demo_instruments()  # price_precision 2, size_precision 4, ALPHA BETA GAMMA
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

HEADER = "ts,instrument,venue,bid_price,bid_size,ask_price,ask_size"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def quotes_csv(tmp_path: Path, rows: list[str], name: str = "market.csv") -> Path:
    return write(tmp_path / name, "\n".join([HEADER, *rows]) + "\n")


def good_row(i: int) -> str:
    return f"{T0 + i},BTC-USD,ALPHA,90000.25,0.5,90000.50,1.25"


def problems(spec: Path | str, **kw: object) -> list[str]:
    with pytest.raises(InputError) as info:
        MarketInput(spec, INSTRUMENTS, **kw).check()  # type: ignore[arg-type]
    return info.value.problems


def table(spec: Path | str, **kw: object) -> pa.Table:
    market = MarketInput(spec, INSTRUMENTS, **kw)  # type: ignore[arg-type]
    market.check()
    batches = list(market.batches())
    for batch in batches:
        assert batch.schema.equals(MARKET_SCHEMA)
    return pa.Table.from_batches(batches, schema=MARKET_SCHEMA)


# --- formats and exact conversion --------------------------------------------------------

RAW = {
    "ts": [T0, T0 + 1, T0 + 2],
    "instrument": ["BTC-USD", "ETH-USD", "SOL-USD"],
    "venue": ["ALPHA", "BETA", "GAMMA"],
    "bid_price": ["90000.25", "3000", "150.1"],
    "bid_size": ["0.0125", "2", "0.0001"],
    "ask_price": ["90000.26", "3000.01", "150.12"],
    "ask_size": ["1.5", "0.25", "100"],
}
EXPECTED = {
    "bid_price": [9_000_025, 300_000, 15_010],
    "bid_size": [125, 20_000, 1],
    "ask_price": [9_000_026, 300_001, 15_012],
    "ask_size": [15_000, 2_500, 1_000_000],
}


def raw_table(decimals: str) -> pa.Table:
    cols: dict[str, pa.Array] = {
        k: pa.array(v) for k, v in RAW.items() if k in ("ts", "instrument", "venue")
    }
    for name in ("bid_price", "bid_size", "ask_price", "ask_size"):
        values = RAW[name]
        if decimals == "decimal":
            cols[name] = pa.array([Decimal(v) for v in values], pa.decimal128(20, 6))
        elif decimals == "float":
            cols[name] = pa.array([float(v) for v in values], pa.float64())
        else:
            cols[name] = pa.array(values, pa.string())
    return pa.table(cols)


@pytest.mark.parametrize(
    ("suffix", "decimals"),
    [
        (".csv", "string"),
        (".parquet", "decimal"),
        (".parquet", "float"),
        (".arrow", "float"),
        (".feather", "decimal"),
        (".ipc", "string"),
        (".arrows", "decimal"),
    ],
)
def test_market_when_each_format_then_exact_integer_units(
    tmp_path: Path, suffix: str, decimals: str
) -> None:
    path = tmp_path / f"market{suffix}"
    raw = raw_table(decimals)
    if suffix == ".csv":
        pacsv.write_csv(raw, path)
    elif suffix == ".parquet":
        pq.write_table(raw, path)
    elif suffix == ".arrows":
        with pa.ipc.new_stream(path, raw.schema) as w:
            w.write_table(raw)
    else:
        with pa.ipc.new_file(path, raw.schema) as w:
            w.write_table(raw)
    out = table(path)
    assert out.column("ts").to_pylist() == RAW["ts"]
    assert out.column("mtype").to_pylist() == [0, 0, 0]
    for name, values in EXPECTED.items():
        assert out.column(name).to_pylist() == values, name
    for name in ("price", "qty", "side", "clear", "ts_event"):
        assert out.column(name).null_count == 3


def test_market_rows_hint_when_parquet_then_metadata_count_when_csv_then_none(
    tmp_path: Path,
) -> None:
    pq.write_table(raw_table("string"), tmp_path / "m.parquet")
    pacsv.write_csv(raw_table("string"), tmp_path / "m.csv")
    assert MarketInput(tmp_path / "m.parquet", INSTRUMENTS).rows_hint() == 3
    assert MarketInput(tmp_path / "m.csv", INSTRUMENTS).rows_hint() is None


def test_decimals_when_strings_with_exponent_sign_and_spaces_then_exact(tmp_path: Path) -> None:
    path = quotes_csv(
        tmp_path,
        [
            f"{T0},BTC-USD,ALPHA, 9.000025e4 ,1E-4,+90000.2600,12.50000000",
            f"{T0 + 1},BTC-USD,ALPHA,-.5,0.0001,0.50,5e0",
        ],
    )
    out = table(path)
    assert out.column("bid_price").to_pylist() == [9_000_025, -50]
    assert out.column("bid_size").to_pylist() == [1, 1]
    assert out.column("ask_price").to_pylist() == [9_000_026, 50]
    assert out.column("ask_size").to_pylist() == [125_000, 50_000]


def test_decimals_when_float_near_grid_then_rounded_when_off_grid_then_error(
    tmp_path: Path,
) -> None:
    near = pa.table(
        {
            "ts": [T0],
            "instrument": ["BTC-USD"],
            "venue": ["ALPHA"],
            "bid_price": [0.1 + 0.2],  # 0.30000000000000004: on the 0.01 grid within 1e-9
            "bid_size": [1.0],
            "ask_price": [0.31],
            "ask_size": [0.0125],
        }
    )
    pq.write_table(near, tmp_path / "near.parquet")
    out = table(tmp_path / "near.parquet")
    assert out.column("bid_price").to_pylist() == [30]
    assert out.column("ask_size").to_pylist() == [125]
    off = near.set_column(3, "bid_price", pa.array([0.305]))
    pq.write_table(off, tmp_path / "off.parquet")
    assert problems(tmp_path / "off.parquet") == [
        f"{tmp_path / 'off.parquet'} row 1: bid_price must be a multiple of 0.01 "
        "(price_precision 2 of BTC-USD), got 0.305"
    ]


def test_market_when_iso_timestamps_and_timestamp_type_then_ns_utc(tmp_path: Path) -> None:
    path = quotes_csv(
        tmp_path,
        [
            "2026-01-01T00:00:00Z,BTC-USD,ALPHA,1,1,2,1",
            "2026-01-01 00:00:00.000000001,BTC-USD,ALPHA,1,1,2,1",
            "2026-01-01T01:00:00.5+01:00,BTC-USD,ALPHA,1,1,2,1",
            "2026-01-01T00:00:01,BTC-USD,ALPHA,1,1,2,1",
        ],
    )
    assert table(path).column("ts").to_pylist() == [T0, T0 + 1, T0 + 500_000_000, T0 + 10**9]
    stamped = pa.table(
        {
            "ts": pa.array([T0 // 1000], pa.timestamp("us", "UTC")),
            "instrument": ["BTC-USD"],
            "venue": ["ALPHA"],
            "bid_price": ["1"],
            "bid_size": ["1"],
            "ask_price": ["2"],
            "ask_size": ["1"],
        }
    )
    pq.write_table(stamped, tmp_path / "ts.parquet")
    assert table(tmp_path / "ts.parquet").column("ts").to_pylist() == [T0]


def test_market_when_types_mixed_then_each_row_in_its_columns(tmp_path: Path) -> None:
    text = (
        "ts,instrument,venue,type,bid_price,bid_size,ask_price,ask_size,price,qty,"
        "aggressor,side,clear,ts_event\n"
        f"{T0},BTC-USD,ALPHA,quote,100,1,,,999,9,buy,bid,true,{T0 - 5}\n"
        f"{T0 + 1},BTC-USD,ALPHA,TRADE,1,1,2,2,100.01,0.5,sell,,,\n"
        f"{T0 + 2},BTC-USD,ALPHA,trade,,,,,100.02,0.5,,,,\n"
        f"{T0 + 3},BTC-USD,ALPHA,book,,,,,99.99,2,,BID,1,\n"
        f"{T0 + 4},BTC-USD,ALPHA,book,,,,,100.05,0,,ask,,\n"
    )
    converted = table(write(tmp_path / "mixed.csv", text))
    side = converted.column("side").chunk(0)
    assert (np.frombuffer(side.buffers()[1], np.int8)[: len(side)] >= 0).all()  # Polars-safe
    out = converted.to_pydict()
    assert out["mtype"] == [0, 1, 1, 2, 2]
    assert out["bid_price"] == [10_000, None, None, None, None]
    assert out["bid_size"] == [10_000, None, None, None, None]
    assert out["ask_price"] == [None] * 5  # the quote's missing ask side
    assert out["ask_size"] == [0, None, None, None, None]
    assert out["price"] == [None, 10_001, 10_002, 9_999, 10_005]
    assert out["qty"] == [None, 5_000, 5_000, 20_000, 0]
    assert out["side"] == [None, 1, None, 0, 1]
    assert out["clear"] == [None, None, None, True, False]
    assert out["ts_event"] == [T0 - 5, None, None, None, None]


def test_market_when_directory_then_files_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "day"
    folder.mkdir()
    quotes_csv(folder, [good_row(2), good_row(3)], "b.csv")
    quotes_csv(folder, [good_row(0), good_row(1)], "a.csv")
    write(folder / "README.txt", "not market data")
    assert market_files(folder) == [folder / "a.csv", folder / "b.csv"]
    assert table(folder).column("ts").to_pylist() == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert table(str(folder / "*.csv")).num_rows == 4


def test_market_when_small_batches_and_no_cache_then_streamed_in_slices(tmp_path: Path) -> None:
    path = quotes_csv(tmp_path, [good_row(i) for i in range(11)])
    market = MarketInput(path, INSTRUMENTS, batch_size=3, cache_bytes=0)
    info = market.check()
    assert (info.rows, info.first_ts, info.last_ts) == (11, T0, T0 + 10)
    sizes = [b.num_rows for b in market.batches()]
    assert sizes == [3, 3, 3, 2]
    bad = quotes_csv(tmp_path, [good_row(i) for i in range(7)] + ["x,BTC-USD,ALPHA,1,1,2,1"])
    assert problems(bad, batch_size=3) == [
        f"{bad} row 8 (line 9): ts must be integer nanoseconds since the epoch or an ISO-8601 "
        "timestamp, got 'x'"
    ]


# --- errors --------------------------------------------------------------------------------


def test_market_when_size_not_positive_then_error_names_row_line_field(tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(20)]
    rows[16] = f"{T0 + 16},BTC-USD,ALPHA,90000.25,-5,90000.50,1"
    path = quotes_csv(tmp_path, rows)
    assert problems(path) == [f"{path} row 17 (line 18): bid_size must be > 0, got -5"]


def test_market_when_each_error_class_then_exact_messages(tmp_path: Path) -> None:
    path = quotes_csv(
        tmp_path,
        [
            f"{T0},XRP-USD,ALPHA,1,1,2,1",
            f"{T0},BTC-USD,DELTA,1,1,2,1",
            f"{T0},,ALPHA,1,1,2,1",
            f"{T0},BTC-USD,ALPHA,2,1,2,1",
            f"{T0},BTC-USD,ALPHA,1.001,1,2,1",
            f"{T0},BTC-USD,ALPHA,1,,2,1",
            f"{T0},BTC-USD,ALPHA,,3,2,1",
            f"{T0},BTC-USD,ALPHA,abc,1,2,0",
            f"{T0 - 1},BTC-USD,ALPHA,1,1,2,1",
            "2026-13-01T00:00:00Z,BTC-USD,ALPHA,1,1,2,1",
        ],
    )
    p = str(path)
    assert problems(path) == [
        f"{p} row 1 (line 2): instrument must be one of BTC-USD, ETH-USD, SOL-USD, got 'XRP-USD'",
        f"{p} row 2 (line 3): venue must be one listed for BTC-USD (ALPHA, BETA, GAMMA), "
        "got 'DELTA'",
        f"{p} row 3 (line 4): instrument must be set, got empty",
        f"{p} row 4 (line 5): bid_price must be < ask_price (a venue's quote is never locked "
        "or crossed), got bid_price 2 >= ask_price 2",
        f"{p} row 5 (line 6): bid_price must be a multiple of 0.01 (price_precision 2 of "
        "BTC-USD), got 1.001",
        f"{p} row 6 (line 7): bid_size must be set when bid_price is, got empty",
        f"{p} row 7 (line 8): bid_size must be empty when bid_price is, got 3",
        f"{p} row 8 (line 9): bid_price must be a decimal number, got 'abc'",
        f"{p} row 8 (line 9): ask_size must be > 0, got 0",
        f"{p} row 9 (line 10): ts must be >= the previous row's ts {T0} (non-decreasing), "
        f"got {T0 - 1}",
        f"{p} row 10 (line 11): ts must be integer nanoseconds since the epoch or an ISO-8601 "
        "timestamp, got '2026-13-01T00:00:00Z'",
    ]


def test_market_when_bad_enums_then_errors_name_allowed_values(tmp_path: Path) -> None:
    text = (
        "ts,instrument,venue,type,price,qty,aggressor,side,clear\n"
        f"{T0},BTC-USD,ALPHA,qoute,1,1,,,\n"
        f"{T0},BTC-USD,ALPHA,trade,1,1,up,,\n"
        f"{T0},BTC-USD,ALPHA,book,1,1,,middle,maybe\n"
        f"{T0},BTC-USD,ALPHA,trade,1,0,,,\n"
        f"{T0},BTC-USD,ALPHA,book,1,-1,,bid,\n"
    )
    path = write(tmp_path / "m.csv", text)
    assert problems(path) == [
        f"{path} row 1 (line 2): type must be one of quote, trade, book, got 'qoute'",
        f"{path} row 2 (line 3): aggressor must be buy, sell or empty, got 'up'",
        f"{path} row 3 (line 4): side must be bid or ask, got 'middle'",
        f"{path} row 3 (line 4): clear must be true, false or empty, got 'maybe'",
        f"{path} row 4 (line 5): qty must be > 0, got 0",
        f"{path} row 5 (line 6): qty must be >= 0 (0 removes the level), got -1",
    ]


def test_market_when_columns_missing_then_file_level_errors(tmp_path: Path) -> None:
    no_size = write(tmp_path / "a.csv", f"ts,instrument,venue,bid_price\n{T0},BTC-USD,ALPHA,1\n")
    assert problems(no_size) == [
        f"{no_size}: column {c} is missing: required for quote rows (the file has no type "
        "column: every row is a quote)"
        for c in ("bid_size", "ask_price", "ask_size")
    ]
    typed = write(
        tmp_path / "b.csv", f"ts,instrument,venue,type,price\n{T0},BTC-USD,ALPHA,trade,1\n"
    )
    assert problems(typed) == [
        f"{typed}: column qty is missing: required for trade rows (first at row 1)"
    ]
    no_ts = write(
        tmp_path / "c.csv",
        "instrument,venue,bid_price,bid_size,ask_price,ask_size\nBTC-USD,ALPHA,1,1,2,1\n",
    )
    assert problems(no_ts) == [f"{no_ts}: column ts is missing: required"]


def test_market_when_column_type_wrong_then_error_names_type(tmp_path: Path) -> None:
    t = raw_table("string").set_column(0, "ts", pa.array([1.5, 2.5, 3.5]))
    pq.write_table(t, tmp_path / "m.parquet")
    assert problems(tmp_path / "m.parquet") == [
        f"{tmp_path / 'm.parquet'}: column ts has type double: expected integer nanoseconds, "
        "ISO-8601 strings or timestamps"
    ]


def test_market_when_not_csv_then_row_without_line(tmp_path: Path) -> None:
    t = raw_table("string").set_column(4, "bid_size", pa.array(["1", "-2", "3"]))
    pq.write_table(t, tmp_path / "m.parquet")
    assert problems(tmp_path / "m.parquet") == [
        f"{tmp_path / 'm.parquet'} row 2: bid_size must be > 0, got -2"
    ]


def test_market_when_ts_goes_back_across_files_then_error_in_second_file(tmp_path: Path) -> None:
    quotes_csv(tmp_path, [good_row(5)], "a.csv")
    b = quotes_csv(tmp_path, [good_row(4)], "b.csv")
    assert problems(tmp_path) == [
        f"{b} row 1 (line 2): ts must be >= the previous row's ts {T0 + 5} (non-decreasing), "
        f"got {T0 + 4}"
    ]


def test_market_when_many_errors_then_stops_at_limit(tmp_path: Path) -> None:
    path = quotes_csv(tmp_path, [f"{T0},BTC-USD,ALPHA,1,-1,2,1"] * 30)
    with pytest.raises(InputError) as info:
        MarketInput(path, INSTRUMENTS, max_errors=20, batch_size=7).check()
    err = info.value
    assert len(err.problems) == 20 and err.stopped
    assert err.problems[-1].startswith(f"{path} row 20 (line 21): bid_size must be > 0")
    assert str(err).startswith("20 problems in the input (stopped after the first 20):")


def test_market_when_path_missing_or_unknown_type_then_error(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.csv") == [
        f"{tmp_path / 'nope.csv'}: no such file or directory"
    ]
    odd = write(tmp_path / "m.txt", "x")
    assert problems(odd) == [
        f"{odd}: unknown market file type '.txt': expected one of .parquet, .arrow, .feather, "
        ".ipc, .arrows, .csv"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert problems(empty)[0].startswith(f"{empty}: directory has no market files")


# --- signals ---------------------------------------------------------------------------------

SIGNAL_HEADER = "signal_id,strategy,account,instrument,intent,side,qty,target,order_type,price,ts"


def signals_csv(tmp_path: Path, rows: list[str]) -> Path:
    return write(tmp_path / "signals.csv", "\n".join([SIGNAL_HEADER, *rows]) + "\n")


def signal_problems(path: Path) -> list[str]:
    with pytest.raises(InputError) as info:
        load_signals(path, INSTRUMENTS)
    return info.value.problems


def test_signals_when_sample_csv_and_jsonl_then_same_exact_signals() -> None:
    csv = load_signals(SAMPLES / "signals.csv", INSTRUMENTS)
    jsonl = load_signals(SAMPLES / "signals.jsonl", INSTRUMENTS)
    assert csv == jsonl
    first = csv[0]
    assert (first.signal_id, first.side, first.qty, first.signal_price) == (
        "s1",
        Side.BUY,
        100,
        9_000_000,
    )
    assert first.ts_recv == T0 + 250_000_000 and first.ts_event == T0 + 200_000_000
    by_id = {s.signal_id: s for s in csv}
    assert by_id["s3"].intent is SignalIntent.TARGET and by_id["s3"].target == 25_000
    assert by_id["s4"].intent is SignalIntent.CANCEL and by_id["s4"].cancels == "s2"
    assert by_id["s11"].order_type is OrderType.STOP and by_id["s11"].stop_price == 301_000
    assert by_id["s9"].ts_recv == 1_767_225_602_600_000_000


def test_signals_when_parquet_with_typed_columns_then_same_as_csv(tmp_path: Path) -> None:
    t = pacsv.read_csv(
        SAMPLES / "signals.csv",
        convert_options=pacsv.ConvertOptions(strings_can_be_null=True, null_values=[""]),
    )
    for name in ("qty", "target", "price", "stop_price", "signal_price"):
        values = [None if v is None else Decimal(str(v)) for v in t.column(name).to_pylist()]
        t = t.set_column(
            t.schema.get_field_index(name), name, pa.array(values, pa.decimal128(18, 4))
        )
    pq.write_table(t, tmp_path / "signals.parquet")
    assert load_signals(tmp_path / "signals.parquet", INSTRUMENTS) == load_signals(
        SAMPLES / "signals.csv", INSTRUMENTS
    )


def test_signals_when_unsorted_then_sorted_by_ts_then_file_order(tmp_path: Path) -> None:
    path = signals_csv(
        tmp_path,
        [
            f"b,s,A,BTC-USD,ORDER,BUY,1,,MARKET,,{T0 + 5}",
            f"a,s,A,BTC-USD,ORDER,SELL,1,,MARKET,,{T0}",
            f"c,s,A,BTC-USD,ORDER,BUY,1,,MARKET,,{T0 + 5}",
        ],
    )
    assert [s.signal_id for s in load_signals(path, INSTRUMENTS)] == ["a", "b", "c"]


def test_signals_when_rows_inconsistent_then_exact_messages(tmp_path: Path) -> None:
    path = signals_csv(
        tmp_path,
        [
            f"a,s,A,BTC-USD,ORDER,BUY,-5,,MARKET,,{T0}",
            f"b,s,A,BTC-USD,ORDER,,1,,MARKET,,{T0}",
            f"c,s,A,BTC-USD,ORDER,BUY,1,,LIMIT,,{T0}",
            f"d,s,A,BTC-USD,TARGET,BUY,,,MARKET,,{T0}",
            f"e,s,A,BTC-USD,CANCEL,,,,,,{T0}",
            f"a,s,A,BTC-USD,ORDER,BUY,1,,MARKET,,{T0}",
            f"f,s,A,XRP-USD,ORDER,BUY,1,,MARKET,,{T0}",
            f"g,s,A,BTC-USD,ODER,BUY,0.00001,,MARKET,,{T0}",
            "h,s,A,BTC-USD,ORDER,BUY,1,,MARKET,100,",
        ],
    )
    p = str(path)
    assert signal_problems(path) == [
        f"{p} row 1 (line 2): qty must be > 0, got -5",
        f"{p} row 2 (line 3): side must be set for an ORDER signal (BUY or SELL), got empty",
        f"{p} row 3 (line 4): price must be set for a LIMIT order, got empty",
        f"{p} row 4 (line 5): side must be empty for a TARGET signal, got 'BUY'",
        f"{p} row 4 (line 5): target must be set for a TARGET signal (the signed position "
        "wanted), got empty",
        f"{p} row 5 (line 6): cancels must be set for a CANCEL signal (the signal_id whose "
        "orders to cancel), got empty",
        f"{p} row 6 (line 7): signal_id must be unique in the file, got 'a' again (first at "
        "row 1 (line 2))",
        f"{p} row 7 (line 8): instrument must be one of BTC-USD, ETH-USD, SOL-USD, got 'XRP-USD'",
        f"{p} row 8 (line 9): qty must be a multiple of 0.0001 (size_precision 4 of BTC-USD), "
        "got 0.00001",
        f"{p} row 8 (line 9): intent must be one of ORDER, TARGET, CANCEL, got 'ODER'",
        f"{p} row 9 (line 10): ts must be set (the time the signal reaches us), got empty",
        f"{p} row 9 (line 10): price must be empty for a MARKET order, got 100",
    ]


def test_signals_when_cancel_names_later_or_unknown_signal_then_error(tmp_path: Path) -> None:
    text = (
        "signal_id,strategy,account,instrument,intent,side,qty,cancels,ts\n"
        f"x,s,A,BTC-USD,CANCEL,,,y,{T0}\n"
        f"y,s,A,BTC-USD,ORDER,BUY,1,,{T0 + 1}\n"
        f"z,s,A,BTC-USD,CANCEL,,,nope,{T0 + 2}\n"
    )
    path = write(tmp_path / "signals.csv", text)
    assert signal_problems(path) == [
        f"{path} row 1 (line 2): cancels must name an earlier signal (by ts, then file "
        f"order), got 'y' at row 2 (line 3) with ts {T0 + 1}",
        f"{path} row 3 (line 4): cancels must name a signal_id of this file, got 'nope'",
    ]


def test_signals_when_order_replaces_an_earlier_signal_then_kept_and_target_refused(
    tmp_path: Path,
) -> None:
    head = "signal_id,strategy,account,instrument,intent,side,qty,target,cancels,ts\n"
    good = f"a,s,A,BTC-USD,ORDER,BUY,1,,,{T0}\nb,s,A,BTC-USD,ORDER,SELL,1,,a,{T0 + 1}\n"
    path = write(tmp_path / "good.csv", head + good)
    replacing = load_signals(path, INSTRUMENTS)[1]
    assert (replacing.intent, replacing.cancels) == (SignalIntent.ORDER, "a")
    bad = write(
        tmp_path / "bad.csv",
        head
        + f"a,s,A,BTC-USD,ORDER,BUY,1,,c,{T0}\n"
        + f"b,s,A,BTC-USD,TARGET,,,5,a,{T0 + 1}\n"
        + f"c,s,A,BTC-USD,ORDER,BUY,1,,,{T0 + 2}\n",
    )
    assert signal_problems(bad) == [
        f"{bad} row 1 (line 2): cancels must name an earlier signal (by ts, then file "
        f"order), got 'c' at row 3 (line 4) with ts {T0 + 2}",
        f"{bad} row 2 (line 3): cancels must be empty for a TARGET signal, got 'a'",
    ]


def test_signals_when_jsonl_mistyped_then_line_and_field_named(tmp_path: Path) -> None:
    ok = '{"signal_id": "a", "strategy": "s", "account": "A", "instrument": "BTC-USD", '
    path = write(
        tmp_path / "signals.jsonl",
        "\n".join(
            [
                ok + f'"side": "BUY", "qty": 1, "ts": {T0}}}',
                "",
                ok + f'"side": "BUY", "qty": true, "ts": {T0}}}',
                ok + f'"side": "BUY", "qtty": 1, "ts": {T0}}}',
                '{"signal_id": "b"',
                '{"signal_id": "c", "strategy": "s", "account": "A", "ts": 1}',
            ]
        ),
    )
    msgs = signal_problems(path)
    assert msgs[:3] == [
        f"{path} line 3: qty must be decimal or null, got bool",
        f"{path} line 4: field 'qtty' is unknown: expected only signal_id, strategy, account, "
        "instrument, intent, side, qty, target, order_type, price, stop_price, tif, "
        "signal_price, venue, ts, ts_event, cancels",
        f"{path} line 5: expected one JSON object per line: Input data was truncated",
    ]
    assert msgs[3] == f"{path} line 6: instrument must be set, got nothing"


def test_signals_when_json_numbers_then_exact_decimals(tmp_path: Path) -> None:
    line = (
        '{"signal_id": "a", "strategy": "s", "account": "A", "instrument": "BTC-USD", '
        '"side": "sell", "qty": 0.1, "order_type": "limit", "price": 90000.07, '
        '"signal_price": "90000.1", "ts": "2026-01-01T00:00:00.000000001Z"}'
    )
    (sig,) = load_signals(write(tmp_path / "s.jsonl", line + "\n"), INSTRUMENTS)
    assert (sig.qty, sig.price, sig.signal_price, sig.ts_recv) == (
        1000,
        9_000_007,
        9_000_010,
        T0 + 1,
    )
    assert sig.side is Side.SELL and sig.order_type is OrderType.LIMIT


def test_signals_when_columns_unknown_or_missing_then_file_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "signals.csv", "signal_id,strategy,account,instrument,qtty\n")
    assert signal_problems(path) == [
        f"{path}: column 'qtty' is unknown: expected only signal_id, strategy, account, "
        "instrument, intent, side, qty, target, order_type, price, stop_price, tif, "
        "signal_price, venue, ts, ts_event, cancels",
        f"{path}: column ts is missing: required",
    ]


def test_signals_when_integer_size_precision_then_whole_units(tmp_path: Path) -> None:
    stock = Instrument(
        instrument="ACME",
        asset_class=AssetClass.EQUITY,
        currency="USD",
        price_precision=4,
        size_precision=0,
        venue_symbols={"XNYS": "ACME"},
    )
    path = write(
        tmp_path / "s.csv",
        f"signal_id,strategy,account,instrument,side,qty,ts\na,s,A,ACME,BUY,100,{T0}\n"
        f"b,s,A,ACME,BUY,1.5,{T0}\n",
    )
    with pytest.raises(InputError) as info:
        load_signals(path, (stock,))
    assert info.value.problems == [
        f"{path} row 2 (line 3): qty must be a multiple of 1 (size_precision 0 of ACME), got 1.5"
    ]


def test_market_when_instruments_differ_in_precision_then_each_row_scaled_by_its_own(
    tmp_path: Path,
) -> None:
    stock = Instrument(
        instrument="ACME",
        asset_class=AssetClass.EQUITY,
        currency="USD",
        price_precision=4,
        size_precision=0,
        venue_symbols={"ALPHA": "ACME"},
    )
    path = quotes_csv(
        tmp_path, [f"{T0},BTC-USD,ALPHA,1.5,0.25,1.75,1", f"{T0},ACME,ALPHA,1.5,25,1.75,1"]
    )
    market = MarketInput(path, (*INSTRUMENTS, stock))
    market.check()
    out = pa.Table.from_batches(list(market.batches())).to_pydict()
    assert out["bid_price"] == [150, 15_000]
    assert out["bid_size"] == [2_500, 25]


@settings(max_examples=100)
@given(
    digits=st.integers(min_value=-(10**12), max_value=10**12),
    scale=st.integers(min_value=0, max_value=8),
    places=st.integers(min_value=0, max_value=6),
    style=st.sampled_from(["plain", "exp", "padded"]),
)
def test_decimal_units_when_any_decimal_string_then_exact_or_off_grid(
    digits: int, scale: int, places: int, style: str
) -> None:
    value = Decimal(digits).scaleb(-scale)
    text = {"plain": f"{value:f}", "exp": f"{value:e}", "padded": f"{value:f}".rjust(24)}[style]
    scaled = value.scaleb(places)
    # alone (Arrow's decimal cast when it can), and beside a bad value (the careful parser)
    for column in ([text], [text, "x"]):
        conv = _units(pa.array(column), np.full(len(column), places))
        if scaled == scaled.to_integral_value() and abs(scaled) >= 10**18:
            assert conv.why[0] == 3  # out of range: the loader's documented |units| < 10^18
        elif scaled == scaled.to_integral_value():
            assert (conv.why[0], conv.values[0]) == (0, int(scaled))
        else:
            assert conv.why[0] == 2  # off the grid, never rounded
