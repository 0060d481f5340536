"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from aimd.kube.client import KubeClient

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "",
) -> T:
    """Polls `probe` until it returns something other than None or False, and returns that.

    Timeouts are generous on purpose: the tests assert on behaviour, never on speed.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last is not None and last is not False:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what or probe}; last: {last!r}"
    )


def sample(name: str) -> dict[str, Any]:
    """A manifest from manifests/samples/, as a fresh dict the test may change."""
    loaded: dict[str, Any] = yaml.safe_load(
        (REPO / "manifests" / "samples" / f"{name}.yaml").read_text()
    )
    return loaded


@dataclass
class NoAuth:
    """Credentials for a KubeClient talking to a plain local HTTP server (no auth, no TLS)."""

    host: str
    ssl: bool = False
    server_hostname: str | None = None
    proxy: str | None = None

    async def authorization(self) -> str | None:
        return None

    async def invalidate(self) -> None:
        return None


class RecordingClient(KubeClient):
    """A real client that also records each request it sent, as (method, path)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.methods: list[tuple[str, str]] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        self.methods.append((method.upper(), path))
        return await super().request(
            method, path, params=params, body=body, content_type=content_type
        )

    def sent_to(self, suffix: str) -> int:
        """How many requests went to a path ending in ``suffix``."""
        return sum(path.endswith(suffix) for _, path in self.methods)
