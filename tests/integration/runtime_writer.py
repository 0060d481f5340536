"""A controller process for the two-process tests (run as ``python -m
tests.integration.runtime_writer``): ``aimd run``'s entry point around one controller that
reconciles the ConfigMaps labelled ``aimd-test/work`` in ``--work-namespace``. Every reconcile
writes this process's identity into its ConfigMap (``data.writer``, with a counter so that each
write is a new revision), five times a second: the test compares those writes with the Lease's
history.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from typing import Any

from aimd.kube.resources import CONFIG_MAPS
from aimd.runtime import Manager, Result, app

WORK_LABEL = "aimd-test/work"


def main() -> int:
    parser = argparse.ArgumentParser()
    app.add_arguments(parser)
    parser.add_argument("--work-namespace", required=True)
    args = parser.parse_args()

    def setup(manager: Manager) -> None:
        maps = manager.informer(CONFIG_MAPS, args.work_namespace, label_selector=WORK_LABEL)
        identity = manager.settings.leader_election_identity
        counter = itertools.count(1)

        async def reconcile(key: tuple[str, str]) -> Result:
            namespace, name = key
            data = {"writer": identity, "n": str(next(counter))}
            await manager.client.patch(CONFIG_MAPS, name, {"data": data}, namespace)
            return Result(requeue_after=0.2)

        controller = manager.controller("writer", reconcile, workers=1)

        def on_change(event: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            if event == "ADDED" and new is not None:
                controller.enqueue((new["metadata"]["namespace"], new["metadata"]["name"]))

        maps.add_handler(on_change)

    return app.main(args, setup)


if __name__ == "__main__":
    sys.exit(main())
