"""The pure decisions of the caching reconcilers: index state in, children and status out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aimd.api.meta import rfc3339 as timestamp
from aimd.api.reasons import Reason
from aimd.api.types import ModelCache, Service, Template, TemplateCache, view
from aimd.caching import builders, names
from aimd.caching.model_cache_plan import Observed, RetryPolicy, decide, jobs_to_remove, refused
from aimd.caching.pods import PodProblem
from aimd.caching.rules import worst
from aimd.caching.service import desired_status as service_status
from aimd.caching.service import mounts_of, reusable_template_cache
from aimd.caching.service import news_can_wait as service_news_can_wait
from aimd.caching.settling import Settling
from aimd.caching.template_cache import desired_status as template_cache_status
from aimd.caching.template_cache import news_can_wait
from aimd.caching.templates import Resolved, problems
from aimd.caching.writes import Refused, status_patch
from aimd.kube.errors import Forbidden

Object = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy()
JOBS = builders.Downloads("img")
URI = "hf://org/model"


def mc(size: str | None = "10Gi", **status: Any) -> ModelCache:
    spec: Object = {"sourceUri": URI, "modelId": "org/model"}
    if size:
        spec["size"] = size
    return view(
        {
            "metadata": {"name": "mc", "namespace": "ns", "uid": "mc-uid", "generation": 1},
            "spec": spec,
            "status": status,
        },
        ModelCache,
    )


CLAIM = names.pvc_name("mc", "mc-uid")


def pvc(phase: str = "Bound") -> Object:
    return {"metadata": {"name": CLAIM, "uid": "abcde-123"}, "status": {"phase": phase}}


def job(name: str, outcome: str | None) -> Object:
    conditions = [{"type": outcome, "status": "True"}] if outcome else []
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


READY = (True, True, True)
JOB0 = names.download_job_name("mc", "abcde-123", 0)


def test_an_unknown_size_is_probed_before_any_volume() -> None:
    plan = decide(mc(size=None), Observed(None, {}, READY), JOBS, NOW, POLICY)
    kinds = [body["kind"] for _, body in plan.creates]
    assert kinds == ["Job"]
    assert plan.creates[0][1]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == [
        "aimd",
        "probe",
    ]
    assert plan.status["status"] == "Pending"


def test_a_probed_size_sizes_the_volume() -> None:
    probed = mc(size=None, probe={"sizeBytes": 20 * 1024**3})
    plan = decide(probed, Observed(None, {}, READY), JOBS, NOW, POLICY)
    (claim,) = [body for _, body in plan.creates if body["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "22Gi"


def test_a_new_cache_gets_its_downloader_rights_and_volume_first() -> None:
    plan = decide(mc(), Observed(None, {}, (False, False, False)), JOBS, NOW, POLICY)
    assert [b["kind"] for _, b in plan.creates] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "PersistentVolumeClaim",
    ]
    role = plan.creates[1][1]
    assert role["rules"] == [
        {
            "apiGroups": ["aim.eai.amd.com"],
            "resources": ["aimmodelcaches/status"],
            "resourceNames": ["mc"],
            "verbs": ["patch"],
        }
    ]
    assert all(b["metadata"]["ownerReferences"][0]["uid"] == "mc-uid" for _, b in plan.creates)


def test_a_bound_volume_gets_a_download_job_and_progressing() -> None:
    plan = decide(mc(), Observed(pvc(), {}, READY), JOBS, NOW, POLICY)
    (created,) = [b for _, b in plan.creates]
    assert created["metadata"]["name"] == JOB0
    pod = created["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["aimd", "download", URI, "--target", "/workspace/model"]
    assert container["image"] == "img"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert created["spec"]["backoffLimit"] == 0
    assert {"name": "AIMD_MODEL_CACHE_NAME", "value": "mc"} in container["env"]
    assert plan.status["status"] == "Progressing"
    assert plan.started


def test_available_needs_the_job_complete_and_the_volume_bound() -> None:
    jobs = {JOB0: job(JOB0, "Complete")}
    waiting = decide(mc(), Observed(pvc("Pending"), jobs, READY), JOBS, NOW, POLICY)
    assert waiting.status["status"] == "Progressing"
    done = decide(mc(), Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    assert done.status["status"] == "Available"
    assert done.status["availableTime"] == timestamp(NOW)
    assert done.succeeded


def test_a_failed_job_fails_the_cache_with_its_reason_and_a_retry_time() -> None:
    failing = mc(lastDownloadFailure={"reason": "AuthFailed", "message": "401"})
    jobs = {JOB0: job(JOB0, "Failed")}
    plan = decide(failing, Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    assert plan.status["status"] == "Failed"
    assert plan.status["failures"] == 1
    ready = plan.status["conditions"][-1]
    assert ready["reason"] == "AuthFailed"
    retry = datetime.fromisoformat(plan.status["nextRetryTime"].replace("Z", "+00:00"))
    assert timedelta(0) < retry - NOW <= timedelta(minutes=1)
    assert plan.failed_reason == "AuthFailed"


def test_a_failed_cache_waits_for_its_retry_time_then_starts_a_new_job() -> None:
    later = timestamp(NOW + timedelta(seconds=30))
    failed = mc(status="Failed", failures=1, nextRetryTime=later, job=JOB0)
    jobs = {JOB0: job(JOB0, "Failed")}
    waiting = decide(failed, Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    assert not waiting.creates
    assert waiting.requeue_after == 30
    retried = decide(failed, Observed(pvc(), jobs, READY), JOBS, NOW + timedelta(minutes=1), POLICY)
    (created,) = [b for _, b in retried.creates]
    assert created["metadata"]["name"] == names.download_job_name("mc", "abcde-123", 1)
    assert retried.retried
    assert retried.status["status"] == "Progressing"
    assert retried.status["nextRetryTime"] is None


def test_backoff_is_exponential_first_within_a_minute_capped_at_thirty() -> None:
    delays = [POLICY.delay(n) for n in range(1, 12)]
    assert delays[0] <= 60
    assert delays == sorted(delays)
    assert max(delays) == 1800


def test_an_available_cache_whose_volume_vanished_downloads_again() -> None:
    available = mc(status="Available", job=JOB0, availableTime=timestamp(NOW))
    plan = decide(available, Observed(None, {}, READY), JOBS, NOW, POLICY)
    assert [b["kind"] for _, b in plan.creates] == ["PersistentVolumeClaim"]
    assert plan.status["status"] == "Progressing"
    assert plan.status["conditions"][-1]["reason"] == "VolumeLost"


def test_an_available_cache_writes_nothing_again() -> None:
    jobs = {JOB0: job(JOB0, "Complete")}
    first = decide(mc(), Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    settled = mc(**{k: v for k, v in first.status.items() if v is not None})
    again = decide(settled, Observed(pvc(), jobs, READY), JOBS, NOW + timedelta(hours=1), POLICY)
    assert not again.creates
    assert status_patch(settled, again.status) == {}


def template(*uris: str) -> Template:
    return view(
        {
            "metadata": {"name": "tpl", "namespace": "ns", "uid": "tpl-uid"},
            "spec": {
                "image": "img",
                "modelSources": [
                    {"modelId": f"org/m{i}", "sourceUri": u} for i, u in enumerate(uris)
                ],
            },
            "status": {},
        },
        Template,
    )


def tc() -> TemplateCache:
    return view(
        {
            "metadata": {"name": "tc", "namespace": "ns", "uid": "tc-uid"},
            "spec": {"templateName": "tpl"},
            "status": {},
        },
        TemplateCache,
    )


def named_mc(name: str, uri: str, status: str, created: str = "2026-01-01T00:00:00Z") -> ModelCache:
    return view(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": name,
                "creationTimestamp": created,
            },
            "spec": {"sourceUri": uri},
            "status": {"status": status, "persistentVolumeClaim": f"{name}-data"},
        },
        ModelCache,
    )


def test_a_template_cache_is_the_worst_of_its_model_caches() -> None:
    assert worst(["Available", "Progressing"]) == "Progressing"
    assert worst(["Available", "Failed", "Pending"]) == "Failed"
    assert worst(["Available", "Available"]) == "Available"
    caches = {"hf://a/a": [named_mc("a", "hf://a/a", "Available")], "hf://b/b": []}
    status = template_cache_status(
        tc(), Resolved(template("hf://a/a", "hf://b/b"), "Namespace"), caches.__getitem__, NOW
    )
    assert status["status"] == "Pending"
    assert [e["name"] for e in status["modelCaches"]] == ["a", ""]


def test_a_template_cache_prefers_an_available_model_cache_over_an_older_one() -> None:
    older = named_mc("old", "hf://a/a", "Failed", "2025-01-01T00:00:00Z")
    ready = named_mc("new", "hf://a/a", "Available")
    status = template_cache_status(
        tc(), Resolved(template("hf://a/a"), "Namespace"), lambda uri: [older, ready], NOW
    )
    assert status["status"] == "Available"
    assert status["modelCaches"][0]["name"] == "new"


def test_a_template_cache_without_template_fails_with_template_not_found() -> None:
    status = template_cache_status(tc(), None, lambda uri: [], NOW)
    assert status["status"] == "Failed"
    assert status["conditions"][-1]["reason"] == "TemplateNotFound"


def test_invalid_templates_name_the_bad_field() -> None:
    bad = template("ftp://x/y")
    bad["spec"]["modelSources"][0]["modelId"] = "no-slash"
    fields = {p.field for p in problems(bad)}
    assert fields == {"spec.modelSources[0].modelId", "spec.modelSources[0].sourceUri"}


def svc(cache: bool = True) -> Service:
    return view(
        {
            "metadata": {"name": "svc", "namespace": "ns", "uid": "svc-uid", "generation": 1},
            "spec": {"templateName": "tpl", "cacheModel": cache, "replicas": 1},
            "status": {},
        },
        Service,
    )


def test_a_starting_services_cache_becoming_ready_can_wait_for_its_replicas() -> None:
    resolved = Resolved(template("hf://a/a"), "Namespace")
    cache = {**tc(), "status": {"status": "Pending"}}
    waiting = service_status(svc(), resolved, view(cache, TemplateCache), None, NOW)
    assert waiting["status"] == "Starting"
    assert not service_news_can_wait({}, waiting), "the first Starting is written at once"
    started = view({**svc(), "status": waiting}, Service)
    cache["status"] = {"status": "Available"}
    ready_cache = view(cache, TemplateCache)
    # The cache is Available, the Deployment not there yet: still Starting, news that can wait.
    next_step = service_status(started, resolved, ready_cache, None, NOW)
    assert next_step["status"] == "Starting"
    assert service_news_can_wait(waiting, next_step)
    # What comes after is written at once: Running, or a failing cache.
    deployment = {"status": {"readyReplicas": 1}}
    running = service_status(started, resolved, ready_cache, deployment, NOW)
    assert running["status"] == "Running"
    assert not service_news_can_wait(waiting, running)
    cache["status"] = {"status": "Failed"}
    failed = service_status(started, resolved, view(cache, TemplateCache), {}, NOW)
    assert not service_news_can_wait(waiting, failed)


def test_a_service_without_its_template_is_pending() -> None:
    status = service_status(svc(), None, None, None, NOW)
    assert status["status"] == "Pending"
    reasons = {c["type"]: c["reason"] for c in status["conditions"]}
    assert reasons["TemplateResolved"] == "TemplateNotFound"


def test_a_service_reuses_the_available_template_cache_of_its_template() -> None:
    resolved = Resolved(template("hf://a/a"), "Namespace")
    pending = view({**tc(), "status": {"status": "Pending"}}, TemplateCache)
    ready = view(
        {
            **tc(),
            "metadata": {**tc()["metadata"], "name": "tc2", "uid": "tc2"},
            "status": {"status": "Available"},
        },
        TemplateCache,
    )
    other = view({**tc(), "spec": {"templateName": "else"}}, TemplateCache)
    assert reusable_template_cache([pending, ready, other], resolved) is ready


def test_a_service_with_an_available_cache_mounts_every_model_read_only() -> None:
    cache = {
        "status": {
            "status": "Available",
            "modelCaches": [
                {"modelId": "org/a", "persistentVolumeClaim": "a-data"},
                {"modelId": "org/b", "persistentVolumeClaim": "b-data"},
            ],
        }
    }
    deployment = builders.deployment(
        svc(), template("hf://a/a"), mounts_of(view(cache, TemplateCache))
    )
    pod = deployment["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == [
        "/workspace/model-cache/org/a",
        "/workspace/model-cache/org/b",
    ]
    assert all(m["readOnly"] for m in mounts)
    assert {"name": "AIM_CACHE_PATH", "value": "/workspace/model-cache"} in pod["containers"][0][
        "env"
    ]
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"


def test_a_service_without_caching_mounts_nothing() -> None:
    deployment = builders.deployment(svc(cache=False), template("hf://a/a"), None)
    pod = deployment["spec"]["template"]["spec"]
    assert "volumes" not in pod
    assert "volumeMounts" not in pod["containers"][0]


def retry_annotated(status: Object, value: str) -> ModelCache:
    cache = mc(**status)
    cache["metadata"]["annotations"] = {"aim.eai.amd.com/retry": value}
    return cache


def test_a_retry_request_cuts_the_backoff_short_once() -> None:
    later = timestamp(NOW + timedelta(minutes=10))
    failed = {"status": "Failed", "failures": 3, "nextRetryTime": later, "job": JOB0}
    jobs = {JOB0: job(JOB0, "Failed")}
    asked = decide(retry_annotated(failed, "t1"), Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    assert [b["kind"] for _, b in asked.creates] == ["Job"]
    assert asked.status["retryRequest"] == "t1"
    spent = retry_annotated({**failed, "retryRequest": "t1"}, "t1")
    waiting = decide(spent, Observed(pvc(), jobs, READY), JOBS, NOW, POLICY)
    assert not waiting.creates


def test_a_retry_request_while_nothing_failed_is_spent() -> None:
    downloading = retry_annotated({"status": "Progressing", "job": JOB0}, "t1")
    plan = decide(downloading, Observed(pvc(), {JOB0: job(JOB0, None)}, READY), JOBS, NOW, POLICY)
    assert plan.status["retryRequest"] == "t1"


def test_a_changed_spec_cuts_the_backoff_short() -> None:
    later = timestamp(NOW + timedelta(minutes=10))
    failed = mc(status="Failed", failures=2, nextRetryTime=later, job=JOB0, observedGeneration=1)
    failed["metadata"]["generation"] = 2
    plan = decide(failed, Observed(pvc(), {JOB0: job(JOB0, "Failed")}, READY), JOBS, NOW, POLICY)
    assert [b["kind"] for _, b in plan.creates] == ["Job"]


def test_a_cache_re_created_under_an_old_name_waits_for_the_old_volume() -> None:
    """E6: the successor never POSTs into its namesake's volume, and says why it waits."""
    old_volume = {"metadata": {"name": "mc-data", "uid": "old", "deletionTimestamp": "x"}}
    plan = decide(mc(), Observed(None, {}, READY, (old_volume,)), JOBS, NOW, POLICY)
    assert plan.creates == []
    assert plan.status["status"] == "Pending"
    ready = plan.status["conditions"][-1]
    assert ready["reason"] == "VolumeReleasing"
    assert "mc-data" in ready["message"]
    assert "pod" in ready["message"]


def test_each_volume_name_serves_one_volume_only() -> None:
    first = names.pvc_name("mc", "uid-1")
    assert names.pvc_name("mc", "uid-2") != first, "a re-created cache gets another claim"
    assert names.pvc_name("mc", "uid-1", replaces=first) != first, "so does a lost volume"
    lost = mc(status="Available", job=JOB0, persistentVolumeClaim=CLAIM)
    plan = decide(lost, Observed(None, {}, READY), JOBS, NOW, POLICY)
    (claim,) = [body for _, body in plan.creates if body["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == names.pvc_name("mc", "mc-uid", replaces=CLAIM) != CLAIM
    assert plan.status["persistentVolumeClaim"] == claim["metadata"]["name"]


def test_an_available_cache_says_so_completely() -> None:
    """E7: progress at 100 % with the bytes, though the download never reported its last tick."""
    downloading = mc(progress={"totalBytes": 1000, "downloadedBytes": 600, "percentage": 60})
    plan = decide(
        downloading, Observed(pvc(), {JOB0: job(JOB0, "Complete")}, READY), JOBS, NOW, POLICY
    )
    assert plan.status["status"] == "Available"
    assert plan.status["progress"] == {
        "totalBytes": 1000,
        "downloadedBytes": 1000,
        "percentage": 100,
        "bytesPerSecond": 0,
    }
    assert plan.status["displayPercentage"] == "100%"
    assert plan.status["displaySize"] == "10.0GiB"


def test_old_attempts_do_not_pile_up() -> None:
    """E7: the current Job and the last failed download stay; older ones and probes go."""

    def at(name: str, outcome: str | None, created: str) -> Object:
        found = job(name, outcome)
        found["metadata"]["creationTimestamp"] = created
        return found

    jobs = {
        "mc-probe-0": at("mc-probe-0", "Complete", "2026-01-01T00:00:00Z"),
        "mc-dl-a-0": at("mc-dl-a-0", "Failed", "2026-01-01T00:01:00Z"),
        "mc-dl-a-1": at("mc-dl-a-1", "Failed", "2026-01-01T00:02:00Z"),
        "mc-dl-a-2": at("mc-dl-a-2", None, "2026-01-01T00:03:00Z"),
    }
    removed = {j["metadata"]["name"] for j in jobs_to_remove(jobs, "mc-dl-a-2")}
    assert removed == {"mc-probe-0", "mc-dl-a-0"}
    removed = {j["metadata"]["name"] for j in jobs_to_remove(jobs, None)}
    assert removed == {"mc-probe-0", "mc-dl-a-0", "mc-dl-a-2"}


def test_a_refused_child_is_said_in_the_servers_words_and_retried_on_a_bounded_backoff() -> None:
    error = Refused("PersistentVolumeClaim mc-data", Forbidden(403, "Forbidden", "exceeded quota"))
    status, first_delay = refused(mc(status="Pending"), error, NOW)
    ready = status["conditions"][-1]
    assert ready["reason"] == "CreateRefused"
    assert "exceeded quota" in ready["message"]
    assert "PersistentVolumeClaim mc-data" in ready["message"]
    still = mc(status="Pending", conditions=status["conditions"])
    _, later_delay = refused(still, error, NOW + timedelta(minutes=2))
    _, much_later = refused(still, error, NOW + timedelta(hours=5))
    assert 0 < first_delay < later_delay < much_later <= 300


def sized_pvc(request: str, capacity: str | None = None) -> Object:
    claim = pvc()
    claim["spec"] = {"resources": {"requests": {"storage": request}}}
    if capacity:
        claim["status"]["capacity"] = {"storage": capacity}
    return claim


def test_a_volume_too_small_grows_when_its_storage_class_allows() -> None:
    """E6: after StorageFull a person raises spec.size; an expandable volume is grown in place."""
    bigger = mc(size="20Gi", status="Failed", failures=1, job=JOB0)
    seen = Observed(sized_pvc("11Gi", "11Gi"), {}, READY, expandable=True)
    plan = decide(bigger, seen, JOBS, NOW, POLICY)
    assert [(p["metadata"]["name"], size) for p, size in plan.resizes] == [(CLAIM, "22Gi")]
    assert plan.creates == []
    assert plan.status["conditions"][-1]["reason"] == "VolumeExpanding"
    growing = Observed(sized_pvc("22Gi", "11Gi"), {}, READY, expandable=True)
    waiting = decide(bigger, growing, JOBS, NOW, POLICY)
    assert waiting.resizes == []
    assert waiting.creates == []
    assert waiting.status["conditions"][-1]["reason"] == "VolumeExpanding"
    grown = decide(bigger, Observed(sized_pvc("22Gi", "22Gi"), {}, READY), JOBS, NOW, POLICY)
    assert [body["kind"] for _, body in grown.creates] == ["Job"]


def test_a_volume_too_small_that_cannot_grow_is_replaced_on_the_next_attempt() -> None:
    failed = mc(size="20Gi", status="Failed", failures=1, job=JOB0, observedGeneration=1)
    failed["metadata"]["generation"] = 2
    job1 = names.download_job_name("mc", "abcde-123", 1)
    running = decide(
        failed, Observed(sized_pvc("11Gi"), {job1: job(job1, None)}, READY), JOBS, NOW, POLICY
    )
    assert running.retired_volumes == [], "an attempt under way finishes on its volume first"
    plan = decide(failed, Observed(sized_pvc("11Gi"), {}, READY), JOBS, NOW, POLICY)
    (claim,) = [body for _, body in plan.creates if body["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "22Gi"
    assert claim["metadata"]["name"] != CLAIM
    assert [v["metadata"]["name"] for v in plan.retired_volumes] == [CLAIM]
    assert plan.status["persistentVolumeClaim"] == claim["metadata"]["name"]
    assert plan.status["conditions"][-1]["reason"] == "VolumeReplacing"


def test_an_available_cache_keeps_its_volume_whatever_the_size_says() -> None:
    available = mc(size="20Gi", status="Available", job=JOB0, persistentVolumeClaim=CLAIM)
    plan = decide(available, Observed(sized_pvc("11Gi"), {}, READY), JOBS, NOW, POLICY)
    assert plan.status["status"] == "Available"
    assert plan.retired_volumes == []
    assert plan.resizes == []


def test_a_download_waits_for_a_slot_and_says_its_place() -> None:
    seen = Observed(pvc(), {}, READY, slot=lambda: 3)
    plan = decide(mc(), seen, JOBS, NOW, POLICY)
    assert plan.creates == []
    assert plan.status["status"] == "Pending"
    ready = plan.status["conditions"][-1]
    assert ready["reason"] == "WaitingForDownloadSlot"
    assert "3rd in the queue" in ready["message"]


def test_what_the_admin_does_not_allow_is_refused_before_anything_is_made() -> None:
    """S1: a foreign image or endpoint: Failed, NotAllowed naming the field, nothing created."""
    refused = ("spec.downloadImage: evil:1 is not an allowed download image",)
    plan = decide(
        mc(), Observed(None, {}, (False, False, False), not_allowed=refused), JOBS, NOW, POLICY
    )
    assert plan.creates == []
    assert plan.status["status"] == "Failed"
    ready = plan.status["conditions"][-1]
    assert ready["reason"] == "NotAllowed"
    assert "spec.downloadImage" in ready["message"]
    assert plan.failed_reason is None, "not a failed download: no retry backoff, no failure count"


def test_a_pod_that_cannot_start_is_said_with_its_cause() -> None:
    """E6: a missing Secret waits (the kubelet starts the same pod once it exists)."""
    problem = PodProblem(Reason.SECRET_NOT_FOUND, 'Secret "hf-token" does not exist')
    seen = Observed(pvc(), {JOB0: job(JOB0, None)}, READY, pod_problems={JOB0: problem})
    plan = decide(mc(), seen, JOBS, NOW, POLICY)
    assert plan.status["status"] == "Pending"
    ready = plan.status["conditions"][-1]
    assert (ready["reason"], ready["message"]) == ("SecretNotFound", problem.message)
    assert plan.creates == []


def test_an_image_that_cannot_be_pulled_fails_the_attempt() -> None:
    """A Job's pod template cannot change: the next attempt, with a fixed image, is a new Job."""
    problem = PodProblem(Reason.IMAGE_PULL_FAILED, "the download image cannot be pulled")
    seen = Observed(pvc(), {JOB0: job(JOB0, None)}, READY, pod_problems={JOB0: problem})
    plan = decide(mc(), seen, JOBS, NOW, POLICY)
    assert plan.status["status"] == "Failed"
    assert plan.status["conditions"][-1]["reason"] == "ImagePullFailed"
    assert plan.failed_reason == "ImagePullFailed"
    fixed = mc(status="Failed", failures=1, job=JOB0, observedGeneration=1)
    fixed["metadata"]["generation"] = 2
    retried = decide(fixed, Observed(pvc(), {JOB0: job(JOB0, None)}, READY), JOBS, NOW, POLICY)
    assert [b["metadata"]["name"] for _, b in retried.creates] == [
        names.download_job_name("mc", "abcde-123", 1)
    ]
    assert [j["metadata"]["name"] for j in retried.deletes] == [JOB0], "the stuck Job goes"


def test_a_template_caches_waiting_news_settles_but_what_services_act_on_is_written_at_once() -> (
    None
):
    clock = [100.0]
    settling = Settling(news_can_wait, settle=3.0, clock=lambda: clock[0])
    key = ("ns", "tc")
    now: dict[str, Any] = {}

    def status(state: str, reason: str = Reason.MODEL_CACHE_PENDING) -> dict[str, Any]:
        return {"status": state, "conditions": [{"type": "Ready", "reason": reason}]}

    pending, progressing = status("Pending"), status("Progressing")
    # First sight: a Pending waits the whole window, however often the TC is reconciled.
    assert settling.wait(key, now, pending) == 3.0
    clock[0] = 101.0
    assert settling.wait(key, now, progressing) == 2.0
    clock[0] = 103.0
    assert settling.wait(key, now, progressing) == 0.0
    settling.wrote(key, now, progressing)
    # After a write, the next waiting news waits a window again ...
    clock[0] = 104.0
    assert settling.wait(key, now, pending) == 2.0
    # ... but Available, Failed and a refusal never wait.
    assert settling.wait(key, now, status("Available", Reason.AVAILABLE)) == 0.0
    assert settling.wait(key, now, status("Failed", Reason.MODEL_CACHE_FAILED)) == 0.0
    assert settling.wait(key, now, status("Pending", Reason.CREATE_REFUSED)) == 0.0
    assert not news_can_wait(now, status("Pending", Reason.CREATE_REFUSED))
    # A TC seen again after it went starts afresh.
    settling.forget(key)
    assert settling.wait(key, now, pending) == 3.0
