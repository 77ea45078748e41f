"""Run a pipeline with a rich progress line (frames replayed, rate)."""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from candlewax.config import PipelineConfig
from flows import inputs
from flows.runner import run_pipeline


def _frames_read() -> int:
    return sum(stats.frames for stats in inputs.replay_progress.values())


def run_with_progress(cfg: PipelineConfig, label: str = "replaying") -> None:
    console = Console(stderr=True)
    inputs.replay_progress.clear()
    done = threading.Event()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[frames]:,} frames  {task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        console=console,
        transient=not console.is_terminal,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, frames=0, rate=0.0)
        start = time.monotonic()

        def update() -> None:
            while not done.wait(0.25):
                frames = _frames_read()
                rate = frames / max(time.monotonic() - start, 1e-9)
                progress.update(task, frames=frames, rate=rate)

        thread = threading.Thread(target=update, daemon=True)
        thread.start()
        try:
            run_pipeline(cfg)
        finally:
            done.set()
            thread.join()
    frames = _frames_read()
    elapsed = time.monotonic() - start
    console.print(
        f"{label}: {frames:,} frames in {elapsed:.1f}s ({frames / max(elapsed, 1e-9):,.0f}/s)"
    )
    for stats in inputs.replay_progress.values():
        if stats.malformed:
            console.print(f"[yellow]{stats.summary()}")
