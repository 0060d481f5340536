"""One logging setup for every role: JSON or text lines, extras, exceptions, reconcile context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from aimd import logs


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.mark.usefixtures("restored_root")
def test_json_lines_carry_ts_level_logger_msg_extras_and_the_bound_context() -> None:
    stream = io.StringIO()
    logs.setup("json", "info", stream)
    log = logging.getLogger("aimd.test")
    log.debug("not at info")
    with logs.bound(logs.Context("modelcache", "ml", "hf://org/m", "id-1")):
        log.info("created %s", "PVC", extra={"pvc": "mc-1"})
    try:
        raise ValueError("bad value")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert list(first)[:8] == [
        "ts", "level", "logger", "msg", "controller", "namespace", "name", "reconcileID",
    ]  # fmt: skip
    assert first["level"] == "info"
    assert first["logger"] == "aimd.test"
    assert first["msg"] == "created PVC"
    assert (first["namespace"], first["name"], first["pvc"]) == ("ml", "hf://org/m", "mc-1")
    assert first["ts"].endswith("Z")
    assert "controller" not in second, "the context ends with its block"
    assert second["error"] == "ValueError('bad value')"
    assert "Traceback" in second["stacktrace"]


@pytest.mark.usefixtures("restored_root")
def test_text_lines_and_a_second_setup_replaces_the_first() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup("json", "debug", first)
    logs.setup("text", "warning", second)
    log = logging.getLogger("aimd.test")
    log.info("hidden")
    log.warning("disk %s", "full", extra={"path": "/data x"})
    assert first.getvalue() == "", "the first setup's handler is gone"
    line = second.getvalue().strip()
    assert line.endswith("WARNING aimd.test: disk full path='/data x'")


def test_unknown_formats_and_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        logs.setup("yaml")
    with pytest.raises(ValueError, match="log level"):
        logs.setup("json", "loud")


def test_logging_is_set_up_in_one_place_only() -> None:
    """Every process logs through aimd.logs.setup (one format, one handler); a basicConfig
    elsewhere would add a second handler with another format."""
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "aimd"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "basicConfig(" in path.read_text()
    ]
    assert offenders == []
