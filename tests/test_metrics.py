"""Prometheus counters follow what the flow produced."""

from __future__ import annotations

from pathlib import Path

from flow_helpers import OKX_V5, run_replay
from prometheus_client.parser import text_string_to_metric_families

from candlewax.metrics import exposition


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_match_the_outputs(tmp_path: Path) -> None:
    before = samples()
    out = run_replay(OKX_V5, "okx", tmp_path)
    after = samples()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("candlewax_records_total", venue="okx", type="trade") == len(out["trades"]) == 74
    bars = len(out["bars"])
    assert bars > 0 and delta("candlewax_records_total", venue="okx", type="bar") == bars
    assert delta("candlewax_frames_total", venue="okx") == 410  # every frame of the capture
