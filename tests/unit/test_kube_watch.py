"""Pure parts of the watch: line splitting, error classification, stripping, backoff."""

from __future__ import annotations

import orjson
import pytest

from aimd.kube.backoff import Backoff
from aimd.kube.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
    error_from_status,
)
from aimd.kube.watch import LineSplitter, resource_version_unusable, strip


def lines_of(chunks: list[bytes]) -> list[bytes]:
    """What the watch loop does with a body: feed each chunk, then take the tail."""
    splitter = LineSplitter()
    lines = [bytes(line) for chunk in chunks for line in splitter.feed(chunk)]
    rest = splitter.tail()
    return lines + ([rest] if rest is not None else [])


def test_lines_split_across_and_within_chunks() -> None:
    assert lines_of([b"a\nb", b"c\n", b"\nd\ne", b"f"]) == [b"a", b"bc", b"d", b"ef"]


def test_a_line_of_many_mebibytes_in_small_chunks_parses() -> None:
    event = {"type": "ADDED", "object": {"metadata": {"name": "x"}, "data": {"v": "y" * 8_000_000}}}
    raw = orjson.dumps(event) + b"\n" + orjson.dumps({"type": "BOOKMARK"}) + b"\n"
    chunks = [raw[i : i + 65536] for i in range(0, len(raw), 65536)]
    lines = lines_of(chunks)
    assert len(lines) == 2
    assert orjson.loads(lines[0]) == event


def test_strip_drops_managed_fields_only() -> None:
    obj = {"metadata": {"name": "a", "managedFields": [{"manager": "kubectl"}]}, "spec": {}}
    assert strip(obj) == {"metadata": {"name": "a"}, "spec": {}}


@pytest.mark.parametrize(
    ("status", "unusable"),
    [
        ({"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}, True),
        ({"kind": "Status", "code": 410, "reason": "Gone"}, True),
        (
            {
                "kind": "Status",
                "code": 504,
                "reason": "Timeout",
                "details": {"causes": [{"reason": "ResourceVersionTooLarge"}]},
            },
            True,
        ),
        ({"kind": "Status", "code": 500, "reason": "InternalError"}, False),
        ({"kind": "Status", "code": 403, "reason": "Forbidden"}, False),
    ],
)
def test_which_errors_force_a_fresh_list(status: dict[str, object], unusable: bool) -> None:
    error = error_from_status(int(status["code"]), status)  # type: ignore[call-overload]
    assert resource_version_unusable(error) is unusable


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (404, "NotFound", NotFound),
        (409, "Conflict", Conflict),
        (409, "AlreadyExists", AlreadyExists),
        (410, "Expired", Gone),
        (422, "Invalid", Invalid),
        (429, "TooManyRequests", TooManyRequests),
        (503, "ServiceUnavailable", ServerError),
        (418, "Teapot", ApiError),
    ],
)
def test_errors_are_typed_by_code_and_reason(code: int, reason: str, cls: type) -> None:
    error = error_from_status(code, {"kind": "Status", "code": code, "reason": reason})
    assert type(error) is cls
    assert error.status == code
    assert error.reason == reason


def test_retry_after_from_header_or_details() -> None:
    status = {"kind": "Status", "code": 429, "details": {"retryAfterSeconds": 4}}
    from_details = error_from_status(429, status)
    assert isinstance(from_details, TooManyRequests)
    assert from_details.retry_after == 4
    from_header = error_from_status(429, status, {"Retry-After": "7"})
    assert isinstance(from_header, TooManyRequests)
    assert from_header.retry_after == 7


def test_a_non_status_body_still_makes_an_error() -> None:
    error = error_from_status(502, b"<html>bad gateway</html>")
    assert isinstance(error, ServerError)
    assert "bad gateway" in error.message


def test_backoff_doubles_to_the_cap_and_resets_after_a_healthy_period() -> None:
    now = [0.0]
    backoff = Backoff(0.8, 30, jitter=0.0, reset_after=120, clock=lambda: now[0])
    delays = []
    for _ in range(8):
        delays.append(backoff.next_delay())
        now[0] += 1
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]
    now[0] += 121
    assert backoff.next_delay() == 0.8


def test_backoff_jitter_stretches_at_most_by_the_factor() -> None:
    backoff = Backoff(0.8, 30, jitter=1.0, rng=lambda: 0.999)
    assert 0.8 <= backoff.next_delay() < 1.6
