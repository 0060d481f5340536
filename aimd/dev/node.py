"""A real single-node Kubernetes cluster on this machine, for the real-node suite and
`aimd dev --real-node`.

Unlike `ControlPlane` (no node: tests and `LocalKubelet` play the kubelet, the Job controller and
the PV binder), this runs them all: etcd, kube-apiserver (Node+RBAC authorization, ServiceAccount
admission on), kube-controller-manager with every default controller, kube-scheduler, containerd,
kubelet and kube-proxy. Pods run for real, from images built here (no registry is reachable).

Everything sits in a network namespace of its own (`NodeNetwork`): the node IP, the pod and
Service ranges, kube-proxy's rules, and whatever servers the pods download from. The node's
processes also share one private mount namespace, held open by a `sleep` process, with fresh
tmpfs on /run, /var/lib and /var/log: the paths kubelet and containerd hard-code (device-plugin
sockets, container log links, runc state, CNI caches, pod netns files) land there and vanish with
it. What is left to undo by hand is undone in `stop()`: the pod cgroups (all under one
`cgroupRoot`), and the kernel settings kubelet changes, restored to the values read before it ran.

Only one such node fits on a machine (kubelet's cgroups and sysctls are global): `NodeLock` is a
machine-wide lock a second run waits on. A run that died without stopping its node leaves a state
file; the next one cleans up after it before starting.

Synchronous and standard library only, like `controlplane`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aimd.dev import netns
from aimd.dev.controlplane import (
    REPO_ROOT,
    ControlPlaneError,
    RequestFailed,
    _write_service_account_key,
    api_request,
    install_crd,
    wait_for,
    write_kubeconfig,
)
from aimd.dev.netns import NodeNetwork

TESTENV = REPO_ROOT / "tools" / "testenv"
NODE_NAME = "aimd-node"
LOCK_PATH = Path("/run/lock/aimd-node.lock")
STATE_PATH = Path("/run/aimd-node.json")
CGROUP_ROOT = "aimd-node"
CGROUP_FS = Path("/sys/fs/cgroup")
POD_CIDR = "10.244.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
API_PORT = 6443
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
PROXY_HEALTHZ_PORT = 10256
# kubelet sets these machine-wide (they are not namespaced) unless protectKernelDefaults, which
# would refuse to start here instead; stop() puts back what it found.
KERNEL_SETTINGS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Hidden behind the node's own tmpfs: kubelet and containerd write under them whatever their flags.
PRIVATE_MOUNTS = ("/run", "/var/lib", "/var/log")
TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "nsenter",
         "unshare", "buildah", "umoci", "debootstrap", "go")  # fmt: skip
CNI_PLUGINS = Path("/usr/lib/cni")
USERS = {
    # name: (user, groups)
    "admin": ("aimd-node-admin", "system:masters"),
    "kcm": ("system:kube-controller-manager", ""),
    "scheduler": ("system:kube-scheduler", ""),
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "proxy": ("system:kube-proxy", ""),
}


def missing_means() -> str | None:
    """Why this machine cannot run the node, in one line, or None when it can."""
    if platform.system() != "Linux":
        return f"a real node needs Linux, not {platform.system()}"
    if os.geteuid() != 0:
        return "a real node needs root (network namespaces, mounts, cgroups)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"a real node needs {', '.join(missing)} (tools/test installs them on Debian)"
    if not (CNI_PLUGINS / "bridge").exists():
        return f"a real node needs the CNI plugins in {CNI_PLUGINS} (containernetworking-plugins)"
    return None


def _build(script: str, env_var: str) -> Path:
    prebuilt = os.environ.get(env_var)
    if prebuilt:
        return Path(prebuilt)
    result = subprocess.run(
        ["bash", str(TESTENV / script)], check=False, stdout=subprocess.PIPE, text=True
    )
    if result.returncode != 0:
        raise ControlPlaneError(f"tools/testenv/{script} failed (exit {result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def build_node_binaries() -> Path:
    """kubelet, kube-scheduler, kube-proxy, kubectl and pause.tar (`AIMD_NODE_BIN` if set)."""
    return _build("build-node.sh", "AIMD_NODE_BIN")


def build_image() -> Path:
    """The directory holding the aimd image archive and its tags (`AIMD_NODE_IMAGE` if set)."""
    return _build("build-image.sh", "AIMD_NODE_IMAGE")


def cache_dir() -> Path:
    root = os.environ.get("AIMD_TESTENV_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "aimd-testenv"
    )
    return Path(root)


class NodeLock:
    """The machine-wide lock of the one real node (a flock, released by the kernel if we die)."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "unknown"
        return "unknown"

    def acquire(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds; False if another run still holds the node."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")  # noqa: SIM115 - held until release()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    file.close()
                    return False
                time.sleep(1.0)
        file.seek(0)
        file.truncate()
        file.write(f"pid {os.getpid()} ({' '.join(sys.argv[:3])})\n")
        file.flush()
        self._file = file
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def read_kernel_settings() -> dict[str, str]:
    values = {}
    for name in KERNEL_SETTINGS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    return values


def restore_kernel_settings(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)


def cgroup_dirs() -> list[Path]:
    """The node's cgroup root in every hierarchy mounted here (v1 controllers and unified)."""
    if not CGROUP_FS.is_dir():
        return []
    return [h / CGROUP_ROOT for h in sorted(CGROUP_FS.iterdir()) if (h / "cgroup.procs").exists()]


def make_cgroup_root() -> None:
    """kubelet refuses a cgroupRoot that does not exist in every hierarchy; a new cpuset cgroup
    admits no process until it has cpus and mems, so they are copied from the parent."""
    for directory in cgroup_dirs():
        directory.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            own = directory / name
            if own.exists() and not own.read_text().strip():
                own.write_text((directory.parent / name).read_text())


def remove_cgroup_root() -> list[str]:
    """Removes the node's cgroups, deepest first; returns those still in use."""
    busy = []
    for root in cgroup_dirs():
        if not root.exists():
            continue
        for directory in sorted(
            (p for p in [root, *root.rglob("*")] if p.is_dir()),
            key=lambda p: len(p.parts),
            reverse=True,
        ):
            try:
                directory.rmdir()
            except OSError:
                busy.append(str(directory))
    return busy


def terminate(pids: Iterable[int], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL for whoever is still there after `grace` seconds."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(netns.alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if netns.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def clean_up_after(network: NodeNetwork, state_path: Path = STATE_PATH) -> list[str]:
    """Undoes what a node left behind (a run that died, or a stop that failed half-way): stops
    every process in its namespace, removes the namespace, its cgroups, and puts the kernel
    settings back. Returns what it did, for the log."""
    done = []
    pids = netns.pids_in(network.path)
    if pids:
        terminate(pids, grace=5.0)
        done.append(f"stopped {len(pids)} processes left in netns {network.name}")
    if network.exists() or Path(f"/sys/class/net/{network.host_link}").exists():
        network.delete()
        done.append(f"deleted netns {network.name}")
    busy = remove_cgroup_root()
    if busy:
        done.append(f"cgroups still in use: {', '.join(busy[:5])}")
    if state_path.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            restore_kernel_settings(json.loads(state_path.read_text()).get("kernel", {}))
            done.append("restored kernel settings")
        state_path.unlink(missing_ok=True)
    return done


@dataclass
class RealNode:
    """One running node; `start()` it, `stop()` it when done (also when start fails)."""

    control_plane_bin: Path
    node_bin: Path
    image_dir: Path
    workdir: Path
    containerd_root: Path = field(default_factory=lambda: cache_dir() / "containerd")
    network: NodeNetwork = field(default_factory=NodeNetwork)
    tokens: dict[str, str] = field(
        default_factory=lambda: {name: secrets.token_hex(16) for name in USERS}
    )
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    pause_image: str = ""
    _logs: dict[str, IO[bytes]] = field(default_factory=dict)
    _holder: subprocess.Popen[bytes] | None = None

    # -- what tests and `aimd dev` use -----------------------------------------------------------

    @property
    def node_ip(self) -> str:
        return self.network.node_address

    @property
    def server(self) -> str:
        return f"https://{self.node_ip}:{API_PORT}"

    @property
    def kubeconfig(self) -> Path:
        """Cluster-admin credentials (a static token in group system:masters)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "apiserver.crt"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubectl(self) -> Path:
        return self.node_bin / "kubectl"

    @property
    def images(self) -> list[str]:
        """The aimd image and its serve-cache twin, as the node knows them."""
        return (self.image_dir / "tags").read_text().split()

    @property
    def image(self) -> str:
        return self.images[0]

    @property
    def serve_image(self) -> str:
        return self.images[1]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """One request as cluster admin; raises RequestFailed when refused (PATCH: merge)."""
        return api_request(self.server, self.tokens["admin"], self.ca_file, method, path, body)

    def install_crd(self, crd: dict[str, Any]) -> None:
        """Creates (or replaces) one CRD and waits until the API server serves it."""
        install_crd(self.api, crd, self._wait)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def run_kubectl(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(self.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    # -- start -----------------------------------------------------------------------------------

    def start(self) -> None:
        """The namespace, containerd and its images, etcd, kube-apiserver, the controller manager,
        the scheduler, kubelet and kube-proxy; returns once the node is Ready and pods can get
        service-account tokens. On any failure it stops what it started and raises."""
        began = time.monotonic()
        for line in clean_up_after(self.network):
            print(f"real node: {line} (a previous run did not stop its node)", flush=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        try:
            STATE_PATH.write_text(
                json.dumps({"kernel": read_kernel_settings(), "workdir": str(self.workdir)})
            )
            self.network.create()
            self._make_mount_namespace()
            make_cgroup_root()
            self._step("network", began)
            self._start_containerd()
            self._import_images()
            self._step("containerd", began)
            self._write_credentials()
            self._start_etcd()
            self._start_apiserver()
            self._step("kube-apiserver", began)
            self._grant_nodes_their_role()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kubelet()
            self._start_kube_proxy()
            self._wait_for_node()
            self._step("ready", began)
        except BaseException:
            self.stop()
            raise

    def _step(self, name: str, began: float) -> None:
        self.timings[name] = round(time.monotonic() - began, 1)

    def _make_mount_namespace(self) -> None:
        """A `sleep` holds a private mount namespace (inside the node's network namespace) that
        every node process joins; its tmpfs mounts go when the last of them exits."""
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             "nsenter", f"--net={self.network.path}", "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        own_mounts = os.stat("/proc/self/ns/mnt").st_ino
        wanted_net = netns.namespace_inode(self.network.path)

        def inside() -> bool:
            # Mounting before the holder has both namespaces would mount over this machine's /run.
            try:
                holder = self._holder.pid if self._holder else 0
                mnt = os.stat(f"/proc/{holder}/ns/mnt").st_ino
                net = os.stat(f"/proc/{holder}/ns/net").st_ino
            except OSError:
                return False
            return mnt != own_mounts and net == wanted_net

        wait_for("namespace holder", inside, self._holder, lambda _: "", timeout=10)
        for target in PRIVATE_MOUNTS:
            self._in_node("mount", "--no-mtab", "-t", "tmpfs", "-o", "mode=755", "tmpfs", target)

    def _in_node(self, *argv: str) -> str:
        return netns.run(*self._enter(), *argv)

    def _enter(self) -> list[str]:
        holder = self._holder.pid if self._holder else 0
        return ["nsenter", f"--target={holder}", "--mount", "--net", "--"]

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[name] = log
        process = subprocess.Popen(
            [*self._enter(), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def _wait(self, what: str, ready: Any, timeout: float = 90.0) -> None:
        wait_for(what, ready, self.processes.get(what), self.log_tail, timeout)

    # containerd ----------------------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def ctr(self, *args: str) -> str:
        return netns.run("ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args)

    def _start_containerd(self) -> None:
        base = self.workdir / "containerd"
        cni = self.workdir / "cni"
        for directory in (base, cni / "net.d", cni / "ipam", self.containerd_root):
            directory.mkdir(parents=True, exist_ok=True)
        pause = f"localhost/aimd-pause:{(self.node_bin / 'pause.tag').read_text().strip()}"
        (cni / "net.d" / "10-aimd-node.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "aimd-node",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": "aimd-cni0",
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(cni / "ipam"),
                            },
                        }
                    ],
                }
            )
        )
        # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so the -998 CRI gives every
        # sandbox fails runc ("can't get final child's PID from pipe"); clamp to containerd's own.
        (base / "config.toml").write_text(
            f"""version = 2
root = "{self.containerd_root}"
state = "{base / "state"}"
oom_score = 0
[grpc]
  address = "{self.containerd_socket}"
[ttrpc]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_PLUGINS}"
    conf_dir = "{cni / "net.d"}"
    max_conf_num = 1
"""
        )
        self._spawn("containerd", ["containerd", f"--config={base / 'config.toml'}"])
        self._wait("containerd", self._containerd_up, timeout=30)
        self.pause_image = pause

    def _containerd_up(self) -> bool:
        try:
            self.ctr("version")
        except netns.NetnsError:
            return False
        return True

    def _import_images(self) -> None:
        """Imports the pause and aimd images unless containerd (whose content store is kept in
        the cache) has them already; drops older builds of them, which nothing can pull back."""
        present = set(self.ctr("images", "list", "--quiet").split())
        wanted = {self.pause_image, *self.images}
        for name in sorted(present - wanted):
            if name.startswith(
                ("localhost/aimd:", "localhost/aimd-serve:", "localhost/aimd-pause:")
            ):
                self.ctr("images", "remove", name)
        if self.pause_image not in present:
            self.ctr("images", "import", "--base-name=localhost/aimd-pause",
                     str(self.node_bin / "pause.tar"))  # fmt: skip
        if not set(self.images) <= present:
            self.ctr("images", "import", "--base-name=localhost",
                     str(self.image_dir / "images.tar"))  # fmt: skip
        missing = wanted - set(self.ctr("images", "list", "--quiet").split())
        if missing:
            raise ControlPlaneError(f"containerd did not import {', '.join(sorted(missing))}")

    def _remove_containers(self) -> None:
        """Every container and sandbox left in containerd (its metadata outlives this run in the
        cache): killed, then removed with its snapshot."""
        with contextlib.suppress(netns.NetnsError):
            for task in self.ctr("tasks", "list", "--quiet").split():
                with contextlib.suppress(netns.NetnsError):
                    self.ctr("tasks", "delete", "--force", task)
            containers = self.ctr("containers", "list", "--quiet").split()
            if containers:
                self.ctr("containers", "delete", *containers)

    # control plane -------------------------------------------------------------------------------

    def _write_credentials(self) -> None:
        (self.workdir / "certs").mkdir(exist_ok=True)
        _write_service_account_key(self.workdir / "sa.key")
        lines = []
        for uid, (name, (user, groups)) in enumerate(USERS.items(), start=1):
            group = f',"{groups}"' if groups else ""
            lines.append(f"{self.tokens[name]},{user},{uid}{group}")
        (self.workdir / "tokens.csv").write_text("\n".join(lines) + "\n")
        for name, (user, _) in USERS.items():
            write_kubeconfig(
                self.workdir / f"{name}.kubeconfig", self.server, self.ca_file, user,
                self.tokens[name],
            )  # fmt: skip

    def _start_etcd(self) -> None:
        self._spawn(
            "etcd",
            [
                str(self.control_plane_bin / "etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=default=http://127.0.0.1:2380",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: self._http_ok("http://127.0.0.1:2379/health", inside=True))

    def _start_apiserver(self) -> None:
        sa_key = self.workdir / "sa.key"
        self._spawn(
            "kube-apiserver",
            [
                str(self.control_plane_bin / "kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                f"--bind-address={self.node_ip}",
                f"--advertise-address={self.node_ip}",
                f"--secure-port={API_PORT}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-account-issuer={self.server}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--kubelet-preferred-address-types=InternalIP",
                "--enable-priority-and-fairness=false",
                "--v=1",
            ],
        )
        self._wait("kube-apiserver", self._api_ready)

    def _api_ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        try:
            self.api("GET", "/readyz")
        except (OSError, ControlPlaneError, json.JSONDecodeError):
            return False
        return True

    def _grant_nodes_their_role(self) -> None:
        """The Node authorizer learns which Secrets and PVCs a pod uses from its own informers; a
        kubelet that asks first is refused and its volume manager retries only much later. RBAC's
        system:node role for the node group closes that window (test clusters only)."""
        body = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "aimd-node:system:node"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:node",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:nodes"}
            ],
        }
        with contextlib.suppress(RequestFailed):
            self.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body)

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager",
            [
                str(self.control_plane_bin / "kube-controller-manager"),
                f"--kubeconfig={self.workdir / 'kcm.kubeconfig'}",
                "--leader-elect=false",
                f"--bind-address={self.node_ip}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.workdir / 'sa.key'}",
                f"--root-ca-file={self.ca_file}",
                # Else it creates /usr/libexec/kubernetes on this machine for FlexVolume drivers.
                f"--flex-volume-plugin-dir={self.workdir / 'kcm-volume-plugins'}",
                # The PV binder resyncs every 15 s by default; a PVC made together with its PV
                # would often wait for that.
                "--pvclaimbinder-sync-period=2s",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        config = self.workdir / "scheduler.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {"kubeconfig": str(self.workdir / "scheduler.kubeconfig")},
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self._spawn(
            "kube-scheduler",
            [
                str(self.node_bin / "kube-scheduler"),
                f"--config={config}",
                f"--bind-address={self.node_ip}",
                "--v=1",
            ],
        )

    def _start_kubelet(self) -> None:
        root = self.workdir / "kubelet"
        root.mkdir(exist_ok=True)
        resolv = self.workdir / "resolv.conf"
        resolv.write_text("# no DNS on the test node: pods reach servers by IP\n")
        config = root / "config.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    # This machine has cgroup v1, which kubelet 1.35 refuses unless told.
                    "failCgroupV1": False,
                    "cgroupDriver": "cgroupfs",
                    "cgroupRoot": f"/{CGROUP_ROOT}",
                    "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
                    "address": self.node_ip,
                    "port": KUBELET_PORT,
                    "readOnlyPort": 0,
                    "healthzBindAddress": self.node_ip,
                    "healthzPort": KUBELET_HEALTHZ_PORT,
                    # The API server reaches logs and exec without client certificates (test only).
                    "authentication": {
                        "anonymous": {"enabled": True},
                        "webhook": {"enabled": False},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "podLogsDir": str(self.workdir / "pod-logs"),
                    "volumePluginDir": str(root / "volume-plugins"),
                    "resolvConf": str(resolv),
                    "failSwapOn": False,
                    "serializeImagePulls": False,
                    # Nothing can be pulled back: never garbage-collect an image.
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "evictionHard": {
                        "memory.available": "100Mi",
                        "nodefs.available": "1%",
                        "imagefs.available": "1%",
                        "nodefs.inodesFree": "1%",
                    },
                    "syncFrequency": "10s",
                    "fileCheckFrequency": "5s",
                    "nodeStatusReportFrequency": "10s",
                }
            )
        )
        self._spawn(
            "kubelet",
            [
                str(self.node_bin / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={self.workdir / 'kubelet.kubeconfig'}",
                f"--root-dir={root / 'root'}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={self.node_ip}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        config = self.workdir / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(self.workdir / "proxy.kubeconfig")},
                    "mode": "iptables",
                    "hostnameOverride": NODE_NAME,
                    "bindAddress": self.node_ip,
                    "healthzBindAddress": f"{self.node_ip}:{PROXY_HEALTHZ_PORT}",
                    "metricsBindAddress": "127.0.0.1:10249",
                    "clusterCIDR": POD_CIDR,
                    # Zero leaves the conntrack sysctls as they are.
                    "conntrack": {
                        "maxPerCore": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                }
            )
        )
        self._spawn(
            "kube-proxy", [str(self.node_bin / "kube-proxy"), f"--config={config}", "--v=1"]
        )

    def _wait_for_node(self) -> None:
        self._wait(
            "kube-controller-manager",
            lambda: self._http_ok(f"https://{self.node_ip}:10257/healthz"),
        )
        self._wait("kube-scheduler", lambda: self._http_ok(f"https://{self.node_ip}:10259/healthz"))
        self._wait(
            "kubelet",
            lambda: self._http_ok(f"http://{self.node_ip}:{KUBELET_HEALTHZ_PORT}/healthz"),
        )
        self._wait(
            "kube-proxy",
            lambda: self._http_ok(f"http://{self.node_ip}:{PROXY_HEALTHZ_PORT}/healthz"),
        )
        self._wait("kubelet", self._node_ready, timeout=120)
        # Pods need their namespace's ServiceAccount and the root CA's ConfigMap for the token.
        self._wait("kube-controller-manager", self._service_accounts_ready)

    def _node_ready(self) -> bool:
        try:
            node = self.api("GET", f"/api/v1/nodes/{NODE_NAME}")
        except RequestFailed:
            return False
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (node.get("status") or {}).get("conditions") or []
        )

    def _service_accounts_ready(self) -> bool:
        try:
            self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            self.api("GET", "/api/v1/namespaces/default/configmaps/kube-root-ca.crt")
        except RequestFailed:
            return False
        return True

    def _http_ok(self, url: str, inside: bool = False) -> bool:
        """Whether `url` answers 200 (any certificate: these are self-signed and throwaway);
        `inside` connects from within the node's namespace, for its loopback-only servers."""
        import ssl

        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with netns.entered(self.network.path) if inside else contextlib.nullcontext():
            try:
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    return bool(response.status == 200)
            except (OSError, urllib.error.URLError):
                return False

    # -- storage -----------------------------------------------------------------------------------

    def add_storage_class(
        self, name: str = "local", default: bool = True, binding: str = "WaitForFirstConsumer"
    ) -> None:
        """A StorageClass for static `local` volumes (no provisioner: `add_local_volumes`)."""
        annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default else {}
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": name, "annotations": annotations},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": binding,
        }
        with contextlib.suppress(RequestFailed):
            self.api("POST", "/apis/storage.k8s.io/v1/storageclasses", body)

    def add_local_volumes(
        self,
        count: int,
        size: str = "4Gi",
        storage_class: str = "local",
        access_modes: tuple[str, ...] = ("ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"),
    ) -> list[str]:
        """`count` new `local` PersistentVolumes, each a directory of this run, on this node.

        kubelet applies a pod's fsGroup to a local volume (not to hostPath), so uid 65532 can
        write to it. Released volumes are not reused (Retain); tests add what they need.
        """
        names = []
        for _ in range(count):
            name = f"pv-{secrets.token_hex(4)}"
            path = self.workdir / "volumes" / name
            path.mkdir(parents=True)
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"aimd.test/volume": "local"}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": list(access_modes),
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": storage_class,
                    "local": {"path": str(path)},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": "kubernetes.io/hostname",
                                            "operator": "In",
                                            "values": [NODE_NAME],
                                        }
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
            self.api("POST", "/api/v1/persistentvolumes", body)
            names.append(name)
        return names

    # -- stop ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops everything and undoes every change this node made to the machine.

        Pods go first, through kubelet, so their sandboxes and networks are torn down the way a
        node drain would; then the daemons, newest first; then whatever is still in the node's
        namespaces; then the namespaces, cgroups and kernel settings.
        """
        began = time.monotonic()
        try:
            self._drain()
            for name in reversed(list(self.processes)):
                if name != "containerd":
                    self._stop_process(name)
            if "containerd" in self.processes and self._containerd_up():
                self._remove_containers()
            self._stop_process("containerd")
            terminate(netns.pids_in(self.network.path), grace=5.0)
            if self._holder is not None and self._holder.poll() is None:
                self._holder.kill()
                self._holder.wait()
            self._holder = None
        finally:
            for line in clean_up_after(self.network):
                if "still" in line:
                    print(f"real node: {line}", flush=True)
            for log in self._logs.values():
                log.close()
            self._logs.clear()
            self.timings["stop"] = round(time.monotonic() - began, 1)

    def _drain(self, timeout: float = 60.0) -> None:
        """Stops the scheduler and controllers (nothing new is made), deletes every pod, and
        waits until containerd runs no task, so kubelet has torn each pod down."""
        for name in ("kube-scheduler", "kube-controller-manager"):
            self._stop_process(name)
        if "kubelet" not in self.processes or not self._api_ready():
            return
        with contextlib.suppress(RequestFailed, OSError):
            for pod in self.api("GET", "/api/v1/pods")["items"]:
                meta = pod["metadata"]
                with contextlib.suppress(RequestFailed):
                    self.api(
                        "DELETE",
                        f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                        "?gracePeriodSeconds=0",
                    )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self.ctr("tasks", "list", "--quiet").split():
                    return
            except netns.NetnsError:
                return
            time.sleep(0.5)

    def _stop_process(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_node(workdir: Path, lock_timeout: float = 0.0) -> Iterator[RealNode]:
    """Builds (or reuses) what the node needs, takes the machine's node lock (waiting up to
    `lock_timeout` seconds), starts the node and stops it on the way out, however that is.
    Raises `NodeBusy` if the lock stays taken."""
    from aimd.dev.controlplane import build_binaries

    node = RealNode(
        control_plane_bin=build_binaries(),
        node_bin=build_node_binaries(),
        image_dir=build_image(),
        workdir=workdir,
    )
    lock = NodeLock()
    if not lock.acquire(0):
        print(f"real node: waiting for the node of {lock.holder()}", flush=True)
        if not lock.acquire(lock_timeout):
            raise NodeBusy(f"another real node is running on this machine ({lock.holder()})")
    try:
        node.start()
        try:
            yield node
        finally:
            node.stop()
    finally:
        lock.release()


class NodeBusy(ControlPlaneError):
    """The machine's one real node is taken by another run."""
