"""Download benchmark: a synthetic multi-GB model from a local S3 server, ours vs boto3's
transfer manager (what ``aws s3 sync`` uses), in the same run against the same server.

Run with ``python -m tests.bench.bench_download [--gib 4] [--files 4] [--rounds 2]``. Not a test
(pytest does not collect ``bench_*.py``) and it asserts nothing; it prints a table.

The server is moto's S3 server (a subprocess on a loopback port), holding ``--files`` objects of
random bytes that add up to ``--gib`` GiB, uploaded in 8 MiB parts as the AWS CLI does. Each
client runs in its own child process into a fresh directory, rounds alternating between the two,
so both pay for the same server, loopback and page cache; CPU is the child's user+system time
(the server's is not counted). Ours is the real ``aimd download`` command, which also verifies
every file's ETag (md5) and records progress for resume; the reference does neither: its CPU per
GB is a lower bound for plain transfer. Both use 8 connections and 8-16 MiB ranges.

moto reads a whole object from its store to answer any ranged GET of it, so its cost per request
grows with the object's size and it, not the client, limits MB/s for large objects (a client
with smaller ranges pays more). The default, 16 objects of 256 MiB, keeps that effect moderate.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.test_download_s3 import s3_client, start_moto

BUCKET = "bench"
PREFIX = "model"
CONCURRENCY = 8

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


def upload(endpoint: str, gib: float, files: int) -> int:
    """Random objects adding up to ``gib`` GiB; returns the total bytes."""
    from boto3.s3.transfer import TransferConfig

    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    size = int(gib * (1 << 30)) // files
    parts = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
    with tempfile.NamedTemporaryFile() as source:
        block = os.urandom(1 << 20)
        for i in range(size >> 20):
            source.write(block[i % 256 :] + block[: i % 256])  # distinct MiBs, cheap to make
        source.write(os.urandom(size % (1 << 20)))
        source.flush()
        for index in range(files):
            key = f"{PREFIX}/model-{index + 1:05d}-of-{files:05d}.safetensors"
            s3.upload_file(source.name, BUCKET, key, Config=parts)
    return size * files


def run_child(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user+system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(gib: float, files: int, rounds: int) -> None:
    process, endpoint = start_moto()
    workdir = Path(tempfile.mkdtemp(prefix="aimd-bench-"))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    os.environ.update(env)
    try:
        print(f"uploading {gib} GiB in {files} objects to moto at {endpoint} ...", flush=True)
        total = upload(endpoint, gib, files)
        gb = total / 1e9
        clients = {
            "aimd download": lambda target: [
                sys.executable,
                "-m",
                "aimd",
                "download",
                f"s3://{BUCKET}/{PREFIX}",
                "--target",
                str(target),
                "--concurrency",
                str(CONCURRENCY),
                "--termination-log",
                "",
            ],
            "boto3 TransferManager": lambda target: [
                sys.executable,
                "-c",
                REFERENCE,
                endpoint,
                BUCKET,
                PREFIX,
                str(target),
                str(CONCURRENCY),
            ],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
        for round_ in range(rounds):
            for name, command in clients.items():
                target = workdir / f"{round_}-{name.split()[0]}"
                wall, cpu = run_child(command(target), env)
                results[name].append((wall, cpu))
                print(
                    f"  round {round_ + 1} {name}: {gb / wall * 1000:.0f} MB/s, "
                    f"{cpu / gb:.2f} CPU s/GB",
                    flush=True,
                )
                shutil.rmtree(target)
        print(
            f"\n{total} bytes ({gb:.2f} GB), {files} files, {CONCURRENCY} connections, "
            f"best of {rounds}"
        )
        print(f"{'client':<24}{'MB/s':>10}{'CPU s/GB':>12}")
        for name, runs in results.items():
            wall = min(w for w, _ in runs)
            cpu = min(c for _, c in runs)
            print(f"{name:<24}{gb / wall * 1000:>10.0f}{cpu / gb:>12.2f}")
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=4.0, help="model size in GiB")
    parser.add_argument("--files", type=int, default=16, help="number of objects")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each client")
    options = parser.parse_args()
    main(options.gib, options.files, options.rounds)
