"""`aimd uninstall`'s decisions, no API server needed: is the controller's Lease held, which
finalizers stay, which caches go, which flag combinations make sense, and what is left."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aimd.api import kinds
from aimd.cli.uninstall import (
    LeaseState,
    LeaseView,
    configure,
    leftovers,
    remaining_finalizers,
    spare,
    usage_problem,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def lease(holder: str, renewed_ago: float | None, duration: int = 15) -> LeaseView:
    spec: dict[str, Any] = {"holderIdentity": holder, "leaseDurationSeconds": duration}
    if renewed_ago is not None:
        renewed = NOW - timedelta(seconds=renewed_ago)
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return LeaseView.of(
        {
            "metadata": {"name": "aimd-leader", "namespace": "aimd-system", "resourceVersion": "7"},
            "spec": spec,
        }
    )


def test_a_lease_renewed_within_its_duration_is_held() -> None:
    assert lease("aimd-0_x", 3).state(NOW) is LeaseState.HELD
    assert "held by aimd-0_x (renewed 3s ago)" in lease("aimd-0_x", 3).describe(NOW)


def test_a_released_lease_is_free() -> None:
    # What the controller writes on a clean stop: no holder (and a 1 s duration).
    assert lease("", 0, duration=1).state(NOW) is LeaseState.FREE


def test_a_lease_whose_renewals_are_late_is_quiet_not_free() -> None:
    """Late by our clock may be our clock: uninstall watches it before calling it free."""
    assert lease("aimd-0_x", 16).state(NOW) is LeaseState.QUIET
    assert lease("aimd-0_x", None).state(NOW) is LeaseState.QUIET


def obj(finalizers: list[str] | None = None, status: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "x", "namespace": "ml"}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    return {"metadata": metadata, "status": {"status": status} if status else {}}


def test_only_aimds_finalizer_is_removed() -> None:
    assert remaining_finalizers(obj([kinds.FINALIZER])) == []
    kept = remaining_finalizers(obj(["example.com/a", kinds.FINALIZER, "example.com/b"]))
    assert kept == ["example.com/a", "example.com/b"]
    assert remaining_finalizers(obj(["example.com/a"])) is None
    assert remaining_finalizers(obj()) is None


def test_keep_available_spares_only_available_caches() -> None:
    assert spare(obj(status="Available"), keep_available=True)
    assert not spare(obj(status="Progressing"), keep_available=True)
    assert not spare(obj(status="Failed"), keep_available=True)
    assert not spare(obj(status="Available"), keep_available=False)


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(argv)


def test_defaults_remove_finalizers_only_in_every_namespace() -> None:
    parsed = args()
    assert [parsed.dry_run, parsed.delete_caches, parsed.delete_crds, parsed.force] == [False] * 4
    assert (parsed.namespace, parsed.leader_election_id) == (None, "aimd-leader")
    assert usage_problem(parsed) is None


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--keep-available"], "goes with --delete-caches"),
        (["--delete-crds", "--delete-caches", "--keep-available"], "drop --keep-available"),
        (["--delete-crds", "-n", "ml"], "cluster-wide"),
        (["--stop-controller", "aimd-controller"], "NAMESPACE/DEPLOYMENT"),
    ],
)
def test_combinations_that_cannot_do_what_they_say_are_refused(
    argv: list[str], complaint: str
) -> None:
    problem = usage_problem(args(*argv))
    assert problem is not None
    assert complaint in problem


def test_sensible_combinations_pass() -> None:
    for argv in (
        ["--delete-caches", "--keep-available", "-n", "ml"],
        ["--delete-crds"],
        ["--delete-crds", "-A"],
        ["--stop-controller", "aimd-system/aimd-controller", "--dry-run"],
    ):
        assert usage_problem(args(*argv)) is None, argv


def cache(name: str, status: str, size: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"status": status, "sizeBytes": size}}


def test_what_is_left_is_counted_and_says_how_to_delete_it() -> None:
    left = {
        kinds.SERVICES.kind: [obj(), obj()],
        kinds.TEMPLATE_CACHES.kind: [],
        kinds.MODEL_CACHES.kind: [
            cache("a", "Available", 16 * 1024**3),
            cache("b", "Progressing", 5),
        ],
    }
    lines = leftovers(left, ["aimmodelcaches.aim.eai.amd.com"], None, dry_run=False)
    text = "\n".join(lines)
    assert lines[0] == "What is left in the cluster (aimd's finalizer holds none of it):"
    assert "  2 AIMServices" in lines
    assert "  2 AIMModelCaches, 1 Available (16.0GiB of models on PVCs)" in lines
    assert "AIMTemplateCache" not in text
    assert "aimd uninstall --delete-caches [--keep-available]" in text
    assert "kubectl delete aimsvc,aimmc --all -A (an AIMModelCache takes its PVC" in text
    assert "aimd uninstall --delete-crds" in text


def test_nothing_left_says_so() -> None:
    assert leftovers({kinds.SERVICES.kind: []}, [], "ml", dry_run=True) == [
        "Nothing of aimd would be left in namespace ml."
    ]
