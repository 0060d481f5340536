"""A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Used by the test suite and by `aimd dev`. The binaries are built from the pinned Go modules in
`tools/testenv/` (see `build.sh` there). kube-controller-manager runs only the garbage collector,
the namespace controller, PVC protection and the service-account controller: no Job controller, no
Deployment controller and no PV binder, so that tests drive Jobs and PVCs the way a kubelet would.

Everything here is synchronous and uses the standard library only, so a pytest session fixture can
start it before any event loop exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tools" / "testenv" / "build.sh"
KCM_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "persistentvolumeclaim-protection-controller",
    "serviceaccount-controller",
)
ADMIN_USER = "aimd-test-admin"
# The controller manager runs its controllers with its own credentials, and the garbage collector
# must watch every resource type, so it gets cluster-admin rather than the narrower default role.
KCM_USER = "system:kube-controller-manager"
# strict_rbac: every service account's request in the audit log (metadata only), for tests that
# compare what a component did with the rights it ships with.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": ["system:serviceaccounts"]}, {"level": "None"}],
}


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


class RequestFailed(ControlPlaneError):
    """The API server refused a request; `message` is its Status message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.message = message


def build_binaries() -> Path:
    """The directory holding etcd, kube-apiserver and kube-controller-manager.

    `AIMD_TESTENV_BIN` points at prebuilt binaries; otherwise the build script builds them once
    into its cache and reuses them afterwards.
    """
    prebuilt = os.environ.get("AIMD_TESTENV_BIN")
    if prebuilt:
        return Path(prebuilt)
    if not BUILD_SCRIPT.exists():
        raise ControlPlaneError(f"{BUILD_SCRIPT} not found: run from a checkout of aimd")
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], check=False, stdout=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"building the control plane failed (exit {result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_service_account_key(path: Path) -> None:
    """An RSA key with which kube-apiserver signs service-account tokens (TokenRequest)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


@dataclass
class ControlPlane:
    """One running control plane in `workdir`; `start()` it, `stop()` it when done."""

    binaries: Path
    workdir: Path
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    kcm_token: str = field(default_factory=lambda: secrets.token_hex(16))
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    kcm_port: int = field(default_factory=free_port)
    # As production clusters check RBAC: owner references need the owner's finalizers
    # (OwnerReferencesPermissionEnforcement), and service accounts' requests are audited.
    strict_rbac: bool = False
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        """Cluster-admin credentials (a static token in group system:masters)."""
        return self.workdir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def audit_log(self) -> Path:
        """JSON lines, one per service account request (with ``strict_rbac``)."""
        return self.log_dir / "audit.log"

    def start(self, crds: Iterable[dict[str, Any]] = ()) -> None:
        """etcd, then kube-apiserver, then the CRDs (Established), then kube-controller-manager.

        The CRDs go in before the controller manager because its garbage collector learns the
        resource types it watches from discovery, and would only see new ones on a later resync.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfigs()
            for crd in crds:
                self.install_crd(crd)
            self._start_controller_manager()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stops the processes in reverse order of start; SIGTERM, then SIGKILL after 10 s."""
        for name in reversed(list(self.processes)):
            self._stop_process(name)
        for log in self._logs.values():
            log.close()
        self._logs.clear()

    def restart_apiserver(self) -> None:
        """Stops kube-apiserver and starts it again on the same port; returns once it is ready."""
        self._stop_process("kube-apiserver")
        self._start_apiserver()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- processes -----------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self._logs.get(name)
        if log is None or log.closed:
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs[name] = log
        self.processes[name] = subprocess.Popen(
            [str(self.binaries / name), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _stop_process(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn(
            "etcd",
            [
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_endpoint}",
                f"--advertise-client-urls={self.etcd_endpoint}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok(f"{self.etcd_endpoint}/health"))

    def _start_apiserver(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        sa_key = self.workdir / "sa.key"
        if not sa_key.exists():
            _write_service_account_key(sa_key)
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(
            f'{self.token},{ADMIN_USER},1,"system:masters"\n'
            f'{self.kcm_token},{KCM_USER},2,"system:masters"\n'
        )
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={self.etcd_endpoint}",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={certs}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-account-issuer={self.server}",
                "--service-cluster-ip-range=10.0.0.0/16",
                "--disable-admission-plugins=ServiceAccount",
                "--enable-priority-and-fairness=false",
                "--v=1",
                *self._strict_rbac_flags(),
            ],
        )
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"))

    def _strict_rbac_flags(self) -> list[str]:
        if not self.strict_rbac:
            return []
        policy = self.workdir / "audit-policy.json"
        policy.write_text(json.dumps(AUDIT_POLICY))
        return [
            "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
        ]

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                f"--controllers={','.join(KCM_CONTROLLERS)}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={self.kcm_port}",
                "--use-service-account-credentials=false",
                "--v=1",
            ],
        )
        self._wait("kube-controller-manager", self._controller_manager_running)

    def _controller_manager_running(self) -> bool:
        """Healthy once its own health endpoint answers (it needs no authentication)."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed and throwaway
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{self.kcm_port}/healthz", context=context, timeout=2
            ) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _write_kubeconfigs(self) -> None:
        write_kubeconfig(self.kubeconfig, self.server, self.ca_file, ADMIN_USER, self.token)
        write_kubeconfig(
            self.workdir / "kcm.kubeconfig", self.server, self.ca_file, KCM_USER, self.kcm_token
        )

    # -- API ---------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One authenticated request as cluster admin; raises RequestFailed when refused.

        A PATCH is a JSON merge patch.
        """
        return api_request(self.server, self.token, self.ca_file, method, path, body)

    def install_crd(self, crd: dict[str, Any]) -> None:
        """Creates (or replaces) one CRD and waits until the API server serves it."""
        install_crd(self.api, crd, self._wait)

    def _api_ok(self, path: str) -> bool:
        if not self.ca_file.exists():
            return False
        try:
            self.api("GET", path)
        except (OSError, ControlPlaneError, json.JSONDecodeError):
            return False
        return True

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def _wait(self, what: str, ready: Any, timeout: float = 90.0) -> None:
        wait_for(what, ready, self.processes.get(what), self.log_tail, timeout)


def install_crd(
    api: Callable[..., Any], crd: dict[str, Any], wait: Callable[[str, Callable[[], bool]], None]
) -> None:
    """Creates (or replaces) one CRD through `api` and `wait`s until it is Established."""
    name = crd["metadata"]["name"]
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    try:
        api("POST", path, crd)
    except RequestFailed as error:
        if error.code != 409:
            raise
        current = api("GET", f"{path}/{name}")
        replacement = {**crd, "metadata": {**crd["metadata"], **current["metadata"]}}
        api("PUT", f"{path}/{name}", replacement)

    def established() -> bool:
        conditions = (api("GET", f"{path}/{name}").get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait(f"CRD {name}", established)


def write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> None:
    """A kubeconfig for one static-token user of the cluster at `server`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "aimd-test",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "aimd-test", "context": {"cluster": "aimd-test", "user": user}}],
        "current-context": "aimd-test",
    }
    path.write_text(json.dumps(config, indent=2))


def api_request(
    server: str, token: str, ca_file: Path, method: str, path: str, body: Any = None
) -> Any:
    """One request with a bearer token; raises RequestFailed when refused. PATCH is a merge
    patch; a JSON answer is decoded, any other is returned as text."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server}{path}",
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            ),
        },
    )
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        response = urllib.request.urlopen(request, context=context, timeout=30)
    except urllib.error.HTTPError as error:
        text: Any = error.read().decode(errors="replace")
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            text = json.loads(text).get("message", text)
        raise RequestFailed(error.code, str(text)) from None
    with response:
        payload = response.read()
        if response.headers.get_content_type() != "application/json":
            return payload.decode()
        return json.loads(payload or b"null")


def wait_for(
    what: str,
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes] | None,
    log_tail: Callable[[str], str],
    timeout: float = 90.0,
) -> None:
    """Polls `ready` until it holds; fails at once with the log's tail if `process` exits, and
    with the same tail when the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ControlPlaneError(f"{what} exited with {process.returncode}:\n{log_tail(what)}")
        if ready():
            return
        time.sleep(0.2)
    raise ControlPlaneError(f"{what} not ready after {timeout:.0f}s:\n{log_tail(what)}")


def remove_workdir(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
