"""How many new Events may wait for the writer: a start-up burst waits rather than drops; past the
bound, what is dropped is counted; from how many waiting the writers send several at once.
(Writing them is tested against a real API server in tests/integration/test_runtime_events.py.)"""

from __future__ import annotations

from typing import cast

from prometheus_client import REGISTRY

from aimd.kube.client import KubeClient
from aimd.runtime.events import BUFFER, BURST_AT, EventRecorder


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("aim_events_dropped_total", {"reason": reason}) or 0.0


def service(n: int) -> dict[str, object]:
    return {
        "apiVersion": "aim.eai.amd.com/v1alpha1",
        "kind": "AIMService",
        "metadata": {"name": f"svc-{n}", "namespace": "team", "uid": f"uid-{n}"},
    }


def test_the_burst_ten_thousand_services_make_waits_and_only_beyond_the_buffer_is_dropped() -> None:
    # Never written here: record() only decides and queues, the client is the writer's.
    recorder = EventRecorder(cast(KubeClient, None), "aimd", "replica-0")
    before = dropped("buffer_full")
    # 10,000 services, 1,000 templates and 500 sources make about 3,000 Events at once, each about
    # another object; a buffer of 1,000 dropped 188 of them on a busy API server.
    for n in range(3000):
        recorder.normal(service(n), "CreatedTemplateCache", f"created AIMTemplateCache tc-{n}")
    assert dropped("buffer_full") == before
    for n in range(3000, BUFFER + 5):
        recorder.normal(service(n), "CreatedTemplateCache", f"created AIMTemplateCache tc-{n}")
    assert dropped("buffer_full") == before + 5


def test_the_writers_send_several_at_once_from_a_few_hundred_waiting_whatever_the_buffer() -> None:
    recorder = EventRecorder(cast(KubeClient, None), "aimd", "replica-0", writers=4)
    for n in range(BURST_AT - 1):
        recorder.normal(service(n), "CreatedTemplateCache", f"created AIMTemplateCache tc-{n}")
    # The Event or two a reconcile makes go one at a time, behind the writes that caused them.
    assert len(recorder._next_batch()) == 1
    for n in range(BURST_AT - 1, BURST_AT + 1):
        recorder.normal(service(n), "CreatedTemplateCache", f"created AIMTemplateCache tc-{n}")
    # A burst: the ramp stays where it was when the buffer was 1,000 (a quarter of it), rather
    # than moving to a quarter of 4,096.
    assert BURST_AT < BUFFER // 4
    assert len(recorder._next_batch()) == 4
