"""Secrets by consent, the controller's side (docs/security.md, "Secrets by consent").

Without consent required, a model cache's ``valueFrom.secretKeyRef`` goes into its Job as it is,
and the kubelet mounts whatever Secret of the namespace it names: whoever may create a model
cache may have any Secret there sent to an allowed endpoint.

With ``--require-secret-consent`` the Job mounts no Secret. Its env carries the references
instead (``AIMD_SECRET_ENV``: a JSON list of env name, Secret, key), and the downloader's
ServiceAccount is bound to the namespace's Role ``aimd-download-credentials``: a Role someone who
can read those Secrets writes, naming the ones downloads may use (``resourceNames``). The
downloader reads each referenced Secret with its own token, so the API server, not aimd's code,
decides: a Secret that Role does not name is refused (``SecretNotAllowed``).

aimd holds no right on Secrets for this: only ``bind`` on Roles named ``aimd-download-credentials``,
so it can hand its downloaders exactly what a person granted there, and nothing else.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

from aimd.api import kinds
from aimd.api.meta import label_value, owner_reference
from aimd.api.types import Object, ObjectLike
from aimd.caching import names

CONSENT_ROLE = "aimd-download-credentials"
# Read by aimd/download/credentials.py (the same name there; a test keeps them equal).
ENV_SECRET_REFS = "AIMD_SECRET_ENV"


def secret_refs(env: Sequence[Mapping[str, Any]]) -> list[Object]:
    """The Secret references of ``env``, as the downloader reads them from ``AIMD_SECRET_ENV``."""
    refs = []
    for var in env:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            continue
        entry: Object = {"env": var["name"], "secret": ref.get("name", ""), "key": ref["key"]}
        if ref.get("optional"):
            entry["optional"] = True
        refs.append(entry)
    return refs


def job_env(env: Sequence[Mapping[str, Any]], require_consent: bool) -> list[Object]:
    """A model cache's ``spec.env`` as its Job gets it: unchanged, or, with consent required,
    without any ``secretKeyRef`` and with their references in ``AIMD_SECRET_ENV``."""
    if not require_consent:
        return [copy.deepcopy(dict(var)) for var in env]
    kept = [
        copy.deepcopy(dict(var))
        for var in env
        if "secretKeyRef" not in (var.get("valueFrom") or {}) and var.get("name") != ENV_SECRET_REFS
    ]
    refs = secret_refs(env)
    if refs:
        kept.append({"name": ENV_SECRET_REFS, "value": json.dumps(refs, separators=(",", ":"))})
    return kept


def binding_name(model_cache: str) -> str:
    return names.child_name(model_cache, "credentials")


def consent_role_binding(mc: ObjectLike, require_consent: bool) -> Object | None:
    """The RoleBinding that lets this cache's downloader read the Secrets its namespace consents
    to; None when there is nothing to bind (consent not required, or no Secret referenced)."""
    if not require_consent or not secret_refs(list((mc.get("spec") or {}).get("env") or ())):
        return None
    meta = mc["metadata"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": binding_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": {kinds.LABEL_MODEL_CACHE: label_value(meta["name"])},
            "ownerReferences": [
                owner_reference(mc, kinds.MODEL_CACHES.kind, kinds.API_VERSION, controller=True)
            ],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONSENT_ROLE},
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": names.downloader_name(meta["name"]),
                "namespace": meta["namespace"],
            }
        ],
    }
