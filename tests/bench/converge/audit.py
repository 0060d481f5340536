"""The test control plane with an audit log: which user wrote what, to which object, with what.

aimd counts its own requests (``rest_client_requests_total``), but only by verb and code. To
say *which* writes exceed the minimum (a template cache writing Pending, then Progressing, then
Available), the API server's audit log is read instead: aimd and the floor each get a user of
their own (static tokens in ``system:masters``, beside the test admin's), and every write either
makes is logged at the Request level (the body tells which status was written), Events at the
Metadata level. The stand-in kubelet writes as the admin, which is not logged. Both sides of the
comparison run against this same API server, so the logging costs them alike.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from aimd.dev.controlplane import ControlPlane

AIMD_USER = "bench-aimd"
FLOOR_USER = "bench-floor"
WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
EVENTS = "events"


def policy() -> dict[str, Any]:
    users = [AIMD_USER, FLOOR_USER]
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {
                "level": "Metadata",
                "users": users,
                "verbs": WRITE_VERBS,
                "resources": [
                    {"group": "events.k8s.io", "resources": [EVENTS]},
                    {"group": "", "resources": [EVENTS]},
                ],
            },
            {"level": "Request", "users": users, "verbs": WRITE_VERBS},
            {"level": "None"},
        ],
    }


@dataclass
class AuditedControlPlane(ControlPlane):
    """A :class:`ControlPlane` whose API server logs aimd's and the floor's writes."""

    user_tokens: dict[str, str] = field(
        default_factory=lambda: {user: secrets.token_hex(16) for user in (AIMD_USER, FLOOR_USER)}
    )

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    def _spawn(self, name: str, args: list[str]) -> None:
        if name == "kube-apiserver":
            # The admin's tokens.csv was written just now; the benchmark's users join it.
            with (self.workdir / "tokens.csv").open("a") as tokens:
                for number, (user, token) in enumerate(self.user_tokens.items()):
                    tokens.write(f'{token},{user},{100 + number},"system:masters"\n')
            policy_file = self.workdir / "audit-policy.json"
            policy_file.write_text(json.dumps(policy()))
            args = [
                *args,
                f"--audit-policy-file={policy_file}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=100000",  # MB: never rotate during a run
            ]
        super()._spawn(name, args)

    def kubeconfig_for(self, user: str) -> Path:
        """A kubeconfig like the admin's, with ``user``'s token."""
        config = json.loads(self.kubeconfig.read_text())
        config["users"] = [{"name": user, "user": {"token": self.user_tokens[user]}}]
        for context in config["contexts"]:
            context["context"]["user"] = user
        path = self.workdir / f"{user}.kubeconfig"
        path.write_text(json.dumps(config, indent=2))
        return path


@dataclass(frozen=True)
class Write:
    """One write request as the API server logged it."""

    user: str
    verb: str
    resource: str  # plural, with "/subresource" when there is one
    namespace: str
    name: str
    code: int
    touched: str  # for a patch: "status=Progressing", "status (conditions)", "finalizers", ...
    status: str | None  # the status.status a status write set, if it set one
    time: float  # Unix time the API server received it

    @property
    def kind(self) -> tuple[str, str]:
        return (self.resource, self.verb)


def _touched(verb: str, resource: str, body: Any) -> tuple[str, str | None]:
    if verb != "patch" or not isinstance(body, dict):
        return verb, None
    if resource.endswith("/status"):
        status = body.get("status") or {}
        value = status.get("status") if isinstance(status, dict) else None
        if value is not None:
            return f"status={value}", str(value)
        return f"status ({', '.join(sorted(status)) if status else 'empty'})", None
    metadata = {k for k in (body.get("metadata") or {}) if k != "resourceVersion"}
    parts = sorted(metadata) + sorted(k for k in body if k != "metadata")
    return ", ".join(parts) or "empty", None


def read(path: Path, namespace: str) -> list[Write]:
    """aimd's and the floor's writes in ``namespace`` (and cluster-scoped ones), in log order."""
    writes = []
    with path.open("rb") as log:
        for line in log:
            entry = orjson.loads(line)
            ref = entry.get("objectRef") or {}
            if ref.get("namespace", namespace) != namespace:
                continue
            resource = ref.get("resource", "?")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            body = entry.get("requestObject")
            name = ref.get("name") or ((body or {}).get("metadata") or {}).get("name", "")
            touched, status = _touched(entry["verb"], resource, body)
            writes.append(
                Write(
                    user=entry["user"]["username"],
                    verb=entry["verb"],
                    resource=resource,
                    namespace=ref.get("namespace", ""),
                    name=name,
                    code=int((entry.get("responseStatus") or {}).get("code", 0)),
                    touched=touched,
                    status=status,
                    time=datetime.fromisoformat(entry["requestReceivedTimestamp"]).timestamp(),
                )
            )
    return writes


def of(writes: Iterable[Write], user: str, until: float | None = None) -> list[Write]:
    """``user``'s writes (received before ``until``, Unix time, if given)."""
    return [w for w in writes if w.user == user and (until is None or w.time <= until)]


def without_events(writes: Iterable[Write]) -> list[Write]:
    return [w for w in writes if w.resource != EVENTS]


def events(writes: Iterable[Write]) -> list[Write]:
    return [w for w in writes if w.resource == EVENTS]


def per_kind(writes: Iterable[Write]) -> Counter[tuple[str, str]]:
    return Counter(w.kind for w in writes)


def per_touch(writes: Iterable[Write]) -> Counter[tuple[str, str, str]]:
    """(resource, verb, what the write touched) → count."""
    return Counter((w.resource, w.verb, w.touched) for w in writes)


def status_sequences(writes: Iterable[Write]) -> dict[str, Counter[str]]:
    """Per resource with a status subresource: how many objects wrote which sequence of
    ``status.status`` values (``·`` for a status write that left status.status alone)."""
    steps: dict[tuple[str, str], list[str]] = {}
    for w in writes:
        if w.resource.endswith("/status") and w.verb == "patch":
            steps.setdefault((w.resource, w.name), []).append(w.status or "·")
    found: dict[str, Counter[str]] = {}
    for (resource, _), sequence in steps.items():
        found.setdefault(resource, Counter())[" → ".join(sequence)] += 1
    return found


def refused(writes: Iterable[Write]) -> Iterator[Write]:
    return (w for w in writes if w.code >= 400)
