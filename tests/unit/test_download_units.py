"""Pure pieces of the downloader: URI parsing, digests, reasons, progress, result output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aimd.download.plan import Digest, safe_relative_path
from aimd.download.reasons import EXIT_CODES, REASON_BY_EXIT_CODE, DownloadFailed, Reason
from aimd.download.report import TERMINATION_LIMIT, emit, failure_body, progress
from aimd.download.uri import HfUri, S3Uri, parse
from aimd.download.verify import checker, feed_range, file_matches


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("hf://org/name", HfUri("org/name", None)),
        ("hf://meta-llama/Llama-3.1-8B@main", HfUri("meta-llama/Llama-3.1-8B", "main")),
        ("hf://org/name@refs/pr/1", HfUri("org/name", "refs/pr/1")),
        ("s3://bucket", S3Uri("bucket", "")),
        ("s3://bucket/models/llama/", S3Uri("bucket", "models/llama")),
    ],
)
def test_uris_parse(uri: str, parsed: HfUri | S3Uri) -> None:
    assert parse(uri) == parsed


@pytest.mark.parametrize(
    "uri", ["hf://name", "hf://org/name@", "hf://a/b/c", "s3://", "s3://b/../etc", "gs://b/x", ""]
)
def test_bad_uris_are_invalid_source(uri: str) -> None:
    with pytest.raises(DownloadFailed) as failure:
        parse(uri)
    assert failure.value.reason == Reason.INVALID_SOURCE
    assert failure.value.exit_code == EXIT_CODES[Reason.INVALID_SOURCE]


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "", "."])
def test_paths_cannot_escape_the_target(name: str) -> None:
    with pytest.raises(DownloadFailed) as failure:
        safe_relative_path("s3://b/p", name)
    assert failure.value.reason == Reason.INVALID_SOURCE


def test_every_reason_has_its_own_nonzero_exit_code() -> None:
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert 0 not in EXIT_CODES.values()
    assert 2 not in EXIT_CODES.values(), "2 is argparse's usage error"
    assert all(REASON_BY_EXIT_CODE[code] == reason for reason, code in EXIT_CODES.items())
    assert {r.value for r in EXIT_CODES} >= {
        "SourceNotFound",
        "AuthFailed",
        "RateLimited",
        "StorageFull",
        "VerificationFailed",
        "Stalled",
        "NetworkError",
        "InvalidSource",
    }


def digest_of(algorithm: str, data: bytes, part_size: int = 0) -> str:
    check = checker(Digest(algorithm, "", part_size), len(data))  # type: ignore[arg-type]
    for start in range(0, len(data), 1000):
        check.update(data[start : start + 1000])
    return check.hexdigest()


def test_digests_match_what_sources_publish() -> None:
    data = os.urandom(25_000)
    assert digest_of("sha256", data) == hashlib.sha256(data).hexdigest()
    assert digest_of("md5", data) == hashlib.md5(data).hexdigest()
    # `git hash-object` of a file: sha1 over "blob <size>\0" + content.
    assert digest_of("git-sha1", b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    parts = [data[i : i + 10_000] for i in range(0, len(data), 10_000)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert digest_of("s3-multipart-md5", data, 10_000) == f"{expected}-3"
    assert digest_of("sha1", data) == hashlib.sha1(data).hexdigest()


@pytest.mark.parametrize(
    ("algorithm", "check_value"),
    # The catalogue's check values: each CRC of the nine bytes "123456789", fed in pieces.
    [("crc64nvme", "ae8b14860a799888"), ("crc32c", "e3069283"), ("crc32", "cbf43926")],
)
def test_crcs_are_the_ones_s3_publishes(algorithm: str, check_value: str) -> None:
    check = checker(Digest(algorithm, ""), 9)  # type: ignore[arg-type]
    for piece in (b"1234", b"", b"56789"):
        check.update(memoryview(piece))
    assert check.hexdigest() == check_value


def test_file_check_reads_back_what_is_on_disk(tmp_path: Path) -> None:
    data = os.urandom(5 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    good = Digest("sha256", hashlib.sha256(data).hexdigest())
    assert file_matches(str(path), good, len(data))
    assert not file_matches(str(path), Digest("sha256", "0" * 64), len(data))
    check = checker(good, len(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert feed_range(fd, check, 0, 3 << 20) + feed_range(fd, check, 3 << 20, 5 << 20) == len(
            data
        )
    finally:
        os.close(fd)
    assert check.hexdigest() == good.value


@pytest.mark.parametrize(
    ("total", "done", "percentage"), [(0, 0, 100), (200, 0, 0), (200, 199, 99), (200, 200, 100)]
)
def test_progress_shape(total: int, done: int, percentage: int) -> None:
    assert progress(total, done, 5) == {
        "totalBytes": total,
        "downloadedBytes": done,
        "percentage": percentage,
        "bytesPerSecond": 5,
    }


def test_result_goes_to_stdout_and_termination_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "termination-log"
    failure = DownloadFailed(Reason.RATE_LIMITED, "slow down", retry_after=12.5)
    emit(failure_body(failure), str(log))
    line = json.loads(capsys.readouterr().out)
    assert line == {"reason": "RateLimited", "message": "slow down", "retryAfterSeconds": 12}
    assert json.loads(log.read_text()) == line

    emit({"reason": "NetworkError", "message": "x" * 10_000}, str(log))
    assert len(log.read_bytes()) <= TERMINATION_LIMIT
    assert json.loads(log.read_text())["reason"] == "NetworkError"

    emit({"result": "Succeeded"}, str(tmp_path / "no" / "such" / "dir"))
    assert "Succeeded" in capsys.readouterr().out
