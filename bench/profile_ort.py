"""Where an onnxruntime forward pass spends its time, per operator kind, encoder vs decoder.

`python -m bench.profile_ort [NAME] [--threads N] [--runs R]` exports one `bench_models`
architecture (default lean-40, the real-time student) at 640x480 exactly as the model table does,
runs it R times in a session set up as OnnxRuntimeBackend's (ORT_ENABLE_ALL, one inter-op thread,
no spinning) with onnxruntime's profiler on, and prints milliseconds per run for each
(part, operator kind): convolutions split into dense / depthwise, kernel and stride, as they are
after onnxruntime's fusions (NCHWc layout). Not a `bench_*` module: it writes no results JSON;
docs/models.md ("Where the forward time goes") quotes one run.
`--spinning` instead times the demo student and lean-40 with onnxruntime's intra-op spinning
off (the runtime's setting) and on, interleaved, and prints the paired ratios.

The split encoder / decoder is by execution order: the decoder starts at its first operator, the
1x1 lateral convolution that reads the stride-32 tap (its weight is [channels, 320, 1, 1]);
onnxruntime runs the nodes in topological order, and the encoder's nodes all come first.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_models import ARCHITECTURES, HEIGHT, WIDTH, _prepare

STRIDE32_CHANNELS = 320  # EfficientNet-Lite0/1's stride-32 tap: the decoder's first input


def _options(threads: int, spinning: bool = False) -> object:
    """OnnxRuntimeBackend's session options (spinning off there)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    o.inter_op_num_threads = 1
    o.intra_op_num_threads = threads
    o.log_severity_level = 3
    o.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return o


def _session(path: Path, threads: int, profile_prefix: str, optimized: Path) -> object:
    import onnxruntime as ort

    o = _options(threads)
    o.enable_profiling = True
    o.profile_file_prefix = profile_prefix
    o.optimized_model_filepath = str(optimized)  # the fused graph: what the profile names
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _kinds(optimized: Path) -> tuple[dict[str, str], str | None]:
    """Node name -> operator kind in the optimised graph, and the decoder's first node."""
    import onnx

    graph = onnx.load(str(optimized)).graph
    dims = {i.name: tuple(i.dims) for i in graph.initializer}
    kinds: dict[str, str] = {}
    first_decoder = None
    for n in graph.node:
        a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
        kind = n.op_type
        if n.op_type in ("Conv", "FusedConv"):
            k = a.get("kernel_shape", [1, 1])
            dense = "depthwise" if a.get("group", 1) > 1 else "dense"
            kind = f"Conv {dense} {k[0]}x{k[1]} s{a.get('strides', [1])[0]}"
            weight = dims.get(n.input[1], ()) if len(n.input) > 1 else ()
            if first_decoder is None and weight[1:2] == (STRIDE32_CHANNELS,):
                first_decoder = n.name
        kinds[n.name] = kind
    return kinds, first_decoder


def profile(name: str, threads: int, runs: int) -> list[tuple[str, str, float]]:
    """[(part, kind, ms per run)], largest first, for architecture `name` at 640x480."""
    entries = [e for e in ARCHITECTURES if e["name"] == name]
    if not entries:
        raise SystemExit(f"bench.profile_ort: unknown architecture '{name}' "
                         f"(bench_models has: {', '.join(e['name'] for e in ARCHITECTURES)})")
    with tempfile.TemporaryDirectory(prefix="profile_ort_") as tmp:
        work = Path(tmp)
        ready, skipped = _prepare(entries, work)
        if not ready:
            raise SystemExit(f"bench.profile_ort: {skipped[0]}")
        optimized = work / "optimized.onnx"
        session = _session(ready[0]["onnx"], threads, str(work / "profile"), optimized)
        x = np.random.default_rng(0).standard_normal((1, 3, HEIGHT, WIDTH)).astype(np.float32)
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)  # first run: allocations and kernel selection
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        kinds, first_decoder = _kinds(optimized)
    totals: collections.Counter[tuple[str, str]] = collections.Counter()
    part, n_runs = "encoder", 0  # events in the order written; runs = model_run events
    for e in events:
        if e.get("cat") == "Session" and e["name"] == "model_run":
            n_runs += 1  # written when a run ends: the next node is the encoder's again
            part = "encoder"
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        if node == first_decoder:
            part = "decoder"
        totals[(part, kinds.get(node, e["args"].get("op_name", "?")))] += e["dur"]
    return [(p, k, us / n_runs / 1000.0) for (p, k), us in totals.most_common()]


def compare_spinning(threads: int, rounds: int) -> dict[str, dict[bool, list[float]]]:
    """Seconds per forward of the demo student and lean-40, spinning off and on, interleaved
    round by round in one process (load drift hits all four sessions alike)."""
    import onnxruntime as ort

    names = ("demo", "lean-40")
    with tempfile.TemporaryDirectory(prefix="profile_ort_") as tmp:
        ready, _ = _prepare([e for e in ARCHITECTURES if e["name"] in names], Path(tmp))
        x = np.random.default_rng(0).standard_normal((1, 3, HEIGHT, WIDTH)).astype(np.float32)
        live = []
        for m in ready:
            for spin in (False, True):
                s = ort.InferenceSession(str(m["onnx"]), _options(threads, spin),
                                         providers=["CPUExecutionProvider"])
                feed = {s.get_inputs()[0].name: x}
                s.run(None, feed)
                s.run(None, feed)
                live.append((m["name"], spin, s, feed))
        times: dict[str, dict[bool, list[float]]] = {n: {False: [], True: []} for n in names}
        for _ in range(rounds):
            for name, spin, s, feed in live:
                t = time.perf_counter()
                s.run(None, feed)
                times[name][spin].append(time.perf_counter() - t)
    return times


def _print_spinning(threads: int, rounds: int) -> None:
    t = compare_spinning(threads, rounds)
    for name, by_spin in t.items():
        off, on = (1000 * float(np.median(by_spin[s])) for s in (False, True))
        pairs = np.median(np.array(by_spin[True]) / np.array(by_spin[False]))
        print(f"{name}: {threads} thread(s), spinning off {off:.1f} ms, on {on:.1f} ms "
              f"(on / off per round {pairs:.3f})")
    for spin in (False, True):
        r = np.median(np.array(t["lean-40"][spin]) / np.array(t["demo"][spin]))
        print(f"lean-40 / demo, spinning {'on' if spin else 'off'}: {r:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", default="lean-40")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--spinning", action="store_true",
                        help="instead: demo vs lean-40 forward, intra-op spinning off vs on")
    args = parser.parse_args()
    if args.spinning:
        _print_spinning(args.threads, args.runs)
        return
    rows = profile(args.name, args.threads, args.runs)
    total = sum(ms for *_, ms in rows)
    print(f"{args.name}, onnxruntime, {args.threads} thread(s), 640x480: {total:.1f} ms of "
          "operators per run")
    for part, kind, ms in rows:
        print(f"  {part:8s} {kind:26s} {ms:6.2f} ms {100 * ms / total:5.1f} %")
    for part in ("encoder", "decoder"):
        ms = sum(m for p, _, m in rows if p == part)
        print(f"  {part:8s} {'all':26s} {ms:6.2f} ms {100 * ms / total:5.1f} %")


if __name__ == "__main__":
    main()
