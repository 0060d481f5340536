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
    for name in ("run", "download", "probe", "crds", "dev", "cache", "uninstall"):
        assert name in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.name)
def test_every_command_has_its_own_help(command: Command) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command.name, "--help"])
    assert exit_info.value.code == 0


def test_missing_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_a_job_command_imports_only_its_own_role() -> None:
    """`aimd download` starts every Job: it must not pay for importing the controller."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from aimd.cli import main\n"
        "try:\n"
        "    main(['download', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('aimd.caching', 'aimd.dev'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"
