"""The benchmark's tables, in Markdown (they go into the README as printed)."""

from __future__ import annotations

import math
import os
import statistics
from collections import Counter
from collections.abc import Sequence

from tests.bench.converge import audit
from tests.bench.converge.runs import CONTROLLERS, AimdResult, FloorResult

CPUS = os.cpu_count() or 1
SHORT = {"template": "tpl", "templatecache": "tc", "modelcache": "mc", "service": "svc"}


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def floor_seconds(floors: Sequence[FloorResult]) -> float:
    return statistics.mean(f.seconds for f in floors)


def summary(results: Sequence[tuple[AimdResult, Sequence[FloorResult]]]) -> str:
    """The issue's table: one row per size and rate."""
    rows = []
    for run, floors in results:
        size = run.size
        minimum = size.minimum_writes()
        floor = floor_seconds(floors)
        floors_text = "-".join(f"{f.seconds:.1f}" for f in floors)
        latency = ", ".join(
            f"{SHORT[c]} {_ms(run.controllers[c].p50)}/{_ms(run.controllers[c].p99)}"
            for c in CONTROLLERS
        )
        rows.append(
            [
                str(size),
                str(run.rate) + (" (profiled)" if run.profiled else ""),
                f"{run.seconds:.1f}",
                floors_text,
                f"{run.seconds / floor:.2f}",
                f"{run.rate.bound(minimum):.0f}",
                f"{run.writes_without_events:,}",
                f"{minimum:,}",
                f"{run.writes_without_events / minimum:.2f}",
                f"{run.events:,}",
                f"{run.idle_writes} / {run.idle:.0f} s",
                f"{run.rss / 2**20:.0f}",
                latency,
            ]
        )
    header = [
        "services/templates/URIs",
        "QPS/burst",
        "s to all Running",
        "floor s",
        "ratio",
        "limiter bound s",
        "writes (no Events)",
        "minimum",
        "ratio",
        "Events",
        "idle writes",
        "peak RSS MiB",
        "reconcile p50/p99 ms",
    ]
    return _table(header, rows)


def details(run: AimdResult, floors: Sequence[FloorResult]) -> str:
    """Everything else one run measured: per controller, per kind of write, statuses, costs."""
    size = run.size
    objects = size.objects()
    parts = [
        f"### {size} at QPS {run.rate}" + (" (profiled)" if run.profiled else ""),
        "",
        f"load average {run.load[0]} before, {run.load[1]} after; CPU seconds while converging: "
        f"aimd {run.cpu:.1f}, kube-apiserver {run.apiserver_cpu:.1f}, etcd {run.etcd_cpu:.1f}, "
        f"the rest of the machine {run.others_cpu:.1f} (of {CPUS * run.seconds:.0f} on {CPUS} "
        f"cores in {run.seconds:.1f} s); client-side limiter: {run.limiter_wait:.1f} s waited "
        f"over {run.limiter_requests:.0f} requests; aimd's own count of its writes "
        f"(rest_client_requests_total) {run.writes:,}, the audit log's {len(run.audited):,}; "
        "floor writes "
        + ", ".join(
            f"{f.writes:,} (audited {f.audited:,}) in {f.seconds:.1f} s (kube-apiserver "
            f"{f.apiserver_cpu:.0f} CPU s, the rest of the machine {f.others_cpu:.0f})"
            for f in floors
        )
        + ".",
        "",
    ]
    rows = []
    for name in CONTROLLERS:
        c = run.controllers[name]
        rows.append(
            [
                name,
                f"{objects[name]:,}",
                f"{c.reconciles:,.0f}",
                f"{c.reconciles / objects[name]:.1f}",
                f"{c.adds:,.0f}",
                f"{c.errors:,.0f}",
                f"{_ms(c.p50)} / {_ms(c.p99)}",
                f"{_ms(c.queue_p50)} / {_ms(c.queue_p99)}",
                f"{c.peak_depth:,.0f}",
            ]
        )
    parts += [
        _table(
            [
                "controller",
                "keys",
                "reconciles",
                "per key",
                "queue adds",
                "errors",
                "reconcile p50/p99 ms",
                "queue wait p50/p99 ms",
                "peak depth",
            ],
            rows,
        ),
        "",
    ]
    writes = audit.without_events(run.audited)
    kinds = audit.per_kind(writes)
    touches = audit.per_touch(writes)
    minimum = size.minimum()
    rows = []
    for kind in sorted(set(kinds) | set(minimum)):
        extra = kinds[kind] - minimum.get(kind, 0)
        what = ", ".join(
            f"{what} {n:,}"
            for (resource, verb, what), n in sorted(touches.items(), key=lambda t: -t[1])
            if (resource, verb) == kind
        )
        rows.append(
            [
                f"{kind[1]} {kind[0]}",
                f"{minimum.get(kind, 0):,}",
                f"{kinds[kind]:,}",
                f"{extra:+,}",
                what,
            ]
        )
    parts += [_table(["write", "minimum", "aimd", "extra", "what they wrote"], rows), ""]
    refused = Counter(f"{w.verb} {w.resource} → {w.code}" for w in audit.refused(run.audited))
    if refused:
        parts += ["refused: " + ", ".join(f"{k} x{n}" for k, n in refused.most_common()), ""]
    parts.append("status sequences (objects that wrote each):")
    for resource, sequences in sorted(audit.status_sequences(writes).items()):
        top = ", ".join(f"{seq} x{n:,}" for seq, n in sequences.most_common(4))
        parts.append(f"- {resource}: {top}")
    event_reasons = Counter(w.verb for w in audit.events(run.audited))
    dropped = ", ".join(f"{k} {v:.0f}" for k, v in sorted(run.events_dropped.items()))
    parts += ["", f"Event writes: {dict(event_reasons)}; Events dropped: {dropped}"]
    if run.warnings:
        parts.append(
            "aimd logged: " + "; ".join(f"{k} x{n}" for k, n in run.warnings.most_common(5))
        )
    return "\n".join(parts) + "\n"
