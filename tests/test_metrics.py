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


def test_batch_tally_counts_as_record_by_record() -> None:
    """``observe_items`` (the metrics sink's C tally) counts what ``observe_records``
    counts, also for batches it hands over: a late trade (its venue is inside
    ``trade``), a status (its event is counted too), a record without a venue. (Label
    values a real flow makes: the registry is the process's, other tests read it.)"""
    from candlewax.metrics import observe_items, observe_records

    bbo = {"type": "bbo", "venue": "okx", "symbol": "A/B"}
    late = {"type": "late", "trade": {"venue": "okx"}}
    status = {"type": "status", "venue": "okx", "event": "resynced"}
    dead = {"type": "dead_letter", "venue": "okx"}
    nameless = {"type": "dead_letter", "venue": None}
    batches = [[bbo, bbo, dead], [bbo, late], [status, bbo], [nameless, bbo], []]
    for batch in batches:
        before = samples()
        observe_records(batch)
        by_record = samples()
        observe_items([("k", r) for r in batch])
        after = samples()
        # (the *_created samples are the time a label set was first seen)
        counted = {k: v - before.get(k, 0.0) for k, v in by_record.items() if "created" not in k[0]}
        tallied = {k: v - by_record.get(k, 0.0) for k, v in after.items() if "created" not in k[0]}
        assert tallied == counted
        assert any(v for v in counted.values()) == bool(batch)
