"""Where a study ran, as its results page states it (the hardware a wall time belongs to)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> str:
    """One phrase: CPU model and cores, GPU if torch sees one, torch threads and versions."""
    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")
    return (f"`{platform.machine()}` {cpu_model()} ({os.cpu_count()} cores, shared with other "
            f"work){gpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
            f"Python {sys.version.split()[0]}")
