"""How a partial file's bytes reach the disk: past the page cache where the filesystem does that
well, through it for what direct writes cannot take."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import tempfile
from pathlib import Path

import pytest

from aimd.download.partial import ALIGN, PartialFile, filesystem_type, writes_directly
from aimd.download.plan import RemoteFile

MOUNTINFO = """\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
24 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw
31 22 0:27 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
40 22 0:45 /export /mnt/models rw,relatime shared:9 master:3 - nfs4 srv:/export rw,vers=4.2
41 22 259:3 / /var/lib/kubelet/pods/x/volumes/pvc rw - xfs /dev/nvme0n1p3 rw
"""


def test_the_filesystem_is_found_by_device_number() -> None:
    assert filesystem_type(MOUNTINFO, os.makedev(254, 0)) == "ext4"
    assert filesystem_type(MOUNTINFO, os.makedev(0, 45)) == "nfs4", "past optional fields"
    assert filesystem_type(MOUNTINFO, os.makedev(259, 3)) == "xfs"
    assert filesystem_type(MOUNTINFO, os.makedev(0, 27)) == "tmpfs"
    assert filesystem_type(MOUNTINFO, os.makedev(8, 1)) is None


def resident_pages(path: Path) -> list[bool]:
    """Which pages of the file are in the page cache: mincore(2) on a private mapping that is
    never touched, so looking does not read anything in."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    size = path.stat().st_size
    vector = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    with path.open("rb") as handle:
        view = mmap.mmap(
            handle.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
    start = ctypes.c_char.from_buffer(view)
    try:
        found = libc.mincore(ctypes.byref(start), ctypes.c_size_t(size), vector)
    finally:
        del start
        view.close()
    if found != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return [bool(page & 1) for page in vector]


def partial_file(tmp_path: Path, size: int, *, direct: bool = True) -> PartialFile:
    file = PartialFile(RemoteFile("m.bin", size, "etag"), tmp_path, tmp_path, direct=direct)
    file.prepare(16 << 20)
    file.open()
    return file


needs_direct = pytest.mark.skipif(
    not writes_directly(Path(tempfile.gettempdir())),  # where pytest's tmp_path lives
    reason="the temporary directory is not on ext4 or xfs",
)


@needs_direct
def test_aligned_bytes_go_past_the_page_cache_and_the_tail_through_it(tmp_path: Path) -> None:
    size = 4 * ALIGN + 100
    data = os.urandom(size)
    buffer = memoryview(mmap.mmap(-1, 8 * ALIGN))  # page-aligned, as the transfer's are
    buffer[:size] = data
    file = partial_file(tmp_path, size)
    try:
        file.write(buffer[:size], 0)
        assert file.direct
    finally:
        file.close()
    assert resident_pages(file.partial) == [False] * 4 + [True], "only the tail page is cached"
    assert file.partial.read_bytes() == data


@needs_direct
def test_a_refused_direct_write_falls_back_to_the_page_cache(tmp_path: Path) -> None:
    data = os.urandom(2 * ALIGN)
    misaligned = memoryview(bytearray(len(data) + 1))[1:]  # O_DIRECT refuses it: EINVAL
    misaligned[:] = data
    file = partial_file(tmp_path, len(data))
    try:
        file.write(misaligned, 0)
        assert not file.direct, "buffered from then on"
        file.write(misaligned[:ALIGN], 0)
    finally:
        file.close()
    assert file.partial.read_bytes() == data


def test_without_direct_writes_everything_is_buffered(tmp_path: Path) -> None:
    data = os.urandom(2 * ALIGN)
    file = partial_file(tmp_path, len(data), direct=False)
    try:
        assert file.direct_fd == -1
        file.write(memoryview(data), 0)
    finally:
        file.close()
    assert resident_pages(file.partial) == [True, True]
