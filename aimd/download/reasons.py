"""Every way a probe or download can fail: a stable CamelCase reason (one of the API's, in
:mod:`aimd.api.reasons`) and a distinct exit code.

The controller turns the reason into the AIMModelCache's condition reason and may also read the
exit code of the Job's container, so both are part of the contract and never change meaning.
"""

from __future__ import annotations

from aimd.api.reasons import Reason

__all__ = ["EXIT_CODES", "REASON_BY_EXIT_CODE", "DownloadFailed", "Reason"]


EXIT_CODES: dict[Reason, int] = {
    # 1 is what Python exits with on an uncaught exception; 2 is argparse's usage error.
    Reason.INTERNAL_ERROR: 1,
    Reason.SOURCE_NOT_FOUND: 10,
    Reason.AUTH_FAILED: 11,
    Reason.RATE_LIMITED: 12,
    Reason.STORAGE_FULL: 13,
    Reason.VERIFICATION_FAILED: 14,
    Reason.STALLED: 15,
    Reason.NETWORK_ERROR: 16,
    Reason.INVALID_SOURCE: 17,
    # Stopped by SIGTERM or SIGINT (the pod deleted or evicted, a person's Ctrl-C): not a
    # failure of the source; what was fetched is on disk and the next attempt resumes it.
    # 143 is 128 + SIGTERM, what a shell and the kubelet show for a process the signal ended.
    Reason.TERMINATED: 143,
}

REASON_BY_EXIT_CODE: dict[int, Reason] = {code: reason for reason, code in EXIT_CODES.items()}


class DownloadFailed(Exception):
    """An attempt failed for a known reason; ``message`` tells a person what to fix.

    ``retry_after`` is the source's own hint (seconds) for when trying again may succeed; it is
    set for :attr:`Reason.RATE_LIMITED` when the source sent ``Retry-After``.
    """

    def __init__(self, reason: Reason, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.retry_after = retry_after

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]
