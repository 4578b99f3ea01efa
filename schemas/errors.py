"""The root of leadhub's exception tree, and the ``schemas`` layer's subtree.

Every error leadhub raises on purpose derives from :class:`HubError`. Each layer has its own
subtree (``ContractError`` in ``schemas``, ``PolicyError`` in ``processors``, ``ServiceError`` in
``leadhub.services`` ...). Library errors are wrapped with ``raise ... from exc``.

Messages say what was wrong and what to do about it. They never contain personal data: name
fields, ids of events and partners, offsets — never a field's value.
"""

from __future__ import annotations

from enum import StrEnum


class HubError(Exception):
    """Root of every error leadhub raises on purpose."""


class RejectReason(StrEnum):
    """Stable machine-readable codes for why an event was rejected (dead-letter ``reason``)."""

    NOT_SINGLE_OBJECT = "NOT_SINGLE_OBJECT"
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    MALFORMED_BODY = "MALFORMED_BODY"
    RESOLUTION_FAILED = "RESOLUTION_FAILED"
    INVALID_FIELD = "INVALID_FIELD"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_CATALOG = "INVALID_CATALOG"


class DeadLetterReason(StrEnum):
    """Every code the ``lead.reason`` header of a ``lead.dlq`` record can hold.

    The one list of dead-letter reasons (docs/wire-format.md "Reason codes" documents each,
    and a test fails when one is missing there). The first group repeats
    :class:`RejectReason`, since the validator dead-letters any contract error with the
    error's own reason; the rest are the validator's and the projector's own checks.
    """

    # the codec's (a ContractError's reason)
    NOT_SINGLE_OBJECT = "NOT_SINGLE_OBJECT"
    UNKNOWN_FINGERPRINT = "UNKNOWN_FINGERPRINT"
    MALFORMED_BODY = "MALFORMED_BODY"
    RESOLUTION_FAILED = "RESOLUTION_FAILED"
    INVALID_FIELD = "INVALID_FIELD"
    UNKNOWN_EVENT_TYPE = "UNKNOWN_EVENT_TYPE"
    MALFORMED_JSON = "MALFORMED_JSON"
    INVALID_CATALOG = "INVALID_CATALOG"
    # the validator's (processors/validate.py)
    TOO_LARGE = "TOO_LARGE"
    UNKNOWN_PARTNER = "UNKNOWN_PARTNER"
    KEY_MISMATCH = "KEY_MISMATCH"
    SOURCE_MISMATCH = "SOURCE_MISMATCH"
    EMITTER_NOT_ALLOWED = "EMITTER_NOT_ALLOWED"
    # the projector's (consumers/live_projector.py)
    NOT_CANONICAL = "NOT_CANONICAL"
    EVENT_ID_REUSED = "EVENT_ID_REUSED"
    # both steps: a record that kept failing (a bug), passed only with this dead letter
    PROCESSING_FAILED = "PROCESSING_FAILED"


class ContractError(HubError):
    """An event or schema breaks the event contract.

    ``reason`` is a stable code for dead-letter records and metrics; ``field_path`` names the
    offending field (``payload.door``, ``payload.exceptions[0].recipients``) when there is one.
    The message names fields, types and schema ids only, never a field's value.
    """

    default_reason: RejectReason = RejectReason.INVALID_FIELD

    def __init__(self, message: str, *, field_path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason: RejectReason = self.default_reason
        self.field_path = field_path


class NotSingleObject(ContractError):
    """The bytes are not an Avro single-object encoding (missing ``C3 01`` marker or too short)."""

    default_reason = RejectReason.NOT_SINGLE_OBJECT


class UnknownFingerprint(ContractError):
    """No schema version in the catalog has this CRC-64-AVRO fingerprint."""

    default_reason = RejectReason.UNKNOWN_FINGERPRINT


class MalformedBody(ContractError):
    """The Avro body does not decode with the writer schema its fingerprint names."""

    default_reason = RejectReason.MALFORMED_BODY


class NonCanonicalBody(MalformedBody):
    """The Avro body decodes, but not from the one encoding Avro gives what it decodes to.

    A negative enum or union index, a varint with needless continuation bytes, a boolean byte
    other than 0 or 1, an array or map split into several blocks: the decoded event re-encodes
    to other bytes. Rejected so one event has exactly one accepted encoding; the reason code
    stays ``MALFORMED_BODY``.
    """


class ResolutionFailed(ContractError):
    """The body decodes with its writer schema but cannot be resolved to the reader schema."""

    default_reason = RejectReason.RESOLUTION_FAILED


class InvalidField(ContractError):
    """A field is missing, unknown, or of the wrong type or value.

    ``field_path`` names it; the message says what is allowed.
    """

    default_reason = RejectReason.INVALID_FIELD


class UnknownEventType(ContractError):
    """The event type (or the version of it) is not in the catalog."""

    default_reason = RejectReason.UNKNOWN_EVENT_TYPE


class MalformedJson(ContractError):
    """A JSON (Lines) event is not valid JSON or not an event envelope object."""

    default_reason = RejectReason.MALFORMED_JSON


class CatalogError(ContractError):
    """A schema file cannot be loaded into the catalog (bad JSON, bad Avro, bad file name)."""

    default_reason = RejectReason.INVALID_CATALOG
