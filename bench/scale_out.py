"""1 process vs N processes of one Bytewax cluster on the same captures, alternating.

Runs ``candlewax bench CAPTURES --venue V --processes P --json`` for P = 1 and P = N in
turn (``--alternations`` times, ``--rounds`` rounds each), and prints per setup the median
and range of frames/s, the ratio of the medians against 1 process, and CPU seconds per
round: all processes together and each process (median). The machine's load average is
printed before and after: on a shared machine it is what limits a cluster most.

    .venv/bin/python bench/scale_out.py \\
        fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz \\
        fixtures/captures/binance/hftbacktest_spot_ethusdt_20240808.txt.gz --venue binance
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson


def bench(captures: list[Path], venue: str, processes: int, rounds: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "candlewax.cli", "bench", *map(str, captures)]
    command += ["--venue", venue, "--processes", str(processes), "--rounds", str(rounds), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def summary(label: str, rounds: list[dict[str, Any]], base: float | None) -> float:
    rates: list[float] = [r["frames_per_s"] for r in rounds]
    median = statistics.median(rates)
    cpu = statistics.median(r["cpu_seconds"] for r in rounds)
    ratio = "1.00" if base is None else f"{median / base:.2f}"
    line = (
        f"{label:12} {median:>10,.0f} frames/s ({min(rates):,.0f} - {max(rates):,.0f})"
        f"  x{ratio}  CPU s/round {cpu:.3f}"
    )
    if rounds[0].get("per_process"):
        count = len(rounds[0]["per_process"])
        each = [
            statistics.median(r["per_process"][p]["cpu_seconds"] for r in rounds)
            for p in range(count)
        ]
        frames = [rounds[0]["per_process"][p]["frames"] for p in range(count)]
        line += "  per process: " + ", ".join(
            f"{c:.3f} s ({f:,} frames)" for c, f in zip(each, frames, strict=True)
        )
    print(line)
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("captures", nargs="+", type=Path)
    parser.add_argument("--venue", required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--alternations", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    runs: dict[int, list[dict[str, Any]]] = {1: [], args.processes: []}
    for _ in range(args.alternations):
        for processes in runs:
            runs[processes] += bench(args.captures, args.venue, processes, args.rounds)["rounds"]
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    base = summary("1 process", runs[1], None)
    summary(f"{args.processes} processes", runs[args.processes], base)


if __name__ == "__main__":
    main()
