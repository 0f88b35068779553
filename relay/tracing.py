"""W3C Trace Context across the hop: a producer's ``traceparent`` Kafka header travels with its event
to the subscriber's HTTP request, so one trace id follows a bounce from the Kafka record to the POST.

Relay takes part as a child span: the POST carries the producer's trace id with a new span id (the
attempt), and the trace id is in the attempt's log line and the message-status API. Only the
``00`` version is read; anything malformed is ignored, never fatal.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

HEADER = "traceparent"
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


def from_headers(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The record's ``traceparent`` header if it is a valid one."""
    for name, value in headers or ():
        if name.lower() == HEADER and value is not None:
            try:
                text = value.decode("ascii").strip().lower()
            except (UnicodeDecodeError, AttributeError):
                return None
            return text if valid(text) else None
    return None


def valid(traceparent: str) -> bool:
    match = _TRACEPARENT.match(traceparent)
    return match is not None and match[1] != _ZERO_TRACE and match[2] != _ZERO_SPAN


def trace_id(traceparent: str | None) -> str | None:
    return traceparent[3:35] if traceparent else None


def child(traceparent: str) -> str:
    """The same trace, a new span (this attempt), the producer's sampling flag kept."""
    return f"00-{traceparent[3:35]}-{secrets.token_hex(8)}-{traceparent[-2:]}"
