"""Kubernetes quantities (``20Gi``, ``1.5G``, ``500m``, ``16106127360``): byte counts, validity,
the sizes people read (``16.0GiB``), and the PVC size for a model (B3: size + 10 %, whole GiB)."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

GIB = 1024**3
HEADROOM = Decimal("1.10")

_SUFFIXES = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
}
# resource.Quantity's grammar: a signed decimal, then a binary suffix, a decimal suffix or an
# exponent.
_ANY_QUANTITY = re.compile(
    r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))?$"
)
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?([A-Za-z]*)$")


def parse_bytes(value: object) -> int | None:
    """Bytes in a quantity, rounded up; None when absent or not a quantity."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    match = _QUANTITY.match(str(value).strip())
    if match is None or match.group(3) not in _SUFFIXES:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    if match.group(2):
        number *= Decimal(10) ** int(match.group(2))
    return math.ceil(number * _SUFFIXES[match.group(3)])


def pvc_size(size_bytes: int) -> str:
    """The model size plus 10 % headroom, rounded up to whole GiB (at least 1Gi)."""
    gib = math.ceil(Decimal(size_bytes) * HEADROOM / GIB)
    return f"{max(1, gib)}Gi"


def is_quantity(value: object) -> bool:
    """True for what the API server accepts as a resource.Quantity (``500m``, ``2``, ``1.5Gi``)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _ANY_QUANTITY.match(value.strip()) is not None


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def display_size(size_bytes: int) -> str:
    """A byte count as people read it: ``17179869184`` → ``16.0GiB``."""
    value = float(size_bytes)
    for unit in _BINARY_UNITS:
        if value < 1024 or unit == _BINARY_UNITS[-1]:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")
