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
