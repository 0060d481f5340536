"""Partial files: how a file being fetched sits on disk so that any attempt can resume it.

``.aimd/partial/<key>.part`` holds the file's bytes at their offsets (sparse until written);
``<key>.progress`` holds a header (magic, file size, chunk size) and, per chunk, how many of its
bytes are on disk. The counter is written after every write of data (eight bytes, into the page
cache, in that order), so a killed process loses nothing it wrote and the next attempt asks only
for what follows. ``<key>`` hashes the file's path, size and identity (blob id, ETag), so bytes
of other content are never resumed into it.

On ext4 and xfs the data goes to the device with ``O_DIRECT``, past the page cache. Why: a model
is read by other pods, often on other nodes, not by the download, so caching what it writes only
costs. Every page of a buffered write is a page the kernel must find, fill, and later write back
and reclaim, inside the Job's memory limit and at the expense of whatever else the node caches;
on this project's benchmark machine (a VM) that page handling was most of a download's time
(README, "Download performance").
Direct writes need the buffer, offset and length aligned to the device's block (``ALIGN``); what
is not aligned (a file's tail) is written through the page cache, and a filesystem that refuses
a direct write turns them off for that file. Network filesystems (NFS, CephFS, FUSE) keep
buffered writes: there a direct write is a synchronous round trip.

What this does not survive is a node crash losing the page cache between the two writes; the
digest check before a file is moved into place catches that where the source publishes one.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import struct
from pathlib import Path

from aimd.download.plan import RemoteFile

MAGIC = b"AIMDPRT1"
HEADER = struct.Struct("<8sQQ")  # magic, file size, chunk size
SLOT = struct.Struct("<Q")  # bytes of one chunk on disk
PARTIAL_DIR = "partial"
# O_DIRECT's alignment of buffer, offset and length: the logical block of every common device
# (512 or 4096 bytes); the transfer's chunks and buffers are multiples of it.
ALIGN = 4096
# Local block filesystems, where a direct write is a DMA to the device (see the docstring).
DIRECT_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs"})

log = logging.getLogger(__name__)


def writes_directly(directory: Path) -> bool:
    """Whether files under ``directory`` are written with ``O_DIRECT``: its filesystem is one of
    ``DIRECT_FILESYSTEMS`` (found in the mount table by device number)."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text()
        device = os.stat(directory).st_dev
    except OSError:
        return False
    return filesystem_type(mounts, device) in DIRECT_FILESYSTEMS


def filesystem_type(mountinfo: str, device: int) -> str | None:
    """The type of the filesystem on ``device`` in the text of ``/proc/self/mountinfo``: field 3
    is the mount's ``major:minor``, and the type follows the ``-`` that ends the optional
    fields."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == wanted and "-" in fields[3:]:
            rest = fields[fields.index("-", 3) + 1 :]
            if rest:
                return rest[0]
    return None


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

    def __init__(
        self, remote: RemoteFile, target: Path, partial_dir: Path, *, direct: bool = False
    ) -> None:
        self.remote = remote
        self.final = target / remote.path
        key = f"{remote.path}\0{remote.identity}\0{remote.size}".encode()
        self.key = hashlib.sha256(key).hexdigest()[:32]
        self.partial = partial_dir / f"{self.key}.part"
        self.progress = partial_dir / f"{self.key}.progress"
        self.chunks: list[Chunk] = []
        self.direct = direct
        self.fd = -1
        self.direct_fd = -1
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
        """The data fd (buffered: reads, a file's tail), creating the partial and progress files
        on first use, and the direct one beside it when the file is written directly."""
        if self.fd >= 0:
            return self.fd
        fresh = not self.progress.exists()
        self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT, 0o644)
        self.progress_fd = os.open(self.progress, os.O_RDWR | os.O_CREAT, 0o644)
        if self.direct:
            try:
                self.direct_fd = os.open(self.partial, os.O_WRONLY | os.O_DIRECT)
            except OSError as error:
                log.debug("%s: no direct writes (%s)", self.remote.path, error)
        if fresh:
            # Sparse: reserving the whole size would make glibc write zeros on filesystems
            # without fallocate (NFS, common under ReadWriteMany volumes).
            os.ftruncate(self.fd, self.remote.size)
            chunk_size = self.chunks[0].end - self.chunks[0].start if self.chunks else 1
            header = HEADER.pack(MAGIC, self.remote.size, chunk_size)
            os.pwrite(self.progress_fd, header + bytes(SLOT.size * len(self.chunks)), 0)
        return self.fd

    def write(self, block: memoryview, position: int) -> None:
        """Writes ``block`` at ``position``: its aligned part directly when the file is written
        so, the rest through the page cache. (From worker threads, each on its own range.)"""
        size = len(block)
        aligned = self.direct and self.direct_fd >= 0 and position % ALIGN == 0
        direct = size - size % ALIGN if aligned else 0
        if direct:
            try:
                _write_all(self.direct_fd, block[:direct], position)
            except OSError as error:
                if error.errno != errno.EINVAL:
                    raise
                # The filesystem or device wants another alignment: buffered from now on. (The
                # fd stays open until close: another thread may be writing with it.)
                log.debug("%s: direct write refused (%s)", self.remote.path, error)
                self.direct = False
                direct = 0
        if direct < size:
            _write_all(self.fd, block[direct:], position + direct)

    def record(self, chunk: Chunk) -> None:
        os.pwrite(self.progress_fd, SLOT.pack(chunk.done), HEADER.size + chunk.index * SLOT.size)

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd, self.progress_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.direct_fd = self.progress_fd = -1

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


def _write_all(fd: int, block: memoryview, position: int) -> None:
    """``pwrite`` until every byte is written: a write may be short (a signal, a nearly full
    volume), and what it left out must not be counted as on disk."""
    while block:
        written = os.pwrite(fd, block, position)
        if not written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        block, position = block[written:], position + written
