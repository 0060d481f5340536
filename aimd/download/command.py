"""``aimd download URI --target DIR``: the download Job's command.

Exit status 0 when every file is in place and verified, else the reason's exit code from
:mod:`aimd.download.reasons`. Progress goes to the AIMModelCache named by
``AIMD_MODEL_CACHE_NAME``/``AIMD_MODEL_CACHE_NAMESPACE`` every ``--report-interval`` seconds.
Flags default from ``AIMD_*`` variables so the cache's ``spec.env`` can tune a Job whose command
line the controller fixes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from aimd.download import credentials
from aimd.download.plan import Plan
from aimd.download.reasons import DownloadFailed, Reason
from aimd.download.report import (
    DEFAULT_TERMINATION_LOG,
    StatusReporter,
    Throughput,
    emit,
    failure_body,
    now_rfc3339,
    progress,
)
from aimd.download.source import resolve
from aimd.download.transfer import BLOCK, Settings, Transfer

log = logging.getLogger("aimd.download")


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
        "--report-interval",
        type=float,
        default=_env_number("AIMD_REPORT_INTERVAL", 3),
        help="seconds between progress reports to the AIMModelCache",
    )


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


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


@contextlib.asynccontextmanager
async def http_session(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    """One pool of ``concurrency`` connections; raw bytes (no content decoding) since sizes and
    digests are of the stored bytes; proxies and ``AWS_CA_BUNDLE`` from the environment."""
    ca_bundle = os.environ.get("AWS_CA_BUNDLE")
    tls: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=tls, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(
        connector=connector,
        trust_env=True,
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
        read_bufsize=BLOCK,
    ) as session:
        yield session


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
    return asyncio.run(download(args))


async def download(args: argparse.Namespace) -> int:
    """Runs one attempt, reports it, and returns the exit status."""
    reporter = StatusReporter.from_env(args.kubeconfig)
    settings = Settings(
        concurrency=max(1, args.concurrency),
        chunk_size=max(1, args.chunk_size) << 20,
        stall_timeout=max(0.1, args.stall_timeout),
        max_retry_after=max(0.0, args.max_retry_after),
    )
    started = time.monotonic()
    transfer: Transfer | None = None
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
        async with http_session(settings.concurrency) as session:
            transfer = Transfer(plan, args.target, session, settings)
            reporting = asyncio.create_task(
                _report_progress(reporter, transfer, args.report_interval, plan.revision)
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
        await reporter.patch_status({"resolvedRevision": plan.revision, "progress": final})
        result: dict[str, Any] = {
            "result": "Succeeded",
            "uri": args.uri,
            "revision": plan.revision,
            "files": len(manifest.files),
            "totalBytes": plan.total_bytes,
            "fetchedBytes": transfer.fetched,
            "skippedFiles": transfer.skipped_files,
            "seconds": round(seconds, 3),
            "bytesPerSecond": rate,
        }
        emit(result, args.termination_log)
        return 0
    except DownloadFailed as failure:
        return await _fail(failure, reporter, transfer, args)
    except Exception as error:
        log.exception("download failed unexpectedly")
        return await _fail(unexpected(error), reporter, transfer, args)
    finally:
        await reporter.close()


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
        status["progress"] = progress(transfer.total, transfer.on_disk, 0)
    await reporter.patch_status(status)
    emit(failure_body(failure), args.termination_log)
    return failure.exit_code


async def _report_progress(
    reporter: StatusReporter, transfer: Transfer, interval: float, revision: str | None
) -> None:
    """Every ``interval`` seconds, the progress so far; the pinned revision with each until one
    gets through."""
    throughput = Throughput()
    first: dict[str, Any] = {"resolvedRevision": revision}
    while True:
        rate = throughput.sample(transfer.fetched)
        status = {**first, "progress": progress(transfer.total, transfer.on_disk, rate)}
        if await reporter.patch_status(status):
            first = {}
        log.info("%d of %d bytes on disk, %.1f MB/s", transfer.on_disk, transfer.total, rate / 1e6)
        await asyncio.sleep(interval)
