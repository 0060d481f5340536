"""kubectl's connection flags, read the way kubectl reads them.

`aimd cache`, `kubectl aimd` and `aimd uninstall` take ``--kubeconfig``, ``--context``,
``-n/--namespace`` and ``-A/--all-namespaces``. A kubectl plugin is handed its arguments and
nothing else (kubectl does not pass it the connection it would have used), so the rules kubectl
follows are followed here:

- the kubeconfig is ``--kubeconfig``, else ``$KUBECONFIG`` (``:``-separated files merge), else
  ``~/.kube/config``; with none of them, in a pod, the pod's service account;
- the context is ``--context``, else the kubeconfig's current-context (of the first file that
  sets one);
- the namespace is ``-n``, else the context's namespace (the pod's own in a pod), else
  ``default``; ``-A`` means every namespace and wins over ``-n``, as in kubectl.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class TargetError(Exception):
    """The flags or the kubeconfig name no cluster we can talk to (a missing context, say)."""


def add_connection_flags(
    parser: argparse.ArgumentParser,
    *,
    suppress: bool = False,
    namespace_default: str = "the context's, else default",
) -> None:
    """Adds the flags to ``parser``. ``suppress`` is for a subcommand's copy of flags its parent
    also takes: kubectl users put them before or after the verb, and a copy that is not given
    must not overwrite what the parent parsed."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--kubeconfig",
        default=default(None),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config, else in-cluster)",
    )
    parser.add_argument(
        "--context", default=default(None), help="kubeconfig context (default: its current one)"
    )
    parser.add_argument(
        "-n", "--namespace", default=default(None), help=f"namespace (default: {namespace_default})"
    )
    parser.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        default=default(False),
        help="every namespace",
    )


@dataclass(frozen=True)
class Target:
    """Which cluster, as whom, and where: ``kubeconfig`` None means the pod's service account;
    ``namespace`` None means every namespace."""

    kubeconfig: str | None
    context: str | None
    namespace: str | None

    async def client(self) -> KubeClient:
        from aimd.kube.client import KubeClient

        if self.kubeconfig is None:
            return await KubeClient.in_cluster()
        return await KubeClient.from_kubeconfig(self.kubeconfig, self.context)


def kubeconfig_path(
    flag: str | None, env: Mapping[str, str], home: Path, in_cluster: bool
) -> str | None:
    """The kubeconfig kubectl would read, or None for the pod's service account."""
    if flag:
        return flag
    if env.get("KUBECONFIG"):
        return env["KUBECONFIG"]
    default = home / ".kube" / "config"
    if default.exists() or not in_cluster:
        return str(default)
    return None


def _files(kubeconfig: str) -> list[Path]:
    return [Path(p).expanduser() for p in kubeconfig.split(os.pathsep) if p]


def current_context(kubeconfig: str) -> str | None:
    """The current-context of a ``:``-separated kubeconfig path: the first file that sets one
    wins, as in kubectl (kubernetes_asyncio's merge lets the last one win)."""
    for path in _files(kubeconfig):
        if path.exists():
            config = yaml.safe_load(path.read_text()) or {}
            if config.get("current-context"):
                return str(config["current-context"])
    return None


def context_namespace(kubeconfig: str, context: str | None) -> str | None:
    """The namespace set on ``context`` (default: the current one) of a kubeconfig, merged from
    every file of a ``:``-separated path as kubectl merges them."""
    from kubernetes_asyncio.config import kube_config
    from kubernetes_asyncio.config.config_exception import ConfigException

    if not any(path.exists() for path in _files(kubeconfig)):
        raise TargetError(f"no kubeconfig at {kubeconfig}")
    try:
        merged = kube_config.KubeConfigMerger(kubeconfig).config
        loader = kube_config.KubeConfigLoader(config_dict=merged, active_context=context)
    except ConfigException as error:
        raise TargetError(str(error)) from None
    chosen = loader.current_context or {}
    namespace = (chosen.get("context") or {}).get("namespace")
    return str(namespace) if namespace else None


def in_cluster_namespace(env: Mapping[str, str], path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    if path.exists():
        return path.read_text().strip() or "default"
    return "default"


def resolve(
    args: argparse.Namespace,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    *,
    default_all_namespaces: bool = False,
) -> Target:
    """The Target the parsed flags name. ``default_all_namespaces`` is for commands whose scope
    is the cluster unless ``-n`` narrows it (``aimd uninstall``)."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
    path = kubeconfig_path(getattr(args, "kubeconfig", None), env, home, in_cluster)
    context = getattr(args, "context", None)
    if path is None and context:
        raise TargetError(f"--context {context} needs a kubeconfig, and none was found")
    if path is not None and not context:
        context = current_context(path)
    explicit = getattr(args, "namespace", None)
    if getattr(args, "all_namespaces", False) or (default_all_namespaces and not explicit):
        if path is not None:
            context_namespace(path, context)  # a wrong --context fails here, not at connect
        return Target(path, context, None)
    if explicit:
        namespace = explicit
    elif path is None:
        namespace = in_cluster_namespace(env)
    else:
        namespace = context_namespace(path, context) or "default"
    return Target(path, context, namespace)


def run_reporting(prog: str, work: Coroutine[Any, Any, int], *quiet: type[Exception]) -> int:
    """Runs a command against the cluster; what can go wrong there (no such context, the API
    server's refusal, no route to it, and ``quiet`` errors of the command's own) is one line on
    stderr and exit code 1, never a traceback."""
    import aiohttp

    from aimd.kube.errors import ApiError

    said: tuple[type[Exception], ...] = (TargetError, *quiet)
    try:
        return asyncio.run(work)
    except said as error:
        print(f"{prog}: {error}", file=sys.stderr)
    except ApiError as error:
        print(f"{prog}: {error.message}", file=sys.stderr)
    except (aiohttp.ClientError, OSError) as error:
        print(f"{prog}: cannot reach the API server: {error}", file=sys.stderr)
    return 1
