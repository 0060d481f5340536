"""The process around a manager: logging, the client, the manager, the exit code.

A role such as ``aimd run`` declares only what to run::

    from aimd.runtime import app

    def configure(parser):                    # the runtime's flags (aimd.settings)
        app.add_arguments(parser)

    def main(args) -> int:
        return app.main(args, setup)          # setup(manager) declares informers and controllers

``setup`` may be a plain or an ``async`` function; it runs once, before the manager starts.
Tests and embedders that configure logging themselves call ``await app.run(settings, setup)``.

Exit codes:

- ``0`` (:data:`EXIT_OK`): stopped by SIGTERM/SIGINT after draining the running reconciles.
- ``1`` (:data:`EXIT_FAILED`): the manager (or ``setup``) failed with an unexpected error; its
  traceback is logged.
- ``2`` (:data:`EXIT_CONFIG`): the configuration is unusable: invalid flags or environment, or no
  API client could be made from the kubeconfig / service account. One line says why.
- ``3`` (:data:`EXIT_LEADERSHIP_LOST`): the Lease could not be renewed in time or another replica
  took it; every writer had already stopped. The kubelet restarts the container, which comes back
  as a standby. One line says so, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from aimd import logs
from aimd.kube.client import KubeClient
from aimd.kube.lease import LeadershipLost
from aimd.runtime.manager import Manager
from aimd.settings import Settings
from aimd.settings import add_arguments as add_arguments

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_LEADERSHIP_LOST = 3

Setup = Callable[[Manager], Awaitable[None] | None]


def main(args: argparse.Namespace, setup: Setup) -> int:
    """Settings from ``args`` and the environment, logging as they say, then :func:`run`."""
    try:
        settings = Settings.from_args(args)
    except ValueError as error:
        logs.setup()
        log.error("invalid configuration: %s", error)
        return EXIT_CONFIG
    logs.setup(settings.log_format, settings.log_level)
    return asyncio.run(run(settings, setup))


async def run(settings: Settings, setup: Setup, *, handle_signals: bool = True) -> int:
    """Runs a manager declared by ``setup`` until it stops; returns the process exit code."""
    try:
        client = await KubeClient.auto(settings.kubeconfig)
    except Exception as error:
        where = settings.kubeconfig or "the in-cluster service account or $KUBECONFIG"
        log.error("could not configure the API client from %s: %s", where, error)
        return EXIT_CONFIG
    async with client:
        manager = Manager(client, settings, handle_signals=handle_signals)
        try:
            declared = setup(manager)
            if inspect.isawaitable(declared):
                await declared
            await manager.run()
        except LeadershipLost as lost:
            log.error(
                "leader election lost: %s; exiting with code %d so that this replica restarts "
                "as a standby",
                lost,
                EXIT_LEADERSHIP_LOST,
            )
            return EXIT_LEADERSHIP_LOST
        except Exception:
            log.exception("the manager failed")
            return EXIT_FAILED
    return EXIT_OK
