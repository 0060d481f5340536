"""The pure parts of the real node and of `aimd dev`: what the samples become on the node, the
machine-wide node lock, why a machine cannot run a node, and signals ending `aimd dev` like
Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from aimd.dev import command
from aimd.dev.command import for_real_node, load_samples, stop_like_ctrl_c
from aimd.dev.node import NodeLock, missing_means


def test_on_the_real_node_the_samples_download_from_the_hub_and_serve_with_the_image() -> None:
    samples = load_samples(command.SAMPLES_DIR, include_s3=False)
    adapted = for_real_node(samples, "http://10.250.0.2:4321", "localhost/aimd-serve:abc")
    templates = [s for s in adapted if "modelSources" in s["spec"]]
    assert templates
    for sample in templates:
        assert sample["spec"]["image"] == "localhost/aimd-serve:abc"
        assert "resources" not in sample["spec"], "no GPUs on the test node"
        for source in sample["spec"]["modelSources"]:
            assert {"name": "HF_ENDPOINT", "value": "http://10.250.0.2:4321"} in source["env"]
    # The originals are untouched.
    assert all("HF_ENDPOINT" not in str(s) for s in samples)


def test_the_node_lock_has_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = NodeLock(tmp_path / "node.lock"), NodeLock(tmp_path / "node.lock")
    assert first.acquire(0)
    assert not second.acquire(0)
    assert f"pid {os.getpid()}" in second.holder()
    first.release()
    assert second.acquire(0)
    second.release()


def test_a_machine_without_containerd_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        shutil, "which", lambda tool: None if tool == "containerd" else f"/usr/bin/{tool}"
    )
    reason = missing_means()
    assert reason is not None
    assert "containerd" in reason
    assert "runc" not in reason


def test_a_machine_where_this_is_not_root_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert missing_means() == "a real node needs root (network namespaces, mounts, cgroups)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_sigterm_and_sighup_end_aimd_dev_like_ctrl_c(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    cleaned_up: list[bool] = []

    def run_and_clean_up() -> None:
        with stop_like_ctrl_c():
            try:
                os.kill(os.getpid(), sig)
                pytest.fail("the signal did not interrupt")
            finally:
                # While cleaning up, a second signal is ignored instead of cutting it short.
                os.kill(os.getpid(), sig)
                cleaned_up.append(True)

    with pytest.raises(KeyboardInterrupt):
        run_and_clean_up()
    assert cleaned_up == [True]
    assert signal.getsignal(sig) is before
