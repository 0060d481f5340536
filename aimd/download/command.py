"""``aimd download URI --target DIR``: the download Job's command.

Exit status 0 when every file is in place and verified, else the reason's exit code from
:mod:`aimd.download.reasons` (``Terminated`` after SIGTERM or SIGINT, which stop it within
seconds and leave everything fetched resumable). Progress goes to the AIMModelCache named by
``AIMD_MODEL_CACHE_NAME``/``AIMD_MODEL_CACHE_NAMESPACE``: quickly at first, so a person watching a
new download sees it move, then every ``--report-interval`` seconds (see :func:`report_delays`).
Flags default from ``AIMD_*`` variables so the cache's ``spec.env`` can tune a Job whose command
line the controller fixes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from aimd import logs
from aimd.download import credentials
from aimd.download.plan import Plan
from aimd.download.reasons import EXIT_CODES, DownloadFailed, Reason
from aimd.download.report import (
    DEFAULT_TERMINATION_LOG,
    StatusReporter,
    Throughput,
    emit,
    failure_body,
    now_rfc3339,
    progress,
    progress_status,
)
from aimd.download.source import resolve
from aimd.download.transfer import Settings, Transfer

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long the last report after a signal may take: the pod's grace period is short.
SIGNAL_REPORT_TIMEOUT = 3.0
# The first progress report after the one at the start; the wait then doubles up to the interval.
FIRST_REPORT_DELAY = 1.0


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``download`` and ``probe``."""
    parser.add_argument("uri", help="hf://org/name[@revision] or s3://bucket/prefix")
    parser.add_argument(
        "--termination-log",
        default=DEFAULT_TERMINATION_LOG,
        help="where the result goes for the kubelet (skipped when absent or not writable)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="for status reports when not in a pod (default: in-cluster, else $KUBECONFIG)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)
    parser.add_argument("--target", required=True, type=Path, help="directory to fill")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(_env_number("AIMD_DOWNLOAD_CONCURRENCY", 8)),
        help="parallel connections (env AIMD_DOWNLOAD_CONCURRENCY, default 8)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=int(_env_number("AIMD_DOWNLOAD_CHUNK_MIB", 16)),
        help="MiB per ranged request (env AIMD_DOWNLOAD_CHUNK_MIB, default 16)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=_env_number("AIMD_STALL_TIMEOUT", 120),
        help="fail as Stalled after this many seconds without data (env AIMD_STALL_TIMEOUT)",
    )
    parser.add_argument(
        "--max-retry-after",
        type=float,
        default=_env_number("AIMD_MAX_RETRY_AFTER", 300),
        help="longest total wait the source may ask for with Retry-After before RateLimited",
    )
    parser.add_argument(
        "--direct-io",
        choices=("auto", "off"),
        default=os.environ.get("AIMD_DIRECT_IO", "auto"),
        help="auto: write with O_DIRECT on ext4 and xfs, past the page cache; off: always "
        "through it (env AIMD_DIRECT_IO, default auto)",
    )
    parser.add_argument(
        "--report-interval",
        type=float,
        default=_env_number("AIMD_REPORT_INTERVAL", 10),
        help="longest wait between progress reports to the AIMModelCache, reached by doubling "
        "from 1s (env AIMD_REPORT_INTERVAL, default 10)",
    )


def setup_logging() -> None:
    """Logs as the controller does: the format it passes the Job (``AIMD_LOG_FORMAT``)."""
    logs.setup(os.environ.get("AIMD_LOG_FORMAT", "text"), os.environ.get("AIMD_LOG_LEVEL", "info"))


def unexpected(error: BaseException) -> DownloadFailed:
    """A failure without a known reason: a local problem or a bug, said plainly."""
    if isinstance(error, PermissionError):
        return DownloadFailed(
            Reason.INTERNAL_ERROR,
            f"permission denied: {error.filename}; check the volume's mount and the pod's "
            "fsGroup/runAsUser",
        )
    return DownloadFailed(
        Reason.INTERNAL_ERROR,
        f"unexpected error {error!r}; this is a bug in aimd, please report it",
    )


async def resolve_patiently(uri: str, patience: float, *, digests: bool = True) -> Plan:
    """Lists the source, waiting out throttling for as long as it asks (``Retry-After``) while
    the waits add up to no more than ``patience`` seconds."""
    waited = 0.0
    while True:
        try:
            return await resolve(uri, digests=digests)
        except DownloadFailed as failure:
            wait = failure.retry_after
            if failure.reason != Reason.RATE_LIMITED or wait is None or waited + wait > patience:
                raise
            log.warning("%s; waiting %.0fs as the source asks", failure.message, wait)
            waited += wait
            await asyncio.sleep(wait)


def main(args: argparse.Namespace) -> int:
    setup_logging()
    return asyncio.run(exit_when_signalled(download(args)))


async def exit_when_signalled(command: Awaitable[int]) -> int:
    """Runs a command; after a signal, ends the process as soon as the command has returned.

    ``asyncio.run`` would otherwise wait for threads still inside a blocking call (a listing
    with its 60 s timeout, a hash) whose results nobody needs any more; what is on disk is
    consistent without them (a file is only ever renamed whole, after its check).
    """
    code = await command
    if code == EXIT_CODES[Reason.TERMINATED]:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


async def until_signalled(
    work: Coroutine[Any, Any, int],
    stop: Callable[[], None],
    on_signal: Callable[[signal.Signals], Awaitable[int]],
) -> int:
    """Runs ``work``; on SIGTERM or SIGINT calls ``stop`` (for what cancelling cannot reach,
    such as requests in threads), cancels ``work`` and returns what ``on_signal`` returns.

    ``aimd download`` runs as PID 1 of its container, where a signal without a handler is
    ignored: without this a deleted Job's pod would wait out its whole grace period.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(work)
    received: list[signal.Signals] = []

    def handle(signum: signal.Signals) -> None:
        if received:
            return
        received.append(signum)
        log.warning("%s: stopping; what is on disk is kept for the next attempt", signum.name)
        stop()
        task.cancel()

    for signum in SIGNALS:
        loop.add_signal_handler(signum, handle, signum)
    try:
        try:
            return await task
        except asyncio.CancelledError:
            if not received:
                raise
        return await on_signal(received[0])
    finally:
        for signum in SIGNALS:
            loop.remove_signal_handler(signum)


def terminated(signum: signal.Signals, what: str) -> DownloadFailed:
    return DownloadFailed(
        Reason.TERMINATED,
        f"stopped by {signum.name} (the pod was deleted or evicted, or its node is draining) "
        f"{what}; the next attempt resumes from there",
    )


async def report_briefly(reporter: StatusReporter, status: dict[str, Any]) -> None:
    """The last report after a signal, cut short if the API server is slow."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SIGNAL_REPORT_TIMEOUT):
            await reporter.patch_status(status)


async def download(args: argparse.Namespace) -> int:
    """Runs one attempt, reports it, and returns the exit status."""
    reporter = StatusReporter.from_env(args.kubeconfig)
    attempt = _Attempt(args, reporter)
    try:
        return await until_signalled(attempt.run(), attempt.stop, attempt.terminated)
    finally:
        await reporter.close()


class _Attempt:
    """One download attempt; :meth:`stop` may come at any time from a signal."""

    def __init__(self, args: argparse.Namespace, reporter: StatusReporter) -> None:
        self.args = args
        self.reporter = reporter
        self.transfer: Transfer | None = None
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        if self.transfer is not None:
            self.transfer.stop()

    async def terminated(self, signum: signal.Signals) -> int:
        """Reports the stop as what it is (not as a failure of the source), with the bytes on
        disk; the progress records are already written, block by block."""
        transfer = self.transfer
        what = "while listing the source"
        status: dict[str, Any] = {}
        if transfer is not None:
            what = f"with {transfer.on_disk} of {transfer.total} bytes on disk"
            status.update(progress_status(progress(transfer.total, transfer.on_disk, 0)))
        failure = terminated(signum, what)
        log.warning("%s: %s", failure.reason, failure.message)
        status["lastDownloadFailure"] = {
            "reason": str(failure.reason),
            "message": failure.message,
            "time": now_rfc3339(),
        }
        await report_briefly(self.reporter, status)
        emit(failure_body(failure), self.args.termination_log)
        return failure.exit_code

    async def run(self) -> int:
        args = self.args
        settings = Settings(
            concurrency=max(1, args.concurrency),
            chunk_size=max(1, args.chunk_size) << 20,
            stall_timeout=max(0.1, args.stall_timeout),
            max_retry_after=max(0.0, args.max_retry_after),
            direct_io=args.direct_io == "auto",
        )
        started = time.monotonic()
        try:
            await credentials.export(args.kubeconfig)
            plan = await resolve_patiently(args.uri, settings.max_retry_after)
            log.info(
                "%s: %d files, %d bytes, revision %s",
                args.uri,
                len(plan.files),
                plan.total_bytes,
                plan.revision,
            )
            args.target.mkdir(parents=True, exist_ok=True)
            transfer = self.transfer = Transfer(plan, args.target, settings)
            if self.stopping:
                raise asyncio.CancelledError
            reporting = asyncio.create_task(
                _report_progress(self.reporter, transfer, args.report_interval, plan.revision)
            )
            try:
                manifest = await transfer.run()
            finally:
                reporting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporting
            seconds = max(time.monotonic() - started, 1e-6)
            rate = int(transfer.fetched / seconds)
            final = progress(plan.total_bytes, plan.total_bytes, rate)
            await self.reporter.patch_status(
                {"resolvedRevision": plan.revision, **progress_status(final)}
            )
            result: dict[str, Any] = {
                "result": "Succeeded",
                "uri": args.uri,
                "revision": plan.revision,
                "files": len(manifest.files),
                "totalBytes": plan.total_bytes,
                "fetchedBytes": transfer.fetched,
                "skippedFiles": transfer.skipped_files,
                "resolvedTargets": transfer.targets.located,
                "seconds": round(seconds, 3),
                "bytesPerSecond": rate,
            }
            emit(result, args.termination_log)
            return 0
        except DownloadFailed as failure:
            if self.stopping:
                raise asyncio.CancelledError from None
            return await _fail(failure, self.reporter, self.transfer, args)
        except Exception as error:
            if self.stopping:
                # The stop cut the requests; what they raised says nothing about the source.
                raise asyncio.CancelledError from None
            log.exception("download failed unexpectedly")
            return await _fail(unexpected(error), self.reporter, self.transfer, args)


async def _fail(
    failure: DownloadFailed,
    reporter: StatusReporter,
    transfer: Transfer | None,
    args: argparse.Namespace,
) -> int:
    log.error("%s: %s", failure.reason, failure.message)
    status: dict[str, Any] = {
        "lastDownloadFailure": {
            "reason": str(failure.reason),
            "message": failure.message,
            "time": now_rfc3339(),
        }
    }
    if transfer is not None:
        status.update(progress_status(progress(transfer.total, transfer.on_disk, 0)))
    await reporter.patch_status(status)
    emit(failure_body(failure), args.termination_log)
    return failure.exit_code


def report_delays(interval: float) -> Iterator[float]:
    """The waits between progress reports: 1 s, then doubling (2, 4, 8 s) up to ``interval``,
    then ``interval`` for as long as the download runs.

    Every report is a status write to the AIMModelCache, which reconciles it and every template
    cache that uses it; a person watching a new download wants to see it move at once, a long
    one needs no more than one report per interval. With the default 10 s that is 9 writes in
    the first minute and 6 in each after it (a fixed 3 s made 20 a minute).
    """
    delay = min(FIRST_REPORT_DELAY, interval)
    while True:
        yield delay
        delay = min(delay * 2, interval)


async def _report_progress(
    reporter: StatusReporter, transfer: Transfer, interval: float, revision: str | None
) -> None:
    """The progress so far at the start and after each of :func:`report_delays` (a report
    that would say exactly what the last one said is skipped); the pinned revision with each
    until one gets through."""
    throughput = Throughput()
    first: dict[str, Any] = {"resolvedRevision": revision}
    delays = report_delays(max(0.01, interval))
    said: dict[str, int] | None = None
    while True:
        rate = throughput.sample(transfer.fetched)
        now = progress(transfer.total, transfer.on_disk, rate)
        if (now != said or first) and await reporter.patch_status(
            {**first, **progress_status(now)}
        ):
            first = {}
            said = now
        log.info("%d of %d bytes on disk, %.1f MB/s", transfer.on_disk, transfer.total, rate / 1e6)
        await asyncio.sleep(next(delays))
