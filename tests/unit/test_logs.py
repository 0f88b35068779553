"""The harmless coordinator-lookup errors of a fresh broker are not shown as errors; others are."""

from __future__ import annotations

import logging

from relay.logs import _retriable_coordinator_lookup


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.consumer.group_coordinator", level, __file__, 1, message, (), None)


def test_a_retried_lookup_of_a_coordinator_not_yet_available_is_lowered() -> None:
    lowered = record("Group Coordinator Request failed: [Error 15] CoordinatorNotAvailableError")
    _retriable_coordinator_lookup(lowered)
    assert lowered.levelno == logging.INFO


def test_other_errors_stay_errors() -> None:
    other = record("Group Coordinator Request failed: [Error 30] GroupAuthorizationFailedError")
    assert _retriable_coordinator_lookup(other) is True and other.levelno == logging.ERROR
    session = record("Heartbeat session expired - marking coordinator dead")
    assert _retriable_coordinator_lookup(session) is True and session.levelno == logging.ERROR
