"""What verifying an audit bundle reports: :class:`Failure`, one thing that did not verify
and where (partition and offset or leaf, checkpoint, file or manifest field), and
:class:`Report`, the counts and every failure in the order found (``ok`` iff there is none).
Plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from consumers.audit.bundle_format import MANIFEST_FILE


@dataclass(frozen=True)
class Failure:
    """One thing that did not verify: where (partition and offset or leaf index, checkpoint,
    file of the bundle or manifest field) and why. A missing record has no offset the verifier
    could know: it is named by its leaf index (and the reason gives the offsets it lies
    between)."""

    reason: str
    partition: int | None = None
    offset: int | None = None
    checkpoint: int | None = None
    leaf: int | None = None
    #: the bundle file concerned (relative path, ``/``-separated)
    file: str | None = None
    #: the manifest field concerned (``window.to``; ``file`` is then manifest.json)
    field: str | None = None

    def describe(self) -> str:
        """``partition 2 offset 17: ...``, ``partition 2 leaf #9: ...``, ``checkpoint #3:
        ...``, ``schemas/X.avsc: ...`` or ``manifest.json field 'window.to': ...``."""
        if self.field is not None:
            return f"{MANIFEST_FILE} field {self.field!r}: {self.reason}"
        if self.file is not None:
            return f"{self.file}: {self.reason}"
        if self.offset is not None:
            return f"partition {self.partition} offset {self.offset}: {self.reason}"
        if self.leaf is not None:
            return f"partition {self.partition} leaf #{self.leaf}: {self.reason}"
        if self.checkpoint is not None:
            return f"checkpoint #{self.checkpoint}: {self.reason}"
        if self.partition is not None:
            return f"partition {self.partition}: {self.reason}"
        return self.reason


@dataclass
class Report:
    """What verification found. ``ok`` iff nothing failed."""

    records: int = 0
    checkpoints: int = 0
    key_id: str = ""
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True iff every check passed."""
        return not self.failures

    @property
    def first(self) -> Failure | None:
        """The first failure found (in bundle order), if any."""
        return self.failures[0] if self.failures else None
