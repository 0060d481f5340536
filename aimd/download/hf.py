"""hf:// sources: the Hugging Face Hub (or any server speaking its API, via ``HF_ENDPOINT``).

huggingface_hub resolves the revision to a commit sha and lists every file with its size and
digest (sha256 for LFS files, the git blob id for the others); the bytes are then fetched from
``/{repo}/resolve/{sha}/{file}`` by the transfer engine, pinned to that sha, so a branch that
moves during a download cannot mix two revisions. ``HF_TOKEN`` is read by huggingface_hub itself
(the environment, then its token file).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from aimd.download.plan import Digest, Plan, RemoteFile, safe_relative_path
from aimd.download.reasons import DownloadFailed, Reason
from aimd.download.uri import HfUri

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    """Read at call time, not import time, so a changed environment is honoured."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


async def resolve(uri: str, source: HfUri) -> Plan:
    """The pinned plan for ``source``; huggingface_hub is synchronous, so it runs in a thread."""
    return await asyncio.to_thread(_resolve, uri, source)


def _resolve(uri: str, source: HfUri) -> Plan:
    from huggingface_hub import HfApi, hf_hub_url

    # Public API, but re-exported lazily, which mypy cannot see.
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    base = endpoint()
    token = os.environ.get("HF_TOKEN") or None
    try:
        info = HfApi(endpoint=base, token=token).model_info(
            source.repo_id, revision=source.revision, files_metadata=True, timeout=60
        )
    except Exception as error:
        raise failure_from(error, uri) from error
    commit = info.sha
    if not commit:
        raise DownloadFailed(
            Reason.NETWORK_ERROR, f"{base} answered for {uri} without a commit sha; try again"
        )
    files: list[RemoteFile] = []
    for sibling in info.siblings or ():
        size = (
            sibling.size
            if sibling.size is not None
            else (sibling.lfs.size if sibling.lfs else None)
        )
        if size is None:
            raise DownloadFailed(
                Reason.NETWORK_ERROR,
                f"{base} did not give the size of {sibling.rfilename} in {uri}; try again",
            )
        digest: Digest | None = None
        if sibling.lfs is not None:
            digest = Digest("sha256", sibling.lfs.sha256)
        elif sibling.blob_id:
            digest = Digest("git-sha1", sibling.blob_id)
        path = safe_relative_path(uri, sibling.rfilename)
        files.append(RemoteFile(path, size, digest.value if digest else commit, digest))
    headers = dict(build_hf_headers(token=token))

    def locate(file: RemoteFile) -> tuple[str, Mapping[str, str]]:
        return hf_hub_url(source.repo_id, file.path, revision=commit, endpoint=base), headers

    return Plan(uri, commit, tuple(files), locate)


def failure_from(error: Exception, uri: str) -> DownloadFailed:
    """The typed failure for an exception from huggingface_hub, with what to fix."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, GatedRepoError):
        return DownloadFailed(
            Reason.AUTH_FAILED,
            f"{uri} is a gated repository: accept its terms on the hub with the account whose "
            "token is in HF_TOKEN",
        )
    if isinstance(error, RevisionNotFoundError):
        return DownloadFailed(
            Reason.SOURCE_NOT_FOUND,
            f"{uri}: no such revision (branch, tag or commit); fix the part after '@'",
        )
    if isinstance(error, RepositoryNotFoundError):
        return DownloadFailed(
            Reason.SOURCE_NOT_FOUND,
            f"{uri}: repository not found at {endpoint()}; check the name, and if it is private "
            "set HF_TOKEN to a token that can read it",
        )
    if isinstance(error, HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return DownloadFailed(
                Reason.AUTH_FAILED,
                f"{endpoint()} rejected the credentials for {uri} ({status}): set HF_TOKEN to a "
                "valid token with read access",
            )
        if status == 429:
            retry_after = _seconds(error.response.headers.get("Retry-After"))
            return DownloadFailed(
                Reason.RATE_LIMITED,
                f"{endpoint()} is rate-limiting requests for {uri}; it will be retried"
                + (f" (the hub asks to wait {retry_after:.0f}s)" if retry_after else ""),
                retry_after,
            )
        return DownloadFailed(
            Reason.NETWORK_ERROR, f"{endpoint()} answered {status} for {uri}: {error}"
        )
    return DownloadFailed(
        Reason.NETWORK_ERROR,
        f"could not reach {endpoint()} for {uri}: {error}; check HF_ENDPOINT and the network",
    )


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
