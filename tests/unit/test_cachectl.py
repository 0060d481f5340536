"""`aimd cache ls` and `aimd cache why` (also `kubectl aimd`): decisions and rendering over
objects, and the argument handling, no API server needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from aimd.cli import kubectl
from aimd.cli.cache import (
    cache_rows,
    consumers_of,
    explain,
    format_table,
    human_age,
    human_bytes,
    show_ls,
    show_why,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def mc(
    name: str, status: dict[str, Any] | None = None, namespace: str | None = None, **spec: Any
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "creationTimestamp": "2026-11-28T09:00:00Z"}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "metadata": metadata,
        "spec": {"sourceUri": f"hf://org/{name}", **spec},
        "status": status or {},
    }


def pvc(phase: str | None) -> dict[str, Any]:
    return {"metadata": {"name": "claim"}, "spec": {}, "status": {"phase": phase} if phase else {}}


TCS: list[dict[str, Any]] = [
    {"metadata": {"name": "tc-a"}, "status": {"modelCaches": [{"name": "one"}, {"name": "two"}]}},
    {"metadata": {"name": "tc-b"}, "status": {"modelCaches": [{"name": "two"}]}},
]
SVCS: list[dict[str, Any]] = [
    {"metadata": {"name": "chat"}, "status": {"cache": {"templateCacheRef": {"name": "tc-a"}}}},
    {"metadata": {"name": "plain"}, "status": {}},
]


def test_human_bytes() -> None:
    assert human_bytes(None) == "-"
    assert human_bytes(512) == "512B"
    assert human_bytes(16 * 1024**3) == "16.0GiB"


def test_consumers_are_the_template_caches_listing_it_and_their_services() -> None:
    assert consumers_of(mc("two"), TCS, SVCS) == ["aimtc/tc-a", "aimtc/tc-b", "aimsvc/chat"]
    assert consumers_of(mc("three"), TCS, SVCS) == []


def test_ls_table_shows_status_size_progress_and_users() -> None:
    rows = cache_rows(
        [
            mc(
                "two", {"status": "Progressing", "progress": {"totalBytes": 2048, "percentage": 50}}
            ),
            mc(
                "one",
                {"status": "Available", "sizeBytes": 1024**3, "progress": {"percentage": 100}},
            ),
        ],
        TCS,
        SVCS,
    )
    assert [r.name for r in rows] == ["one", "two"]
    assert (rows[1].status, rows[1].size, rows[1].progress) == ("Progressing", "2.0KiB", "50%")
    table = format_table(rows).splitlines()
    assert table[0].split() == ["NAME", "STATUS", "SOURCE", "SIZE", "PROGRESS", "USED", "BY"]
    assert table[1].split()[-1] == "aimtc/tc-a,aimsvc/chat"


def test_why_available_has_nothing_to_wait_for() -> None:
    assert explain(mc("one", {"status": "Available"}), pvc("Bound"), None, NOW) == [
        "one is Available: nothing to wait for."
    ]


def test_why_failed_gives_the_reason_and_the_next_retry() -> None:
    status = {
        "status": "Failed",
        "failures": 2,
        "nextRetryTime": "2026-11-28T12:01:30Z",
        "lastDownloadFailure": {"reason": "AuthFailed", "message": "HF_TOKEN was rejected"},
    }
    lines = explain(mc("one", status), pvc("Bound"), None, NOW)
    assert lines[0] == "the last download failed (AuthFailed): HF_TOKEN was rejected"
    assert "in 90s" in lines[1]
    assert "2 failure(s)" in lines[1]


def test_why_pending_names_the_unbound_claim_and_the_unknown_size() -> None:
    lines = explain(mc("one", {"status": "Pending"}), pvc("Pending"), None, NOW)
    assert any("PVC claim is Pending" in line for line in lines)
    assert any("size is unknown" in line for line in lines)
    assert any("does not exist yet" in line for line in explain(mc("one"), None, None, NOW))


def test_why_progressing_reports_the_download() -> None:
    status = {
        "status": "Progressing",
        "progress": {"downloadedBytes": 1024, "totalBytes": 4096, "percentage": 25},
    }
    job = {"metadata": {"name": "dl-1"}, "status": {"active": 1}}
    lines = explain(mc("one", status, size="10Gi"), pvc("Bound"), job, NOW)
    assert lines == ["Job dl-1 is downloading: 1.0KiB of 4.0KiB (25%)"]


def test_human_age_reads_like_kubectl() -> None:
    assert human_age("2026-11-28T11:59:15Z", NOW) == "45s"
    assert human_age("2026-11-28T11:00:00Z", NOW) == "60m"
    assert human_age("2026-11-28T09:00:00Z", NOW) == "3h"
    assert human_age("2026-11-20T12:00:00Z", NOW) == "8d"
    assert human_age(None, NOW) == "-"


def test_the_controllers_display_strings_win_over_computed_ones() -> None:
    status = {
        "status": "Progressing",
        "sizeBytes": 1024,
        "displaySize": "1.0KiB (probed)",
        "displayPercentage": "12%",
        "progress": {"percentage": 10},
    }
    (row,) = cache_rows([mc("one", status)], [], [])
    assert (row.size, row.progress) == ("1.0KiB (probed)", "12%")
    assert (row.size_bytes, row.percentage) == (1024, 10)


def test_consumers_are_found_in_the_model_caches_own_namespace_only() -> None:
    tcs = [
        {"metadata": {"name": "tc", "namespace": "a"}, "status": {"modelCaches": [{"name": "m"}]}},
        {"metadata": {"name": "tc", "namespace": "b"}, "status": {"modelCaches": [{"name": "m"}]}},
    ]
    svcs = [
        {
            "metadata": {"name": "chat", "namespace": "b"},
            "status": {"cache": {"templateCacheRef": {"name": "tc"}}},
        }
    ]
    assert consumers_of(mc("m", namespace="a"), tcs, svcs) == ["aimtc/tc"]
    assert consumers_of(mc("m", namespace="b"), tcs, svcs) == ["aimtc/tc", "aimsvc/chat"]


AVAILABLE = {
    "status": "Available",
    "sizeBytes": 16 * 1024**3,
    "progress": {"percentage": 100},
    "persistentVolumeClaim": "llama-pvc",
    "job": "llama-dl-1",
    "failures": 1,
}


def test_wide_adds_the_pvc_the_job_the_failures_and_the_age() -> None:
    rows = cache_rows([mc("llama", AVAILABLE)], [], [])
    header, line = format_table(rows, wide=True, now=NOW).splitlines()
    assert header.split() == [
        "NAME", "STATUS", "SOURCE", "SIZE", "PROGRESS", "PVC", "JOB", "FAILURES", "AGE",
        "USED", "BY",
    ]  # fmt: skip
    assert line.split() == [
        "llama", "Available", "hf://org/llama", "16.0GiB", "100%", "llama-pvc", "llama-dl-1", "1",
        "3h", "-",
    ]  # fmt: skip


def test_all_namespaces_puts_the_namespace_first() -> None:
    rows = cache_rows([mc("b", namespace="two"), mc("a", namespace="one")], [], [])
    lines = show_ls(rows, None, namespaces=True).splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["NAMESPACE", "NAME"],
        ["one", "a"],
        ["two", "b"],
    ]


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_json_and_yaml_carry_display_strings_and_numbers(output: str) -> None:
    rows = cache_rows([mc("llama", AVAILABLE, namespace="ml")], [], [])
    text = show_ls(rows, output, namespaces=False)
    data = json.loads(text) if output == "json" else yaml.safe_load(text)
    (item,) = data["items"]
    assert item == {
        "namespace": "ml",
        "name": "llama",
        "status": "Available",
        "sourceUri": "hf://org/llama",
        "displaySize": "16.0GiB",
        "sizeBytes": 16 * 1024**3,
        "displayPercentage": "100%",
        "percentage": 100,
        "persistentVolumeClaim": "llama-pvc",
        "job": "llama-dl-1",
        "failures": 1,
        "creationTimestamp": "2026-11-28T09:00:00Z",
        "usedBy": [],
    }


def test_why_as_json_lists_what_it_waits_for() -> None:
    cache = mc("one", {"status": "Pending"}, namespace="ml")
    data = json.loads(show_why(cache, ["its PersistentVolumeClaim does not exist yet"], "json"))
    assert data == {
        "namespace": "ml",
        "name": "one",
        "status": "Pending",
        "waitingFor": ["its PersistentVolumeClaim does not exist yet"],
    }
    assert show_why(cache, ["a", "b"], None) == "- a\n- b"


@pytest.mark.parametrize(
    "argv",
    [
        ["-n", "ml", "--context", "prod", "-o", "wide", "ls"],
        ["ls", "-n", "ml", "--context", "prod", "-o", "wide"],
        ["--context", "prod", "ls", "--namespace=ml", "--output=wide"],
    ],
)
def test_the_plugins_flags_go_before_or_after_the_action(argv: list[str]) -> None:
    args = kubectl.build_parser().parse_args(argv)
    assert (args.action, args.namespace, args.context, args.output) == ("ls", "ml", "prod", "wide")
    assert args.prog == "kubectl aimd ls"


def test_the_plugins_defaults_leave_the_choice_to_the_kubeconfig() -> None:
    args = kubectl.build_parser().parse_args(["why", "llama"])
    assert (args.name, args.namespace, args.context, args.kubeconfig) == ("llama", None, None, None)
    assert (args.all_namespaces, args.output) == (False, None)


def test_a_name_across_all_namespaces_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert kubectl.main(["why", "llama", "-A", "--kubeconfig", "/nonexistent"]) == 2
    assert "use -n, not -A" in capsys.readouterr().err


def test_an_unknown_output_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        kubectl.build_parser().parse_args(["ls", "-o", "name"])
    assert exit_info.value.code == 2
