"""The candlewax command: schema, replay, help texts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from flow_helpers import OKX_V5, outputs

from candlewax.cli import main
from candlewax.schema import validate_record


def test_schema_lists_every_record_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = orjson.loads(capsys.readouterr().out)
    assert set(schema["$defs"]) >= {"Trade", "Book", "BBO", "Bar", "Late", "Status", "DeadLetter"}
    assert schema["$defs"]["Trade"]["properties"]["price"]["pattern"]
    # Every field is always written, defaults included.
    assert {"type", "schema_version", "side"} <= set(schema["$defs"]["Trade"]["required"])
    assert "filled" in schema["$defs"]["Bar"]["required"]


def test_replay_writes_every_channel(tmp_path: Path) -> None:
    args = ["replay", str(OKX_V5), "--venue", "okx", "--out", str(tmp_path), "--intervals", "1s,1m"]
    assert main(args) == 0
    out = outputs(tmp_path)
    assert len(out["trades"]) == 74  # every trade of the capture (SOURCE.md)
    assert {b["interval"] for b in out["bars"]} == {"1s", "1m"}
    for records in out.values():
        for record in records:
            validate_record(record)
    for name in ("trades", "bars", "book", "status", "late", "dead_letter"):
        assert (tmp_path / f"{name}.jsonl").exists()


def test_replay_rejects_bad_interval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["replay", str(OKX_V5), "--venue", "okx", "--out", str(tmp_path), "--intervals", "7q"]
    assert main(args) == 2
    assert "operators.ohlcv.intervals" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["run"], ["replay"], ["demo"], ["simulate"]])
def test_help_texts(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: candlewax" in capsys.readouterr().out
