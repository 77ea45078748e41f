"""``candlewax replay --ws`` and the websocket sink in a pipeline YAML."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest
from fanout_helpers import Client
from flow_helpers import OKX_V5

from candlewax.cli import main
from candlewax.client.messages import kind_of
from candlewax.config import WebsocketSink, load_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_replay_serves_records_over_websocket(tmp_path: Path) -> None:
    port = _free_port()
    args = ["replay", str(OKX_V5), "--venue", "okx", "--out", str(tmp_path)]
    args += ["--ws", f"127.0.0.1:{port}", "--linger", "1.5", "--pace", "max"]
    result: list[int] = []
    cli = threading.Thread(target=lambda: result.append(main(args)))
    cli.start()

    async def client() -> Client:
        # Retries until the server is up; the book arrives live or in the snapshot.
        c = Client(f"ws://127.0.0.1:{port}/stream", channels=["orderbook"], backoff_max=0.05)
        await c.until(
            lambda m: (kind_of(m) == "snapshot" and bool(c.records())) or kind_of(m) == "book"
        )
        await c.close()
        return c

    try:
        got = asyncio.run(client())
    finally:
        cli.join(30)
    assert result == [0]
    books = [r for r in got.records() if r["type"] == "book"]
    assert books and books[0]["venue"] == "okx" and books[0]["symbol"]
    assert (tmp_path / "book.jsonl").exists()
    with socket.socket() as sock:  # the server is gone after --linger
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_replay_rejects_a_bad_ws_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["replay", str(OKX_V5), "--venue", "okx", "--out", str(tmp_path), "--ws", "8765"]
    assert main(args) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_pipeline_yaml_lists_the_websocket_sink(tmp_path: Path) -> None:
    path = tmp_path / "fanout.yaml"
    path.write_text(
        f"""
sources:
  - venue: okx
    mode: replay
    capture: {OKX_V5}
sinks:
  - type: websocket
    port: 9876
    heartbeat_s: 10
    batch_ms: 5
    raw: true
    auth:
      hmac_secret: a-secret-of-sixteen-chars
"""
    )
    cfg = load_config(path)
    (sink,) = cfg.sinks
    assert isinstance(sink, WebsocketSink)
    assert (sink.host, sink.port, sink.path, sink.batch_ms, sink.raw) == (
        "0.0.0.0",
        9876,
        "/stream",
        5,
        True,
    )
    assert sink.auth.enabled and sink.queue_size == 10_000 and sink.max_lag_s == 30
    assert main(["validate", str(path)]) == 0
    path.write_text(path.read_text().replace("batch_ms: 5", "batch_ms: -1"))
    assert main(["validate", str(path)]) == 2
