"""S1 at admission: the shipped ValidatingAdmissionPolicy, run by the real API server, refuses the
model caches aimd/caching/policy.py refuses, with the same words, and admits the others.

The policy and its binding are the files in manifests/policy/, renamed for this run and bound to
namespaces carrying this run's label only, so no other test's caches are judged by them.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aimd.api import kinds
from aimd.caching import policy
from aimd.kube.client import KubeClient
from aimd.kube.errors import Invalid, NotFound
from aimd.kube.resources import CONFIG_MAPS, NAMESPACES, Resource
from tests.support import REPO, eventually
from tests.unit.test_caching_policy import CASES, CONFIG, Case

ADMISSION = "admissionregistration.k8s.io"
POLICIES = Resource(ADMISSION, "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy",
                    namespaced=False)  # fmt: skip
BINDINGS = Resource(
    ADMISSION,
    "v1",
    "validatingadmissionpolicybindings",
    "ValidatingAdmissionPolicyBinding",
    namespaced=False,
)
SHIPPED = REPO / "manifests" / "policy"
SELECTOR = "aimd-test/admission"
Object = dict[str, Any]
# kubernetes/kubernetes#130887: once a policy whose parameters are ConfigMaps is removed,
# kube-apiserver may stop resolving ConfigMap parameters for every other policy (none found, or a
# stale one) until it restarts. So the policies installed here live as long as the control plane:
# one per name, made on first use.
_installed: dict[str, str] = {}


def shipped(name: str) -> Object:
    loaded: Object = yaml.safe_load((SHIPPED / name).read_text())
    return loaded


async def installed_policy(kube: KubeClient, data: dict[str, str], name: str = "config") -> str:
    """The shipped policy and binding under names of this run, with a ConfigMap of ``data`` as
    the parameters, installed once per ``name`` for the whole run; returns the label value that
    puts a namespace under the policy."""
    if name in _installed:
        return _installed[name]
    run = secrets.token_hex(3)
    params_namespace = f"aimd-admission-{run}"
    await kube.create(
        NAMESPACES,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": params_namespace}},
    )
    await kube.create(
        CONFIG_MAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "aimd-config"},
            "data": data,
        },
        params_namespace,
    )
    policy_name = f"aimd-model-cache-sources-{run}"
    vap = shipped("validating_admission_policy.yaml")
    vap["metadata"]["name"] = policy_name
    binding = shipped("validating_admission_policy_binding.yaml")
    binding["metadata"]["name"] = policy_name
    binding["spec"]["policyName"] = policy_name
    binding["spec"]["paramRef"]["namespace"] = params_namespace
    binding["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {SELECTOR: run}}}
    await kube.create(POLICIES, vap)
    await kube.create(BINDINGS, binding)
    _installed[name] = run
    return run


def config_map_data(config: policy.Config) -> dict[str, str]:
    """``config`` as the shipped ConfigMap holds it."""
    return {
        "AIMD_IMAGE": config.image,
        "AIMD_ALLOWED_DOWNLOAD_IMAGES": ",".join(config.allowed_images),
        "AIMD_ALLOWED_ENDPOINTS": ",".join(config.allowed_endpoints),
        "AIMD_REQUIRE_SECRET_CONSENT": "false",
    }


async def judged_namespace(
    kube: KubeClient, run: str, annotations: dict[str, str] | None = None
) -> str:
    name = f"aimd-judged-{secrets.token_hex(3)}"
    metadata: Object = {"name": name, "labels": {SELECTOR: run}, "annotations": annotations or {}}
    await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
    return name


def model_cache(spec: Object, name: str = "mc") -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": name},
        "spec": {"sourceUri": "hf://org/model", **spec},
    }


async def admitted(kube: KubeClient, namespace: str, spec: Object) -> str | None:
    """None when a dry-run create of an MC with ``spec`` is admitted, else the refusal."""
    try:
        await kube.request(
            "POST",
            kinds.MODEL_CACHES.path(namespace),
            params={"dryRun": "All"},
            body=model_cache(spec),
        )
    except Invalid as refused:
        return refused.message
    return None


async def policy_active(kube: KubeClient, namespace: str) -> bool:
    """The API server applies a new policy, binding and parameters once its informers have
    them (until the parameters arrive it refuses everything): wait for the policy's own word."""
    refusal = await admitted(kube, namespace, {"downloadImage": "not-allowed.example/x"})
    return refusal is not None and "spec.downloadImage: not-allowed.example/x" in refusal


@pytest.fixture(scope="module")
async def run(kube: KubeClient) -> AsyncIterator[str]:
    label = await installed_policy(kube, config_map_data(CONFIG))
    probe = await judged_namespace(kube, label)
    await eventually(lambda: policy_active(kube, probe), what="the policy to be enforced")
    yield label
    await kube.delete(NAMESPACES, probe)


@pytest.fixture(scope="module")
async def namespaces(kube: KubeClient, run: str) -> AsyncIterator[dict[str, str]]:
    """One judged namespace per distinct set of annotations in the table."""
    made: dict[str, str] = {}
    for case in CASES:
        key = json.dumps(case.annotations, sort_keys=True)
        if key not in made:
            made[key] = await judged_namespace(kube, run, case.annotations)
    yield made
    for name in made.values():
        with contextlib.suppress(NotFound):
            await kube.delete(NAMESPACES, name)


async def test_the_shipped_policy_type_checks(kube: KubeClient, run: str) -> None:
    stored = await kube.get(POLICIES, f"aimd-model-cache-sources-{run}")
    warnings = ((stored.get("status") or {}).get("typeChecking") or {}).get("expressionWarnings")
    assert not warnings, warnings


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_the_api_server_decides_as_policy_check_does(
    kube: KubeClient, namespaces: dict[str, str], case: Case
) -> None:
    namespace = namespaces[json.dumps(case.annotations, sort_keys=True)]
    expected = policy.check(case.spec, policy.Additions.of(
        {"metadata": {"annotations": case.annotations}}), CONFIG)  # fmt: skip
    refusal = await admitted(kube, namespace, case.spec)
    if not expected:
        assert refusal is None, refusal
        return
    assert refusal is not None, f"admitted, but policy.check says {expected}"
    assert refusal.endswith(f"denied request: {'; '.join(map(str, expected))}")


async def test_a_cache_admitted_earlier_can_be_relabelled_but_not_respecified(
    kube: KubeClient, run: str
) -> None:
    """The policy judges only a spec being written, so tightening the configuration never
    blocks aimd's bookkeeping on caches admitted before."""
    namespace = f"aimd-earlier-{secrets.token_hex(3)}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    try:
        bad = {"env": [{"name": "HF_ENDPOINT", "value": "https://evil.example"}]}
        await kube.create(kinds.MODEL_CACHES, model_cache(bad), namespace)
        await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {SELECTOR: run}}})
        await eventually(lambda: policy_active(kube, namespace), what="the policy here")
        relabel = {"metadata": {"labels": {kinds.LABEL_CREATED_BY_TEMPLATE_CACHE: "other"}}}
        await kube.patch(kinds.MODEL_CACHES, "mc", relabel, namespace)
        again = {"spec": {"env": [{"name": "HF_ENDPOINT", "value": "https://evil2.example"}]}}
        with pytest.raises(Invalid, match=r"spec\.env\[0\]\.value: https://evil2\.example"):
            await kube.patch(kinds.MODEL_CACHES, "mc", again, namespace)
    finally:
        await kube.delete(NAMESPACES, namespace)


async def test_without_its_configuration_nothing_is_admitted(kube: KubeClient) -> None:
    label = await installed_policy(kube, config_map_data(CONFIG), name="to lose its config")
    namespace = await judged_namespace(kube, label)
    await eventually(lambda: policy_active(kube, namespace), what="the policy")
    binding = await kube.get(BINDINGS, f"aimd-model-cache-sources-{label}")
    await kube.delete(CONFIG_MAPS, "aimd-config", binding["spec"]["paramRef"]["namespace"])

    async def refused_without_params() -> str | None:
        refusal = await admitted(kube, namespace, {})
        return refusal if refusal is not None and "no params found" in refusal else None

    refusal = await eventually(refused_without_params, what="a refusal without params")
    assert "parameterNotFoundAction" in refusal
    await kube.delete(NAMESPACES, namespace)


def test_the_policys_lists_are_policy_pys() -> None:
    """The names and defaults written into the CEL are the module's constants."""
    text = Path(SHIPPED / "validating_admission_policy.yaml").read_text()
    variables = {v["name"]: v["expression"] for v in shipped(
        "validating_admission_policy.yaml")["spec"]["variables"]}  # fmt: skip
    assert yaml.safe_load(variables["deniedNames"]) == list(policy.DENIED_NAMES)
    assert yaml.safe_load(variables["deniedPrefixes"]) == list(policy.DENIED_PREFIXES)
    assert yaml.safe_load(variables["steeringNames"]) == [
        *policy.ENDPOINT_NAMES,
        *policy.PROXY_NAMES,
    ]
    assert yaml.safe_load(variables["steeringPrefixes"]) == list(policy.ENDPOINT_PREFIXES)
    for pattern in (policy.VALUE_PATTERN, policy.ENDPOINT_PATTERN):
        assert f"'{pattern.replace(chr(92), chr(92) * 2)}'" in text
    assert f"'{policy.DOT_SEGMENT}'" in text
    for endpoint in CONFIG.allowed_endpoints[:2]:
        assert f"'{endpoint}'" in variables["endpoints"]
