"""Controller workers: results map to requeues and metrics; one key never runs twice at once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from aimd.runtime.clock import FakeClock
from aimd.runtime.controller import Controller, Result


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_results_requeue_as_controller_runtime_does() -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()
    outcomes = {
        "ok": [None],
        "later": [Result(requeue_after=30), None],
        "again": [Result(requeue=True), None],
        "boom": ["raise", None],
    }

    async def reconcile(key: str) -> Result | None:
        calls[key] += 1
        outcome = outcomes[key].pop(0)
        if outcome == "raise":
            raise RuntimeError("boom")
        assert outcome is None or isinstance(outcome, Result)
        return outcome

    controller = Controller[str]("unit-results", reconcile, workers=2, clock=clock)
    for result in ("success", "error", "requeue", "requeue_after"):
        labels = {"controller": "unit-results", "result": result}
        assert REGISTRY.get_sample_value("controller_runtime_reconcile_total", labels) == 0
    assert sample("controller_runtime_max_concurrent_reconciles", controller="unit-results") == 2
    runner = asyncio.create_task(controller.run())
    for key in outcomes:
        controller.enqueue(key)
    await settle()
    assert calls == {"ok": 1, "later": 1, "again": 1, "boom": 1}

    clock.advance(0.005)  # first backoff step: "again" and "boom" come back
    await settle()
    assert calls == {"ok": 1, "later": 1, "again": 2, "boom": 2}
    clock.advance(29.99)
    await settle()
    assert calls["later"] == 1
    clock.advance(0.01)
    await settle()
    assert calls["later"] == 2
    assert controller.queue.num_requeues("boom") == 0, "success forgets the backoff"

    def total(result: str) -> float:
        return sample(
            "controller_runtime_reconcile_total", controller="unit-results", result=result
        )

    assert total("success") == 4
    assert total("requeue_after") == 1
    assert total("requeue") == 1
    assert total("error") == 1
    assert sample("controller_runtime_reconcile_errors_total", controller="unit-results") == 1
    assert sample("workqueue_retries_total", name="unit-results", controller="unit-results") == 2
    assert sample("controller_runtime_active_workers", controller="unit-results") == 0

    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)


async def test_one_key_never_runs_on_two_workers_at_once() -> None:
    running: set[str] = set()
    overlaps = []
    runs: Counter[str] = Counter()
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        runs[key] += 1
        await release.wait()
        running.discard(key)

    controller = Controller[str]("unit-exclusive", reconcile, workers=4)
    runner = asyncio.create_task(controller.run())
    controller.enqueue("a")
    await settle()
    for _ in range(5):
        controller.enqueue("a")  # arrives while "a" runs: kept, run once afterwards
    controller.enqueue("b")
    await settle()
    assert running == {"a", "b"}
    release.set()
    await settle()
    await settle()
    assert overlaps == []
    assert runs == {"a": 2, "b": 1}
    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)


async def test_drain_lets_running_reconciles_finish_and_starts_no_new_ones() -> None:
    started: list[str] = []
    finished: list[str] = []
    gate = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.append(key)
        await gate.wait()
        finished.append(key)

    controller = Controller[str]("unit-drain", reconcile, workers=1)
    runner = asyncio.create_task(controller.run())
    controller.enqueue("first")
    controller.enqueue("second")
    await settle()
    drained = asyncio.create_task(controller.drain(5))
    await settle()
    gate.set()
    assert await drained
    await asyncio.wait_for(runner, 1)
    assert started == ["first"]
    assert finished == ["first"]


async def test_drain_reports_reconciles_that_outlive_the_grace() -> None:
    async def reconcile(key: str) -> None:
        await asyncio.sleep(3600)

    controller = Controller[str]("unit-stuck", reconcile)
    runner = asyncio.create_task(controller.run())
    controller.enqueue("stuck")
    await settle()
    assert await controller.drain(0.05) is False
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
