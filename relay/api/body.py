"""Reading JSON request bodies: an object with known fields, every error naming its field."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from relay.api.errors import ApiError, bad_request
from relay.api.inputs import check_json_body, check_json_values

MISSING: Any = object()


async def read_object(request: web.Request, allowed: set[str],
                      multiline: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The body as a JSON object of ``allowed`` fields. Strings hold no control character, except
    line breaks and tabs in the ``multiline`` fields (dotted paths, e.g. ``mtls.key`` for PEM)."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", "request body is too large") from None
    check_json_body(request, raw)
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"body is not valid JSON: {exc}", code="malformed_json") from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object")
    check_json_values(data, multiline)
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r}", field=unknown[0], code="unknown_field")
    return data


def string(data: dict[str, Any], name: str, *, default: Any = MISSING, max_len: int = 200,
           min_len: int = 1) -> Any:
    value = data.get(name, default)
    if value is MISSING:
        raise bad_request(f"{name} is required", field=name, code="required")
    if value is default and name not in data:
        return value
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string", field=name)
    if not min_len <= len(value) <= max_len:
        raise bad_request(f"{name} must be {min_len}..{max_len} characters", field=name)
    return value


def integer(data: dict[str, Any], name: str, *, default: Any = MISSING, low: int, high: int) -> Any:
    value = data.get(name, default)
    if value is MISSING:
        raise bad_request(f"{name} is required", field=name, code="required")
    if name not in data:
        return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema counts 5.0 as an integer, so we do too
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer", field=name)
    if not low <= value <= high:
        raise bad_request(f"{name} must be between {low} and {high}", field=name)
    return value


def boolean(data: dict[str, Any], name: str, *, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false", field=name)
    return value


def string_list(data: dict[str, Any], name: str, *, default: Any = MISSING, max_items: int = 100,
                min_items: int = 0, max_len: int = 500) -> Any:
    value = data.get(name, default)
    if value is MISSING:
        raise bad_request(f"{name} is required", field=name, code="required")
    if name not in data:
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise bad_request(f"{name} must be a list of strings", field=name)
    if not min_items <= len(value) <= max_items:
        raise bad_request(f"{name} must have {min_items}..{max_items} items", field=name)
    if any(not v or len(v) > max_len for v in value):
        raise bad_request(f"{name} items must be 1..{max_len} characters", field=name)
    return value


MAX_UNIX_SECONDS = 1e11  # year 5138: beyond any real timestamp, well inside every store's range


def unix_seconds(name: str, value: Any) -> float:
    """A point in time as unix seconds (a number, or a numeric string from a query)."""
    try:
        seconds = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_UNIX_SECONDS):
        raise bad_request(f"{name} must be unix seconds (0..{MAX_UNIX_SECONDS:.0f})", field=name)
    return seconds
