"""`tape tca`: transaction-cost analysis of runs, HTML reports, run comparison, model fit.

Invariants:
- Each RUN is a run directory, a run id under --journals (`tape.cli.resolve_run`), a
  folder holding runs, or a glob; all the runs named are analysed together.
- Bad usage (an unknown --by field, a bad duration, --compare without exactly two RUNs,
  a path that names no run) exits 2 with the argument, what was given and what was
  expected; nothing is written then.
- The terminal shows rich tables; `--html` writes one self-contained file;
  `--fit-fill-model` writes the model's Parquet file and prints its sha256.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from analytics.fill_model import (
    DEFAULT_PRIOR_STRENGTH,
    FillModelError,
    fit_fill_model,
    parse_duration,
    write_fill_model,
)
from analytics.report import (
    compare_frame,
    compare_table,
    html_compare,
    html_report,
    latency_table,
    markout_table,
    quality_table,
)
from analytics.tca import (
    DEFAULT_TIME_BUCKET_NS,
    Tca,
    TcaError,
    aggregate,
    find_runs,
    load_tca,
    parse_by,
)


def _paths(runs: list[str], journals: Path) -> list[Path]:
    """Resolve each RUN: a run directory or run id first, else a folder of runs or a glob
    (as given, then under --journals)."""
    from tape.cli import UsageError, resolve_run

    out: list[Path] = []
    for run in runs:
        try:
            out.append(resolve_run(run, journals))
            continue
        except UsageError:
            pass
        try:
            out += find_runs([run])
        except TcaError as exc:
            try:
                out += find_runs([str(journals / run)])
            except TcaError:
                raise UsageError(f"RUN: {exc}") from None
    return out


def _load(runs: list[str], journals: Path, time_bucket_ns: int) -> Tca:
    from tape.cli import UsageError

    try:
        return load_tca(_paths(runs, journals), time_bucket_ns=time_bucket_ns)
    except TcaError as exc:
        raise UsageError(f"RUN: {exc}") from None


def _write(path: Path, text: str, what: str) -> None:
    from tape.cli import UsageError

    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write ({exc})") from None


def _headline(tca: Tca) -> str:
    ids = ", ".join(r.run_id for r in tca.runs)
    unsealed = [r.run_id for r in tca.runs if r.unsealed]
    text = (
        f"tca: {len(tca.runs)} run(s) ({ids}): {tca.orders.height:,} orders, "
        f"{tca.fills.height:,} fills, {tca.signal_rejects:,} signals rejected before any order"
    )
    if unsealed:
        text += f"; unsealed segments read with the journal reader: {', '.join(unsealed)}"
    return text


def cmd_tca(args: argparse.Namespace, out: Console) -> int:
    """Analyse the runs; print tables, write the report or the model; return the exit code."""
    from tape.cli import UsageError

    try:
        by = parse_by(args.by)
        horizon_ns = parse_duration(args.horizon, "--horizon")
        bucket_ns = parse_duration(args.time_bucket, "--time-bucket")
    except (TcaError, FillModelError) as exc:
        raise UsageError(str(exc)) from None
    if args.prior_strength < 0:
        raise UsageError(f"--prior-strength: expected >= 0, got {args.prior_strength}")
    if args.compare:
        if len(args.runs) != 2:
            raise UsageError(
                f"--compare: expected exactly two RUNs (RUN_A RUN_B), got {len(args.runs)}"
            )
        if args.fit_fill_model is not None:
            raise UsageError("--fit-fill-model: not with --compare (fit on the runs you choose)")
        return _compare(args, out, by, bucket_ns)

    tca = _load(args.runs, args.journals, bucket_ns)
    out.print(_headline(tca))
    shown = by or ["venue"]
    agg = aggregate(tca.orders, shown)
    overall = aggregate(tca.orders)
    out.print(quality_table(agg, shown))
    out.print(quality_table(overall, [], title="fills and costs, all orders"))
    out.print(markout_table(agg, shown))
    out.print(latency_table(agg, shown))
    if args.html is not None:
        _write(args.html, html_report(tca, shown), "--html")
        out.print(f"report written to {args.html}")
    if args.fit_fill_model is not None:
        try:
            cells, info = fit_fill_model(
                tca, horizon_ns=horizon_ns, prior_strength=args.prior_strength
            )
            digest = write_fill_model(args.fit_fill_model, cells, info)
        except FillModelError as exc:
            raise UsageError(f"--fit-fill-model: {exc}") from None
        levels = cells.group_by("level").len().sort("level")
        per_level = ", ".join(f"level {r[0]}: {r[1]}" for r in levels.iter_rows())
        out.print(
            f"fill model written to {args.fit_fill_model}: {cells.height:,} cells ({per_level}) "
            f"from {info.n_orders:,} orders of {', '.join(info.fitted_on)}, horizon "
            f"{args.horizon}, prior strength {info.prior_strength:g}; sha256 {digest}"
        )
    return 0


def _compare(args: argparse.Namespace, out: Console, by: list[str], bucket_ns: int) -> int:
    run_a, run_b = args.runs
    a = _load([run_a], args.journals, bucket_ns)
    b = _load([run_b], args.journals, bucket_ns)
    out.print("A " + _headline(a))
    out.print("B " + _headline(b))
    frame = compare_frame(aggregate(a.orders, by), aggregate(b.orders, by), by)
    out.print(compare_table(frame, by, f"A {run_a}", f"B {run_b}"))
    if by:
        overall = compare_frame(aggregate(a.orders), aggregate(b.orders), [])
        out.print(compare_table(overall, [], f"A {run_a}", f"B {run_b}"))
    if args.html is not None:
        _write(args.html, html_compare(a, b, by, f"A {run_a}", f"B {run_b}"), "--html")
        out.print(f"comparison written to {args.html}")
    return 0


def add_tca_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register `tape tca`."""
    p = sub.add_parser(
        "tca",
        parents=[common],
        help="transaction-cost analysis of runs (tables, HTML report, fill model fit)",
        description="Transaction-cost analysis from run journals: fill rate, slippage vs "
        "signal and arrival mid, implementation shortfall, effective spread, markouts, "
        "rejects, cancels, fees and latency per stage, by the fields of --by.",
    )
    p.add_argument(
        "runs",
        metavar="RUN",
        nargs="+",
        help="run directory or run id, a folder holding runs, or a glob",
    )
    p.add_argument(
        "--by",
        default=None,
        help="comma-separated grouping fields: venue, instrument, strategy, account, "
        "order_type, side, tif, size, time, tod, distance, status, run (default: venue)",
    )
    p.add_argument("--html", type=Path, default=None, help="write a self-contained HTML report")
    p.add_argument(
        "--compare",
        action="store_true",
        help="compare two runs (RUN_A RUN_B) side by side, with the differences",
    )
    p.add_argument(
        "--fit-fill-model",
        type=Path,
        default=None,
        metavar="MODEL",
        help="fit the fill model on the runs and write it as Parquet",
    )
    p.add_argument(
        "--horizon",
        default="10s",
        help="fill model: a fill counts within this time of the order (default 10s)",
    )
    p.add_argument(
        "--prior-strength",
        type=float,
        default=DEFAULT_PRIOR_STRENGTH,
        help=f"fill model: Beta prior strength toward the parent level "
        f"(default {DEFAULT_PRIOR_STRENGTH:g})",
    )
    p.add_argument(
        "--time-bucket",
        default=f"{DEFAULT_TIME_BUCKET_NS // 3_600_000_000_000}h",
        help="width of the `time` grouping (default 1h)",
    )
    p.set_defaults(func=cmd_tca)
