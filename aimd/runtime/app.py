"""The process around a manager: logging, the client, the manager, the exit code.

A role such as ``aimd run`` only declares what to run::

    from aimd.runtime.app import run_controllers
    from aimd.settings import Settings, add_arguments

    def configure(parser): add_arguments(parser)

    def main(args) -> int:
        return run_controllers(Settings.from_args(args), setup)   # setup(manager) declares
                                                                   # informers and controllers

Exit codes: 0 after SIGTERM/SIGINT and a clean drain; 1 when leadership was lost (the kubelet
restarts the container, which comes back as a standby) or the manager failed; 2 when the client
could not be configured.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from aimd.kube.client import KubeClient
from aimd.kube.lease import LeadershipLost
from aimd.runtime.manager import Manager
from aimd.settings import Settings

log = logging.getLogger(__name__)

Setup = Callable[[Manager], Awaitable[None] | None]


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def serve(settings: Settings, setup: Setup) -> int:
    try:
        client = await KubeClient.auto(settings.kubeconfig)
    except Exception:
        log.exception("could not configure the API client")
        return 2
    async with client:
        manager = Manager(client, settings)
        declared = setup(manager)
        if inspect.isawaitable(declared):
            await declared
        try:
            await manager.run()
        except LeadershipLost as lost:
            log.error("%s; exiting so that this replica restarts as a standby", lost)
            return 1
        except Exception:
            log.exception("the manager failed")
            return 1
    return 0


def run_controllers(settings: Settings, setup: Setup) -> int:
    """Runs a manager set up by ``setup`` until it stops; returns the process exit code."""
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings, setup))
