"""kubectl's connection flags, read as kubectl reads them: the kubeconfig, context, namespace."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import yaml

from aimd.cli.target import Target, TargetError, add_connection_flags, resolve


def kubeconfig(path: Path, current: str | None, contexts: dict[str, str | None]) -> Path:
    """A kubeconfig whose contexts each name a namespace (or none)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})},
            }
            for name, ns in contexts.items()
        ],
    }
    if current:
        config["current-context"] = current
    path.write_text(yaml.safe_dump(config))
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_connection_flags(parser)
    return parser.parse_args(argv)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return kubeconfig(tmp_path / "config", "dev", {"dev": "ml", "prod": "serving", "bare": None})


def test_the_current_contexts_namespace_is_the_default(config: Path) -> None:
    target = resolve(parse("--kubeconfig", str(config)), env={}, home=config.parent)
    assert target == Target(str(config), "dev", "ml")


def test_context_picks_that_contexts_namespace(config: Path) -> None:
    target = resolve(parse("--kubeconfig", str(config), "--context", "prod"), env={})
    assert target == Target(str(config), "prod", "serving")
    bare = resolve(parse("--kubeconfig", str(config), "--context", "bare"), env={})
    assert bare.namespace == "default"


def test_namespace_flag_wins_and_all_namespaces_wins_over_it(config: Path) -> None:
    assert resolve(parse("--kubeconfig", str(config), "-n", "x"), env={}).namespace == "x"
    every = resolve(parse("--kubeconfig", str(config), "-n", "x", "-A"), env={})
    assert every.namespace is None


def test_kubeconfig_env_merges_its_files_the_first_current_context_wins(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "prod", {"prod": "serving"})
    second = kubeconfig(tmp_path / "b", "dev", {"dev": "ml", "prod": "ignored"})
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(second)])}
    target = resolve(parse(), env=env, home=tmp_path)
    assert target == Target(env["KUBECONFIG"], "prod", "serving")
    assert resolve(parse("--context", "dev"), env=env, home=tmp_path).namespace == "ml"


def test_home_kubeconfig_is_the_last_file_choice(config: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    config.rename(home / ".kube" / "config")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}  # a file wins over in-cluster, as in kubectl
    target = resolve(parse(), env=env, home=home)
    assert (target.kubeconfig, target.namespace) == (str(home / ".kube" / "config"), "ml")


def test_in_a_pod_without_a_kubeconfig_the_pods_namespace(tmp_path: Path) -> None:
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAMESPACE": "aimd-system"}
    assert resolve(parse(), env=env, home=tmp_path) == Target(None, None, "aimd-system")
    with pytest.raises(TargetError, match="needs a kubeconfig"):
        resolve(parse("--context", "prod"), env=env, home=tmp_path)


def test_an_unknown_context_or_a_missing_file_says_so(config: Path, tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="nope"):
        resolve(parse("--kubeconfig", str(config), "--context", "nope"), env={})
    with pytest.raises(TargetError, match="nope"):
        resolve(parse("--kubeconfig", str(config), "--context", "nope", "-A"), env={})
    with pytest.raises(TargetError, match="no kubeconfig"):
        resolve(parse(), env={}, home=tmp_path / "nobody")


def test_cluster_wide_commands_default_to_every_namespace(config: Path) -> None:
    args = parse("--kubeconfig", str(config))
    assert resolve(args, env={}, default_all_namespaces=True).namespace is None
    args = parse("--kubeconfig", str(config), "-n", "ml")
    assert resolve(args, env={}, default_all_namespaces=True).namespace == "ml"
