"""Streaming checks of a file against the digest its source published.

Each checker is fed the file's bytes in order and then says whether they match. The transfer
engine feeds it from two sides (:class:`InOrder`): the worker thread that has just written a block
right at the checker's position hashes that block from memory, and whatever arrived out of order
is read back from disk once the contiguous prefix reaches it, so checking overlaps downloading.
hashlib releases the GIL on large buffers, so checks run on every core. The CRCs are awscrt's
(the AWS SDKs' own native code, with the CPU's carry-less multiply): about 0.04 CPU s/GB, against
md5's 2.3 and sha256's 1.1 here.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Protocol

from awscrt import checksums

from aimd.download.plan import Algorithm, Digest

READ_BLOCK = 4 << 20


class Checker(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _GitBlobSha1:
    """Git's object id of a blob: sha1 over ``blob <size>\\0`` and the content. The hub publishes
    it for every file, so files that are not in LFS are verified too."""

    def __init__(self, size: int) -> None:
        self._sha1 = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self._sha1.update(data)

    def hexdigest(self) -> str:
        return self._sha1.hexdigest()


class _Crc:
    """A running CRC of ``width`` bits; its digest is the big-endian bytes S3 publishes."""

    def __init__(self, update: Callable[[bytes | memoryview, int], int], width: int) -> None:
        self._update = update
        self._bytes = width // 8
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._update(data, self._value)

    def hexdigest(self) -> str:
        return self._value.to_bytes(self._bytes, "big").hex()


CRCS: dict[Algorithm, tuple[Callable[[bytes | memoryview, int], int], int]] = {
    "crc64nvme": (checksums.crc64nvme, 64),
    "crc32c": (checksums.crc32c, 32),
    "crc32": (checksums.crc32, 32),
}


class _MultipartMd5:
    """S3's ETag of a multipart upload: md5 of the concatenated binary md5s of each part,
    then ``-<number of parts>``."""

    def __init__(self, part_size: int) -> None:
        self._part_size = part_size
        self._part = hashlib.md5(usedforsecurity=False)
        self._filled = 0
        self._digests: list[bytes] = []

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self._part_size - self._filled)
            self._part.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self._part_size:
                self._close_part()

    def _close_part(self) -> None:
        self._digests.append(self._part.digest())
        self._part = hashlib.md5(usedforsecurity=False)
        self._filled = 0

    def hexdigest(self) -> str:
        if self._filled:
            self._close_part()
        combined = hashlib.md5(b"".join(self._digests), usedforsecurity=False).hexdigest()
        return f"{combined}-{len(self._digests)}"


def checker(digest: Digest, size: int) -> Checker:
    """A fresh checker for ``digest`` of a file of ``size`` bytes."""
    if digest.algorithm in CRCS:
        return _Crc(*CRCS[digest.algorithm])
    if digest.algorithm == "sha256":
        return hashlib.sha256()
    if digest.algorithm == "sha1":
        return hashlib.sha1(usedforsecurity=False)
    if digest.algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    if digest.algorithm == "git-sha1":
        return _GitBlobSha1(size)
    return _MultipartMd5(digest.part_size)


def feed_range(fd: int, check: Checker, start: int, end: int) -> int:
    """Feeds bytes ``[start, end)`` of the open file ``fd`` to ``check``; returns how many."""
    position = start
    while position < end:
        data = os.pread(fd, min(READ_BLOCK, end - position), position)
        if not data:
            break
        check.update(data)
        position += len(data)
    return position - start


class InOrder:
    """A file's checker with the position up to which it has been fed.

    :meth:`offer` is called by a writer thread with a block it has just written: taken when the
    block starts exactly at the position, skipped otherwise (and when another thread is feeding
    the checker: it is never waited for). :meth:`catch_up` reads back from disk what was not
    offered in order, up to a point below which every byte is written.
    """

    def __init__(self, check: Checker) -> None:
        self.check = check
        self.position = 0
        self._lock = threading.Lock()

    def offer(self, block: memoryview, offset: int) -> None:
        if offset != self.position or not self._lock.acquire(blocking=False):
            return
        try:
            if offset == self.position:
                self.check.update(block)
                self.position += len(block)
        finally:
            self._lock.release()

    def catch_up(self, fd: int, end: int) -> None:
        with self._lock:
            if self.position < end:
                self.position += feed_range(fd, self.check, self.position, end)


def file_matches(path: str, digest: Digest, size: int) -> bool:
    """Whether the whole file at ``path`` has ``digest`` (used for files already in place)."""
    check = checker(digest, size)
    fd = os.open(path, os.O_RDONLY)
    try:
        feed_range(fd, check, 0, size)
        return os.fstat(fd).st_size == size and check.hexdigest() == digest.value
    finally:
        os.close(fd)
