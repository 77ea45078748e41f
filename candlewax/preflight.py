"""Checks over a parsed pipeline config before the flow starts.

A problem the user can fix (a capture that is not one, an output directory
that cannot be written, a port in use) found inside the running engine
surfaces as a Rust panic plus a chained Python traceback. ``preflight(cfg)``
finds them first and raises ``PreflightError`` with one line naming the cause
and the fix; ``candlewax.cli`` prints that line and exits 2.

Checks are plain functions in two tables, ``SOURCE_CHECKS`` keyed by source
``mode`` and ``SINK_CHECKS`` keyed by sink ``type``: a check takes the item's
config, the whole pipeline config and a label naming the item for the user
(``sinks[1] (kafka)``, or ``--kafka`` for ``candlewax replay``) and raises
``PreflightError(f"{label}: <cause>: <fix>")``. Another check (e.g. "Kafka
broker reachable", ``sinks.kafka_client``) is one more entry, as Kafka and Redis are.

``user_error`` is the one place that decides what is the user's doing (our
error types, and an ``OSError`` naming a file) and what is a bug (anything
else: it keeps its traceback).
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from candlewax.config import PipelineConfig, SinkConfig, SourceConfig


class UserError(Exception):
    """A problem the user caused and can fix; ``str()`` is one line naming both."""


class PreflightError(UserError):
    """A user-caused problem found before the run."""


SourceCheck = Callable[[SourceConfig, PipelineConfig, str], None]
SinkCheck = Callable[[Any, PipelineConfig, str], None]


def writable_dir(directory: Path, label: str) -> None:
    """``directory`` is, or can be created as, a directory this process can write.

    Creates nothing: the nearest existing ancestor must be a directory in which a
    (temporary, removed) file can be made; ``os.access`` would say yes to root."""
    probe = directory
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        inside = "" if probe == directory else f" (inside {str(probe)!r}, a file)"
        raise PreflightError(
            f"{label}: {str(directory)!r}{inside} is not a directory: "
            "choose another path or remove the file"
        )
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise PreflightError(
            f"{label}: cannot write to {str(directory)!r} ({exc.strerror} in {str(probe)!r}): "
            "choose a writable path or fix its permissions"
        ) from None


def _jsonl(sink: Any, cfg: PipelineConfig, label: str) -> None:
    from sinks.base import check_channels
    from sinks.jsonl import channel_path

    writable_dir(sink.path, label)
    for channel in sorted(check_channels(sink.channels)):
        path = channel_path(sink.path, channel)
        if path.is_dir():
            raise PreflightError(
                f"{label}: {str(path)!r} is a directory, not a file: remove it or choose "
                "another path"
            )
        if path.exists():
            try:
                path.open("ab").close()  # appending nothing changes neither content nor mtime
            except OSError as exc:
                raise PreflightError(
                    f"{label}: cannot write {str(path)!r} ({exc.strerror}): fix its "
                    "permissions or choose another path"
                ) from None


def _directory_sink(sink: Any, cfg: PipelineConfig, label: str) -> None:
    writable_dir(sink.path, label)


def _recorder(sink: Any, cfg: PipelineConfig, label: str) -> None:
    """Also the ``<dir>/<venue>/<symbol>/`` directories known before the run."""
    from sinks.recorder import safe_name

    writable_dir(sink.path, label)
    for src in cfg.sources:
        venue_dir = sink.path / safe_name(src.venue)
        for directory in [venue_dir] + [venue_dir / safe_name(s) for s in src.symbols]:
            if directory.exists() and not directory.is_dir():
                writable_dir(directory, label)  # raises: names the file in the way


def _websocket(sink: Any, cfg: PipelineConfig, label: str) -> None:
    # Runs before the server starts (``candlewax replay --ws`` starts it before the flow).
    ports = [sink.port] + ([sink.http_port] if sink.http_port else [])
    for port in ports:
        if port:  # 0: any free port
            free_port(sink.host, port, label)


def free_port(host: str, port: int, label: str) -> None:
    """A server will be able to listen on ``host:port``. Bound with SO_REUSEADDR like
    asyncio's servers, so a port left in TIME_WAIT is not reported busy."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise PreflightError(
            f"{label}: cannot listen on {host!r} ({exc.strerror}): use an IP address"
        ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise PreflightError(
                f"{label}: cannot listen on {host}:{port} ({exc.strerror}): stop what uses "
                "the port or choose another one"
            ) from None


def _replay(src: SourceConfig, cfg: PipelineConfig, label: str) -> None:
    assert src.capture is not None  # the config requires it for mode: replay
    check_capture(src.capture, src.venue, label)


def check_capture(capture: Path, venue: str, label: str = "capture") -> None:
    """The capture opens, has a known format, and its first frames are of ``venue``."""
    from sources.capture_venue import venue_mismatch
    from sources.replay import CaptureError, iter_capture

    try:
        iter_capture(capture, venue)  # opens it and sniffs the format; reads no frame
        mismatch = venue_mismatch(capture, venue)
    except CaptureError as exc:
        raise PreflightError(f"{label}: {exc}") from None
    except OSError as exc:
        raise PreflightError(f"{label}: cannot read {str(capture)!r} ({exc.strerror})") from None
    if mismatch is not None:
        raise PreflightError(
            f"{label}: {str(capture)!r} was recorded from {mismatch.recorded}, not {venue} "
            f"({mismatch.why}): replay it with --venue {mismatch.recorded} "
            f"(YAML: venue: {mismatch.recorded})"
        )


def _redis(sink: Any, cfg: PipelineConfig, label: str) -> None:
    """The server answers PING: a sink started against nothing buffers until its
    bound, then drops, and the run would end "successfully" without the data."""
    import redis

    client = redis.Redis.from_url(
        sink.url, socket_timeout=sink.timeout_s, socket_connect_timeout=sink.timeout_s
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        cause = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PreflightError(
            f"{label}: redis at {sink.url} does not answer ({cause}): start it "
            "(scripts/services.sh start redis) or fix the url"
        ) from None
    finally:
        client.close()


def _kafka_sink(sink: Any, cfg: PipelineConfig, label: str) -> None:
    from sinks.kafka_client import check_sink

    check_sink(sink, cfg, label)


def _kafka_source(src: SourceConfig, cfg: PipelineConfig, label: str) -> None:
    from sinks.kafka_client import check_source

    check_source(src, cfg, label)


SOURCE_CHECKS: dict[str, list[SourceCheck]] = {"replay": [_replay], "kafka": [_kafka_source]}
SINK_CHECKS: dict[str, list[SinkCheck]] = {
    "jsonl": [_jsonl],
    "parquet": [_directory_sink],
    "recorder": [_recorder],
    "websocket": [_websocket],
    "redis": [_redis],
    "kafka": [_kafka_sink],
}


def preflight(cfg: PipelineConfig, labels: dict[str, str] | None = None) -> None:
    """Every check of every source, sink and the recovery store; the first problem
    raises. ``labels`` names a config item the way the user wrote it (``sinks[0]`` ->
    ``--out``) when a command built the config from its options."""
    labels = labels or {}

    def label(path: str, kind: str) -> str:
        return labels.get(path, f"{path} ({kind})")

    for i, src in enumerate(cfg.sources):
        for source_check in SOURCE_CHECKS.get(src.mode, []):
            source_check(src, cfg, label(f"sources[{i}]", f"{src.venue} {src.mode}"))
    sink: SinkConfig
    for i, sink in enumerate(cfg.sinks):
        for sink_check in SINK_CHECKS.get(sink.type, []):
            sink_check(sink, cfg, label(f"sinks[{i}]", sink.type))
    if cfg.recovery is not None:
        writable_dir(cfg.recovery.dir, label("recovery.dir", "recovery"))


def user_error(exc: BaseException) -> BaseException | None:
    """The user-caused error behind ``exc`` (itself, or a cause the engine wrapped it
    in), None for anything else: those are bugs and keep their traceback.

    Besides our own types, an ``OSError`` naming a file counts: at run time it is the
    file system refusing a path the user chose (a directory that went read-only, a
    file where the recorder wants a directory), not a bug."""
    from candlewax.config import ConfigError
    from sources.replay import CaptureError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError | ConfigError | CaptureError):
            return current
        if isinstance(current, OSError) and current.filename is not None:
            return UserError(
                f"cannot use {str(current.filename)!r}: {current.strerror or current}: "
                "check the path and its permissions"
            )
        seen.add(id(current))
        # Only explicit causes (the engine raises its error ``from`` ours): an error
        # merely raised while another was being handled is no proof of either.
        current = current.__cause__
    return None
