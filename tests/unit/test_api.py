"""The API layer as data: URIs compared as the Hub and S3 compare them, label values that fit,
quantities, and one list of reasons."""

from __future__ import annotations

import re

import pytest

from aimd.api.meta import MAX_LABEL_VALUE, label_value, rfc3339, set_condition
from aimd.api.quantity import display_size, is_quantity
from aimd.api.reasons import Reason
from aimd.api.sources import SEGMENT_MESSAGE, segment_problem, source_key
from tests.support import REPO

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("s3://bucket/prefix", "s3://bucket/prefix/"),
        ("s3://bucket/prefix", "s3://bucket/prefix//"),
        ("hf://Meta-Llama/Llama-3.1-8B", "hf://meta-llama/llama-3.1-8b"),
        ("hf://Org/Model@main", "hf://org/model@main"),
    ],
)
def test_spellings_of_one_model_share_a_key(one: str, other: str) -> None:
    assert source_key(one) == source_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("hf://org/model@Main", "hf://org/model@main"),
        ("s3://bucket/Prefix", "s3://bucket/prefix"),
        ("hf://org/model", "hf://org/model@main"),
    ],
)
def test_what_the_source_distinguishes_stays_distinct(one: str, other: str) -> None:
    assert source_key(one) != source_key(other)


@pytest.mark.parametrize(
    "uri", ["hf://../..", "hf://org/..", "hf://org/m@a//b", "s3://b/./x", "s3://b/a//b"]
)
def test_dot_and_empty_segments_are_problems(uri: str) -> None:
    assert segment_problem(uri) == SEGMENT_MESSAGE


@pytest.mark.parametrize("uri", ["hf://org/m.v2@refs/pr/1", "s3://b.c/x/", "s3://bucket"])
def test_dots_inside_segments_are_fine(uri: str) -> None:
    assert segment_problem(uri) is None


def test_label_values_fit_and_long_names_stay_apart() -> None:
    short = "svc"
    assert label_value(short) == short
    long_a, long_b = "a" * 200 + "-x", "a" * 200 + "-y"
    for name in (long_a, long_b, "a." * 100):
        value = label_value(name)
        assert len(value) <= MAX_LABEL_VALUE
        assert LABEL_VALUE.match(value), value
    assert label_value(long_a) != label_value(long_b)


@pytest.mark.parametrize("value", ["500m", "2", 2, "1.5Gi", "16Gi", "1e3", "+1", "0.5"])
def test_quantities(value: object) -> None:
    assert is_quantity(value)


@pytest.mark.parametrize("value", ["lots", "1.5.5", "2 cores", "", "Gi", True])
def test_not_quantities(value: object) -> None:
    assert not is_quantity(value)


def test_sizes_read_as_people_write_them() -> None:
    assert display_size(17179869184) == "16.0GiB"
    assert display_size(512) == "512B"


def test_every_reason_the_docs_name_is_a_reason_of_the_api() -> None:
    """The runbooks' "by reason" list and every reason the README names come from the enum."""
    reasons = {r.value for r in Reason}
    named = set()
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    named |= set(re.findall(r"^- `([A-Z][A-Za-z]+)`:", runbooks, re.MULTILINE))
    for line in (REPO / "README.md").read_text().splitlines():
        if "reason" in line.lower():
            named |= set(re.findall(r"`([A-Z][a-z]+(?:[A-Z][a-z]+)+)`", line))
    assert named, "the docs name no reason: this test reads the wrong files"
    assert named <= reasons, f"not reasons of aimd.api.reasons: {sorted(named - reasons)}"


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    from datetime import UTC, datetime, timedelta

    first = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = set_condition([], "Ready", False, Reason.DOWNLOADING, "a", 1, first)
    later = set_condition(
        conditions, "Ready", False, Reason.DOWNLOADING, "b", 1, first + timedelta(hours=1)
    )
    assert later[0]["lastTransitionTime"] == rfc3339(first)
    flipped = set_condition(later, "Ready", True, Reason.AVAILABLE, "c", 1, first + timedelta(1))
    assert flipped[0]["lastTransitionTime"] == rfc3339(first + timedelta(1))
