"""What becomes an Event object (client-go's EventCorrelator): repeats fold into one series,
similar Events aggregate, and a token bucket per object bounds how many new Events it gets."""

from __future__ import annotations

from typing import Any

from aimd.runtime.correlator import COMBINED, Correlator, Series

MC = {"apiVersion": "aim.amd.com/v1alpha1", "kind": "AIMModelCache", "name": "m", "uid": "u1"}
OTHER = {"apiVersion": "aim.amd.com/v1alpha1", "kind": "AIMModelCache", "name": "n", "uid": "u2"}


def observe(
    correlator: Correlator, ref: dict[str, Any], reason: str, note: str, now: float
) -> Series | None:
    return correlator.observe(
        ref, "Warning", reason, note, action=reason, related=None, now=now, wall="t"
    )


def test_repeats_fold_into_one_series_until_the_series_window_passes() -> None:
    correlator = Correlator(series_window=360)
    first = observe(correlator, MC, "DownloadFailed", "401 from the hub", 0)
    assert first is not None
    assert first.count == 1
    for second in range(1, 50):
        assert observe(correlator, MC, "DownloadFailed", "401 from the hub", second) is first
    assert first.count == 50
    assert observe(correlator, OTHER, "DownloadFailed", "401 from the hub", 50) is not first
    later = observe(correlator, MC, "DownloadFailed", "401 from the hub", 49 + 360)
    assert later is not None
    assert later is not first, "quiet for a whole window: a new Event"
    assert later.count == 1


def test_more_than_ten_different_notes_fold_into_one_combined_event() -> None:
    correlator = Correlator(max_similar=10)
    made = [observe(correlator, MC, "RetryScheduled", f"attempt {n}", n) for n in range(15)]
    individual = {id(s) for s in made[:10]}
    assert len(individual) == 10, "the first ten notes each get their own Event"
    combined = made[10]
    assert combined is not None
    assert all(s is combined for s in made[10:])
    assert combined.note == COMBINED + "attempt 10"
    assert combined.count == 5
    assert observe(correlator, MC, "Created", "made the PVC", 16) not in made, "other reasons not"


def test_each_object_gets_a_burst_of_new_events_then_one_per_five_minutes() -> None:
    correlator = Correlator(spam_burst=25, spam_qps=1 / 300)
    allowed = [observe(correlator, MC, f"Reason{n}", "x", 0) for n in range(40)]
    assert sum(s is not None for s in allowed) == 25
    assert allowed[25:] == [None] * 15, "beyond the burst: dropped"
    assert observe(correlator, OTHER, "Reason0", "x", 0) is not None, "buckets are per object"
    assert observe(correlator, MC, "Reason0", "x", 1) is not None, "a repeat costs no token"
    assert observe(correlator, MC, "Late", "x", 299) is None
    assert observe(correlator, MC, "Late", "x", 300) is not None, "one token regrew"
    assert observe(correlator, MC, "Later", "x", 301) is None


def test_a_discarded_series_starts_again() -> None:
    correlator = Correlator()
    first = observe(correlator, MC, "Created", "x", 0)
    assert first is not None
    correlator.discard(first)
    again = observe(correlator, MC, "Created", "x", 1)
    assert again is not None
    assert again is not first
