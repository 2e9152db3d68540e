"""The docs' benchmark tables are the committed JSON's, number for number (bench/quotes.py)."""

from __future__ import annotations

import json

import pytest

from bench import quotes


def test_every_quoted_benchmark_table_matches_its_committed_json():
    assert quotes.check() == []


def test_the_docs_quote_the_issue_benchmarks():
    assert {"backends", "node_latency", "bag_extract"} <= quotes.quoted()


@pytest.fixture
def results(tmp_path):
    (tmp_path / "demo.json").write_text(json.dumps(
        {"title": "t", "table": [{"measure": "x", "p50": 1.23456}], "notes": ["n1"]}))
    return tmp_path


def test_a_stale_quote_is_found_and_refreshed(results, tmp_path, monkeypatch):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- bench:demo -->\n| x | 9.99 |\n<!-- /bench:demo -->\nend\n")
    monkeypatch.setattr(quotes, "REPO", tmp_path)
    problems = quotes.check(results, ("doc.md",))
    assert len(problems) == 1 and "bench:demo" in problems[0]
    assert quotes.sync(results, ("doc.md",)) == [doc]
    text = doc.read_text()
    assert "| x | 1.23 |" in text and "- n1" in text and "9.99" not in text
    assert text.startswith("intro\n") and text.endswith("<!-- /bench:demo -->\nend\n")
    assert quotes.check(results, ("doc.md",)) == []


def test_a_quote_of_an_uncommitted_benchmark_is_reported(results, tmp_path, monkeypatch):
    (tmp_path / "doc.md").write_text("<!-- bench:absent -->\n<!-- /bench:absent -->\n")
    monkeypatch.setattr(quotes, "REPO", tmp_path)
    assert "not committed" in quotes.check(results, ("doc.md",))[0]
