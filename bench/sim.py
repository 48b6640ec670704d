"""Sim benchmark: Tape's sim runs against NautilusTrader and hftbacktest on the same data.

Run `python bench/sim.py [--quick]` (`--quick`: the 1M-tick size only; the full run adds
5M). Prints a table per size, the ratios against the issue's targets and how the order
counts agree, then one JSON line with the figures (the last line of output).

Data: one instrument's synthetic quotes (random-walk mid, one-tick spread, random sizes,
1 ms apart; seeded numpy), written once per size to a cache directory (default
`$TMPDIR/tape-bench-sim`; see bench/peers/common.py): an Arrow IPC file in
`sim.market.MARKET_SCHEMA` for Tape (NautilusTrader's QuoteTicks are built from it) and
hftbacktest's own event array.

Workloads (decisions on every 1,000th tick: rows 499, 1499, ...; one lot per order,
buying on even decisions and selling on odd ones; 0.1 ms order latency each way on
every engine; no fees):
- W0: market data only.
- W1: a limit order at the touch at each decision, cancelling the previous one first if
  it is still open.
- W2: a market order at each decision.
- callback (Tape): W1 decided by a per-tick strategy callback shown every quote.
- subscribe (NautilusTrader): a subscribed strategy that does nothing per tick; Tape's
  callback mode is compared with it. A Nautilus strategy sees ticks only through a
  subscription, so its W1 and W2 are per-tick callbacks too: "subscribe" is the cost of
  that dispatch alone, and W1 adds the order logic and the resting orders to it.
See bench/peers/tape_workloads.py, nautilus.py and hftbacktest_peer.py for exactly how
each engine runs them. Each (engine, workload, size) runs alone in its own process, one
at a time. "ticks/s" is ticks over the engine's run (Tape: `SimRun.run`, streaming the
file and journaling every input, the journal on local disk with fsync "none";
NautilusTrader: `BacktestEngine.run` over QuoteTicks already in memory; hftbacktest:
building the backtester, which loads its data file, and the jitted loop, compiled
beforehand); "cpu s" is the child's CPU time over the same span (all its threads: when
other work shares the machine, it shows how much of "run s" was waiting). "peak MB" is
the child's own peak RSS, everything it loaded included (`VmHWM`: on Linux `ru_maxrss`
would also count the parent's size at the fork; see `common.peak_rss_mb`). Each figure is
the fastest of `--repeats` runs (default 3: this machine's timings vary by up to a third
from run to run), with the highest peak RSS of them; the runs must agree on the counts.

Tape's per-event modules run compiled when `make native` has built the current source
(see engine/native.py), else as pure Python: the note column and
`tape_engine` in the JSON say which.

The peers run when installed (`uv pip install -e ".[bench]"`: nautilus-trader 1.221.0,
hftbacktest 2.4.4); otherwise Tape runs alone and the peers are reported skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# `python bench/sim.py` puts bench/ first on sys.path, where this very file would shadow
# the `sim` package: put the repository root there instead, and bench/ (for `peers`) last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))
sys.path.append(str(BENCH))

from peers import common  # noqa: E402

ENGINES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    # engine: (module under bench/peers, distribution that must be installed, workloads)
    "tape": ("tape_workloads", None, ("W0", "W1", "W2", "callback")),
    "nautilus": ("nautilus", "nautilus_trader", ("W0", "subscribe", "W1", "W2")),
    "hftbacktest": ("hftbacktest_peer", "hftbacktest", ("W0", "W1", "W2")),
}
DISTRIBUTIONS = {"nautilus": "nautilus-trader", "hftbacktest": "hftbacktest"}
TARGETS = {  # the targets
    "w1_vs_nautilus": (">=", 20.0),
    "w1_vs_hftbacktest": (">=", 1.5),
    "w1_rss_vs_lighter_peer": ("<=", 0.5),
    "callback_vs_nautilus": (">=", 2.0),
}
CHILD_TIMEOUT_S = 3_600

Result = dict[str, Any]


def label(ticks: int) -> str:
    return f"{ticks / 1e6:g}m" if ticks >= 1_000_000 else f"{ticks // 1000}k"


def installed_peers() -> tuple[list[str], dict[str, str]]:
    """The peers that can run here, and a reason for each one that cannot."""
    ok, skipped = [], {}
    for engine, (_, module, _) in ENGINES.items():
        if module is None:
            continue
        if importlib.util.find_spec(module) is None:
            skipped[engine] = f"{DISTRIBUTIONS[engine]} not installed"
        else:
            ok.append(engine)
    return ok, skipped


def run_child(engine: str, workload: str, ticks: int, cache: Path) -> Result:
    """Run one (engine, workload, size) in its own process; return its JSON line."""
    module = ENGINES[engine][0]
    env = dict(os.environ)
    # The repository root before bench/, where bench/sim.py would shadow the `sim` package.
    path = [str(REPO), str(BENCH), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
    cmd = [sys.executable, "-m", f"peers.{module}", "--workload", workload]
    cmd += ["--ticks", str(ticks), "--cache", str(cache)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"engine": engine, "workload": workload, "ticks": ticks, "error": "timed out"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        return {
            "engine": engine,
            "workload": workload,
            "ticks": ticks,
            "error": f"exit {proc.returncode}: {last.strip()}",
        }
    result: Result = json.loads(lines[-1])
    return result


def best_of(engine: str, workload: str, ticks: int, cache: Path, repeats: int) -> Result:
    """Run a child `repeats` times; keep the fastest run, the highest peak RSS of all, and
    say so if the runs did not agree on orders, fills and cancels (they are seeded)."""
    runs = [run_child(engine, workload, ticks, cache) for _ in range(repeats)]
    good = [r for r in runs if "error" not in r]
    if not good:
        return runs[0]
    best = dict(max(good, key=lambda r: r["ticks_per_s"]))
    best["all_ticks_per_s"] = [r["ticks_per_s"] for r in good]
    best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in good)
    if len({(r["orders"], r["fills"], r["cancels"]) for r in good}) > 1:
        best["error"] = "runs disagree on orders/fills/cancels: not deterministic"
    return best


def results_table(ticks: int, results: list[Result]) -> Table:
    table = Table(title=f"sim benchmark: {ticks:,} quotes, one instrument (best of the runs)")
    for col in ("engine", "workload"):
        table.add_column(col)
    for col in ("ticks/s", "run s", "cpu s", "orders", "fills", "cancels", "peak MB", "setup s"):
        table.add_column(col, justify="right")
    table.add_column("note")
    for r in results:
        if "error" in r:
            table.add_row(r["engine"], r["workload"], *["-"] * 8, f"FAILED: {r['error'][:100]}")
            continue
        note = ""
        if r["engine"] == "tape":
            note = f"journal {r['journal_entries'] / 1e6:.2f}M entries, {r['journal_mb']:.0f} MB"
            note += ", compiled" if r["compiled"] else ", pure Python"
        elif r.get("ticks_seen", r["ticks"]) not in (r["ticks"], r["ticks"] - 1):
            note = f"saw {r['ticks_seen']:,} ticks"
        table.add_row(
            r["engine"],
            r["workload"],
            f"{r['ticks_per_s']:,.0f}",
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['orders']:,}",
            f"{r['fills']:,}",
            f"{r['cancels']:,}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['setup_s']:.1f}",
            note,
        )
    return table


def find(results: list[Result], engine: str, workload: str) -> Result | None:
    for r in results:
        if r["engine"] == engine and r["workload"] == workload and "error" not in r:
            return r
    return None


def ratios(results: list[Result]) -> dict[str, float]:
    """The issue's ratios, where both sides ran."""
    out: dict[str, float] = {}
    w1 = find(results, "tape", "W1")
    cb = find(results, "tape", "callback")
    nt_w1 = find(results, "nautilus", "W1")
    nt_sub = find(results, "nautilus", "subscribe")
    hbt_w1 = find(results, "hftbacktest", "W1")
    if w1 and nt_w1:
        out["w1_vs_nautilus"] = w1["ticks_per_s"] / nt_w1["ticks_per_s"]
    if w1 and hbt_w1:
        out["w1_vs_hftbacktest"] = w1["ticks_per_s"] / hbt_w1["ticks_per_s"]
    peers_rss = [r["peak_rss_mb"] for r in (nt_w1, hbt_w1) if r]
    if w1 and peers_rss:
        out["w1_rss_vs_lighter_peer"] = w1["peak_rss_mb"] / min(peers_rss)
    if cb and nt_sub:
        out["callback_vs_nautilus"] = cb["ticks_per_s"] / nt_sub["ticks_per_s"]
    return out


def ratio_table(ticks: int, found: dict[str, float]) -> Table:
    table = Table(title=f"Tape against the peers at {ticks:,} quotes (the issue's targets)")
    for col in ("ratio", "value", "target", "met"):
        table.add_column(col, justify="right" if col != "ratio" else "left")
    for name, (op, bound) in TARGETS.items():
        if name not in found:
            table.add_row(name, "-", f"{op} {bound:g}", "not run")
            continue
        value = found[name]
        met = value >= bound if op == ">=" else value <= bound
        table.add_row(name, f"{value:.2f}", f"{op} {bound:g}", "yes" if met else "NO")
    return table


AGREEMENT_NOTES = {
    "W1": (
        "W1 fills and cancels follow one rule on every engine: a resting limit fills "
        "(whole, one lot) when the opposite touch reaches its price (Tape's L1 venue, "
        "Nautilus's L1 matching core, and hftbacktest's exchange, whose risk-averse queue "
        "model fills at the touch only through trades, of which this data has none); it is "
        "cancelled when still open at the next decision. With 0.1 ms latency under the 1 ms "
        "quote spacing, every order reaches its venue before the next quote on every engine."
    ),
    "W2": "W2: every market order fills whole at the touch on every engine (one lot).",
}


def agreement(results: list[Result]) -> list[str]:
    """Say how orders, fills and cancels agree across engines, per workload."""
    lines = []
    for workload, peers_of in (("W1", ("W1", "callback")), ("W2", ("W2",))):
        counts = {}
        for r in results:
            if "error" not in r and r["workload"] in peers_of:
                name = r["engine"] if r["workload"] == workload else f"{r['engine']} callback"
                counts[name] = (r["orders"], r["fills"], r["cancels"])
        if not counts:
            continue
        shown = ", ".join(f"{k} {o:,}/{f:,}/{c:,}" for k, (o, f, c) in counts.items())
        same = len(set(counts.values())) == 1
        verdict = "identical" if same else "DIFFER"
        lines.append(f"{workload} orders/fills/cancels: {shown}: {verdict}")
        if not same:
            base_name, base = next(iter(counts.items()))
            for name, c in counts.items():
                if c != base:
                    parts = [
                        f"{what} {x - y:+,}"
                        for what, x, y in zip(("orders", "fills", "cancels"), c, base)
                        if x != y
                    ]
                    lines.append(f"  {name} against {base_name}: " + ", ".join(parts))
        lines.append("  " + AGREEMENT_NOTES[workload])
    return lines


def main(argv: list[str] | None = None) -> None:
    """Generate the data, run every (engine, workload, size), print tables and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 1M-tick size")
    parser.add_argument(
        "--ticks", type=int, action="append", help="run this size instead (repeatable)"
    )
    parser.add_argument("--no-peers", action="store_true", help="run Tape only")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each (engine, workload, size); the fastest counts (default 3)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tape-bench-sim",
        help="where the generated data is kept between runs (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120), markup=False)
    sizes = args.ticks or ([1_000_000] if args.quick else [1_000_000, 5_000_000])
    if args.no_peers:
        peers, skipped = [], {e: "--no-peers" for e in DISTRIBUTIONS}
    else:
        peers, skipped = installed_peers()
    engines = ["tape", *peers]
    versions = {e: importlib.metadata.version(DISTRIBUTIONS[e]) for e in peers}
    if peers:
        console.print("peers: " + ", ".join(f"{e} {v}" for e, v in versions.items()))
    for engine, why in skipped.items():
        hint = "" if why == "--no-peers" else " (install with: uv pip install -e '.[bench]')"
        console.print(f"peer {engine} skipped: {why}{hint}")

    figures: dict[str, Any] = {"quick": args.quick, "sizes": sizes}
    figures["peers"] = versions if peers else "skipped"
    if skipped:
        figures["peers_skipped"] = skipped
    for n, ticks in enumerate(sizes):
        started = time.perf_counter()
        written = common.ensure_cache(args.cache, ticks, hbt="hftbacktest" in peers)
        if written:
            console.print(
                f"data: wrote {len(written)} cache file(s) of {ticks:,} quotes to {args.cache} "
                f"in {time.perf_counter() - started:.1f} s"
            )
        results: list[Result] = []
        for engine in engines:
            for workload in ENGINES[engine][2]:
                r = best_of(engine, workload, ticks, args.cache, args.repeats)
                results.append(r)
                if "error" in r:
                    console.print(f"  {engine} {workload} {label(ticks)}: FAILED {r['error']}")
                else:
                    rates = ", ".join(f"{x:,.0f}" for x in r["all_ticks_per_s"])
                    console.print(
                        f"  {engine} {workload} {label(ticks)}: best {r['ticks_per_s']:,.0f} "
                        f"ticks/s of {rates}; peak RSS {r['peak_rss_mb']:,.0f} MB"
                    )
        console.print(results_table(ticks, results))
        found = ratios(results)
        if peers:
            console.print(ratio_table(ticks, found))
        for line in agreement(results):
            console.print(line)

        suffix = "" if n == 0 else f"_{label(ticks)}"
        for key, workload in (
            ("w0", "W0"),
            ("w1", "W1"),
            ("w2", "W2"),
            ("callback", "callback"),
        ):
            r = find(results, "tape", workload)
            if r and "error" not in r:
                figures[f"tape_engine{suffix}"] = r["engine_mode"]
                figures[f"{key}_ticks_per_s{suffix}"] = round(r["ticks_per_s"])
                figures[f"{key}_peak_rss_mb{suffix}"] = round(r["peak_rss_mb"], 1)
        for key, value in found.items():
            figures[f"{key}{suffix}"] = round(value, 3)
        for r in results:
            if "error" in r:
                figures[f"{r['engine']}_{r['workload'].lower()}_{label(ticks)}_error"] = r["error"]
                continue
            stem = f"{r['engine']}_{r['workload'].lower()}_{label(ticks)}"
            figures[f"{stem}_ticks_per_s"] = round(r["ticks_per_s"])
            figures[f"{stem}_peak_rss_mb"] = round(r["peak_rss_mb"], 1)
            if r["workload"] != "W0" and r["workload"] != "subscribe":
                figures[f"{stem}_orders_fills_cancels"] = [r["orders"], r["fills"], r["cancels"]]
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
