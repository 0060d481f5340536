"""S1 as a pure decision: which download images and endpoints an AIMModelCache may use.

CASES is the one table both sides of the decision run: :func:`aimd.caching.policy.check` here,
and the shipped ValidatingAdmissionPolicy on the real API server in
tests/integration/test_security_admission.py, so the two cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from aimd.caching import policy
from aimd.settings import DEFAULT_ALLOWED_ENDPOINTS, Settings

IMAGE = "registry.example/aimd:1.0"
# The configuration both sides run with (the integration test writes it into the ConfigMap).
CONFIG = policy.Config(
    image=IMAGE,
    allowed_images=("registry.example/fetch:2",),
    allowed_endpoints=(
        *DEFAULT_ALLOWED_ENDPOINTS,
        "http://minio.storage.svc:9000",
        "https://mirror.example/hf/",
    ),
)
SECRET = {"secretKeyRef": {"name": "hf-token", "key": "token"}}


@dataclass(frozen=True)
class Case:
    id: str
    spec: dict[str, Any]
    fields: list[str] = field(default_factory=list)  # the fields refused, in order
    annotations: dict[str, str] = field(default_factory=dict)  # on the Namespace


def env(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """A spec with these env entries: a str is a value, a dict a valueFrom."""
    entries = [
        {"name": name, "value": value}
        if isinstance(value, str)
        else {"name": name, "valueFrom": value}
        for name, value in pairs
    ]
    return {"env": entries}


def hub(value: str) -> dict[str, Any]:
    return env(("HF_TOKEN", SECRET), ("HF_ENDPOINT", value))


ENDPOINTS = policy.ANNOTATION_ALLOWED_ENDPOINTS
IMAGES = policy.ANNOTATION_ALLOWED_DOWNLOAD_IMAGES
CASES = [
    Case("nothing asked", {}),
    Case("the controller's own image", {"downloadImage": IMAGE}),
    Case("an allowed image", {"downloadImage": "registry.example/fetch:2"}),
    Case("a foreign image", {"downloadImage": "evil.example/aimd:latest"}, ["spec.downloadImage"]),
    Case("a tag of an allowed image is another image",
         {"downloadImage": "registry.example/fetch:3"}, ["spec.downloadImage"]),
    Case("an image the namespace allows", {"downloadImage": "team.example/aimd:1"},
         annotations={IMAGES: "other.example/x, team.example/aimd:1"}),
    Case("credentials from Secrets, tunables", env(
        ("HF_TOKEN", SECRET), ("AWS_ACCESS_KEY_ID", SECRET), ("AWS_REGION", "eu-west-1"),
        ("AIMD_DOWNLOAD_CONCURRENCY", "16"), ("NO_PROXY", "*"), ("AWS_CA_BUNDLE", "/etc/ca.pem"))),
    Case("the public hub", hub("https://huggingface.co")),
    Case("the public hub with a slash and its port", hub("https://HuggingFace.co:443/")),
    Case("an empty endpoint is the default one", hub("")),
    Case("another host", hub("https://evil.example"), ["spec.env[1].value"]),
    Case("user info hides another host", hub("https://huggingface.co@evil.example"),
         ["spec.env[1].value"]),
    Case("plain http to the hub", hub("http://huggingface.co"), ["spec.env[1].value"]),
    Case("another port", hub("https://huggingface.co:8443"), ["spec.env[1].value"]),
    Case("port 0", hub("https://huggingface.co:0"), ["spec.env[1].value"]),
    Case("a query", hub("https://huggingface.co/?x=evil.example"), ["spec.env[1].value"]),
    Case("a subdomain of AWS", env(("AWS_ENDPOINT_URL", "https://s3.us-west-2.amazonaws.com"))),
    Case("AWS itself is not a subdomain of AWS", env(("AWS_ENDPOINT_URL", "https://amazonaws.com")),
         ["spec.env[0].value"]),
    Case("a host that only starts like AWS",
         env(("AWS_ENDPOINT_URL", "https://s3.amazonaws.com.evil.example")), ["spec.env[0].value"]),
    Case("a wildcard is not a value", env(("AWS_ENDPOINT_URL", "https://*.amazonaws.com")),
         ["spec.env[0].value"]),
    Case("the allowed S3 store, service-specific variable",
         env(("AWS_ACCESS_KEY_ID", SECRET), ("AWS_ENDPOINT_URL_S3", "http://minio.storage.svc:9000"))),
    Case("the allowed S3 store on another port",
         env(("AWS_ENDPOINT_URL", "http://minio.storage.svc:9001")), ["spec.env[0].value"]),
    Case("a mirror's path and below", hub("https://mirror.example/hf/team-a")),
    Case("a mirror's path without the slash", hub("https://mirror.example/hf")),
    Case("a path that only starts like the mirror's", hub("https://mirror.example/hfx"),
         ["spec.env[1].value"]),
    Case("a dot-dot segment walks out of the mirror's path",
         hub("https://mirror.example/hf/../private"), ["spec.env[1].value"]),
    Case("an endpoint the namespace allows", hub("https://hub.team.example"),
         annotations={ENDPOINTS: "https://hub.team.example"}),
    Case("another namespace's addition is not this one's", hub("https://hub.team.example"),
         ["spec.env[1].value"], annotations={ENDPOINTS: "https://hub.other.example"}),
    Case("a malformed addition allows nothing", hub("https://hub.team.example"),
         ["spec.env[1].value"], annotations={ENDPOINTS: "hub.team.example, ftp://x"}),
    Case("an endpoint from a Secret cannot be checked", env(("HF_ENDPOINT", SECRET)),
         ["spec.env[0].valueFrom"]),
    Case("an endpoint from a ConfigMap cannot be checked",
         env(("AWS_ENDPOINT_URL_S3", {"configMapKeyRef": {"name": "c", "key": "k"}})),
         ["spec.env[0].valueFrom"]),
    Case("a proxy sees every request", env(("HTTPS_PROXY", "http://proxy.evil.example:3128")),
         ["spec.env[0].value"]),
    Case("in any case", env(("https_proxy", "http://proxy.evil.example:3128")),
         ["spec.env[0].value"]),
    Case("a proxy the namespace allows", env(("ALL_PROXY", "http://proxy.corp:3128")),
         annotations={ENDPOINTS: "http://proxy.corp:3128"}),
    *[
        Case(f"{name} loads code or configuration",
             env(("HF_TOKEN", SECRET), (name, "/workspace/x")), ["spec.env[1].name"])
        for name in ("LD_PRELOAD", "ld_library_path", "PYTHONPATH", "PATH", "HOME", "KUBECONFIG",
                     "AWS_CONFIG_FILE", "OPENSSL_CONF", "KUBERNETES_SERVICE_HOST")
    ],
    Case("aimd's own variables", env(("AIMD_MODEL_CACHE_NAME", "other")), ["spec.env[0].name"]),
    Case("aimd's secret channel", env(("AIMD_SECRET_ENV", "[]")), ["spec.env[0].name"]),
    Case("everything at once", {"downloadImage": "evil.example/x", **env(
        ("LD_PRELOAD", "/x"), ("HF_ENDPOINT", "https://evil.example"))},
        ["spec.downloadImage", "spec.env[0].name", "spec.env[1].value"]),
]  # fmt: skip


def namespace(case: Case) -> dict[str, Any]:
    return {"metadata": {"name": "team", "annotations": dict(case.annotations)}}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_the_table(case: Case) -> None:
    problems = policy.check(case.spec, policy.Additions.of(namespace(case)), CONFIG)
    assert [problem.field for problem in problems] == case.fields
    for problem in problems:
        assert str(problem).startswith(f"{problem.field}: ")


def test_problems_say_what_is_allowed_and_who_can_allow_more() -> None:
    (image,) = policy.check({"downloadImage": "evil.example/x"}, policy.Additions(), CONFIG)
    assert "registry.example/aimd:1.0, registry.example/fetch:2" in image.message
    assert "AIMD_ALLOWED_DOWNLOAD_IMAGES" in image.message
    (endpoint,) = policy.check(hub("https://evil.example"), policy.Additions(), CONFIG)
    assert endpoint.message.startswith("https://evil.example is not an allowed endpoint for")
    assert "https://huggingface.co, https://*.amazonaws.com" in endpoint.message
    assert policy.ANNOTATION_ALLOWED_ENDPOINTS in endpoint.message


def test_a_namespace_without_annotations_or_not_known_adds_nothing() -> None:
    assert policy.Additions.of(None) == policy.Additions()
    assert policy.Additions.of({"metadata": {"name": "x"}}) == policy.Additions()


def test_the_configuration_comes_from_the_settings_and_a_typo_is_refused() -> None:
    settings = Settings.parse(["--allowed-download-images=a:1"], environ={})
    config = policy.Config.from_settings(settings, "aimd:2")
    assert config == policy.Config("aimd:2", ("a:1",), DEFAULT_ALLOWED_ENDPOINTS)
    with pytest.raises(ValueError, match="minio:9000"):
        policy.Config.from_settings(Settings(allowed_endpoints=("minio:9000",)), "aimd:2")


@pytest.mark.parametrize(
    "text",
    sorted(
        {
            str(var.get("value"))
            for case in CASES
            for var in case.spec.get("env", [])
            if "value" in var
        }
        | set(CONFIG.allowed_endpoints)
        | {"https://*.x.example:1/a/", "https://x.example:99999", "http://x/./y", "https://x/a/.."}
    ),
)
def test_the_shared_regular_expressions_accept_what_the_parser_reads(text: str) -> None:
    """The admission policy checks shape with VALUE_PATTERN / ENDPOINT_PATTERN (RE2) and takes
    the parts from CEL's url(); the parser here must accept exactly those strings."""
    value_shape = bool(re.search(policy.VALUE_PATTERN, text)) and not re.search(
        policy.DOT_SEGMENT, text
    )
    endpoint_shape = bool(re.search(policy.ENDPOINT_PATTERN, text)) and not re.search(
        policy.DOT_SEGMENT, text
    )
    assert (policy._endpoint(text, pattern=False) is not None) == value_shape
    assert (policy._endpoint(text, pattern=True) is not None) == endpoint_shape
