"""Compile an Avro schema into fast, strict Python checkers and JSON converters.

A :class:`Shape` is compiled once per schema node and then called per event:

* ``check(value)`` accepts exactly the Python values fastavro returns for the node (``str`` for
  strings and enums, ``datetime`` for ``timestamp-micros``, ``date`` for ``date``, ``dict`` for
  records ...), so anything it accepts encodes and decodes back to an equal value;
* ``from_json(obj)`` converts the JSON-native form (ISO-8601 strings for timestamps and dates,
  plain values for unions) into those Python values, checking as it goes;
* ``from_default(obj)`` converts an Avro JSON ``default`` into the Python value.

Failures raise :class:`BadValue` carrying a message and the path to the field; callers turn it
into :class:`schemas.errors.InvalidField`. Messages name fields, types and allowed symbols and
never repeat the offending value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

Convert = Callable[[Any], Any]
Check = Callable[[Any], None]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE = date(1970, 1, 1)
SUPPORTED_LOGICAL_TYPES = frozenset({"timestamp-micros", "date"})
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class BadValue(Exception):
    """A value does not fit its schema node; ``parts`` is the field path, innermost first."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.parts: list[str] = []

    def at(self, part: str) -> BadValue:
        """Record that the failure happened under ``part`` (a field name or ``[index]``)."""
        self.parts.append(part)
        return self

    @property
    def path(self) -> str:
        """The dotted field path, outermost first (``payload.exceptions[0].categories``)."""
        out = ""
        for part in reversed(self.parts):
            out += part if part.startswith("[") or not out else "." + part
        return out


def safe_key(key: object) -> str:
    """Render a mapping key for a message: identifiers as-is, anything else redacted."""
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return key
    return "<non-identifier key>"


@dataclass(frozen=True, slots=True)
class Shape:
    """Compiled checkers and converters for one Avro schema node."""

    describe: str
    check: Check
    from_json: Convert
    from_default: Convert


_MISSING: Any = object()


def _nullable_inner(schema: Any) -> Any:
    """``T`` for a ``["null", T]`` union, else None."""
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null":
        return schema[1]
    return None


def _type_name(value: object) -> str:
    return type(value).__name__


def _mismatch(describe: str, value: object) -> BadValue:
    return BadValue(f"expected {describe}, got {_type_name(value)}")


def compile_shape(schema: Any, named: Mapping[str, Any]) -> Shape:
    """Compile a fastavro-parsed schema node; ``named`` resolves references to named types."""
    return _Compiler(named).compile(schema)


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.done: dict[str, Shape] = {}
        self.in_progress: set[str] = set()

    def compile(self, schema: Any) -> Shape:
        if isinstance(schema, list):
            return self._union([self.compile(branch) for branch in schema])
        if isinstance(schema, str):
            if schema in self.done:
                return self.done[schema]
            if schema in self.in_progress:
                return self._lazy(schema)
            if schema in self.named:
                return self.compile(self.named[schema])
            return self._primitive(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "timestamp-micros" and kind == "long":
            return _timestamp_micros()
        if logical == "date" and kind == "int":
            return _date()
        if kind in ("record", "error", "enum", "fixed"):
            name = schema["name"]
            self.in_progress.add(name)
            shape: Shape = getattr(self, "_" + ("record" if kind == "error" else kind))(schema)
            self.in_progress.discard(name)
            self.done[name] = shape
            return shape
        if kind == "array":
            return _array(self.compile(schema["items"]))
        if kind == "map":
            return _map(self.compile(schema["values"]))
        return self.compile(kind)

    def _lazy(self, name: str) -> Shape:
        def check(value: Any) -> None:
            self.done[name].check(value)

        def from_json(value: Any) -> Any:
            return self.done[name].from_json(value)

        def from_default(value: Any) -> Any:
            return self.done[name].from_default(value)

        return Shape(name.rsplit(".", 1)[-1], check, from_json, from_default)

    def _primitive(self, kind: str) -> Shape:
        if kind == "null":
            return _exact("null", lambda v: v is None)
        if kind == "boolean":
            return _exact("boolean", lambda v: type(v) is bool)
        if kind in _INT_RANGE:
            return _integer(kind, *_INT_RANGE[kind])
        if kind in ("float", "double"):
            return _floating(kind)
        if kind == "string":
            return _string()
        if kind == "bytes":
            return _bytes("bytes", None)
        raise ValueError(f"unsupported Avro type {kind!r}")

    def _enum(self, schema: Mapping[str, Any]) -> Shape:
        short = schema["name"].rsplit(".", 1)[-1]
        symbols = frozenset(schema["symbols"])
        describe = f"enum {short}"
        message = f"not a symbol of {short}; allowed: {', '.join(schema['symbols'])}"

        def check(value: Any) -> None:
            if type(value) is not str:
                raise _mismatch(describe, value)
            if value not in symbols:
                raise BadValue(message)

        def from_json(value: Any) -> Any:
            check(value)
            return value

        return Shape(describe, check, from_json, from_json)

    def _fixed(self, schema: Mapping[str, Any]) -> Shape:
        return _bytes(f"fixed {schema['name'].rsplit('.', 1)[-1]}", int(schema["size"]))

    def _record(self, schema: Mapping[str, Any]) -> Shape:
        short = schema["name"].rsplit(".", 1)[-1]
        describe = f"record {short}"
        specs: list[tuple[str, Shape, bool, Any]] = []
        fast: list[tuple[str, Check, bool, bool]] = []  # name, check, required, nullable
        for field in schema["fields"]:
            shape = self.compile(field["type"])
            has_default = "default" in field
            specs.append((field["name"], shape, not has_default, field.get("default")))
            inner = _nullable_inner(field["type"])
            check_inner = shape.check if inner is None else self.compile(inner).check
            fast.append((field["name"], check_inner, not has_default, inner is not None))
        names = frozenset(name for name, _, _, _ in specs)
        unknown = f"unknown field; allowed: {', '.join(name for name, _, _, _ in specs)}"

        def unknown_key(value: Mapping[Any, Any]) -> BadValue:
            key = next(k for k in value if k not in names)
            return BadValue(unknown).at(safe_key(key))

        def check(value: Any) -> None:
            if type(value) is not dict and not isinstance(value, Mapping):
                raise _mismatch(describe, value)
            if not names.issuperset(value):
                raise unknown_key(value)
            get = value.get
            for name, check_field, required, nullable in fast:
                item = get(name, _MISSING)
                if item is _MISSING:
                    if required:
                        raise BadValue("required field missing").at(name)
                    continue
                if item is None and nullable:
                    continue
                try:
                    check_field(item)
                except BadValue as bad:
                    if nullable and not bad.parts:
                        bad.message = f"{bad.message} (or null)"
                    raise bad.at(name) from None

        def from_json(value: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _mismatch(f"a JSON object ({describe})", value)
            if not names.issuperset(value):
                raise unknown_key(value)
            out: dict[str, Any] = {}
            for name, shape, required, default in specs:
                try:
                    if name in value:
                        out[name] = shape.from_json(value[name])
                    elif required:
                        raise BadValue("required field missing")
                    else:
                        out[name] = shape.from_default(default)
                except BadValue as bad:
                    raise bad.at(name) from None
            return out

        def from_default(value: Any) -> Any:
            if not isinstance(value, Mapping):
                raise _mismatch(f"a JSON object default ({describe})", value)
            out: dict[str, Any] = {}
            for name, shape, _, default in specs:
                out[name] = shape.from_default(value.get(name, default))
            return out

        return Shape(describe, check, from_json, from_default)

    @staticmethod
    def _union(branches: Sequence[Shape]) -> Shape:
        describe = " or ".join(b.describe for b in branches)
        if len(branches) == 2 and branches[0].describe == "null":
            inner = branches[1]

            def check_nullable(value: Any) -> None:
                if value is not None:
                    try:
                        inner.check(value)
                    except BadValue as bad:
                        if not bad.parts:
                            bad.message = f"{bad.message} (or null)"
                        raise

            def from_json_nullable(value: Any) -> Any:
                return None if value is None else inner.from_json(value)

            return Shape(describe, check_nullable, from_json_nullable, branches[0].from_default)

        def check(value: Any) -> None:
            for branch in branches:
                try:
                    branch.check(value)
                    return
                except BadValue:
                    continue
            raise _mismatch(describe, value)

        def from_json(value: Any) -> Any:
            for branch in branches:
                try:
                    return branch.from_json(value)
                except BadValue:
                    continue
            raise _mismatch(describe, value)

        return Shape(describe, check, from_json, branches[0].from_default)


def _exact(describe: str, accepts: Callable[[Any], bool]) -> Shape:
    def check(value: Any) -> None:
        if not accepts(value):
            raise _mismatch(describe, value)

    def from_json(value: Any) -> Any:
        check(value)
        return value

    return Shape(describe, check, from_json, from_json)


def _integer(describe: str, low: int, high: int) -> Shape:
    def check(value: Any) -> None:
        if type(value) is not int:
            raise _mismatch(describe, value)
        if not low <= value <= high:
            raise BadValue(f"{describe} out of range [{low}, {high}]")

    def from_json(value: Any) -> Any:
        check(value)
        return value

    return Shape(describe, check, from_json, from_json)


def _floating(describe: str) -> Shape:
    def check(value: Any) -> None:
        if type(value) is not float and type(value) is not int:
            raise _mismatch(describe, value)

    def from_json(value: Any) -> Any:
        check(value)
        return float(value)

    return Shape(describe, check, from_json, from_json)


def _string() -> Shape:
    def check(value: Any) -> None:
        if type(value) is not str:
            raise _mismatch("string", value)
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise BadValue("string is not valid Unicode (unpaired surrogate)") from None

    def from_json(value: Any) -> Any:
        check(value)
        return value

    return Shape("string", check, from_json, from_json)


def _bytes(describe: str, size: int | None) -> Shape:
    def check(value: Any) -> None:
        if type(value) is not bytes:
            raise _mismatch(describe, value)
        if size is not None and len(value) != size:
            raise BadValue(f"{describe} must be exactly {size} bytes")

    def from_json(value: Any) -> Any:
        """Avro's JSON convention: one character per byte (code points 0-255)."""
        if type(value) is not str:
            raise _mismatch(f"a string ({describe}, one char per byte)", value)
        try:
            data = value.encode("latin-1")
        except UnicodeEncodeError:
            raise BadValue(f"{describe} text must use code points 0-255 only") from None
        check(data)
        return data

    return Shape(describe, check, from_json, from_json)


def _timestamp_micros() -> Shape:
    describe = "timestamp-micros (timezone-aware datetime)"

    def check(value: Any) -> None:
        if not isinstance(value, datetime):
            raise _mismatch(describe, value)
        if value.utcoffset() is None:
            raise BadValue("expected a timezone-aware datetime (UTC), got a naive one")

    def from_json(value: Any) -> Any:
        if type(value) is not str:
            raise _mismatch("an ISO-8601 UTC timestamp string", value)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise BadValue(
                "expected an ISO-8601 timestamp like 2025-01-02T03:04:05.000006Z"
            ) from None
        if parsed.utcoffset() is None:
            raise BadValue("timestamp must carry a UTC offset or 'Z'")
        return parsed.astimezone(UTC)

    def from_default(value: Any) -> Any:
        if type(value) is not int:
            raise _mismatch("a long default (microseconds since the epoch)", value)
        return EPOCH + timedelta(microseconds=value)

    return Shape(describe, check, from_json, from_default)


def _date() -> Shape:
    describe = "date"

    def check(value: Any) -> None:
        if type(value) is not date:
            raise _mismatch(describe, value)

    def from_json(value: Any) -> Any:
        if type(value) is not str:
            raise _mismatch("an ISO-8601 date string", value)
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise BadValue("expected an ISO-8601 date like 2025-01-02") from None

    def from_default(value: Any) -> Any:
        if type(value) is not int:
            raise _mismatch("an int default (days since the epoch)", value)
        return EPOCH_DATE + timedelta(days=value)

    return Shape(describe, check, from_json, from_default)


def _array(items: Shape) -> Shape:
    describe = f"array<{items.describe}>"

    def check(value: Any) -> None:
        if type(value) is not list and type(value) is not tuple:
            raise _mismatch(describe, value)
        for index, item in enumerate(value):
            try:
                items.check(item)
            except BadValue as bad:
                raise bad.at(f"[{index}]") from None

    def convert(value: Any, item_convert: Convert) -> Any:
        if type(value) is not list:
            raise _mismatch(f"a JSON array ({describe})", value)
        out = []
        for index, item in enumerate(value):
            try:
                out.append(item_convert(item))
            except BadValue as bad:
                raise bad.at(f"[{index}]") from None
        return out

    return Shape(
        describe,
        check,
        lambda v: convert(v, items.from_json),
        lambda v: convert(v, items.from_default),
    )


def _map(values: Shape) -> Shape:
    describe = f"map<{values.describe}>"

    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise _mismatch(describe, value)
        for key, item in value.items():
            if type(key) is not str:
                raise BadValue("map keys must be strings")
            try:
                values.check(item)
            except BadValue as bad:
                raise bad.at(safe_key(key)) from None

    def convert(value: Any, item_convert: Convert) -> Any:
        if not isinstance(value, Mapping):
            raise _mismatch(f"a JSON object ({describe})", value)
        out = {}
        for key, item in value.items():
            try:
                out[key] = item_convert(item)
            except BadValue as bad:
                raise bad.at(safe_key(key)) from None
        return out

    return Shape(
        describe,
        check,
        lambda v: convert(v, values.from_json),
        lambda v: convert(v, values.from_default),
    )


__all__ = ["EPOCH", "SUPPORTED_LOGICAL_TYPES", "BadValue", "Shape", "compile_shape", "safe_key"]
