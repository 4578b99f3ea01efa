"""Avro's binary ``long``: a zig-zag varint (the Avro specification, "Binary Encoding"), and
the ``bytes``/``string`` it prefixes with their length.

Read and written by hand where the hub handles a fixed layout itself: the canonical envelope of
``lead.events`` (:mod:`schemas.canonical`), the stamp of an event's source
(:func:`schemas.codec.stamp_source_partner`) and a failed delivery's event id
(:func:`schemas.codec.event_id_of`).
"""

from __future__ import annotations

#: A long takes at most ten bytes (64 bits, seven per byte).
MAX_LONG_BYTES = 10


def read_long(data: bytes, position: int) -> tuple[int, int]:
    """The long at ``position`` of ``data`` and the position after it.

    Raises IndexError when ``data`` ends inside it, ValueError when it runs past ten bytes.
    """
    byte = data[position]
    if byte < 0x80:  # one byte, -64..63: the envelope's kind, partition and short strings' lengths
        return (byte >> 1) ^ -(byte & 1), position + 1
    shift = value = 0
    end = position + MAX_LONG_BYTES
    while position < end:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), position
        shift += 7
    raise ValueError("an Avro long longer than ten bytes")


def read_bytes(data: bytes, position: int) -> tuple[bytes, int]:
    """The Avro ``bytes`` (or ``string``) at ``position``: a long length, then that many bytes;
    and the position after them. Raises IndexError or ValueError as :func:`read_long`, and
    ValueError for a negative length or one that runs past ``data``."""
    length, start = read_long(data, position)
    end = start + length
    if length < 0 or end > len(data):
        raise ValueError(f"a length of {length} at {position} runs past the data")
    return data[start:end], end


def long_bytes(value: int) -> bytes:
    """The encoding of the long ``value`` (``-2**63 <= value < 2**63``)."""
    zigzag = (value << 1) ^ (value >> 63)
    if zigzag < 0x80:
        return _ONE_BYTE[zigzag]
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_ONE_BYTE = tuple(bytes((n,)) for n in range(0x80))
