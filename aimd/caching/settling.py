"""News that can wait: a status step a person may like to see but nothing acts on.

Such a step is held for a window and written only if it is still the news when the window ends,
at most once per window per object. An object whose wait is short then goes to its next real
state in one write instead of two or three, and each write saved would also have woken whatever
watches that object. What something acts on (Available, Failed, Running, a refusal) is written
at once, and a step that cannot wait ends the window.

Each reconciler says what can wait for its kind (:func:`aimd.caching.template_cache.news_can_wait`,
:func:`aimd.caching.service.news_can_wait`) and writes through
:meth:`aimd.caching.reconciler.Reconciler.write_news`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from aimd.api.types import Object

# (the status the object has now, the one decided) → whether the decided one can wait
CanWait = Callable[[Mapping[str, Any], Object], bool]


class Settling:
    """When each object (by its reconcile key) may next write news that can wait."""

    def __init__(
        self, can_wait: CanWait, settle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.can_wait = can_wait
        self.settle = settle
        self.clock = clock
        self._next: dict[Hashable, float] = {}

    def wait(self, key: Hashable, current: Mapping[str, Any], desired: Object) -> float:
        """Seconds before ``desired`` may be written for ``key``; 0 when it cannot wait. The
        window opens the first time news that can wait is decided."""
        if not self.can_wait(current, desired):
            self._next.pop(key, None)
            return 0.0
        moment = self.clock()
        return max(0.0, self._next.setdefault(key, moment + self.settle) - moment)

    def wrote(self, key: Hashable, current: Mapping[str, Any], desired: Object) -> None:
        if self.can_wait(current, desired):
            self._next[key] = self.clock() + self.settle

    def forget(self, key: Hashable) -> None:
        self._next.pop(key, None)
