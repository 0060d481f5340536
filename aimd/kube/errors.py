"""Typed errors made from the API server's Status objects.

Callers write ``except NotFound:`` or ``except Conflict:`` instead of comparing integers. The
class is chosen by HTTP code first and by the Status ``reason`` where one code means two things
(409 is both a stale resourceVersion, ``Conflict``, and a name that is taken, ``AlreadyExists``;
they need different handling, so neither is a subclass of the other).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """The API server answered with a failure Status (or a body we could not read as one)."""

    status: int
    reason: str
    message: str
    details: dict[str, Any] | None
    retry_after: float | None  # the server's hint (Retry-After), sent with 429s and some 5xx

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after

    @property
    def causes(self) -> list[dict[str, Any]]:
        """``details.causes``: which field was invalid, or why a resourceVersion was refused."""
        causes = (self.details or {}).get("causes")
        return list(causes) if isinstance(causes, list) else []


class BadRequest(ApiError):
    """400: the request itself was malformed (bad selector, bad patch)."""


class Unauthorized(ApiError):
    """401: credentials missing, expired or rejected."""


class Forbidden(ApiError):
    """403: authenticated but RBAC does not allow it (or the namespace is terminating)."""


class NotFound(ApiError):
    """404: no such object, or no such resource type (CRD not installed)."""


class MethodNotAllowed(ApiError):
    """405: the verb is not supported on that resource."""


class Conflict(ApiError):
    """409 with reason Conflict: the resourceVersion we sent is stale; re-read and retry."""


class AlreadyExists(ApiError):
    """409 with reason AlreadyExists: an object with that name exists already."""


class Gone(ApiError):
    """410: the resourceVersion asked for is older than what the server still remembers."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rule, immutable field)."""


class TooManyRequests(ApiError):
    """429: throttled by API priority and fairness; ``retry_after`` is the server's hint."""


class ServerError(ApiError):
    """5xx: the server (or etcd behind it) failed; usually worth retrying later."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    410: Gone,
    422: Invalid,
}


def _retry_after(headers: Mapping[str, str] | None, details: dict[str, Any] | None) -> float | None:
    """Seconds from the Retry-After header, else from ``details.retryAfterSeconds``."""
    raw = headers.get("Retry-After") if headers is not None else None
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            pass
    if details and isinstance(details.get("retryAfterSeconds"), int | float):
        return float(details["retryAfterSeconds"])
    return None


def error_from_status(code: int, body: Any, headers: Mapping[str, str] | None = None) -> ApiError:
    """The error for an HTTP failure ``code`` whose decoded body is ``body``.

    ``body`` is a Status object when the API server produced the failure; proxies and load
    balancers may send anything else, which becomes a plain message.
    """
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or "")
        raw_details = body.get("details")
        details = raw_details if isinstance(raw_details, dict) else None
        code = int(body.get("code") or code)
    else:
        reason = ""
        message = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
        details = None
    if code == 409:
        cls: type[ApiError] = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif code == 429:
        return TooManyRequests(code, reason, message, details, _retry_after(headers, details))
    elif code >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(code, ApiError)
    return cls(code, reason, message, details)
