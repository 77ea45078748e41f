"""Order book and per-venue sync rules: real captures plus synthetic edge cases."""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest
from capture_lines import CAPTURES, capture_frames

from candlewax import resync
from candlewax.schema import validate_record
from candlewax.symbols import SymbolMap
from operators.book import BookError, BookKeeper, OrderBook
from operators.checksum import kraken_checksum, kraken_level_text, okx_checksum
from operators.events import DepthMsg
from sources.binance import BinanceParser, BinanceUsdmParser
from sources.okx import OkxParser

BTC_FILE = "binance/hftbacktest_spot_btcusdt_20240808.txt.gz"
ETH_FILE = "binance/hftbacktest_spot_ethusdt_20240808.txt.gz"
USDM_FILE = "binance/cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
OKX_BOOKS = "okx/cryptofeed_v5_books_trades_tickers_2022-05-13.jsonl.gz"
OKX_L2_TBT = "okx/cryptofeed_legacy_books-l2-tbt_trades_tickers_2022-02-27.ws.txt.gz"

Out = list[dict[str, Any]]


@cache
def parsed(name: str, venue: str, symbols: tuple[str, ...] = ()) -> tuple[Any, ...]:
    """Depth messages and venue-ticker bbo dicts of one bundled capture, in order."""
    parser_cls: dict[str, Callable[[SymbolMap], Any]] = {
        "binance": BinanceParser,
        "binance-usdm": BinanceUsdmParser,
        "okx": OkxParser,
    }
    parser = parser_cls[venue](SymbolMap(venue, list(symbols)))
    items: list[Any] = []
    for frame in capture_frames(CAPTURES / name, venue):
        items += [
            it for it in parser.parse(frame) if isinstance(it, DepthMsg) or it["type"] == "bbo"
        ]
    return tuple(items)


def depth_msgs(name: str, venue: str, symbols: tuple[str, ...] = ()) -> list[DepthMsg]:
    return [it for it in parsed(name, venue, symbols) if isinstance(it, DepthMsg)]


def of_type(out: Out, kind: str) -> Out:
    return [o for o in out if o["type"] == kind]


def events(out: Out) -> list[str]:
    return [o["event"] for o in of_type(out, "status")]


@pytest.fixture
def resync_calls() -> Iterator[list[tuple[str, str, str]]]:
    """Listens on the resync bus for binance and okx; yields (venue, native, reason)."""
    calls: list[tuple[str, str, str]] = []

    def listener(venue: str) -> resync.Listener:
        return lambda native, reason: calls.append((venue, native, reason))

    removers = [resync.subscribe(v, listener(v)) for v in ("binance", "binance-usdm", "okx")]
    yield calls
    for remove in removers:
        remove()


def full_state(keeper: BookKeeper) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    return keeper.book.top(len(keeper.book))


# ---- real captures ----


@pytest.mark.parametrize(("name", "expected"), [(OKX_BOOKS, 290), (OKX_L2_TBT, 3679)])
def test_okx_checksum_of_every_book_state_in_the_captures(name: str, expected: int) -> None:
    keepers: dict[str, BookKeeper] = {}
    statuses: Out = []
    for msg in depth_msgs(name, "okx"):
        keeper = keepers.setdefault(msg.symbol, BookKeeper("okx", msg.symbol, depth=25))
        statuses += of_type(keeper.on_msg(msg), "status")
    assert statuses == []
    assert sum(k.checksum_checks for k in keepers.values()) == expected
    assert sum(k.checksum_failures for k in keepers.values()) == 0
    assert sum(k.applied for k in keepers.values()) == expected


@pytest.mark.parametrize(
    ("name", "symbol", "diffs"), [(BTC_FILE, "BTC/USDT", 3449), (ETH_FILE, "ETH/USDT", 3432)]
)
def test_binance_spot_syncs_from_capture_snapshot_and_runs_gap_free(
    name: str, symbol: str, diffs: int
) -> None:
    msgs = depth_msgs(name, "binance", (symbol,))
    snap_at = next(i for i, m in enumerate(msgs) if m.kind == "snapshot")
    assert snap_at > 0  # diffs arrive before the REST snapshot and must be buffered
    keeper = BookKeeper("binance", symbol, depth=20)
    outs = [keeper.on_msg(m) for m in msgs]
    assert all(out == [] for out in outs[:snap_at])
    first_book = of_type(outs[snap_at], "book")[0]
    assert first_book["sequence"] >= msgs[snap_at].last_id  # BTC: buffered diffs replayed
    everything = [o for out in outs for o in out]
    assert events(everything) == []
    assert keeper.gaps == 0 and keeper.synced
    assert keeper.applied - 1 == diffs  # minus the snapshot
    assert keeper.last_id == msgs[-1].last_id
    for record in everything:
        validate_record(record)
    assert all(len(of_type(out, "book")) == 1 for out in outs[snap_at:])  # emit_interval 0


def test_rebuilt_bbo_equals_book_ticker_at_the_same_update_id() -> None:
    """bookTicker is faster than the 100 ms diffs, so a ticker's u usually arrives
    before the diff ending at u: compare the book right after that diff."""
    keeper = BookKeeper("binance", "BTC/USDT", depth=1)
    bbo_at: dict[int, tuple[Any, Any]] = {}
    tickers: Out = []
    for item in parsed(BTC_FILE, "binance", ("BTC/USDT",)):
        if isinstance(item, DepthMsg):
            for out in of_type(keeper.on_msg(item), "bbo"):
                assert out["origin"] == "book"
            if keeper.synced and keeper.last_id is not None:
                bbo_at[keeper.last_id] = (keeper.book.best_bid(), keeper.book.best_ask())
        else:
            tickers.append(item)
    compared = [
        bbo_at[t["sequence"]] == ((t["bid_price"], t["bid_size"]), (t["ask_price"], t["ask_size"]))
        for t in tickers
        if t["sequence"] in bbo_at
    ]
    assert len(compared) == 564
    assert all(compared)


def test_binance_usdm_capture_syncs_every_symbol_gap_free() -> None:
    keepers: dict[str, BookKeeper] = {}
    statuses: Out = []
    for msg in depth_msgs(USDM_FILE, "binance-usdm"):
        keeper = keepers.setdefault(msg.symbol, BookKeeper("binance-usdm", msg.symbol))
        statuses += of_type(keeper.on_msg(msg), "status")
    assert len(keepers) == 4
    assert statuses == []
    assert all(k.synced and k.gaps == 0 and k.applied > 100 for k in keepers.values())


def test_dropped_diff_is_a_gap_and_a_later_snapshot_resyncs(
    resync_calls: list[tuple[str, str, str]],
) -> None:
    msgs = depth_msgs(BTC_FILE, "binance", ("BTC/USDT",))
    snap_at = next(i for i, m in enumerate(msgs) if m.kind == "snapshot")
    dropped, fresh_at, fresh_arrives = snap_at + 100, snap_at + 150, snap_at + 153
    # A reference book over the intact stream provides the "fresh" REST snapshot.
    ref = BookKeeper("binance", "BTC/USDT")
    for m in msgs[: fresh_at + 1]:
        ref.on_msg(m)
    bids, asks = full_state(ref)
    fresh = msgs[fresh_at]._replace(
        kind="snapshot", bids=bids, asks=asks, first_id=None, last_id=ref.last_id
    )
    stream = msgs[:dropped] + msgs[dropped + 1 : fresh_arrives] + [fresh] + msgs[fresh_arrives:]

    keeper = BookKeeper("binance", "BTC/USDT")
    outs = [keeper.on_msg(m) for m in stream]
    gap_out = outs[dropped]  # the diff after the dropped one
    assert events(gap_out) == ["gap_detected", "resync_requested"]
    assert f"U={msgs[dropped + 1].first_id}" in gap_out[0]["detail"]
    assert resync_calls == [("binance", "BTCUSDT", resync_calls[0][2])]
    assert resync_calls[0][2].startswith("gap_detected")
    assert all(out == [] for out in outs[dropped + 1 : fresh_arrives - 1])  # buffering
    resynced = outs[fresh_arrives - 1]
    assert events(resynced) == ["resynced"]
    assert of_type(resynced, "book")[0]["sequence"] == msgs[fresh_arrives - 1].last_id
    for m in msgs[fresh_at + 1 :]:
        ref.on_msg(m)
    assert full_state(keeper) == full_state(ref)
    assert (keeper.gaps, keeper.resync_requests, keeper.resyncs) == (1, 1, 1)


def test_corrupted_okx_level_triggers_checksum_mismatch(
    resync_calls: list[tuple[str, str, str]],
) -> None:
    msgs = [m for m in depth_msgs(OKX_BOOKS, "okx") if m.symbol == "BTC/USDT"]
    snapshot, update = msgs[0], msgs[5]
    keeper = BookKeeper("okx", "BTC/USDT")
    for m in msgs[:5]:
        keeper.on_msg(m)
    best_bid = keeper.book.best_bid()
    assert best_bid is not None and snapshot.kind == "snapshot" and update.kind == "update"
    corrupted = update._replace(bids=[*update.bids, (best_bid[0], best_bid[1] + "1")])
    out = keeper.on_msg(corrupted)
    assert events(out) == ["checksum_mismatch", "resync_requested"]
    assert of_type(out, "book") == [] and of_type(out, "bbo") == []
    assert resync_calls[0][:2] == ("okx", "BTC-USDT")
    assert keeper.checksum_failures == 1 and len(keeper.book) == 0
    assert keeper.on_msg(msgs[6]) == []  # updates wait for the resent snapshot
    out = keeper.on_msg(snapshot)
    assert events(out) == ["resynced"] and of_type(out, "book")
    for record in out:
        validate_record(record)


def test_keeper_pickles_mid_stream_and_continues_identically() -> None:
    msgs = depth_msgs(BTC_FILE, "binance", ("BTC/USDT",))
    keeper = BookKeeper("binance", "BTC/USDT", depth=5, emit_interval_us=250_000)
    for m in msgs[:1000]:
        keeper.on_msg(m)
    restored = pickle.loads(pickle.dumps(keeper))
    for m in msgs[1000:]:
        assert restored.on_msg(m) == keeper.on_msg(m)
    assert full_state(restored) == full_state(keeper)


# ---- synthetic: sequence rules ----


def okx(kind: str, seq: int | None, prev: int | None, bids: Any = (), **kw: Any) -> DepthMsg:
    fields: dict[str, Any] = dict(
        venue="okx", symbol="BTC/USDT", kind=kind, bids=list(bids), asks=[("101", "1")],
        first_id=None, last_id=seq, prev_id=prev, checksum=None, ts_exchange=1, ts_ingest=1,
    )  # fmt: skip
    if kind == "update":
        fields["asks"] = []
    fields.update(kw)
    return DepthMsg(**fields)


def test_okx_seq_chain_keep_alive_reset_and_gap(resync_calls: list[Any]) -> None:
    keeper = BookKeeper("okx", "BTC/USDT")
    assert of_type(keeper.on_msg(okx("snapshot", 10, -1, [("99", "1")])), "book")
    assert of_type(keeper.on_msg(okx("update", 15, 10, [("100", "2")])), "book")
    assert keeper.on_msg(okx("update", 15, 15)) == []  # keep-alive: nothing changed
    assert of_type(keeper.on_msg(okx("update", 3, 15, [("100", "3")])), "book")  # reset
    assert of_type(keeper.on_msg(okx("update", 5, 3, [("98", "1")])), "book")
    assert (keeper.gaps, keeper.seq_resets, keeper.last_id) == (0, 1, 5)
    out = keeper.on_msg(okx("update", 9, 7, [("97", "1")]))
    assert events(out) == ["gap_detected", "resync_requested"]
    assert "prevSeqId=7 != last seqId=5" in out[0]["detail"]
    assert resync_calls == [("okx", "BTC-USDT", resync_calls[0][2])]
    assert keeper.on_msg(okx("update", 11, 9, [("96", "1")])) == []
    out = keeper.on_msg(okx("snapshot", 20, -1, [("95", "1")]))
    assert events(out) == ["resynced"]
    assert of_type(out, "book")[0]["bids"] == [("95", "1")]
    assert of_type(out, "bbo")[0]["sequence"] == 20


def test_okx_checksum_absent_is_never_checked_and_present_is() -> None:
    keeper = BookKeeper("okx", "BTC/USDT")
    keeper.on_msg(okx("snapshot", 1, -1, [("99", "1")]))
    assert keeper.checksum_checks == 0
    good = okx_checksum([("99", "1"), ("98", "2")], [("101", "1")])
    assert events(keeper.on_msg(okx("update", 2, 1, [("98", "2")], checksum=good))) == []
    assert (keeper.checksum_checks, keeper.checksum_failures) == (1, 0)
    out = keeper.on_msg(okx("update", 3, 2, [("97", "2")], checksum=good))
    assert events(out)[0] == "checksum_mismatch"


def spot(kind: str, first: int | None, last: int, bids: Any = (), prev: Any = None) -> DepthMsg:
    return DepthMsg(
        "binance", "BTC/USDT", kind, list(bids), [("101", "1")], first, last, prev, None, 1, 1
    )


def test_binance_spot_snapshot_older_than_buffer_requests_another() -> None:
    keeper = BookKeeper("binance", "BTC/USDT")
    assert keeper.on_msg(spot("update", 200, 210, [("99", "1")])) == []
    out = keeper.on_msg(spot("snapshot", None, 150, [("98", "1")]))
    assert events(out) == ["gap_detected", "resync_requested"]
    assert not keeper.synced and len(keeper.book) == 0
    out = keeper.on_msg(spot("snapshot", None, 205, [("98", "1")]))
    assert events(out) == ["resynced"]
    assert of_type(out, "book")[0]["bids"] == [("99", "1"), ("98", "1")]
    assert keeper.on_msg(spot("update", 205, 210, [("97", "1")])) == []  # stale: u <= book id
    assert keeper.on_msg(spot("snapshot", None, 209)) == []  # older than the live book
    assert keeper.ignored == 2


def test_binance_usdm_first_diff_straddles_snapshot_then_pu_chains() -> None:
    def usdm(first: int, last: int, prev: int, price: str) -> DepthMsg:
        msg = spot("update", first, last, [(price, "1")], prev)
        return msg._replace(venue="binance-usdm", symbol="BTC/USDT:USDT")

    keeper = BookKeeper("binance-usdm", "BTC/USDT:USDT")
    keeper.on_msg(usdm(90, 99, 89, "90"))  # u < L: dropped
    keeper.on_msg(usdm(95, 100, 99, "95"))  # U <= L <= u: first applied
    snap = spot("snapshot", None, 100, [("80", "1")])._replace(
        venue="binance-usdm", symbol="BTC/USDT:USDT"
    )
    out = keeper.on_msg(snap)
    assert events(out) == [] and keeper.last_id == 100
    assert of_type(out, "book")[0]["bids"] == [("95", "1"), ("80", "1")]
    assert events(keeper.on_msg(usdm(101, 105, 100, "96"))) == []
    # A repeated diff (planned-reconnect overlap) is ignored, not a gap.
    assert keeper.on_msg(usdm(101, 105, 100, "96")) == []
    assert keeper.gaps == 0 and keeper.last_id == 105
    out = keeper.on_msg(usdm(107, 110, 106, "97"))
    assert events(out) == ["gap_detected", "resync_requested"]
    assert "pu=106 != last u=105" in out[0]["detail"]


# ---- synthetic: emission ----


def test_top_n_depth_and_emit_interval() -> None:
    keeper = BookKeeper("okx", "BTC/USDT", depth=2, emit_interval_us=1_000, emit_bbo=False)
    bids = [("99.5", "1"), ("100", "2"), ("98", "3")]
    out = keeper.on_msg(okx("snapshot", None, None, bids, ts_ingest=10_000))
    (book,) = of_type(out, "book")
    assert book["bids"] == [("100", "2"), ("99.5", "1")] and book["asks"] == [("101", "1")]
    assert book["depth"] == 2 and book["ts_ingest"] == 10_000
    validate_record(book)
    assert keeper.on_msg(okx("update", None, None, [("100", "0")], ts_ingest=10_500)) == []
    assert keeper.on_msg(okx("update", None, None, [("97", "1")], ts_ingest=10_900)) == []
    assert keeper.on_tick(10_999) == []
    (book,) = keeper.on_tick(11_000)
    assert book["bids"] == [("99.5", "1"), ("98", "3")] and book["ts_ingest"] == 10_900
    assert keeper.on_tick(50_000) == []  # unchanged since
    out = keeper.on_msg(okx("update", None, None, [("99.6", "1")], ts_ingest=12_000))
    assert of_type(out, "book")[0]["bids"][0] == ("99.6", "1")


def test_bbo_only_on_change_and_nothing_while_unsynced() -> None:
    keeper = BookKeeper("okx", "BTC/USDT", depth=1)
    assert keeper.on_msg(okx("update", None, None, [("99", "1")])) == []  # before snapshot
    out = keeper.on_msg(okx("snapshot", None, None, [("99", "1")]))
    (bbo,) = of_type(out, "bbo")
    assert (bbo["bid_price"], bbo["ask_size"], bbo["origin"]) == ("99", "1", "book")
    out = keeper.on_msg(okx("update", None, None, [("98", "5")]))
    assert of_type(out, "bbo") == [] and of_type(out, "book")  # deeper level only
    (bbo,) = of_type(keeper.on_msg(okx("update", None, None, [("99", "2")])), "bbo")
    assert bbo["bid_size"] == "2"
    validate_record(bbo)


def test_malformed_level_is_reported_not_raised() -> None:
    keeper = BookKeeper("okx", "BTC/USDT")
    keeper.on_msg(okx("snapshot", None, None, [("99", "1")]))
    out = keeper.on_msg(okx("update", None, None, [("abc", "1")]))
    assert events(out) == ["error", "resync_requested"] and keeper.malformed == 1
    out = keeper.on_msg(okx("snapshot", None, None, [("NaN", "1")]))
    assert events(out) == ["error", "resync_requested"] and keeper.malformed == 2
    with pytest.raises(BookError, match="unknown depth message kind"):
        keeper.on_msg(okx("delta", None, None))
    with pytest.raises(BookError, match="sent to the book of"):
        keeper.on_msg(okx("snapshot", None, None, symbol="ETH/USDT"))


@pytest.mark.parametrize(
    ("price", "size"),
    [("99", ""), ("99", "."), ("99", "-1"), ("99", "NaN"), ("99", "-Infinity"), ("-99", "1")],
)
def test_a_level_that_is_no_price_or_size_is_malformed(price: str, size: str) -> None:
    # Once taken silently: a blank size as a deletion, the others as levels.
    keeper = BookKeeper("okx", "BTC/USDT")
    keeper.on_msg(okx("snapshot", None, None, [("99", "1"), ("98", "1")]))
    out = keeper.on_msg(okx("update", None, None, [(price, size)]))
    assert events(out) == ["error", "resync_requested"] and keeper.malformed == 1
    out = keeper.on_msg(okx("snapshot", None, None, [(price, size)]))
    assert events(out) == ["error", "resync_requested"] and keeper.malformed == 2
    keeper.on_msg(okx("snapshot", None, None, [("99", "1")]))
    assert keeper.synced and full_state(keeper) == ([("99", "1")], [("101", "1")])


@pytest.mark.parametrize("field", ["first_id", "last_id", "prev_id", "checksum", "ts_ingest"])
def test_a_diff_with_a_non_integer_id_is_refused_before_it_is_buffered(field: str) -> None:
    # Buffered, it once raised only when the snapshot replayed the buffer: half way
    # through, losing the diffs after it.
    keeper = BookKeeper("binance", "BTC/USDT")
    keeper.on_msg(spot("update", 101, 105, [("99", "1")]))
    with pytest.raises(BookError, match=f"{field} '7' is not an integer"):
        keeper.on_msg(spot("update", 106, 110, [("98", "1")])._replace(**{field: "7"}))
    keeper.on_msg(spot("update", 106, 110, [("97", "1")]))
    out = keeper.on_msg(spot("snapshot", None, 100, [("96", "1")]))
    assert events(out) == []
    assert full_state(keeper)[0] == [("99", "1"), ("97", "1"), ("96", "1")]
    assert keeper.last_id == 110


# ---- OrderBook ----


def test_zero_size_removes_and_unknown_level_removal_is_harmless() -> None:
    book = OrderBook()
    book.replace([("61737.63000000", "1.00000000"), ("9.5", "1")], [("61800.1", "2")])
    book.apply([("1.0", "0.00000000"), ("61737.63", "0")], [("70000", "0E-8")])
    assert book.top(5) == ([("9.5", "1")], [("61800.1", "2")])  # same value, other text
    book.bids.set("10.0", "3")
    assert book.best_bid() == ("10.0", "3")  # ordered by value, not text
    assert book.bids.remove("10") and not book.bids.remove("10")
    assert len(book) == 2 and book.best_ask() == ("61800.1", "2")
    book.clear()
    assert book.best_bid() is None and book.top(3) == ([], [])


# ---- checksums ----


def test_okx_checksum_interleaves_and_continues_the_longer_side() -> None:
    bids = [("3366.1", "7"), ("3366", "6"), ("3365", "1")]
    asks = [("3366.8", "9")]
    text = "3366.1:7:3366.8:9:3366:6:3365:1"
    crc = zlib.crc32(text.encode())
    assert okx_checksum(bids, asks) == (crc - 2**32 if crc >= 2**31 else crc)
    many = [(str(1000 - i), "1") for i in range(30)]
    assert okx_checksum(many, []) == okx_checksum(many[:25], [])


def test_kraken_checksum_from_the_documented_example() -> None:
    # exchange-protocols.md section 3: "45285.2" -> "452852", "0.00100000" -> "100000"
    assert kraken_level_text("45285.2") == "452852"
    assert kraken_level_text("0.00100000") == "100000"
    asks = [("45285.2", "0.00100000"), ("45286.4", "1.54582015")]
    bids = [("45283.5", "0.10000000"), ("45283.4", "1.54582015")]
    text = "452852100000" "452864154582015" "45283510000000" "452834154582015"  # fmt: skip
    assert kraken_checksum(bids, asks) == zlib.crc32(text.encode())
    deep = [(f"{45000 - i}.0", "1.0") for i in range(12)]
    assert kraken_checksum(deep, []) == kraken_checksum(deep[:10], [])


def test_okx_repeated_update_is_ignored_not_a_gap(resync_calls: list[Any]) -> None:
    keeper = BookKeeper("okx", "BTC/USDT")
    keeper.on_msg(okx("snapshot", 10, -1, [("99", "1")]))
    keeper.on_msg(okx("update", 15, 10, [("100", "2")]))
    keeper.on_msg(okx("update", 18, 15, [("100", "3")]))
    # The same two updates delivered again (duplicate / reconnect overlap).
    assert keeper.on_msg(okx("update", 15, 10, [("100", "2")])) == []
    assert keeper.on_msg(okx("update", 18, 15, [("100", "3")])) == []
    assert (keeper.gaps, keeper.last_id, resync_calls) == (0, 18, [])
    assert keeper.book.best_bid() == ("100", "3")
