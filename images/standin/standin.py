"""Shared helpers of the SPARC stand-in servers (copied into every stand-in image).

Stand-ins answer the same protocols as the real SPARC services so that the example profile and the
agent's probes can be exercised on a machine without NVIDIA images or GPUs.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def log(name: str, msg: str) -> None:
    # stdout, line-buffered: podman's log driver (journald/k8s-file) picks it up at once
    print(f"[{name}] {msg}", flush=True)


def setup(name: str) -> None:
    """Exit on SIGTERM/SIGINT (python as PID 1 would ignore them) and honour STANDIN_START_DELAY."""

    def _stop(signum: int, _frame: object) -> None:
        log(name, f"signal {signum}: exiting")
        sys.exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # lets tests imitate a slow service (e.g. Riva loading models) without a different image
    delay = float(os.environ.get("STANDIN_START_DELAY", "0") or 0)
    if delay > 0:
        log(name, f"start delay {delay}s")
        time.sleep(delay)
    gpu = os.environ.get("FAKE_GPU")
    if gpu:
        log(name, f"FAKE_GPU={gpu}")
