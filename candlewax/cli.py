"""The ``candlewax`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson

from candlewax import __version__
from candlewax.bench_cmd import add_bench_parser, run_bench
from candlewax.cluster_cmd import add_cluster_args
from candlewax.config import ConfigError, load_config, parse_config

_EPILOG = """\
examples:
  candlewax demo                                  # recorded Binance+OKX over a local simulator
  candlewax validate examples/live.yaml           # check a pipeline file, start nothing
  candlewax run examples/live.yaml                # live Binance + OKX
  candlewax run pipeline.yaml -p 2                # a 2-process cluster on this machine
  candlewax run pipeline.yaml -a h0:2101,h1:2101 -i 1   # process 1 of a cluster
  candlewax replay fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz \\
      --venue binance --out out/btc --intervals 1s,1m
  candlewax replay CAPTURE --venue binance --out out/btc --ws 127.0.0.1:8765 --pace 10x
  candlewax simulate --venue binance --capture CAPTURE --port 9443
  candlewax schema > schema.json                  # the output contract as JSON Schema

Environment variables override the YAML: CANDLEWAX__OPERATORS__BOOK__DEPTH=10,
CANDLEWAX__SOURCES__0__URL=ws://127.0.0.1:9443 ('__' separates path parts).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candlewax",
        description="Declarative real-time crypto market data: exchange WebSockets -> "
        "normalized trades, order books and OHLCV bars -> your sinks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"candlewax {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the pipeline described by a YAML file")
    run.add_argument("file", type=Path, help="pipeline YAML (see examples/)")
    run.add_argument("--workers", type=int, help="worker threads (overrides 'workers:')")
    add_cluster_args(run)

    val = sub.add_parser("validate", help="check a pipeline YAML without running it")
    val.add_argument("file", type=Path)

    sub.add_parser("schema", help="print the JSON Schema of every output record")

    rep = sub.add_parser(
        "replay",
        help="run the full default pipeline over a capture file into a JSONL directory",
        description="Replays a recorded capture (hftbacktest, cryptofeed or candlewax recorder "
        "format) through the same parsers and operators as live, writing trades.jsonl, "
        "bars.jsonl, book.jsonl, status.jsonl, late.jsonl and dead_letter.jsonl to --out.",
    )
    rep.add_argument("capture", type=Path, help="capture file")
    rep.add_argument("--venue", required=True, help="venue the capture was recorded from")
    rep.add_argument("--out", required=True, type=Path, help="output directory")
    rep.add_argument("--intervals", default="1m", help="bar intervals, comma separated (1s,1m)")
    rep.add_argument(
        "--symbols",
        default="",
        help="replay only these unified symbols, comma separated, e.g. SUSHI/USDT:USDT "
        "(default: every symbol of the capture)",
    )
    rep.add_argument("--config", type=Path, help="YAML whose operators section to use")
    rep.add_argument("--pace", default="max", help="max, recorded or <N>x")
    rep.add_argument(
        "--kafka",
        metavar="HOST:PORT",
        help="also publish to Kafka (market.norm.*, market.raw.<venue>, market.dlq)",
    )
    rep.add_argument(
        "--redis", metavar="URL", help="also write to Redis (latest state, streams, pub/sub)"
    )
    rep.add_argument(
        "--ws",
        metavar="HOST:PORT",
        help="also serve the records (and raw frames) on ws://HOST:PORT/stream, with "
        "/status, /metrics, /snapshot on the same port (docs/fanout.md)",
    )
    rep.add_argument(
        "--linger",
        type=float,
        metavar="SECONDS",
        help="with --ws: keep serving this long after the replay ends (default: until Ctrl-C)",
    )

    demo = sub.add_parser(
        "demo",
        help="run the pipeline live against the embedded exchange simulator",
        description="Starts the exchange simulator on 127.0.0.1 serving bundled recordings of "
        "Binance (BTC/USDT, ETH/USDT) and OKX (BTC/USDT), connects the live sources to it "
        "exactly as to the real venues, and writes JSONL and Parquet to --out.",
    )
    demo.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory")
    demo.add_argument(
        "--pace", default="20x", help="replay pace of the simulator (max, recorded, <N>x)"
    )
    demo.add_argument("--quiet", action="store_true", help="no console bars")

    add_bench_parser(sub)

    sim = sub.add_parser(
        "simulate", help="serve a capture as a local exchange (see --help)", add_help=False
    )
    sim.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 2 on a user-caused error (one line on stderr: its cause and
    fix); an unexpected exception is a bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    try:
        return _dispatch(argv)
    except BrokenPipeError:
        # `candlewax schema | head`: the reader left; that is not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        from candlewax.preflight import user_error

        problem = user_error(exc)
        if problem is None:
            raise
        if isinstance(problem, ConfigError):
            # Names its source (file or command) and every problem, like validate does.
            print(_config_error_text(problem), file=sys.stderr)
        else:
            print(f"candlewax {command}: {problem}", file=sys.stderr)
        return 2


def _config_error_text(exc: ConfigError) -> str:
    """A config error with one problem on one line; several stay one per line."""
    lines = str(exc).splitlines()
    if len(lines) == 2 and lines[1].startswith("  "):
        return f"{lines[0]}: {lines[1].strip()}"
    return str(exc)


def _run(args: argparse.Namespace) -> int:
    from candlewax.cluster_cmd import check_processes, cluster_of, environment, launch
    from candlewax.preflight import preflight
    from flows.runner import recovery_settings, run_pipeline

    processes = check_processes(args)
    cluster = None if processes is not None else cluster_of(args, environment())
    cfg = load_config(args.file)
    if args.workers is not None:
        data = cfg.model_dump()
        data["workers"] = args.workers
        cfg = parse_config(data, f"{args.file} (--workers)", env={})
    preflight(cfg)
    if processes is not None and processes > 1:
        recovery_settings(cfg)  # the store exists before any process looks for it
        extra = [] if args.workers is None else ["--workers", str(args.workers)]
        return launch(args.file, processes, extra)
    if cluster is None:
        run_pipeline(cfg)
    else:
        run_pipeline(cfg, cluster.addresses, cluster.index)
    return 0


def _dispatch(argv: list[str]) -> int:
    if argv[:1] == ["simulate"]:
        # The simulator owns its flags (and --help); hand them over untouched.
        from simulator.cli import main as simulate_main

        return simulate_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "validate":
        cfg = load_config(args.file)
        print(f"{args.file}: OK ({len(cfg.sources)} source(s), {len(cfg.sinks)} sink(s))")
        return 0
    if args.command == "schema":
        from candlewax.schema import json_schema

        sys.stdout.write(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "replay":
        from candlewax.replay_cmd import replay

        return replay(args)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "demo":
        from candlewax.demo import run_demo

        return run_demo(args.out, args.pace, quiet=args.quiet)
    return 1


if __name__ == "__main__":
    sys.exit(main())
