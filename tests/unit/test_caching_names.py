"""Deterministic names and quantities: the basis of create-or-adopt (E1) and PVC sizing (B3)."""

from __future__ import annotations

import re

import pytest

from aimd.api.quantity import parse_bytes, pvc_size
from aimd.caching import names

RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "uri",
    [
        "hf://meta-llama/Llama-3.1-8B",
        "hf://meta-llama/Llama-3.1-8B@main",
        "s3://bucket/" + "very-long-prefix/" * 20,
        "hf://A/B",
    ],
)
def test_model_cache_names_are_rfc1123_labels_and_stable(uri: str) -> None:
    name = names.model_cache_name(uri)
    assert RFC1123.match(name)
    assert len(name) <= 63
    assert names.model_cache_name(uri) == name


def test_uris_that_slug_alike_get_different_names() -> None:
    assert names.model_cache_name("hf://a/b.c") != names.model_cache_name("hf://a/b-c")


def test_template_cache_names_differ_by_scope() -> None:
    namespaced = names.template_cache_name("llama", "Namespace")
    cluster = names.template_cache_name("llama", "Cluster")
    assert namespaced != cluster
    assert RFC1123.match(namespaced)
    assert RFC1123.match(cluster)


def test_each_attempt_and_each_volume_gets_its_own_job_name() -> None:
    first = names.download_job_name("mc", "1234-abcd", 0)
    assert names.download_job_name("mc", "1234-abcd", 1) != first
    assert names.download_job_name("mc", "9999-abcd", 0) != first
    long = names.download_job_name("m" * 63, "1234-abcd", 12)
    assert len(long) <= 63
    assert RFC1123.match(long)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20Gi", 20 * 1024**3),
        ("1.5G", 1_500_000_000),
        (16106127360, 16106127360),
        ("16106127360", 16106127360),
        ("1e3", 1000),
        ("512Mi", 512 * 1024**2),
        ("nonsense", None),
        (None, None),
        ("-1Gi", None),
    ],
)
def test_quantities_parse_to_bytes(value: object, expected: int | None) -> None:
    assert parse_bytes(value) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [(10 * 1024**3, "11Gi"), (20 * 1024**3, "22Gi"), (1, "1Gi"), (15 * 10**9, "16Gi")],
)
def test_pvc_has_ten_percent_headroom_rounded_up_to_gib(size: int, expected: str) -> None:
    assert pvc_size(size) == expected


def test_the_one_name_of_a_model_does_not_depend_on_its_spelling() -> None:
    assert names.model_cache_name("s3://b/p/") == names.model_cache_name("s3://b/p")
    assert names.model_cache_name("hf://Org/M") == names.model_cache_name("hf://org/m")


def test_workload_names_are_valid_service_names() -> None:
    assert names.workload_name("svc") == "svc"
    for service in ("s." + "s" * 200, "9lives", "a.b"):
        name = names.workload_name(service)
        assert len(name) <= 63
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
    assert names.workload_name("a.b") != names.workload_name("a-b")
