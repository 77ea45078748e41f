"""``candlewax simulate``: serve a capture as a local exchange (any venue of
:mod:`simulator.venues`), with faults. Venue modules add their own flags."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from candlewax.preflight import PreflightError, check_capture
from simulator.faults import Faults
from simulator.server import Simulator
from simulator.venues import venue_classes, venue_names
from sources.replay import CaptureError, parse_pace

EPILOG = """\
examples:
  candlewax simulate --venue binance \\
      --capture fixtures/captures/binance/hftbacktest_spot_btcusdt_20240808.txt.gz --port 9443
  candlewax simulate --venue okx --port 8443 \\
      --capture fixtures/captures/okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz \\
      --pace 5x --okx-seq-ids --corrupt-checksum 40 --disconnect-every-msgs 200

then point a client at it: Binance  ws://HOST:PORT/stream?streams=btcusdt@depth@100ms/btcusdt@trade
                                    http://HOST:PORT/api/v3/depth?symbol=BTCUSDT&limit=100
                           OKX      ws://HOST:PORT/ws/v5/public
Fault numbers are 1-based; depth numbers count the capture's book updates (see docs/simulator.md).
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _pace(text: str) -> str:
    try:
        parse_pace(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candlewax simulate",
        description="Replay a recorded capture as a local exchange (WebSocket, plus Binance "
        "REST depth snapshots) with optional fault injection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--venue", required=True, choices=venue_names())
    parser.add_argument("--capture", required=True, help="capture file (any format replay reads)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument(
        "--pace",
        type=_pace,
        default="max",
        help="max (as fast as the client reads), recorded (original timing) or Nx (N times faster)",
    )
    parser.add_argument(
        "--limit", type=_positive_int, help="replay only the first N capture frames"
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=5,
        help="frames re-sent to a client that resumes its subscription set (default 5)",
    )
    for venue in venue_classes():
        venue.add_arguments(parser)  # e.g. --okx-seq-ids
    parser.add_argument(
        "--original-times",
        action="store_true",
        help="send event times as recorded (default: shifted by one constant offset so the "
        "replay starts now)",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="replay the capture forever: a connection is closed at the end of the tape and the "
        "next one gets it again with trade/book ids moved forward and event times starting "
        "now (with --original-times: moved forward by the capture's span)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        help="seconds between server WebSocket pings (default: Binance 20, OKX none)",
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--disconnect-every-s", type=float, metavar="S", help="close each connection after S s"
    )
    faults.add_argument(
        "--disconnect-every-msgs",
        type=_positive_int,
        metavar="N",
        help="close each connection after it sent N data frames",
    )
    faults.add_argument(
        "--drop-depth",
        type=_positive_int,
        action="append",
        default=[],
        metavar="K",
        help="never send the K-th book update of the capture the first time (a sequence gap); "
        "repeatable",
    )
    faults.add_argument(
        "--duplicate-every",
        type=_positive_int,
        metavar="N",
        help="send every N-th data frame of a connection twice",
    )
    faults.add_argument(
        "--corrupt-checksum",
        type=_positive_int,
        action="append",
        default=[],
        metavar="K",
        help="OKX: send the K-th book update with a wrong checksum (once); repeatable",
    )
    faults.add_argument(
        "--stall-after",
        type=_positive_int,
        metavar="N",
        help="after N data frames in total, stop sending (connection kept open) ...",
    )
    faults.add_argument(
        "--stall-seconds",
        type=_non_negative_float,
        default=0.0,
        metavar="S",
        help="... for S seconds (once)",
    )
    return parser


def make_simulator(args: argparse.Namespace) -> Simulator:
    faults = Faults(
        disconnect_every_s=args.disconnect_every_s,
        disconnect_every_msgs=args.disconnect_every_msgs,
        drop_depth=frozenset(args.drop_depth),
        duplicate_every=args.duplicate_every,
        corrupt_checksum=frozenset(args.corrupt_checksum),
        stall_after=args.stall_after,
        stall_seconds=args.stall_seconds,
    )
    venue_options: dict[str, object] = {}
    for venue in venue_classes():
        venue_options.update(venue.options_from_args(args))
    return Simulator(
        args.venue,
        args.capture,
        host=args.host,
        port=args.port,
        pace=args.pace,
        limit=args.limit,
        overlap=args.overlap,
        faults=faults,
        ping_interval=args.ping_interval,
        original_times=args.original_times,
        loop=args.loop,
        venue_options=venue_options,
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def _serve(sim: Simulator) -> str:
    """Serve until SIGINT or SIGTERM; returns the signal's name.

    The handlers are installed explicitly: a shell starting a job with ``&`` sets
    SIGINT to "ignore", and Python then never raises KeyboardInterrupt."""
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    received: list[str] = []

    def stop(signum: signal.Signals) -> None:
        received.append(signum.name)
        stopped.set()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    await sim.start()
    tape = sim.tape
    print(
        f"{sim.venue} simulator: {len(tape.entries)} frames ({tape.depth_updates} book updates), "
        f"streams: {', '.join(sorted(tape.keys()))}",
        flush=True,
    )
    print(f"listening on {sim.ws_url}" + (f"  REST {sim.rest_url}" if sim.rest_url else ""))
    if sim.original_times:
        print("event times as recorded", flush=True)
    else:
        print("event times shifted so the replay starts now (--original-times: as recorded)")
    print("Ctrl-C (SIGINT) or SIGTERM to stop", flush=True)
    try:
        await stopped.wait()
    finally:
        await sim.stop()
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    return received[0]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # A capture of another venue would be served as 0 frames, silently.
        check_capture(Path(args.capture), args.venue, "--capture")
        sim = make_simulator(args)
    except PreflightError as exc:
        print(f"candlewax simulate: {exc}", file=sys.stderr)
        return 2
    except (CaptureError, ValueError, OSError) as exc:
        print(f"candlewax simulate: {exc}", file=sys.stderr)
        return 2
    try:
        why = asyncio.run(_serve(sim))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        why = "SIGINT"
    except OSError as exc:  # e.g. the port is taken
        print(
            f"candlewax simulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2
    stats = ", ".join(f"{k}={v}" for k, v in sim.stats.as_dict().items())
    print(f"stopped ({why}): {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
