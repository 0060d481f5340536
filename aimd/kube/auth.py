"""Where the API server is and how to prove who we are: kubeconfig or in-cluster service account.

Parsing kubeconfig is left to kubernetes_asyncio's loaders (contexts, merged $KUBECONFIG paths,
token, tokenFile, client certificates, exec plugins, OIDC): they are the well-trodden part. What
we keep is the result — a host, a TLS context and an ``Authorization`` header — and the rule for
refreshing that header:

- exec plugins are re-run when the credential they returned expires, and after any 401;
- the in-cluster service-account token is re-read from its file when the file changes (the
  kubelet rotates projected tokens well before they expire) and after any 401.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class Credentials(Protocol):
    """How one client authenticates; shared by every request of that client. The client only
    reads the attributes, so any object that has them will do (a dataclass, a test double)."""

    @property
    def host(self) -> str: ...
    @property
    def ssl(self) -> ssl.SSLContext | bool: ...
    @property
    def server_hostname(self) -> str | None: ...
    @property
    def proxy(self) -> str | None: ...

    async def authorization(self) -> str | None:
        """The ``Authorization`` header value for the next request, refreshed if it expired."""
        ...

    async def invalidate(self) -> None:
        """The server answered 401: forget the cached credential so the next call reloads it."""
        ...


def make_ssl_context(
    ca_file: str | None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class KubeconfigCredentials:
    """Credentials from a kubeconfig context, through kubernetes_asyncio's KubeConfigLoader."""

    host: str
    ssl: ssl.SSLContext | bool
    server_hostname: str | None
    proxy: str | None
    _loader: Any
    _configuration: Any
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    async def load(
        cls, path: str | None = None, context: str | None = None
    ) -> KubeconfigCredentials:
        """Reads ``path``, else $KUBECONFIG (``:``-separated paths merge), else ~/.kube/config."""
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config import kube_config

        if path is None:
            path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        configuration = Configuration()
        loader = await kube_config.load_kube_config(
            config_file=path,
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
        host = str(configuration.host).rstrip("/")
        tls: ssl.SSLContext | bool = False
        if host.startswith("https"):
            tls = make_ssl_context(
                configuration.ssl_ca_cert,
                configuration.cert_file,
                configuration.key_file,
                bool(configuration.verify_ssl),
            )
        return cls(
            host=host,
            ssl=tls,
            server_hostname=getattr(configuration, "tls_server_name", None) or None,
            proxy=configuration.proxy or None,
            _loader=loader,
            _configuration=configuration,
        )

    def _uses_exec(self) -> bool:
        user = getattr(self._loader, "_user", None)
        return user is not None and "exec" in user

    async def authorization(self) -> str | None:
        expiry = getattr(self._loader, "exec_plugin_expiry", None)
        if self._uses_exec() and isinstance(expiry, datetime) and expiry <= datetime.now(UTC):
            await self._reload()
        token = self._configuration.api_key.get("BearerToken")
        return str(token) if token else None

    async def invalidate(self) -> None:
        if self._uses_exec() and hasattr(self._loader, "exec_plugin_expiry"):
            del self._loader.exec_plugin_expiry
        await self._reload()

    async def _reload(self) -> None:
        async with self._lock:
            await self._loader.load_and_set(self._configuration)


@dataclass
class ServiceAccountCredentials:
    """The pod's own service account: token and CA mounted by the kubelet."""

    host: str
    ssl: ssl.SSLContext | bool
    token_file: Path
    server_hostname: str | None = None
    proxy: str | None = None
    _token: str | None = None
    _stamp: tuple[int, int, int] | None = None

    @classmethod
    def load(cls, directory: Path = SERVICE_ACCOUNT_DIR) -> ServiceAccountCredentials:
        """Host from KUBERNETES_SERVICE_HOST/PORT, CA and token from ``directory``.

        The loader of kubernetes_asyncio validates the environment and files and gives the host.
        """
        from kubernetes_asyncio.client import Configuration
        from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

        configuration = Configuration()
        InClusterConfigLoader(
            token_filename=str(directory / "token"),
            cert_filename=str(directory / "ca.crt"),
            try_refresh_token=False,
        ).load_and_set(configuration)
        return cls(
            host=str(configuration.host),
            ssl=make_ssl_context(configuration.ssl_ca_cert),
            token_file=directory / "token",
        )

    async def authorization(self) -> str | None:
        # A stat per request is cheap next to the request, and sees a rotation at once.
        stat = self.token_file.stat()
        stamp = (stat.st_mtime_ns, stat.st_ino, stat.st_size)
        if self._token is None or stamp != self._stamp:
            self._token = self.token_file.read_text().strip()
            self._stamp = stamp
        return f"Bearer {self._token}"

    async def invalidate(self) -> None:
        self._token = None
