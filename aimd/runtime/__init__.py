"""Generic controller machinery: informers, a shared index, work queues, a manager.

Nothing here knows about AIM. A reconciler uses it like this::

    from aimd.runtime import Manager, Result, TerminalError

    def setup(manager: Manager) -> None:                # app.main(args, setup) runs it
        caches = manager.informer(MODEL_CACHES)         # one shared informer per resource
        caches.add_index("sourceUri", source_uri)       # obj -> [(namespace, spec.sourceUri)]

        async def reconcile(key: tuple[str, str]) -> Result | None:
            namespace, uri = key
            existing = caches.index.by("sourceUri", (namespace, uri))   # list of dicts, read-only
            ...
            await manager.client.patch(...)             # writes go through the one client
            return Result(requeue_after=30.0)           # or None: done; raise: retry w/ backoff

        controller = manager.controller("model-cache", reconcile, workers=4)
        caches.add_handler(
            lambda event, old, new: controller.enqueue(
                ((new or old)["metadata"]["namespace"], (new or old)["spec"]["sourceUri"])
            )
        )

Contracts:

- ``manager.informer(resource, namespace=None)`` returns the same :class:`Informer` for the same
  arguments; declare indexes and handlers before ``run()``. Informers run on every replica (a
  standby keeps its index warm), controllers only on the leader.
- ``informer.index``: ``get(key)`` with key ``"namespace/name"`` or ``"name"`` (see
  :func:`~aimd.runtime.index.key_of`), ``list(namespace=None)``, ``by(index_name, value)``,
  ``keys()``, ``len()``. Objects are the API's JSON as dicts without ``metadata.managedFields``;
  they are shared, so never mutate one (``copy.deepcopy`` first).
- ``informer.add_handler(fn)``: ``fn(event_type, old, new)`` with event_type ``"ADDED"``
  (old None), ``"MODIFIED"``, ``"DELETED"`` (new None, old the last state seen). Called
  synchronously, in event order, *after* the index holds the new state; it must not block — its
  job is to map an event to keys and enqueue them. Objects deleted while a watch was down arrive
  as ``"DELETED"`` after the relist. A handler added after the informer started is first called
  with ``"ADDED"`` for every object already in the index.
- ``informer.synced`` (bool), ``await informer.wait_synced()``: the first list is in the index.
- ``manager.controller(name, reconcile, workers=None, log_key=namespace_name)``:
  ``reconcile(key)`` is ``async``, keys are any hashable (``log_key`` names the namespace and
  name a key's log lines carry). A key is never reconciled by two workers at once; enqueueing a
  key that waits is a no-op; enqueueing a key being reconciled runs it once more afterwards.
  ``Result(requeue_after=T)`` runs it again after T seconds, ``Result(requeue=True)`` again with
  backoff. Errors (see :mod:`.controller`): :class:`TerminalError` is logged and counted, not
  retried; ``Conflict`` (409) is retried quietly with backoff; any other exception is retried
  with per-key exponential backoff (5 ms doubling to 1000 s, reset when a reconcile succeeds),
  and one of an unexpected type is also counted as a panic. Workers start once this replica
  leads and every informer has synced; a write is refused (and every worker cancelled) once the
  lease may be lost, and ``run()`` raises :class:`~aimd.kube.lease.LeadershipLost`, so the
  process exits (code 3, see :mod:`.app`) and restarts as a standby.
- ``controller.enqueue(key)``: callable any time, from handlers or reconcilers, leader or not.
- ``manager.client`` (the KubeClient: rate-limited, fenced by the lease), ``manager.is_leader``.
- ``manager.events.normal(obj, reason, note)`` / ``.warning(...)``: a Kubernetes Event about
  ``obj``, written in the background (never blocks or raises; repeats fold into one Event's
  ``series``, the rate per object is bounded). See :mod:`.events`.

Modules: :mod:`.index` (store + secondary indexes), :mod:`.informer`, :mod:`.queue` (work queue),
:mod:`.clock` (injectable time), :mod:`.ratelimit`, :mod:`.controller`, :mod:`.events` and
:mod:`.correlator`, :mod:`.manager`, :mod:`.metrics`, :mod:`.health`, :mod:`.app` (the process
around a manager: ``app.main(args, setup)`` for ``aimd run``, with its exit codes). Settings:
:mod:`aimd.settings`; logging: :mod:`aimd.logs`.
"""

from aimd.runtime.controller import Controller, Result, TerminalError
from aimd.runtime.informer import Informer
from aimd.runtime.manager import Manager

__all__ = ["Controller", "Informer", "Manager", "Result", "TerminalError"]
