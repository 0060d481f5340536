"""What an S3 object's metadata can prove: its full-object checksum, else its ETag, decided from
a HEAD with ``ChecksumMode=ENABLED`` and, for a multipart ETag, one of part 1 (a stand-in S3
client answers)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from aimd.download.plan import Digest
from aimd.download.s3 import _digest

MD5 = "0123456789abcdef0123456789abcdef"
MiB = 1 << 20


class Head:
    """Answers ``head_object`` the way a store does (``answer`` for the whole object,
    ``part_one`` for ``PartNumber=1``); records what was asked."""

    def __init__(
        self, answer: dict[str, Any] | Exception, part_one: dict[str, Any] | Exception
    ) -> None:
        self.answers = {None: answer, 1: part_one}
        self.calls: list[dict[str, Any]] = []

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        answer = self.answers[kwargs.get("PartNumber")]
        if isinstance(answer, Exception):
            raise answer
        return answer


def digest(
    answer: dict[str, Any] | Exception,
    size: int,
    etag: str,
    part_one: dict[str, Any] | Exception | None = None,
) -> Digest | None:
    client = Head(answer, answer if part_one is None else part_one)
    result = _digest(client, "b", "k", size, etag)  # type: ignore[arg-type]
    whole, *parts = client.calls
    assert whole == {"Bucket": "b", "Key": "k", "ChecksumMode": "ENABLED"}
    assert all(call.get("PartNumber") == 1 for call in parts)
    return result


CRC64 = bytes.fromhex("ae8b14860a799888")


def test_a_full_object_checksum_is_preferred_to_the_etag() -> None:
    answer = {"ChecksumCRC64NVME": base64.b64encode(CRC64).decode(), "ChecksumType": "FULL_OBJECT"}
    client = Head(answer, RuntimeError("asked"))
    assert _digest(client, "b", "k", 9, f"{MD5}-2") == Digest(  # type: ignore[arg-type]
        "crc64nvme", CRC64.hex()
    )
    assert len(client.calls) == 1


def test_a_checksum_holds_under_kms_where_the_etag_does_not() -> None:
    answer = {
        "ServerSideEncryption": "aws:kms",
        "ChecksumType": "FULL_OBJECT",
        "ChecksumSHA256": base64.b64encode(bytes(32)).decode(),
    }
    assert digest(answer, 10, MD5) == Digest("sha256", "00" * 32)


def test_a_composite_checksum_leaves_it_to_the_etag() -> None:
    # A multipart upload's CRC32 of its parts' CRC32s: needs every part's boundaries.
    composite = {"ChecksumType": "COMPOSITE", "ChecksumCRC32": "AAAAAA==-4"}
    part_one = {"ContentLength": 6 * MiB}
    untyped = {"ChecksumCRC32": "AAAAAA=="}
    for answer in (composite, untyped):
        assert digest(answer, 20 * MiB, f"{MD5}-4", part_one) == Digest(
            "s3-multipart-md5", f"{MD5}-4", 6 * MiB, authoritative=True
        )
    # A single-part object's checksum is of the whole object, whether or not the type is said.
    assert digest(untyped, 10, MD5) == Digest("crc32", "00000000")
    # A checksum that is not base64 is no checksum: the ETag decides.
    assert digest({"ChecksumCRC32": "not base64!"}, 10, MD5) == Digest("md5", MD5)


def test_single_part_etag_is_the_md5() -> None:
    assert digest({"ContentLength": 10}, 10, MD5) == Digest("md5", MD5)


@pytest.mark.parametrize(
    "encryption", [{"ServerSideEncryption": "aws:kms"}, {"SSECustomerAlgorithm": "AES256"}]
)
def test_encrypted_objects_have_no_md5_etag(encryption: dict[str, str]) -> None:
    assert digest({"ContentLength": 10, **encryption}, 10, MD5) is None


def test_multipart_part_size_from_the_store_is_authoritative() -> None:
    assert digest({"ContentLength": 6 * MiB}, 20 * MiB, f"{MD5}-4") == Digest(
        "s3-multipart-md5", f"{MD5}-4", 6 * MiB, authoritative=True
    )


def test_multipart_part_size_is_inferred_when_the_store_does_not_say() -> None:
    # The store ignores PartNumber and describes the whole object: 20 MiB in 3 parts fits
    # boto3's 8 MiB parts; a guess, so a mismatch will not fail the file.
    assert digest({"ContentLength": 20 * MiB}, 20 * MiB, f"{MD5}-3") == Digest(
        "s3-multipart-md5", f"{MD5}-3", 8 * MiB, authoritative=False
    )
    assert digest(RuntimeError("HEAD refused"), 20 * MiB, f"{MD5}-3") is not None
    assert digest({}, 20 * MiB, f"{MD5}-3", RuntimeError("PartNumber refused")) is not None


def test_unknown_etag_shapes_prove_nothing() -> None:
    assert digest({}, 10, "not-an-md5") is None
    assert digest({"ContentLength": 10 * MiB}, 10 * MiB, f"{MD5}-999") is None
