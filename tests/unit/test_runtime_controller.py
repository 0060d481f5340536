"""Controller workers: results and errors map to requeues and metrics (controller-runtime's
contract); one key never runs twice at once; every log line of a reconcile carries its key."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from aimd import logs
from aimd.kube.errors import Conflict, ServerError
from aimd.runtime.clock import FakeClock
from aimd.runtime.controller import Controller, Result, TerminalError, namespace_name


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_results_requeue_as_controller_runtime_does() -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()
    outcomes: dict[str, list[Result | str | None]] = {
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


async def test_terminal_errors_are_counted_and_not_requeued() -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        calls[key] += 1
        raise TerminalError("spec.size is not a quantity")

    controller = Controller[str]("unit-terminal", reconcile, clock=clock)
    for metric in (
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
    ):
        exported = REGISTRY.get_sample_value(metric, {"controller": "unit-terminal"})
        assert exported == 0, f"{metric} exists at 0 from the start"
    runner = asyncio.create_task(controller.run())
    controller.enqueue("bad")
    await settle()
    clock.advance(3600)
    await settle()
    assert calls == {"bad": 1}, "never retried by itself"
    assert controller.queue.num_requeues("bad") == 0
    assert (
        sample("controller_runtime_terminal_reconcile_errors_total", controller="unit-terminal")
        == 1
    )
    assert sample("controller_runtime_reconcile_errors_total", controller="unit-terminal") == 1
    assert sample("controller_runtime_reconcile_panics_total", controller="unit-terminal") == 0
    controller.enqueue("bad")  # an event about the object runs it again
    await settle()
    assert calls == {"bad": 2}
    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)


async def test_unexpected_exceptions_are_panics_retried_with_backoff() -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        calls[key] += 1
        if key == "bug":
            raise KeyError("status")
        raise ServerError(503, "ServiceUnavailable", "etcd is slow")

    controller = Controller[str]("unit-panics", reconcile, clock=clock)
    runner = asyncio.create_task(controller.run())
    controller.enqueue("bug")
    controller.enqueue("api")
    await settle()
    clock.advance(0.005)
    await settle()
    assert calls == {"bug": 2, "api": 2}, "both retried with the key's backoff"
    assert sample("controller_runtime_reconcile_panics_total", controller="unit-panics") == 2
    assert sample("controller_runtime_reconcile_errors_total", controller="unit-panics") == 4
    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)


async def test_a_conflict_is_requeued_quietly_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    calls: Counter[str] = Counter()

    async def reconcile(key: str) -> None:
        calls[key] += 1
        if calls[key] < 3:
            raise Conflict(409, "Conflict", "the object has been modified")

    controller = Controller[str]("unit-conflict", reconcile, clock=clock)
    runner = asyncio.create_task(controller.run())
    with caplog.at_level(logging.DEBUG):
        controller.enqueue("stale")
        await settle()
        clock.advance(0.005)
        await settle()
        clock.advance(0.010)
        await settle()
    assert calls == {"stale": 3}
    debug = [r for r in caplog.records if "modified" in r.getMessage()]
    assert [r.levelno for r in debug] == [logging.DEBUG] * 2
    assert controller.queue.num_requeues("stale") == 0, "the success after it reset the backoff"
    total = sample(
        "controller_runtime_reconcile_total", controller="unit-conflict", result="requeue"
    )
    assert total == 2
    assert sample("controller_runtime_reconcile_errors_total", controller="unit-conflict") == 0
    assert [
        r for r in caplog.records if r.levelno >= logging.INFO and "modified" in r.getMessage()
    ] == []
    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The process's logging set up as ``--log-format=json``, writing to a buffer; the root
    logger as it was afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.setup("json", "debug", stream)
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


async def test_every_line_of_a_reconcile_carries_its_key_and_one_reconcile_id(
    json_lines: io.StringIO,
) -> None:
    child = logging.getLogger("tests.reconciler")

    async def helper() -> None:
        child.info("from a task the reconcile started")

    async def reconcile(key: tuple[str, str]) -> None:
        child.info("reconciling", extra={"step": 1})
        await asyncio.create_task(helper())

    controller = Controller[tuple[str, str]]("unit-logs", reconcile)
    runner = asyncio.create_task(controller.run())
    controller.enqueue(("ml", "llama"))
    controller.enqueue(("ml", "qwen"))
    await settle()
    assert await controller.drain(1)
    await asyncio.wait_for(runner, 1)
    child.info("outside any reconcile")
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    mine = [line for line in lines if line["logger"] == "tests.reconciler"]
    assert [(m["msg"], m.get("name")) for m in mine] == [
        ("reconciling", "llama"),
        ("from a task the reconcile started", "llama"),
        ("reconciling", "qwen"),
        ("from a task the reconcile started", "qwen"),
        ("outside any reconcile", None),
    ]
    assert mine[0]["controller"] == "unit-logs"
    assert mine[0]["namespace"] == "ml"
    assert mine[0]["step"] == 1
    assert mine[0]["reconcileID"] == mine[1]["reconcileID"] != mine[2]["reconcileID"]
    assert {"ts", "level", "logger", "msg"} <= set(mine[0])


def test_keys_map_to_namespace_and_name() -> None:
    assert namespace_name(("ml", "hf://org/model")) == ("ml", "hf://org/model")
    assert namespace_name("ml/llama") == ("ml", "llama")
    assert namespace_name("cluster-thing") == ("", "cluster-thing")
