"""Which download images and source endpoints a model cache may use: the admin's choice (SPEC S1).

A model cache's Job runs under aimd's authority, so what it runs and where it sends the cache's
credentials must not be its creator's choice (docs/security.md). :func:`check` is the decision,
pure: an MC's spec, what its namespace adds and the configuration in, the problems out, each
naming the field. The ValidatingAdmissionPolicy in ``manifests/policy/`` makes the same decision
at admission; one table of cases (tests/unit/test_caching_policy.py) runs through both.

What is checked:

- ``spec.downloadImage``: unset (the controller's own image), the controller's own image, or one
  of the allowed images.
- ``spec.env`` entries that say where requests go (``HF_ENDPOINT``, ``AWS_ENDPOINT_URL``,
  ``AWS_ENDPOINT_URL_<SERVICE>``, and the proxies ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` in
  any case): a literal value matching an allowed endpoint, or empty (the default). Taken through
  ``valueFrom`` they cannot be checked, so they are refused.
- ``spec.env`` entries that make the download load code or configuration from a file (``LD_*``,
  ``PYTHON*``, ``PATH``, ``HOME``, ``KUBECONFIG``, the AWS config files, OpenSSL's modules, ...)
  or that aimd sets itself (``AIMD_MODEL_CACHE_*``, ``AIMD_SECRET_*``): refused. Files on the
  model volume come from the source, which the cache's creator chooses, so any of these would let
  them run code of their own in the download pod and make the image allowlist moot.

An endpoint pattern is ``scheme://host[:port][/path]``; ``*.`` before the host allows its
subdomains (``https://*.amazonaws.com``); a missing port is the scheme's default; a path allows
itself and everything under it. A value must be a plain URL of that shape (no user info, query or
fragment, no ``.`` or ``..`` segment), which both this module and the admission policy's CEL
read the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aimd.api.kinds import GROUP
from aimd.settings import Settings

ANNOTATION_ALLOWED_ENDPOINTS = f"{GROUP}/allowed-endpoints"
ANNOTATION_ALLOWED_DOWNLOAD_IMAGES = f"{GROUP}/allowed-download-images"

ENDPOINT_NAMES = ("HF_ENDPOINT", "AWS_ENDPOINT_URL")
ENDPOINT_PREFIXES = ("AWS_ENDPOINT_URL_",)
PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# Names (upper-cased) a model cache may not set: they load code or configuration from files, or
# they are aimd's own channel to the download.
DENIED_NAMES = (
    "PATH",
    "HOME",
    "KUBECONFIG",
    "GCONV_PATH",
    "OPENSSL_CONF",
    "OPENSSL_MODULES",
    "OPENSSL_ENGINES",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_DATA_PATH",
)
DENIED_PREFIXES = ("LD_", "PYTHON", "KUBERNETES_", "AIMD_MODEL_CACHE_", "AIMD_SECRET_")

# The shapes both sides agree on (RE2 and Python's re read these alike).
VALUE_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
ENDPOINT_PATTERN = r"^https?://(\*\.)?[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"
# A "." or ".." path segment: HTTP clients resolve them, which would walk out of a path prefix.
DOT_SEGMENT = r"/[.][.]?(/|$)"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Problem:
    """One thing the admin's configuration does not allow, and the field that asks for it."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Config:
    """The cluster-wide part: aimd's own image, and what the admin allows besides."""

    image: str
    allowed_images: tuple[str, ...] = ()
    allowed_endpoints: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, image: str) -> Config:
        """Refuses a configuration with a malformed endpoint, so a typo does not silently
        allow nothing (or, read loosely, too much)."""
        bad = [p for p in settings.allowed_endpoints if _endpoint(p, pattern=True) is None]
        if bad:
            raise ValueError(
                f"--allowed-endpoints: {', '.join(bad)} not of the form scheme://host[:port][/path]"
                " (host may start with *.)"
            )
        return cls(image, settings.allowed_download_images, settings.allowed_endpoints)


@dataclass(frozen=True)
class Additions:
    """What one namespace's admin-set annotations add to the configuration."""

    images: tuple[str, ...] = ()
    endpoints: tuple[str, ...] = ()

    @classmethod
    def of(cls, namespace: Mapping[str, Any] | None) -> Additions:
        """From the Namespace object (None, e.g. not in the index yet: nothing added). Only
        cluster admins may annotate a Namespace, which is why the additions live there."""
        annotations = ((namespace or {}).get("metadata") or {}).get("annotations") or {}
        return cls(
            _items(annotations.get(ANNOTATION_ALLOWED_DOWNLOAD_IMAGES, "")),
            _items(annotations.get(ANNOTATION_ALLOWED_ENDPOINTS, "")),
        )


def check(spec: Mapping[str, Any], additions: Additions, config: Config) -> list[Problem]:
    """The problems of one AIMModelCache ``spec``; empty when the admin allows all it asks."""
    problems: list[Problem] = []
    image = str(spec.get("downloadImage") or "")
    images = (config.image, *config.allowed_images, *additions.images)
    if image and image not in images:
        problems.append(
            Problem(
                "spec.downloadImage",
                f"{image} is not an allowed download image; allowed: {', '.join(images)}. An "
                "admin allows images in aimd's configuration (AIMD_ALLOWED_DOWNLOAD_IMAGES) or "
                f"with the namespace annotation {ANNOTATION_ALLOWED_DOWNLOAD_IMAGES}",
            )
        )
    endpoints = (*config.allowed_endpoints, *additions.endpoints)
    for index, var in enumerate(spec.get("env") or ()):
        problems += env_problems(index, var, endpoints)
    return problems


def env_problems(index: int, var: Mapping[str, Any], endpoints: Sequence[str]) -> list[Problem]:
    name = str(var.get("name") or "")
    where = f"spec.env[{index}]"
    if denied(name):
        return [
            Problem(
                f"{where}.name",
                f"{name} may not be set by a model cache: it changes the code or configuration "
                "the download loads, or aimd sets it itself",
            )
        ]
    if not steers_requests(name):
        return []
    if "valueFrom" in var:
        return [
            Problem(
                f"{where}.valueFrom",
                f"{name} must be a literal value: an endpoint taken from a Secret or ConfigMap "
                "cannot be checked against the allowed endpoints",
            )
        ]
    value = str(var.get("value") or "")
    if not value or endpoint_allowed(value, endpoints):
        return []
    return [
        Problem(
            f"{where}.value",
            f"{value} is not an allowed endpoint for {name}; allowed: {', '.join(endpoints)}. An "
            "admin allows endpoints in aimd's configuration (AIMD_ALLOWED_ENDPOINTS) or with the "
            f"namespace annotation {ANNOTATION_ALLOWED_ENDPOINTS}",
        )
    ]


def denied(name: str) -> bool:
    upper = name.upper()
    return upper in DENIED_NAMES or upper.startswith(DENIED_PREFIXES)


def steers_requests(name: str) -> bool:
    """Whether the variable says where the download's requests (and credentials) go."""
    upper = name.upper()
    return upper in ENDPOINT_NAMES or upper in PROXY_NAMES or upper.startswith(ENDPOINT_PREFIXES)


def endpoint_allowed(value: str, patterns: Sequence[str]) -> bool:
    target = _endpoint(value, pattern=False)
    if target is None:
        return False
    scheme, host, port, path = target
    for pattern in patterns:
        parsed = _endpoint(pattern, pattern=True)
        if parsed is None:
            continue  # a malformed namespace annotation allows nothing
        p_scheme, p_host, p_port, p_path = parsed
        host_matches = host.endswith(p_host) if p_host.startswith(".") else host == p_host
        if (
            scheme == p_scheme
            and host_matches
            and port == p_port
            and (not p_path or path == p_path or path.startswith(p_path + "/"))
        ):
            return True
    return False


def _endpoint(text: str, *, pattern: bool) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of a value or pattern; a wildcard host keeps its leading dot
    (``.amazonaws.com``); a pattern's path loses one trailing slash."""
    match = re.fullmatch(_PARTS, text)
    if match is None or (match["wildcard"] and not pattern) or re.search(DOT_SEGMENT, text):
        return None
    scheme = match["scheme"]
    host = ("." if match["wildcard"] else "") + match["host"].lower()
    port = int(match["port"]) if match["port"] is not None else DEFAULT_PORTS[scheme]
    path = match["path"] or ""
    if pattern and path.endswith("/"):
        path = path[:-1]
    return scheme, host, port, path


# ENDPOINT_PATTERN with its parts named; the admission policy's CEL takes them from url().
_PARTS = (
    r"(?P<scheme>https?)://(?P<wildcard>\*\.)?(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<path>/[A-Za-z0-9._~/-]*)?"
)


def _items(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in str(raw).split(",") if item.strip())
