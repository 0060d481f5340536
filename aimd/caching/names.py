"""Deterministic names for everything aimd creates.

Why deterministic: two workers, two replicas, or one controller before and after a restart that
want the same object compute the same name, so the second create fails with AlreadyExists and the
object is adopted instead of duplicated (SPEC E1). Names are RFC 1123 labels (≤ 63 characters)
with a short hash of the full input, so two inputs that slug alike still differ.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 63
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def short_hash(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def slug(text: str) -> str:
    """Lower-case letters, digits and single dashes, no dash at either end."""
    return _NOT_ALLOWED.sub("-", text.lower()).strip("-")


def _join(stem: str, suffix: str) -> str:
    room = MAX_NAME - len(suffix) - 1
    stem = stem[:room].rstrip("-") or "x"
    return f"{stem}-{suffix}"


def model_cache_name(source_uri: str) -> str:
    """The one name aimd gives the model cache of ``source_uri`` in any namespace."""
    _, _, rest = source_uri.partition("://")
    return _join(slug(rest or source_uri), short_hash(source_uri))


def template_cache_name(template_name: str, scope: str) -> str:
    """The one name aimd gives a template cache for (template, scope) in a namespace."""
    stem = slug(template_name) + ("-cluster" if scope == "Cluster" else "")
    return _join(stem, short_hash(scope, template_name))


def child_name(owner: str, suffix: str) -> str:
    """``<owner>-<suffix>``, or a shortened owner plus a hash of it when that is too long."""
    name = f"{owner}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    return _join(f"{owner[: MAX_NAME - len(suffix) - 11]}-{short_hash(owner)}", suffix)


def pvc_name(model_cache: str) -> str:
    return child_name(model_cache, "data")


def downloader_name(model_cache: str) -> str:
    """ServiceAccount, Role and RoleBinding of one model cache's Jobs."""
    return child_name(model_cache, "downloader")


def download_job_name(model_cache: str, pvc_uid: str, failures: int) -> str:
    """One Job per attempt: a retry (more failures) or a fresh volume (another PVC uid) gets a
    new name, so an old finished Job is never mistaken for the current attempt."""
    return child_name(model_cache, f"dl-{pvc_uid.replace('-', '')[:5]}-{failures}")


def probe_job_name(model_cache: str, failures: int) -> str:
    return child_name(model_cache, f"probe-{failures}")
