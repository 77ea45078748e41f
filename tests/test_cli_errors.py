"""Every error a user can cause is one stderr line naming the cause, exit 2, no traceback.

The commands run as subprocesses, as a user runs them: what reaches stderr is
what is asserted (an error inside the engine would add a Rust panic and a
chained traceback there)."""

from __future__ import annotations

import gzip
import random
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flow_helpers import BTC_SPOT, CAPTURES, OKX_V5, outputs

from candlewax.cli import main
from candlewax.config import ConfigError
from candlewax.preflight import PreflightError, user_error
from sources.replay import CaptureError

USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"


def cli(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "candlewax.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert proc.returncode == 2, proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file, so that ``a_file/sub`` can never be created."""
    path = tmp_path / "a_file"
    path.write_text("not a directory\n")
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def replay_args(capture: Path, venue: str, out: Path, *more: str) -> list[str | Path]:
    return ["replay", capture, "--venue", venue, "--out", out, *more]


def write_yaml(path: Path, sinks: str, extra: str = "") -> Path:
    path.write_text(
        "sources:\n"
        f"  - {{venue: binance, mode: replay, capture: {BTC_SPOT}}}\n"
        f"sinks:\n{sinks}{extra}"
    )
    return path


# ---- captures that are not usable ----


def _random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(7).randbytes(20_000))
    return path


def _text_junk(path: Path) -> Path:
    path.write_text("hello\nworld\n")
    return path


def _broken_gzip(path: Path) -> Path:
    path.write_bytes(b"\x1f\x8b" + random.Random(7).randbytes(5_000))
    return path


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (_random_bytes, "is not a capture: invalid UTF-8"),
        (_text_junk, "unknown capture format"),
        (_broken_gzip, "is not a capture: corrupt or truncated gzip"),
    ],
)
def test_replay_of_a_file_that_is_no_capture(make: object, needle: str, tmp_path: Path) -> None:
    capture = make(tmp_path / "capture.bin")  # type: ignore[operator]
    proc = cli(*replay_args(capture, "binance", tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "candlewax replay:", needle)


def test_replay_of_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    proc = cli(*replay_args(tmp_path / "nothing", "binance", tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "no recorder files", "nothing'")


def test_replay_of_a_missing_capture(tmp_path: Path) -> None:
    proc = cli(*replay_args(tmp_path / "missing.gz", "binance", tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "missing.gz", "does not exist")


def test_run_of_a_yaml_whose_capture_is_no_capture(tmp_path: Path) -> None:
    capture = _random_bytes(tmp_path / "capture.bin")
    config = tmp_path / "p.yaml"
    config.write_text(
        f"sources:\n  - {{venue: binance, mode: replay, capture: {capture}}}\n"
        "sinks:\n  - {type: stdout}\n"
    )
    assert_one_line_error(cli("run", config, cwd=tmp_path), "sources[0]", "is not a capture")


def test_capture_garbage_halfway_becomes_dead_letters(tmp_path: Path) -> None:
    """Only the whole file is judged up front: bad lines later on are dead letters."""
    with gzip.open(BTC_SPOT, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    capture = tmp_path / "half.txt"
    capture.write_bytes(
        b"".join(lines[:300]) + random.Random(7).randbytes(3_000) + b"\n" + b"".join(lines[300:600])
    )
    proc = cli(*replay_args(capture, "binance", tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    dead = outputs(tmp_path / "out")["dead_letter"]
    assert dead and all("malformed capture line" in d["reason"] for d in dead)
    assert outputs(tmp_path / "out")["trades"]


# ---- outputs that cannot be written ----


def test_replay_out_inside_a_file(tmp_path: Path, a_file: Path) -> None:
    proc = cli(*replay_args(OKX_V5, "okx", a_file / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "--out", "is not a directory")


def test_replay_out_is_a_file(tmp_path: Path, a_file: Path) -> None:
    assert_one_line_error(cli(*replay_args(OKX_V5, "okx", a_file), cwd=tmp_path), "--out")


def test_replay_out_holds_a_directory_where_a_channel_file_goes(tmp_path: Path) -> None:
    (tmp_path / "out" / "trades.jsonl").mkdir(parents=True)
    proc = cli(*replay_args(OKX_V5, "okx", tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "--out", "trades.jsonl", "is a directory")


def _unwritable_dir(tmp_path: Path) -> Path | None:
    """A directory this process cannot create files in: a mode 555 one (not for root),
    else a read-only /sys (containers); None if there is none."""
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    for candidate in (read_only, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    return None


def test_replay_out_without_write_permission(tmp_path: Path) -> None:
    directory = _unwritable_dir(tmp_path)
    if directory is None:
        pytest.skip("no unwritable directory here (root, writable /sys)")
    proc = cli(*replay_args(OKX_V5, "okx", directory / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "--out", "cannot write", str(directory))


@pytest.mark.parametrize("kind", ["recorder", "parquet", "jsonl"])
def test_run_sink_path_inside_a_file(kind: str, tmp_path: Path, a_file: Path) -> None:
    config = write_yaml(tmp_path / "p.yaml", f"  - {{type: {kind}, path: {a_file / 'x'}}}\n")
    assert_one_line_error(cli("run", config, cwd=tmp_path), f"sinks[0] ({kind})", "not a directory")


def test_run_recovery_dir_inside_a_file(tmp_path: Path, a_file: Path) -> None:
    config = write_yaml(
        tmp_path / "p.yaml",
        f"  - {{type: jsonl, path: {tmp_path / 'out'}}}\n",
        f"recovery: {{dir: {a_file / 'rec'}}}\n",
    )
    assert_one_line_error(cli("run", config, cwd=tmp_path), "recovery", "not a directory")
    assert not (tmp_path / "out").exists()  # nothing started


def test_demo_out_inside_a_file(tmp_path: Path, a_file: Path) -> None:
    proc = cli("demo", "--out", a_file / "demo", "--quiet", cwd=tmp_path)
    assert_one_line_error(proc, "candlewax demo:", "--out", "not a directory")


def test_demo_bad_pace(tmp_path: Path) -> None:
    proc = cli("demo", "--out", tmp_path / "demo", "--pace", "7q", cwd=tmp_path)
    assert_one_line_error(proc, "candlewax demo: --pace", "'7q'")


def test_a_config_error_with_one_problem_is_one_line(tmp_path: Path) -> None:
    proc = cli(*replay_args(OKX_V5, "nope", tmp_path / "out"), cwd=tmp_path)
    assert_one_line_error(proc, "sources[0].venue: unknown venue 'nope'", "supported: binance")


# ---- ports in use ----


def test_run_websocket_sink_port_in_use(tmp_path: Path, busy_port: int) -> None:
    config = write_yaml(
        tmp_path / "p.yaml", f"  - {{type: websocket, host: 127.0.0.1, port: {busy_port}}}\n"
    )
    proc = cli("run", config, cwd=tmp_path)
    assert_one_line_error(proc, "sinks[0] (websocket)", f"127.0.0.1:{busy_port}", "in use")


def test_replay_ws_port_in_use(tmp_path: Path, busy_port: int) -> None:
    args = replay_args(OKX_V5, "okx", tmp_path / "out", "--ws", f"127.0.0.1:{busy_port}")
    assert_one_line_error(cli(*args, cwd=tmp_path), "--ws", f"127.0.0.1:{busy_port}", "in use")


# ---- a capture of another venue or market (issue 7 item 9) ----


@pytest.mark.parametrize(
    ("capture", "asked", "recorded", "why"),
    [
        (USDM, "binance", "binance-usdm", "carry 'pu'"),
        (BTC_SPOT, "binance-usdm", "binance", "lack 'pu'"),
        (OKX_V5, "binance", "okx", "arg.instId"),
    ],
)
def test_replay_refuses_a_capture_of_another_market(
    capture: Path, asked: str, recorded: str, why: str, tmp_path: Path
) -> None:
    proc = cli(*replay_args(capture, asked, tmp_path / "out"), cwd=tmp_path)
    line = assert_one_line_error(proc, f"recorded from {recorded}, not {asked}", why)
    assert line.endswith(f"--venue {recorded} (YAML: venue: {recorded})")
    assert not (tmp_path / "out").exists()


# ---- simulate ----


def test_simulate_of_random_bytes(tmp_path: Path) -> None:
    capture = _random_bytes(tmp_path / "capture.bin")
    proc = cli("simulate", "--venue", "binance", "--capture", capture, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "candlewax simulate:", "is not a capture")


def test_simulate_of_another_venues_capture(tmp_path: Path) -> None:
    # Before: served 0 frames forever, silently.
    okx = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
    proc = cli("simulate", "--venue", "binance", "--capture", okx, cwd=tmp_path, timeout=120)
    assert_one_line_error(proc, "candlewax simulate: --capture", "--venue okx")


# ---- our own bugs keep their traceback ----


def test_a_bug_is_not_turned_into_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import candlewax.replay_cmd

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(candlewax.replay_cmd, "preflight", broken)
    with pytest.raises(RuntimeError, match="a bug of ours"):
        main([str(a) for a in replay_args(OKX_V5, "okx", tmp_path / "out")])


def test_user_error_is_found_behind_the_engine_wrapper() -> None:
    """The engine re-raises a failure in a source or sink as its own error with the
    original as ``__cause__``: the CLI still prints the original's one line."""
    try:
        try:
            raise CaptureError("'x' is not a capture")
        except CaptureError as inner:
            raise RuntimeError("error calling build_part") from inner
    except RuntimeError as outer:
        assert isinstance(user_error(outer), CaptureError)
    assert user_error(RuntimeError("bug")) is None
    assert isinstance(user_error(PreflightError("x")), PreflightError)
    assert isinstance(user_error(ConfigError("x")), ConfigError)


# ---- what can only fail inside the running engine ----


def test_recorder_venue_directory_is_a_file(tmp_path: Path) -> None:
    recording = tmp_path / "rec"
    recording.mkdir()
    (recording / "binance").write_text("a file where a directory goes\n")
    config = write_yaml(tmp_path / "p.yaml", f"  - {{type: recorder, path: {recording}}}\n")
    assert_one_line_error(cli("run", config, cwd=tmp_path), "sinks[0] (recorder)", "rec/binance")


def test_run_time_file_system_error_ends_in_one_line(tmp_path: Path) -> None:
    """The recorder makes <dir>/<venue>/<symbol>/ as frames arrive; with no symbols
    configured, a file named like a symbol's directory is only met then. The engine
    prints its panic note (Rust, not ours) and re-raises; the CLI ends with one line
    naming the path, not a traceback."""
    recording = tmp_path / "rec"
    (recording / "binance").mkdir(parents=True)
    (recording / "binance" / "BTC_USDT").write_text("a file where a directory goes\n")
    config = write_yaml(tmp_path / "p.yaml", f"  - {{type: recorder, path: {recording}}}\n")
    proc = cli("run", config, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("candlewax run: cannot use ")
    assert "binance/BTC_USDT': File exists" in last


def test_capture_error_inside_the_engine_ends_in_one_line(tmp_path: Path) -> None:
    """Without the preflight the capture is first opened by the engine's source
    partition; the CLI still finds the CaptureError behind the engine's error. (A
    subprocess: an engine run with several workers earlier in the same process makes
    the engine log errors with their traceback itself.)"""
    capture = _text_junk(tmp_path / "junk.txt")
    args = [str(a) for a in replay_args(capture, "binance", tmp_path / "out")]
    script = (
        "import sys, candlewax.replay_cmd as cmd\n"
        "cmd.preflight = lambda *args: None\n"
        "from candlewax.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("candlewax replay: ") and "unknown capture format" in last


# ---- services that do not answer ----


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket closes


def test_replay_to_a_redis_that_does_not_answer(tmp_path: Path) -> None:
    # Before: exit 0 after the sink gave up on every record it had buffered.
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    proc = cli(*replay_args(BTC_SPOT, "binance", tmp_path / "out", "--redis", url), cwd=tmp_path)
    assert_one_line_error(proc, "--redis", url, "does not answer", "services.sh start redis")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_run_with_a_redis_sink_that_does_not_answer(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    config = write_yaml(tmp_path / "p.yaml", f"  - {{type: redis, url: '{url}'}}\n")
    proc = cli("run", config, cwd=tmp_path)
    assert_one_line_error(proc, "sinks[0] (redis)", "does not answer")
