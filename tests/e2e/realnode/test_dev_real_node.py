"""`aimd dev --real-node` prints how to reach the node and, on SIGTERM, stops it all: no process
of the node, no network namespace, no pod cgroup, and kubelet's kernel settings back as they were.

It runs its own node, so it must run while the suite's node is not up (this file sorts first);
if another node holds the machine's lock it skips rather than wait."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aimd.dev.controlplane import free_port
from aimd.dev.netns import NodeNetwork, pids_in
from aimd.dev.node import cgroup_dirs, read_kernel_settings
from tests.e2e.dev_process import processes_mentioning, read_until, start_dev
from tests.support import eventually


async def test_aimd_dev_on_the_real_node_says_how_to_reach_it_and_stops_it_on_sigterm(
    node_possible: None, tmp_path: Path
) -> None:
    kernel = read_kernel_settings()
    workdir = tmp_path / "dev"
    process = await start_dev(
        "--real-node",
        "--workdir", str(workdir),
        "--metrics-port", str(free_port()),
        "--model-mib", "1",
        env={"AIMD_REAL_NODE_WAIT": "0"},
    )  # fmt: skip
    try:
        try:
            shown = await read_until(process, "metrics at", timeout=280)
        except AssertionError as error:
            if "another real node is running" in str(error):
                pytest.skip(f"the machine's real node is taken: {error}")
            raise
        assert f"export KUBECONFIG={workdir}/admin.kubeconfig" in shown
        assert "https://10.250.0.2:6443" in shown
        assert pids_in(NodeNetwork().path), "the node runs in its namespace"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=120) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def nothing_left() -> bool:
        return not processes_mentioning(str(workdir)) and not NodeNetwork().exists()

    await eventually(nothing_left, timeout=60, what="no process or namespace of the node left")
    assert not any(d.exists() for d in cgroup_dirs())
    assert read_kernel_settings() == kernel
