"""Work queue semantics on a hand-turned clock: dedup, exclusivity, delays, backoff, shutdown."""

from __future__ import annotations

import asyncio

import pytest

from aimd.runtime.clock import FakeClock
from aimd.runtime.queue import ShutDown, WorkQueue
from aimd.runtime.ratelimit import DefaultRateLimiter, ItemExponentialBackoff, TokenBucket


def make_queue() -> tuple[WorkQueue[str], FakeClock]:
    clock = FakeClock()
    return WorkQueue[str](clock=clock), clock


async def test_adds_of_a_waiting_key_are_deduplicated() -> None:
    queue, _ = make_queue()
    for key in ("a", "b", "a", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_being_processed_is_not_handed_out_again_until_done() -> None:
    queue, _ = make_queue()
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    assert len(queue) == 0, "re-added while processing: held back, not queued"
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not second.done()
    queue.done("a")
    assert await asyncio.wait_for(second, 1) == "a", "the re-add runs exactly once afterwards"
    queue.done("a")
    assert len(queue) == 0


async def test_done_without_readd_does_not_requeue() -> None:
    queue, _ = make_queue()
    queue.add("a")
    await queue.get()
    queue.done("a")
    assert len(queue) == 0
    assert queue.processing == 0


async def test_other_keys_flow_while_one_is_processing() -> None:
    queue, _ = make_queue()
    queue.add("a")
    queue.add("b")
    assert await queue.get() == "a"
    queue.add("a")
    assert await queue.get() == "b"


async def test_add_after_waits_for_the_clock_and_keeps_the_earliest_delay() -> None:
    queue, clock = make_queue()
    queue.add_after("a", 10)
    queue.add_after("a", 20)
    queue.add_after("a", 5)
    assert clock.pending == 1
    clock.advance(4.9)
    assert len(queue) == 0
    clock.advance(0.1)
    assert len(queue) == 1
    clock.advance(100)
    assert len(queue) == 1, "the later delays were dropped"


async def test_add_after_with_no_delay_adds_at_once() -> None:
    queue, _ = make_queue()
    queue.add_after("a", 0)
    assert len(queue) == 1


async def test_rate_limited_adds_back_off_exponentially_until_forgotten() -> None:
    queue, clock = make_queue()
    for expected in (0.005, 0.01, 0.02, 0.04):
        queue.add_rate_limited("a")
        clock.advance(expected - 1e-6)
        assert len(queue) == 0
        clock.advance(2e-6)
        assert len(queue) == 1
        assert await queue.get() == "a"
        queue.done("a")
    assert queue.num_requeues("a") == 4
    queue.forget("a")
    assert queue.num_requeues("a") == 0


def test_item_backoff_is_capped() -> None:
    backoff = ItemExponentialBackoff(base=0.005, cap=1000)
    delays = [backoff.when("k") for _ in range(30)]
    assert delays[0] == 0.005
    assert max(delays) == 1000
    assert delays[-1] == 1000
    assert backoff.when("other") == 0.005, "keys back off independently"
    for _ in range(100):
        backoff.when("k")
    assert backoff.when("k") == 1000


def test_token_bucket_allows_a_burst_then_ten_per_second() -> None:
    clock = FakeClock()
    bucket = TokenBucket(clock, rate=10, burst=100)
    assert all(bucket.when(i) == 0 for i in range(100))
    assert bucket.when("x") == pytest.approx(0.1)
    assert bucket.when("y") == pytest.approx(0.2)
    clock.advance(10)
    assert bucket.when("z") == 0


def test_default_limiter_is_the_slower_of_both() -> None:
    clock = FakeClock()
    limiter = DefaultRateLimiter(clock)
    for i in range(100):
        limiter.when(f"burst-{i}")
    assert limiter.when("fresh") == pytest.approx(0.1), "bucket empty: it dominates"


async def test_shutdown_drains_then_stops_workers() -> None:
    queue, clock = make_queue()
    queue.add("a")
    queue.add_after("b", 1)
    queue.shutdown()
    queue.add("c")
    clock.advance(5)
    assert await queue.get() == "a"
    with pytest.raises(ShutDown):
        await queue.get()


async def test_shutdown_wakes_idle_workers() -> None:
    queue, _ = make_queue()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiting, 1)


async def test_wait_idle_returns_when_processing_ends() -> None:
    queue, _ = make_queue()
    queue.add("a")
    await queue.get()
    idle = asyncio.ensure_future(queue.wait_idle())
    await asyncio.sleep(0)
    assert not idle.done()
    queue.done("a")
    await asyncio.wait_for(idle, 1)


async def test_a_cancelled_waiter_does_not_swallow_a_key() -> None:
    queue, _ = make_queue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.add("a")
    first.cancel()
    await asyncio.sleep(0)
    assert await asyncio.wait_for(second, 1) == "a"


async def test_unfinished_work_and_longest_processor_follow_the_clock() -> None:
    queue, clock = make_queue()
    queue.add("a")
    queue.add("b")
    await queue.get()
    clock.advance(3)
    await queue.get()
    clock.advance(2)
    assert queue.unfinished_work_seconds() == pytest.approx(7)
    assert queue.longest_running_processor_seconds() == pytest.approx(5)
