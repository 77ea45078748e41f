"""Coinbase typed path on what tests/test_typed_decode.py leaves out: the two real l2
snapshots (5 MB each, cut to 40 levels here so mutations stay fast) and frames that
skip ``sequence_num``."""

from __future__ import annotations

import json
import random

import pytest
from capture_lines import CAPTURES, capture_frames
from test_typed_decode import CHECK_IDS, CHECKS, mutations, pair

from sources import numbers
from sources.frames import RawFrame

CAPTURE = CAPTURES / "coinbase" / "cryptofeed_advanced_trade_2026-08-09.jsonl.gz"


def cut_snapshots() -> list[RawFrame]:
    out = []
    for frame in capture_frames(CAPTURE, "coinbase"):
        if '"l2_data"' in frame.text[:40] and '"snapshot"' in frame.text[:200]:
            obj = json.loads(frame.text)
            updates = obj["events"][0]["updates"]
            bids = [u for u in updates if u["side"] == "bid"][:20]
            offers = [u for u in updates if u["side"] == "offer"][:20]
            obj["events"][0]["updates"] = bids + offers
            out.append(frame._replace(text=json.dumps(obj, separators=(",", ":"))))
    assert len(out) == 2
    return out


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_mutated_snapshots_give_the_careful_items(checks: numbers.Checks) -> None:
    typed, careful, _ = pair("coinbase", checks)
    rng = random.Random(7)
    compared = 0
    for original in cut_snapshots():
        assert typed(original) == careful(original)
        for text in mutations(original, rng):
            frame = original._replace(text=text)
            assert typed(frame) == careful(frame), text[:300]
            compared += 1
    assert typed.stats == careful.stats
    assert compared > 100


@pytest.mark.parametrize("checks", CHECKS, ids=CHECK_IDS)
def test_frames_skipping_sequence_numbers_give_the_careful_items(checks: numbers.Checks) -> None:
    typed, careful, _ = pair("coinbase", checks)
    frames = list(capture_frames(CAPTURE, "coinbase"))
    kept = [f for n, f in enumerate(frames) if n % 97 != 50]  # drop every 97th frame
    markers = 0
    for frame in kept:
        got, want = typed(frame), careful(frame)
        assert got == want, frame.text[:200]
        markers += sum(1 for _, i in want if not isinstance(i, dict) and i.first_id is not None)
    assert markers > 10


def test_typed_path_declines_a_gap_without_touching_the_state() -> None:
    _, _, parser = pair("coinbase", numbers.PYTHON_CHECKS)
    frames = list(capture_frames(CAPTURE, "coinbase"))
    for frame in frames[:100]:
        parser.parse(frame)
    with pytest.raises(Exception):  # noqa: B017 - any exception is a decline
        parser.typed(frames[101])
    markers = [i for i in parser.parse(frames[101]) if not isinstance(i, dict) and i.first_id]
    assert len(markers) == 2
