"""Every relative link in the README and the docs pages points at a file that exists.

A reader follows these links from the front page into docs/ and between pages; a page that moved
or was renamed leaves a dead link that nothing else notices. Checked: markdown links and images
`[text](target)` / `![alt](target)` outside code (fenced blocks, inline code) and HTML comments,
whose target is not a URL; the path part (before `#`) must exist relative to the page. Anchors
are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def relative_links(markdown: str) -> list[str]:
    """The relative link targets of a markdown text, code and comments left out."""
    text = COMMENT.sub("", FENCE.sub("", markdown))
    text = INLINE_CODE.sub("", text)
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_in_the_readme_and_docs_resolves():
    dead = []
    checked = 0
    for page in _pages():
        for target in relative_links(page.read_text(encoding="utf-8")):
            path = target.split("#", 1)[0]
            checked += 1
            if not (page.parent / path).exists():
                dead.append(f"{page.relative_to(ROOT)}: ({target})")
    assert not dead, "dead links:\n" + "\n".join(dead)
    assert checked >= 10  # the front page links into docs/


def test_the_parser_finds_links_and_skips_code_comments_and_urls():
    md = ("see [a](docs/a.md#x) and ![pic](img/p.png) and [web](https://x.org)\n"
          "[top](#top) `[not](code.md)`\n<!-- [hidden](gone.md) -->\n"
          "```\n[in fence](fence.md)\n```\n")
    assert relative_links(md) == ["docs/a.md#x", "img/p.png"]


def test_a_dead_link_is_reported(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("[gone](missing.md) [here](p.md)\n")
    assert [t for t in relative_links(page.read_text())
            if not (page.parent / t.split("#")[0]).exists()] == ["missing.md"]
