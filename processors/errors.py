"""Errors of the policy layer (``processors``).

Messages name keys, ids and allowed values — never a participant's data values.
"""

from __future__ import annotations

from schemas.errors import HubError


class PolicyError(HubError):
    """Root of every error the policy and projection core raises on purpose."""


class SiteError(PolicyError):
    """A site policy file is missing, unreadable or invalid.

    ``key_path`` locates the offending key (``partners[3].role``); the message says what is
    allowed there. A setup error: the file must be fixed before the hub can run.
    """

    def __init__(self, key_path: str, problem: str) -> None:
        self.key_path = key_path
        self.problem = problem
        where = key_path or "<file>"
        super().__init__(f"site policy: {where}: {problem}")


class StateError(PolicyError):
    """A stored participant state cannot be decoded (corrupt or from an unknown format)."""

    def __init__(self, participant_id: str, problem: str) -> None:
        self.participant_id = participant_id
        self.problem = problem
        super().__init__(f"participant state {participant_id or '<unknown>'}: {problem}")


class HistoryNeeded(PolicyError):
    """A step needs the whole history of a participant whose state holds only its head.

    Not a failure: the caller completes the state (reads its events and rows back) and applies
    the same input again. Raised before anything is returned, so nothing is half applied.
    """

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id
        super().__init__(f"participant {participant_id}: the step needs its whole history")
