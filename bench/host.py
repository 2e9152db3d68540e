"""What a benchmark ran on: CPU model and the instruction sets that decide its speed.

Timings from different sessions come from different machines (an AVX2-only EPYC one day, an
AVX-512 + VNNI one the next: the same onnxruntime forward differs by ~1.8x), so each result
records the CPU beside its numbers, and ratios are only compared within one run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

# The flags that change how fast a CPU forward pass runs (/proc/cpuinfo names).
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "amx_tile", "neon", "asimd")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Model name, family/model and the SPEED_FLAGS present, from /proc/cpuinfo text."""
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block describes them all
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())
    flags = set((first.get("flags") or first.get("Features") or "").split())
    return {"model": first.get("model name", first.get("Processor", "unknown")),
            "family": first.get("cpu family", ""), "model_number": first.get("model", ""),
            "isa": [f for f in SPEED_FLAGS if f in flags]}


def describe(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The host a result was measured on (JSON-friendly)."""
    cpu: dict[str, Any] = {"model": platform.processor() or "unknown", "isa": []}
    with contextlib.suppress(OSError):  # no procfs (macOS, Windows): the platform's name
        cpu = parse_cpuinfo(cpuinfo.read_text())
    return {"machine": platform.machine(), "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "cpu": cpu}


def one_line(host: dict[str, Any]) -> str:
    """'AMD EPYC (family 25 model 17), 2 cores, avx2 fma avx512f ...' for a notes line."""
    cpu = host.get("cpu", {})
    fam = (f" (family {cpu['family']} model {cpu['model_number']})"
           if cpu.get("family") else "")
    isa = " ".join(cpu.get("isa", [])) or "no vector extension listed"
    return f"{cpu.get('model', 'unknown')}{fam}, {host.get('cpu_count')} cores, {isa}"
