"""Kraken: the bundled v1 capture (the only real Kraken recording) through the parser,
the book rule and the replay CLI, checked against independent recomputations from the
raw capture lines (stdlib json, Decimal-sorted dict books, our own CRC32 string)."""

from __future__ import annotations

import gzip
import json
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from capture_lines import CAPTURES, capture_frames, capture_lines

from candlewax.cli import main
from operators.book import BookKeeper
from operators.events import DepthMsg
from sources.capture_venue import venue_mismatch
from sources.registry import make_parser

CAPTURE = CAPTURES / "kraken" / "cryptofeed_v1_book1000_trade_ticker_2021-04-17.jsonl.gz"
UNIFIED = {"XBT": "BTC", "XDG": "DOGE"}


def unified(pair: str) -> str:
    base, quote = pair.split("/")
    return f"{UNIFIED.get(base, base)}/{UNIFIED.get(quote, quote)}"


def data_arrays(path: Path = CAPTURE) -> list[list[Any]]:
    out = []
    for line in capture_lines(path):
        obj = json.loads(line.text)
        if isinstance(obj, list):
            out.append(obj)
    return out


def crc_text(text: str) -> str:
    return text.replace(".", "").lstrip("0")


class IndependentBook:
    """A dict book from the raw v1 levels, Decimal-sorted, cut to the channel depth."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.sides: dict[str, dict[str, str]] = {"a": {}, "b": {}}

    def apply(self, side: str, levels: list[list[str]]) -> None:
        book = self.sides[side]
        for level in levels:
            price, size = level[0], level[1]
            book.pop(next((p for p in book if Decimal(p) == Decimal(price)), price), None)
            if Decimal(size) != 0:
                book[price] = size
        for key in self.sorted(side)[self.depth :]:
            del book[key[0]]

    def sorted(self, side: str) -> list[tuple[str, str]]:
        return sorted(self.sides[side].items(), key=lambda kv: Decimal(kv[0]), reverse=side == "b")

    def checksum(self) -> int:
        parts = [crc_text(p) + crc_text(q) for p, q in self.sorted("a")[:10]]
        parts += [crc_text(p) + crc_text(q) for p, q in self.sorted("b")[:10]]
        return zlib.crc32("".join(parts).encode())


def independent_books() -> tuple[dict[str, IndependentBook], int]:
    books: dict[str, IndependentBook] = {}
    verified = 0
    for arr in data_arrays():
        channel, pair = arr[-2], arr[-1]
        if not channel.startswith("book-"):
            continue
        book = books.setdefault(pair, IndependentBook(int(channel[5:])))
        checksum = None
        for payload in arr[1:-2]:
            for key, value in payload.items():
                if key == "c":
                    checksum = int(value)
                else:
                    book.apply(key[0], value)
        if checksum is not None:
            assert book.checksum() == checksum, pair
            verified += 1
    return books, verified


def run_books(path: Path) -> tuple[dict[str, BookKeeper], list[dict[str, Any]]]:
    parser = make_parser("kraken")
    keepers: dict[str, BookKeeper] = {}
    statuses: list[dict[str, Any]] = []
    for frame in capture_frames(path, "kraken"):
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg):
                keeper = keepers.setdefault(item.symbol, BookKeeper("kraken", item.symbol))
                statuses += [o for o in keeper.on_msg(item) if o["type"] == "status"]
    return keepers, statuses


def test_all_4269_v1_checksums_verify_independently_and_in_the_book_rule() -> None:
    books, verified = independent_books()
    assert verified == 4269
    keepers, statuses = run_books(CAPTURE)
    assert statuses == []
    assert sum(k.checksum_checks for k in keepers.values()) == 4269
    assert sum(k.checksum_failures for k in keepers.values()) == 0
    assert len(keepers) == 10
    for pair, book in books.items():
        bids, asks = keepers[unified(pair)].book.top(1000)
        assert bids == book.sorted("b") and asks == book.sorted("a"), pair


def _altered_copy(tmp_path: Path, pair: str) -> Path:
    """A copy of the capture with the size of ``pair``'s best ask in its snapshot changed
    (the next update's checksum covers it)."""
    out = tmp_path / CAPTURE.name
    altered = 0
    with gzip.open(CAPTURE, "rt") as src, gzip.open(out, "wt") as dst:
        for line in src:
            rec = json.loads(line)
            if rec["t"] == "recv" and rec["data"].startswith("["):
                arr = json.loads(rec["data"])
                if arr[-1] == pair and "as" in arr[1]:
                    arr[1]["as"][0][1] = "123.45600000"  # a size the venue never sent
                    rec["data"] = json.dumps(arr, separators=(",", ":"))
                    line = json.dumps(rec) + "\n"
                    altered += 1
            dst.write(line)
    assert altered == 1
    return out


def test_an_altered_level_is_a_checksum_mismatch_for_that_pair_only(tmp_path: Path) -> None:
    keepers, statuses = run_books(_altered_copy(tmp_path, "XBT/CHF"))
    mismatches = [s for s in statuses if s["event"] == "checksum_mismatch"]
    assert len(mismatches) == 1
    assert mismatches[0]["symbol"] == "BTC/CHF"
    assert {s["symbol"] for s in statuses} == {"BTC/CHF"}
    others = [k for symbol, k in keepers.items() if symbol != "BTC/CHF"]
    assert all(k.synced and k.checksum_failures == 0 for k in others)
    assert not keepers["BTC/CHF"].synced  # cleared, waiting for a new snapshot


def _copy_without_update(tmp_path: Path, pair: str, nth: int) -> Path:
    """A copy of the capture without ``pair``'s nth book update."""
    out = tmp_path / CAPTURE.name
    seen = 0
    with gzip.open(CAPTURE, "rt") as src, gzip.open(out, "wt") as dst:
        for line in src:
            rec = json.loads(line)
            data = rec.get("data", "")
            if rec["t"] == "recv" and data.startswith("[") and '"book-' in data:
                arr = json.loads(data)
                if arr[-1] == pair and "c" in arr[-3]:  # an update (snapshots carry no c)
                    seen += 1
                    if seen == nth:
                        continue
            dst.write(line)
    assert seen > nth
    return out


def _top_changing_update(pair: str, after: int) -> int:
    """The number of ``pair``'s first update after its ``after``-th that changes its top 10."""
    book = IndependentBook(1000)
    seen = 0
    for arr in data_arrays():
        if arr[-1] != pair or not arr[-2].startswith("book-"):
            continue
        before = (book.sorted("a")[:10], book.sorted("b")[:10])
        for payload in arr[1:-2]:
            for key, value in payload.items():
                if key != "c":
                    book.apply(key[0], value)
        seen += "c" in arr[-3]
        if seen > after and (book.sorted("a")[:10], book.sorted("b")[:10]) != before:
            return seen
    raise AssertionError("no such update")


def test_a_dropped_update_is_detected_for_that_pair_only(tmp_path: Path) -> None:
    # No sequence numbers: the next checksum is what catches the lost update.
    # Only an update that changes the top 10 can be caught (the checksum covers the top 10).
    nth = _top_changing_update("XMR/USD", after=50)
    keepers, statuses = run_books(_copy_without_update(tmp_path, "XMR/USD", nth))
    assert [(s["symbol"], s["event"]) for s in statuses] == [
        ("XMR/USD", "checksum_mismatch"),
        ("XMR/USD", "resync_requested"),
    ]
    assert all(k.checksum_failures == 0 for s, k in keepers.items() if s != "XMR/USD")


def test_book_is_cut_to_the_subscribed_depth() -> None:
    # The capture's books never exceed their 1000 levels, so the cut is exercised as a
    # depth-10 subscription would need it: the same messages with depth 10 (checksums
    # dropped: they cover the venue's deeper book), against the independent book cut to 10.
    parser = make_parser("kraken")
    keepers: dict[str, BookKeeper] = {}
    books: dict[str, IndependentBook] = {}
    for frame in capture_frames(CAPTURE, "kraken"):
        for item in parser.parse(frame):
            if isinstance(item, DepthMsg):
                keeper = keepers.setdefault(item.symbol, BookKeeper("kraken", item.symbol))
                keeper.on_msg(item._replace(first_id=10, checksum=None))
                assert len(keeper.book.bids) <= 10 and len(keeper.book.asks) <= 10
    for arr in data_arrays():
        if arr[-2].startswith("book-"):
            book = books.setdefault(unified(arr[-1]), IndependentBook(10))
            for payload in arr[1:-2]:
                for key, value in payload.items():
                    if key != "c":
                        book.apply(key[0], value)
    for symbol, book in books.items():
        assert keepers[symbol].book.top(10) == (book.sorted("b"), book.sorted("a")), symbol


def test_replay_cli_gives_every_trade_once_with_exact_text(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = [str(CAPTURE), "--venue", "kraken", "--out", str(out)]
    assert main(["replay", *argv]) == 0
    trades = [json.loads(line) for line in (out / "trades.jsonl").read_text().splitlines()]
    expected = []
    for arr in data_arrays():
        if arr[-2] == "trade":
            for t in arr[1]:
                side = {"b": "buy", "s": "sell"}[t[3]]
                expected.append((unified(arr[-1]), t[0], t[1], side))
    got = [(t["symbol"], t["price"], t["size"], t["side"]) for t in trades if t["type"] == "trade"]
    assert sorted(got) == sorted(expected) and len(expected) == 10
    assert len({t["trade_id"] for t in trades if t["type"] == "trade"}) == 10
    assert (out / "status.jsonl").read_text() == ""
    assert (out / "dead_letter.jsonl").read_text() == ""


def test_capture_is_recognised_as_kraken() -> None:
    assert venue_mismatch(CAPTURE, "kraken") is None
    found = venue_mismatch(CAPTURE, "okx")
    assert found is not None and found.recorded == "kraken"


@pytest.mark.parametrize(
    ("native", "symbol"),
    [
        ("XBT/USD", "BTC/USD"),
        ("XDG/USD", "DOGE/USD"),
        ("BTC/USD", "BTC/USD"),
        ("ETH/XBT", "ETH/BTC"),
    ],
)
def test_kraken_names_map_to_unified_symbols(native: str, symbol: str) -> None:
    from candlewax.symbols import from_native, to_native

    assert from_native("kraken", native) == symbol
    assert to_native("kraken", symbol) == symbol  # v2 names are the unified ones
