"""The protobuf wire format, just enough to read the string fields of a request.

Pyroscope's querier requests are small messages whose label selectors are string fields;
reading them needs no generated code. Every occurrence of a field is returned, because a
decoder keeps the last one of a repeated scalar: the caller authorises them all.
"""

from __future__ import annotations

from collections.abc import Collection

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def string_fields(data: bytes, wanted: Collection[int] | None = None) -> dict[int, list[str]]:
    """Length-delimited fields decoded as UTF-8, by field number; others skipped.

    `wanted` limits decoding to those fields: a nested message elsewhere is bytes, not text.
    """
    fields: dict[int, list[str]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire == VARINT:
            _, pos = _varint(data, pos)
        elif wire == I64:
            pos += 8
        elif wire == I32:
            pos += 4
        elif wire == LEN:
            length, pos = _varint(data, pos)
            end = pos + length
            if end > len(data):
                raise WireError(f"field {number} runs past the end")
            if wanted is None or number in wanted:
                try:
                    fields.setdefault(number, []).append(data[pos:end].decode("utf-8"))
                except UnicodeDecodeError:
                    raise WireError(f"field {number} is not UTF-8 text") from None
            pos = end
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")
        if pos > len(data):
            raise WireError("truncated message")
    return fields
