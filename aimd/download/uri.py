"""Parsing model source URIs: ``hf://org/name[@revision]`` and ``s3://bucket[/prefix]``.

The CRD's schema already rejects most malformed URIs at admission; this is the Job's own check,
since the command also runs by hand, and it is where an ``InvalidSource`` message comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aimd.download.reasons import DownloadFailed, Reason

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
# S3 bucket names (the permissive legacy rules, which S3-compatible stores still allow).
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


@dataclass(frozen=True)
class HfUri:
    """A Hugging Face Hub model repository, at a branch, tag or commit (``None``: main)."""

    repo_id: str
    revision: str | None


@dataclass(frozen=True)
class S3Uri:
    """Every object under ``prefix`` (a folder; empty for the whole bucket), or the one object
    whose key is exactly ``prefix`` when nothing lies under it."""

    bucket: str
    prefix: str


SourceUri = HfUri | S3Uri


def parse(uri: str) -> SourceUri:
    """The source ``uri`` names, or :class:`DownloadFailed` with reason ``InvalidSource``."""
    if uri.startswith("hf://"):
        rest = uri.removeprefix("hf://")
        repo_id, at, revision = rest.partition("@")
        if not _REPO.match(repo_id) or (at and not revision):
            raise DownloadFailed(
                Reason.INVALID_SOURCE,
                f"{uri!r} is not a Hugging Face model URI: use hf://org/name or "
                "hf://org/name@revision",
            )
        return HfUri(repo_id, revision or None)
    if uri.startswith("s3://"):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET.match(bucket) or ".." in prefix.split("/"):
            raise DownloadFailed(
                Reason.INVALID_SOURCE,
                f"{uri!r} is not an S3 URI: use s3://bucket/prefix",
            )
        return S3Uri(bucket, prefix)
    raise DownloadFailed(
        Reason.INVALID_SOURCE,
        f"{uri!r} has an unsupported scheme: use hf://org/name[@revision] or s3://bucket/prefix",
    )
