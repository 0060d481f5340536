"""`aimd cache ls` and `aimd cache why`: decisions over objects, no API server needed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aimd.cachectl import cache_rows, consumers_of, explain, format_table, human_bytes

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def mc(name: str, status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"sourceUri": f"hf://org/{name}", **spec},
        "status": status or {},
    }


def pvc(phase: str | None) -> dict[str, Any]:
    return {"metadata": {"name": "claim"}, "spec": {}, "status": {"phase": phase} if phase else {}}


TCS = [
    {"metadata": {"name": "tc-a"}, "status": {"modelCaches": [{"name": "one"}, {"name": "two"}]}},
    {"metadata": {"name": "tc-b"}, "status": {"modelCaches": [{"name": "two"}]}},
]
SVCS = [
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
