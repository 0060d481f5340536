"""Structured logging for every aimd process: one setup, JSON or text lines, reconcile context.

Every role calls :func:`setup` once, first thing::

    from aimd import logs
    logs.setup(format="json", level="info")      # --log-format, --log-level

and logs with the standard library as usual (``logging.getLogger(__name__)``; structured fields
go in ``extra={...}``). Nothing else in aimd configures the root logger.

A line is, in JSON (the manifests' choice; one object per line, for log pipelines)::

    {"ts": "2025-05-01T12:00:00.123Z", "level": "info", "logger": "aimd.caching.service",
     "msg": "created Deployment", "controller": "service", "namespace": "ml", "name": "llama",
     "reconcileID": "5b0c...", "deployment": "llama-7f3a"}

or in text (the default: for a person at a terminal)::

    2025-05-01T12:00:00.123Z INFO aimd.caching.service: created Deployment controller=service
    namespace=ml name=llama reconcileID=5b0c... deployment=llama-7f3a

Why a context variable: controller-runtime hands each reconcile a logger carrying the
controller, the object and a fresh ``reconcileID``, so every line of one reconcile can be found
with one query. Python's equivalent is a :class:`contextvars.ContextVar`: the runtime's controller
binds a :class:`Context` around each reconcile (:func:`bound`), asyncio gives every task a copy of
the context it was created in, and the handler installed here stamps the bound fields onto each
record. Code below the controller needs no logger passed in.

This module imports nothing from aimd, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson

FORMATS = ("text", "json")
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Context:
    """What every line logged during one reconcile carries."""

    controller: str
    namespace: str
    name: str
    reconcile_id: str

    def fields(self) -> dict[str, str]:
        return {
            "controller": self.controller,
            "namespace": self.namespace,
            "name": self.name,
            "reconcileID": self.reconcile_id,
        }


_CONTEXT: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "aimd_log_context", default=None
)


def current() -> Context | None:
    """The context bound in this task, if any."""
    return _CONTEXT.get()


@contextlib.contextmanager
def bound(context: Context) -> Iterator[Context]:
    """Binds ``context`` for the lines logged inside the block (and in tasks it creates)."""
    token = _CONTEXT.set(context)
    try:
        yield context
    finally:
        _CONTEXT.reset(token)


# Attributes every LogRecord has; whatever else a record carries came in through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The bound context's fields first (the same order on every line), then the extras."""
    context: Context | None = getattr(record, "_aimd_context", None)
    fields: dict[str, Any] = context.fields() if context is not None else {}
    fields.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_")
    return fields


def _timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: sortable as text, readable by every log pipeline."""
    whole = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", whole) + f".{int(created % 1 * 1000):03d}Z"


class ContextFilter(logging.Filter):
    """Stamps the bound :class:`Context` onto each record as it is emitted (in the task that
    logged it, so the context variable is that task's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # One attribute, not one per field: ``name`` is already the logger's name on a record.
        if not hasattr(record, "_aimd_context"):
            record._aimd_context = _CONTEXT.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the context, extras, and
    ``error``/``stacktrace`` when an exception is attached."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info and record.exc_info[1] is not None:
            line.setdefault("error", repr(record.exc_info[1]))
            line["stacktrace"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: msg key=value ...``, then any traceback on the lines below."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            _timestamp(record.created),
            record.levelname,
            f"{record.name}: {record.getMessage()}",
        ]
        parts.extend(f"{key}={_text_value(value)}" for key, value in _fields(record).items())
        text = " ".join(parts)
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


def _text_value(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`setup` installs; marked by its class so a second setup replaces it."""


def setup(format: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    """Routes every logger to one handler on ``stream`` (stderr) in ``format`` (``text`` or
    ``json``) at ``level`` (``debug``, ``info``, ``warning``, ``error``). Calling it again
    replaces what the previous call installed."""
    if format not in FORMATS:
        raise ValueError(f"log format {format!r} is not one of {', '.join(FORMATS)}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp logs every served request at INFO through this logger; /metrics scrapes and probes
    # would drown the controller's own lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
