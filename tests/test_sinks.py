"""Output sinks (stdout, JSONL directory, Parquet bars) and the raw-frame recorder."""

from __future__ import annotations

import functools
import gzip
import io
import itertools
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from candlewax.schema import (
    CHANNELS,
    Bar,
    decimal_text,
    make_bbo,
    make_dead_letter,
    make_status,
    make_trade,
    validate_record,
)
from sinks.base import SinkError
from sinks.jsonl import JsonlSink
from sinks.parquet import BAR_SCHEMA, ParquetBarSink, read_bars
from sinks.recorder import Recorder, gzip_member, recording_path, safe_name
from sinks.stdout import StdoutSink
from sources.frames import RawFrame
from sources.replay import MalformedLine, ReplayStats, iter_capture, read_capture

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "captures"
BTC = CAPTURES / "binance" / "hftbacktest_spot_btcusdt_20240808.txt.gz"
OKX_V5 = CAPTURES / "okx" / "cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"

Record = dict[str, Any]


def btc_frames(n: int) -> list[RawFrame]:
    return list(itertools.islice(read_capture(BTC, "binance"), n))


def real_trades(n: int) -> list[Record]:
    """Trade records built from the first n trade frames of the BTC capture."""
    out = []
    for frame in read_capture(BTC, "binance"):
        if '"e":"trade"' not in frame.text:
            continue
        d = orjson.loads(frame.text)["data"]
        side = "sell" if d["m"] else "buy"
        out.append(
            make_trade(
                "binance",
                "BTC/USDT",
                d["T"] * 1000,
                frame.ts_ingest,
                str(d["t"]),
                d["p"],
                d["q"],
                side,
            )
        )
        if len(out) == n:
            break
    return out


def real_bars() -> list[Record]:
    return [dict(bar) for bar in _real_bars()]


@functools.cache
def _real_bars() -> tuple[Record, ...]:
    """Final 1m bars computed from every real trade of the BTC capture (exact decimals)."""
    bars: dict[int, list[Record]] = {}
    for trade in real_trades(10**6):
        bars.setdefault(trade["ts_exchange"] // 60_000_000 * 60_000_000, []).append(trade)
    out = []
    for start, trades in sorted(bars.items()):
        prices = [Decimal(t["price"]) for t in trades]
        sizes = [Decimal(t["size"]) for t in trades]
        volume = sum(sizes, Decimal(0))
        quote = sum((p * s for p, s in zip(prices, sizes, strict=True)), Decimal(0))
        buy = sum((Decimal(t["size"]) for t in trades if t["side"] == "buy"), Decimal(0))
        bar = {
            "type": "bar",
            "schema_version": 1,
            "venue": "binance",
            "symbol": "BTC/USDT",
            "interval": "1m",
            "start": start,
            "end": start + 60_000_000,
            "open": trades[0]["price"],
            "high": max(trades, key=lambda t: Decimal(t["price"]))["price"],
            "low": min(trades, key=lambda t: Decimal(t["price"]))["price"],
            "close": trades[-1]["price"],
            "volume": decimal_text(volume),
            "quote_volume": decimal_text(quote),
            "vwap": decimal_text(quote / volume),
            "buy_volume": decimal_text(buy),
            "sell_volume": decimal_text(volume - buy),
            "trades": len(trades),
            "first_trade_id": trades[0]["trade_id"],
            "last_trade_id": trades[-1]["trade_id"],
            "final": True,
            "filled": False,
        }
        validate_record(bar)
        out.append(bar)
    return tuple(out)


def empty_bar(start: int) -> Record:
    bar = real_bars()[0] | {"start": start, "end": start + 60_000_000, "filled": True, "trades": 0}
    bar |= {
        k: None for k in ("open", "high", "low", "close", "vwap", "first_trade_id", "last_trade_id")
    }
    bar |= {k: "0" for k in ("volume", "quote_volume", "buy_volume", "sell_volume")}
    validate_record(bar)
    return bar


def one_of_each() -> list[Record]:
    trade = real_trades(1)[0]
    records = [
        trade,
        real_bars()[0],
        make_bbo(
            "binance",
            "BTC/USDT",
            1,
            2,
            ("61837.63000000", "3.78826000"),
            None,
            50093239212,
            "ticker",
        ),
        {
            "type": "book",
            "schema_version": 1,
            "venue": "binance",
            "symbol": "BTC/USDT",
            "ts_exchange": 1,
            "ts_ingest": 2,
            "depth": 1,
            "bids": [("61837.63000000", "3.78826000")],
            "asks": [("61837.64000000", "1.54698000")],
            "sequence": 50093239212,
        },
        make_status("binance", "BTC/USDT", "gap_detected", 3, "U 5 != 4"),
        {"type": "late", "schema_version": 1, "interval": "1m", "window_start": 0, "trade": trade},
        make_dead_letter("binance", 4, "invalid JSON", '{"stream":'),
    ]
    for r in records:
        validate_record(r)
    return records


# ---- stdout ----


def test_stdout_sink_text_and_binary_streams_in_order() -> None:
    records = one_of_each()
    text = io.StringIO()
    StdoutSink(text).write_batch(records)
    assert [orjson.loads(line) for line in text.getvalue().splitlines()] == [
        orjson.loads(orjson.dumps(r)) for r in records
    ]
    raw = io.BytesIO()
    sink = StdoutSink(raw, channels=["trades", "dead_letter"])
    sink.write_batch(records)
    sink.close()
    types = [orjson.loads(line)["type"] for line in raw.getvalue().splitlines()]
    assert types == ["trade", "dead_letter"]


def test_stdout_sink_rejects_unknown_channel_and_type() -> None:
    with pytest.raises(ValueError, match="unknown channels"):
        StdoutSink(io.StringIO(), channels=["candles"])
    with pytest.raises(SinkError, match="no known 'type'"):
        StdoutSink(io.StringIO()).write_batch([{"type": "candle"}])


# ---- JSONL directory ----


def read_jsonl(path: Path) -> list[Record]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_jsonl_sink_one_file_per_channel_flushed_per_batch(tmp_path: Path) -> None:
    out = tmp_path / "out" / "nested"
    sink = JsonlSink(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{c}.jsonl" for c in CHANNELS)
    records = one_of_each()
    sink.write_batch(records)
    # Read while the sink is still open: everything of the batch is on disk.
    assert [r["type"] for r in read_jsonl(out / "book.jsonl")] == ["bbo", "book"]
    assert read_jsonl(out / "trades.jsonl") == [records[0]]
    assert read_jsonl(out / "late.jsonl")[0]["trade"] == records[0]
    assert read_jsonl(out / "bars.jsonl")[0]["volume"] == records[1]["volume"]
    assert len(read_jsonl(out / "status.jsonl")) == len(read_jsonl(out / "dead_letter.jsonl")) == 1
    sink.write_batch(real_trades(3)[1:])
    assert [r["trade_id"] for r in read_jsonl(out / "trades.jsonl")] == [
        t["trade_id"] for t in real_trades(3)
    ]
    assert (out / "trades.jsonl").read_bytes().endswith(b"}\n")
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.write_batch(records)


def test_jsonl_sink_truncates_by_default_and_appends_on_request(tmp_path: Path) -> None:
    trades = real_trades(2)
    with_first = JsonlSink(tmp_path)
    with_first.write_batch(trades[:1])
    with_first.close()
    appended = JsonlSink(tmp_path, append=True)
    appended.write_batch(trades[1:])
    appended.close()
    assert read_jsonl(tmp_path / "trades.jsonl") == trades
    JsonlSink(tmp_path).close()
    assert (tmp_path / "trades.jsonl").read_bytes() == b""


def test_jsonl_sink_channel_filter_and_all_or_nothing_batches(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, channels=["trades"])
    assert [p.name for p in tmp_path.iterdir()] == ["trades.jsonl"]
    trades = real_trades(2)
    with pytest.raises(SinkError):
        sink.write_batch([trades[0], {"type": "nope"}])
    assert (tmp_path / "trades.jsonl").read_bytes() == b""  # bad batch left nothing behind
    sink.write_batch([*one_of_each(), trades[1] | {"price": Decimal("61837.6300")}])
    sink.close()
    lines = read_jsonl(tmp_path / "trades.jsonl")
    assert [r["type"] for r in lines] == ["trade", "trade"]
    assert lines[1]["price"] == "61837.63"  # a stray Decimal is still exact text


# ---- recorder ----


def test_recorder_round_trip_is_identical(tmp_path: Path) -> None:
    frames = btc_frames(2000)
    assert any(f.hint for f in frames)  # the REST snapshot is in there
    rec = Recorder(tmp_path)
    for i in range(0, len(frames), 300):
        rec.write_batch([(f, "BTC/USDT") for f in frames[i : i + 300]])
    rec.close()
    (path,) = (tmp_path / "binance" / "BTC_USDT").iterdir()
    assert path.name == "2024-08-08.ndjson.gz"
    stats = ReplayStats()
    assert list(read_capture(path, "binance", stats=stats)) == frames
    assert stats.snapshots == 1
    first = orjson.loads(gzip.decompress(path.read_bytes()).splitlines()[0])
    assert first == {
        "ts_ingest": frames[0].ts_ingest,
        "venue": "binance",
        "conn_id": frames[0].conn_id,
        "hint": None,
        "raw": frames[0].text,
    }


def test_recorder_file_is_readable_while_open(tmp_path: Path) -> None:
    frames = btc_frames(50)
    rec = Recorder(tmp_path)
    rec.write_batch([(f, "BTC/USDT") for f in frames[:20]])
    (path,) = rec.open_files()
    with gzip.open(path, "rb") as fh:
        assert len(fh.read().splitlines()) == 20
    rec.write_batch([(f, "BTC/USDT") for f in frames[20:]])
    assert rec.open_files() == [path]
    assert list(read_capture(path, "binance")) == frames
    rec.close()


def test_recorder_splits_by_venue_symbol_and_utc_day(tmp_path: Path) -> None:
    midnight = 1723161600_000_000  # 2024-08-09T00:00:00Z
    frames = [
        RawFrame("okx", "c1", midnight - 1, '{"a":1}'),
        RawFrame("okx", "c1", midnight, '{"a":2}'),
        RawFrame("okx", "c1", midnight + 5, '{"event":"subscribe"}'),
        RawFrame("binance-usdm", "c2", midnight + 1, '{"b":1}', "depth_snapshot:BTCUSDT"),
    ]
    rec = Recorder(tmp_path, max_open_files=1)  # forces close / reopen in append mode
    symbols = ["BTC/USDT", "BTC/USDT", None, "BTC/USDT:USDT"]
    for frame, symbol in zip(frames, symbols, strict=True):
        rec.write_batch([(frame, symbol)])
    rec.write_batch([(frames[1], "BTC/USDT")])
    rec.close()
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.ndjson.gz"))
    assert files == [
        "binance-usdm/BTC_USDT_USDT/2024-08-09.ndjson.gz",
        "okx/BTC_USDT/2024-08-08.ndjson.gz",
        "okx/BTC_USDT/2024-08-09.ndjson.gz",
        "okx/_unknown/2024-08-09.ndjson.gz",
    ]
    day2 = tmp_path / "okx" / "BTC_USDT" / "2024-08-09.ndjson.gz"
    assert list(read_capture(day2, "okx")) == [frames[1], frames[1]]
    # A recording directory replays one venue, merged across symbols and days by time.
    assert list(read_capture(tmp_path, "okx")) == [frames[0], frames[1], frames[1], frames[2]]
    assert list(read_capture(tmp_path, "binance-usdm")) == [frames[3]]
    assert recording_path(tmp_path, frames[3], "BTC/USDT:USDT") == tmp_path / files[0]


def test_recorded_okx_capture_replays_merged_by_time(tmp_path: Path) -> None:
    frames = list(read_capture(OKX_V5, "okx"))

    def symbol(frame: RawFrame) -> str | None:
        inst = orjson.loads(frame.text).get("arg", {}).get("instId")
        return None if "event" in frame.text[:12] else inst.replace("-", "/", 1)

    rec = Recorder(tmp_path)
    rec.write_batch([(f, symbol(f)) for f in frames])
    rec.close()
    assert len(list((tmp_path / "okx").iterdir())) == 4  # 3 instruments + acks
    replayed = list(read_capture(tmp_path, "okx"))
    assert sorted(replayed) == sorted(frames)
    assert [f.ts_ingest for f in replayed] == sorted(f.ts_ingest for f in frames)


def test_crash_mid_member_loses_only_that_batch(tmp_path: Path) -> None:
    frames = btc_frames(30)
    rec = Recorder(tmp_path)
    rec.write_batch([(f, "BTC/USDT") for f in frames[:10]])
    rec.close()
    (path,) = (tmp_path / "binance" / "BTC_USDT").iterdir()
    lost = gzip_member(b"".join(orjson.dumps({"raw": f.text}) + b"\n" for f in frames[10:]))
    with path.open("ab") as fh:
        fh.write(lost[: len(lost) // 2])
    items = list(iter_capture(path, "binance"))
    assert items[:10] == frames[:10]
    assert isinstance(items[-1], MalformedLine)


def test_safe_names() -> None:
    assert safe_name("BTC/USDT:USDT") == "BTC_USDT_USDT"
    assert safe_name("BTC/USD:BTC-220624-20000-C") == "BTC_USD_BTC-220624-20000-C"
    assert safe_name(None) == safe_name("") == safe_name("..") == "_unknown"
    assert safe_name("a/../b") == "a_.._b"


# ---- Parquet bars ----


def test_bar_schema_matches_the_contract() -> None:
    assert list(BAR_SCHEMA) == list(Bar.model_fields)


def test_parquet_round_trip_exact_and_part_files(tmp_path: Path) -> None:
    bars = real_bars()
    assert len(bars) >= 5
    bars.append(empty_bar(bars[-1]["end"]))
    sink = ParquetBarSink(tmp_path, rows_per_file=2)
    sink.write_batch([*bars[:3], bars[3] | {"final": False}, *real_trades(2)])
    assert len(sink.files_written) == 1  # two bars written, one buffered
    first_bytes = sink.files_written[0].read_bytes()
    sink.write_batch(bars[3:])
    sink.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == sorted(p.name for p in sink.files_written)
    assert len(files) == (len(bars) + 1) // 2
    assert all(name.startswith(f"bars-{i:06d}-") for i, name in enumerate(files))
    assert sink.files_written[0].read_bytes() == first_bytes  # never rewritten
    assert sink.ignored == 3
    frame = read_bars(tmp_path)
    assert frame.schema == pl.Schema(BAR_SCHEMA)
    assert frame.to_dicts() == bars  # exact decimal text, nulls and ints preserved
    assert any(len(b["vwap"] or "") > 20 for b in bars)  # long computed decimals survive


def test_parquet_rejects_bad_bars_without_losing_the_buffer(tmp_path: Path) -> None:
    bars = real_bars()
    sink = ParquetBarSink(tmp_path, rows_per_file=100)
    sink.write_batch(bars[:1])
    with pytest.raises(SinkError, match="'close'"):
        sink.write_batch([bars[1] | {"close": 61837.63}])
    with pytest.raises(SinkError, match="missing"):
        sink.write_batch([{k: v for k, v in bars[1].items() if k != "vwap"}])
    sink.flush()
    assert read_bars(tmp_path).to_dicts() == bars[:1]
    assert read_bars(tmp_path / "nowhere").is_empty()
