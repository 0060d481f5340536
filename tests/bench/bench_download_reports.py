"""Status writes per download-minute: how often ``aimd download`` patches its AIMModelCache.

Run with ``python -m tests.bench.bench_download_reports [--minutes 2] [--old-tree DIR]``. Not a
test: it prints a table.

Every report is a status write that makes the controller reconcile the cache and every template
cache using it, so at 500 concurrent downloads the rate is what the API server pays. A download
paced by the local hub to last ``--minutes`` minutes reports to a stand-in API server that counts
the PATCHes to ``.../aimmodelcaches/NAME/status`` per minute of the download. ``--old-tree``
runs another checkout's aimd the same way (e.g. ``git worktree add /tmp/old <commit>``), to
compare with the code before a change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from aimd.dev.controlplane import free_port
from aimd.dev.localhub import serve_hub

NAME = "mc-bench"
NAMESPACE = "bench"


class CountingApi:
    """Answers every status PATCH with an empty object and notes when it came."""

    def __init__(self) -> None:
        self.patches: list[float] = []

    async def patch(self, request: web.Request) -> web.Response:
        await request.read()
        self.patches.append(time.monotonic())
        return web.json_response({"kind": "AIMModelCache", "status": {}})


async def run(tree: Path | None, minutes: float, scratch: Path) -> tuple[Counter[int], float]:
    """Status writes per minute of one download lasting about ``minutes``, and its seconds."""
    api = CountingApi()
    app = web.Application()
    app.router.add_route(
        "PATCH",
        f"/apis/aim.eai.amd.com/v1alpha1/namespaces/{NAMESPACE}/{{kind}}/{NAME}/status",
        api.patch,
    )
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    kubeconfig = scratch / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "bench"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    try:
        async with serve_hub() as hub:
            # 8 MiB served in 64 KiB pieces: the delay per piece sets the duration.
            hub.add_model(size_mib=8)
            hub.piece_delay = minutes * 60 / 128 * 2
            env = {
                **os.environ,
                "HF_ENDPOINT": hub.url,
                "AIMD_MODEL_CACHE_NAME": NAME,
                "AIMD_MODEL_CACHE_NAMESPACE": NAMESPACE,
                "PYTHONPATH": str(tree) if tree else os.environ.get("PYTHONPATH", ""),
            }
            env.pop("AIMD_REPORT_INTERVAL", None)
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "aimd",
                "download",
                "hf://org/model",
                "--target",
                str(scratch / f"m-{started}"),
                "--kubeconfig",
                str(kubeconfig),
                "--concurrency",
                "2",
                "--termination-log",
                "",
                env=env,
                cwd=str(tree) if tree else None,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(err.decode()[-2000:])
            seconds = time.monotonic() - started
    finally:
        await runner.cleanup()
    per_minute = Counter(int((t - started) // 60) for t in api.patches)
    return per_minute, seconds


async def main(minutes: float, old_tree: Path | None) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="aimd-bench-reports-"))
    runs: dict[str, tuple[Counter[int], float]] = {}
    if old_tree is not None:
        runs[f"{old_tree}"] = await run(old_tree, minutes, scratch)
    runs["this tree"] = await run(None, minutes, scratch)
    columns = max(int(seconds // 60) + 1 for _, seconds in runs.values())
    header = " | ".join(f"minute {m + 1}" for m in range(columns))
    print(f"\n| aimd | download seconds | {header} | total |")
    print("|---|---|" + "---|" * (columns + 1))
    for name, (per_minute, seconds) in runs.items():
        cells = " | ".join(str(per_minute.get(m, 0)) for m in range(columns))
        print(f"| {name} | {seconds:.0f} | {cells} | {sum(per_minute.values())} |")
    print("\n(the last minute is partial and holds the final report)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="how long each download runs")
    parser.add_argument("--old-tree", type=Path, default=None, help="another checkout to compare")
    options = parser.parse_args()
    asyncio.run(main(options.minutes, options.old_tree))
