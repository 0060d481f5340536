"""`aimd download` / `aimd probe` for s3:// against a real S3 protocol server (moto's server
mode, started as a subprocess on a free port)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from aimd.download.command import download
from aimd.download.reasons import EXIT_CODES, Reason
from tests.integration.test_download_hf import args_for, last_json
from tests.support import eventually

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_moto(extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free loopback port, once it answers HTTP; returns the process and
    its endpoint. If it dies or never answers, the failure carries its own log's tail."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(extra_env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def tail() -> str:
        return Path(log.name).read_text(errors="replace")[-2000:]

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{tail()}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2) as answer:
                if answer.status == 200:
                    return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"moto server did not answer within 60s:\n{tail()}")


def s3_client(endpoint: str, *, checksums: bool = True) -> S3Client:
    """A boto3 client; without ``checksums`` it sends none on upload (as before boto3 1.36)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            request_checksum_calculation="when_supported" if checksums else "when_required"
        ),
    )


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    process, endpoint = start_moto()
    yield endpoint
    process.terminate()
    process.wait(10)


@pytest.fixture
def s3_env(moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AIMD_MODEL_CACHE_NAME", "AIMD_MODEL_CACHE_NAMESPACE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return moto


def upload_model(endpoint: str, bucket: str) -> dict[str, bytes]:
    """A bucket with a model under ``models/m``, each file with a different proof of its bytes:
    one sent without a checksum (its single-part ETag, an md5), one with a CRC64NVME (what AWS
    keeps when the uploader sends none), one with boto3's default CRC32, a 12 MiB one uploaded in
    5 MiB parts (a COMPOSITE CRC32, so its multipart ETag); and a neighbour prefix that must not
    be taken."""
    from boto3.s3.transfer import TransferConfig

    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    files = {
        "config.json": b'{"hidden_size": 64}',
        "generation_config.json": b'{"max_length": 64}',
        "weights/model.safetensors": os.urandom(12 << 20),
        "tokenizer.json": os.urandom(300_000),
    }
    parts = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    for name, data in files.items():
        path = Path(f"/tmp/{bucket}-{name.replace('/', '_')}")
        path.write_bytes(data)
        sender = s3_client(endpoint, checksums=False) if name == "config.json" else s3
        extra = {"ChecksumAlgorithm": "CRC64NVME"} if name.startswith("generation") else {}
        sender.upload_file(str(path), bucket, f"models/m/{name}", Config=parts, ExtraArgs=extra)
        path.unlink()
    s3.put_object(Bucket=bucket, Key="models/m-v2/other.bin", Body=b"not part of the model")
    return files


async def test_full_download_verifies_checksums_and_etags(
    s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = await asyncio.to_thread(upload_model, s3_env, "full")
    target = tmp_path / "m"
    assert await download(args_for("s3://full/models/m", target)) == 0
    assert last_json(capsys)["files"] == len(files)
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    assert not (target / "other.bin").exists()
    manifest = json.loads((target / ".aimd" / "manifest.json").read_text())
    verified = {name: entry["verifiedBy"] for name, entry in manifest["files"].items()}
    assert verified == {
        "config.json": "md5",
        "generation_config.json": "crc64nvme",
        "tokenizer.json": "crc32",
        "weights/model.safetensors": "s3-multipart-md5",
    }


async def test_probe_sums_sizes(
    s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from aimd.download.probe import configure, probe

    files = await asyncio.to_thread(upload_model, s3_env, "probed")
    parser = argparse.ArgumentParser()
    configure(parser)
    assert await probe(parser.parse_args(["s3://probed/models/m", "--termination-log", ""])) == 0
    assert last_json(capsys) == {
        "sizeBytes": sum(len(d) for d in files.values()),
        "revision": None,
        "files": len(files),
    }


async def test_missing_bucket_and_prefix_are_source_not_found(
    s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(upload_model, s3_env, "present")
    for uri in ("s3://absent/models/m", "s3://present/models/nothing"):
        assert await download(args_for(uri, tmp_path / "m")) == EXIT_CODES[Reason.SOURCE_NOT_FOUND]
        assert last_json(capsys)["reason"] == "SourceNotFound"


async def test_bad_credentials_are_auth_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks every request's keys against its IAM,
    # where these keys do not exist: S3's InvalidAccessKeyId.
    process, endpoint = await asyncio.to_thread(start_moto, {"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        code = await download(args_for("s3://bucket/models/m", tmp_path / "m"))
        assert code == EXIT_CODES[Reason.AUTH_FAILED]
        failure = last_json(capsys)
        assert failure["reason"] == "AuthFailed"
        assert "AWS_ACCESS_KEY_ID" in failure["message"]
    finally:
        process.terminate()
        process.wait(10)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


async def test_corruption_on_disk_between_attempts_is_detected(
    s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A partial file damaged between attempts (bit rot, a bad disk) fails the md5 check when
    the file completes; the partial is dropped, and the next attempt fetches it whole."""
    files = await asyncio.to_thread(upload_model, s3_env, "rotten")
    target = tmp_path / "m"
    size = len(files["weights/model.safetensors"])

    def partial_with_data() -> Path | None:
        for part in (target / ".aimd" / "partial").glob("*.part"):
            with contextlib.suppress(FileNotFoundError):  # completed and moved meanwhile
                progress = part.with_suffix(".progress").read_bytes()
                if part.stat().st_size == size and any(
                    progress[24 + 8 * i : 32 + 8 * i] != bytes(8) for i in range(12)
                ):
                    return part
        return None

    # Catch the first attempt with some chunks on disk; on a fast machine it may finish before
    # that is seen, and then the scenario starts over.
    for _ in range(5):
        shutil.rmtree(target, ignore_errors=True)
        attempt = asyncio.create_task(download(args_for("s3://rotten/models/m", target)))

        async def caught(attempt: asyncio.Task[int] = attempt) -> Path | bool:
            return partial_with_data() or attempt.done()

        part = await eventually(caught, timeout=60, interval=0.001, what="a partial file")
        attempt.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await attempt
        if isinstance(part, Path):
            break
    else:
        pytest.fail("every attempt finished before a partial file could be caught")
    capsys.readouterr()
    progress = part.with_suffix(".progress").read_bytes()
    done = [int.from_bytes(progress[24 + 8 * i : 32 + 8 * i], "little") for i in range(12)]
    chunk = next(i for i, n in enumerate(done) if n)
    flip_byte(part, chunk << 20)

    code = await download(args_for("s3://rotten/models/m", target))
    assert code == EXIT_CODES[Reason.VERIFICATION_FAILED], last_json(capsys)
    assert last_json(capsys)["reason"] == "VerificationFailed"
    assert await download(args_for("s3://rotten/models/m", target)) == 0
    assert (target / "weights/model.safetensors").read_bytes() == files["weights/model.safetensors"]


async def test_a_uri_naming_one_object_downloads_that_object(
    s3_env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = await asyncio.to_thread(upload_model, s3_env, "single")
    target = tmp_path / "m"
    assert await download(args_for("s3://single/models/m/tokenizer.json", target)) == 0
    assert (target / "tokenizer.json").read_bytes() == files["tokenizer.json"]
    assert last_json(capsys)["files"] == 1
