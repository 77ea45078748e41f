"""bench/vs_cryptofeed.py feeds cryptofeed what it needs and checks what it did (no timing).

Needs the bench extra (cryptofeed); skipped without it.
"""

from __future__ import annotations

import logging

import orjson
import pytest

pytest.importorskip("cryptofeed")

from bench import vs_cryptofeed as vs

FRAMES = 4000


@pytest.fixture(scope="module")
def capture() -> vs.Capture:
    loaded = vs.load_capture("eth", FRAMES)
    from cryptofeed.exchanges import Binance

    Binance.http_sync = vs.OfflineSymbolTable([loaded])
    return loaded


def test_trade_frames_become_agg_trade_frames(capture: vs.Capture) -> None:
    trades = [orjson.loads(t)["data"] for t, _ in capture.ws if '"aggTrade"' in t]
    assert len(trades) == capture.kinds["trade"] > 0
    assert all(set(t) == {"e", "E", "s", "a", "p", "q", "T", "m", "M"} for t in trades)
    with pytest.raises(ValueError, match="not a plain trade frame"):
        vs.as_agg_trade(capture.ws[0][0].replace('"bookTicker"', '"x"'))


def test_one_round_checks_out(capture: vs.Capture) -> None:
    lines: list[str] = []
    comparison = vs.measure(capture, 1, lines.append)
    assert len(comparison.ratios) == 1
    assert "final top-20 book = candlewax's" in lines[-1]


def test_a_lost_depth_diff_is_caught(capture: vs.Capture) -> None:
    """Without one depth diff cryptofeed sees a gap, resets its book and logs it: the run
    must fail, not report a rate."""
    first_diff = next(
        i
        for i, (text, _) in enumerate(capture.ws)
        if '"depthUpdate"' in text
        and orjson.loads(text)["data"]["U"] > orjson.loads(capture.snapshot)["lastUpdateId"] + 1
    )
    broken = vs.Capture(
        **{**vars(capture), "ws": capture.ws[:first_diff] + capture.ws[first_diff + 1 :]}
    )
    warnings = vs.WarningCounter()
    logging.getLogger(vs.LOG_NAME).addHandler(warnings)
    try:
        run = vs.CryptofeedRun(broken)
        run.run(vs.new_loop())
        _, final = vs.candlewax_reference(capture)
        with pytest.raises(SystemExit, match="cryptofeed"):
            vs.check_cryptofeed(run, warnings, final)
    finally:
        logging.getLogger(vs.LOG_NAME).removeHandler(warnings)
