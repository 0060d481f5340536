"""Partial files: how a file being fetched sits on disk so that any attempt can resume it.

``.aimd/partial/<key>.part`` holds the file's bytes at their offsets (sparse until written);
``<key>.progress`` holds a header (magic, file size, chunk size) and, per chunk, how many of its
bytes are on disk. The counter is written after every write of data (eight bytes, into the page
cache, in that order), so a killed process loses nothing it wrote and the next attempt asks only
for what follows. ``<key>`` hashes the file's path, size and identity (blob id, ETag), so bytes
of other content are never resumed into it.

What this does not survive is a node crash losing the page cache between the two writes; the
digest check before a file is moved into place catches that where the source publishes one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from pathlib import Path

from aimd.download.plan import RemoteFile

MAGIC = b"AIMDPRT1"
HEADER = struct.Struct("<8sQQ")  # magic, file size, chunk size
SLOT = struct.Struct("<Q")  # bytes of one chunk on disk
PARTIAL_DIR = "partial"


class Chunk:
    """Bytes ``[start, end)`` of a file, of which the first ``done`` are on disk; ``finished``
    is set once all are."""

    __slots__ = ("done", "end", "file", "finished", "index", "start")

    def __init__(self, file: PartialFile, index: int, start: int, end: int, done: int) -> None:
        self.file = file
        self.index = index
        self.start = start
        self.end = end
        self.done = done
        self.finished = asyncio.Event()
        if self.complete:
            self.finished.set()

    @property
    def complete(self) -> bool:
        return self.start + self.done >= self.end


class PartialFile:
    """One file on its way: its partial and progress files, its chunks, lazily opened fds."""

    def __init__(self, remote: RemoteFile, target: Path, partial_dir: Path) -> None:
        self.remote = remote
        self.final = target / remote.path
        key = f"{remote.path}\0{remote.identity}\0{remote.size}".encode()
        self.key = hashlib.sha256(key).hexdigest()[:32]
        self.partial = partial_dir / f"{self.key}.part"
        self.progress = partial_dir / f"{self.key}.progress"
        self.chunks: list[Chunk] = []
        self.fd = -1
        self.progress_fd = -1

    def prepare(self, chunk_size: int) -> int:
        """Cuts the file into chunks, taking over what a previous attempt recorded; returns the
        bytes already on disk."""
        size = self.remote.size
        done = self._resumable(size)
        chunk_size = done[0] if done else chunk_size
        slots = done[1] if done else []
        starts = range(0, size, chunk_size)
        for index, start in enumerate(starts):
            end = min(start + chunk_size, size)
            written = min(slots[index], end - start) if index < len(slots) else 0
            self.chunks.append(Chunk(self, index, start, end, written))
        if not done:
            self.partial.unlink(missing_ok=True)
            self.progress.unlink(missing_ok=True)
        return sum(chunk.done for chunk in self.chunks)

    def _resumable(self, size: int) -> tuple[int, list[int]] | None:
        """(chunk size, bytes per chunk) recorded by an earlier attempt, when it can be trusted."""
        try:
            raw = self.progress.read_bytes()
            if self.partial.stat().st_size != size:
                return None
        except OSError:
            return None
        if len(raw) < HEADER.size:
            return None
        magic, recorded_size, chunk_size = HEADER.unpack_from(raw)
        if magic != MAGIC or recorded_size != size or chunk_size <= 0:
            return None
        count = -(-size // chunk_size)
        if len(raw) < HEADER.size + count * SLOT.size:
            return None
        slots = [SLOT.unpack_from(raw, HEADER.size + i * SLOT.size)[0] for i in range(count)]
        return chunk_size, slots

    def open(self) -> int:
        """The data fd, creating the partial and progress files on first use."""
        if self.fd >= 0:
            return self.fd
        fresh = not self.progress.exists()
        self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        self.progress_fd = os.open(self.progress, os.O_RDWR | os.O_CREAT, 0o644)
        if fresh:
            # Sparse: reserving the whole size would make glibc write zeros on filesystems
            # without fallocate (NFS, common under ReadWriteMany volumes).
            os.ftruncate(self.fd, self.remote.size)
            chunk_size = self.chunks[0].end - self.chunks[0].start if self.chunks else 1
            header = HEADER.pack(MAGIC, self.remote.size, chunk_size)
            os.pwrite(self.progress_fd, header + bytes(SLOT.size * len(self.chunks)), 0)
        return self.fd

    def record(self, chunk: Chunk) -> None:
        os.pwrite(self.progress_fd, SLOT.pack(chunk.done), HEADER.size + chunk.index * SLOT.size)

    def close(self) -> None:
        for fd in (self.fd, self.progress_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.progress_fd = -1

    def discard(self) -> None:
        self.close()
        self.partial.unlink(missing_ok=True)
        self.progress.unlink(missing_ok=True)

    def install(self) -> None:
        """fsync, then rename into place: the final path only ever holds a verified file.

        Runs in a thread on a descriptor of its own, so the loop closing the file's descriptors
        (as it does when an attempt ends) can never pull one from under it; a process that dies
        meanwhile leaves either the partial file or the whole one, never half a rename.
        """
        fd = os.open(self.partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.partial, self.final)
        self.progress.unlink(missing_ok=True)
