"""``<target>/.aimd/manifest.json``: which files are in place and how each was verified.

It is how a retry knows a finished file needs no work (same identity, same size, still there),
and how a person or a serving container can see what exactly is on the volume. Written with
write-to-temporary then rename, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypedDict

from aimd.download.plan import RemoteFile

STATE_DIR = ".aimd"
MANIFEST = "manifest.json"


class Entry(TypedDict):
    size: int
    identity: str
    digest: str | None
    verifiedBy: str


class Manifest:
    """The manifest of one target directory; :meth:`record` and :meth:`save` as files land."""

    def __init__(self, target: Path, uri: str, revision: str | None) -> None:
        self.path = target / STATE_DIR / MANIFEST
        self.uri = uri
        self.revision = revision
        self.complete = False
        self.files: dict[str, Entry] = {}
        previous = self._load()
        if previous.get("source") == uri:
            self.files = dict(previous.get("files") or {})

    def _load(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def is_done(self, file: RemoteFile, final: Path) -> bool:
        """Whether ``file`` was verified into ``final`` before and is still there, whole."""
        entry = self.files.get(file.path)
        if not entry or entry["identity"] != file.identity or entry["size"] != file.size:
            return False
        try:
            return final.stat().st_size == file.size
        except OSError:
            return False

    def record(self, file: RemoteFile, verified_by: str) -> None:
        self.files[file.path] = Entry(
            size=file.size,
            identity=file.identity,
            digest=str(file.digest) if file.digest else None,
            verifiedBy=verified_by,
        )

    def forget(self, path: str) -> None:
        self.files.pop(path, None)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "source": self.uri,
            "revision": self.revision,
            "complete": self.complete,
            "files": dict(sorted(self.files.items())),
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(temporary, self.path)
