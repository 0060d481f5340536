"""Where each file's bytes are fetched from, asked once per file rather than once per chunk.

A plan's locator gives a URL per file: a presigned GET for s3:// (signing is local, but costs
CPU), the Hub's ``/resolve`` endpoint for hf://, which answers LFS files with a redirect to a
signed CDN URL. Asking ``/resolve`` for every 16 MiB chunk cost a 140 GB model about 8,700
resolver calls, where the Hub allows anonymous clients 3,000 per 5 minutes. So the target (the
located URL, or the end of its redirects) is kept per file and reused until shortly before it
expires, as its signature says (``X-Amz-Date`` + ``X-Amz-Expires``, or CloudFront's ``Expires``;
:data:`DEFAULT_TTL` when it says nothing). A target refused before that (403: it expired early,
or was revoked) is forgotten and the file located afresh, once per target that has worked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urljoin, urlsplit

from aimd.download.plan import Locator, RemoteFile

# A redirect target whose URL does not say when it expires is asked for again after this long.
DEFAULT_TTL = 600.0
# Renew this long before a target expires (a quarter of its life when that is shorter), so a
# request never starts with a URL about to die.
RENEW_MARGIN = 60.0
MAX_REDIRECTS = 5


@dataclass
class Target:
    """A URL to GET a file's bytes from, with its headers; ``redirected`` when it is where the
    located URL led (the token is then not sent along unless the host is the same);
    ``proven`` once a request to it has succeeded."""

    url: str
    headers: Mapping[str, str]
    renew_at: float
    redirected: bool = False
    proven: bool = False


class Targets:
    """The current target of every file of a plan; the clock is wall time (``time.time``), since
    signatures carry wall-clock expiries."""

    def __init__(self, locate: Locator, clock: Callable[[], float] = time.time) -> None:
        self._locate = locate
        self._clock = clock
        self._targets: dict[str, Target] = {}
        self.located = 0

    def get(self, file: RemoteFile) -> Target:
        target = self._targets.get(file.path)
        now = self._clock()
        if target is None or now >= target.renew_at:
            url, headers = self._locate(file)
            self.located += 1
            target = Target(url, headers, renew_at(url, now))
            self._targets[file.path] = target
        return target

    def redirect(self, file: RemoteFile, origin: Target, location: str) -> Target:
        """``origin`` answered with a redirect to ``location``: that becomes the file's target.
        The origin's headers (the token) go along only to the same host."""
        url = urljoin(origin.url, location)
        same_host = urlsplit(url).netloc == urlsplit(origin.url).netloc
        headers = origin.headers if same_host else {}
        target = Target(url, headers, renew_at(url, self._clock()), redirected=True)
        self._targets[file.path] = target
        return target

    def refused(self, file: RemoteFile, target: Target) -> bool:
        """``target`` answered 403. True when it had worked before (so it likely expired) and
        is forgotten so the file is located again; False when it never worked (a real
        refusal)."""
        if not (target.redirected and target.proven):
            return False
        if self._targets.get(file.path) is target:
            del self._targets[file.path]
        return True


def renew_at(url: str, now: float) -> float:
    """When to stop using ``url`` got at ``now``: shortly before the expiry its signature
    states, else after :data:`DEFAULT_TTL`."""
    expires = signed_expiry(url)
    if expires is None:
        return now + DEFAULT_TTL
    life = max(0.0, expires - now)
    return expires - min(RENEW_MARGIN, life / 4)


def signed_expiry(url: str) -> float | None:
    """The wall-clock second a signed URL stops working, when it says."""
    query = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items() if v}
    try:
        if "x-amz-date" in query and "x-amz-expires" in query:
            signed = datetime.strptime(query["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return signed.timestamp() + float(query["x-amz-expires"])
        if "expires" in query:
            return float(query["expires"])
    except ValueError:
        return None
    return None
