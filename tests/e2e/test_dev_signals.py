"""`aimd dev` stops everything it started on SIGTERM and SIGHUP, as it does on Ctrl-C: no etcd,
kube-apiserver or kube-controller-manager of its run is left behind."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from aimd.dev.controlplane import free_port
from tests.e2e.dev_process import processes_mentioning, read_until, start_dev
from tests.support import eventually


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
async def test_a_signal_stops_aimd_dev_and_everything_it_started(
    tmp_path: Path, sig: signal.Signals
) -> None:
    workdir = tmp_path / "dev"
    process = await start_dev(
        "--workdir", str(workdir), "--metrics-port", str(free_port()), "--model-mib", "1"
    )
    try:
        await read_until(process, "metrics at", timeout=240)
        started = processes_mentioning(str(workdir))
        assert len(started) >= 3, "etcd, kube-apiserver and kube-controller-manager run"
        process.send_signal(sig)
        assert await asyncio.wait_for(process.wait(), timeout=120) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def none_left() -> bool:
        return not processes_mentioning(str(workdir))

    await eventually(none_left, timeout=30, what="no process of the run left")
