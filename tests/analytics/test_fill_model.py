"""The fill model fit: vectorised buckets equal the engine's, Beta smoothing toward the
parent level by hand, the Parquet file round trip and what `load_fill_model` refuses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics import buckets
from analytics.fill_model import (
    CELL_COLUMNS,
    FillModelError,
    fit_cells,
    fit_fill_model,
    load_fill_model,
    order_outcomes,
    parse_duration,
    write_fill_model,
)
from analytics.tca import load_tca
from engine import fillmodel
from engine.fillmodel import ANY, BUCKETS_VERSION, Key, smoothed
from tape.demo import run_demo

INT64 = st.integers(min_value=-(2**62), max_value=2**62)
SMALL = st.integers(min_value=-50, max_value=10_000)


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.none() | SMALL,
            st.none() | SMALL,
            st.none() | SMALL,
            st.integers(min_value=-3, max_value=7),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_touch_distance_when_vectorised_then_equals_engine(rows: list[tuple]) -> None:
    schema = {"buy": pl.Boolean, "price": pl.Int64, "bid": pl.Int64, "ask": pl.Int64}
    df = pl.DataFrame(rows, schema={**schema, "tick": pl.Int64}, orient="row")
    out = df.with_columns(
        buckets.touch_distance_ticks(
            pl.col("buy"), pl.col("price"), pl.col("bid"), pl.col("ask"), pl.col("tick")
        ).alias("d")
    ).with_columns(buckets.distance_bucket(pl.col("d")).alias("b"))
    want = [fillmodel.touch_distance_ticks(*r) for r in rows]
    assert out["d"].to_list() == want
    assert out["b"].to_list() == [fillmodel.distance_bucket(t) for t in want]


@given(st.lists(st.none() | st.integers(min_value=-20, max_value=20), min_size=1))
def test_distance_bucket_when_vectorised_then_equals_engine(ticks: list[int | None]) -> None:
    s = pl.Series("t", ticks, dtype=pl.Int64)
    got = pl.select(buckets.distance_bucket(pl.lit(s))).to_series().to_list()
    assert got == [fillmodel.distance_bucket(t) for t in ticks]


@given(
    st.lists(
        st.tuples(st.integers(min_value=-10, max_value=10**9), st.integers(-2, 500)),
        min_size=1,
        max_size=50,
    )
)
def test_size_bucket_when_vectorised_then_equals_engine(rows: list[tuple[int, int]]) -> None:
    df = pl.DataFrame(rows, schema=["qty", "lot"], orient="row")
    got = df.select(buckets.size_bucket(pl.col("qty"), pl.col("lot"))).to_series().to_list()
    assert got == [fillmodel.size_bucket(q, lot) for q, lot in rows]


@given(st.lists(INT64, min_size=1, max_size=50))
def test_tod_bucket_when_vectorised_then_equals_engine(ts: list[int]) -> None:
    got = pl.select(buckets.tod_bucket(pl.lit(pl.Series(ts, dtype=pl.Int64)))).to_series()
    assert got.to_list() == [fillmodel.tod_bucket(t) for t in ts]


def outcomes(rows: list[tuple[str, str, bool, float | None, int | None]]) -> pl.DataFrame:
    """Orders as (venue, instrument, filled, slip, latency); one side, type, bucket."""
    return pl.DataFrame(
        [
            {
                "venue": v,
                "instrument": i,
                "side": "BUY",
                "order_type": "LIMIT",
                "distance": 0,
                "size": 1,
                "tod": 9,
                "filled": f,
                "slip": s,
                "ratio": 1.0 if f else None,
                "latency": lat,
            }
            for v, i, f, s, lat in rows
        ],
        schema={
            "venue": pl.String,
            "instrument": pl.String,
            "side": pl.String,
            "order_type": pl.String,
            "distance": pl.Int64,
            "size": pl.Int64,
            "tod": pl.Int64,
            "filled": pl.Boolean,
            "slip": pl.Float64,
            "ratio": pl.Float64,
            "latency": pl.Int64,
        },
    )


def test_fit_cells_when_sparse_cell_then_smoothed_toward_parent_level() -> None:
    rows = [("A", "X", True, 2.0, 10)] * 3 + [("A", "X", False, None, 30)]  # A/X 3 of 4
    rows += [("A", "Y", False, None, 20)]  # A/Y: 0 of 1
    rows += [("B", "X", True, 4.0, 5)] * 1 + [("B", "X", False, None, None)] * 4  # 1 of 5
    k = 10.0
    cells = fit_cells(outcomes(rows), k)
    pooled = 4 / 10

    def cell(level: int, venue: str, instrument: str = "*") -> dict[str, object]:
        key = (pl.col("level") == level) & (pl.col("venue") == venue)
        if instrument != "*":
            key &= pl.col("instrument") == instrument
        (row,) = cells.filter(key).iter_rows(named=True)
        return row

    a4 = smoothed(3, 5, pooled, k)
    assert cell(4, "A")["p_fill"] == pytest.approx(a4)
    assert cell(4, "B")["p_fill"] == pytest.approx(smoothed(1, 5, pooled, k))
    a3y = smoothed(0, 1, a4, k)
    assert cell(3, "A", "Y")["p_fill"] == pytest.approx(a3y)
    # finer levels with the same orders keep shrinking toward their parent
    a2y = smoothed(0, 1, a3y, k)
    assert cell(2, "A", "Y")["p_fill"] == pytest.approx(a2y)
    assert cell(0, "A", "Y")["p_fill"] == pytest.approx(smoothed(0, 1, smoothed(0, 1, a2y, k), k))
    # slippage: pooled mean 2.5 over 4 fills; A has 3 fills of 2.0
    a4_slip = (3 * 2.0 + k * 2.5) / (3 + k)
    assert cell(4, "A")["slippage_bps"] == pytest.approx(a4_slip)
    # A/Y saw no fill: its slippage is its parent's
    assert cell(3, "A", "Y")["slippage_bps"] == pytest.approx(a4_slip)
    # latency: the cell's median, or the parent's without any ack
    assert cell(4, "A")["latency_ns"] == 10 and cell(4, "B")["latency_ns"] == 5
    assert cell(3, "A", "Y")["latency_ns"] == 20
    assert (cell(0, "A", "X")["n"], cell(0, "A", "X")["fills"]) == (4, 3)
    assert cells["level"].value_counts().sort("level")["count"].to_list() == [3, 3, 3, 3, 2]
    top = cells.filter(pl.col("level") == 4).row(0, named=True)
    assert (top["instrument"], top["side"], top["distance"], top["tod"]) == ("*", "*", ANY, ANY)


def test_fit_cells_when_prior_strength_zero_then_raw_rates() -> None:
    rows = [("A", "X", True, 1.0, 1), ("A", "X", False, None, 1)]
    cells = fit_cells(outcomes(rows), 0.0)
    assert set(cells["p_fill"].to_list()) == {0.5}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fm")
    run_demo(root, "fm", 5, 400)
    return root / "fm"


def test_fit_fill_model_when_demo_run_then_file_loads_and_counts_add_up(
    demo: Path, tmp_path: Path
) -> None:
    tca = load_tca(demo)
    cells, info = fit_fill_model(tca, horizon_ns=1_000_000_000)
    for level in range(5):
        assert cells.filter(pl.col("level") == level)["n"].sum() == tca.orders.height
    out = order_outcomes(tca, 1_000_000_000)
    assert cells.filter(pl.col("level") == 4)["fills"].sum() == out["filled"].sum()
    path = tmp_path / "model.parquet"
    digest = write_fill_model(path, cells, info)
    model, got = load_fill_model(path)
    assert got == digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.fitted_on == ("fm",) and model.n_orders == tca.orders.height
    assert model.horizon_ns == 1_000_000_000 and model.buckets_version == BUCKETS_VERSION
    assert len(model.cells) == cells.height
    # every order's full key finds its own level-0 cell
    for o in tca.orders.head(20).iter_rows(named=True):
        key = Key(
            o["venue"],
            o["instrument"],
            o["side"],
            o["order_type"],
            o["distance_bucket"],
            o["size_bucket"],
            o["tod"],
        )
        match = model.lookup(key)
        assert match is not None and match.level == 0
    assert model.lookup(Key("NOWHERE")) is None
    meta = pq.read_schema(path).metadata[b"tape.fill_model"]
    assert b'"journals"' in meta and str(demo).encode() in meta


def test_fit_fill_model_when_longer_horizon_then_no_fewer_fills(demo: Path) -> None:
    tca = load_tca(demo)
    short, _ = fit_fill_model(tca, horizon_ns=1_000_000)
    long, _ = fit_fill_model(tca, horizon_ns=60_000_000_000)
    f_short = short.filter(pl.col("level") == 4)["fills"].sum()
    f_long = long.filter(pl.col("level") == 4)["fills"].sum()
    assert f_short < f_long


def rewrite(path: Path, table: pa.Table, meta: bytes | None) -> None:
    table = table.replace_schema_metadata({b"tape.fill_model": meta} if meta else None)
    pq.write_table(table, path)


def test_load_fill_model_when_bad_file_then_clear_error(demo: Path, tmp_path: Path) -> None:
    cells, info = fit_fill_model(load_tca(demo))
    good = tmp_path / "good.parquet"
    write_fill_model(good, cells, info)
    table = pq.read_table(good)
    meta = table.schema.metadata[b"tape.fill_model"]
    bad = tmp_path / "bad.parquet"

    rewrite(bad, table, meta.replace(b'"buckets_version":1', b'"buckets_version":99'))
    with pytest.raises(FillModelError, match="buckets_version 99"):
        load_fill_model(bad)
    rewrite(bad, table.drop_columns(["fill_ratio"]), meta)
    with pytest.raises(FillModelError, match="missing fill_ratio"):
        load_fill_model(bad)
    rewrite(bad, table.set_column(13, "fill_ratio", table["fill_ratio"].cast(pa.string())), meta)
    with pytest.raises(FillModelError, match="column fill_ratio must be double"):
        load_fill_model(bad)
    rewrite(bad, table, None)
    with pytest.raises(FillModelError, match=r"no tape\.fill_model metadata"):
        load_fill_model(bad)
    level4 = table.filter(pc.equal(table["level"], 4))
    broken = level4.set_column(2, "instrument", pa.array(["X"] * level4.num_rows))
    rewrite(bad, broken, meta)
    with pytest.raises(FillModelError, match="row 0: level 4 does not split on instrument"):
        load_fill_model(bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(FillModelError, match="not a Parquet file"):
        load_fill_model(bad)
    assert tuple(table.schema.names) == CELL_COLUMNS


def test_parse_duration_when_units_then_ns_and_bad_text_refused() -> None:
    assert parse_duration("10s") == 10_000_000_000
    assert parse_duration("500ms") == 500_000_000
    assert parse_duration("2m") == 120_000_000_000
    assert parse_duration("1.5h") == 5_400_000_000_000
    assert parse_duration("250us") == 250_000
    for text in ("10", "ten s", "-1s", "0s"):
        with pytest.raises(FillModelError, match="--horizon"):
            parse_duration(text)
