"""aimd's /metrics as numbers: the text exposition format parsed, and quantiles from buckets.

Quantiles are computed the way Prometheus's ``histogram_quantile`` computes them: find the
bucket the rank falls in and interpolate linearly between its bounds (the lowest bucket starts
at 0); a rank in the ``+Inf`` bucket answers the highest finite bound. So a p99 is only as fine
as the buckets around it (controller-runtime's reconcile buckets are 5 ms, 10 ms, 25 ms, ...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition (comments and blank lines skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        samples.append(Sample(name, dict(LABEL.findall(labels or "")), float(value)))
    return samples


async def scrape(session: aiohttp.ClientSession, port: int) -> list[Sample]:
    async with session.get(
        f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=30)
    ) as response:
        return parse(await response.text())


def total(samples: Iterable[Sample], name: str, **where: str | tuple[str, ...]) -> float:
    """The sum of ``name`` over the samples whose labels match ``where`` (a tuple: any of)."""

    def matches(sample: Sample) -> bool:
        for key, wanted in where.items():
            got = sample.labels.get(key)
            if isinstance(wanted, tuple) and got not in wanted:
                return False
            if isinstance(wanted, str) and got != wanted:
                return False
        return True

    return sum(s.value for s in samples if s.name == name and matches(s))


def by_label(samples: Iterable[Sample], name: str, label: str) -> dict[str, float]:
    """``name`` summed per value of ``label``."""
    found: dict[str, float] = {}
    for sample in samples:
        if sample.name == name and label in sample.labels:
            key = sample.labels[label]
            found[key] = found.get(key, 0.0) + sample.value
    return found


def buckets(
    samples: Iterable[Sample], name: str, label: str
) -> dict[str, list[tuple[float, float]]]:
    """Per value of ``label``, the cumulative ``(le, count)`` pairs of histogram ``name``."""
    found: dict[str, list[tuple[float, float]]] = {}
    for sample in samples:
        if sample.name == f"{name}_bucket" and label in sample.labels:
            le = sample.labels["le"]
            bound = math.inf if le == "+Inf" else float(le)
            found.setdefault(sample.labels[label], []).append((bound, sample.value))
    return {key: sorted(pairs) for key, pairs in found.items()}


def histogram_quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of a histogram given as sorted cumulative ``(le, count)`` pairs, as
    Prometheus interpolates it; NaN for an empty histogram."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    observations = cumulative[-1][1]
    rank = q * observations
    previous_bound, previous_count = 0.0, 0.0
    for number, (bound, count) in enumerate(cumulative):
        if count >= rank:
            if math.isinf(bound):
                return cumulative[number - 1][0] if number > 0 else math.nan
            if number == 0 and bound <= 0:
                return bound
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return cumulative[-1][0]
