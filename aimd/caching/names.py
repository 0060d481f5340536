"""Deterministic names for everything aimd creates.

Why deterministic: two workers, two replicas, or one controller before and after a restart that
want the same object compute the same name, so the second create fails with AlreadyExists and the
object is adopted instead of duplicated (SPEC E1). Names are RFC 1123 labels (≤ 63 characters)
with a short hash of the full input, so two inputs that slug alike still differ.
"""

from __future__ import annotations

import hashlib
import re

from aimd.api.sources import source_key

MAX_NAME = 63
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes, no dash at either end."""
    return _NOT_ALLOWED.sub("-", text.lower()).strip("-")


def _join(stem: str, suffix: str) -> str:
    room = MAX_NAME - len(suffix) - 1
    stem = stem[:room].rstrip("-.") or "x"
    return f"{stem}-{suffix}"


def model_cache_name(source_uri: str) -> str:
    """The one name aimd gives the model cache of ``source_uri`` in any namespace (every spelling
    of one model gets the same name: SPEC B10)."""
    key = source_key(source_uri)
    _, _, rest = key.partition("://")
    return _join(slug(rest or key), short_hash(key))


def template_cache_name(template_name: str, scope: str) -> str:
    """The one name aimd gives a template cache for (template, scope) in a namespace."""
    stem = slug(template_name) + ("-cluster" if scope == "Cluster" else "")
    return _join(stem, short_hash(scope, template_name))


def child_name(owner: str, suffix: str) -> str:
    """``<owner>-<suffix>``, or a shortened owner plus a hash of it when that is too long."""
    name = f"{owner}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    stem = owner[: MAX_NAME - len(suffix) - 11].rstrip("-.")
    return _join(f"{stem}-{short_hash(owner)}", suffix)


def pvc_name(model_cache: str, uid: str, replaces: str | None = None) -> str:
    """The volume of one model cache. Each name is used for one volume only: it carries the
    cache's uid (a cache re-created under the same name gets another) and, when it replaces a
    lost or too small volume, a hash of the one it replaces. So a Deployment that mounts a claim
    by name can never mount a new, empty volume that took an old one's place (SPEC E6, B8)."""
    tag = short_hash(uid, replaces or "", length=6)
    return child_name(model_cache, f"data-{tag}")


def workload_name(service: str) -> str:
    """The Deployment and Service of an AIMService: its own name where that is a valid Service
    name (a DNS-1035 label), else a slug of it with a hash."""
    if len(service) <= MAX_NAME and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", service):
        return service
    stem = slug(service)
    if not stem[:1].isalpha():
        stem = f"svc-{stem}"
    return _join(stem, short_hash(service))


def downloader_name(model_cache: str) -> str:
    """ServiceAccount, Role and RoleBinding of one model cache's Jobs."""
    return child_name(model_cache, "downloader")


def download_job_name(model_cache: str, pvc_uid: str, failures: int) -> str:
    """One Job per attempt: a retry (more failures) or a fresh volume (another PVC uid) gets a
    new name, so an old finished Job is never mistaken for the current attempt."""
    return child_name(model_cache, f"dl-{pvc_uid.replace('-', '')[:5]}-{failures}")


def probe_job_name(model_cache: str, failures: int) -> str:
    return child_name(model_cache, f"probe-{failures}")
