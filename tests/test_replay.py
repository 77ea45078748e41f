"""Capture readers (sources/replay.py, sources/capture_formats.py) and the Pacer."""

from __future__ import annotations

import gzip
import itertools
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from sources.capture_formats import (
    CRYPTOFEED,
    CRYPTOFEED_LEGACY,
    HFTBACKTEST,
    RAW_LINES,
    RECORDER,
    LineError,
    is_binance_snapshot_text,
    seconds_to_micros,
)
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.replay import (
    MAX_EXAMPLES,
    CaptureError,
    MalformedLine,
    Pacer,
    ReplayStats,
    detect_format,
    iter_capture,
    parse_pace,
    read_capture,
)

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"
BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
ETH = CAPTURES / "binance" / "hftbacktest_spot_ethusdt_20240808.txt.gz"
USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
OKX_LEGACY = CAPTURES / "okx" / "cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"
SHARED = Path("/work/shared/fixtures/captures")


def binance_kinds(frames: list[RawFrame]) -> Counter[str]:
    """Stream kind of each Binance frame ('depth', 'trade', ..., 'snapshot')."""
    kinds: Counter[str] = Counter()
    for f in frames:
        if f.hint is not None:
            kinds["snapshot"] += 1
            continue
        stream = orjson.loads(f.text)["stream"]
        kinds[stream.split("@")[1]] += 1
    return kinds


def okx_kinds(frames: list[RawFrame]) -> Counter[str]:
    kinds: Counter[str] = Counter()
    for f in frames:
        msg = orjson.loads(f.text)
        kinds[f"{msg['arg']['channel']}:{msg.get('action') or msg.get('event') or 'data'}"] += 1
    return kinds


def assert_time_ordered(frames: list[RawFrame]) -> None:
    stamps = [f.ts_ingest for f in frames]
    assert stamps == sorted(stamps)


# ---- hftbacktest ----


def test_hftbacktest_btc_counts_snapshot_and_exact_text() -> None:
    stats = ReplayStats()
    frames = list(read_capture(BTC, "binance", stats=stats))
    assert binance_kinds(frames) == {
        "depth": 3451,
        "trade": 9757,
        "bookTicker": 28040,
        "snapshot": 1,
    }
    assert (stats.lines, stats.frames, stats.snapshots, stats.malformed) == (41249, 41249, 1, 0)
    # The REST snapshot is line 8 and means "the one symbol of this capture".
    snapshot = frames[7]
    assert snapshot.hint == SNAPSHOT_HINT
    assert orjson.loads(snapshot.text)["lastUpdateId"] == 50093239218
    # Text byte-for-byte, ts = local receive ns // 1000, one connection, our venue.
    with gzip.open(BTC, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert [f.text for f in frames] == [line.split(" ", 1)[1] for line in lines]
    assert [f.ts_ingest for f in frames] == [int(line.split(" ", 1)[0]) // 1000 for line in lines]
    assert frames[0].ts_ingest == 1723161253937085
    assert all(type(f.ts_ingest) is int for f in frames)
    assert {(f.venue, f.conn_id) for f in frames} == {("binance", BTC.name)}


def test_hftbacktest_eth_counts() -> None:
    frames = list(read_capture(ETH, "binance"))
    assert binance_kinds(frames) == {
        "depth": 3434,
        "trade": 6106,
        "bookTicker": 24077,
        "snapshot": 1,
    }
    assert frames[5].hint == SNAPSHOT_HINT
    assert_time_ordered(frames)


def test_snapshot_detection_only_for_top_level_rest_bodies() -> None:
    assert is_binance_snapshot_text('{"lastUpdateId":1,"bids":[],"asks":[]}')
    assert is_binance_snapshot_text('{"lastUpdateId":1,"E":2,"T":3,"bids":[],"asks":[]}')
    # Partial-depth stream messages carry lastUpdateId inside a stream wrapper.
    assert not is_binance_snapshot_text('{"stream":"x@depth5","data":{"lastUpdateId":1}}')
    assert not is_binance_snapshot_text('{"e":"depthUpdate","lastUpdateId":1}')
    assert not is_binance_snapshot_text('{"lastUpdateId":1')  # broken JSON stays a frame


# ---- cryptofeed format 2 ----


def test_cryptofeed_usdm_snapshots_from_http_records() -> None:
    stats = ReplayStats()
    frames = list(read_capture(USDM, "binance-usdm", stats=stats))
    kinds = binance_kinds(frames)
    assert kinds == {"depth": 764, "bookTicker": 613, "aggTrade": 91, "kline_1m": 67, "snapshot": 4}
    snapshots = [f for f in frames if f.hint]
    assert [f.hint for f in snapshots] == [
        SNAPSHOT_HINT + s for s in ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT")
    ]
    # Tagged with the WebSocket connection they serve, like the live source does.
    assert {f.conn_id for f in frames} == {"BINANCE_FUTURES.ws.1"}
    # "ts":1626992741.301402 (epoch s) -> exact µs, no float error.
    assert snapshots[0].ts_ingest == 1626992741301402
    assert stats.skipped_kinds == {"header": 1, "connect": 1}
    assert stats.lines == stats.frames + stats.skipped + stats.malformed == 1541
    # The file lists the http records first; replay merges connections by time.
    assert_time_ordered(frames)
    assert frames[0].hint is None
    # Frame text is the recorded string exactly.
    with gzip.open(USDM, "rb") as fh:
        recorded = {orjson.loads(line)["data"] for line in fh if b'"t":"recv"' in line}
    assert {f.text for f in frames if not f.hint} == recorded


def test_cryptofeed_okx_counts() -> None:
    stats = ReplayStats()
    frames = list(read_capture(OKX_V5, "okx", stats=stats))
    kinds = okx_kinds(frames)
    assert kinds["books:snapshot"] == 3
    assert kinds["books:update"] == 287
    assert kinds["trades:data"] == 74
    assert kinds["tickers:data"] == 28
    assert sum(n for k, n in kinds.items() if k.endswith(":subscribe")) == 18
    assert stats.skipped_kinds == {"header": 1, "connect": 1, "send": 3}
    assert {f.conn_id for f in frames} == {"OKX.ws.1"}


# ---- cryptofeed legacy ----


def test_cryptofeed_legacy_okx() -> None:
    stats = ReplayStats()
    frames = list(read_capture(OKX_LEGACY, "okx", stats=stats))
    kinds = okx_kinds(frames)
    assert kinds["books-l2-tbt:snapshot"] == 20
    assert kinds["books-l2-tbt:update"] == 3659
    assert kinds["trades:data"] == 19
    assert kinds["tickers:data"] == 19
    assert stats.skipped_kinds == {"connect": 1, "send": 3}
    assert stats.malformed == 0
    assert {f.conn_id for f in frames} == {f"{OKX_LEGACY.name}#1"}
    # '1646003667.645451: {...}' -> exact µs and the text after ': '.
    assert frames[0].ts_ingest == 1646003667645451
    assert frames[0].text.startswith('{"event":"subscribe","arg":{"channel":"trades"')


def test_legacy_http_snapshot_and_sent_lines(tmp_path: Path) -> None:
    body = '{"lastUpdateId":7,"bids":[["1.0","2"]],"asks":[]}'
    capture = tmp_path / "BINANCE.ws.3.0"
    capture.write_text(
        "configuration: {}\n"
        "wss://stream.binance.com:9443/stream <-> 1600000000.5\n"
        'wss://stream.binance.com:9443/stream <- 1600000000.6: {"method":"SUBSCRIBE"}\n'
        f"https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000 -> 1600000001.25: {body}\n"
        "https://api.binance.com/api/v3/exchangeInfo -> 1600000001.5: {}\n"
        '1600000002.000001: {"stream":"btcusdt@trade","data":{}}\n'
        "\n"
    )
    stats = ReplayStats()
    frames = list(read_capture(capture, "binance", stats=stats))
    assert frames == [
        RawFrame("binance", "BINANCE.ws.3.0#1", 1600000001250000, body, "depth_snapshot:BTCUSDT"),
        RawFrame(
            "binance", "BINANCE.ws.3.0#1", 1600000002000001, '{"stream":"btcusdt@trade","data":{}}'
        ),
    ]
    assert stats.skipped_kinds == {"header": 1, "connect": 1, "send": 1, "http": 1, "blank": 1}


# ---- malformed input ----


def test_malformed_lines_are_counted_and_handed_over(tmp_path: Path) -> None:
    capture = tmp_path / "cap.txt"
    capture.write_bytes(
        b'1723161253937085768 {"a":1}\n'
        b"not a line\n"
        b'17231612539 {"b":2}\n'
        b"\xff\xfe broken utf-8\n"
        b"-5 {}\n"
        b"1723161253937085769 \n"
        b'1723161253937085770 {"c":3}\r\n'
    )
    bad: list[MalformedLine] = []
    stats = ReplayStats()
    frames = list(read_capture(capture, "binance", stats=stats, on_malformed=bad.append))
    assert [f.text for f in frames] == ['{"a":1}', '{"b":2}', '{"c":3}']  # CRLF ends a line
    assert [b.line_no for b in bad] == [2, 4, 5, 6]
    assert "invalid UTF-8" in bad[1].reason
    assert bad[0].text == "not a line"
    assert (stats.lines, stats.frames, stats.malformed) == (7, 3, 4)
    # The mixed iterator gives the same items in file order.
    items = list(iter_capture(capture, "binance"))
    assert [type(i).__name__ for i in items] == ["RawFrame", "MalformedLine", "RawFrame"] + [
        "MalformedLine"
    ] * 3 + ["RawFrame"]


def test_malformed_examples_are_capped(tmp_path: Path) -> None:
    capture = tmp_path / "cap.jsonl"
    good = {"t": "recv", "conn": "c", "ts": 1.5, "data": "{}"}
    lines = [orjson.dumps({"t": "header"})] + [b"{oops"] * 9 + [orjson.dumps(good)]
    lines += [orjson.dumps({"t": "recv", "conn": "c", "ts": "x", "data": "{}"})]
    lines += [orjson.dumps({"t": "recv", "conn": "c", "ts": 2.0, "data": 5})]
    lines += [orjson.dumps({"t": "bogus"})]
    capture.write_bytes(b"\n".join(lines) + b"\n")
    stats = ReplayStats()
    frames = list(read_capture(capture, "kraken", stats=stats))
    assert frames == [RawFrame("kraken", "c", 1_500_000, "{}")]
    assert stats.malformed == 12
    assert len(stats.examples) == MAX_EXAMPLES
    reasons = [i.reason for i in iter_capture(capture, "kraken") if isinstance(i, MalformedLine)]
    assert reasons[-3:] == [
        "timestamp 'x' is not a number",
        "field 'data' missing or not str",
        "unknown record kind t='bogus'",
    ]


def test_truncated_gzip_keeps_complete_members(tmp_path: Path) -> None:
    capture = tmp_path / "cut.txt.gz"
    first = gzip.compress(b'1723161253937085768 {"a":1}\n1723161253937085769 {"b":2}\n')
    second = gzip.compress(b'1723161253937085770 {"c":3}\n' * 200)
    capture.write_bytes(first + second[: len(second) // 2])
    stats = ReplayStats()
    items = list(iter_capture(capture, "binance", stats=stats))
    frames = [i for i in items if isinstance(i, RawFrame)]
    assert [f.text for f in frames[:2]] == ['{"a":1}', '{"b":2}']
    assert isinstance(items[-1], MalformedLine)
    assert "truncated gzip" in items[-1].reason
    assert stats.malformed == 1


def test_format_detection(tmp_path: Path) -> None:
    assert detect_format(BTC) == HFTBACKTEST
    assert detect_format(USDM) == CRYPTOFEED
    assert detect_format(OKX_LEGACY) == CRYPTOFEED_LEGACY
    # gzip is sniffed from the magic bytes, not the suffix.
    renamed = tmp_path / "capture.data"
    shutil.copy(BTC, renamed)
    assert detect_format(renamed) == HFTBACKTEST
    assert len(list(read_capture(renamed, "binance"))) == 41249
    raw = tmp_path / "history.jsonl"
    raw.write_text('{"topic":"orderbook.1.X","ts":1733011200691,"data":{}}\r\n')
    assert detect_format(raw) == RAW_LINES
    assert [f.ts_ingest for f in read_capture(raw, "bybit")] == [1733011200691000]
    rec = tmp_path / "r.ndjson"
    rec.write_text('{"ts_ingest":1,"venue":"okx","conn_id":"c","hint":null,"raw":"{}"}\n')
    assert detect_format(rec) == RECORDER
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert detect_format(empty) is None
    assert list(read_capture(empty, "okx")) == []


def test_unusable_captures_fail_at_once(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="does not exist"):
        read_capture(tmp_path / "missing.txt.gz", "binance")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n")
    with pytest.raises(CaptureError, match="unknown capture format"):
        read_capture(junk, "binance")
    with pytest.raises(ValueError, match="unknown capture format 'nope'"):
        read_capture(BTC, "binance", fmt="nope")
    with pytest.raises(CaptureError, match="no recorder files"):
        read_capture(tmp_path, "binance")


# ---- every capture of the team's reference set (not bundled) ----

SHARED_FRAMES = {
    "binance/cryptofeed_spot_2021-10-12_4symbols.jsonl": (265 + 4, 4),
    "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl": (1535 + 4, 4),
    "binance/hftbacktest_spot_btcusdt_20240808.txt.gz": (41249, 1),
    "binance/hftbacktest_spot_ethusdt_20240808.txt.gz": (33618, 1),
    "binance/hftbacktest_usdm_btcusdt_20240808_first50181lines.txt.gz": (50181, 1),
    "binance/hftbacktest_usdm_ethusdt_20240808_first41053lines.txt.gz": (41053, 1),
    "bybit/cryptofeed_v5_linear_spot_2026-08-09.jsonl": (6 + 2142 + 120 + 85 + 754 + 96 + 24, 0),
    "bybit/nautilus_bybit_history_XRPUSDT_ob500_2024-12-01.jsonl": (50, 0),
    "coinbase/cryptofeed_advanced_trade_2026-08-09.jsonl.gz": (1030, 0),
    "coinbase/cryptofeed_legacy_exchange_feed_2021-04-17.ws.txt": (10 + 9719 + 107 + 107 + 3, 0),
    "hyperliquid/hftbacktest_btc_l2Book_trades_20250126.txt.gz": (46 + 9, 0),
    "kraken/cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl": (4430, 0),
    "okx/cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt": (3777, 0),
    "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl": (410, 0),
}


def shared_captures() -> list[str]:
    """Every capture file of the reference set (new ones are read too, without counts)."""
    found = {str(p.relative_to(SHARED)) for p in SHARED.glob("*/*") if p.name != "SOURCE.md"}
    return sorted(found | set(SHARED_FRAMES))


@pytest.mark.skipif(not SHARED.is_dir(), reason="team reference captures not present")
@pytest.mark.parametrize("name", shared_captures())
def test_every_shared_capture_reads_cleanly(name: str) -> None:
    venue = name.split("/")[0]
    stats = ReplayStats()
    frames = list(read_capture(SHARED / name, venue, stats=stats))
    if name in SHARED_FRAMES:
        assert (stats.frames, stats.snapshots) == SHARED_FRAMES[name]
    assert stats.frames > 0
    assert stats.malformed == 0
    assert stats.lines == stats.frames + stats.skipped
    assert_time_ordered(frames)
    assert all(orjson.loads(f.text) is not None for f in frames)  # every frame is whole JSON


# ---- Pacer ----


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run_pacer(pace: str, stamps: list[int], work: float = 0.0) -> list[float]:
    fake = FakeTime()
    pacer = Pacer(pace, clock=fake.clock, sleep=fake.sleep)
    frames = [RawFrame("binance", "c", ts, "{}") for ts in stamps]
    out = []
    for frame in pacer.pace(frames):
        out.append(frame)
        fake.now += work  # time spent downstream counts against the next wait
    assert out == frames
    return [round(s, 9) for s in fake.slept]


def test_pacer_recorded_and_speedup() -> None:
    stamps = [5_000_000, 6_000_000, 6_500_000, 6_400_000, 9_000_000]
    assert run_pacer("max", stamps) == []
    assert run_pacer("recorded", stamps) == [1.0, 0.5, 2.5]  # backwards ts: no wait
    assert run_pacer("2x", stamps) == [0.5, 0.25, 1.25]
    assert run_pacer("0.5x", stamps) == [2.0, 1.0, 5.0]
    assert run_pacer("recorded", stamps, work=0.2) == [0.8, 0.3, 2.1]


def test_pacer_delay_does_not_sleep() -> None:
    fake = FakeTime()
    pacer = Pacer("10x", clock=fake.clock, sleep=fake.sleep)
    assert pacer.delay(0) == 0.0
    assert pacer.delay(10_000_000) == pytest.approx(1.0)
    fake.now += 0.75
    assert pacer.delay(10_000_000) == pytest.approx(0.25)
    assert fake.slept == []


@pytest.mark.parametrize(
    ("pace", "speed"), [("max", None), ("recorded", 1.0), ("3x", 3.0), ("1.5x", 1.5)]
)
def test_parse_pace(pace: str, speed: float | None) -> None:
    assert parse_pace(pace) == speed


@pytest.mark.parametrize("pace", ["0x", "fast", "-1x", "x", "2", "2X "])
def test_parse_pace_rejects(pace: str) -> None:
    with pytest.raises(ValueError, match="pace"):
        parse_pace(pace)


@pytest.mark.parametrize(
    ("text", "micros"),
    [("1786310818.2235148", 1786310818223514), ("1600000001.25", 1600000001250000), ("0", 0)],
)
def test_seconds_to_micros_truncates_like_ns(text: str, micros: int) -> None:
    assert seconds_to_micros(Decimal(text)) == micros


def test_seconds_to_micros_rejects_negative_and_nan() -> None:
    for text in ("-1", "NaN", "Infinity"):
        with pytest.raises(LineError):
            seconds_to_micros(Decimal(text))


def test_cryptofeed_snapshot_joins_the_connection_streaming_its_depth(tmp_path: Path) -> None:
    def rec(**fields: object) -> bytes:
        return orjson.dumps(fields)

    base = "wss://stream.binance.com:9443/stream?streams="
    capture = tmp_path / "two.jsonl"
    capture.write_bytes(
        b"\n".join(
            [
                rec(t="header", format=2),
                rec(
                    t="http",
                    conn="B.http.0",
                    ts=5.0,
                    url="https://x/api/v3/depth?symbol=ZZZUSDT",
                    data="{}",
                ),
                rec(
                    t="http",
                    conn="B.http.0",
                    ts=12.0,
                    url="https://x/api/v3/depth?symbol=AAAUSDT",
                    data="{}",
                ),
                rec(t="connect", conn="B.ws.1", ts=10.0, addr=base + "aaausdt@depth@100ms"),
                rec(t="recv", conn="B.ws.1", ts=11.0, data="{}"),
                rec(t="connect", conn="B.ws.2", ts=10.5, addr=base + "bbbusdt@depth@100ms"),
            ]
        )
    )
    frames = list(read_capture(capture, "binance"))
    # AAAUSDT -> the connection streaming aaausdt@depth although B.ws.2 opened later;
    # ZZZUSDT came before any WebSocket connection, so it keeps the HTTP conn.
    assert [(f.ts_ingest, f.conn_id, f.hint) for f in frames] == [
        (5_000_000, "B.http.0", "depth_snapshot:ZZZUSDT"),
        (11_000_000, "B.ws.1", None),
        (12_000_000, "B.ws.1", "depth_snapshot:AAAUSDT"),
    ]


# ---- a whole file that is not a capture ----


def test_binary_data_is_not_a_capture(tmp_path: Path) -> None:
    """Random bytes used to replay as 0 frames and N 'malformed lines' (exit 0)."""
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(128, 256)) * 100)
    with pytest.raises(CaptureError, match="is not a capture: invalid UTF-8"):
        iter_capture(junk, "binance")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(b"\x1f\x8b" + bytes(range(256)))
    with pytest.raises(CaptureError, match="is not a capture: corrupt or truncated gzip"):
        detect_format(broken)


# ---- --symbols (issue 7 item 5) ----

SUSHI = "SUSHI/USDT:USDT"


def test_symbols_keep_only_their_frames() -> None:
    from sources.registry import make_parser

    stats = ReplayStats()
    items = list(iter_capture(USDM, "binance-usdm", stats=stats, symbols=[SUSHI]))
    parser = make_parser("binance-usdm")
    assert {parser.symbol_of(f) for f in items if isinstance(f, RawFrame)} == {SUSHI}
    # The 4-symbol capture: 1539 frames (4 snapshots), SUSHI's share is kept.
    assert stats.kept_symbols == {SUSHI: 623}
    assert stats.filtered_symbols == {
        "AKRO/USDT:USDT": 294,
        "CTK/USDT:USDT": 401,
        "KEEP/USDT:USDT": 221,
    }
    assert stats.frames == len(items) == 623
    assert stats.snapshots == 1
    assert stats.lines == stats.frames + stats.filtered + stats.skipped + stats.malformed == 1541
    assert "916 filtered out (other symbols)" in stats.summary()


def test_symbols_filter_keeps_malformed_lines_and_symbol_less_frames(tmp_path: Path) -> None:
    """A line whose symbol cannot be known still becomes a dead letter; acks stay."""
    lines = [
        '1723161256000000001 {"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT"}}',
        '1723161256000000002 {"stream":"ethusdt@trade","data":{"e":"trade","s":"ETHUSDT"}}',
        '1723161256000000003 {"result":null,"id":1}',
        "1723161256000000004 broken",
        "not hftbacktest at all",
    ]
    capture = tmp_path / "c.txt"
    capture.write_text("\n".join(lines) + "\n")
    items = list(iter_capture(capture, "binance", symbols=["ETH/USDT"]))
    kept = [i.text[:40] for i in items if isinstance(i, RawFrame)]
    assert kept == [
        '{"stream":"ethusdt@trade","data":{"e":"t',
        '{"result":null,"id":1}',
        "broken",
    ]
    assert [i.line_no for i in items if isinstance(i, MalformedLine)] == [5]


def test_replay_command_writes_only_the_asked_symbol(tmp_path: Path) -> None:
    from flow_helpers import outputs

    from candlewax.cli import main

    args = ["replay", str(USDM), "--venue", "binance-usdm", "--out", str(tmp_path)]
    assert main([*args, "--symbols", SUSHI, "--intervals", "1s"]) == 0
    out = outputs(tmp_path)
    assert out["trades"] and out["book"] and out["bars"]
    symbols = {r.get("symbol") for records in out.values() for r in records}
    assert symbols == {SUSHI}
    assert out["dead_letter"] == []  # filtered frames are dropped, not dead letters


def test_replay_command_rejects_a_symbol_the_capture_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from candlewax.cli import main

    args = ["replay", str(USDM), "--venue", "binance-usdm", "--out", str(tmp_path)]
    assert main([*args, "--symbols", f"BTC/USDT:USDT,{SUSHI}"]) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("candlewax replay: --symbols BTC/USDT:USDT: not in")
    assert "AKRO/USDT:USDT, CTK/USDT:USDT, KEEP/USDT:USDT, SUSHI/USDT:USDT" in error


# ---- which venue a capture was recorded from (issue 7 item 9) ----


@pytest.mark.parametrize(
    ("capture", "venue", "recorded"),
    [
        (USDM, "binance", "binance-usdm"),
        (USDM, "binance-usdm", None),
        (BTC, "binance-usdm", "binance"),
        (ETH, "binance", None),
        (OKX_V5, "binance", "okx"),
        (OKX_LEGACY, "okx", None),
    ],
)
def test_venue_mismatch(capture: Path, venue: str, recorded: str | None) -> None:
    from sources.capture_venue import venue_mismatch

    found = venue_mismatch(capture, venue)
    assert (found.recorded if found else None) == recorded


def test_venue_mismatch_of_a_recording_directory(tmp_path: Path) -> None:
    """A candlewax recording names the venue it was made from."""
    from sinks.recorder import Recorder
    from sources.capture_venue import venue_mismatch

    frames = list(itertools.islice(read_capture(USDM, "binance-usdm"), 50))
    recorder = Recorder(tmp_path)
    recorder.write_batch([(f, None) for f in frames])
    recorder.close()
    mismatch = venue_mismatch(tmp_path, "binance")
    assert mismatch is not None and mismatch.recorded == "binance-usdm"
    assert venue_mismatch(tmp_path, "binance-usdm") is None


def test_venue_mismatch_without_evidence_judges_nothing(tmp_path: Path) -> None:
    capture = tmp_path / "acks.txt"
    capture.write_text('1723161256000000001 {"result":null,"id":1}\n2 {"result":null,"id":2}\n')
    from sources.capture_venue import venue_mismatch

    assert venue_mismatch(capture, "binance-usdm") is None
