"""Model source URIs as the API compares them (SPEC B10).

Two URIs that name one model must meet one cache, so every comparison, index and name goes
through :func:`source_key`:

- ``s3://bucket/prefix`` and ``s3://bucket/prefix/`` are one folder: trailing slashes go.
- ``hf://Org/Name`` and ``hf://org/name`` are one repository: the Hub resolves repository ids
  without regard to case. A revision (``@branch``, ``@tag``, ``@sha``) is a git ref, and git refs
  are case-sensitive, so it is kept as written.

The object keeps the URI its author wrote; only the key is normalised.

:func:`segment_problem` is the controller's copy of the admission rule that refuses ``.``, ``..``
and empty path segments (the CRD's CEL says the same words), for objects written before the rule.
"""

from __future__ import annotations

HF = "hf://"
S3 = "s3://"


def source_key(uri: str) -> str:
    """The form of ``uri`` that compares equal for every spelling of the same model."""
    if uri.startswith(HF):
        repo, at, revision = uri.removeprefix(HF).partition("@")
        return f"{HF}{repo.lower()}{at}{revision}"
    if uri.startswith(S3):
        return uri.rstrip("/") if len(uri.rstrip("/")) > len(S3) else uri
    return uri


def _path_segments(uri: str) -> list[str]:
    if uri.startswith(HF):
        repo, at, revision = uri.removeprefix(HF).partition("@")
        return repo.split("/") + (revision.split("/") if at else [])
    if uri.startswith(S3):
        bucket, slash, prefix = uri.removeprefix(S3).partition("/")
        return [bucket, *prefix.rstrip("/").split("/")] if slash and prefix.strip("/") else [bucket]
    return []


def segment_problem(uri: str) -> str | None:
    """Why ``uri`` is refused for its path segments, or None when they are fine."""
    for segment in _path_segments(uri):
        if segment in ("", ".", ".."):
            return SEGMENT_MESSAGE
    return None


SEGMENT_MESSAGE = "sourceUri must not contain '.', '..' or empty path segments"
