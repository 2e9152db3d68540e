"""`python -m bench [NAME ...]`: run every bench/bench_*.py (or the named ones) and tabulate.

Contract for a benchmark module `bench/bench_<name>.py`: a function `run(results_dir: Path) -> dict`
that returns JSON-serialisable results. Optional keys the table understands:
  "title": one line naming what was measured and on what;
  "table": list of row dicts (columns = union of keys), shown as the markdown table;
  "notes": list of strings printed under the table.
Without "table", the scalar top-level entries become a two-column table.
Each result is written to results_dir/<name>.json; results_dir/README.md collects every table
(a benchmark not run this time keeps its section from the README's previous version).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.host import describe
from mtl_training.report import markdown_table as report_table

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_RESULTS = BENCH_DIR / "results"


def discover() -> list[str]:
    return sorted(p.stem[len("bench_"):] for p in BENCH_DIR.glob("bench_*.py"))


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    return report_table(rows, cell=_cell)


def section(name: str, result: dict[str, Any]) -> str:
    rows = result.get("table")
    if not rows:
        rows = [{"metric": k, "value": v} for k, v in result.items()
                if isinstance(v, int | float | str) and k not in ("title",)]
    parts = [f"## {name}", ""]
    if result.get("title"):
        parts += [result["title"], ""]
    parts += [markdown_table(rows), ""]
    parts += [f"- {n}" for n in result.get("notes", [])]
    return "\n".join(parts).rstrip() + "\n"


def _old_sections(readme: Path) -> dict[str, str]:
    """`## name` blocks of an earlier README, kept for benchmarks that have no JSON here."""
    if not readme.is_file():
        return {}
    blocks = readme.read_text().split("\n## ")[1:]
    return {b.split("\n", 1)[0].strip(): "## " + b.rstrip() + "\n" for b in blocks}


def write_readme(results_dir: Path) -> Path:
    out = results_dir / "README.md"
    sections = _old_sections(out)
    for path in sorted(results_dir.glob("*.json")):
        sections[path.stem] = section(path.stem, json.loads(path.read_text()))
    text = ("# Benchmark results\n\nWritten by `make bench` (`python -m bench`); one JSON file "
            "per benchmark beside this file.\n\n"
            + "\n".join(sections[name] for name in sorted(sections)))
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of "
                        f"{', '.join(discover())})")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="output folder (default bench/results)")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"Unknown benchmark {', '.join(unknown)} (available: "
                     f"{', '.join(discover())})")
    args.results.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        start = time.time()
        try:
            module = importlib.import_module(f"bench.bench_{name}")
            result = module.run(args.results)
        except Exception:  # one failing benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(name)
            continue
        if "host" not in result:  # bench_models describes it itself, for its notes
            result["host"] = describe()
        result.setdefault("seconds", round(time.time() - start, 1))
        (args.results / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
        print(section(name, result), flush=True)
    readme = write_readme(args.results)
    print(f"[bench] tables: {readme}")
    if args.results.resolve() == DEFAULT_RESULTS.resolve():  # the committed run: docs quote it
        from bench.quotes import sync

        for path in sync(args.results):
            print(f"[bench] quotes refreshed: {path}")
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
