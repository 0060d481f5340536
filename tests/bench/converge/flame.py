"""py-spy's collapsed stacks (``--format raw``) read back: a top list, a breakdown by what the
time was spent on, and a flame graph.

py-spy samples the running aimd without stopping it (``--nonblocking``) and, by default, only
when a thread is on the CPU, so an event loop waiting in ``epoll`` costs nothing here: the
samples are aimd's CPU time. Without ``--native`` a C function (orjson, the ssl module) counts
towards the Python line that called it, so :func:`categories` reads that line's source to tell
JSON from the rest.
"""

from __future__ import annotations

import html
import linecache
import re
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int

    @classmethod
    def parse(cls, text: str) -> Frame:
        match = FRAME.match(text)
        if match is None:
            return cls(text, "", 0)
        return cls(match["function"], match["file"], int(match["line"] or 0))

    @property
    def where(self) -> str:
        """``function (file)``: the function, whichever line of it was running."""
        return f"{self.function} ({self.file})"

    def source(self) -> str:
        """The line's source, found along sys.path as py-spy shortens paths to it."""
        for root in ("", *sys.path):
            path = Path(root) / self.file
            if path.is_file():
                return linecache.getline(str(path), self.line).strip()
        return ""


@dataclass
class Profile:
    stacks: Counter[tuple[Frame, ...]] = field(default_factory=Counter)

    @classmethod
    def read(cls, path: Path) -> Profile:
        profile = cls()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack.strip() or not count.isdigit():
                continue
            frames = tuple(Frame.parse(part) for part in stack.split(";"))
            profile.stacks[frames] += int(count)
        return profile

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())

    def top(self, number: int = 25) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """The functions with the most samples on top of the stack (self) and anywhere in it
        (total, each counted once per stack)."""
        own: Counter[str] = Counter()
        total: Counter[str] = Counter()
        for frames, count in self.stacks.items():
            own[frames[-1].where] += count
            for where in {f.where for f in frames}:
                total[where] += count
        return own.most_common(number), total.most_common(number)

    def including(self, predicate: Callable[[Frame], bool]) -> int:
        """Samples with a matching frame anywhere in the stack."""
        return sum(c for frames, c in self.stacks.items() if any(predicate(f) for f in frames))


def _in(*parts: str) -> Callable[[Frame], bool]:
    return lambda frame: any(part in frame.file for part in parts)


def _calls(*words: str) -> Callable[[Frame], bool]:
    return lambda frame: any(word in frame.source() for word in words)


def _named(*functions: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.function.rpartition(".")[2] in functions


# Walking from the leaf towards the root, the first rule that matches names what a sample was
# spent on, so the JSON decoding a watch does counts as JSON, not as the watch.
CATEGORIES: list[tuple[str, Callable[[Frame], bool]]] = [
    ("JSON encode/decode (orjson, json)", _calls("orjson.", "json.dumps", "json.loads")),
    ("TLS (ssl, asyncio's sslproto)", _in("ssl.py", "asyncio/sslproto.py")),
    ("socket I/O (asyncio transports)", _in("asyncio/selector_events.py")),
    ("logging", _in("logging/", "aimd/logs.py")),
    ("metrics (prometheus_client)", _in("prometheus_client/")),
    ("HTTP client (aiohttp, yarl, multidict)", _in("aiohttp/", "yarl/", "multidict/")),
    ("rate limiter (kube/throttle.py)", _in("aimd/kube/throttle.py")),
    ("Events (recorder, correlator)", _in("aimd/runtime/events.py", "aimd/runtime/correlator.py")),
    ("watch stream (kube/watch.py)", _in("aimd/kube/watch.py")),
    ("index upkeep (runtime/index.py)", _in("aimd/runtime/index.py")),
    ("index queries (caching/state.py)", _in("aimd/caching/state.py")),
    ("event → key wiring (caching/wiring.py)", _in("aimd/caching/wiring.py")),
    ("work queue, workers (runtime/queue.py, controller.py)", _in("aimd/runtime/queue.py")),
    ("conditions, time, names (api/)", _in("aimd/api/")),
    ("status and writes (caching/writes.py)", _in("aimd/caching/writes.py")),
    (
        "reconcile decisions (caching/*.py)",
        _in("aimd/caching/model_cache.py", "aimd/caching/template", "aimd/caching/service.py"),
    ),
    ("builders (caching/builders.py)", _in("aimd/caching/builders.py", "aimd/caching/names.py")),
    ("client requests (kube/client.py)", _in("aimd/kube/client.py")),
    ("informer dispatch (runtime/informer.py)", _in("aimd/runtime/informer.py")),
    ("controller loop (runtime/controller.py)", _in("aimd/runtime/controller.py")),
    ("asyncio event loop", _in("asyncio/")),
]


# Decided on the whole stack before the leaf-up rules: the benchmark's own /metrics scrapes, and
# the loop's wait in epoll, which py-spy cannot always tell from work when it does not pause aimd.
WHOLE_STACK: list[tuple[str, Callable[[tuple[Frame, ...]], bool]]] = [
    (
        "/metrics rendering (the benchmark's depth sampler)",
        lambda frames: any(f.function == "generate_latest" for f in frames),
    ),
    (
        "waiting in epoll (idle, as py-spy could not tell)",
        lambda frames: frames[-1].function.endswith("select") and "selectors.py" in frames[-1].file,
    ),
]


def categories(profile: Profile) -> list[tuple[str, int]]:
    found: Counter[str] = Counter()
    for frames, count in profile.stacks.items():
        whole = next((n for n, rule in WHOLE_STACK if rule(frames)), None)
        if whole is not None:
            found[whole] += count
            continue
        for frame in reversed(frames):
            name = next((n for n, rule in CATEGORIES if rule(frame)), None)
            if name is not None:
                found[name] += count
                break
        else:
            found["other"] += count
    return found.most_common()


# Functions worth naming on their own in the findings (inclusive samples).
WATCHED_FUNCTIONS = {
    "template_caches_needing (index query)": _named("template_caches_needing"),
    "wiring handlers (all of caching/wiring.py)": _in("aimd/caching/wiring.py"),
    "informer handlers (Informer._dispatch)": _named("_dispatch"),
    "status_patch / write_status": _named("status_patch", "write_status"),
    "set_condition": _named("set_condition"),
    "KubeClient._send_once (a request, all of it)": _named("_send_once"),
    "rate limiter wait": _named("_throttle"),
    "Event recorder": _in("aimd/runtime/events.py", "aimd/runtime/correlator.py"),
    "watch decode (Watcher._deliver)": _named("_deliver"),
    "Index.apply / replace": _named("apply", "replace"),
}


def watched(profile: Profile) -> list[tuple[str, int]]:
    return [(name, profile.including(rule)) for name, rule in WATCHED_FUNCTIONS.items()]


def summary(profile: Profile, title: str) -> str:
    """The top lists and the breakdown as text (what goes under tests/.artifacts)."""
    n = max(1, profile.samples)

    def rows(items: Iterable[tuple[str, int]]) -> list[str]:
        return [f"{count / n:6.1%} {count:8d}  {name}" for name, count in items]

    own, total = profile.top()
    return "\n".join(
        [
            f"{title}: {profile.samples} samples (CPU only)",
            "",
            "by what it was spent on (first match from the leaf up):",
            *rows(categories(profile)),
            "",
            "named functions (inclusive):",
            *rows(watched(profile)),
            "",
            "top functions, self:",
            *rows(own),
            "",
            "top functions, total (inclusive):",
            *rows(total),
            "",
        ]
    )


def svg(profile: Profile, title: str, width: int = 1600) -> str:
    """A flame graph: root at the bottom, each frame as wide as its share of samples, the
    function, file and share in each box's tooltip."""
    counts: Counter[tuple[str, ...]] = Counter()
    for frames, count in profile.stacks.items():
        path: tuple[str, ...] = ()
        for frame in frames:
            path = (*path, frame.where)
            counts[path] += count
    depth = max((len(p) for p in counts), default=0)
    row, total = 16, max(1, profile.samples)
    height = (depth + 2) * row
    boxes = []
    offsets: dict[tuple[str, ...], float] = {(): 0.0}
    next_child: dict[tuple[str, ...], float] = {(): 0.0}
    for path in sorted(counts, key=lambda p: (len(p), p)):
        parent = path[:-1]
        x = next_child.get(parent, offsets.get(parent, 0.0))
        w = counts[path] / total * width
        offsets[path] = x
        next_child[path] = x
        next_child[parent] = x + w
        if w < 0.3:
            continue
        y = height - (len(path) + 1) * row
        name = path[-1]
        hue = 20 + zlib.crc32(name.encode()) % 40
        label = html.escape(name if w > 7 * len(name) else name[: max(0, int(w / 7) - 2)] + "..")
        tip = html.escape(f"{name}: {counts[path]} samples, {counts[path] / total:.1%}")
        boxes.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}"'
            f' fill="hsl({hue},90%,60%)"/>'
            + (f'<text x="{x + 2:.1f}" y="{y + 12}">{label}</text>' if w > 20 else "")
            + "</g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="monospace" font-size="11">'
        f'<text x="4" y="14" font-size="13">{html.escape(title)}: {profile.samples} samples'
        "</text>" + "".join(boxes) + "</svg>\n"
    )
