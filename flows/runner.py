"""Run a pipeline in this process, with a clean Ctrl-C.

Ctrl-C (or SIGTERM) does not kill the engine mid-batch: it sets
``flows.inputs.STOP``, the sources end their partitions, and the end-of-stream
flows through every operator (open bars are flushed) and every sink (files are
closed) before the run returns. A second Ctrl-C aborts at once.
"""

from __future__ import annotations

import signal
import threading
from datetime import timedelta
from types import FrameType
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main

from candlewax.config import PipelineConfig
from candlewax.preflight import UserError
from flows import inputs
from flows.cluster import SINGLE, Place
from flows.outputs import close_open_writers
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


def run_pipeline(
    cfg: PipelineConfig, addresses: list[str] | None = None, process_id: int = 0
) -> None:
    """Build and run the dataflow until every source ends (or a stop signal); with
    ``addresses``, as process ``process_id`` of that cluster (flows/cluster.py)."""
    inputs.STOP.clear()
    place = Place(process_id, len(addresses)) if addresses else SINGLE
    flow = build_flow(cfg, place=place)
    previous = _install_stop_handlers()
    try:
        # Process 0 creates a missing recovery store; the others find it (or route their
        # snapshots to it): two processes creating one store at once could clash.
        epoch, recovery = recovery_settings(cfg, create=place.index == 0)
        if cfg.workers == 1 and not addresses:
            run_main(flow, epoch_interval=epoch, recovery_config=recovery)  # type: ignore[no-untyped-call]
        else:
            try:
                cli_main(  # type: ignore[no-untyped-call]
                    flow,
                    workers_per_process=cfg.workers,
                    process_id=process_id if addresses else None,
                    addresses=addresses,
                    epoch_interval=epoch,
                    recovery_config=recovery,
                )
            except BaseException as exc:  # pyo3's PanicException is a BaseException
                if addresses and " thread panic" in str(exc):
                    # Timely's network threads panic when a peer's connection breaks.
                    raise UserError(
                        f"process {process_id} lost its connection to another process of "
                        "the cluster (it stopped or crashed); restart every process (with "
                        "recovery: they resume from the last snapshot)"
                    ) from exc
                raise
    finally:
        for sig, old in previous:
            signal.signal(sig, old)
        close_open_writers()  # after an abort (second Ctrl-C) files still get closed


def recovery_settings(
    cfg: PipelineConfig, create: bool = True
) -> tuple[timedelta | None, RecoveryConfig | None]:
    """Epoch length and Bytewax recovery store of ``recovery:`` (created on first use
    where ``create``)."""
    if cfg.recovery is None:
        return None, None
    directory = cfg.recovery.dir
    directory.mkdir(parents=True, exist_ok=True)
    if create and not any(directory.glob("part-*.sqlite3")):
        init_db_dir(directory, 1)  # type: ignore[no-untyped-call]
    backup = timedelta(seconds=cfg.recovery.backup_interval_s)
    store = RecoveryConfig(directory, backup)  # type: ignore[no-untyped-call]
    return timedelta(seconds=cfg.recovery.snapshot_interval_s), store
