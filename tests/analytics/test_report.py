"""TCA reports: the HTML stands alone and escapes journal text; tables and comparisons
show the aggregates' numbers."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from analytics.report import (
    compare_frame,
    compare_table,
    html_compare,
    html_report,
    latency_table,
    markout_table,
    quality_table,
)
from analytics.tca import aggregate, load_tca
from engine.config import EngineConfig
from engine.journal import JournalWriter
from engine.messages import (
    AssetClass,
    Instrument,
    OrderFilled,
    OrderType,
    QuoteTick,
    Side,
    Signal,
    SubmitOrder,
    TimeInForce,
)
from engine.runner import new_manifest
from tape.demo import run_demo

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    run_demo(root, "rep", 5, 300)
    return root / "rep"


def test_html_report_when_demo_run_then_self_contained_with_plots(demo: Path) -> None:
    tca = load_tca(demo)
    page = html_report(tca, ["venue", "instrument"])
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 6  # fill rate, slippage, markouts, latency, 2 heatmaps
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    for needle in ("fill rate by venue", "slippage by venue", "latency per stage", "ALPHA"):
        assert needle in page
    assert "Venue performance matrix" in page and "last week" in page


def test_html_report_when_journal_text_has_markup_then_escaped(tmp_path: Path) -> None:
    inst = Instrument(
        instrument="X",
        asset_class=AssetClass.EQUITY,
        currency="USD",
        price_precision=2,
        size_precision=0,
        venue_symbols={"V": "X"},
    )
    config = EngineConfig(run_id="evil", instruments=(inst,))
    with JournalWriter(tmp_path, new_manifest(config, mode="sim"), fsync="none") as j:
        j.append(
            QuoteTick(
                ts_recv=1,
                instrument="X",
                venue="V",
                bid_price=99,
                bid_size=1,
                ask_price=101,
                ask_size=1,
            )
        )
        s = j.append(
            Signal(
                ts_recv=2,
                signal_id="s",
                strategy=EVIL,
                account="A",
                instrument="X",
                side=Side.BUY,
                qty=1,
            )
        )
        j.append(
            SubmitOrder(
                ts_recv=2,
                order_id="o",
                venue="V",
                instrument="X",
                account="A",
                strategy=EVIL,
                side=Side.BUY,
                qty=1,
                order_type=OrderType.MARKET,
                tif=TimeInForce.IOC,
                signal_id="s",
            ),
            s,
        )
        j.append(OrderFilled(ts_recv=3, order_id="o", venue="V", trade_id="t", price=101, qty=1))
    page = html_report(load_tca(tmp_path / "evil"), ["strategy"])
    assert EVIL not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_compare_frame_when_two_aggregates_then_b_minus_a_per_group() -> None:
    a = pl.DataFrame({"venue": ["X", "Y"], "orders": [10, 4], "fill_rate": [0.5, 1.0]})
    b = pl.DataFrame({"venue": ["X", "Z"], "orders": [12, 3], "fill_rate": [0.75, 0.0]})
    frame = compare_frame(a, b, ["venue"])
    rows = {(r["venue"], r["metric"]): r for r in frame.iter_rows(named=True)}
    assert rows["X", "orders"]["diff"] == 2 and rows["X", "fill_rate"]["diff"] == 0.25
    assert rows["Y", "orders"]["b"] is None and rows["Y", "orders"]["diff"] is None
    assert rows["Z", "fill_rate"]["a"] is None and rows["Z", "fill_rate"]["b"] == 0.0
    console = Console(width=200, record=True)
    console.print(compare_table(frame, ["venue"], "A run1", "B run2"))
    text = console.export_text()
    assert "A run1" in text and "B - A" in text and "+25.0 pp" in text and "+2" in text


def test_tables_when_aggregates_then_formatted_numbers(demo: Path) -> None:
    agg = aggregate(load_tca(demo).orders, ["venue"])
    console = Console(width=250, record=True)
    for table in (quality_table(agg, ["venue"]), markout_table(agg, ["venue"])):
        console.print(table)
    console.print(latency_table(agg, ["venue"]))
    text = console.export_text()
    alpha = agg.filter(pl.col("venue") == "ALPHA").row(0, named=True)
    assert f"{100 * alpha['fill_rate']:.1f}%" in text
    assert f"{alpha['slippage_arrival_bps']:+.2f}" in text
    assert "sent→ack p50" in text and "ms" in text


def test_html_compare_when_two_runs_then_table_and_plots(demo: Path, tmp_path: Path) -> None:
    run_demo(tmp_path, "other", 6, 300)
    page = html_compare(load_tca(demo), load_tca(tmp_path / "other"), ["venue"], "A rep", "B other")
    assert page.count("<svg") == 2 and "B - A" in page and "A rep" in page
    assert "<script" not in page
