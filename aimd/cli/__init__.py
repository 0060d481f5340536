"""`aimd`: one program, several roles.

Each role lives in its own module, which exposes ``configure(parser)`` to declare its flags and
``main(args) -> int`` to run. The command line only dispatches: the controller, the download Job
and the developer tools share one entry point and one image. Roles are imported by name when the
parser is built, so this package sits above every layer without importing any of them statically.

The commands a person runs against a cluster live beside the dispatch: :mod:`.cache` (`aimd cache`,
also `kubectl aimd` through :mod:`.kubectl`) and :mod:`.uninstall`; :mod:`.target` turns
kubectl's connection flags into a client and a namespace for both.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from aimd import __version__


@dataclass(frozen=True)
class Command:
    """A subcommand, and the module that implements it."""

    name: str
    help: str
    module: str


COMMANDS = (
    Command("run", "run the controller (all reconcilers, one process)", "aimd.caching.controller"),
    Command(
        "download",
        "download a model into a directory (the download Job's command)",
        "aimd.download.command",
    ),
    Command("probe", "print a model's total size without downloading it", "aimd.download.probe"),
    Command("crds", "print the CustomResourceDefinitions as YAML", "aimd.api.crds"),
    Command(
        "dev",
        "local control plane + controller + sample caches, no cluster needed",
        "aimd.dev.command",
    ),
    Command("cache", "list model caches, or say what one is waiting for", "aimd.cli.cache"),
    Command(
        "uninstall",
        "take aimd out: remove its finalizers, then its objects if asked",
        "aimd.cli.uninstall",
    ),
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, just that command's flags are declared, so a Job
    that runs ``aimd download`` does not import the controller (or anything else) to start."""
    parser = argparse.ArgumentParser(
        prog="aimd",
        description="Pre-downloads ML models onto PersistentVolumeClaims for AIM services.",
    )
    parser.add_argument("--version", action="version", version=f"aimd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if only is None or command.name == only:
            importlib.import_module(command.module).configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in words if not word.startswith("-")), "")
    args = build_parser(only=chosen).parse_args(words)
    command = next(c for c in COMMANDS if c.name == args.command)
    result: int = importlib.import_module(command.module).main(args)
    return result
