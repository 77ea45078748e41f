"""User operators by import path: applied to their channel, a bug never stops the flow."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from flow_helpers import BTC_SPOT, run_replay


def test_user_operator_filters_trades_before_bars(tmp_path: Path) -> None:
    ops = {
        "user": [{"path": "user_ops:big_trades_only", "channels": ["trades"]}],
        "ohlcv": {"intervals": ["1m"]},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    assert out["trades"]
    assert all(Decimal(t["size"]) >= Decimal("0.1") for t in out["trades"])
    assert sum(b["trades"] for b in out["bars"]) == len(out["trades"])


def test_user_operator_exception_becomes_dead_letter(tmp_path: Path) -> None:
    ops = {
        "user": [{"path": "user_ops:explode_on_one"}],
        "ohlcv": {"enabled": False},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    assert len(out["trades"]) == 9757  # the failing record went on unchanged
    (dead,) = out["dead_letter"]
    assert "user_ops:explode_on_one raised RuntimeError: user bug" in dead["reason"]
    assert "3735683259" in dead["raw"]


def test_user_operator_returning_non_records_becomes_dead_letters(tmp_path: Path) -> None:
    ops = {
        "user": [{"path": "user_ops:returns_garbage"}],
        "ohlcv": {"enabled": False},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    assert len(out["trades"]) == 9757 - 2
    reasons = sorted(d["reason"] for d in out["dead_letter"])
    assert reasons == [
        "user operator user_ops:returns_garbage returned dict, not a record with a known 'type'",
        "user operator user_ops:returns_garbage returned int, not a record with a known 'type'",
    ]


def test_a_record_a_sink_refuses_is_counted_and_the_rest_is_written(tmp_path: Path) -> None:
    from candlewax.metrics import SINK_ERRORS

    before = SINK_ERRORS.labels("sink_0_jsonl")._value.get()
    ops = {
        "user": [{"path": "user_ops:unencodable"}],
        "ohlcv": {"enabled": False},
        "book": {"enabled": False},
    }
    out = run_replay(BTC_SPOT, "binance", tmp_path, operators=ops)
    assert len(out["trades"]) == 9757 - 1  # the flow went on; only that record is missing
    assert "3735683259" not in {t["trade_id"] for t in out["trades"]}
    assert SINK_ERRORS.labels("sink_0_jsonl")._value.get() == before + 1
