"""Why a download or probe pod cannot start, from what the kubelet and the scheduler wrote (pure).

A Job whose pod never starts is not failed by anyone: the Job controller waits, the pod stays
Pending, and the model cache would say "Progressing" forever. The causes a user can fix show in
the pod's status (and its PVC's): the kubelet's waiting reason for a container whose Secret or key
is missing (CreateContainerConfigError) or whose image cannot be pulled (ErrImagePull,
ImagePullBackOff), and the scheduler's PodScheduled condition when no volume can be bound.
`pod_problem` turns those into a typed reason and a message that says what to do; the caller puts
them on the model cache. The kubelet's and the scheduler's messages are matched as Kubernetes 1.35
words them (the real-node tests capture them; the unit tests replay those captures).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from aimd.api.reasons import Reason
from aimd.api.types import Object

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
# How the kubelet words a missing Secret or ConfigMap, or a key missing from one, per kind:
# (kind as the kubelet writes it, the env reference that names it, the reason aimd gives).
_CONFIG_SOURCES = (
    ("secret", "Secret", "secretKeyRef", Reason.SECRET_NOT_FOUND),
    ("configmap", "ConfigMap", "configMapKeyRef", Reason.CONFIG_MAP_NOT_FOUND),
)
_MISSING = {
    kind: re.compile(rf'^{lower} "(?P<name>[^"]+)" not found$')
    for lower, kind, _, _ in _CONFIG_SOURCES
}
_KEY_MISSING = {
    kind: re.compile(rf"^couldn't find key (?P<key>\S+) in {kind} (?P<ns>[^/]+)/(?P<name>\S+)$")
    for _, kind, _, _ in _CONFIG_SOURCES
}
_FIX = "change the env of the AIMModelCache that refers to it"


class PodProblem(NamedTuple):
    """A reason (CamelCase, stable) and a message a person can act on."""

    reason: Reason
    message: str


def pod_problem(
    pod: Object, claim: Object | None = None, storage_class_exists: bool | None = None
) -> PodProblem | None:
    """What keeps `pod` from running, or None when nothing a user must fix does.

    `claim` is the PVC the pod mounts (download pods have one), and `storage_class_exists` whether
    the StorageClass that claim names exists (None: not known, so not judged).
    """
    status = pod.get("status") or {}
    if status.get("phase") not in (None, "Pending"):
        return None
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        message = str(waiting.get("message") or "")
        if reason == "CreateContainerConfigError":
            return _config_problem(pod, namespace, message)
        if reason in IMAGE_PULL_REASONS:
            image = container.get("image") or _spec_image(pod, container.get("name"))
            return PodProblem(
                Reason.IMAGE_PULL_FAILED,
                f'the download image "{image}" cannot be pulled ({reason}: {message}): set '
                "spec.downloadImage to an image this cluster can pull, and "
                "spec.imagePullSecrets if its registry needs credentials",
            )
    scheduled = _condition(status, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return _scheduling_problem(str(scheduled.get("message") or ""), claim, storage_class_exists)
    return None


def _config_problem(pod: Object, namespace: str, message: str) -> PodProblem:
    for _, kind, ref, reason in _CONFIG_SOURCES:
        if match := _MISSING[kind].match(message):
            name = match["name"]
            keys = _keys_phrase(_referenced_keys(pod, ref, name))
            where = f'namespace "{namespace}"'
            return PodProblem(
                reason, f'{kind} "{name}"{keys} does not exist in {where}: create it, or {_FIX}'
            )
        if match := _KEY_MISSING[kind].match(message):
            what = f'{kind} "{match["name"]}" in namespace "{match["ns"]}"'
            return PodProblem(
                reason, f'{what} has no key "{match["key"]}": add that key, or {_FIX}'
            )
    return PodProblem(
        Reason.CONTAINER_CONFIG_INVALID,
        f"the kubelet cannot create the download container: {message}",
    )


def _scheduling_problem(
    message: str, claim: Object | None, storage_class_exists: bool | None
) -> PodProblem:
    if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
        return PodProblem(
            Reason.POD_UNSCHEDULABLE, f"the download pod cannot be scheduled: {message}"
        )
    spec = claim.get("spec") or {}
    name = (claim.get("metadata") or {}).get("name", "")
    storage_class = spec.get("storageClassName")
    if storage_class and storage_class_exists is False:
        return PodProblem(
            Reason.STORAGE_CLASS_NOT_FOUND,
            f'StorageClass "{storage_class}" of volume {name} does not exist: create it, or set '
            "spec.storageClassName of the AIMModelCache (or its AIMTemplateCache) to one that "
            "does (kubectl get storageclass)",
        )
    wanted = ", ".join(spec.get("accessModes") or [])
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "")
    where = f'StorageClass "{storage_class}"' if storage_class else "no StorageClass"
    return PodProblem(
        Reason.VOLUME_UNSCHEDULABLE,
        f"no PersistentVolume can satisfy volume {name} ({wanted}, {size}, {where}): add one "
        "with that access mode and size, use a StorageClass whose provisioner makes them, or "
        "run aimd with --volume-access-mode set to a mode this storage offers "
        f"(the scheduler says: {message})",
    )


def _condition(status: Object, type_: str) -> Object:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _spec_image(pod: Object, container: str | None) -> str:
    for spec in (pod.get("spec") or {}).get("containers") or []:
        if spec.get("name") == container:
            return str(spec.get("image") or "")
    return ""


def _referenced_keys(pod: Object, ref: str, name: str) -> list[str]:
    """The keys of Secret (or ConfigMap) `name` that the pod's env asks for."""
    keys = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for var in container.get("env") or []:
            selector = (var.get("valueFrom") or {}).get(ref) or {}
            if selector.get("name") == name and selector.get("key") not in keys:
                keys.append(str(selector.get("key")))
    return keys


def _keys_phrase(keys: list[str]) -> str:
    if not keys:
        return ""
    quoted = ", ".join(f'"{key}"' for key in keys)
    return f" (key {quoted})" if len(keys) == 1 else f" (keys {quoted})"
