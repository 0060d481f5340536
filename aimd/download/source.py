"""From a URI string to a :class:`~aimd.download.plan.Plan`, whichever the scheme."""

from __future__ import annotations

from aimd.download import hf, s3
from aimd.download.plan import Plan
from aimd.download.uri import HfUri, parse


async def resolve(uri: str, *, digests: bool = True) -> Plan:
    """Lists the model behind ``uri`` (pinning hf:// to a commit). ``digests=False`` allows a
    source to skip per-file requests that only verification needs."""
    source = parse(uri)
    if isinstance(source, HfUri):
        return await hf.resolve(uri, source)
    return await s3.resolve(uri, source, digests=digests)
