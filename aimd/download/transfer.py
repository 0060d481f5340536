"""The transfer engine: fetches a :class:`~aimd.download.plan.Plan` into a directory.

How it is fast: every file is cut into chunks (16 MiB by default) fetched with ranged GETs by
``concurrency`` workers. The bytes never touch the event loop: each GET runs in a worker thread
(:mod:`aimd.download.fetch`) that reads the body into its own buffer, ``pwrite``-s it at its
offset (past the page cache where the filesystem does that well: :mod:`aimd.download.partial`)
and offers it to the file's checker, all of which release the GIL. A worker keeps to one
file, chunk after chunk, while there are files nobody has started, so with many files each is
written by one thread in order and hashed from memory as it arrives (no read-back, one inode per
writer); with fewer files than workers they share the chunks of the first unfinished one, and
what arrives out of order is hashed from disk as the contiguous prefix grows, so verification
overlaps the download instead of following it. Each file is located once (``/resolve`` for
hf://, a presigned URL for s3://) and its redirect target reused (:mod:`aimd.download.targets`).

How it resumes: see :mod:`aimd.download.partial`; a retry asks only for bytes not yet on disk,
and stale partial files (of other content) are removed.

How it is honest: a file enters its final place only after its size and its published digest
(where there is one) match, by an atomic rename after ``fsync``; the manifest records how each
file was verified. Finished files are skipped on a retry.

How it stops: :meth:`Transfer.stop` (on SIGTERM) or cancelling :meth:`Transfer.run` cuts every
request at once (their sockets are shut down) and waits for the worker threads to leave before
files are closed, so what was written is recorded and resumable, and nothing is renamed half-way.

When it gives up (:class:`~aimd.download.reasons.DownloadFailed`): credentials refused, file
gone, disk full, digest mismatch (the partial file is discarded, so the retry fetches it anew),
no byte at all for ``stall_timeout`` seconds, transient network errors that persist for
``attempts`` tries without progress, or ``Retry-After`` waits adding up to more than
``max_retry_after``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import http.client
import logging
import mmap
import os
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aimd.download.fetch import Aborted, Answer, Exchange, Http
from aimd.download.manifest import STATE_DIR, Manifest
from aimd.download.partial import ALIGN, PARTIAL_DIR, Chunk, PartialFile, writes_directly
from aimd.download.plan import Plan, RemoteFile
from aimd.download.reasons import DownloadFailed, Reason
from aimd.download.targets import MAX_REDIRECTS, Target, Targets
from aimd.download.verify import InOrder, checker, file_matches

log = logging.getLogger(__name__)

# Bytes per write from a worker's buffer (filled by as many reads as it takes): large enough
# that Python's cost per block is noise, small enough that the progress record follows closely;
# a multiple of ALIGN, for direct writes.
BLOCK = 1 << 20
LOCK = "lock"
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class Settings:
    """Tunables of one download; the CLI fills them from flags and the environment."""

    concurrency: int = 8
    chunk_size: int = 16 << 20
    stall_timeout: float = 120.0
    max_retry_after: float = 300.0
    attempts: int = 8
    # Write past the page cache on filesystems that do it well (aimd/download/partial.py).
    direct_io: bool = True


class _Retry(Exception):
    """A transient failure of one request: try the rest of the chunk again after a backoff."""


class _Again(Exception):
    """Ask again at once: the request was redirected, or its target expired."""


class _Throttled(Exception):
    """The source asked us to slow down (429, 503), maybe saying for how long."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"throttled, retry after {retry_after}")
        self.retry_after = retry_after


class _Schedule:
    """Which chunk a worker takes next: the following chunk of the file it is on; else the
    first of a file nobody has started; else the first chunk nobody has taken, in plan order
    (so that the contiguous prefix of a shared file grows and its check keeps up)."""

    def __init__(self, files: Iterable[PartialFile]) -> None:
        self._left: dict[PartialFile, deque[Chunk]] = {}
        for file in files:
            chunks = deque(c for c in file.chunks if not c.complete)
            if chunks:
                self._left[file] = chunks
        self._started: set[PartialFile] = set()

    def __len__(self) -> int:
        return sum(len(chunks) for chunks in self._left.values())

    def take(self, previous: Chunk | None) -> Chunk | None:
        if previous is not None:
            chunks = self._left.get(previous.file)
            if chunks and chunks[0].index == previous.index + 1:
                return self._pop(previous.file)
        for file in self._left:
            if file not in self._started:
                return self._pop(file)
        for file in self._left:
            return self._pop(file)
        return None

    def _pop(self, file: PartialFile) -> Chunk:
        self._started.add(file)
        chunks = self._left[file]
        chunk = chunks.popleft()
        if not chunks:
            del self._left[file]
        return chunk


class Transfer:
    """One download attempt of ``plan`` into ``target``. Read :attr:`on_disk` (bytes of the
    model in place or in verified-so-far partial files, resumed ones included), :attr:`fetched`
    (bytes received by this attempt) and :attr:`total` while :meth:`run` runs."""

    def __init__(self, plan: Plan, target: Path, settings: Settings) -> None:
        self.plan = plan
        self.target = target
        self.settings = settings
        self.total = plan.total_bytes
        self.on_disk = 0
        self.fetched = 0
        self.skipped_files = 0
        self.targets = Targets(plan.locate)
        self._counting = threading.Lock()
        self._checks: dict[PartialFile, InOrder] = {}
        self._finding_out: dict[str, asyncio.Event] = {}
        self._last_activity = time.monotonic()
        self._quiet_until = 0.0
        self._waited_for_source = 0.0
        # A read that waits this long fails its request (the chunk is retried); a whole
        # transfer without a byte for stall_timeout fails as Stalled.
        self._http = Http(read_timeout=max(1.0, settings.stall_timeout / 2))

    def stop(self) -> None:
        """Cuts every request now (from any thread or a signal handler); :meth:`run` then ends
        with the error its workers see, after they have left and the records are written."""
        self._http.abort()

    @property
    def stopping(self) -> bool:
        return self._http.aborted.is_set()

    async def run(self) -> Manifest:
        """Downloads and verifies every file; returns the saved, complete manifest."""
        try:
            async with _volume_lock(self.target, self.settings.stall_timeout):
                return await self._run()
        except BaseExceptionGroup as group:
            raise _as_failure(_first(group), self.target) from None
        except OSError as error:
            raise _as_failure(error, self.target) from None

    async def _run(self) -> Manifest:
        partial_dir = self.target / STATE_DIR / PARTIAL_DIR
        partial_dir.mkdir(parents=True, exist_ok=True)
        manifest = Manifest(self.target, self.plan.uri, self.plan.revision)
        pending: list[PartialFile] = []
        direct = self.settings.direct_io and writes_directly(partial_dir)
        for remote in self.plan.files:
            file = PartialFile(remote, self.target, partial_dir, direct=direct)
            if await self._already_in_place(file, manifest):
                self.on_disk += remote.size
                self.skipped_files += 1
            else:
                self.on_disk += file.prepare(self.settings.chunk_size)
                pending.append(file)
        self._remove_stale(manifest, partial_dir, {f.key for f in pending})
        manifest.save()
        self._check_space(pending)
        schedule = _Schedule(pending)
        self._last_activity = time.monotonic()
        pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="fetch")
        try:
            async with asyncio.TaskGroup() as outer:
                watchdog = outer.create_task(self._watch_for_stall())
                async with asyncio.TaskGroup() as work:
                    for _ in range(min(self.settings.concurrency, len(schedule))):
                        work.create_task(self._worker(schedule, pool))
                    for file in pending:
                        work.create_task(self._finish(file, manifest))
                watchdog.cancel()
        finally:
            # No thread may write into a file after it is closed (its fd number could be
            # reused): cut the requests, then wait for the threads to leave.
            self._http.abort()
            await asyncio.shield(asyncio.to_thread(pool.shutdown, wait=True))
            self._http.close()
            for file in pending:
                file.close()
        manifest.complete = True
        manifest.save()
        _fsync_dir(self.target)
        return manifest

    async def _already_in_place(self, file: PartialFile, manifest: Manifest) -> bool:
        """Finished by an earlier attempt (the manifest says so), or present with a matching
        authoritative digest (e.g. placed there before the manifest was written)."""
        if manifest.is_done(file.remote, file.final):
            return True
        digest = file.remote.digest
        if digest is None or not digest.authoritative:
            return False
        try:
            if file.final.stat().st_size != file.remote.size:
                return False
        except OSError:
            return False
        matches = await asyncio.to_thread(file_matches, str(file.final), digest, file.remote.size)
        if matches:
            manifest.record(file.remote, digest.algorithm)
        return matches

    def _remove_stale(self, manifest: Manifest, partial_dir: Path, keep: set[str]) -> None:
        """Partial files of other content, and files this tool wrote for an earlier revision that
        the current one no longer has (only those: nothing else in the directory is touched)."""
        for leftover in partial_dir.iterdir():
            if leftover.name.split(".", 1)[0] not in keep:
                leftover.unlink(missing_ok=True)
        wanted = {f.path for f in self.plan.files}
        for path in [p for p in manifest.files if p not in wanted]:
            parts = PurePosixPath(path).parts
            if parts and not PurePosixPath(path).is_absolute() and ".." not in parts:
                (self.target / path).unlink(missing_ok=True)
            manifest.forget(path)

    def _check_space(self, pending: list[PartialFile]) -> None:
        """Fails before fetching anything when the volume cannot hold what is missing."""
        missing = sum(f.remote.size - sum(c.done for c in f.chunks) for f in pending)
        stat = os.statvfs(self.target)
        free = stat.f_bavail * stat.f_frsize
        if missing > free:
            raise DownloadFailed(
                Reason.STORAGE_FULL,
                f"{self.target} has {free} bytes free but {missing} more are needed for "
                f"{self.plan.uri} ({self.total} in all): give the cache a larger spec.size or "
                "free space on the volume",
            )

    async def _worker(self, schedule: _Schedule, pool: ThreadPoolExecutor) -> None:
        chunk: Chunk | None = None
        while (chunk := schedule.take(chunk)) is not None:
            await self._fetch(chunk, pool)
            chunk.finished.set()

    async def _fetch(self, chunk: Chunk, pool: ThreadPoolExecutor) -> None:
        """Fetches the rest of ``chunk``, retrying transient failures and honouring throttling."""
        failures = 0
        redirects = 0
        while not chunk.complete:
            before = chunk.done
            try:
                await self._fetch_once(chunk, pool)
            except _Again:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise DownloadFailed(
                        Reason.NETWORK_ERROR,
                        f"{chunk.file.remote.path} of {self.plan.uri} redirected more than "
                        f"{MAX_REDIRECTS} times in a row; check the source's endpoint",
                    ) from None
            except _Retry as error:
                redirects = 0
                failures = 1 if chunk.done > before else failures + 1
                if failures >= self.settings.attempts:
                    raise DownloadFailed(
                        Reason.NETWORK_ERROR,
                        f"fetching {chunk.file.remote.path} of {self.plan.uri} failed "
                        f"{failures} times in a row ({error}); check the network and the "
                        "source's endpoint",
                    ) from error
                await asyncio.sleep(min(10.0, 0.2 * 2**failures) * random.uniform(0.5, 1.0))
            except _Throttled as throttled:
                redirects = 0
                wait = throttled.retry_after
                if wait is None:
                    wait = min(30.0, 2.0 ** min(failures + 1, 5))
                    failures += 1
                if self._waited_for_source + wait > self.settings.max_retry_after:
                    raise DownloadFailed(
                        Reason.RATE_LIMITED,
                        f"the source keeps throttling {self.plan.uri} (waited "
                        f"{self._waited_for_source:.0f}s already, asked for {wait:.0f}s more); "
                        "the download resumes on retry, or use credentials with a higher quota",
                        wait,
                    ) from throttled
                self._waited_for_source += wait
                self._quiet_until = max(self._quiet_until, time.monotonic() + wait)
                await asyncio.sleep(wait)

    async def _fetch_once(self, chunk: Chunk, pool: ThreadPoolExecutor) -> None:
        """One GET of the rest of ``chunk`` from the file's current target, in a thread."""
        file = chunk.file
        file.open()  # here, not in the threads: two of them could create it at once
        if file not in self._checks and file.remote.digest is not None:
            self._checks[file] = InOrder(checker(file.remote.digest, file.remote.size))
        target, finding_out = await self._target(file.remote)
        loop = asyncio.get_running_loop()
        try:
            answer = await loop.run_in_executor(pool, self._receive, chunk, target, loop)
        finally:
            if finding_out:
                self._found_out(file.remote, target)
        if answer is None:
            return
        if answer.status in REDIRECTS and answer.location:
            self.targets.redirect(file.remote, target, answer.location)
            raise _Again
        if answer.status == 403 and self.targets.refused(file.remote, target):
            log.info("%s: its download URL expired; locating it again", file.remote.path)
            raise _Again
        self._raise_for(answer, file.remote)

    async def _target(self, file: RemoteFile) -> tuple[Target, bool]:
        """The file's target, and whether this request is to find out about it. While nobody
        knows whether a freshly located URL redirects, one request finds out and the others
        wait for its answer, so a file's chunks do not all ask the resolver at once."""
        while True:
            target = self.targets.get(file)
            if target.redirected or target.proven:
                return target, False
            waiting = self._finding_out.get(file.path)
            if waiting is None:
                self._finding_out[file.path] = asyncio.Event()
                return target, True
            await waiting.wait()

    def _found_out(self, file: RemoteFile, target: Target, proven: bool = False) -> None:
        """On the loop: the request that was finding out about ``target`` has its answer (a
        body, ``proven``; a redirect; an error): the others may go on."""
        if proven:
            target.proven = True
        waiting = self._finding_out.pop(file.path, None)
        if waiting is not None:
            waiting.set()

    def _receive(
        self, chunk: Chunk, target: Target, loop: asyncio.AbstractEventLoop
    ) -> Answer | None:
        """In a worker thread: GETs the rest of ``chunk`` and writes it as it arrives. None when
        the chunk's bytes came (all of them, or :class:`_Retry` for the rest); the
        :class:`Answer` when the server answered something else."""
        file = chunk.file
        start, end = chunk.start + chunk.done, chunk.end
        headers = {**target.headers, "Range": f"bytes={start}-{end - 1}"}
        try:
            exchange = self._http.get(target.url, headers)
        except (OSError, http.client.HTTPException) as error:
            raise _Retry(f"{type(error).__name__}: {error}") from error
        response = exchange.response
        whole = start == 0 and end == file.remote.size
        if response.status != 206 and not (response.status == 200 and whole):
            return exchange.answer()
        if response.length is not None and response.length != end - start:
            exchange.release()
            raise _Retry(f"the server sent {response.length} bytes for a range of {end - start}")
        if not target.proven:
            loop.call_soon_threadsafe(self._found_out, file.remote, target, True)
        buffer = _buffer()
        check = self._checks.get(file)
        position = start
        try:
            while position < end:
                want = min(len(buffer), end - position)
                if position % ALIGN:
                    want = min(want, ALIGN - position % ALIGN)  # resumed mid-block: realign
                received = self._fill(exchange, buffer[:want])
                if not received:
                    break
                block = buffer[:received]
                file.write(block, position)
                if check is not None:
                    check.offer(block, position)
                position += received
                chunk.done += received
                file.record(chunk)
                with self._counting:
                    self.fetched += received
                    self.on_disk += received
                self._last_activity = time.monotonic()
        finally:
            exchange.release()
        if position < end:
            if self.stopping:
                raise Aborted
            raise _Retry("the connection closed early")
        return None

    def _fill(self, exchange: Exchange, view: memoryview) -> int:
        """Reads body bytes into ``view`` until it is full or the body ends; returns how many.
        Whole blocks keep direct writes aligned; each read counts as activity, so a slow source
        is not taken for a stalled one while a block fills."""
        filled = 0
        while filled < len(view):
            try:
                received = exchange.read_into(view[filled:])
            except (OSError, http.client.HTTPException) as error:
                if self.stopping:
                    raise Aborted from error
                raise _Retry(f"{type(error).__name__}: {error}") from error
            if not received:
                break
            filled += received
            self._last_activity = time.monotonic()
        return filled

    def _raise_for(self, answer: Answer, file: RemoteFile) -> None:
        status = answer.status
        where = f"{file.path} of {self.plan.uri}"
        if status in (401, 403):
            raise DownloadFailed(
                Reason.AUTH_FAILED,
                f"the source refused {where} ({status}): check the credentials (HF_TOKEN, "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and that they may read it",
            )
        if status in (404, 410):
            raise DownloadFailed(
                Reason.SOURCE_NOT_FOUND,
                f"{where} was listed but is gone ({status}): the source changed during the "
                "download; check that it still exists",
            )
        if status == 416:
            raise DownloadFailed(
                Reason.VERIFICATION_FAILED,
                f"{where} is shorter than its listed size (416): the source changed during the "
                "download; the next attempt lists it again",
            )
        if status == 200:
            raise DownloadFailed(
                Reason.NETWORK_ERROR,
                f"the server of {where} ignores Range requests, which resumable parallel "
                "downloads need; use an endpoint (or proxy) that supports them",
            )
        if status in (429, 503):
            raise _Throttled(_retry_after(answer.headers.get("retry-after")))
        if status >= 500:
            raise _Retry(f"HTTP {status}")
        raise DownloadFailed(Reason.NETWORK_ERROR, f"the source answered {status} for {where}")

    async def _finish(self, file: PartialFile, manifest: Manifest) -> None:
        """Checks ``file`` as its chunks complete, then moves it into place."""
        remote = file.remote
        digest = remote.digest
        for chunk in file.chunks:
            await chunk.finished.wait()
            check = self._checks.get(file)
            if check is None and digest is not None:
                check = self._checks[file] = InOrder(checker(digest, remote.size))
            if check is not None and check.position < chunk.end:
                await asyncio.to_thread(check.catch_up, file.open(), chunk.end)
                self._last_activity = time.monotonic()
        check = self._checks.pop(file, None)
        fd = file.open()
        written = sum(c.done for c in file.chunks)
        if written != remote.size or os.fstat(fd).st_size != remote.size:
            file.discard()
            raise DownloadFailed(
                Reason.VERIFICATION_FAILED,
                f"{remote.path} of {self.plan.uri} has {written} bytes, the source listed "
                f"{remote.size}; it was discarded and is fetched again on retry",
            )
        verified_by = "size"
        if digest is not None and check is not None:
            actual = check.check.hexdigest()
            if actual == digest.value:
                verified_by = digest.algorithm
            elif digest.authoritative:
                file.discard()
                raise DownloadFailed(
                    Reason.VERIFICATION_FAILED,
                    f"{remote.path} of {self.plan.uri} has {digest.algorithm} {actual}, the "
                    f"source published {digest.value}: the bytes were corrupted on the way or "
                    "the source is inconsistent. The file was discarded and is fetched again on "
                    "retry; if this repeats, check the source",
                )
            else:
                log.warning(
                    "%s: ETag not reproduced with a guessed part size; verified by size only",
                    remote.path,
                )
        file.close()
        await asyncio.to_thread(file.install)
        manifest.record(remote, verified_by)
        manifest.save()

    async def _watch_for_stall(self) -> None:
        """Fails the attempt when no byte arrived (and none was checked) for ``stall_timeout``;
        waits the source asked for with Retry-After do not count."""
        stall = self.settings.stall_timeout
        while True:
            await asyncio.sleep(min(1.0, stall / 4))
            now = time.monotonic()
            if now < self._quiet_until:
                self._last_activity = now
            elif now - self._last_activity > stall:
                raise DownloadFailed(
                    Reason.STALLED,
                    f"no data arrived for {stall:.0f}s ({self.on_disk} of {self.total} bytes of "
                    f"{self.plan.uri} on disk): the source or the network is stuck. The next "
                    "attempt resumes; raise --stall-timeout (AIMD_STALL_TIMEOUT) if the source "
                    "is just slow",
                )


@contextlib.asynccontextmanager
async def _volume_lock(target: Path, patience: float) -> AsyncIterator[None]:
    """One attempt at a time per directory: two Jobs on one volume (an old attempt still running
    when a new one starts) would write into the same partial files. ``flock`` is released by the
    kernel when its holder dies, so a killed attempt never blocks the next one."""
    path = target / STATE_DIR / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DownloadFailed(
                        Reason.STALLED,
                        f"another download is writing into {target} (it holds {path}); this "
                        f"attempt waited {patience:.0f}s for it and stops so the two do not mix "
                        "their files",
                    ) from None
                await asyncio.sleep(0.2)
        yield
    finally:
        os.close(fd)


_local = threading.local()


def _buffer() -> memoryview:
    """This worker thread's receive buffer, reused for every request it makes; anonymous
    memory from ``mmap``, so page-aligned as direct writes need."""
    buffer: memoryview | None = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = memoryview(mmap.mmap(-1, BLOCK))
    return buffer


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that explains a failed task group: a typed failure if there is one."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, DownloadFailed):
            return leaf
    return leaves[0]


def _as_failure(error: BaseException, target: Path) -> BaseException:
    """A full disk becomes ``StorageFull``; everything else is passed on as it is."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadFailed(
            Reason.STORAGE_FULL,
            f"{target} is full ({error.strerror}): give the cache a larger spec.size or free "
            "space on the volume; what was written is kept and resumed",
        )
    return error


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
