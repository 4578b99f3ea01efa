"""What ``audit replay`` and ``audit export`` say of a window with nothing in it (pure part).

The command-line behaviour (exit 3, the message on stderr, no bundle written) is checked on the
demo's data by ``tests/leadhub/test_demo.py::test_an_audit_window_before_the_log_says_so``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumers.audit.window import LogTimes, empty_export_message, empty_replay_message

T0 = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
TOPIC = "lead.events"


def _times(*records: tuple[int, bool]) -> LogTimes:
    """LogTimes of records received ``seconds`` after T0 (True: an event, False: a tick)."""
    times = LogTimes()
    for seconds, event in records:
        times.add(T0 + timedelta(seconds=seconds), event)
    return times


def test_log_times_keep_the_extremes_in_any_order() -> None:
    times = _times((30, True), (0, False), (90, False), (10, True), (60, True))
    assert (times.first, times.last) == (T0, T0 + timedelta(seconds=90))
    assert times.first_event == T0 + timedelta(seconds=10)
    assert times.last_event == T0 + timedelta(seconds=60)
    assert times.describe(TOPIC) == ("the records of lead.events were received from "
                                     "2026-11-30T14:00:00Z to 2026-11-30T14:01:30Z, its events "
                                     "from 2026-11-30T14:00:10Z to 2026-11-30T14:01:00Z")


def test_an_until_before_the_first_event_names_it() -> None:
    times = _times((0, False), (5, False), (10, True), (60, True))
    message = empty_replay_message(TOPIC, T0 + timedelta(seconds=7), 2, times)
    assert "no event of lead.events was received at or before --until 2026-11-30T14:00:07Z" \
        in message
    assert "(2 records by then, all clock ticks)" in message
    assert "pick an --until after 2026-11-30T14:00:10Z" in message
    assert "received_at" in message and "occurred_at" in message
    before_all = empty_replay_message(TOPIC, datetime(2026, 2, 1, tzinfo=UTC), 0, times)
    assert "records by then" not in before_all and "2026-02-01T00:00:00Z" in before_all


def test_a_log_without_events_or_records_says_so() -> None:
    ticks = empty_replay_message(TOPIC, None, 3, _times((0, False), (5, False)))
    assert "all of them clock ticks (no event yet)" in ticks
    empty = empty_replay_message(TOPIC, T0, 0, LogTimes())
    assert "lead.events holds no record yet" in empty and "LEADHUB_TOPIC_PREFIX" in empty
    export = empty_export_message(TOPIC, T0, T0 + timedelta(days=1), LogTimes())
    assert export.startswith("nothing to export") and "holds no record yet" in export


def test_events_that_give_no_row_are_told_apart_from_an_early_until() -> None:
    times = _times((0, True), (60, True))
    message = empty_replay_message(TOPIC, T0 + timedelta(seconds=30), 1, times)
    assert "give no recipient a row" in message and "pick an --until" not in message


def test_an_export_window_outside_the_log_names_the_logs_span() -> None:
    times = _times((0, False), (10, True), (60, True), (90, False))
    message = empty_export_message(TOPIC, datetime(2026, 1, 1, tzinfo=UTC),
                                   datetime(2026, 2, 1, tzinfo=UTC), times)
    assert message.startswith("nothing to export: no record of lead.events was received in "
                              "[2026-01-01T00:00:00Z, 2026-02-01T00:00:00Z]")
    assert "from 2026-11-30T14:00:00Z to 2026-11-30T14:01:30Z" in message
    assert "its events from 2026-11-30T14:00:10Z to 2026-11-30T14:01:00Z" in message
