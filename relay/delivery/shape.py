"""What an endpoint receives: each event as stored, or reshaped by the callback's transformation,
then framed as ENS (a JSON array) or as CloudEvents 1.0.

Transformations are JMESPath expressions: declarative (select, rename, reshape, filter), no code
execution, and guaranteed to terminate. They are bounded by the expression's length
(``MAX_EXPRESSION``), the event's size (ingest's record limit) and the output's (``MAX_OUTPUT``).
A transformation that fails on an event refuses that event alone (the lane dead-letters it with
the reason) and never holds the rest of the lane.

CloudEvents mapping: ``id`` = eventId, ``type`` = ``ens.`` + eventCategoryType, ``source`` =
``urn:ens:mid:<mid>``, ``time`` = timestampUTC as RFC 3339, ``subject`` = info.subscriberKey,
``datacontenttype`` = application/json, ``data`` = the (transformed) event. One event per POST is a
structured ``application/cloudevents+json`` event; several are an ``application/cloudevents-batch+json``
array.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.parser
import orjson

from relay.store.models import Callback, Job

MAX_EXPRESSION = 2000
MAX_OUTPUT = 256 * 1024
FORMATS = ("ens", "cloudevents")
ENS_CONTENT_TYPE = "application/json"
CE_CONTENT_TYPE = "application/cloudevents+json"
CE_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"


class TransformError(Exception):
    """The transformation does not parse, or fails on this event; the message says where."""


@functools.lru_cache(maxsize=4096)
def compile_transformation(expression: str) -> jmespath.parser.ParsedResult:
    if not 0 < len(expression) <= MAX_EXPRESSION:
        raise TransformError(f"a transformation is 1..{MAX_EXPRESSION} characters")
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise TransformError(" ".join(str(exc).split())) from None


def transform(expression: str, event: Any) -> Any:
    """The transformed event (JSON values), or ``TransformError``."""
    try:
        result = compile_transformation(expression).search(event)
    except jmespath.exceptions.JMESPathError as exc:
        raise TransformError(" ".join(str(exc).split())) from None
    if result is None:
        raise TransformError("the transformation gave null for this event (a field it needs is missing)")
    return result


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    refused: list[tuple[Job, str]]
    """Jobs whose event the transformation could not shape, with the reason; not in ``body``."""
    sent: list[Job]


def payload(callback: Callback, jobs: list[Job]) -> Payload:
    """The POST body for ``jobs``. The common case — no transformation, ENS format — joins the stored
    bytes without parsing them."""
    options = callback.options
    if options.transformation is None and options.format == "ens":
        return Payload(b"[" + b",".join(job.body for job in jobs) + b"]", ENS_CONTENT_TYPE, [], jobs)
    parts: list[bytes] = []
    sent: list[Job] = []
    refused: list[tuple[Job, str]] = []
    for job in jobs:
        try:
            parts.append(_shape(callback, orjson.loads(job.body)))
            sent.append(job)
        except TransformError as exc:
            refused.append((job, f"transformation failed: {exc}"[:500]))
    if options.format == "cloudevents" and callback.max_batch_size == 1 and len(parts) == 1:
        return Payload(parts[0], CE_CONTENT_TYPE, refused, sent)
    content_type = CE_BATCH_CONTENT_TYPE if options.format == "cloudevents" else ENS_CONTENT_TYPE
    return Payload(b"[" + b",".join(parts) + b"]", content_type, refused, sent)


def _shape(callback: Callback, event: Any) -> bytes:
    data = event if callback.options.transformation is None else transform(callback.options.transformation, event)
    if callback.options.format == "cloudevents":
        data = cloudevent(event, data)
    try:
        out = orjson.dumps(data)
    except TypeError as exc:  # JMESPath yields JSON values only; defensive
        raise TransformError(f"the result is not JSON: {exc}") from None
    if len(out) > MAX_OUTPUT:
        raise TransformError(f"the result is {len(out)} bytes, more than {MAX_OUTPUT}")
    return out


def cloudevent(event: dict[str, Any], data: Any) -> dict[str, Any]:
    """A CloudEvents 1.0 structured event for an ENS event (``data`` may be its transformation)."""
    timestamp = event.get("timestampUTC")
    raw_info = event.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.get("eventId"),
        "type": f"ens.{event.get('eventCategoryType')}",
        "source": f"urn:ens:mid:{event.get('mid')}",
        "datacontenttype": "application/json",
    }
    if isinstance(timestamp, int):
        with contextlib.suppress(ValueError, OverflowError, OSError):  # a time no calendar holds: optional
            envelope["time"] = dt.datetime.fromtimestamp(timestamp / 1000, dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(info.get("subscriberKey"), str):
        envelope["subject"] = info["subscriberKey"]
    envelope["data"] = data
    return envelope
