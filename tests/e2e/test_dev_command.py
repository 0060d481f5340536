"""`aimd dev` end to end: its own control plane, the controller, downloads run by the local
kubelet from the local hub, and the samples' caches and service reaching Available and Running."""

from __future__ import annotations

import asyncio
import sys

from aimd.dev.controlplane import free_port


async def test_dev_brings_the_samples_to_available() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        "dev",
        "--exit-when-ready",
        "--timeout",
        "240",
        "--metrics-port",
        str(free_port()),
        "--model-mib",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    assert "every cache is Available and every service Running" in text
    final = text.rsplit("\n\n", 2)[-2]
    assert "aimsvc/chat: Running" in final
    assert "hf://meta-llama/Llama-3.1-8B-Instruct" in final
