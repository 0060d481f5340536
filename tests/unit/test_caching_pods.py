"""`aimd.caching.pods.pod_problem` on the objects a real node produced (trimmed captures of the
real-node suite, tests/unit/fixtures/pods/): each cause a user can fix becomes a typed reason and
a message naming what to fix; a pod that is merely starting, running or done is no problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from aimd.api.reasons import Reason
from aimd.caching.pods import PodProblem, pod_problem

FIXTURES = Path(__file__).parent / "fixtures" / "pods"
Object = dict[str, Any]


def capture(name: str) -> Object:
    loaded: Object = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def problem(name: str, storage_class_exists: bool | None = None) -> PodProblem:
    captured = capture(name)
    found = pod_problem(captured["pod"], captured["pvc"], storage_class_exists)
    assert found is not None, name
    return found


def test_a_missing_secret_names_the_secret_and_the_key_the_pod_wants() -> None:
    reason, message = problem("secret-missing")
    namespace = capture("secret-missing")["pod"]["metadata"]["namespace"]
    assert reason == "SecretNotFound"
    assert message.startswith(
        f'Secret "hf-token" (key "token") does not exist in namespace "{namespace}"'
    )
    assert "create it" in message


def test_a_secret_without_the_key_names_the_key() -> None:
    reason, message = problem("secret-key-missing")
    assert reason == "SecretNotFound"
    assert '"hf-token"' in message
    assert 'has no key "token"' in message
    assert "add that key" in message


@pytest.mark.parametrize("name", ["image-pull", "image-pull-backoff"])
def test_an_image_that_cannot_be_pulled_names_the_image_and_the_fields_to_fix(name: str) -> None:
    reason, message = problem(name)
    assert reason == "ImagePullFailed"
    assert '"localhost/aimd-missing:0" cannot be pulled' in message
    assert "spec.downloadImage" in message
    assert "spec.imagePullSecrets" in message


def test_a_storage_class_that_does_not_exist_says_so_when_the_caller_knows() -> None:
    reason, message = problem("no-storage-class", storage_class_exists=False)
    claim = capture("no-storage-class")["pvc"]["metadata"]["name"]
    assert reason == "StorageClassNotFound"
    assert message.startswith(f'StorageClass "no-such-class" of volume {claim} does not exist')
    assert "spec.storageClassName" in message


def test_an_unbindable_volume_names_what_it_asks_for() -> None:
    reason, message = problem("access-mode", storage_class_exists=True)
    claim = capture("access-mode")["pvc"]["metadata"]["name"]
    assert reason == "VolumeUnschedulable"
    assert f'{claim} (ReadWriteMany, 1Gi, StorageClass "rwo-only-' in message
    assert "didn't find available persistent volumes to bind" in message


def test_an_unknown_storage_class_is_not_claimed_missing_without_knowing() -> None:
    reason, message = problem("no-storage-class", storage_class_exists=None)
    assert reason == "VolumeUnschedulable"
    assert '"no-such-class"' in message


def test_without_a_claim_an_unschedulable_pod_is_a_scheduling_problem() -> None:
    pod = capture("access-mode")["pod"]
    reason, message = pod_problem(pod) or ("", "")
    assert reason == "PodUnschedulable"
    assert "0/1 nodes are available" in message


def _with_waiting(pod: Object, reason: str, message: str) -> Object:
    changed = copy.deepcopy(pod)
    changed["status"]["containerStatuses"][0]["state"] = {
        "waiting": {"reason": reason, "message": message}
    }
    return changed


def test_a_missing_config_map_and_key_are_named_like_secrets() -> None:
    pod = capture("secret-missing")["pod"]
    reason, message = pod_problem(
        _with_waiting(pod, "CreateContainerConfigError", 'configmap "hub" not found')
    ) or ("", "")
    assert reason == "ConfigMapNotFound"
    assert '"hub"' in message
    reason, message = pod_problem(
        _with_waiting(
            pod, "CreateContainerConfigError", "couldn't find key url in ConfigMap ns/hub"
        )
    ) or ("", "")
    assert reason == "ConfigMapNotFound"
    assert 'no key "url"' in message


def test_any_other_container_config_error_passes_the_kubelets_words_on() -> None:
    pod = capture("secret-missing")["pod"]
    words = "container has runAsNonRoot and image will run as root"
    found = pod_problem(_with_waiting(pod, "CreateContainerConfigError", words))
    assert found == PodProblem(
        Reason.CONTAINER_CONFIG_INVALID,
        f"the kubelet cannot create the download container: {words}",
    )


@pytest.mark.parametrize("phase", ["Running", "Succeeded", "Failed"])
def test_a_pod_past_pending_is_no_problem_here(phase: str) -> None:
    pod = copy.deepcopy(capture("secret-missing")["pod"])
    pod["status"]["phase"] = phase
    assert pod_problem(pod) is None


def test_a_pod_still_creating_its_container_is_no_problem() -> None:
    pod = _with_waiting(capture("secret-missing")["pod"], "ContainerCreating", "")
    assert pod_problem(pod) is None


def test_a_pod_not_yet_scheduled_without_a_verdict_is_no_problem() -> None:
    pod = copy.deepcopy(capture("access-mode")["pod"])
    pod["status"]["conditions"] = []
    assert pod_problem(pod, capture("access-mode")["pvc"]) is None


def test_a_deleted_jobs_pod_killed_after_its_grace_period_is_no_start_problem() -> None:
    """Its container ran and was killed (exit 137): the Job's outcome says so, not this."""
    captured = capture("deleted-job-pod")
    (status,) = captured["pod"]["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 137
    assert pod_problem(captured["pod"], captured["pvc"]) is None
