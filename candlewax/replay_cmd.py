"""``candlewax replay``: the full default pipeline over one capture file."""

from __future__ import annotations

import argparse
from typing import Any

from candlewax.config import PipelineConfig, load_config, parse_config


def replay_config(args: argparse.Namespace) -> PipelineConfig:
    operators: dict[str, Any] = {}
    if args.config is not None:
        operators = load_config(args.config).operators.model_dump(mode="json")
    intervals = [i.strip() for i in args.intervals.split(",") if i.strip()]
    if intervals:
        operators.setdefault("ohlcv", {})["intervals"] = intervals
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    data: dict[str, Any] = {
        "name": "replay",
        "sources": [
            {
                "venue": args.venue,
                "symbols": symbols,
                "mode": "replay",
                "capture": str(args.capture),
                "pace": args.pace,
            }
        ],
        "operators": operators,
        "sinks": [{"type": "jsonl", "path": str(args.out)}],
    }
    return parse_config(data, "candlewax replay")


def replay(args: argparse.Namespace) -> int:
    from flows.progress import run_with_progress

    cfg = replay_config(args)
    run_with_progress(cfg, label=f"replaying {args.capture.name}")
    print(f"wrote {args.out}/{{trades,bars,book,status,late,dead_letter}}.jsonl")
    return 0
