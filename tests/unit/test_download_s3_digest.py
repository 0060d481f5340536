"""What an S3 ETag can prove, decided from a HEAD of part 1 (a stand-in S3 client answers)."""

from __future__ import annotations

from typing import Any

import pytest

from aimd.download.plan import Digest
from aimd.download.s3 import _digest

MD5 = "0123456789abcdef0123456789abcdef"
MiB = 1 << 20


class Head:
    """Answers ``head_object`` the way a store does; records what was asked."""

    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def head_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def digest(answer: dict[str, Any] | Exception, size: int, etag: str) -> Digest | None:
    client = Head(answer)
    result = _digest(client, "b", "k", size, etag)  # type: ignore[arg-type]
    assert all(call.get("PartNumber") == 1 for call in client.calls)
    return result


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


def test_unknown_etag_shapes_prove_nothing() -> None:
    assert digest({}, 10, "not-an-md5") is None
    assert digest({"ContentLength": 10 * MiB}, 10 * MiB, f"{MD5}-999") is None
