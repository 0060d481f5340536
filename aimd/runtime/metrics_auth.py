"""``/metrics`` behind the API server's authentication, as kubebuilder's v4 scaffold serves it
(controller-runtime's ``WithAuthenticationAndAuthorization``).

With ``--metrics-secure`` (the default) the metrics server speaks HTTPS and answers only callers
the API server vouches for:

- no bearer token, or one a TokenReview does not accept: 401;
- a token whose user a SubjectAccessReview does not allow to ``get`` the non-resource URL
  ``/metrics`` (the ClusterRole aimd-metrics-reader grants it): 403;
- otherwise the metrics.

Decisions are cached per token for ``allowed_ttl`` (60 s) or ``denied_ttl`` (10 s), so a scrape
every 30 s costs two API calls a minute, not two per scrape, and a revoked token or binding
stops working within a minute. A caller that cannot be checked (the API server unreachable) gets
503 and nothing is cached.

The serving certificate is ``--metrics-cert-path``/``--metrics-cert-name``/``--metrics-cert-key``
(e.g. a cert-manager Secret), else one made at start-up, self-signed, and held in memory and a
private temporary directory only: a scraper checks who aimd is through the Service it reaches,
as kubebuilder's ServiceMonitor does (``insecureSkipVerify``), unless given a real certificate.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import socket
import ssl
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from aimd.api.resource import Resource
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError
from aimd.kube.resources import SUBJECT_ACCESS_REVIEWS
from aimd.runtime.health import metrics_app
from aimd.settings import Settings

log = logging.getLogger(__name__)

TOKEN_REVIEWS = Resource(
    "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", namespaced=False
)
PATH = "/metrics"


@dataclass
class Reviewer:
    """Asks the API server who a token is and whether they may get ``path``; remembers."""

    client: KubeClient
    allowed_ttl: float = 60.0
    denied_ttl: float = 10.0
    max_entries: int = 1024
    clock: Callable[[], float] = time.monotonic
    _decisions: OrderedDict[str, tuple[float, int]] = field(default_factory=OrderedDict)

    async def status(self, token: str | None, path: str = PATH) -> int:
        """200, 401 or 403 for a caller presenting ``token``."""
        if not token:
            return 401
        key = hashlib.sha256(f"{path}\0{token}".encode()).hexdigest()
        cached = self._decisions.get(key)
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        decision = await self._review(token, path)
        ttl = self.allowed_ttl if decision == 200 else self.denied_ttl
        self._decisions[key] = (self.clock() + ttl, decision)
        self._decisions.move_to_end(key)
        while len(self._decisions) > self.max_entries:
            self._decisions.popitem(last=False)
        return decision

    async def _review(self, token: str, path: str) -> int:
        review = await self.client.create(
            TOKEN_REVIEWS,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            },
        )
        status = review.get("status") or {}
        if not status.get("authenticated"):
            return 401
        user = status.get("user") or {}
        access = await self.client.create(
            SUBJECT_ACCESS_REVIEWS,
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user.get("username", ""),
                    "uid": user.get("uid", ""),
                    "groups": user.get("groups") or [],
                    "extra": user.get("extra") or {},
                    "nonResourceAttributes": {"path": path, "verb": "get"},
                },
            },
        )
        return 200 if (access.get("status") or {}).get("allowed") else 403


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def authenticated(reviewer: Reviewer) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            status = await reviewer.status(_bearer(request), request.path)
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning("metrics: cannot check a caller with the API server: %s", error)
            return web.Response(status=503, text="cannot check the caller now\n")
        if status == 401:
            return web.Response(status=401, text="Unauthorized\n")
        if status == 403:
            return web.Response(status=403, text=f"Forbidden: get {request.path}\n")
        return await handler(request)

    return check


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The server's TLS: the configured certificate, else a self-signed one."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.metrics_cert_path:
        directory = Path(settings.metrics_cert_path)
        context.load_cert_chain(
            directory / settings.metrics_cert_name, directory / settings.metrics_cert_key
        )
        return context
    with tempfile.TemporaryDirectory(prefix="aimd-metrics-") as scratch:
        cert, key = Path(scratch) / "tls.crt", Path(scratch) / "tls.key"
        cert_pem, key_pem = self_signed(socket.gethostname())
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)
    return context


def self_signed(hostname: str) -> tuple[bytes, bytes]:
    """A P-256 certificate for ``hostname`` and localhost, valid for a year (PEM cert, key).

    ``cryptography`` writes it: the one well-kept Python library for X.509."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aimd-metrics")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(hostname),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def metrics_server(
    client: KubeClient, settings: Settings
) -> tuple[web.Application, ssl.SSLContext | None]:
    """The metrics app and its TLS: checked and encrypted with ``--metrics-secure``, plain
    HTTP for local use without."""
    app = metrics_app()
    if not settings.metrics_secure:
        return app, None
    app.middlewares.append(authenticated(Reviewer(client)))
    log.info(
        "metrics: HTTPS, callers checked by TokenReview and SubjectAccessReview (get %s)%s",
        PATH,
        "" if settings.metrics_cert_path else "; self-signed certificate",
    )
    return app, tls_context(settings)
