"""Every condition reason aimd writes: one StrEnum, so each can be found by its name.

A reason is part of the API (CamelCase, stable, machine-readable; SPEC §1): alerts, runbooks and
scripts match on it, so a reason is never built by concatenating strings and never renamed. The
README, the runbooks and the CRD docs name reasons from this list only (a unit test checks).

The download Job's failure reasons (:mod:`aimd.download.reasons`) are here too, under the same
values: the model-cache reconciler relays them into the cache's status.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    # -- templates (AIMServiceTemplate, AIMClusterServiceTemplate) ------------------------------
    VALID = "Valid"
    TEMPLATE_INVALID = "TemplateInvalid"
    TEMPLATE_NOT_FOUND = "TemplateNotFound"

    # -- services ---------------------------------------------------------------------------------
    RESOLVED = "Resolved"
    CACHING_DISABLED = "CachingDisabled"
    CREATING_TEMPLATE_CACHE = "CreatingTemplateCache"
    TEMPLATE_CACHE_NOT_READY = "TemplateCacheNotReady"
    TEMPLATE_CACHE_FAILED = "TemplateCacheFailed"
    WORKLOAD_REFUSED = "WorkloadRefused"
    STARTING = "Starting"
    RUNNING = "Running"
    DEGRADED = "Degraded"

    # -- template caches --------------------------------------------------------------------------
    CREATING_MODEL_CACHE = "CreatingModelCache"
    MODEL_CACHE_PENDING = "ModelCachePending"
    MODEL_CACHE_PROGRESSING = "ModelCacheProgressing"
    MODEL_CACHE_FAILED = "ModelCacheFailed"

    # -- model caches -----------------------------------------------------------------------------
    AVAILABLE = "Available"
    PROBING_SIZE = "ProbingSize"
    PROBE_FAILED = "ProbeFailed"
    CREATING_VOLUME = "CreatingVolume"
    VOLUME_RELEASING = "VolumeReleasing"
    VOLUME_LOST = "VolumeLost"
    VOLUME_EXPANDING = "VolumeExpanding"
    VOLUME_REPLACING = "VolumeReplacing"
    WAITING_FOR_VOLUME = "WaitingForVolume"
    DOWNLOADING = "Downloading"
    DOWNLOAD_FAILED = "DownloadFailed"
    CREATE_REFUSED = "CreateRefused"
    NOT_ALLOWED = "NotAllowed"
    SECRET_NOT_FOUND = "SecretNotFound"
    WAITING_FOR_DOWNLOAD_SLOT = "WaitingForDownloadSlot"

    # -- the download Job's own failures (aimd.download.reasons.Reason) ---------------------------
    SOURCE_NOT_FOUND = "SourceNotFound"
    AUTH_FAILED = "AuthFailed"
    RATE_LIMITED = "RateLimited"
    STORAGE_FULL = "StorageFull"
    VERIFICATION_FAILED = "VerificationFailed"
    STALLED = "Stalled"
    NETWORK_ERROR = "NetworkError"
    INVALID_SOURCE = "InvalidSource"
    INTERNAL_ERROR = "InternalError"
    TERMINATED = "Terminated"
