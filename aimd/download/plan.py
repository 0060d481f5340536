"""What a source publishes about a model: its files, their sizes and digests, and how to fetch
any byte range of each. Sources (``hf``, ``s3``) build a :class:`Plan`; ``transfer`` consumes it
without knowing which source it came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Literal

from aimd.download.reasons import DownloadFailed, Reason

Algorithm = Literal[
    "sha256", "sha1", "md5", "git-sha1", "s3-multipart-md5", "crc64nvme", "crc32c", "crc32"
]


@dataclass(frozen=True)
class Digest:
    """A digest the source published for a file.

    ``s3-multipart-md5`` is S3's ETag of a multipart upload: the md5 of the parts' md5s, which
    needs the ``part_size`` used by the uploader. ``authoritative`` is False when that part size
    was inferred rather than read from the store: a mismatch then proves nothing, so it demotes
    the check to size-only instead of failing a file that may be fine. The CRCs are S3's
    full-object checksums; every ``value`` is hex (a CRC's of its big-endian bytes).
    """

    algorithm: Algorithm
    value: str
    part_size: int = 0
    authoritative: bool = True

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


@dataclass(frozen=True)
class RemoteFile:
    """One file of the model. ``path`` is relative to the target directory (POSIX, checked to
    stay inside it); ``identity`` changes whenever the content does (a commit's blob id, an
    ETag), so a partial file of older content is never resumed into newer content."""

    path: str
    size: int
    identity: str
    digest: Digest | None = None


Locator = Callable[[RemoteFile], tuple[str, Mapping[str, str]]]


@dataclass(frozen=True)
class Plan:
    """Everything to download. ``revision`` is the pinned commit (hf://) or None (s3://);
    ``locate`` gives the URL and headers of a GET for a file; the transfer engine asks once per
    file and again shortly before the URL's signature expires (:mod:`aimd.download.targets`)."""

    uri: str
    revision: str | None
    files: tuple[RemoteFile, ...]
    locate: Locator = field(repr=False, compare=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def safe_relative_path(uri: str, name: str) -> str:
    """``name`` as a relative path that cannot escape the target directory (no absolute path,
    no ``..``): a hostile listing must not write outside the PVC's model folder."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or str(path) in ("", "."):
        raise DownloadFailed(
            Reason.INVALID_SOURCE,
            f"{uri} lists a file named {name!r}, which would be written outside the target "
            "directory; remove or rename it at the source",
        )
    return str(path)
