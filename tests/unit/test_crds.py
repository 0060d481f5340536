"""The CRDs aimd.api.crds defines (tools/generate writes them out): every kind with its status
subresource, categories and short name; samples match the kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aimd.api import crds, kinds

REPO = Path(__file__).resolve().parents[2]


def test_every_kind_has_status_subresource_categories_and_short_name() -> None:
    by_kind = {c["spec"]["names"]["kind"]: c for c in crds.all_crds()}
    assert set(by_kind) == {r.kind for r in kinds.ALL_KINDS}
    for crd in by_kind.values():
        names = crd["spec"]["names"]
        version = crd["spec"]["versions"][0]
        assert names["categories"] == ["aim", "all"]
        assert names["shortNames"]
        assert version["subresources"] == {"status": {}}
        assert any(c["jsonPath"] == ".status.status" for c in version["additionalPrinterColumns"])


def test_cluster_template_is_the_only_cluster_scoped_kind() -> None:
    scopes = {c["spec"]["names"]["kind"]: c["spec"]["scope"] for c in crds.all_crds()}
    assert [k for k, s in scopes.items() if s == "Cluster"] == ["AIMClusterServiceTemplate"]


@pytest.mark.parametrize("path", sorted((REPO / "manifests" / "samples").glob("*.yaml")))
def test_samples_name_a_known_kind(path: Path) -> None:
    sample = yaml.safe_load(path.read_text())
    assert sample["apiVersion"] == kinds.API_VERSION
    assert sample["kind"] in {r.kind for r in kinds.ALL_KINDS}


def test_there_is_one_sample_per_kind() -> None:
    samples = [
        yaml.safe_load(p.read_text()) for p in (REPO / "manifests" / "samples").glob("*.yaml")
    ]
    assert sorted(s["kind"] for s in samples) == sorted(r.kind for r in kinds.ALL_KINDS)


def test_crds_command_prints_a_yaml_stream(capsys: pytest.CaptureFixture[str]) -> None:
    from aimd.cli import main

    assert main(["crds"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["CustomResourceDefinition"] * 5
