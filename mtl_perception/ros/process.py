"""perception_node as a child process: the command line the launch file runs, start and stop.

The demo, the ROS tests, the latency benchmark and `mtl-replay` start a real node the way
launch/perception.launch.py does (executable + --ros-args), so what they measure is what a robot
runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def node_command(model_path: str | Path, params: dict[str, object] | None = None,
                 params_file: str | Path | None = None, remaps: dict[str, str] | None = None,
                 ) -> list[str]:
    """The command line the launch file would run: executable + --ros-args."""
    # The installed console script: on PATH, or beside this interpreter in a virtualenv.
    exe = shutil.which("perception_node") or shutil.which(
        "perception_node", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "mtl_perception.ros.node"]
    cmd += ["--ros-args"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    cmd += ["-p", f"model_path:={model_path}"]
    for k, v in (params or {}).items():
        cmd += ["-p", f"{k}:={_param_text(v)}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


def _param_text(v: object) -> str:
    """A parameter value as `-p name:=value` wants it (YAML booleans)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def start_node(model_path: str | Path, params: dict[str, object] | None = None,
               params_file: str | Path | None = None, remaps: dict[str, str] | None = None,
               log_path: str | Path | None = None) -> subprocess.Popen:
    """Start perception_node as its own process (stdout/stderr to log_path if given)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - lives with proc
    return subprocess.Popen(node_command(model_path, params, params_file, remaps), stdout=out,
                            stderr=subprocess.STDOUT, env=os.environ.copy())


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Ctrl-C first (what a user does), kill if it hangs; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
