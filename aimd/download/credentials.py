"""Secrets by consent, the download's side (docs/security.md, "Secrets by consent").

With consent required, the controller puts no ``secretKeyRef`` in the Job; ``AIMD_SECRET_ENV``
lists the references instead (``[{"env": "HF_TOKEN", "secret": "hf-token", "key": "token"}]``),
and the Job's ServiceAccount is bound to its namespace's Role ``aimd-download-credentials``. Before
anything else, the download reads each referenced Secret with that ServiceAccount's token and
puts the value into its own environment, where the Hub and S3 clients look for credentials, as
if the kubelet had.

The API server decides which Secrets that is: the ones the Role names. A Secret it does not name
is refused with 403, and the download fails with ``SecretNotAllowed`` and a message saying how to
allow it; a named Secret (or key) that does not exist fails with ``SecretNotFound`` unless the
reference is optional. No value is ever logged or reported.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aimd.download.reasons import DownloadFailed, Reason
from aimd.download.report import ENV_NAMESPACE

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient

log = logging.getLogger(__name__)

# Written by aimd/caching/credentials.py (the same names there; a test keeps them equal).
ENV_SECRET_REFS = "AIMD_SECRET_ENV"
CONSENT_ROLE = "aimd-download-credentials"


@dataclass(frozen=True)
class SecretRef:
    env: str
    secret: str
    key: str
    optional: bool = False


def refs_from(environ: MutableMapping[str, str]) -> list[SecretRef]:
    """The references the controller passed; none when the variable is absent."""
    raw = environ.get(ENV_SECRET_REFS)
    if not raw:
        return []
    try:
        entries: Any = json.loads(raw)
        return [
            SecretRef(str(e["env"]), str(e["secret"]), str(e["key"]), bool(e.get("optional")))
            for e in entries
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise DownloadFailed(
            Reason.INTERNAL_ERROR,
            f"{ENV_SECRET_REFS} is not the list of Secret references aimd writes ({error}); "
            "this is a bug in aimd, please report it",
        ) from error


def how_to_allow(ref: SecretRef, namespace: str) -> str:
    return (
        f"Secret {ref.secret} (for {ref.env}) is not one downloads in namespace {namespace} may "
        f"read. Someone who may read it allows it by naming it in the Role {CONSENT_ROLE}: "
        f"kubectl -n {namespace} create role {CONSENT_ROLE} --verb=get --resource=secrets "
        f"--resource-name={ref.secret} (or add it to that Role's resourceNames), then retry "
        "the cache"
    )


async def read(client: KubeClient, namespace: str, refs: list[SecretRef]) -> dict[str, str]:
    """Each reference's value, read with the client's (the Job's) own rights."""
    import aiohttp

    from aimd.kube.errors import ApiError, Forbidden, NotFound
    from aimd.kube.resources import SECRETS

    values: dict[str, str] = {}
    for ref in refs:
        try:
            secret = await client.get(SECRETS, ref.secret, namespace)
        except Forbidden as error:
            raise DownloadFailed(Reason.SECRET_NOT_ALLOWED, how_to_allow(ref, namespace)) from error
        except NotFound as error:
            if ref.optional:
                continue
            raise DownloadFailed(
                Reason.SECRET_NOT_FOUND,
                f"Secret {ref.secret} (for {ref.env}) does not exist in namespace {namespace}; "
                "create it, then retry the cache",
            ) from error
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            raise DownloadFailed(
                Reason.NETWORK_ERROR, f"could not read Secret {ref.secret} (for {ref.env}): {error}"
            ) from error
        encoded = (secret.get("data") or {}).get(ref.key)
        if encoded is None:
            if ref.optional:
                continue
            raise DownloadFailed(
                Reason.SECRET_NOT_FOUND,
                f"Secret {ref.secret} (for {ref.env}) has no key {ref.key}; add it, then retry "
                "the cache",
            )
        try:
            values[ref.env] = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as error:
            raise DownloadFailed(
                Reason.SECRET_NOT_FOUND,
                f"key {ref.key} of Secret {ref.secret} (for {ref.env}) is not text",
            ) from error
    return values


async def export(
    kubeconfig: str | None, environ: MutableMapping[str, str] | None = None
) -> list[str]:
    """Puts the referenced Secrets' values into ``environ`` (the process's by default); returns
    the names set. Nothing happens without ``AIMD_SECRET_ENV``."""
    target = os.environ if environ is None else environ
    refs = refs_from(target)
    if not refs:
        return []
    namespace = target.get(ENV_NAMESPACE)
    if not namespace:
        raise DownloadFailed(
            Reason.INTERNAL_ERROR,
            f"{ENV_SECRET_REFS} is set but {ENV_NAMESPACE} is not; this is a bug in aimd",
        )
    from aimd.kube.client import KubeClient

    try:
        client = await KubeClient.auto(kubeconfig)
    except Exception as error:
        raise DownloadFailed(
            Reason.INTERNAL_ERROR, f"no API credentials to read the cache's Secrets: {error}"
        ) from error
    try:
        values = await read(client, namespace, refs)
    finally:
        await client.close()
    target.update(values)
    log.info("read %d credential(s) by consent: %s", len(values), ", ".join(sorted(values)))
    return sorted(values)
