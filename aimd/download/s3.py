"""s3:// sources: AWS S3 or any S3-compatible store, through botocore (the AWS SDK's core).

Configuration is the AWS SDK's own environment: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
(/``AWS_SESSION_TOKEN``, or any other credential source the AWS SDK knows), ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_REGION``/``AWS_DEFAULT_REGION``. Path-style addressing is used
when an endpoint is set, because S3-compatible stores (MinIO, Ceph) mostly need it; set
``AWS_S3_ADDRESSING_STYLE=virtual`` to override.

botocore lists, inspects and signs; the bytes are fetched by the transfer engine with presigned
GETs, one signature per file, made again shortly before its ``PRESIGN_SECONDS`` run out, so a long
download never runs into an expired URL.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from aimd.download.plan import Algorithm, Digest, Plan, RemoteFile, safe_relative_path
from aimd.download.reasons import DownloadFailed, Reason
from aimd.download.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PRESIGN_SECONDS = 6 * 3600
HEAD_THREADS = 16
# Part sizes of common uploaders, most common first: boto3 and the AWS CLI (8 MiB), the S3
# minimum (5 MiB), rclone and s5cmd defaults.
COMMON_PART_SIZES = (8 << 20, 5 << 20, 16 << 20, 50 << 20, 64 << 20, 100 << 20)


def client() -> S3Client:
    """An S3 client configured from the environment as described in the module docstring.

    botocore's own, not boto3's: boto3 adds upload and download helpers aimd does not use, and
    importing them (s3transfer, multiprocessing) made the client take 0.35 s instead of 0.29.
    """
    from botocore.config import Config
    from botocore.session import get_session

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    style = os.environ.get("AWS_S3_ADDRESSING_STYLE") or ("path" if endpoint else "auto")
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": style},  # type: ignore[arg-type]
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=15,
        read_timeout=60,
        max_pool_connections=HEAD_THREADS,
    )
    s3 = get_session().create_client("s3", endpoint_url=endpoint, region_name=region, config=config)
    return cast("S3Client", s3)


async def resolve(uri: str, source: S3Uri, *, digests: bool = True) -> Plan:
    """The plan for every object under the prefix; botocore is synchronous, so it runs in threads.
    Without ``digests`` the HEAD per object that finds out its checksum or what its ETag proves
    is skipped (a probe needs only sizes)."""
    return await asyncio.to_thread(_resolve, uri, source, digests)


def _resolve(uri: str, source: S3Uri, digests: bool) -> Plan:
    s3 = client()
    try:
        objects = _list(s3, source)
        if not objects and source.prefix:
            head = s3.head_object(Bucket=source.bucket, Key=source.prefix)
            name = source.prefix.rsplit("/", 1)[-1]
            objects = [(name, source.prefix, head["ContentLength"], head["ETag"])]
        if not objects:
            raise DownloadFailed(
                Reason.SOURCE_NOT_FOUND,
                f"{uri}: no objects under this prefix; check the bucket and the path",
            )
        with ThreadPoolExecutor(HEAD_THREADS) as pool:
            files = list(
                pool.map(lambda o: _remote_file(s3, uri, source.bucket, digests, *o), objects)
            )
    except DownloadFailed:
        raise
    except Exception as error:
        raise failure_from(error, uri) from error
    keys = {file.path: key for file, (_, key, _, _) in zip(files, objects, strict=True)}

    def locate(file: RemoteFile) -> tuple[str, Mapping[str, str]]:
        url = s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": source.bucket, "Key": keys[file.path]},
            ExpiresIn=PRESIGN_SECONDS,
        )
        return url, {}

    return Plan(uri, None, tuple(files), locate)


def _list(s3: S3Client, source: S3Uri) -> list[tuple[str, str, int, str]]:
    """(relative name, key, size, ETag) of every object under the prefix, folders markers left
    out. The prefix is a folder: ``s3://b/model`` does not take ``model-v2/``."""
    prefix = f"{source.prefix}/" if source.prefix else ""
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            key = item["Key"]
            if key.endswith("/"):
                continue
            found.append((key[len(prefix) :], key, item["Size"], item["ETag"]))
    return found


def _remote_file(
    s3: S3Client, uri: str, bucket: str, digests: bool, name: str, key: str, size: int, etag: str
) -> RemoteFile:
    path = safe_relative_path(uri, name)
    etag = etag.strip('"')
    digest = _digest(s3, bucket, key, size, etag) if digests else None
    return RemoteFile(path, size, etag, digest)


def _digest(s3: S3Client, bucket: str, key: str, size: int, etag: str) -> Digest | None:
    """What the object's metadata can prove: its full-object checksum when S3 keeps one, else
    its ETag. One HEAD asks for both; a multipart ETag needs a second for its part size."""
    try:
        head: dict[str, Any] = dict(s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
    except Exception:
        head = {}
    found = checksum_digest(head, multipart="-" in etag)
    if found is not None:
        return found
    return _etag_digest(s3, bucket, key, size, etag, head)


# S3's additional checksums as a HEAD with ``ChecksumMode=ENABLED`` names them, cheapest to check
# first. AWS gives every object written since December 2024 a CRC64NVME when its uploader chose
# none, and checking a CRC costs a fiftieth of md5 (aimd/download/verify.py).
CHECKSUMS: tuple[tuple[str, Algorithm], ...] = (
    ("ChecksumCRC64NVME", "crc64nvme"),
    ("ChecksumCRC32C", "crc32c"),
    ("ChecksumCRC32", "crc32"),
    ("ChecksumSHA256", "sha256"),
    ("ChecksumSHA1", "sha1"),
)


def checksum_digest(head: Mapping[str, Any], *, multipart: bool) -> Digest | None:
    """The full-object checksum in a HEAD's answer, as hex. A COMPOSITE one (a multipart
    upload's checksum of its parts' checksums) would need every part's boundaries, so it is left
    to the ETag; so is a multipart object's checksum of no stated type, which some stores (moto)
    give for COMPOSITE ones. Unlike the ETag, a checksum is of the plaintext, so it holds under
    SSE-KMS too."""
    kind = head.get("ChecksumType") or ("COMPOSITE" if multipart else "FULL_OBJECT")
    if kind != "FULL_OBJECT":
        return None
    for field, algorithm in CHECKSUMS:
        value = head.get(field)
        if not isinstance(value, str) or "-" in value:
            continue
        try:
            return Digest(algorithm, base64.b64decode(value, validate=True).hex())
        except binascii.Error:
            return None
    return None


def _etag_digest(
    s3: S3Client, bucket: str, key: str, size: int, etag: str, head: Mapping[str, Any]
) -> Digest | None:
    """What the ETag can prove. A single-part ETag is the content's md5, except under SSE-KMS or
    SSE-C; a multipart one needs the part size, which S3 tells for part 1 (stores that do not
    support ``PartNumber`` answer with the whole object, and then the size is inferred)."""
    value, _, parts = etag.partition("-")
    if len(value) != 32 or not all(c in "0123456789abcdef" for c in value.lower()):
        return None
    if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
        return None
    if not parts:
        return Digest("md5", value.lower())
    try:
        first_part: dict[str, Any] = dict(s3.head_object(Bucket=bucket, Key=key, PartNumber=1))
    except Exception:
        first_part = {}
    count = int(parts)
    first = int(first_part.get("ContentLength") or 0)
    if 0 < first < size and math.ceil(size / first) == count:
        return Digest("s3-multipart-md5", etag.lower(), first, authoritative=True)
    for part_size in COMMON_PART_SIZES:
        if math.ceil(size / part_size) == count:
            return Digest("s3-multipart-md5", etag.lower(), part_size, authoritative=False)
    return None


AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
        "403",
        "401",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})
THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "TooManyRequests", "RequestLimitExceeded", "429", "503"}
)


def failure_from(error: Exception, uri: str) -> DownloadFailed:
    """The typed failure for an exception from botocore, with what to fix."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return DownloadFailed(
            Reason.AUTH_FAILED,
            f"no S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "in the cache's env (from a Secret)",
        )
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in AUTH_CODES:
            return DownloadFailed(
                Reason.AUTH_FAILED,
                f"S3 refused access to {uri} ({code}): check AWS_ACCESS_KEY_ID, "
                "AWS_SECRET_ACCESS_KEY and that they may list and read this bucket",
            )
        if code in NOT_FOUND_CODES:
            what = "bucket" if code == "NoSuchBucket" else "object"
            return DownloadFailed(
                Reason.SOURCE_NOT_FOUND, f"{uri}: no such {what} ({code}); check the URI"
            )
        if code in THROTTLE_CODES:
            headers = error.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            retry_after = headers.get("retry-after")
            return DownloadFailed(
                Reason.RATE_LIMITED,
                f"S3 is throttling requests for {uri} ({code}); it will be retried",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        return DownloadFailed(Reason.NETWORK_ERROR, f"S3 failed for {uri}: {error}")
    return DownloadFailed(
        Reason.NETWORK_ERROR,
        f"could not reach S3 for {uri}: {error}; check AWS_ENDPOINT_URL and the network",
    )
