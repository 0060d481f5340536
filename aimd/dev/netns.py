"""The test node's own network namespace, and a way to listen and connect inside it.

Everything the real test node serves (its node IP, the pod and Service ranges, kube-proxy's
iptables rules, the local hub and S3 server the pods download from) lives in one network
namespace made for it, joined to this machine by a veth pair: the root end carries `host_address`,
the namespace end the node IP. Nothing else on the machine is touched, and deleting the namespace
takes the rules, the bridge and the pair with it.

A thread can step into the namespace (`entered`) long enough to make a socket there; the socket
belongs to that namespace for good, so a server's event loop in the root namespace can serve on it.
Synchronous and standard library only, like `controlplane`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


class NetnsError(RuntimeError):
    """A namespace could not be made, entered or removed."""


def _setns(fd: int, nstype: int) -> None:
    # os.setns exists from Python 3.12 only; aimd supports 3.11.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def entered(path: Path) -> Iterator[None]:
    """The calling thread inside the network namespace at `path` while the block runs.

    Only this thread moves (setns applies to one thread), and it moves back even when the block
    raises. Keep the block short and free of awaits: every socket it makes lands in the namespace.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(path, "rb") as target:
        _setns(target.fileno(), CLONE_NEWNET)
        try:
            yield
        finally:
            _setns(home.fileno(), CLONE_NEWNET)


def listening_socket(path: Path, host: str, port: int = 0) -> socket.socket:
    """A TCP socket bound and listening on `host:port` inside the namespace at `path`."""
    with entered(path):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
    return sock


def run(*argv: str) -> str:
    """Runs one command (ip, sysctl, ...) and returns its output; raises with its stderr."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def is_mount_point(path: Path) -> bool:
    """From the mount table: `os.path.ismount` misses a bind mount of a directory onto itself."""
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    return any(line.split()[4] == str(path) for line in mounts)


def namespace_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in(path: Path) -> list[int]:
    """Every process whose network namespace is the one at `path` (all of them ours)."""
    inode = namespace_inode(path)
    if inode is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(entry / "ns" / "net").st_ino == inode and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie: this machine's PID 1 reaps orphans only every few seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass(frozen=True)
class NodeNetwork:
    """A network namespace joined to the root one by a veth pair on a /30.

    The root end `host_link` has `host_address`, the namespace end `node_link` has `node_address`
    (the node IP). The namespace gets no default route: pods reach what is inside and nothing else.
    """

    name: str = "aimd-node"
    host_link: str = "aimd-node0"
    node_link: str = "eth0"
    host_address: str = "10.250.0.1"
    node_address: str = "10.250.0.2"
    prefix: int = 30

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        run("ip", "netns", "add", self.name)
        try:
            run("ip", "link", "add", self.host_link, "type", "veth", "peer", "name", self.node_link,
                "netns", self.name)  # fmt: skip
            run("ip", "addr", "add", f"{self.host_address}/{self.prefix}", "dev", self.host_link)
            run("ip", "link", "set", self.host_link, "up")
            inside = ("ip", "-n", self.name)
            run(*inside, "addr", "add", f"{self.node_address}/{self.prefix}", "dev", self.node_link)
            run(*inside, "link", "set", self.node_link, "up")
            run(*inside, "link", "set", "lo", "up")
        except NetnsError:
            self.delete()
            raise

    def delete(self) -> None:
        """Removes the namespace (and with it the pair, the bridge and every rule in it).

        Processes still inside keep a namespace alive after its name is gone, so whoever calls
        this stops them first (see `pids_in`).
        """
        if self.exists():
            run("ip", "netns", "delete", self.name)
        with contextlib.suppress(NetnsError):
            run("ip", "link", "delete", self.host_link)
        # `ip netns add` turns /run/netns into a mount point of its own; the last one out undoes it.
        with contextlib.suppress(OSError):
            if NETNS_DIR.is_dir() and not any(NETNS_DIR.iterdir()):
                if is_mount_point(NETNS_DIR):
                    run("umount", "--no-mtab", str(NETNS_DIR))
                NETNS_DIR.rmdir()
