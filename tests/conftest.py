"""Session fixtures for the tests against real servers (Kafka, Redis)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from services import Services, for_tests


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """Kafka and Redis on their test ports, started by scripts/services.sh if not up
    (never skipped: CI gets real servers); stopped at the end only if started here."""
    svc = for_tests()
    started = not svc.up()
    svc.run("start")
    yield svc
    if started and not os.environ.get("CANDLEWAX_KEEP_SERVICES"):
        svc.run("stop")


@pytest.fixture(autouse=True)
def _stop_flag_clear() -> Iterator[None]:
    """``flows.inputs.STOP`` is process-wide: a test that stops its run (Ctrl-C style)
    must not end the next test's run before it starts."""
    from flows import inputs

    inputs.STOP.clear()
    yield
    inputs.STOP.clear()
