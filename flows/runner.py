"""Run a pipeline in this process, with a clean Ctrl-C.

Ctrl-C (or SIGTERM) does not kill the engine mid-batch: it sets
``flows.inputs.STOP``, the sources end their partitions, and the end-of-stream
flows through every operator (open bars are flushed) and every sink (files are
closed) before the run returns. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from bytewax.run import cli_main
from bytewax.testing import run_main

from candlewax.config import PipelineConfig
from flows import inputs
from flows.pipeline import build_flow


def _install_stop_handlers() -> list[tuple[int, Any]]:
    if threading.current_thread() is not threading.main_thread():
        return []
    previous: list[tuple[int, Any]] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if inputs.STOP.is_set():
            raise KeyboardInterrupt
        inputs.STOP.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous.append((sig, signal.signal(sig, handler)))
    return previous


def run_pipeline(cfg: PipelineConfig) -> None:
    """Build and run the dataflow until every source ends (or a stop signal)."""
    inputs.STOP.clear()
    flow = build_flow(cfg)
    previous = _install_stop_handlers()
    try:
        if cfg.workers == 1:
            run_main(flow)  # type: ignore[no-untyped-call]
        else:
            cli_main(flow, workers_per_process=cfg.workers)  # type: ignore[no-untyped-call]
    finally:
        for sig, old in previous:
            signal.signal(sig, old)
