"""Prices and sizes that break the published schema never reach a sink.

Real captures get doctored copies of real frames (one number replaced by NaN,
"", -5, 1e400, a JSON number, ...) inserted right after their originals. Each
copy must become a dead letter with its raw text and a reason naming the field
and the value; every record that reaches the sinks must validate against the
schema; and every other output must equal that of the clean capture. Replay
covers trades, depth diffs, REST/in-band snapshots and tickers of Binance spot,
Binance USD-M and OKX; live does the same over real WebSockets (the simulator
serves the doctored frames), except the REST snapshot, which the simulator
builds itself.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from flow_helpers import BTC_SPOT, CAPTURES, OKX_V5, Record, run_replay
from live_helpers import Feed, run_live

from candlewax.schema import DECIMAL_RE, POSITIVE_DECIMAL_RE, validate_record
from flows import inputs
from simulator.embedded import SimulatorThread
from simulator.tape import Entry, Tape, load_tape
from sources import numbers
from sources.frames import SNAPSHOT_HINT, RawFrame
from sources.registry import make_parser
from sources.venue import FrameError

pytestmark = pytest.mark.timeout(300)

USDM = CAPTURES / "binance" / "cryptofeed_usdm_2021-07-22_4symbols.jsonl.gz"
LINES = 3000  # capture lines replayed: enough for every kind of frame, quick to run

# What venues have been seen to send, or what a broken feed could: none is decimal text.
NOT_DECIMAL: list[Any] = [
    "NaN",
    "nan",
    "abc",
    "",
    "Infinity",
    "-5",
    "1e400",
    "1E-8",
    "+1",
    " 1",
    "1 ",
    "1.",
    ".5",
    "1.2.3",
    "٣",  # a non-ASCII digit
    61837.63,  # a JSON number where the venue sends strings
    5,
    None,
]
# Decimal text, but zero where the value must be positive.
ZERO = ["0", "0.00000000"]

Path_ = list[str | int]  # keys into a frame, e.g. ["data", "b", 0, 0]


@dataclasses.dataclass(frozen=True)
class Site:
    """One number in one kind of frame, and the name the reason must use for it."""

    kind: str  # picks the frame to doctor (see KINDS)
    path: Path_
    field: str
    zero_ok: bool = False  # a book update's size: zero deletes the level

    def values(self) -> list[Any]:
        return NOT_DECIMAL if self.zero_ok else [*NOT_DECIMAL, *ZERO]


def _binance_sites(data: Path_, trade: str, p: str, q: str) -> list[Site]:
    return [
        Site(trade, [*data, "p"], p),
        Site(trade, [*data, "q"], q),
        Site("depthUpdate", [*data, "b", 0, 0], "depthUpdate b[0] price"),
        Site("depthUpdate", [*data, "a", 0, 1], "depthUpdate a[0] size", zero_ok=True),
        Site("snapshot", ["bids", 0, 1], "depth snapshot bids[0] size"),
        Site("snapshot", ["asks", 0, 0], "depth snapshot asks[0] price"),
        Site("bookTicker", [*data, "b"], "bookTicker b"),
        Site("bookTicker", [*data, "A"], "bookTicker A"),
    ]


SITES = {
    "binance": _binance_sites(["data"], "trade", "trade p", "trade q"),
    "binance-usdm": _binance_sites(["data"], "aggTrade", "aggTrade p", "aggTrade q"),
    "okx": [
        Site("trades", ["data", 0, "px"], "okx trades px"),
        Site("trades", ["data", 0, "sz"], "okx trades sz"),
        Site("books snapshot", ["data", 0, "bids", 0, 1], "okx snapshot bids[0] size"),
        Site("books snapshot", ["data", 0, "asks", 0, 0], "okx snapshot asks[0] price"),
        Site("books update", ["data", 0, "bids", 0, 0], "okx update bids[0] price"),
        Site("books update", ["data", 0, "asks", 0, 1], "okx update asks[0] size", True),
        Site("tickers", ["data", 0, "bidPx"], "okx tickers bidPx"),
        Site("tickers", ["data", 0, "askSz"], "okx tickers askSz"),
    ],
}
CAPTURE = {"binance": BTC_SPOT, "binance-usdm": USDM, "okx": OKX_V5}


def _kind(venue: str, frame: Any) -> str | None:
    """The kind of a decoded frame, as named in SITES."""
    if not isinstance(frame, dict):
        return None
    if venue == "okx":
        arg = frame.get("arg") or {}
        channel, action = arg.get("channel"), frame.get("action")
        if "event" in frame or "data" not in frame:
            return None
        return f"{channel} {action}" if channel == "books" else channel
    if "lastUpdateId" in frame:
        return "snapshot"
    data = frame.get("data") or {}
    return "bookTicker" if data.get("e") is None and "B" in data else data.get("e")


def _usable(kind: str, frame: Any) -> bool:
    """Frames whose doctored numbers exist: non-empty level lists on both sides."""
    if kind in ("depthUpdate", "snapshot", "books update", "books snapshot"):
        body = frame["data"][0] if "arg" in frame else frame.get("data", frame)
        bids, asks = (body["b"], body["a"]) if "b" in body else (body["bids"], body["asks"])
        return bool(bids) and bool(asks)
    return True


def _set(frame: Any, path: Path_, value: Any) -> Any:
    doctored = copy.deepcopy(frame)
    target = doctored
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doctored


@dataclasses.dataclass(frozen=True)
class Doctored:
    original: str  # frame text of the real frame
    text: str  # its doctored copy
    field: str
    value: Any


def _frame_of(line: str) -> tuple[str, Callable[[str], str]]:
    """Frame text of a capture line (hftbacktest ``<ts> <frame>`` or cryptofeed JSON
    lines) and how to write a line holding another frame at the same time."""
    if line.startswith("{"):
        record = orjson.loads(line)
        if record.get("t") not in ("recv", "http"):
            return "", lambda text: line
        return record["data"], lambda text: orjson.dumps({**record, "data": text}).decode()
    ts, _, text = line.partition(" ")
    return text, lambda new: f"{ts} {new}"


def doctor(venue: str, tmp: Path) -> tuple[Path, Path, list[Doctored]]:
    """A clean and a doctored copy of the first LINES lines of the venue's capture."""
    with gzip.open(CAPTURE[venue], "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(LINES), f, strict=False)]
    pending: dict[str, list[Site]] = {}
    for site in SITES[venue]:
        pending.setdefault(site.kind, []).append(site)
    out: list[str] = []
    made: list[Doctored] = []
    for line in lines:
        out.append(line)
        text, relined = _frame_of(line)
        if not text or text == "pong":
            continue
        frame = orjson.loads(text)
        kind = _kind(venue, frame)
        sites = pending.get(kind or "")
        if not sites or not _usable(kind or "", frame):
            continue
        del pending[kind or ""]
        for site in sites:
            for value in site.values():
                bad = orjson.dumps(_set(frame, site.path, value)).decode()
                out.append(relined(bad))
                made.append(Doctored(text, bad, site.field, value))
    assert not pending, f"{venue}: no frame of kind {list(pending)} in the first {LINES} lines"
    name = CAPTURE[venue].name
    clean, bad = tmp / "clean", tmp / "doctored"
    for directory, content in ((clean, lines), (bad, out)):
        directory.mkdir()
        with gzip.open(directory / name, "wt", encoding="utf-8") as f:
            f.write("\n".join(content) + "\n")
    return clean / name, bad / name, made


def assert_all_valid(records: dict[str, list[Record]]) -> None:
    for channel, items in records.items():
        for record in items:
            validate_record(record)  # raises on a number the schema forbids
        assert channel == "dead_letter" or all(r["type"] != "dead_letter" for r in items)


def assert_dead_letters(letters: list[Record], made: list[Doctored]) -> None:
    by_raw = {letter["raw"]: letter for letter in letters}
    missing = [d for d in made if d.text not in by_raw]
    assert not missing, f"{len(missing)} doctored frames reached no dead letter: {missing[:3]}"
    for d in made:
        reason = by_raw[d.text]["reason"]
        assert d.field in reason and repr(d.value) in reason, (d.field, d.value, reason)
    assert len(letters) == len(made)  # and nothing else became a dead letter


# ---- replay ----


@pytest.mark.parametrize("venue", ["binance", "binance-usdm", "okx"])
def test_replay_dead_letters_every_bad_number_and_loses_nothing(venue: str, tmp_path: Path) -> None:
    clean, doctored, made = doctor(venue, tmp_path)
    expected = run_replay(clean, venue, tmp_path / "out-clean")
    got = run_replay(doctored, venue, tmp_path / "out-doctored")

    assert_dead_letters(got["dead_letter"], made)
    assert_all_valid(got)
    assert expected["trades"] and expected["book"] and expected["bars"]
    for channel in ("trades", "bars", "book", "status", "late"):
        # book.jsonl interleaves the book step's and the parser's bbo records by batch
        assert _canonical(got[channel]) == _canonical(expected[channel]), channel


def _canonical(records: list[Record]) -> list[bytes]:
    return sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)


# ---- live: the simulator serves the doctored frames over a real WebSocket ----

# The OKX live source subscribes to bbo-tbt; the capture holds tickers. Tape keys only
# route frames, so those are served on the subscribed stream (the parser reads the kind
# from the frame itself).
_ROUTE = (("tickers:", "bbo-tbt:"),)


def _routed(key: str) -> str:
    for old, new in _ROUTE:
        key = key.replace(old, new)
    return key


def _doctored_tape(venue: str, clean: Path, made: list[Doctored]) -> tuple[Tape, Tape]:
    tape = load_tape(clean, venue)
    tape.entries = [dataclasses.replace(e, key=_routed(e.key)) for e in tape.entries]
    by_original: dict[str, list[Doctored]] = {}
    for d in made:
        by_original.setdefault(d.original, []).append(d)
    entries: list[Entry] = []
    for entry in tape.entries:
        entries.append(entry)
        for d in by_original.get(entry.text, []):
            # A plain entry: the simulator sends its text and keeps it out of its book.
            entries.append(Entry(0, entry.ts, entry.key, d.text))
    entries = [dataclasses.replace(e, index=n) for n, e in enumerate(entries)]
    return tape, Tape(tape.venue, entries, tape.seeds, tape.skipped)


def _expected(venue: str, tape: Tape) -> tuple[set[str], list[Record], int]:
    """Symbols of the tape, its trades and its number of venue BBOs, parsed from the
    clean frames."""
    parser = make_parser(venue, None)
    items = [i for e in tape.entries for i in parser.parse(frame(venue, orjson.loads(e.text)))]
    symbols = {i["symbol"] if isinstance(i, dict) else i.symbol for i in items}
    trades = [i for i in items if isinstance(i, dict) and i["type"] == "trade"]
    tickers = sum(1 for i in items if isinstance(i, dict) and i["type"] == "bbo")
    return symbols, trades, tickers


def _trade_key(t: Record) -> tuple[str, str, str, str, str]:
    return (t["symbol"], t["trade_id"], t["price"], t["size"], t["side"])


@pytest.mark.parametrize("venue", ["binance", "binance-usdm", "okx"])
def test_live_dead_letters_every_bad_number_and_loses_nothing(venue: str, tmp_path: Path) -> None:
    clean, _, made = doctor(venue, tmp_path)
    tape, doctored = _doctored_tape(venue, clean, made)
    served = {e.text for e in doctored.entries}
    over_ws = [d for d in made if d.text in served]
    # Only the REST snapshot is not sent over the WebSocket (the simulator builds it).
    assert len(over_ws) == len([d for d in made if not d.field.startswith("depth snapshot")])
    symbols, trades, tickers = _expected(venue, tape)
    assert trades and tickers
    # Original times: the dead letters must carry the doctored text byte for byte.
    feed = Feed(venue, sorted(symbols), SimulatorThread(venue, doctored, original_times=True))
    ops = {"book": {"depth": 5, "emit_interval_ms": 0}, "ohlcv": {"intervals": ["1s"]}}

    def all_trades(records: dict[str, list[Record]]) -> bool:
        return len(records.get("trades", [])) >= len(trades)

    try:
        records = run_live([feed], tmp_path / "out", ops, all_trades, timeout_s=150)
    finally:
        inputs.STOP.clear()  # run_live ends with STOP set; tests running flows directly follow

    assert_all_valid(records)
    assert_dead_letters(records["dead_letter"], over_ws)
    assert sorted(map(_trade_key, records["trades"])) == sorted(map(_trade_key, trades))
    bbos = [r for r in records["book"] if r["type"] == "bbo" and r["origin"] == "ticker"]
    assert len(bbos) == tickers


# ---- parser level: what the captures do not hold ----


def frame(venue: str, obj: Any, hint: str | None = None) -> RawFrame:
    return RawFrame(venue, "c", 1, orjson.dumps(obj).decode(), hint)


def parse(venue: str, obj: Any, hint: str | None = None) -> list[Any]:
    return make_parser(venue, None).parse(frame(venue, obj, hint))


OKX_BBO = {
    "arg": {"channel": "bbo-tbt", "instId": "BTC-USDT"},
    "data": [
        {"bids": [["30000.1", "2", "0", "1"]], "asks": [["30000.2", "3", "0", "1"]], "ts": "1"}
    ],
}


@pytest.mark.parametrize("value", [*NOT_DECIMAL, *ZERO])
@pytest.mark.parametrize(("side", "index", "field"), [("bids", 0, "price"), ("asks", 1, "size")])
def test_okx_bbo_tbt_bad_numbers_are_frame_errors(
    value: Any, side: str, index: int, field: str
) -> None:
    bad = _set(OKX_BBO, ["data", 0, side, 0, index], value)
    with pytest.raises(FrameError) as err:
        parse("okx", bad)
    assert f"okx bbo-tbt {side}[0] {field}" in str(err.value) and repr(value) in str(err.value)


def test_empty_ticker_sides_become_null_not_zero() -> None:
    # Binance writes an empty side as zeros; OKX tickers as empty strings.
    ticker = {"u": 7, "s": "BTCUSDT", "b": "0.00000000", "B": "0.00000000", "a": "1", "A": "2"}
    [bbo] = parse("binance", ticker)
    assert (bbo["bid_price"], bbo["bid_size"], bbo["ask_price"]) == (None, None, "1")
    validate_record(bbo)
    okx = {
        "arg": {"channel": "tickers", "instId": "BTC-USDT"},
        "data": [{"bidPx": "", "bidSz": "", "askPx": "5", "askSz": "0", "ts": "1"}],
    }
    with pytest.raises(FrameError, match="okx tickers askSz must be positive, got '0'"):
        parse("okx", okx)
    okx["data"][0].update(askPx="", askSz="0")
    [both_empty] = parse("okx", okx)
    assert both_empty["bid_price"] is None and both_empty["ask_price"] is None
    validate_record(both_empty)


def test_binance_rest_snapshot_zero_size_is_rejected_but_diff_zero_deletes() -> None:
    snapshot = {"lastUpdateId": 5, "bids": [["1.5", "0"]], "asks": [["2", "1"]]}
    with pytest.raises(FrameError, match=r"depth snapshot bids\[0\] size must be positive"):
        parse("binance", snapshot, SNAPSHOT_HINT + "BTCUSDT")
    diff = {
        "e": "depthUpdate",
        "E": 1,
        "s": "BTCUSDT",
        "U": 1,
        "u": 2,
        "b": [["1.5", "0"]],
        "a": [],
    }
    [msg] = parse("binance", diff)
    assert msg.bids == [("1.5", "0")]


# ---- the fast bulk check agrees with the schema's regex ----


def test_bulk_check_agrees_with_the_schema_patterns() -> None:
    decimal, positive = re.compile(DECIMAL_RE), re.compile(POSITIVE_DECIMAL_RE)
    rng = random.Random(7)
    alphabet = '0123456789.-+eE nN"\\,[]٣'
    for _ in range(20_000):
        levels = [
            tuple(
                "".join(
                    rng.choice(alphabet if rng.random() < 0.2 else "0123456789.")
                    for _ in range(rng.randint(0, 5))
                )
                for _ in range(2)
            )
            for _ in range(rng.randint(3, 5))
        ]
        for deletes in (True, False):
            sizes = decimal if deletes else positive
            valid = all(positive.fullmatch(p) and sizes.fullmatch(q) for p, q in levels)
            try:
                numbers.check_levels(levels, "b", deletes)
                accepted = True
            except FrameError:
                accepted = False
            assert accepted == bool(valid), (levels, deletes)
            # the bulk pass never accepts what the regex rejects
            assert not numbers._bulk_ok(levels, deletes) or valid, (levels, deletes)
