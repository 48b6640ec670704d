"""The determinism contract as a lint: engine/ and sim/ read no clock and no entropy.

A line that must read the clock (the live runner's injected clock) says so with a
`# clock-ok` comment. Strings and comments are not scanned, so docstrings may name what
they forbid. Iterating a set held in a variable cannot be seen here; reviews catch that.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("engine", "sim")
ALLOW = "# clock-ok"

FORBIDDEN: dict[str, re.Pattern[str]] = {
    "wall clock (time)": re.compile(
        r"\btime\.(time|time_ns|monotonic|monotonic_ns|perf_counter|perf_counter_ns|"
        r"process_time|process_time_ns)\b"
    ),
    "wall clock (from time import)": re.compile(
        r"\bfrom\s+time\s+import\b.*\b(time|time_ns|monotonic|perf_counter)\b"
    ),
    "wall clock (datetime)": re.compile(r"\b(datetime|date)\.(now|utcnow|today)\b"),
    "random uuid": re.compile(r"\buuid[14]\b"),
    "os entropy": re.compile(r"\bos\.(urandom|getrandom)\b"),
    "unseeded module random": re.compile(r"(?<![\w.])random\.(?!Random\b)[a-z_]\w*\s*\("),
    "unseeded numpy random": re.compile(
        r"\b(np|numpy)\.random\.(?!(default_rng|Generator|PCG64|SeedSequence)\b)\w+\s*\("
        r"|\bdefault_rng\(\s*\)"
    ),
    "random.SystemRandom": re.compile(r"\bSystemRandom\b"),
    "secrets": re.compile(r"\bsecrets\b"),
    "set iteration": re.compile(r"\bfor\b.+\bin\s+(frozenset|set)\s*\("),
    "set literal iteration": re.compile(r"\bfor\b.+\bin\s+\{[^:{}]*\}"),
    "set to sequence": re.compile(r"\b(list|tuple|enumerate)\s*\(\s*(frozenset|set)\s*\("),
}


def code_lines(source: str) -> list[str]:
    """Return the source's lines with strings and comments blanked out."""
    lines = source.splitlines(keepends=True)
    blank = [list(line) for line in lines]
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in (tokenize.STRING, tokenize.COMMENT):
            continue
        (srow, scol), (erow, ecol) = tok.start, tok.end
        for row in range(srow, erow + 1):
            chars = blank[row - 1]
            start = scol if row == srow else 0
            end = ecol if row == erow else len(chars)
            for col in range(start, end):
                if chars[col] != "\n":
                    chars[col] = " "
    return ["".join(chars) for chars in blank]


def scan(source: str) -> list[tuple[int, str, str]]:
    """Return (line number, rule, line) for every forbidden use without `# clock-ok`."""
    raw = source.splitlines()
    found = []
    for number, code in enumerate(code_lines(source), start=1):
        if ALLOW in raw[number - 1]:
            continue
        for rule, pattern in FORBIDDEN.items():
            if pattern.search(code):
                found.append((number, rule, raw[number - 1].strip()))
    return found


def source_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def test_determinism_scan_when_engine_and_sim_scanned_then_clean() -> None:
    problems = [
        f"{path.relative_to(ROOT)}:{number}: {rule}: {line}"
        for path in source_files()
        for number, rule, line in scan(path.read_text())
    ]
    assert not problems, (
        "non-deterministic code in engine/ or sim/ (time is an input, randomness a seeded "
        "parameter, sets are never iterated; mark a deliberate exception with "
        "'# clock-ok'):\n" + "\n".join(problems)
    )


def test_determinism_scan_when_files_listed_then_engine_core_included() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in source_files()}
    assert {"engine/core.py", "engine/orders.py", "engine/positions.py"} <= names


@pytest.mark.parametrize(
    ("line", "rule"),
    [
        ("now = time.time()", "wall clock (time)"),
        ("now = time.time_ns()", "wall clock (time)"),
        ("t = time.monotonic()", "wall clock (time)"),
        ("t = time.perf_counter_ns()", "wall clock (time)"),
        ("from time import perf_counter", "wall clock (from time import)"),
        ("d = datetime.now()", "wall clock (datetime)"),
        ("d = datetime.datetime.utcnow()", "wall clock (datetime)"),
        ("d = date.today()", "wall clock (datetime)"),
        ("oid = uuid.uuid4().hex", "random uuid"),
        ("from uuid import uuid4", "random uuid"),
        ("b = os.urandom(8)", "os entropy"),
        ("x = random.random()", "unseeded module random"),
        ("x = random.choice(venues)", "unseeded module random"),
        ("rng = random.SystemRandom()", "random.SystemRandom"),
        ("x = np.random.rand(3)", "unseeded numpy random"),
        ("np.random.seed(1)", "unseeded numpy random"),
        ("rng = np.random.default_rng()", "unseeded numpy random"),
        ("import secrets", "secrets"),
        ("for v in set(venues):", "set iteration"),
        ("ids = [o for o in frozenset(orders)]", "set iteration"),
        ("for v in {'a', 'b'}:", "set literal iteration"),
        ("ids = list(set(orders))", "set to sequence"),
    ],
)
def test_determinism_scan_when_forbidden_line_added_then_flagged(line: str, rule: str) -> None:
    snippet = f"def f():\n    {line}\n"
    assert (2, rule) in {(number, found) for number, found, _ in scan(snippet)}


@pytest.mark.parametrize(
    "line",
    [
        "now = time.time_ns()  # clock-ok: the live runner's clock",
        "rng = random.Random(seed)",
        "rng = np.random.default_rng(seed)",
        "for v in sorted(set(venues)):",
        "for k in {'a': 1}:",
        "seen = trade_id in self.trade_ids",
        "doc = 'never call time.time() or uuid4'",
        "x = 1  # random.random() would break replay",
        "timer = self.timers.next_timer_id()",
    ],
)
def test_determinism_scan_when_allowed_line_then_not_flagged(line: str) -> None:
    assert scan(f"def f():\n    {line}\n") == []


def test_determinism_scan_when_forbidden_call_in_docstring_then_not_flagged() -> None:
    assert scan('"""Never call\ntime.time() here."""\nx = 1\n') == []
