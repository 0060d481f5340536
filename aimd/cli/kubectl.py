"""`kubectl aimd`: the `aimd cache` commands as a kubectl plugin.

kubectl runs any executable called ``kubectl-aimd`` on PATH for ``kubectl aimd ...`` and hands it
the arguments after ``aimd``; installing aimd puts one there (a console script). So
``kubectl aimd ls -A -o wide`` is ``aimd cache ls -A -o wide``, with the same connection flags
read the way kubectl reads them (:mod:`.target`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aimd.cli import cache


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl aimd",
        description="aimd's model caches: what is cached, who uses it, what one waits for.",
    )
    cache.configure(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cache.main(build_parser().parse_args(argv))
