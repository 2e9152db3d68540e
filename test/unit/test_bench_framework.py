"""`python -m bench` plumbing: discovery, JSON + README tables, earlier sections kept."""

from __future__ import annotations

import json

from bench.__main__ import discover, markdown_table, write_readme


def test_discovers_benchmark_modules():
    assert "node_latency" in discover()


def test_readme_tables_from_json_keep_sections_without_json(tmp_path):
    (tmp_path / "README.md").write_text("# old\n\n## other_bench\n\n| a |\n|---|\n| 1 |\n")
    (tmp_path / "node_latency.json").write_text(json.dumps(
        {"title": "t", "table": [{"measure": "x", "p50": 1.23456}], "notes": ["n1"]}))
    text = write_readme(tmp_path).read_text()
    assert "## other_bench" in text and "## node_latency" in text
    assert "| x | 1.23 |" in text and "- n1" in text


def test_markdown_table_columns_are_the_union_of_keys():
    table = markdown_table([{"a": 1}, {"b": "z"}])
    assert table.splitlines()[0] == "| a | b |" and "|  | z |" in table
