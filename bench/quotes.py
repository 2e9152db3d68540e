"""Benchmark tables quoted in the docs, generated from the committed JSON so they cannot drift.

A doc quotes a benchmark by enclosing its section body between two markers:

    <!-- bench:node_latency -->
    ...generated: the title, the table and the notes of bench/results/node_latency.json...
    <!-- /bench:node_latency -->

`<!-- bench:NAME table -->` quotes the table alone (a front page that links to the notes).
`python -m bench` rewrites every such block after a run (`sync`); `check` (run by
test/unit/test_bench_quotes.py) fails when a block differs from what the committed JSON gives,
so a README table is always the committed run's, number for number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.__main__ import DEFAULT_RESULTS, section

REPO = Path(__file__).resolve().parents[1]
# every page a user reads: a block on a new docs page is checked without registering it here
QUOTING_DOCS = ("README.md", *sorted(p.relative_to(REPO).as_posix()
                                     for p in (REPO / "docs").rglob("*.md")))
_BLOCK = re.compile(r"(<!-- bench:(?P<name>[a-z0-9_]+)(?P<part> table)? -->\n)(?P<body>.*?)"
                    r"(<!-- /bench:(?P=name) -->)", re.DOTALL)


def body(name: str, results_dir: Path = DEFAULT_RESULTS, table_only: bool = False) -> str:
    """What a quote of benchmark `name` holds: its results section without the `## name` line
    (`table_only`: the markdown table alone)."""
    path = results_dir / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: quoted in the docs but not committed")
    result = json.loads(path.read_text())
    if table_only:
        return section(name, {"table": result.get("table")}).split("\n", 2)[2]
    return section(name, result).split("\n", 2)[2]


def _quote(m: re.Match[str], results_dir: Path) -> str:
    return body(m.group("name"), results_dir, table_only=bool(m.group("part")))


def _rewrite(text: str, results_dir: Path) -> str:
    return _BLOCK.sub(lambda m: m.group(1) + _quote(m, results_dir) + m.group(5), text)


def _docs(docs: tuple[str, ...]) -> list[tuple[str, Path, str]]:
    """(name, path, text) of each of `docs` that exists."""
    return [(rel, REPO / rel, (REPO / rel).read_text()) for rel in docs if (REPO / rel).is_file()]


def sync(results_dir: Path = DEFAULT_RESULTS, docs: tuple[str, ...] = QUOTING_DOCS
         ) -> list[Path]:
    """Refresh every quote block in `docs` from `results_dir`; returns the files changed."""
    changed = []
    for _, path, old in _docs(docs):
        new = _rewrite(old, results_dir)
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed


def check(results_dir: Path = DEFAULT_RESULTS, docs: tuple[str, ...] = QUOTING_DOCS
          ) -> list[str]:
    """One line per quote block that differs from the committed JSON (empty: all true)."""
    problems = []
    for rel, _, text in _docs(docs):
        for m in _BLOCK.finditer(text):
            try:
                want = _quote(m, results_dir)
            except FileNotFoundError as exc:
                problems.append(f"{rel}: {exc}")
                continue
            if m.group("body") != want:
                problems.append(f"{rel}: the bench:{m.group('name')} quote differs from "
                                f"{results_dir.name}/{m.group('name')}.json (run python -m "
                                "bench.quotes to refresh it)")
    return problems


def quoted(docs: tuple[str, ...] = QUOTING_DOCS) -> set[str]:
    """Names of the benchmarks the docs quote."""
    return {m.group("name") for _, _, text in _docs(docs) for m in _BLOCK.finditer(text)}


if __name__ == "__main__":  # python -m bench.quotes: refresh the docs from the committed JSON
    for p in sync():
        print(f"updated {p.relative_to(REPO)}")
