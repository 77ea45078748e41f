"""The README's main command runs the demo; this runs the same code at max pace."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from flow_helpers import outputs

from candlewax.demo import run_demo


def test_demo_delivers_every_trade_and_writes_all_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path, pace="max", quiet=True) == 0
    out = outputs(tmp_path)
    trades = Counter((t["venue"], t["symbol"]) for t in out["trades"])
    # Every trade of the three bundled tapes (SOURCE.md; OKX BTC-USDT has 69 of its 74).
    assert trades == {
        ("binance", "BTC/USDT"): 9757,
        ("binance", "ETH/USDT"): 6106,
        ("okx", "BTC/USDT"): 69,
    }
    assert {b["interval"] for b in out["bars"]} == {"1s", "1m"}
    assert out["dead_letter"] == [] and out["late"] == []
    assert list((tmp_path / "parquet").glob("*.parquet"))
    assert "demo finished" in capsys.readouterr().out
