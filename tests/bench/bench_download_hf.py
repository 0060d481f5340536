"""Download benchmark, hf://: aimd against huggingface_hub's ``snapshot_download`` on the local hub.

Run with ``python -m tests.bench.bench_download_hf [--gib 1] [--files 4] [--rounds 3]
[--old-tree DIR]`` (``--old-tree``: another checkout's aimd too, e.g. from ``git worktree add``).
Not a test: it asserts nothing and prints a table.

The hub is :mod:`aimd.dev.localhub` in this process (what ``aimd dev`` and the tests use): model
info, ``/resolve`` answering LFS files with a redirect to a "CDN" path, as the real hub does. It
counts every ``/resolve`` request, GET and HEAD, which is what the Hub rate-limits (3,000 per 5
minutes for anonymous users). Each client runs in its own child process into a fresh directory,
rounds rotating the order; CPU is the child's, the hub's (this process) is shown apart. The hub
is Python (aiohttp, 64 KiB writes), so it, not the clients, bounds MB/s here: compare the clients
with each other, not with the S3 table.

``hf_transfer`` is not compared: huggingface_hub 1.0 and later no longer use it (setting
``HF_HUB_ENABLE_HF_TRANSFER`` only warns). ``hf_xet`` is used only when the hub answers with Xet
metadata and serves Xet's content-addressed storage, which the local hub does not implement, so
``snapshot_download`` falls back to plain HTTP GETs here, as it does for any non-Xet repository.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aimd.dev.localhub import LocalHub, serve_hub
from tests.bench.bench_download import machine
from tests.support import REPO

REPO_ID = "bench/model"

SNAPSHOT = """
import sys
from huggingface_hub import snapshot_download

endpoint, repo, target, workers = sys.argv[1:5]
snapshot_download(repo, local_dir=target, endpoint=endpoint, max_workers=int(workers))
"""


@dataclass
class Runs:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    hub_cpus: list[float] = field(default_factory=list)
    resolves: list[int] = field(default_factory=list)


def model(gib: float, files: int) -> dict[str, bytes]:
    size = int(gib * (1 << 30)) // files
    block = os.urandom(1 << 20)
    weights = {
        f"model-{i + 1:05d}-of-{files:05d}.safetensors": b"".join(
            block[j % 512 :] + block[: j % 512] for j in range(i * 4096, i * 4096 + (size >> 20))
        )
        for i in range(files)
    }
    return {"config.json": b'{"hidden_size": 4096}', **weights}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_child(command: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds of the child, and this process's (the hub's) CPU meanwhile."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    hub_before = own_cpu()
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed: {err.decode()[-2000:]}")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, own_cpu() - hub_before


def aimd(tree: Path, target: Path, concurrency: int) -> list[str]:
    # `python -m` puts the working directory first on sys.path, so run from the tree.
    return [
        "env",
        "-C",
        str(tree),
        f"PYTHONPATH={tree}",
        sys.executable,
        "-m",
        "aimd",
        "download",
        f"hf://{REPO_ID}",
        "--target",
        str(target),
        "--concurrency",
        str(concurrency),
        "--termination-log",
        "",
    ]


async def main(
    gib: float, files: int, rounds: int, concurrency: int, old_tree: Path | None
) -> None:
    print(f"machine: {machine()}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="aimd-bench-hf-"))
    async with serve_hub() as hub:
        repo = hub.add(REPO_ID, model(gib, files))
        total = repo.size
        gb = total / 1e9
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(scratch / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        env.pop("HF_TOKEN", None)
        commands = {
            "huggingface_hub snapshot_download": lambda target: [
                sys.executable,
                "-c",
                SNAPSHOT,
                hub.url,
                REPO_ID,
                str(target),
                str(concurrency),
            ],
            "aimd download": lambda target: aimd(REPO, target, concurrency),
        }
        if old_tree is not None:
            commands[f"aimd download, {old_tree.name}"] = lambda target: aimd(
                old_tree, target, concurrency
            )
        results = {name: Runs() for name in commands}
        names = list(commands)
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                target = scratch / f"{round_}-{names.index(name)}"
                calls = _resolver_calls(hub)
                wall, cpu, hub_cpu = await run_child(commands[name](target), env)
                runs = results[name]
                runs.walls.append(wall)
                runs.cpus.append(cpu)
                runs.hub_cpus.append(hub_cpu)
                runs.resolves.append(_resolver_calls(hub) - calls)
                for path, data in repo.files.items():
                    assert (target / path).stat().st_size == len(data), path
                print(f"  round {round_ + 1} {name}: {gb / wall * 1000:.0f} MB/s", flush=True)
                await asyncio.to_thread(shutil.rmtree, target)
    shutil.rmtree(scratch, ignore_errors=True)
    report(results, gb, total, len(repo.files), concurrency, rounds)
    print(f"machine at the end: {machine()}")


def _resolver_calls(hub: LocalHub) -> int:
    return sum(hub.resolves.values()) + sum(hub.resolve_heads.values())


VERIFIES = {"huggingface_hub snapshot_download": "size"}


def report(
    results: dict[str, Runs], gb: float, total: int, files: int, concurrency: int, rounds: int
) -> None:
    def rate(runs: Runs) -> float:
        return gb / statistics.median(runs.walls) * 1000

    base = rate(results["huggingface_hub snapshot_download"])
    print(
        f"\n{total} bytes ({gb:.2f} GB) in {files} files on the local hub, {concurrency} "
        f"connections/workers, median of {rounds} rounds (best in brackets)\n"
    )
    print(
        "| client | MB/s | vs snapshot_download | CPU s/GB | hub CPU s/GB | /resolve calls per "
        "file | verifies |\n|---|---|---|---|---|---|---|"
    )
    for name, runs in results.items():
        mbs = rate(runs)
        print(
            f"| {name} | {mbs:.0f} ({gb / min(runs.walls) * 1000:.0f}) | {mbs / base:.2f} | "
            f"{statistics.median(runs.cpus) / gb:.2f} | "
            f"{statistics.median(runs.hub_cpus) / gb:.2f} | "
            f"{statistics.median(runs.resolves) / files:.1f} | "
            f"{VERIFIES.get(name, 'sha256, git-sha1')} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="model size in GiB")
    parser.add_argument("--files", type=int, default=4, help="number of weight files")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each client")
    parser.add_argument("--concurrency", type=int, default=8, help="connections per client")
    parser.add_argument("--old-tree", type=Path, default=None, help="another checkout's aimd too")
    options = parser.parse_args()
    asyncio.run(
        main(options.gib, options.files, options.rounds, options.concurrency, options.old_tree)
    )
