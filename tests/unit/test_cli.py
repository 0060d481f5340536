"""The command line lists every role and is honest about the ones not built yet."""

from __future__ import annotations

import subprocess
import sys

import pytest

from aimd.cli import COMMANDS, Command, main


def test_help_lists_every_subcommand() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aimd", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("run", "download", "probe", "crds", "dev"):
        assert name in result.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.module is None], ids=lambda c: c.name)
def test_unbuilt_commands_fail_clearly(
    command: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command.name]) != 0
    assert "not implemented yet" in capsys.readouterr().err


def test_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
