"""Pure decisions of the transfer engine: when a file's download URL is reused or renewed,
which chunk a worker takes next, how a file's check is fed in order, when progress is reported."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aimd.download import targets
from aimd.download.command import report_delays
from aimd.download.fetch import _route
from aimd.download.partial import Chunk, PartialFile
from aimd.download.plan import RemoteFile
from aimd.download.targets import Targets, renew_at, signed_expiry
from aimd.download.transfer import _Schedule
from aimd.download.verify import InOrder

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_signed_urls_say_when_they_expire() -> None:
    s3 = "https://b.s3.example/k?X-Amz-Date=20270115T080000Z&X-Amz-Expires=3600&X-Amz-Signature=x"
    signed = datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert signed_expiry(s3) == signed + 3600
    assert signed_expiry("https://cdn/x?Expires=1800000600&Signature=s") == 1_800_000_600.0
    assert signed_expiry("https://cdn/x?token=abc") is None
    assert signed_expiry("https://cdn/x?Expires=soon") is None


def test_renewal_comes_before_expiry() -> None:
    assert renew_at(f"https://cdn/x?Expires={NOW + 3600:.0f}", NOW) == NOW + 3600 - 60
    assert renew_at(f"https://cdn/x?Expires={NOW + 40:.0f}", NOW) == NOW + 30, "a quarter of it"
    assert renew_at("https://cdn/x", NOW) == NOW + targets.DEFAULT_TTL


FILE = RemoteFile("model.safetensors", 64 << 20, "blob")


class Locator:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, file: RemoteFile) -> tuple[str, Mapping[str, str]]:
        self.calls += 1
        return f"https://hub/org/m/resolve/sha/{file.path}", {"authorization": "Bearer t"}


def test_a_redirect_target_is_reused_until_it_is_about_to_expire() -> None:
    locate = Locator()
    clock = Clock()
    known = Targets(locate, clock)
    first = known.get(FILE)
    cdn = known.redirect(FILE, first, f"https://cdn.example/blob?Expires={NOW + 600:.0f}")
    assert cdn.headers == {}, "the token stays with the hub's host"
    for _ in range(100):
        assert known.get(FILE) is cdn
    assert locate.calls == 1
    clock.now = NOW + 600 - 59
    assert known.get(FILE).url.startswith("https://hub/"), "renewed before it expires"
    assert locate.calls == 2


def test_a_relative_redirect_keeps_the_headers() -> None:
    known = Targets(Locator(), Clock())
    moved = known.redirect(FILE, known.get(FILE), "/api/resolve-cache/x")
    assert moved.url == "https://hub/api/resolve-cache/x"
    assert moved.headers == {"authorization": "Bearer t"}


def test_a_403_from_a_target_that_worked_means_locate_again() -> None:
    locate = Locator()
    known = Targets(locate, Clock())
    cdn = known.redirect(FILE, known.get(FILE), "https://cdn.example/blob")
    assert not known.refused(FILE, cdn), "a target that never worked was refused for real"
    cdn.proven = True
    assert known.refused(FILE, cdn)
    assert not known.get(FILE).redirected
    assert locate.calls == 2


def partial(tmp_path: Path, name: str, chunks: int) -> PartialFile:
    file = PartialFile(RemoteFile(name, chunks << 20, name), tmp_path, tmp_path)
    file.prepare(1 << 20)
    return file


def where(chunk: Chunk | None) -> tuple[str, int] | None:
    return None if chunk is None else (chunk.file.remote.path, chunk.index)


def test_workers_keep_to_their_file_while_others_are_unstarted(tmp_path: Path) -> None:
    schedule = _Schedule([partial(tmp_path, n, 3) for n in "abc"])
    first = schedule.take(None)
    assert where(first) == ("a", 0)
    assert where(schedule.take(None)) == ("b", 0)
    assert where(schedule.take(first)) == ("a", 1), "the next chunk of its own file"
    assert where(schedule.take(None)) == ("c", 0)
    assert where(schedule.take(None)) == ("a", 2), "then what is left, in plan order"


def test_one_file_is_shared_in_order(tmp_path: Path) -> None:
    schedule = _Schedule([partial(tmp_path, "big", 6)])
    taken = [schedule.take(None) for _ in range(4)]
    assert [where(c) for c in taken] == [("big", i) for i in range(4)]
    assert where(schedule.take(taken[0])) == ("big", 4)
    assert len(schedule) == 1


def test_in_order_check_takes_blocks_at_its_position_and_reads_back_the_rest(
    tmp_path: Path,
) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "f"
    path.write_bytes(data)
    check = InOrder(hashlib.sha256())
    view = memoryview(data)
    check.offer(view[1 << 20 : 2 << 20], 1 << 20)
    assert check.position == 0, "out of order: left for the read-back"
    check.offer(view[: 1 << 20], 0)
    assert check.position == 1 << 20
    fd = os.open(path, os.O_RDONLY)
    try:
        check.catch_up(fd, 3 << 20)
    finally:
        os.close(fd)
    assert check.check.hexdigest() == hashlib.sha256(data).hexdigest()


def test_reports_start_fast_then_settle_at_the_interval() -> None:
    delays = list(itertools.islice(report_delays(10), 8))
    assert delays == [1, 2, 4, 8, 10, 10, 10, 10]
    assert list(itertools.islice(report_delays(0.3), 3)) == [0.3, 0.3, 0.3]


def writes_in(seconds: float, delays: list[float]) -> int:
    """Reports a download of ``seconds`` makes: one at the start, one after each delay."""
    elapsed, writes = 0.0, 1
    for delay in delays:
        elapsed += delay
        if elapsed >= seconds:
            return writes
        writes += 1
    return writes


def test_a_long_download_reports_at_most_once_per_interval() -> None:
    delays = list(itertools.islice(report_delays(10), 1000))
    assert writes_in(60, delays) == 9
    assert writes_in(600, delays) - writes_in(540, delays) == 6
    old = [3.0] * 1000
    assert writes_in(60, old) == 20, "the fixed 3 s it replaces"


def test_requests_go_through_the_proxies_the_environment_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    direct = _route("https://cdn.example/a/b?sig=1")
    assert (direct.key, direct.target, direct.tunnel) == (
        ("https", "cdn.example", 443, True),
        "/a/b?sig=1",
        None,
    )
    monkeypatch.setenv("https_proxy", "http://user:pw@proxy.local:3128")
    monkeypatch.setenv("http_proxy", "http://proxy.local:3128")
    monkeypatch.setenv("no_proxy", "127.0.0.1,.internal")
    tunnelled = _route("https://cdn.example/a")
    assert tunnelled.key[1:] == ("proxy.local", 3128, True)
    assert tunnelled.tunnel == ("cdn.example", 443)
    assert tunnelled.tunnel_headers["Proxy-Authorization"].startswith("Basic ")
    plain = _route("http://store.example:9000/bucket/key")
    assert plain.key == ("proxy", "proxy.local", 3128, False)
    assert plain.target == "http://store.example:9000/bucket/key", "absolute URI to a proxy"
    assert _route("http://127.0.0.1:9000/bucket/key").target == "/bucket/key"
    assert _route("https://s3.internal/k").tunnel is None
