"""TCA reports: rich tables for the terminal and one self-contained HTML file with plots.

Invariants:
- Reports only format what `analytics.tca` computed (per-order tables, `aggregate`,
  `venue_matrix`); no metric is defined here.
- The HTML file stands alone: CSS inline, plots as inline SVG drawn with matplotlib's
  object API (no pyplot, no global backend, no network, no script). Every text that came
  from a journal is HTML-escaped. Nothing reads the clock: the same tables give the same
  report.
- Units as shown: rates in %, costs in bps (positive = worse for us), markouts in bps
  (positive = the mid moved our way), durations in ns/µs/ms/s, notionals in currency.
"""

from __future__ import annotations

import html
import io
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import polars as pl
from rich.table import Table

from analytics.tca import MARKOUT_HORIZONS_NS, STAGES, Tca, aggregate, fmt_ns, venue_matrix

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "COMPARE_METRICS",
    "QUALITY_METRICS",
    "compare_frame",
    "compare_table",
    "html_compare",
    "html_report",
    "latency_table",
    "markout_table",
    "quality_table",
]

# (aggregate column, label, format)
QUALITY_METRICS: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders", "int"),
    ("fills", "fills", "int"),
    ("fill_rate", "fill rate", "pct"),
    ("filled_share", "qty filled", "pct"),
    ("reject_rate", "rejected", "pct"),
    ("cancel_rate", "canceled", "pct"),
    ("slippage_signal_bps", "slip/signal", "bps"),
    ("slippage_arrival_bps", "slip/arrival", "bps"),
    ("shortfall_bps", "shortfall", "bps"),
    ("effective_spread_bps", "eff spread", "bps"),
    ("fees_bps", "fees", "bps"),
)
MARKOUT_METRICS: tuple[tuple[str, str, str], ...] = (
    ("slippage_best_bps", "slip/best mid", "bps"),
    ("is_execution_bps", "IS execution", "bps"),
    ("is_opportunity_bps", "IS opportunity", "bps"),
    ("is_fees_bps", "IS fees", "bps"),
    *((f"markout_{n}_bps", f"markout {n}", "bps") for n, _ in MARKOUT_HORIZONS_NS),
    ("time_to_fill_p50_ns", "time to fill p50", "ns"),
    ("time_to_fill_p95_ns", "time to fill p95", "ns"),
    ("expire_rate", "expired", "pct"),
)
LATENCY_METRICS: tuple[tuple[str, str, str], ...] = tuple(
    (f"{name}_{q}_ns", f"{name.replace('_to_', '→').replace('_', ' ')} {q}", "ns")
    for name, _, _ in STAGES
    for q in ("p50", "p95")
)
COMPARE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("orders", "orders", "int"),
    ("fill_rate", "fill rate", "pct"),
    ("filled_share", "qty filled", "pct"),
    ("reject_rate", "reject rate", "pct"),
    ("cancel_rate", "cancel rate", "pct"),
    ("slippage_signal_bps", "slippage vs signal (bps)", "bps"),
    ("slippage_arrival_bps", "slippage vs arrival (bps)", "bps"),
    ("shortfall_bps", "implementation shortfall (bps)", "bps"),
    ("effective_spread_bps", "effective spread (bps)", "bps"),
    ("markout_10s_bps", "markout 10s (bps)", "bps"),
    ("fees_bps", "fees (bps)", "bps"),
    ("time_to_fill_p50_ns", "time to fill p50", "ns"),
    ("sent_to_ack_p50_ns", "sent→ack p50", "ns"),
)


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "bps":
        return f"{value:+.2f}"
    if kind == "ns":
        return fmt_ns(value)
    return str(value)


def _fmt_diff(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "int":
        return f"{int(value):+,}"
    if kind == "pct":
        return f"{100 * value:+.1f} pp"
    if kind == "ns":
        return ("+" if value >= 0 else "-") + fmt_ns(abs(value))
    return f"{value:+.2f}"


def _key_text(value: Any, field: str) -> str:
    if value is None:
        return "-"
    if field == "time" and isinstance(value, int):
        return _utc(value)
    if field == "size":
        return f"size {value}"
    if field == "tod":
        return f"{int(value):02d}h"
    return str(value)


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    secs, _ = divmod(int(ns), 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(secs))


def _table(
    agg: pl.DataFrame, by: Sequence[str], metrics: Sequence[tuple[str, str, str]], title: str
) -> Table:
    table = Table(title=title)
    for field in by or ["all"]:
        table.add_column(field)
    for _, label, _ in metrics:
        table.add_column(label, justify="right")
    for row in agg.iter_rows(named=True):
        keys = [_key_text(row[f], f) for f in by] if by else ["all"]
        table.add_row(*keys, *(_fmt(row.get(col), kind) for col, _, kind in metrics))
    return table


def quality_table(agg: pl.DataFrame, by: Sequence[str], title: str | None = None) -> Table:
    """Return a rich table of fill rates, costs and markouts per group."""
    what = ", ".join(by) if by else "all orders"
    return _table(agg, by, QUALITY_METRICS, title or f"fills and costs by {what}")


def markout_table(agg: pl.DataFrame, by: Sequence[str], title: str | None = None) -> Table:
    """Return a rich table of shortfall parts, markouts and time to fill per group."""
    what = ", ".join(by) if by else "all orders"
    return _table(
        agg, by, MARKOUT_METRICS, title or f"shortfall, markouts and time to fill by {what}"
    )


def latency_table(agg: pl.DataFrame, by: Sequence[str], title: str | None = None) -> Table:
    """Return a rich table of the latency per stage (p50, p95) per group."""
    what = ", ".join(by) if by else "all orders"
    return _table(agg, by, LATENCY_METRICS, title or f"latency per stage by {what}")


def compare_frame(a: pl.DataFrame, b: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Put two aggregates side by side: one row per (group, metric) with a, b and b - a."""
    keys = list(by)
    rows: list[dict[str, Any]] = []
    ra = {tuple(r[k] for k in keys): r for r in a.iter_rows(named=True)}
    rb = {tuple(r[k] for k in keys): r for r in b.iter_rows(named=True)}
    groups = sorted(set(ra) | set(rb), key=lambda g: tuple("" if v is None else str(v) for v in g))
    for g in groups:
        for col, label, kind in COMPARE_METRICS:
            va = ra.get(g, {}).get(col)
            vb = rb.get(g, {}).get(col)
            diff = vb - va if va is not None and vb is not None else None
            row = dict(zip(keys, g))
            row.update(metric=col, label=label, format=kind, a=va, b=vb, diff=diff)
            rows.append(row)
    schema: dict[str, Any] = {k: a.schema.get(k, pl.String) for k in keys}
    schema.update(metric=pl.String, label=pl.String, format=pl.String, a=pl.Float64, b=pl.Float64)
    schema["diff"] = pl.Float64
    return pl.DataFrame(rows, schema=schema, orient="row")


def compare_table(frame: pl.DataFrame, by: Sequence[str], label_a: str, label_b: str) -> Table:
    """Return a rich table of a `compare_frame`: group, metric, A, B, B - A."""
    table = Table(title=f"{label_a} vs {label_b}" + (f" by {', '.join(by)}" if by else ""))
    for field in by or ["all"]:
        table.add_column(field)
    table.add_column("metric")
    table.add_column(label_a, justify="right")
    table.add_column(label_b, justify="right")
    table.add_column("B - A", justify="right")
    last: tuple[Any, ...] | None = None
    for row in frame.iter_rows(named=True):
        group = tuple(row[k] for k in by)
        shown = [_key_text(row[k], k) for k in by] if group != last else ["" for _ in by]
        if not by:
            shown = ["all" if last is None else ""]
        if last is not None and group != last:
            table.add_section()
        last = group
        kind = row["format"]
        table.add_row(
            *shown,
            row["label"],
            _fmt(row["a"], kind),
            _fmt(row["b"], kind),
            _fmt_diff(row["diff"], kind),
        )
    return table


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;
color:#1b1f24;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f6f8fa}td.k,th.k{text-align:left}
.note{color:#57606a;font-size:.85em;max-width:70em}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots div{flex:0 0 auto}
"""


def _figure(width: float, height: float) -> Figure:
    """A new matplotlib figure (matplotlib is imported here, when a report draws: the
    `tape` commands that import this module start ~0.25 s sooner)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _svg(fig: Figure) -> str:
    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.hashsalt": "tape-tca", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    title: str,
    ylabel: str,
    *,
    log: bool = False,
) -> str:
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (label, values) in enumerate(series):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        ys = [float("nan") if v is None else float(v) for v in values]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    else:
        ax.axhline(0, color="#444", linewidth=0.6)
    if len(series) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _lines(
    xs: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], title: str
) -> str:
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    for label, values in series:
        ys = [float("nan") if v is None else float(v) for v in values]
        ax.plot(list(xs), ys, marker="o", label=label)
    ax.axhline(0, color="#444", linewidth=0.6)
    ax.set_title(title)
    ax.set_ylabel("bps (+ = mid moved our way)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _heatmap(matrix: pl.DataFrame, column: str, title: str, pct: bool) -> str:
    venues = sorted({v for v in matrix["venue"].to_list() if v is not None})
    windows = list(dict.fromkeys(matrix["window"].to_list()))
    values = {(r["venue"], r["window"]): r[column] for r in matrix.iter_rows(named=True)}
    grid = [
        [float("nan") if values.get((v, w)) is None else float(values[(v, w)]) for w in windows]
        for v in venues
    ]
    fig = _figure(1.6 + 1.4 * max(len(windows), 1), 0.9 + 0.45 * max(len(venues), 1))
    ax = fig.add_subplot()
    if venues and windows:
        image = ax.imshow(grid, aspect="auto", cmap="RdYlGn" if pct else "RdYlGn_r")
        fig.colorbar(image, ax=ax)
        for i in range(len(venues)):
            for j in range(len(windows)):
                v = grid[i][j]
                if not math.isnan(v):
                    text = f"{100 * v:.0f}%" if pct else f"{v:+.1f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(windows)), [f"last {w}" for w in windows])
    ax.set_yticks(range(len(venues)), venues)
    ax.set_title(title)
    return _svg(fig)


def _html_table(
    agg: pl.DataFrame, by: Sequence[str], metrics: Sequence[tuple[str, str, str]]
) -> str:
    head = "".join(f'<th class="k">{html.escape(f)}</th>' for f in (by or ["all"]))
    head += "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in metrics)
    rows = []
    for row in agg.iter_rows(named=True):
        keys = [_key_text(row[f], f) for f in by] if by else ["all"]
        cells = "".join(f'<td class="k">{html.escape(k)}</td>' for k in keys)
        cells += "".join(
            f"<td>{html.escape(_fmt(row.get(col), kind))}</td>" for col, _, kind in metrics
        )
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


_NOTES = (
    "Slippage, implementation shortfall and effective spread are in bps, positive = worse "
    "for us. Slippage is the order's fill VWAP against the signal price, the arrival mid "
    "(last quote of its venue at submit) or the best mid across venues; shortfall is "
    "measured against the decision price (signal price, else arrival mid) and includes the "
    "unfilled quantity at the mid when the order ended, and fees. Markouts are the mid "
    "1 s / 10 s / 60 s after each fill against its price, positive = the mid moved our way. "
    "Costs and markouts are weighted by filled notional, shortfall by decision notional; "
    "latencies are medians (p50) and 95th percentiles of journal ts_recv differences."
)


def _runs_html(tca: Tca) -> str:
    counts = {
        r["run_id"]: r for r in tca.orders.group_by("run_id").agg(pl.len()).iter_rows(named=True)
    }
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="k">{html.escape(str(v))}</td>'
            for v in (r.run_id, r.mode, r.status, r.run_dir)
        )
        + f"<td>{counts.get(r.run_id, {}).get('len', 0):,}</td>"
        + "</tr>"
        for r in tca.runs
    )
    head = (
        "".join(f'<th class="k">{h}</th>' for h in ("run", "mode", "status", "journal"))
        + "<th>orders</th>"
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _venue_plots(by_venue: pl.DataFrame) -> list[str]:
    venues = [str(v) for v in by_venue["venue"].to_list()]
    col = by_venue.get_column
    plots = [
        _bars(
            venues,
            [
                ("orders with a fill", [None if v is None else 100 * v for v in col("fill_rate")]),
                ("qty filled", [None if v is None else 100 * v for v in col("filled_share")]),
            ],
            "fill rate by venue",
            "%",
        ),
        _bars(
            venues,
            [
                ("vs signal", col("slippage_signal_bps").to_list()),
                ("vs arrival mid", col("slippage_arrival_bps").to_list()),
                ("shortfall", col("shortfall_bps").to_list()),
                ("effective spread", col("effective_spread_bps").to_list()),
            ],
            "slippage by venue",
            "bps (+ = worse for us)",
        ),
        _lines(
            [n for n, _ in MARKOUT_HORIZONS_NS],
            [
                (v, [r[f"markout_{n}_bps"] for n, _ in MARKOUT_HORIZONS_NS])
                for v, r in zip(venues, by_venue.iter_rows(named=True))
            ],
            "markouts by venue",
        ),
    ]
    stage_names = [name for name, _, _ in STAGES]
    latency = [
        (
            v,
            [None if (x := r[f"{s}_p50_ns"]) is None or x <= 0 else x / 1e6 for s in stage_names],
        )
        for v, r in zip(venues, by_venue.iter_rows(named=True))
    ]
    plots.append(
        _bars(
            [s.replace("_to_", "→").replace("_", " ") for s in stage_names],
            latency,
            "latency per stage (median)",
            "ms (log)",
            log=any(x for _, xs in latency for x in xs),
        )
    )
    return plots


def _matrix_html(matrix: pl.DataFrame) -> str:
    metrics = (
        ("orders", "orders", "int"),
        ("fill_rate", "fill rate", "pct"),
        ("slippage_arrival_bps", "slip vs arrival", "bps"),
        ("shortfall_bps", "shortfall", "bps"),
        ("markout_10s_bps", "markout 10s", "bps"),
        ("sent_to_ack_p50_ns", "sent→ack p50", "ns"),
    )
    windows = list(dict.fromkeys(matrix["window"].to_list()))
    venues = sorted({v for v in matrix["venue"].to_list() if v is not None})
    cells = {(r["venue"], r["window"]): r for r in matrix.iter_rows(named=True)}
    head1 = '<th class="k" rowspan="2">venue</th>' + "".join(
        f'<th colspan="{len(metrics)}">last {html.escape(w)}</th>' for w in windows
    )
    head2 = "".join(f"<th>{label}</th>" for _ in windows for _, label, _ in metrics)
    rows = []
    for v in venues:
        tds = "".join(
            f"<td>{html.escape(_fmt(cells.get((v, w), {}).get(col), kind))}</td>"
            for w in windows
            for col, _, kind in metrics
        )
        rows.append(f'<tr><td class="k">{html.escape(v)}</td>{tds}</tr>')
    return f"<table><tr>{head1}</tr><tr>{head2}</tr>{''.join(rows)}</table>"


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def html_report(tca: Tca, by: Sequence[str] = ("venue",), title: str = "Tape TCA") -> str:
    """Return a self-contained HTML TCA report: tables, plots and the venue matrix."""
    by = list(by)
    overall = aggregate(tca.orders)
    by_venue = aggregate(tca.orders, ["venue"])
    grouped = by_venue if by == ["venue"] else aggregate(tca.orders, by)
    matrix = venue_matrix(tca.orders)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">journal time {_utc(tca.first_ts)} to {_utc(tca.last_ts)}; '
        f"{tca.orders.height:,} orders, {tca.fills.height:,} fills, "
        f"{tca.signal_rejects:,} signals rejected before any order.</p>",
        _runs_html(tca),
        f'<p class="note">{html.escape(_NOTES)}</p>',
        "<h2>All orders</h2>",
        _html_table(overall, [], QUALITY_METRICS),
        _html_table(overall, [], MARKOUT_METRICS),
        _html_table(overall, [], LATENCY_METRICS),
        f"<h2>By {html.escape(', '.join(by) or 'all')}</h2>",
        _html_table(grouped, by, QUALITY_METRICS),
        _html_table(grouped, by, MARKOUT_METRICS),
        _html_table(grouped, by, LATENCY_METRICS),
        "<h2>Venues</h2>",
        '<div class="plots">'
        + "".join(f"<div>{p}</div>" for p in (_venue_plots(by_venue) if by_venue.height else []))
        + "</div>",
        "<h2>Venue performance matrix (journal time before the last order)</h2>",
        _matrix_html(matrix) if matrix.height else "<p>no orders</p>",
    ]
    if matrix.height:
        parts.append(
            '<div class="plots"><div>'
            + _heatmap(matrix, "fill_rate", "fill rate by venue and window", pct=True)
            + "</div><div>"
            + _heatmap(matrix, "slippage_arrival_bps", "slippage vs arrival (bps)", pct=False)
            + "</div></div>"
        )
    return _page(title, "".join(parts))


def html_compare(
    a: Tca, b: Tca, by: Sequence[str], label_a: str, label_b: str, title: str = "Tape TCA compare"
) -> str:
    """Return a self-contained HTML comparison of two sets of runs."""
    by = list(by)
    agg_a, agg_b = aggregate(a.orders, by), aggregate(b.orders, by)
    frame = compare_frame(agg_a, agg_b, by)
    head = "".join(f'<th class="k">{html.escape(f)}</th>' for f in (by or ["all"]))
    head += '<th class="k">metric</th>' + "".join(
        f"<th>{html.escape(x)}</th>" for x in (label_a, label_b, "B - A")
    )
    rows = []
    for row in frame.iter_rows(named=True):
        kind = row["format"]
        keys = [_key_text(row[k], k) for k in by] if by else ["all"]
        rows.append(
            "<tr>"
            + "".join(f'<td class="k">{html.escape(k)}</td>' for k in keys)
            + f'<td class="k">{html.escape(row["label"])}</td>'
            + "".join(
                f"<td>{html.escape(x)}</td>"
                for x in (_fmt(row["a"], kind), _fmt(row["b"], kind), _fmt_diff(row["diff"], kind))
            )
            + "</tr>"
        )
    va, vb = aggregate(a.orders, ["venue"]), aggregate(b.orders, ["venue"])
    venues = sorted(set(va["venue"].to_list()) | set(vb["venue"].to_list()))

    def pick(agg: pl.DataFrame, col: str, scale: float = 1.0) -> list[float | None]:
        got = {r["venue"]: r[col] for r in agg.iter_rows(named=True)}
        return [None if got.get(v) is None else got[v] * scale for v in venues]

    plots = [
        _bars(
            venues,
            [(label_a, pick(va, "fill_rate", 100)), (label_b, pick(vb, "fill_rate", 100))],
            "fill rate by venue",
            "%",
        ),
        _bars(
            venues,
            [(label_a, pick(va, "shortfall_bps")), (label_b, pick(vb, "shortfall_bps"))],
            "implementation shortfall by venue",
            "bps (+ = worse for us)",
        ),
    ]
    body = (
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="note">A = {html.escape(label_a)} ({a.orders.height:,} orders); '
        f"B = {html.escape(label_b)} ({b.orders.height:,} orders).</p>"
        f'<p class="note">{html.escape(_NOTES)}</p>'
        f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        '<div class="plots">' + "".join(f"<div>{p}</div>" for p in plots) + "</div>"
    )
    return _page(title, body)
