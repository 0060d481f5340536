"""The controller's settings: one frozen object, from flags, else environment, else defaults.

Flag names follow kubebuilder's scaffolding (``--metrics-bind-address``, ``--leader-elect``, ...)
so manifests written for Go operators carry over. Every flag can also come from the environment
as ``AIMD_<FLAG_NAME>`` (``AIMD_LEADER_ELECT=true``); a flag on the command line wins. The
leader-election namespace defaults to ``$POD_NAMESPACE`` and the identity to ``$POD_NAME``
(both set through the downward API in the manifests).

Bind addresses are Go-style: ``:8443`` is every interface, ``127.0.0.1:8443`` one, ``0``
disables the server. ``/metrics`` is served as kubebuilder's v4 scaffold serves it: HTTPS with
TokenReview and SubjectAccessReview (``--metrics-secure``, the default); ``--metrics-secure=false``
serves plain HTTP for local use. Lists (``--namespaces``, ``--allowed-endpoints``, ...) are
comma-separated, on the command line and in the environment alike.

The client-side rate limit takes kube-controller-manager's flag names (``--kube-api-qps``,
``--kube-api-burst``) and controller-runtime's defaults (20 requests a second, bursts of 30);
``--kube-api-qps`` of 0 or less switches the limiter off.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from aimd import logs

ENV_PREFIX = "AIMD_"
VOLUME_ACCESS_MODES = ("ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The public Hugging Face Hub and AWS: where a model cache may send its credentials unless an
# admin allows more (docs/security.md).
DEFAULT_ALLOWED_ENDPOINTS = ("https://huggingface.co", "https://*.amazonaws.com")


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    metrics_bind_address: str = ":8443"
    metrics_secure: bool = True
    metrics_cert_path: str | None = None  # a directory; None: a self-signed certificate
    metrics_cert_name: str = "tls.crt"
    metrics_cert_key: str = "tls.key"
    health_probe_bind_address: str = ":8081"
    leader_elect: bool = False
    leader_election_namespace: str | None = None
    leader_election_id: str = "aimd-leader"
    leader_election_release_on_cancel: bool = True
    leader_election_identity: str = field(
        default_factory=lambda: f"{socket.gethostname()}_{uuid.uuid4()}"
    )
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    workers: int = 8
    watch_stall_timeout: float = 300.0
    shutdown_grace: float = 30.0
    log_level: str = "info"
    log_format: str = "text"
    kube_api_qps: float = 20.0  # <= 0: no client-side limit
    kube_api_burst: int = 30
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    image: str | None = None  # this controller's own image: the default for download Jobs
    max_concurrent_downloads: int = 0  # controller-wide cap on running downloads; 0: no cap
    volume_access_mode: str = "ReadWriteMany"  # of every model cache's PVC
    allowed_download_images: tuple[str, ...] = ()  # besides ``image``, always allowed
    allowed_endpoints: tuple[str, ...] = DEFAULT_ALLOWED_ENDPOINTS
    require_secret_consent: bool = False

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from parsed flags (see :func:`add_arguments`) and the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for item in fields(cls):
            flag_value = getattr(args, item.name, None)
            if flag_value is not None:
                values[item.name] = flag_value
                continue
            raw = env.get(ENV_PREFIX + item.name.upper())
            if raw is not None:
                values[item.name] = _parse(item.name, raw)
        if "leader_election_namespace" not in values and env.get("POD_NAMESPACE"):
            values["leader_election_namespace"] = env["POD_NAMESPACE"]
        if "leader_election_identity" not in values and env.get("POD_NAME"):
            values["leader_election_identity"] = f"{env['POD_NAME']}_{uuid.uuid4()}"
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    @classmethod
    def parse(cls, argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return cls.from_args(parser.parse_args(list(argv)), environ)

    def validate(self) -> None:
        if self.leader_elect and not self.leader_election_namespace:
            raise ValueError("--leader-elect needs --leader-election-namespace (or $POD_NAMESPACE)")
        if not self.lease_duration > self.renew_deadline > self.retry_period * 1.2:
            raise ValueError(
                "lease durations must satisfy lease-duration > renew-deadline > retry-period*1.2"
            )
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.volume_access_mode not in VOLUME_ACCESS_MODES:
            raise ValueError(
                f"--volume-access-mode must be one of {', '.join(VOLUME_ACCESS_MODES)}, "
                f"not {self.volume_access_mode!r}"
            )
        if self.max_concurrent_downloads < 0:
            raise ValueError("--max-concurrent-downloads must be 0 (no cap) or more")
        if self.kube_api_qps > 0 and self.kube_api_burst < 1:
            raise ValueError("--kube-api-burst must be at least 1 while --kube-api-qps is set")
        if self.log_format not in logs.FORMATS:
            raise ValueError(f"--log-format must be one of {', '.join(logs.FORMATS)}")
        if self.log_level.lower() not in logs.LEVELS:
            raise ValueError(f"--log-level must be one of {', '.join(logs.LEVELS)}")
        for namespace in self.namespaces:
            if not DNS_LABEL.match(namespace):
                raise ValueError(f"--namespaces: {namespace!r} is not a namespace name")
        for address in (self.metrics_bind_address, self.health_probe_bind_address):
            parse_bind_address(address)


_BOOLEANS = {
    "leader_elect",
    "leader_election_release_on_cancel",
    "metrics_secure",
    "require_secret_consent",
}
_FLOATS = {
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "watch_stall_timeout",
    "shutdown_grace",
}
_INTS = {"workers", "kube_api_burst", "max_concurrent_downloads"}
_NUMBERS = {"kube_api_qps"}
_LISTS = {"allowed_download_images", "allowed_endpoints"}


def _parse(name: str, raw: str) -> object:
    if name in _BOOLEANS:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if name in _FLOATS:
        return _duration(raw)
    if name in _INTS:
        return int(raw)
    if name in _NUMBERS:
        return float(raw)
    if name == "namespaces":
        return _namespaces(raw)
    if name in _LISTS:
        return _namespaces(raw)
    return raw


def _namespaces(raw: str) -> tuple[str, ...]:
    """``"a, b,,c"`` → ``("a", "b", "c")``: comma-separated, blanks ignored, order kept; the
    form of every list flag (a ConfigMap value or a command line alike)."""
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def _duration(raw: str) -> float:
    """Seconds, as a number or Go-style ``15s`` / ``2m`` / ``500ms``."""
    text = raw.strip()
    for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * scale
    return float(text)


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on", "")


def parse_bind_address(address: str) -> tuple[str, int] | None:
    """``":8080"`` → ``("0.0.0.0", 8080)``; ``"0"`` → None (disabled)."""
    if address in ("0", ""):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"bind address {address!r} is not host:port")
    return (host.strip("[]") or "0.0.0.0", int(port))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The controller's flags; unset flags stay None so the environment can fill them."""
    add = parser.add_argument
    add("--kubeconfig", help="kubeconfig path (default: in-cluster, else $KUBECONFIG)")
    add("--metrics-bind-address", help="address of /metrics (default :8443; 0 disables)")
    add(
        "--metrics-secure",
        nargs="?",
        const=True,
        type=_bool,
        help="serve /metrics over HTTPS to callers a TokenReview and a SubjectAccessReview "
        "(get /metrics) allow (default true; false: plain HTTP, for local use)",
    )
    add(
        "--metrics-cert-path",
        help="directory holding the metrics server's certificate (default: self-signed at start)",
    )
    add("--metrics-cert-name", help="certificate file in --metrics-cert-path (default tls.crt)")
    add("--metrics-cert-key", help="key file in --metrics-cert-path (default tls.key)")
    add("--health-probe-bind-address", help="address of /healthz, /readyz (default :8081)")
    add(
        "--leader-elect",
        nargs="?",
        const=True,
        type=_bool,
        help="elect a leader through a Lease so only one replica writes",
    )
    add("--leader-election-namespace", help="namespace of the Lease (default $POD_NAMESPACE)")
    add("--leader-election-id", help="name of the Lease (default aimd-leader)")
    add(
        "--leader-election-release-on-cancel",
        type=_bool,
        help="give the lease up on shutdown so a standby takes over at once (default true)",
    )
    add("--leader-election-identity", help="this replica's identity (default $POD_NAME_<uuid>)")
    add("--lease-duration", type=_duration, help="seconds a standby waits (default 15)")
    add("--renew-deadline", type=_duration, help="seconds the leader retries renewal (default 10)")
    add("--retry-period", type=_duration, help="seconds between election attempts (default 2)")
    add("--workers", type=int, help="concurrent reconciles per controller (default 8)")
    add(
        "--watch-stall-timeout",
        type=_duration,
        help="seconds without news from a watch before /healthz fails (default 300)",
    )
    add(
        "--shutdown-grace",
        type=_duration,
        help="seconds SIGTERM waits for running reconciles (default 30)",
    )
    add("--log-level", help="debug, info, warning or error (default info)")
    add("--log-format", choices=logs.FORMATS, help="text (default) or json, one object a line")
    add(
        "--kube-api-qps",
        type=float,
        help="requests per second to the API server, client-side (default 20; <= 0: unlimited)",
    )
    add("--kube-api-burst", type=int, help="requests allowed at once above the QPS (default 30)")
    add(
        "--namespaces",
        type=_namespaces,
        help="watch only these namespaces, comma-separated (default: every namespace)",
    )
    add("--image", help="this controller's image, run by download Jobs (env AIMD_IMAGE)")
    add(
        "--volume-access-mode",
        help="access mode of every model cache's volume (default ReadWriteMany, which shares one "
        "volume across nodes; ReadWriteOnce where the storage offers no more, e.g. one node)",
    )
    add(
        "--max-concurrent-downloads",
        type=int,
        help="download Jobs running at once, cluster-wide; the rest wait their turn "
        "(default 0: no cap)",
    )
    add(
        "--allowed-download-images",
        type=_namespaces,
        help="images a model cache may name in spec.downloadImage, besides --image",
    )
    add(
        "--allowed-endpoints",
        type=_namespaces,
        help="where spec.env may point HF_ENDPOINT, AWS_ENDPOINT_URL* and proxies "
        f"(default {','.join(DEFAULT_ALLOWED_ENDPOINTS)})",
    )
    add(
        "--require-secret-consent",
        nargs="?",
        const=True,
        type=_bool,
        help="downloads read only the Secrets their namespace's Role aimd-download-credentials "
        "names, instead of mounting any Secret spec.env references (default false)",
    )
