"""The model table's bench: its rows are the configs' models, its verdicts follow the numbers,
and the README can quote the table alone."""

from __future__ import annotations

import json

import pytest

from bench import bench_models, quotes
from bench.bench_models import ARCHITECTURES, REPO_ROOT, build_spec
from mtl_training.config import load_config


@pytest.mark.parametrize("entry", [e for e in ARCHITECTURES if e.get("config")],
                         ids=lambda e: e["name"])
def test_a_row_named_after_a_config_is_that_configs_model(entry):
    cfg = load_config(REPO_ROOT / entry["config"])
    assert build_spec(entry["spec"]) == cfg.model.spec()


def _model(name, torch_ms, ort_ms, gflop, realtime=False, node=None):
    m = {"name": name, "label": name, "gflop": gflop, "params_m": 1.0, "realtime": realtime,
         "forward": {t: {"torch": [v / 1000 for v in torch_ms[t]],
                         "onnxruntime": [v / 1000 for v in ort_ms[t]]} for t in (1, 2)}}
    if node:
        m["node_result"] = node
    return m


def _node(e2e, forward):
    return {"end_to_end_ms": {"p50": e2e}, "bare_forward_ms": {"p50": forward},
            "throughput": {"output_hz": 1000 / e2e}, "ratio_end_to_end_over_forward": e2e / forward,
            "ratio_per_frame_over_forward_p50": e2e / forward, "stages_ms": {"forward": forward}}


def test_verdicts_follow_the_numbers_of_the_same_run():
    demo = _model("demo", {1: [1000, 1000], 2: [600, 600]}, {1: [600, 620], 2: [340, 360]}, 69.6)
    fast = _model("rt", {1: [200, 200], 2: [120, 120]}, {1: [55, 57], 2: [60, 62]}, 5.2, True,
                  _node(70.0, 61.0))
    models = [demo, fast]
    summaries = {m["name"]: bench_models._summary(m) for m in models}
    notes, verdicts = bench_models._verdicts(models, summaries)
    v = verdicts["rt"]
    assert v["gflop_met"] and v["ratio_ort_1t"] == pytest.approx(56 / 610)
    assert v["ratio_ort_2t"] == pytest.approx(61 / 350)
    assert v["fps_2t"] == pytest.approx(1000 / 61)
    assert v["node_over_forward"] == pytest.approx(70 / 61)
    line = notes[0]
    assert "1 thread(s) 0.092x" in line and "2 thread(s) 0.174x" in line
    assert line.count("NOT met") == 1  # only the 2-thread ratio misses 0.10
    with_floor = bench_models._verdicts(models, summaries, floor_ms=7.5)
    assert with_floor[1]["rt"]["node_budget_ms"] == pytest.approx(0.15 * 61)
    assert "leaves 9.1 ms for all the node adds" in with_floor[0][0]
    assert "transport floor alone is 7.5 ms" in with_floor[0][0]
    row = bench_models._row(fast, summaries["rt"])
    assert row["ort 2t fps"] == pytest.approx(1000 / 61) and row["node / forward"] > 1.0
    assert bench_models._row(demo, summaries["demo"])["node / forward"] == "-"


def test_a_front_page_can_quote_the_table_alone(tmp_path, monkeypatch):
    (tmp_path / "models.json").write_text(json.dumps(
        {"title": "long title", "table": [{"model": "x", "GFLOP": 5.23456}],
         "notes": ["a long note"]}))
    doc = tmp_path / "README.md"
    doc.write_text("<!-- bench:models table -->\nstale\n<!-- /bench:models -->\n"
                   "<!-- bench:models -->\n<!-- /bench:models -->\n")
    monkeypatch.setattr(quotes, "REPO", tmp_path)
    assert len(quotes.check(tmp_path, ("README.md",))) == 2
    quotes.sync(tmp_path, ("README.md",))
    table_only, full = doc.read_text().split("<!-- /bench:models -->\n")[:2]
    assert "| x | 5.23 |" in table_only and "long title" not in table_only
    assert "a long note" not in table_only
    assert "long title" in full and "- a long note" in full
    assert quotes.check(tmp_path, ("README.md",)) == []
