"""Rules every request meets before a handler sees it, so no input reaches a store that would
refuse it (PostgreSQL rejects U+0000 in text and integers beyond 64 bits with a 500 otherwise).

- path parameters with a control character name nothing that exists: 404;
- query strings longer than ``MAX_QUERY_CHARS``, or with a control character: 400 naming it;
- JSON bodies (see ``relay.api.body``): the JSON media type (else 415), no control character in
  any key or string, no integer beyond signed 64 bits — each 400 naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from relay.api.errors import ApiError, bad_request, error_response
from relay.jsonwalk import INT64_MAX, out_of_int64, walk_json

MAX_QUERY_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


@web.middleware
async def input_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if len(request.query_string) > MAX_QUERY_CHARS:
        return error_response(400, "query_too_long", f"the query string is longer than {MAX_QUERY_CHARS} characters")
    for name, value in request.query.items():
        if has_control(name) or has_control(value):
            return error_response(400, "invalid", f"query parameter {name!r} contains a control character",
                                  name if not has_control(name) else None)
    if any(has_control(value) for value in request.match_info.values()):
        return error_response(404, "not_found", "no such resource")
    return await handler(request)


def check_json_body(request: web.Request, raw: bytes) -> None:
    """Bodies of JSON routes are JSON (415 otherwise), whatever the client sends."""
    if raw and request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {request.content_type or 'no content type'}")


def check_json_values(data: Any, multiline: frozenset[str] = frozenset()) -> None:
    for path, item in walk_json(data):
        control = _CONTROL_BUT_LINES if path in multiline else _CONTROL
        if isinstance(item, str) and control.search(item):
            raise bad_request(f"{path} contains a control character", field=path)
        if out_of_int64(item):
            raise bad_request(f"{path} is beyond the signed 64-bit range", field=path)


def database_id(text: str) -> int | None:
    """A numeric id from a path or cursor, or None when no row can have it."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= INT64_MAX else None
