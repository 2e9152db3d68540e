"""The README and the docs pages quote the committed results pages exactly, so numbers cannot drift.

A quote is written «like this» in a paragraph that names its page(s) as
`docs/results/<name>.md`; it must occur verbatim (whitespace folded, since the docs wrap lines)
in one of those pages. A result that is not quoted this way is not a README or docs number. The
rule follows the numbers wherever they move: README.md and every docs/*.md page are checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUOTE = re.compile(r"«([^»]+)»")
PAGE = re.compile(r"docs/results/[\w.-]+\.md")


def _fold(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def _quoting_pages() -> list[Path]:
    """README.md and every docs page that is not itself a results page."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_quote_is_verbatim_in_the_results_page_it_names():
    per_file: dict[str, int] = {}
    for path in _quoting_pages():
        name = path.relative_to(ROOT).as_posix()
        per_file[name] = 0
        for para in _paragraphs(path.read_text(encoding="utf-8")):
            quotes = QUOTE.findall(para)
            if not quotes:
                continue
            pages = sorted(set(PAGE.findall(para)))
            assert pages, f"{name}: a quote without the page it comes from: {quotes[0]!r}"
            missing = [p for p in pages if not (ROOT / p).is_file()]
            assert not missing, f"{name}: quotes pages that do not exist: {missing}"
            texts = [_fold((ROOT / p).read_text(encoding="utf-8")) for p in pages]
            for q in quotes:
                assert any(_fold(q) in t for t in texts), f"{name}: «{q}» is in none of {pages}"
                per_file[name] += 1
    assert per_file["README.md"] >= 5, per_file  # the front page quotes the studies' verdicts


def test_the_check_catches_a_drifted_number():
    page = "| τ = 0.9 | 0.212 ± 0.026 |"
    para = "(`docs/results/x.md`) keeps «0.211 ± 0.026» of pixels"
    assert not any(_fold(q) in _fold(page) for q in QUOTE.findall(para))
    assert PAGE.findall(para) == ["docs/results/x.md"]
