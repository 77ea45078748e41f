"""Config validation: errors name the field and say what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from candlewax.cli import main
from candlewax.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def errors_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "p.yaml", env={})
    return str(info.value)


def minimal(**source: object) -> dict:
    return {
        "sources": [{"venue": "binance", "symbols": ["BTC/USDT"], **source}],
        "sinks": [{"type": "stdout"}],
    }


def test_examples_validate() -> None:
    for path in (ROOT / "examples").glob("*.yaml"):
        load_config(path, env={})


def test_unknown_venue_is_named() -> None:
    text = errors_of(minimal(venue="binanse"))
    assert "sources[0].venue: unknown venue 'binanse'" in text
    assert "binance, binance-usdm, okx" in text


def test_malformed_symbol_is_named() -> None:
    text = errors_of(minimal(symbols=["BTCUSDT"]))
    assert "sources[0]" in text and "malformed symbol 'BTCUSDT'" in text


def test_perpetual_on_spot_venue_is_explained() -> None:
    assert "binance-usdm" in errors_of(minimal(symbols=["BTC/USDT:USDT"]))


def test_nested_field_errors_have_paths() -> None:
    data = minimal()
    data["operators"] = {"book": {"depth": 0}, "ohlcv": {"intervals": ["1x"]}}
    data["sinks"] = [{"type": "jsonl"}, {"type": "nosuch"}]
    text = errors_of(data)
    assert "operators.book.depth: Input should be greater than or equal to 1" in text
    assert (
        "operators.ohlcv.intervals: bad bar interval '1x': expected <positive integer><unit>"
        in text
    )
    assert "sinks[0].path: Field required" in text
    assert "sinks[1]" in text and "nosuch" in text


def test_unknown_field_is_rejected() -> None:
    assert "sources[0].symbol: Extra inputs are not permitted" in errors_of(
        {"sources": [{"venue": "okx", "symbol": "BTC/USDT"}], "sinks": [{"type": "stdout"}]}
    )


def test_replay_needs_an_existing_capture() -> None:
    assert "needs 'capture:" in errors_of(minimal(mode="replay"))
    assert "does not exist" in errors_of(minimal(mode="replay", capture="/nope.gz"))


def test_env_overrides() -> None:
    cfg = parse_config(
        minimal(),
        env={
            "CANDLEWAX__OPERATORS__BOOK__DEPTH": "7",
            "CANDLEWAX__SOURCES__0__URL": "ws://127.0.0.1:1",
            "CANDLEWAX__OPERATORS__OHLCV__INTERVALS": "[1s, 5m]",
        },
    )
    assert cfg.operators.book.depth == 7
    assert cfg.sources[0].url == "ws://127.0.0.1:1"
    assert cfg.operators.ohlcv.intervals == ["1s", "5m"]
    with pytest.raises(ConfigError, match="no list item"):
        parse_config(minimal(), env={"CANDLEWAX__SOURCES__3__URL": "x"})
    assert "operators.book.depth" in errors_of_env({"CANDLEWAX__OPERATORS__BOOK__DEPTH": "-1"})


def errors_of_env(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(minimal(), "p.yaml", env=env)
    return str(info.value)


def test_user_operator_must_import() -> None:
    data = minimal()
    data["operators"] = {"user": [{"path": "nosuchmodule:f"}]}
    assert "cannot import module 'nosuchmodule'" in errors_of(data)


def test_bad_yaml_and_cli_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    assert main(["validate", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    bad.write_text(
        "sources:\n  - venue: kraken2\n    symbols: [BTC/USD]\nsinks: [{type: stdout}]\n"
    )
    assert main(["validate", str(bad)]) == 2
    assert "sources[0].venue" in capsys.readouterr().err
    assert main(["validate", str(ROOT / "examples" / "live.yaml")]) == 0


def test_intervals_and_pace_use_the_rules_the_run_uses() -> None:
    data = minimal()
    data["operators"] = {"ohlcv": {"intervals": ["60s", "1m"]}}
    assert "'60s' and '1m' are the same length" in errors_of(data)
    assert "sources[0].pace" in errors_of(minimal(pace="0x"))


def test_env_override_into_an_empty_section_or_a_scalar() -> None:
    data = minimal()
    data["operators"] = None  # `operators:` left empty in the YAML
    cfg = parse_config(data, env={"CANDLEWAX__OPERATORS__BOOK__DEPTH": "3"})
    assert cfg.operators.book.depth == 3
    with pytest.raises(ConfigError, match="not a section to override into"):
        parse_config(minimal(), env={"CANDLEWAX__SOURCES__0__VENUE__X": "1"})


def test_cli_workers_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(ROOT / "examples" / "replay.yaml"), "--workers", "0"]) == 2
    assert "workers: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_live_client_knobs_reach_the_connection() -> None:
    from flows.inputs import PipelineSource

    cfg = parse_config(
        minimal(
            # A closed loopback port: the connection thread starts, nothing leaves the host.
            url="ws://127.0.0.1:9",
            rest_url="http://127.0.0.1:9",
            reconnect={"pong_timeout_s": 3, "resync_min_interval_s": 7, "max_queued": 50},
        ),
        env={},
    )
    source = PipelineSource(cfg)
    part = source.build_part("input", source.list_parts()[0], None)
    try:
        settings = part._feed.connections[0].settings  # type: ignore[attr-defined]
        assert (settings.pong_timeout, settings.resync_min_interval) == (3, 7)
        assert part._feed.max_queued == 50  # type: ignore[attr-defined]
    finally:
        part.close()
