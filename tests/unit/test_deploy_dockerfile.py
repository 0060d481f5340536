"""The Dockerfile, read rather than built (no container engine runs in the tests): multi-stage,
a slim Python base, a numeric non-root user, `aimd` as the entrypoint, and a build context that
holds only what the image needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_build_is_multi_stage_on_a_slim_python() -> None:
    steps = instructions()
    args = dict(rest.split("=", 1) for keyword, rest in steps if keyword == "ARG")
    bases = [rest.split()[0] for keyword, rest in steps if keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), image
    copies = [rest for keyword, rest in final_stage() if keyword == "COPY"]
    assert copies == ["--from=build /opt/aimd /opt/aimd"]


def test_runs_as_a_numeric_non_root_user() -> None:
    (user,) = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), user


@pytest.mark.parametrize("manifest", ["manifests/manager/deployment.yaml"])
def test_the_image_user_is_the_one_the_manifests_run_as(manifest: str) -> None:
    (user,) = [rest for keyword, rest in final_stage() if keyword == "USER"]
    pod = yaml.safe_load((REPO / manifest).read_text())["spec"]["template"]["spec"]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"


def test_entrypoint_is_aimd_and_runs_the_controller_by_default() -> None:
    steps = dict(final_stage())
    assert json.loads(steps["ENTRYPOINT"]) == ["aimd"]
    assert json.loads(steps["CMD"]) == ["run"]
    assert "/opt/aimd/bin" in steps["ENV"]


def test_build_context_holds_only_the_package() -> None:
    patterns = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    assert included == {"pyproject.toml", "README.md", "aimd"}
    copied = {
        source
        for keyword, rest in instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in rest.split()[:-1]
    }
    assert {source.rstrip("/") for source in copied} == included
