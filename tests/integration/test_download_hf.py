"""`aimd download` / `aimd probe` for hf:// against a local server that speaks the hub's API.

The local hub (:mod:`aimd.dev.localhub`, also what `aimd dev` downloads from) serves what
huggingface_hub and the download engine use. It counts the bytes it serves, so resume is proven
by what crossed the wire, and it can throttle, stall, and corrupt on demand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aimd.dev.localhub import DEMO_COMMIT as COMMIT
from aimd.dev.localhub import LocalHub, serve_hub
from aimd.download import partial
from aimd.download.command import configure, download
from aimd.download.manifest import STATE_DIR
from aimd.download.probe import probe
from aimd.download.reasons import EXIT_CODES, Reason
from aimd.download.source import resolve
from tests.support import eventually

TOKEN = "hf_good_token"


@pytest.fixture
async def hub(unused_tcp_port: int) -> AsyncIterator[LocalHub]:
    async with serve_hub(unused_tcp_port) as fake:
        yield fake


def args_for(uri: str, target: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser)
    return parser.parse_args(
        [
            uri,
            "--target",
            str(target),
            "--termination-log",
            str(target.parent / "termination"),
            "--chunk-size",
            "1",
            "--concurrency",
            "4",
            *extra,
        ]
    )


@pytest.fixture
def hf_env(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("AIMD_MODEL_CACHE_NAME", "AIMD_MODEL_CACHE_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    return hub


def last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return result


async def test_full_download_is_verified_and_pinned(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hf_env.add_model()
    target = tmp_path / "model"
    assert await download(args_for("hf://org/model", target)) == 0
    result = last_json(capsys)
    assert result["result"] == "Succeeded"
    assert result["revision"] == COMMIT
    assert hf_env.redirects > 0, "LFS files come through the hub's redirect, as from the real hub"
    for name, data in repo.files.items():
        assert (target / name).read_bytes() == data
    manifest = json.loads((target / ".aimd" / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["revision"] == COMMIT
    assert manifest["files"]["config.json"]["verifiedBy"] == "git-sha1"
    assert manifest["files"]["model-00002-of-00002.safetensors"]["verifiedBy"] == "sha256"
    assert not list((target / ".aimd" / "partial").iterdir())
    assert json.loads((tmp_path / "termination").read_text())["result"] == "Succeeded"

    served = hf_env.served
    assert await download(args_for("hf://org/model", target)) == 0
    assert hf_env.served == served, "finished files are skipped"
    assert last_json(capsys)["skippedFiles"] == 3


async def test_a_new_revision_replaces_only_what_changed(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The branch moved: files whose content is unchanged stay, changed ones are replaced,
    and files the new revision no longer has are removed; other files are left alone."""
    repo = hf_env.add_model()
    repo.files["old.bin"] = b"only in the first revision"
    target = tmp_path / "m"
    assert await download(args_for("hf://org/model", target)) == 0
    (target / "notes.txt").write_text("a person's file")
    del repo.files["old.bin"]
    repo.files["config.json"] = b'{"hidden_size": 128}'
    repo.commit = "f" * 40
    hf_env.served = 0
    assert await download(args_for("hf://org/model", target)) == 0
    assert last_json(capsys)["revision"] == "f" * 40
    assert hf_env.served == len(repo.files["config.json"])
    assert (target / "config.json").read_bytes() == repo.files["config.json"]
    assert not (target / "old.bin").exists()
    assert (target / "notes.txt").exists()


async def test_probe_reports_size_and_commit(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hf_env.add_model()
    parser = argparse.ArgumentParser()
    from aimd.download.probe import configure as configure_probe

    configure_probe(parser)
    for revision in ("main", COMMIT):
        args = parser.parse_args(
            [f"hf://org/model@{revision}", "--termination-log", str(tmp_path / "t")]
        )
        assert await probe(args) == 0
        assert last_json(capsys) == {
            "sizeBytes": sum(len(d) for d in repo.files.values()),
            "revision": COMMIT,
            "files": 3,
        }
    assert hf_env.served == 0


async def test_token_is_sent_and_a_bad_one_is_auth_failed(
    hf_env: LocalHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hf_env.add_model()
    hf_env.token = TOKEN
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    code = await download(args_for("hf://org/model", tmp_path / "m"))
    assert code == EXIT_CODES[Reason.AUTH_FAILED]
    failure = last_json(capsys)
    assert failure["reason"] == "AuthFailed"
    assert "HF_TOKEN" in failure["message"]
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert await download(args_for("hf://org/model", tmp_path / "m")) == 0


async def test_missing_repo_and_revision_are_source_not_found(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model()
    for uri in ("hf://org/nothing", "hf://org/model@no-such-branch"):
        assert await download(args_for(uri, tmp_path / "m")) == EXIT_CODES[Reason.SOURCE_NOT_FOUND]
        assert last_json(capsys)["reason"] == "SourceNotFound"


async def test_corrupted_file_is_verification_failed_and_not_kept(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model()
    hf_env.corrupt.add("model-00002-of-00002.safetensors")
    target = tmp_path / "m"
    code = await download(args_for("hf://org/model", target))
    assert code == EXIT_CODES[Reason.VERIFICATION_FAILED]
    failure = last_json(capsys)
    assert failure["reason"] == "VerificationFailed"
    assert "model-00002-of-00002.safetensors" in failure["message"]
    assert not (target / "model-00002-of-00002.safetensors").exists()
    hf_env.corrupt.clear()
    assert await download(args_for("hf://org/model", target)) == 0


async def test_stall_fails_the_attempt(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model()
    hf_env.stall_after = 2 << 20
    code = await download(args_for("hf://org/model", tmp_path / "m", "--stall-timeout", "1.5"))
    assert code == EXIT_CODES[Reason.STALLED]
    assert last_json(capsys)["reason"] == "Stalled"


async def test_throttling_is_waited_out_as_retry_after_asks(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hf_env.add_model()
    hf_env.throttle = 3
    hf_env.retry_after = "0.2"
    assert await download(args_for("hf://org/model", tmp_path / "m")) == 0
    assert hf_env.throttled == 3
    for name, data in repo.files.items():
        assert (tmp_path / "m" / name).read_bytes() == data


async def test_throttled_listing_is_waited_out(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model()
    hf_env.throttle_listing = 2
    hf_env.retry_after = "0.2"
    assert await download(args_for("hf://org/model", tmp_path / "m")) == 0
    assert hf_env.throttle_listing == 0


async def test_throttling_longer_than_allowed_is_rate_limited(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model()
    hf_env.throttle = 1_000_000
    hf_env.retry_after = "30"
    code = await download(args_for("hf://org/model", tmp_path / "m", "--max-retry-after", "5"))
    assert code == EXIT_CODES[Reason.RATE_LIMITED]
    failure = last_json(capsys)
    assert failure["reason"] == "RateLimited"
    assert failure["retryAfterSeconds"] == 30


async def test_one_attempt_at_a_time_per_directory(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second attempt into the same directory waits for the first; one that waits longer than
    its stall timeout gives up without touching the files."""
    repo = hf_env.add_model()
    hf_env.piece_delay = 0.1
    target = tmp_path / "m"
    first = asyncio.create_task(download(args_for("hf://org/model", target)))

    async def started() -> bool:
        return hf_env.served > 0

    await eventually(started, timeout=60, interval=0.01, what="the first attempt to start")
    second = await download(args_for("hf://org/model", target, "--stall-timeout", "0.5"))
    assert second == EXIT_CODES[Reason.STALLED]
    assert "another download" in last_json(capsys)["message"]
    hf_env.piece_delay = 0
    assert await first == 0
    for name, data in repo.files.items():
        assert (target / name).read_bytes() == data


def recorded_bytes(target: Path) -> int:
    """What the engine's own bookkeeping says is on disk: verified files plus the per-chunk
    counters of partial files (the format of :mod:`aimd.download.transfer`)."""
    manifest_path = target / ".aimd" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}}
    total: int = sum(entry["size"] for entry in manifest["files"].values())
    for progress in (target / ".aimd" / "partial").glob("*.progress"):
        raw = progress.read_bytes()
        _, size, chunk = partial.HEADER.unpack_from(raw)
        count = -(-size // chunk)
        total += sum(
            struct.unpack_from("<Q", raw, partial.HEADER.size + 8 * i)[0] for i in range(count)
        )
    return total


async def test_resume_after_kill_fetches_only_missing_bytes(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = hf_env.add_model(size_mib=8)
    total = sum(len(d) for d in repo.files.values())
    target = tmp_path / "m"
    hf_env.piece_delay = 0.01
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        "download",
        "hf://org/model",
        "--target",
        str(target),
        "--chunk-size",
        "1",
        "--concurrency",
        "4",
        "--termination-log",
        "",
        env={**os.environ, "HF_ENDPOINT": hf_env.url},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )

    async def some_progress() -> bool:
        return hf_env.served > total // 3

    await eventually(some_progress, timeout=60, interval=0.05, what="a third of the model served")
    process.send_signal(signal.SIGKILL)
    await process.wait()

    on_disk = recorded_bytes(target)
    assert 0 < on_disk < total
    hf_env.piece_delay = 0
    hf_env.served = 0
    assert await download(args_for("hf://org/model", target)) == 0
    assert hf_env.served == total - on_disk, "bytes already on disk were fetched again"
    assert last_json(capsys)["fetchedBytes"] == total - on_disk
    for name, data in repo.files.items():
        assert (target / name).read_bytes() == data


async def test_a_file_resumed_at_an_odd_offset_is_completed_exactly(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A partial file whose first chunk holds 1,000 bytes (not a multiple of a block, as an
    attempt cut off mid-read leaves it): the rest is fetched once and lands at its offsets,
    realigned for direct writes."""
    data = os.urandom((3 << 20) + 123)
    hf_env.add("org/odd", {"weights.safetensors": data})
    target = tmp_path / "m"
    plan = await resolve("hf://org/odd")
    partial_dir = target / STATE_DIR / partial.PARTIAL_DIR
    partial_dir.mkdir(parents=True)
    remote = next(f for f in plan.files if f.path == "weights.safetensors")
    resumed = partial.PartialFile(remote, target, partial_dir)
    resumed.prepare(1 << 20)
    os.pwrite(resumed.open(), data[:1000], 0)
    resumed.chunks[0].done = 1000
    resumed.record(resumed.chunks[0])
    resumed.close()
    hf_env.served = 0
    assert await download(args_for("hf://org/odd", target)) == 0, last_json(capsys)
    assert hf_env.served == sum(remote.size for remote in plan.files) - 1000
    assert (target / "weights.safetensors").read_bytes() == data


def fill(path: Path) -> None:
    """Writes to ``path`` until the filesystem is full."""
    with open(path, "wb") as filler:
        try:
            while True:
                filler.write(bytes(1 << 16))
                filler.flush()
        except OSError:
            pass


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """A size-limited filesystem: a real tmpfs, so ENOSPC comes from the kernel. Mounting
    needs root (the test machines and CI run as root); elsewhere these tests are skipped."""
    mounts: list[Path] = []

    def make(size: str) -> Path:
        path = tmp_path / f"disk{len(mounts)}"
        path.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_too_small_volume_is_storage_full_before_fetching(
    hf_env: LocalHub, tiny_disk: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    hf_env.add_model(size_mib=6)
    disk = tiny_disk("2m")
    code = await download(args_for("hf://org/model", disk / "model"))
    assert code == EXIT_CODES[Reason.STORAGE_FULL]
    failure = last_json(capsys)
    assert failure["reason"] == "StorageFull"
    assert "spec.size" in failure["message"]
    assert hf_env.served == 0


async def test_disk_filling_up_during_download_is_storage_full(
    hf_env: LocalHub, tiny_disk: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Space is there when the download starts, then something else takes it: the kernel's
    ENOSPC on a write becomes StorageFull, and what was written is kept for the retry."""
    hf_env.add_model(size_mib=6)
    hf_env.piece_delay = 0.005
    disk = tiny_disk("8m")
    attempt = asyncio.create_task(download(args_for("hf://org/model", disk / "model")))

    async def started() -> bool:
        return hf_env.served > (1 << 20)

    await eventually(started, timeout=60, interval=0.01, what="the download to start")
    await asyncio.to_thread(fill, disk / "filler")
    assert await attempt == EXIT_CODES[Reason.STORAGE_FULL]
    assert last_json(capsys)["reason"] == "StorageFull"


async def test_each_file_is_resolved_once_not_once_per_chunk(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hub limits resolver calls (3,000 per 5 minutes for anonymous users): a file cut into
    many chunks asks /resolve once and reuses where it redirected."""
    repo = hf_env.add_model(size_mib=8)
    assert await download(args_for("hf://org/model", tmp_path / "m")) == 0
    assert last_json(capsys)["result"] == "Succeeded"
    assert max(len(d) for d in repo.files.values()) > 3 << 20, "several 1 MiB chunks per file"
    assert hf_env.resolves == dict.fromkeys(repo.files, 1)


async def test_an_expired_redirect_target_is_resolved_again(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CDN URL a resolve redirects to dies without saying when (here after two requests):
    the CDN's 403 sends the download back to /resolve for that file, and it completes, asking
    again only when its target died, never per chunk."""
    repo = hf_env.add_model(size_mib=8)
    hf_env.redirect_uses = 2
    target = tmp_path / "m"
    assert await download(args_for("hf://org/model", target, "--concurrency", "2")) == 0
    for name, data in repo.files.items():
        assert (target / name).read_bytes() == data
    assert hf_env.expired > 0
    for name in repo.lfs:
        chunks = -(-len(repo.files[name]) // (1 << 20))
        assert 1 < hf_env.resolves[name] <= -(-chunks // 2) + 1, hf_env.resolves


async def test_a_slow_steady_source_is_not_a_stall(
    hf_env: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bytes count as they arrive, not per filled buffer: a source sending 64 KiB every quarter
    second (a 1 MiB chunk takes 4 s) never leaves the download 2 s without news."""
    data = os.urandom(1 << 20)
    hf_env.add("org/slow", {"weights.safetensors": data})
    hf_env.piece_delay = 0.25
    target = tmp_path / "m"
    args = args_for("hf://org/slow", target, "--stall-timeout", "2", "--concurrency", "1")
    assert await download(args) == 0, last_json(capsys)
    assert (target / "weights.safetensors").read_bytes() == data
