"""Digests of a view and the first differences between two views. Pure: rows are passed in.

The digest of a view is SHA-256 over one line per row, in (recipient, event_id) order by Unicode
code point (= UTF-8 byte order), each line being the canonical JSON of
``[recipient, event_id, row]`` (keys sorted, no spaces, UTF-8) followed by ``\\n``. Two views
have the same digest iff they hold the same rows for the same recipients.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Row = tuple[str, Mapping[str, Any]]


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (not ASCII-escaped)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ViewDigest:
    """A view's digest: the hex SHA-256 and how many rows it covers."""

    sha256: str
    rows: int


def digest_rows(rows: Iterable[Row]) -> ViewDigest:
    """Digest ``rows`` (recipient, row JSON), which must come in (recipient, event_id) order.

    Raises ValueError if they do not: a digest over an unordered stream would be meaningless.
    """
    hasher = hashlib.sha256()
    count = 0
    previous: tuple[str, str] | None = None
    for recipient, row in rows:
        key = (recipient, str(row["event_id"]))
        if previous is not None and key <= previous:
            raise ValueError("rows are not in strictly increasing (recipient, event_id) order")
        previous = key
        hasher.update(canonical_json([recipient, key[1], row]))
        hasher.update(b"\n")
        count += 1
    return ViewDigest(hasher.hexdigest(), count)


def digest_row_texts(rows: Iterable[tuple[str, str, str]]) -> ViewDigest:
    """:func:`digest_rows` over rows as a view stores them: (recipient, event_id, row JSON).

    The texts must be what the view writers store (:func:`consumers.store.encode_row_json`:
    sorted keys, no spaces, UTF-8). Such a text with no ``\\u`` escape is the canonical JSON
    itself, so it is hashed as it is, unparsed; any other (a control character, or a text an
    older writer escaped to ASCII) is parsed and re-serialised. The digest equals
    :func:`digest_rows` over the parsed rows. Raises ValueError if the rows are not in strictly
    increasing key order.
    """
    hasher = hashlib.sha256()
    update = hasher.update
    dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    count = 0
    previous: tuple[str, str] | None = None
    head = ""
    for recipient, event_id, text in rows:
        key = (recipient, event_id)
        if previous is not None and key <= previous:
            raise ValueError("rows are not in strictly increasing (recipient, event_id) order")
        if previous is None or recipient != previous[0]:
            head = f"[{dumps(recipient)},"
        previous = key
        if "\\u" in text:
            text = dumps(json.loads(text))
        update(f"{head}{dumps(event_id)},{text}]\n".encode())
        count += 1
    return ViewDigest(hasher.hexdigest(), count)


@dataclass(frozen=True)
class RowDifference:
    """One row that differs between two views — ids and categories only, never field values."""

    recipient: str
    event_id: str
    type: str
    kind: Literal["only_left", "only_right", "differs"]
    left_categories: tuple[str, ...] | None
    right_categories: tuple[str, ...] | None

    def describe(self, left: str = "live", right: str = "replay") -> str:
        """One line for a terminal, e.g. ``county-pao e-123 ReferralMade: only in live``."""
        what = {"only_left": f"only in {left}", "only_right": f"only in {right}",
                "differs": "differs"}[self.kind]
        cats = ""
        if self.kind == "differs":
            cats = (f" ({left} categories {list(self.left_categories or ())}, "
                    f"{right} {list(self.right_categories or ())})")
        return f"{self.recipient} {self.event_id} {self.type}: {what}{cats}"


def _categories(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(c) for c in row.get("categories") or ())


def first_differences(left: Iterable[Row], right: Iterable[Row],
                      limit: int = 10) -> list[RowDifference]:
    """Merge-join two views in (recipient, event_id) order; return the first ``limit`` diffs."""
    found: list[RowDifference] = []
    lit: Iterator[Row] = iter(left)
    rit: Iterator[Row] = iter(right)
    lrow = next(lit, None)
    rrow = next(rit, None)
    while (lrow is not None or rrow is not None) and len(found) < limit:
        lkey = (lrow[0], str(lrow[1]["event_id"])) if lrow is not None else None
        rkey = (rrow[0], str(rrow[1]["event_id"])) if rrow is not None else None
        if rkey is None or (lkey is not None and lkey < rkey):
            assert lrow is not None and lkey is not None
            found.append(RowDifference(lkey[0], lkey[1], str(lrow[1].get("type")), "only_left",
                                       _categories(lrow[1]), None))
            lrow = next(lit, None)
        elif lkey is None or rkey < lkey:
            assert rrow is not None
            found.append(RowDifference(rkey[0], rkey[1], str(rrow[1].get("type")), "only_right",
                                       None, _categories(rrow[1])))
            rrow = next(rit, None)
        else:
            assert lrow is not None and rrow is not None
            if canonical_json(lrow[1]) != canonical_json(rrow[1]):
                found.append(RowDifference(lkey[0], lkey[1], str(lrow[1].get("type")),
                                           "differs", _categories(lrow[1]),
                                           _categories(rrow[1])))
            lrow = next(lit, None)
            rrow = next(rit, None)
    return found
