"""The in-memory store of one resource's objects, with named secondary indexes.

The primary key is ``"namespace/name"`` for namespaced objects and ``"name"`` for cluster-scoped
ones (client-go's ``MetaNamespaceKeyFunc``). A secondary index is a function from an object to the
values it is filed under (a ``sourceUri``, an owner uid, a label value); ``by(name, value)``
answers "which objects have this value" without scanning.

Only the informer writes (:meth:`Index.apply`, :meth:`Index.replace`); everyone else reads. Stored
objects are shared, not copied: readers must not mutate them.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from aimd.api.types import Object

log = logging.getLogger(__name__)

IndexFunc = Callable[[Object], Iterable[Hashable]]
Objects = list[Object]
Change = tuple[str, Object | None, Object | None]

NAMESPACE_INDEX = "namespace"


def key_of(obj: Object) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    metadata = obj["metadata"]
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if namespace else str(metadata["name"])


def _namespace(obj: Object) -> list[str]:
    return [obj["metadata"].get("namespace") or ""]


class Index:
    """Objects by key, plus secondary indexes. Not thread-safe; one event loop owns it."""

    def __init__(self) -> None:
        self._objects: dict[str, Object] = {}
        self._funcs: dict[str, IndexFunc] = {}
        # index name -> value -> keys; and per index, key -> the values it is filed under, so an
        # update removes exactly the stale entries without calling the function on the old object.
        self._entries: dict[str, dict[Hashable, set[str]]] = {}
        self._filed: dict[str, dict[str, tuple[Hashable, ...]]] = {}
        self.add_index(NAMESPACE_INDEX, _namespace)

    # -- reading ------------------------------------------------------------------------------

    def get(self, key: str) -> Object | None:
        return self._objects.get(key)

    def get_by_name(self, name: str, namespace: str | None = None) -> Object | None:
        return self._objects.get(f"{namespace}/{name}" if namespace else name)

    def list(self, namespace: str | None = None) -> Objects:
        """Every object (in arrival order), or those of one namespace (in key order)."""
        if namespace is None:
            return list(self._objects.values())
        return self.by(NAMESPACE_INDEX, namespace)

    def by(self, index_name: str, value: Hashable) -> Objects:
        """Objects filed under ``value`` in index ``index_name``, in key order, so that a choice
        among them ("the oldest", "the first") is the same on every replica and every restart.
        KeyError for an undeclared index."""
        keys = self._entries[index_name].get(value)
        if not keys:
            return []
        if len(keys) == 1:
            return [self._objects[key] for key in keys]
        return [self._objects[key] for key in sorted(keys)]

    def keys(self) -> builtins.list[str]:
        return list(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __iter__(self) -> Iterator[Object]:
        return iter(list(self._objects.values()))

    # -- declaring ----------------------------------------------------------------------------

    def add_index(self, name: str, func: IndexFunc) -> None:
        """Declares index ``name``; objects already stored are filed at once."""
        if name in self._funcs:
            raise ValueError(f"index {name!r} is already declared")
        self._funcs[name] = func
        self._entries[name] = {}
        self._filed[name] = {}
        for key, obj in self._objects.items():
            self._file(name, key, obj)

    # -- writing (the informer only) ----------------------------------------------------------

    def apply(self, obj: Object) -> Object | None:
        """Stores ``obj`` (added or changed); returns the state it replaced, if any."""
        key = key_of(obj)
        old = self._objects.get(key)
        self._objects[key] = obj
        for name in self._funcs:
            self._file(name, key, obj)
        return old

    def remove(self, key: str) -> Object | None:
        """Forgets ``key``; returns the last state stored for it, if any."""
        old = self._objects.pop(key, None)
        if old is not None:
            for name in self._funcs:
                self._unfile(name, key)
        return old

    def replace(
        self, objects: Iterable[Object], namespace: str | None = None
    ) -> builtins.list[Change]:
        """Makes the store hold exactly ``objects`` (a fresh list) — of ``namespace`` only, when
        given: one informer may list several namespaces into one index — and returns what
        changed, as ``(event_type, old, new)`` in list order, deletions last.

        An object counts as modified only when its resourceVersion differs; deletions are the
        keys that were stored but are not in the list (objects deleted while the watch was down).
        """
        changes: builtins.list[Change] = []
        seen: set[str] = set()
        for obj in objects:
            key = key_of(obj)
            seen.add(key)
            old = self._objects.get(key)
            if old is not None and _rv(old) == _rv(obj):
                continue
            self.apply(obj)
            changes.append(("ADDED" if old is None else "MODIFIED", old, obj))
        if namespace is None:
            held: Iterable[str] = self._objects
        else:
            held = self._entries[NAMESPACE_INDEX].get(namespace, ())
        for key in [k for k in held if k not in seen]:
            changes.append(("DELETED", self.remove(key), None))
        return changes

    def _file(self, name: str, key: str, obj: Object) -> None:
        try:
            values = tuple(dict.fromkeys(self._funcs[name](obj)))
        except Exception:
            # An object the index function cannot read (a field missing) is simply not filed;
            # one odd object must not stop the informer that feeds every reconciler.
            log.exception("index %r could not file %s", name, key)
            values = ()
        filed = self._filed[name]
        if filed.get(key) == values:
            return
        self._unfile(name, key)
        if values:
            entries = self._entries[name]
            for value in values:
                entries.setdefault(value, set()).add(key)
            filed[key] = values

    def _unfile(self, name: str, key: str) -> None:
        values = self._filed[name].pop(key, ())
        entries = self._entries[name]
        for value in values:
            keys = entries.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del entries[value]


def _rv(obj: Object) -> Any:
    return obj["metadata"].get("resourceVersion")
