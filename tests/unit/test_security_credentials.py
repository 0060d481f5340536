"""Secrets by consent as pure decisions: what the download Job's env holds, the RoleBinding the
downloader gets, and how the download reads the references back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aimd.api.types import ModelCache, view
from aimd.caching import builders
from aimd.caching import credentials as controller_side
from aimd.download import credentials as download_side
from aimd.download.reasons import DownloadFailed, Reason

SECRET = {"secretKeyRef": {"name": "hf-token", "key": "token"}}
Object = dict[str, Any]


def mc(env: list[Object]) -> ModelCache:
    return view(
        {
            "apiVersion": "aim.eai.amd.com/v1alpha1",
            "kind": "AIMModelCache",
            "metadata": {"name": "mc", "namespace": "team", "uid": "mc-uid"},
            "spec": {"sourceUri": "hf://org/model", "env": env},
        },
        ModelCache,
    )


ENV: list[Object] = [
    {"name": "HF_TOKEN", "valueFrom": SECRET},
    {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
        "secretKeyRef": {"name": "s3", "key": "secret", "optional": True}}},
    {"name": "AIMD_DOWNLOAD_CONCURRENCY", "value": "4"},
    {"name": "REGION", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "region"}}},
]  # fmt: skip


def container_env(job: Object) -> list[Object]:
    env: list[Object] = job["spec"]["template"]["spec"]["containers"][0]["env"]
    return env


def test_without_consent_the_job_mounts_what_the_cache_names() -> None:
    job = builders.download_job(mc(ENV), "job", "claim", builders.Downloads("img"))
    assert container_env(job)[3:] == ENV
    assert controller_side.consent_role_binding(mc(ENV), require_consent=False) is None


@pytest.mark.parametrize("build", ["download", "probe"])
def test_with_consent_no_secret_is_mounted_and_the_references_travel_in_env(build: str) -> None:
    cache = mc([*ENV, {"name": "AIMD_SECRET_ENV", "value": '[{"env":"X","secret":"y","key":"z"}]'}])
    downloads = builders.Downloads("img", require_secret_consent=True)
    job = (
        builders.download_job(cache, "job", "claim", downloads)
        if build == "download"
        else builders.probe_job(cache, "job", downloads)
    )
    env = container_env(job)
    assert "secretKeyRef" not in json.dumps(job)
    names = [var["name"] for var in env]
    assert names == [
        "AIMD_MODEL_CACHE_NAME",
        "AIMD_MODEL_CACHE_NAMESPACE",
        "AIMD_LOG_FORMAT",
        "AIMD_DOWNLOAD_CONCURRENCY",
        "REGION",
        "AIMD_SECRET_ENV",
    ], "the cache's own AIMD_SECRET_ENV is dropped, other references stay"
    assert json.loads(env[-1]["value"]) == [
        {"env": "HF_TOKEN", "secret": "hf-token", "key": "token"},
        {"env": "AWS_SECRET_ACCESS_KEY", "secret": "s3", "key": "secret", "optional": True},
    ]
    assert download_side.refs_from({"AIMD_SECRET_ENV": env[-1]["value"]}) == [
        download_side.SecretRef("HF_TOKEN", "hf-token", "token"),
        download_side.SecretRef("AWS_SECRET_ACCESS_KEY", "s3", "secret", optional=True),
    ]


def test_the_downloader_is_bound_to_its_namespaces_consent_role() -> None:
    binding = controller_side.consent_role_binding(mc(ENV), require_consent=True)
    assert binding is not None
    assert binding["metadata"]["name"] == "mc-credentials"
    assert binding["metadata"]["labels"] == {"aim.eai.amd.com/model-cache": "mc"}
    assert binding["metadata"]["ownerReferences"][0]["uid"] == "mc-uid"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "aimd-download-credentials",
    }
    sa = builders.service_account(mc(ENV))["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": "team"}
    ]
    no_secrets = [{"name": "HF_ENDPOINT", "value": "https://huggingface.co"}]
    assert controller_side.consent_role_binding(mc(no_secrets), require_consent=True) is None


def test_the_download_job_may_only_patch_its_caches_status() -> None:
    (rule,) = builders.role(mc(ENV))["rules"]
    assert rule["verbs"] == ["patch"]
    assert rule["resourceNames"] == ["mc"]


def test_both_sides_use_one_contract() -> None:
    assert controller_side.ENV_SECRET_REFS == download_side.ENV_SECRET_REFS
    assert controller_side.CONSENT_ROLE == download_side.CONSENT_ROLE


def test_references_the_download_cannot_read_are_a_bug_said_plainly() -> None:
    assert download_side.refs_from({}) == []
    with pytest.raises(DownloadFailed) as failure:
        download_side.refs_from({"AIMD_SECRET_ENV": '[{"env": "X"}]'})
    assert failure.value.reason == Reason.INTERNAL_ERROR


def test_a_refusal_says_who_can_allow_it_and_how() -> None:
    message = download_side.how_to_allow(download_side.SecretRef("HF_TOKEN", "db", "k"), "team")
    assert "Secret db (for HF_TOKEN)" in message
    assert (
        "kubectl -n team create role aimd-download-credentials --verb=get --resource=secrets "
        "--resource-name=db" in message
    )
