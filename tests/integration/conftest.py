"""What the integration suite shares: the ``aimd`` fixture (the controller running in-process on
the test control plane, stopped after the test), and its ordering: tests marked ``runs_last``
(the audit comparison, which reads what every other test made aimd do) run after everything
else collected."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aimd.dev.controlplane import ControlPlane
from tests.integration.test_caching_harness import Running, start_controller


@pytest.fixture
async def aimd(control_plane: ControlPlane) -> AsyncIterator[Running]:
    running = start_controller(str(control_plane.kubeconfig))
    try:
        yield running
    finally:
        await running.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "runs_last: run after every other collected test")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("runs_last") is not None)
