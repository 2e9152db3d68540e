"""`python -m bench` plumbing: discovery, JSON + README tables, earlier sections kept."""

from __future__ import annotations

import json

from bench.__main__ import discover, markdown_table, write_readme
from bench.host import describe, one_line, parse_cpuinfo


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


ZEN4 = """processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 25
model		: 17
model name	: AMD EPYC
flags		: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni avx512_bf16

processor	: 1
model name	: something else
flags		: fpu
"""


def test_host_records_cpu_model_and_speed_flags(tmp_path):
    """Results from different machines must say which CPU (AVX2 vs AVX-512 + VNNI) ran them."""
    info = tmp_path / "cpuinfo"
    info.write_text(ZEN4)
    host = describe(info)
    assert host["cpu"] == {"model": "AMD EPYC", "family": "25", "model_number": "17",
                           "isa": ["avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                   "avx512_bf16"]}
    assert one_line(host).startswith("AMD EPYC (family 25 model 17), ")
    assert "avx512_vnni" in one_line(host)
    avx2_only = parse_cpuinfo(ZEN4.replace(" avx512f avx512bw avx512_vnni avx512_bf16", ""))
    assert avx2_only["isa"] == ["avx2", "fma"]


def test_host_without_cpuinfo_still_describes_the_machine(tmp_path):
    host = describe(tmp_path / "absent")
    assert host["cpu_count"] and host["machine"] and "model" in host["cpu"]
