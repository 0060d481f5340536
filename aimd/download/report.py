"""Telling the outcome: the AIMModelCache's status, one JSON line on stdout, the termination log.

Status goes through the pod's service account (or a kubeconfig when run by hand), whose Role may
only ``get`` and ``patch`` that one cache's ``status``, as JSON merge patches of fields the
controller never writes. Reporting is best effort by contract: an unreachable API server or a
refused patch is logged and the download goes on, because the bytes matter more than the news.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aimd.download.reasons import DownloadFailed

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient

log = logging.getLogger(__name__)

ENV_NAME = "AIMD_MODEL_CACHE_NAME"
ENV_NAMESPACE = "AIMD_MODEL_CACHE_NAMESPACE"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The kubelet reads at most 4096 bytes of a termination message.
TERMINATION_LIMIT = 4096
PATCH_TIMEOUT = 10.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusReporter:
    """Merge-patches one AIMModelCache's status; does nothing when no cache was named."""

    def __init__(self, name: str | None, namespace: str | None, kubeconfig: str | None) -> None:
        self.name = name
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self._client: KubeClient | None = None
        self._unavailable = False

    @classmethod
    def from_env(cls, kubeconfig: str | None = None) -> StatusReporter:
        return cls(os.environ.get(ENV_NAME), os.environ.get(ENV_NAMESPACE), kubeconfig)

    @property
    def enabled(self) -> bool:
        return bool(self.name and self.namespace) and not self._unavailable

    async def _get_client(self) -> KubeClient | None:
        if self._client is None and self.enabled:
            from aimd.kube.client import KubeClient

            try:
                self._client = await KubeClient.auto(self.kubeconfig)
            except Exception as error:
                log.warning("cannot report to the AIMModelCache, no API credentials: %s", error)
                self._unavailable = True
                return None
            # A report that cannot get through quickly is skipped; the next one says more.
            self._client.timeout = PATCH_TIMEOUT
            self._client.max_attempts = 2
        return self._client

    async def patch_status(self, status: dict[str, Any]) -> bool:
        """Sends ``{"status": status}``; says whether it got through. Never raises (except
        cancellation)."""
        client = await self._get_client()
        if client is None or self.name is None:
            return False
        from aimd.api.kinds import MODEL_CACHES

        try:
            async with asyncio.timeout(PATCH_TIMEOUT * 2):
                await client.patch(
                    MODEL_CACHES,
                    self.name,
                    {"status": status},
                    self.namespace,
                    subresource="status",
                )
        except Exception as error:
            log.warning(
                "could not report to AIMModelCache %s/%s: %s", self.namespace, self.name, error
            )
            return False
        return True

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
            self._client = None


class Throughput:
    """Bytes per second over the last few samples, so the number follows the current speed."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: list[tuple[float, int]] = []

    def sample(self, fetched: int) -> int:
        now = time.monotonic()
        self._samples.append((now, fetched))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.pop(0)
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return int((b1 - b0) / (t1 - t0)) if t1 > t0 else 0


def progress(total: int, downloaded: int, bytes_per_second: int) -> dict[str, int]:
    """``status.progress`` as the contract shapes it."""
    percentage = 100 if total <= 0 else min(100, downloaded * 100 // total)
    return {
        "totalBytes": total,
        "downloadedBytes": downloaded,
        "percentage": percentage,
        "bytesPerSecond": max(0, bytes_per_second),
    }


def progress_status(done: dict[str, int]) -> dict[str, Any]:
    """The status fields one progress report sets: ``progress`` and the ``displayPercentage``
    that ``kubectl get aimmc`` shows (AIM's name), in the same patch."""
    return {"progress": done, "displayPercentage": f"{done['percentage']}%"}


def failure_body(failure: DownloadFailed) -> dict[str, Any]:
    body: dict[str, Any] = {"reason": str(failure.reason), "message": failure.message}
    if failure.retry_after is not None:
        body["retryAfterSeconds"] = int(failure.retry_after)
    return body


def emit(result: dict[str, Any], termination_log: str | None) -> None:
    """One JSON line on stdout, and the same (or its reason and message, cut to the kubelet's
    limit) in the termination log when that file can be written."""
    line = json.dumps(result, separators=(",", ":"))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    if not termination_log:
        return
    if termination_log == DEFAULT_TERMINATION_LOG and not os.path.exists(termination_log):
        # Outside a pod nothing mounted it; as root, writing would create a file in /dev.
        return
    body = line
    if len(body.encode()) > TERMINATION_LIMIT:
        short = {k: result[k] for k in ("reason", "message") if k in result}
        short["message"] = str(short.get("message", ""))[: TERMINATION_LIMIT // 2]
        body = json.dumps(short, separators=(",", ":"))
    try:
        with open(termination_log, "w") as handle:
            handle.write(body)
    except OSError as error:
        log.debug("termination log %s not written: %s", termination_log, error)
