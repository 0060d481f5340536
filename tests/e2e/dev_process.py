"""(No tests here.) Running `aimd dev` as a person would, and finding what it left running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

from aimd.dev.netns import alive


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names `text` (a workdir only one run uses)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


async def start_dev(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        "dev",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


async def read_until(process: asyncio.subprocess.Process, marker: str, timeout: float) -> str:
    """What the process printed up to and with the first line containing `marker`."""
    assert process.stdout is not None
    seen: list[str] = []

    async def lines() -> str:
        assert process.stdout is not None
        while True:
            line = (await process.stdout.readline()).decode(errors="replace")
            if not line:
                raise AssertionError(f"aimd dev ended before {marker!r}:\n{''.join(seen)}")
            seen.append(line)
            if marker in line:
                return "".join(seen)

    try:
        return await asyncio.wait_for(lines(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {marker!r} after {timeout:.0f}s:\n{''.join(seen)}") from None
