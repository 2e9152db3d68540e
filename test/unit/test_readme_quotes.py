"""The README quotes the committed results pages exactly, so its numbers cannot drift from them.

A quote is written «like this» in a README paragraph that names its page(s) as
`docs/results/<name>.md`; it must occur verbatim (whitespace folded, since the README wraps
lines) in one of those pages. A result that is not quoted this way is not a README number.
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


def test_every_quote_in_the_readme_is_verbatim_in_the_page_it_names():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    checked = 0
    for para in _paragraphs(readme):
        quotes = QUOTE.findall(para)
        if not quotes:
            continue
        pages = sorted(set(PAGE.findall(para)))
        assert pages, f"a quote without the page it comes from: {quotes[0]!r}"
        texts = [_fold((ROOT / p).read_text(encoding="utf-8")) for p in pages]
        for q in quotes:
            assert any(_fold(q) in t for t in texts), f"«{q}» is in none of {pages}"
            checked += 1
    assert checked >= 5  # the study sections quote their pages


def test_the_check_catches_a_drifted_number():
    page = "| τ = 0.9 | 0.212 ± 0.026 |"
    para = "(`docs/results/x.md`) keeps «0.211 ± 0.026» of pixels"
    assert not any(_fold(q) in _fold(page) for q in QUOTE.findall(para))
    assert PAGE.findall(para) == ["docs/results/x.md"]
