"""The one HTTP client that talks to the API server.

One ``aiohttp.ClientSession`` per client (one connection pool; watches hold a connection each),
orjson for bodies, credentials from :mod:`aimd.kube.auth`, typed errors from
:mod:`aimd.kube.errors`. Usage::

    async with await KubeClient.auto() as client:
        pod = await client.get(PODS, "web-0", "default")
        await client.patch(PODS, "web-0", {"metadata": {"labels": {"a": "b"}}}, "default")

Retries (inside :meth:`KubeClient.request`, so every verb helper has them):

- 429 Too Many Requests, any verb: API priority and fairness rejected the request before it ran,
  so repeating it is safe; we wait ``Retry-After`` (capped) when the server gives one.
- 401 Unauthorized, any verb, once: the credential is reloaded (exec plugin re-run, service
  account token re-read) and the request repeated.
- Connection refused / DNS failure, any verb: nothing reached the server.
- 500, 502, 503, 504, a dropped connection or a timeout, idempotent verbs only (GET, HEAD, PUT,
  DELETE): the request may have run, and repeating a POST or PATCH could apply it twice. A PUT
  carries a resourceVersion, so a repeated one that already ran fails with Conflict, which the
  caller handles like any other conflict.

Waits between attempts grow exponentially with full jitter. What is still failing after the last
attempt is raised: an :class:`~aimd.kube.errors.ApiError`, or ``aiohttp.ClientError`` /
``TimeoutError`` when no answer came at all. Streams (:meth:`KubeClient.stream`, used by watches)
are never retried here; the watch loop owns that policy.

Before each attempt, and before a stream opens (as client-go throttles a watch when it starts),
the request waits for the client's ``rate_limiter`` (:mod:`aimd.kube.throttle`; None: no limit);
the wait is observed in ``rest_client_rate_limiter_duration_seconds{verb,host}``. Then a write
(any verb but GET and HEAD) calls the client's ``fence``, which may refuse it by raising: the
manager fences its writers with the lease, so a replica whose lease may have expired cannot
write, however late its tasks are cancelled.

:meth:`KubeClient.with_rate_limiter` and :meth:`KubeClient.with_fence` make clients that share
this one's credentials and connection pool but throttle or fence on their own (controller-runtime
gives leader election and the event recorder their own client, so neither waits behind a flood
of reconcile writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import Counter, Histogram

from aimd.kube.auth import Credentials, KubeconfigCredentials, ServiceAccountCredentials
from aimd.kube.errors import (
    ApiError,
    ServerError,
    TooManyRequests,
    Unauthorized,
    error_from_status,
)
from aimd.kube.metrics import REST_CLIENT_RATE_LIMITER_DURATION, REST_CLIENT_REQUESTS
from aimd.kube.resources import Resource
from aimd.kube.throttle import RateLimiter

log = logging.getLogger(__name__)

PatchType = Literal["merge", "json", "strategic", "apply"]

PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    # Server-side apply takes YAML; JSON is YAML, so the body is still orjson's output.
    "apply": "application/apply-patch+yaml",
}

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
READ_METHODS = frozenset({"GET", "HEAD"})
LONG_THROTTLE = 1.0  # seconds of client-side wait worth a debug line (client-go says so too)
Fence = Callable[[], None]
RETRIABLE_SERVER_CODES = frozenset({500, 502, 503, 504})
USER_AGENT = "aimd/0.1 (python aiohttp)"


class KubeClient:
    """An authenticated client for one API server. Create with :meth:`auto`, :meth:`in_cluster`
    or :meth:`from_kubeconfig`; close with :meth:`close` or ``async with``.

    ``timeout`` bounds every non-streaming request (connect to last byte); ``max_attempts`` is
    how many times a retriable failure is tried in total; ``retry_base`` and ``retry_cap`` bound
    the jittered exponential wait between attempts, ``retry_after_cap`` the wait a 429 may ask for.
    ``rate_limiter`` and ``fence``: see the module docstring (both off by default).
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 60.0,
        max_attempts: int = 5,
        retry_base: float = 0.1,
        retry_cap: float = 5.0,
        retry_after_cap: float = 30.0,
        rate_limiter: RateLimiter | None = None,
        fence: Fence | None = None,
    ) -> None:
        self.credentials = credentials
        self.server = credentials.host.rstrip("/")
        self.host = urlsplit(self.server).netloc
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.retry_after_cap = retry_after_cap
        self.rate_limiter = rate_limiter
        self.fence = fence
        self._pool = _Pool()
        # Each request counts itself; looking the labelled child up every time was a visible
        # share of aimd's CPU at a thousand services, so the children are kept.
        self._counters: dict[tuple[str, str], Counter] = {}
        self._throttled: dict[str, Histogram] = {}

    # -- construction -------------------------------------------------------------------------

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Self:
        """A client for ``context`` (default: current-context) of the kubeconfig at ``path``
        (default: $KUBECONFIG, else ~/.kube/config)."""
        return cls(await KubeconfigCredentials.load(path, context))

    @classmethod
    async def in_cluster(cls) -> Self:
        """A client with the pod's service account; the token file is re-read when it rotates."""
        return cls(ServiceAccountCredentials.load())

    @classmethod
    async def auto(cls, kubeconfig: str | None = None) -> Self:
        """In-cluster when running in a pod and no kubeconfig was named, else from kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return await cls.in_cluster()
        return await cls.from_kubeconfig(kubeconfig)

    def with_rate_limiter(self, rate_limiter: RateLimiter | None) -> Self:
        """This client with its own rate limiter (None: unlimited); same pool and fence."""
        derived = copy.copy(self)
        derived.rate_limiter = rate_limiter
        return derived

    def with_fence(self, fence: Fence | None) -> Self:
        """This client with its own write fence; same pool and rate limiter."""
        derived = copy.copy(self)
        derived.fence = fence
        return derived

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._pool.session(self.credentials)

    async def close(self) -> None:
        """Closes the connection pool, which clients derived from this one share."""
        await self._pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- raw requests -------------------------------------------------------------------------

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        authorization = await self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type is not None:
            headers["Content-Type"] = content_type
        return headers

    def _request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.credentials.server_hostname:
            kwargs["server_hostname"] = self.credentials.server_hostname
        if self.credentials.proxy:
            kwargs["proxy"] = self.credentials.proxy
        return kwargs

    def _count(self, code: int | str, method: str) -> None:
        key = (str(code), method)
        counter = self._counters.get(key)
        if counter is None:
            counter = REST_CLIENT_REQUESTS.labels(code=key[0], method=method, host=self.host)
            self._counters[key] = counter
        counter.inc()

    async def _throttle(self, method: str) -> None:
        if self.rate_limiter is None:
            return
        waited = await self.rate_limiter.wait()
        histogram = self._throttled.get(method)
        if histogram is None:
            histogram = REST_CLIENT_RATE_LIMITER_DURATION.labels(method, self.host)
            self._throttled[method] = histogram
        histogram.observe(waited)
        if waited > LONG_THROTTLE:
            log.debug("waited %.1fs for the client-side rate limit before %s", waited, method)

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        data: bytes | None,
        content_type: str,
    ) -> Any:
        await self._throttle(method)
        if self.fence is not None and method not in READ_METHODS:
            self.fence()
        headers = await self._headers(content_type if data is not None else None)
        try:
            async with self.session.request(
                method,
                self.server + path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                **self._request_kwargs(),
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            self._count("<error>", method)
            raise
        self._count(response.status, method)
        decoded: Any = None
        if raw:
            if "json" in response.headers.get("Content-Type", "application/json"):
                try:
                    decoded = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    decoded = raw.decode(errors="replace")
            else:
                decoded = raw.decode(errors="replace")
        if response.status >= 400:
            raise error_from_status(response.status, decoded, response.headers)
        return decoded

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.retry_cap, self.retry_base * 2**attempt))

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """Sends one request (with the retries described in the module docstring) and returns
        the decoded JSON body, the text of a non-JSON body, or None for an empty one.

        ``body`` is serialised with orjson unless it is already ``bytes``.
        """
        method = method.upper()
        data: bytes | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send_once(method, path, params, data, content_type)
            except Unauthorized:
                if reauthenticated:
                    raise
                reauthenticated = True
                attempt -= 1
                await self.credentials.invalidate()
                continue
            except (ApiError, aiohttp.ClientError, TimeoutError) as error:
                delay = self.retry_delay(method, error, attempt)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    def retry_delay(self, method: str, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before retrying ``method`` after ``error`` on attempt ``attempt``
        (1-based), or None to give up and raise. The policy of the module docstring."""
        if attempt >= self.max_attempts:
            return None
        idempotent = method.upper() in IDEMPOTENT_METHODS
        if isinstance(error, TooManyRequests):
            if error.retry_after is not None:
                return min(error.retry_after, self.retry_after_cap)
            return self._backoff(attempt)
        if isinstance(error, ServerError):
            retriable = idempotent and error.status in RETRIABLE_SERVER_CODES
            return self._backoff(attempt) if retriable else None
        if isinstance(error, ApiError):
            return None
        if isinstance(
            error, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError
        ):
            return None  # retrying cannot fix a certificate
        if isinstance(error, aiohttp.ClientConnectorError):
            return self._backoff(attempt)  # connect failed: nothing was sent, even a POST
        if isinstance(
            error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
        ):
            return self._backoff(attempt) if idempotent else None
        return None

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        connect_timeout: float = 30.0,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A GET whose body is read as it arrives (watches). No total timeout: ``read_timeout``
        is the longest silence allowed between two chunks. A failure status is raised as an
        :class:`ApiError` before anything is yielded. Not retried."""
        await self._throttle("GET")
        headers = await self._headers(None)
        try:
            response = await self.session.get(
                self.server + path,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=connect_timeout, sock_read=read_timeout
                ),
                **self._request_kwargs(),
            )
        except (aiohttp.ClientError, TimeoutError):
            self._count("<error>", "GET")
            raise
        try:
            self._count(response.status, "GET")
            if response.status >= 400:
                raw = await response.read()
                try:
                    decoded: Any = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    decoded = raw.decode(errors="replace")
                if response.status == 401:
                    await self.credentials.invalidate()
                raise error_from_status(response.status, decoded, response.headers)
            yield response
        finally:
            # A stream left before its end cannot go back to the pool: close its connection.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    # -- verbs on resources -------------------------------------------------------------------

    async def get(
        self, resource: Resource, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", resource.path(namespace, name))
        return result

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """The List object (``items``, ``metadata.resourceVersion``, ``metadata.continue``).

        Without ``resource_version`` the read is consistent (served from etcd); ``"0"`` accepts
        any cached state. ``limit``/``continue_token`` page through large collections.
        """
        params: dict[str, str] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if limit is not None:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        result: dict[str, Any] = await self.request(
            "GET", resource.path(namespace), params=params or None
        )
        return result

    async def create(
        self, resource: Resource, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """POST ``body``; the namespace defaults to ``body.metadata.namespace``."""
        if namespace is None and resource.namespaced:
            namespace = body.get("metadata", {}).get("namespace")
        result: dict[str, Any] = await self.request("POST", resource.path(namespace), body=body)
        return result

    async def replace(
        self, resource: Resource, body: dict[str, Any], *, subresource: str | None = None
    ) -> dict[str, Any]:
        """PUT ``body`` at the name and namespace of its metadata. Send the resourceVersion you
        read to get Conflict instead of overwriting someone else's change."""
        metadata = body.get("metadata", {})
        namespace = metadata.get("namespace") if resource.namespaced else None
        result: dict[str, Any] = await self.request(
            "PUT", resource.path(namespace, metadata["name"], subresource), body=body
        )
        return result

    async def patch(
        self,
        resource: Resource,
        name: str,
        patch: Any,
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """PATCH with a merge (default), JSON, strategic-merge or server-side-apply patch.

        Apply needs ``field_manager``; ``force`` takes over fields other managers own.
        """
        params: dict[str, str] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force:
            params["force"] = "true"
        result: dict[str, Any] = await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            params=params or None,
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return result

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        preconditions: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        """DELETE; returns the object while finalizers still hold it, None once it is gone.

        ``propagation_policy`` is Foreground, Background or Orphan; ``preconditions`` may carry
        ``uid`` and ``resourceVersion`` so a recreated or changed object is not deleted (409).
        Raises NotFound when there is no such object.
        """
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = preconditions
        result: Any = await self.request("DELETE", resource.path(namespace, name), body=options)
        if isinstance(result, dict) and result.get("kind") != "Status":
            return result
        return None


class _Pool:
    """The one aiohttp session (connection pool) of a client and the clients derived from it,
    opened on first use."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self, credentials: Credentials) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl = credentials.ssl
            connector = aiohttp.TCPConnector(
                ssl=ssl if ssl is not False else True,
                limit=0,  # every watch holds a connection; the API server does the limiting
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
