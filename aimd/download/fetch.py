"""Ranged GETs in worker threads, so the bytes of a download never pass through the event loop.

Why threads: profiling ``aimd download`` (py-spy, 2 GiB from a local S3 server) showed one
Python thread doing all the per-byte work. aiohttp handed every socket read (at most 256 KiB)
through its parser and stream buffer, re-armed a read timer per read and joined the pieces into
1 MiB blocks, and the loop then ``pwrite``-d each block itself, while the hashing threads waited
for the same GIL: 5 CPU s/GB and 136 MB/s where a plain parallel GET reaches 1.6 GB/s. Here
each worker thread reads a body with ``readinto`` into its own buffer (the kernel's copy is the
only one), and its caller writes and hashes from that same memory; ``recv``, ``pwrite`` and
hashlib release the GIL, so the threads run on every core and the loop only schedules.

This is HTTP/1.1 over :mod:`http.client`: keep-alive connections per thread and host, TLS with
``AWS_CA_BUNDLE`` when set, ``HTTP(S)_PROXY``/``NO_PROXY`` from the environment (CONNECT tunnels
for https), no content decoding (sizes and digests are of the stored bytes). Redirects are not
followed here: the transfer engine follows them so it can reuse a redirect's target.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import threading
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

CONNECT_TIMEOUT = 10.0
# How much of an error body is kept for the message; the rest is not read.
ERROR_BODY = 4096
# Reads of a body without a length (chunked): http.client fills the whole buffer first.
UNSIZED_READ = 64 * 1024

Connection = http.client.HTTPConnection


class Aborted(Exception):
    """The transfer is stopping: the request was cut short on purpose."""


@dataclass(frozen=True)
class Answer:
    """A response that is not the body asked for: a redirect, a refusal, an error."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


class Http:
    """Blocking HTTP for worker threads; :meth:`abort` (from any thread) cuts every request."""

    def __init__(self, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        ca_bundle = os.environ.get("AWS_CA_BUNDLE")
        self._tls = ssl.create_default_context(cafile=ca_bundle or None)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self.aborted = threading.Event()

    def get(self, url: str, headers: Mapping[str, str]) -> Exchange:
        """Sends a GET and returns the response with its body unread. Raises :class:`OSError`
        or :class:`http.client.HTTPException` on network errors (the connection is closed), or
        :class:`Aborted`."""
        if self.aborted.is_set():
            raise Aborted
        route = _route(url)
        connection = self._connection(route)
        try:
            if connection.sock is None:
                connection.connect()
                if connection.sock is not None:
                    connection.sock.settimeout(self.read_timeout)
                    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.request("GET", route.target, headers={**headers, **route.headers})
            return Exchange(connection, connection.getresponse())
        except BaseException:
            connection.close()
            if self.aborted.is_set():
                raise Aborted from None
            raise

    def abort(self) -> None:
        """Stops every request now: blocked reads return at once (the sockets are shut down)."""
        self.aborted.set()
        with self._lock:
            connections = list(self._open)
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            connections, self._open = list(self._open), set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.close()

    def _connection(self, route: _Route) -> Connection:
        """This thread's connection for the route: one per thread and (scheme, host, proxy), so
        a connection is only ever used by one request at a time."""
        pool: dict[tuple[str, str, int, bool], Connection] | None = getattr(
            self._local, "pool", None
        )
        if pool is None:
            pool = self._local.pool = {}
        connection = pool.get(route.key)
        if connection is None:
            host, port, tls = route.key[1], route.key[2], route.key[3]
            if tls:
                connection = http.client.HTTPSConnection(
                    host, port, timeout=CONNECT_TIMEOUT, context=self._tls
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT)
            if route.tunnel is not None:
                connection.set_tunnel(*route.tunnel, headers=dict(route.tunnel_headers))
            pool[route.key] = connection
            with self._lock:
                self._open.add(connection)
        return connection


@dataclass(frozen=True)
class Exchange:
    """One request's connection and response; :meth:`release` when done with the body."""

    connection: Connection
    response: http.client.HTTPResponse

    def read_into(self, view: memoryview) -> int:
        """Reads body bytes into ``view`` as soon as some are there (at most one read from the
        socket), so the caller sees a slow source's every read (stall detection follows it
        closely); 0 at the end of the body. (``HTTPResponse.readinto`` waits until ``view`` is
        full: at a few KB/s that is minutes per MiB.)"""
        response = self.response
        if response.chunked or response.length is None:
            return response.readinto(view[:UNSIZED_READ])
        view = view[: response.length]
        if not view:
            return 0
        received = response.fp.readinto1(view)
        response.length -= received
        if not received or not response.length:
            # What HTTPResponse does at the end of a body: the connection is free again.
            response.close()
        return received

    def answer(self) -> Answer:
        """The status, headers and the start of the body of a response that is not used."""
        response = self.response
        headers = {name.lower(): value for name, value in response.getheaders()}
        body = b""
        if response.length is not None and response.length <= ERROR_BODY:
            with contextlib.suppress(OSError, http.client.HTTPException):
                body = response.read()
        self.release()
        return Answer(response.status, headers, body)

    def release(self) -> None:
        """The connection stays open for the next request only if the body was read to its
        end; otherwise it is closed (and reopened by the next request)."""
        if not self.response.isclosed():
            self.response.close()
            self.connection.close()


@dataclass(frozen=True)
class _Route:
    """How to reach a URL: the connection's key (scheme, host, port, TLS), the request
    target, and a tunnel or headers when a proxy stands between."""

    key: tuple[str, str, int, bool]
    target: str
    headers: Mapping[str, str]
    tunnel: tuple[str, int] | None = None
    tunnel_headers: Mapping[str, str] = field(default_factory=dict)


def _route(url: str) -> _Route:
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts.scheme, host)
    if proxy is None:
        return _Route((parts.scheme, host, port, tls), path, {})
    via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    credentials: dict[str, str] = {}
    if via.username:
        secret = f"{unquote(via.username)}:{unquote(via.password or '')}"
        credentials["Proxy-Authorization"] = "Basic " + b64encode(secret.encode()).decode()
    proxy_host, proxy_port = via.hostname or "", via.port or 8080
    if tls:
        # CONNECT through the proxy, then TLS with the origin inside the tunnel.
        return _Route(
            (f"tunnel:{host}:{port}", proxy_host, proxy_port, True),
            path,
            {},
            (host, port),
            credentials,
        )
    return _Route(("proxy", proxy_host, proxy_port, False), url, credentials)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme``, unless ``NO_PROXY`` covers ``host``."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy
