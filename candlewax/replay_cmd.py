"""``candlewax replay``: the full default pipeline over one capture file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from candlewax.config import ConfigError, PipelineConfig, WebsocketSink, load_config, parse_config
from candlewax.preflight import PreflightError, UserError, preflight

# How the user named each sink type: preflight messages quote the option, not sinks[i].
_OPTION_OF_SINK = {"jsonl": "--out", "kafka": "--kafka", "redis": "--redis", "websocket": "--ws"}


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
    # Kafka and Redis sinks with default settings, next to the JSONL directory.
    if getattr(args, "kafka", None):
        data["sinks"].append({"type": "kafka", "brokers": args.kafka})
    if getattr(args, "redis", None):
        data["sinks"].append({"type": "redis", "url": args.redis})
    if getattr(args, "ws", None):
        host, port = ws_address(args.ws)
        data["sinks"].append({"type": "websocket", "host": host, "port": port, "raw": True})
    return parse_config(data, "candlewax replay")


def ws_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[IPv6]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--ws {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]") or "0.0.0.0", int(port)


def replay(args: argparse.Namespace) -> int:
    from flows.progress import run_with_progress

    if not args.capture.exists():  # before the config, which would say it in two lines
        raise PreflightError(
            f"capture {str(args.capture)!r} does not exist: pass a capture file or a "
            "candlewax recording directory"
        )
    cfg = replay_config(args)
    labels = {f"sinks[{i}]": _OPTION_OF_SINK.get(s.type, s.type) for i, s in enumerate(cfg.sinks)}
    preflight(cfg, {"sources[0]": "capture", **labels})
    ws = next((sink for sink in cfg.sinks if isinstance(sink, WebsocketSink)), None)
    if ws is None:
        run_with_progress(cfg, label=f"replaying {args.capture.name}")
    else:
        _replay_served(cfg, ws, args)
    check_symbols_found(cfg.sources[0].symbols, args.capture)
    print(f"wrote {args.out}/{{trades,bars,book,status,late,dead_letter}}.jsonl")
    if getattr(args, "kafka", None):
        print(f"published to kafka {args.kafka} (market.norm.*, market.raw.{args.venue})")
    if getattr(args, "redis", None):
        print(f"wrote to redis {args.redis} (candlewax:* keys)")
    return 0


def _replay_served(cfg: PipelineConfig, ws: WebsocketSink, args: argparse.Namespace) -> None:
    """The server starts before the replay (clients may connect first) and keeps the
    latest state for snapshots after it, for ``--linger`` seconds or until Ctrl-C."""
    from flows.progress import run_with_progress
    from sinks.fanout.threaded import acquire, release

    try:
        server = acquire(ws)
    except OSError as exc:
        raise ConfigError(f"--ws {args.ws}: cannot listen: {exc.strerror or exc}") from None
    try:
        print(f"serving {server.url}  (status: {server.http_url}/status)", flush=True)
        run_with_progress(cfg, label=f"replaying {args.capture.name}")
        linger = args.linger
        until = "Ctrl-C" if linger is None else f"{linger:g}s"
        print(f"replay finished; still serving {server.url} for {until}", flush=True)
        deadline = None if linger is None else time.monotonic() + linger
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        release(server)


def check_symbols_found(symbols: list[str], capture: Path) -> None:
    """Every ``--symbols`` entry had frames in the capture: a name that matched nothing
    (``BTC/USDT`` for the perpetual ``BTC/USDT:USDT``) is a mistake worth exit 2."""
    from flows import inputs

    if not symbols:
        return
    kept: set[str] = set()
    held: set[str] = set()
    for stats in inputs.replay_progress.values():
        kept.update(stats.kept_symbols)
        held.update(stats.kept_symbols, stats.filtered_symbols)
    missing = [s for s in symbols if s not in kept]
    if missing:
        raise UserError(
            f"--symbols {','.join(missing)}: not in {capture} (it holds "
            f"{', '.join(sorted(held)) or 'no symbol'}); use those names; outputs were "
            f"written for {', '.join(sorted(kept)) or 'no symbol'}"
        )
