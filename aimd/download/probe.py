"""``aimd probe URI``: a model's total size (and pinned commit for hf://) without downloading.

The probe Job runs it so the controller can size the PVC before the download starts. The result
goes to ``status.probe`` of the AIMModelCache named in the environment, to stdout as one JSON
line, and to the termination log. Exit codes as for ``aimd download``, ``Terminated`` included:
SIGTERM or SIGINT stop it at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aimd.download.command import (
    add_common_flags,
    exit_when_signalled,
    report_briefly,
    resolve_patiently,
    setup_logging,
    terminated,
    unexpected,
    until_signalled,
)
from aimd.download.reasons import DownloadFailed
from aimd.download.report import StatusReporter, emit, failure_body, now_rfc3339

# How long a probe waits out throttling at most: it only lists, and the controller waits on it.
PATIENCE = 60.0


def configure(parser: argparse.ArgumentParser) -> None:
    add_common_flags(parser)


def main(args: argparse.Namespace) -> int:
    setup_logging()
    return asyncio.run(exit_when_signalled(probe(args)))


async def probe(args: argparse.Namespace) -> int:
    reporter = StatusReporter.from_env(args.kubeconfig)

    async def stopped(signum: signal.Signals) -> int:
        failure = terminated(signum, "while listing the source")
        await report_briefly(reporter, {"probe": _failed(failure)})
        await reporter.close()
        emit(failure_body(failure), args.termination_log)
        return failure.exit_code

    return await until_signalled(_probe(args, reporter), lambda: None, stopped)


def _failed(failure: DownloadFailed) -> dict[str, Any]:
    """Every field is named so a merge patch leaves nothing of an earlier, successful probe."""
    return {
        "sizeBytes": None,
        "revision": None,
        "reason": str(failure.reason),
        "message": failure.message,
        "probedAt": now_rfc3339(),
    }


async def _probe(args: argparse.Namespace, reporter: StatusReporter) -> int:
    try:
        try:
            plan = await resolve_patiently(args.uri, PATIENCE, digests=False)
        except DownloadFailed:
            raise
        except Exception as error:
            raise unexpected(error) from error
    except DownloadFailed as failure:
        await reporter.patch_status({"probe": _failed(failure)})
        await reporter.close()
        emit(failure_body(failure), args.termination_log)
        return failure.exit_code
    status: dict[str, Any] = {
        "sizeBytes": plan.total_bytes,
        "revision": plan.revision,
        "reason": None,
        "message": None,
        "probedAt": now_rfc3339(),
    }
    await reporter.patch_status({"probe": status})
    await reporter.close()
    emit(
        {"sizeBytes": plan.total_bytes, "revision": plan.revision, "files": len(plan.files)},
        args.termination_log,
    )
    return 0
