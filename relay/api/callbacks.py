"""/v1/callbacks — receiving endpoints, their signing secret, and the ownership handshake.

On create, Relay POSTs ``{callbackId, verificationKey}`` to the URL; the owner proves it
received it by sending the key back to ``/v1/callbacks/{id}/verify`` within 4 hours.
Unverified callbacks receive no events.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from relay.api import body
from relay.api.auth import require_account
from relay.api.context import ApiContext, context, operations, registry_changed
from relay.api.endpoint_auth import AUTH_FIELDS, PEM_FIELDS, auth_json, endpoint_auth
from relay.api.errors import ApiError, bad_request, json_response
from relay.crypto import hash_api_key
from relay.delivery.http import UnsafeUrl
from relay.delivery.shape import FORMATS, TransformError, compile_transformation
from relay.ids import new_id
from relay.operations import Handshake
from relay.signing import (
    SIGNING_KEY_PREFIX,
    new_secret,
    new_signing_key,
    public_key,
)
from relay.store.base import PreconditionFailed
from relay.store.models import Callback, DeliveryOptions, EndpointAuth, SigningSecret

log = structlog.get_logger("relay.api.callbacks")
routes = web.RouteTableDef()
# One callback by id; "transform-preview" is a route of its own (controls.py), not an id.
ONE_CALLBACK = "/v1/callbacks/{id:(?!transform-preview$)[^/]+}"

VERIFICATION_TTL = 4 * 3600.0


OPTION_FIELDS = {"timeout", "retrySchedule", "retryMaxAge", "maxInFlight", "rateLimit", "transformation", "format"}
RATE_FIELDS = {"eventsPerSecond": "rate_events", "requestsPerSecond": "rate_requests"}
MAX_RATE = 100_000.0
CREATE_FIELDS = {"name", "url", "maxBatchSize", "ensSignature", "ed25519", *OPTION_FIELDS, *AUTH_FIELDS}
UPDATE_FIELDS = CREATE_FIELDS | {"enabled"}


def callback_json(callback: Callback) -> dict[str, Any]:
    return {
        "id": callback.id,
        "name": callback.name,
        "url": callback.url,
        "maxBatchSize": callback.max_batch_size,
        "ensSignature": callback.ens_signature,
        "verified": callback.verified,
        "enabled": callback.enabled,
        "disabledReason": callback.disabled_reason,
        "createdAt": callback.created_at,
        "version": callback.version,
        "secretCount": sum(1 for s in callback.secrets if not s.secret.startswith(SIGNING_KEY_PREFIX)),
        "publicKeys": [public_key(s.secret) for s in callback.secrets
                       if s.secret.startswith(SIGNING_KEY_PREFIX)],
        "timeout": callback.options.timeout,
        "retrySchedule": list(callback.options.retry_schedule) if callback.options.retry_schedule else None,
        "retryMaxAge": callback.options.retry_max_age,
        "maxInFlight": callback.options.max_in_flight,
        "rateLimit": _rate_limit_json(callback.options),
        "transformation": callback.options.transformation,
        "format": callback.options.format,
        "throttledUntil": callback.throttled_until,
        "auth": auth_json(callback.auth),
    }


def _rate_limit_json(options: DeliveryOptions) -> dict[str, float | None] | None:
    if options.rate_events is None and options.rate_requests is None:
        return None
    return {"eventsPerSecond": options.rate_events, "requestsPerSecond": options.rate_requests}


def delivery_options(data: dict[str, Any], current: DeliveryOptions) -> DeliveryOptions:
    """Per-callback delivery overrides; ``null`` resets one to the global setting."""
    timeout, schedule, max_age, in_flight = (current.timeout, current.retry_schedule,
                                             current.retry_max_age, current.max_in_flight)
    if "timeout" in data:
        timeout = _number(data, "timeout", 0.1, 60.0)
    if "retrySchedule" in data:
        raw = data["retrySchedule"]
        if raw is not None:
            if (not isinstance(raw, list) or not 1 <= len(raw) <= 50 or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 7 * 86400
                    for v in raw)):
                raise bad_request("retrySchedule must be 1..50 delays in seconds (0..604800)",
                                  field="retrySchedule")
            raw = tuple(float(v) for v in raw)
        schedule = raw
    if "retryMaxAge" in data:
        max_age = _number(data, "retryMaxAge", 1.0, 30 * 86400.0)
    if "maxInFlight" in data:
        value = data["maxInFlight"]
        in_flight = None if value is None else body.integer(data, "maxInFlight", low=1, high=256)
    rates = {"rate_events": current.rate_events, "rate_requests": current.rate_requests}
    if "rateLimit" in data:
        rates = _rate_limit(data["rateLimit"])
    transformation = current.transformation
    if "transformation" in data:
        transformation = None if data["transformation"] is None else checked_transformation(data["transformation"])
    shape = current.format
    if "format" in data:
        shape = data["format"]
        if shape not in FORMATS:
            raise bad_request(f"format must be one of {', '.join(FORMATS)}", field="format")
    return DeliveryOptions(timeout, schedule, max_age, in_flight, rate_events=rates["rate_events"],
                           rate_requests=rates["rate_requests"], transformation=transformation, format=shape)


def checked_transformation(value: Any, field: str = "transformation") -> str:
    """A JMESPath expression that parses, or a 400 naming the field with the parser's message."""
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a JMESPath expression (a string)", field=field)
    try:
        compile_transformation(value)
    except TransformError as exc:
        raise bad_request(f"{field} does not parse: {exc}", field=field) from None
    return value


def _rate_limit(raw: Any) -> dict[str, float | None]:
    """``{"eventsPerSecond": n, "requestsPerSecond": m}`` (either or both), or null for none."""
    rates: dict[str, float | None] = {"rate_events": None, "rate_requests": None}
    if raw is None:
        return rates
    if not isinstance(raw, dict) or not raw or not set(raw) <= set(RATE_FIELDS):
        raise bad_request("rateLimit must be null or an object with eventsPerSecond and/or requestsPerSecond",
                          field="rateLimit")
    for name, value in raw.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_RATE:
            raise bad_request(f"rateLimit.{name} must be a number above 0 and at most {MAX_RATE:g}",
                              field=f"rateLimit.{name}")
        rates[RATE_FIELDS[name]] = float(value)
    return rates


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data[name]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise bad_request(f"{name} must be a number of seconds between {low:g} and {high:g}", field=name)
    return float(value)


async def check_callback_url(ctx: ApiContext, url: str) -> None:
    """Registration-time URL rules; the same rules are enforced again at connect time."""
    try:
        ctx.client.policy.check_url(url)
    except UnsafeUrl as exc:
        raise bad_request(f"url {exc}", field="url", code="unsafe_url") from None
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise bad_request("url must not have a query string or fragment", field="url")
    host = parts.hostname or ""
    if ctx.client.policy.host_allowlisted(host):
        return
    try:
        addresses = await ctx.client.resolve(host)
    except OSError:
        raise bad_request(f"url host {host!r} does not resolve", field="url") from None
    refused = [str(a) for a in addresses if not ctx.client.policy.ip_allowed(host, a)]
    if refused:
        raise bad_request(
            f"url host {host!r} resolves to a private or reserved address ({refused[0]})",
            field="url", code="unsafe_url",
        )


@routes.post("/v1/callbacks")
async def create_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, CREATE_FIELDS, PEM_FIELDS)
    name = body.string(data, "name")
    url = body.string(data, "url", max_len=2000)
    max_batch = body.integer(data, "maxBatchSize", default=1000, low=1, high=1000)
    ens = body.boolean(data, "ensSignature", default=False)
    ed25519 = body.boolean(data, "ed25519", default=False)
    options = delivery_options(data, DeliveryOptions())
    await check_callback_url(ctx, url)
    auth = await endpoint_auth(ctx, data, EndpointAuth())
    now = ctx.clock()
    secret = new_secret()
    keys = [SigningSecret(secret, now)]
    if ed25519:
        keys.append(SigningSecret(new_signing_key(), now))
    callback = Callback(
        id=new_id("cb"), account_id=account.id, name=name, url=url, max_batch_size=max_batch,
        secrets=tuple(keys), verified=False, ens_signature=ens, created_at=now, options=options, auth=auth,
    )
    await ctx.store.create_callback(callback)
    await start_handshake(ctx, callback)
    return json_response({**callback_json(callback), "secret": secret}, status=201)


async def start_handshake(ctx: ApiContext, callback: Callback) -> None:
    """Issue a fresh single-use key; a durable operation POSTs it to the URL (``Handshake``)."""
    key = "vk_" + secrets.token_urlsafe(24)  # never starts with "-": it is pasted into `relay callbacks verify`
    await ctx.store.set_verification(callback.id, hash_api_key(key), ctx.clock() + VERIFICATION_TTL)
    await operations(ctx).submit(callback.account_id, Handshake.name,
                                 {"callbackId": callback.id, "verificationKey": key}, prefix="hs")


@routes.get("/v1/callbacks")
async def list_callbacks(request: web.Request) -> web.Response:
    account = require_account(request)
    callbacks = await context(request).store.list_callbacks(account.id)
    return json_response({"data": [callback_json(c) for c in callbacks]})


@routes.get(ONE_CALLBACK)
async def get_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    callback = await context(request).store.get_callback(request.match_info["id"], account.id)
    return _with_etag(json_response(callback_json(callback)), callback)


@routes.post("/v1/callbacks/{id}/verify")
async def verify_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    callback_id = request.match_info["id"]
    data = await body.read_object(request, {"verificationKey", "callbackId"})
    key = body.string(data, "verificationKey", max_len=200)
    given_id = body.string(data, "callbackId", default=callback_id)
    if given_id != callback_id:
        raise bad_request("callbackId does not match the URL", field="callbackId")
    result = await ctx.store.confirm_verification(
        callback_id, account.id, hash_api_key(key), ctx.clock()
    )
    if result == "mismatch":
        raise ApiError(400, "verification_failed", "verificationKey is wrong or already used",
                       "verificationKey")
    if result == "already":
        raise ApiError(409, "already_verified", "callback is already verified")
    if result == "expired":
        raise ApiError(400, "verification_expired",
                       "verificationKey expired; request a new one", "verificationKey")
    await registry_changed(ctx)
    callback = await ctx.store.get_callback(callback_id, account.id)
    return json_response(callback_json(callback))


@routes.post("/v1/callbacks/{id}/verification")
async def resend_verification(request: web.Request) -> web.Response:
    """Issue a new verification key (the old one stops working) and send it again."""
    account = require_account(request)
    ctx = context(request)
    callback = await ctx.store.get_callback(request.match_info["id"], account.id)
    if callback.verified:
        raise ApiError(409, "already_verified", "callback is already verified")
    await start_handshake(ctx, callback)
    return json_response({"id": callback.id, "sent": True}, status=202)


@routes.patch(ONE_CALLBACK)
async def update_callback(request: web.Request) -> web.Response:
    """Change settings; a new URL must be verified again; ``enabled: true`` re-enables."""
    """Only the fields named in the body are written. ``If-Match`` (the ETag of a GET) makes the
    change conditional: 412 if the callback changed since, e.g. the relay disabled it."""
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, UPDATE_FIELDS, PEM_FIELDS)
    url_changed = False

    async def change(callback: Callback) -> tuple[Callback, dict[str, Any]]:
        nonlocal url_changed
        changes: dict[str, Any] = {}
        if OPTION_FIELDS & set(data):
            changes["options"] = delivery_options(data, callback.options)
        if AUTH_FIELDS & set(data):
            changes["auth"] = await endpoint_auth(ctx, data, callback.auth)
        if "name" in data:
            changes["name"] = body.string(data, "name")
        if "maxBatchSize" in data:
            changes["max_batch_size"] = body.integer(data, "maxBatchSize", low=1, high=1000)
        if "ensSignature" in data:
            changes["ens_signature"] = body.boolean(data, "ensSignature", default=False)
        if "ed25519" in data:
            changes["secrets"] = _with_ed25519(callback, body.boolean(data, "ed25519", default=False),
                                               ctx.clock())
        if "enabled" in data:
            enabled = body.boolean(data, "enabled", default=True)
            changes.update(enabled=enabled, disabled_reason=None if enabled else "disabled by its owner")
        url_changed = "url" in data and data["url"] != callback.url
        if url_changed:
            url = body.string(data, "url", max_len=2000)
            await check_callback_url(ctx, url)
            changes.update(url=url, verified=False)
        return dataclasses.replace(callback, **changes), changes

    updated, changes = await _update(ctx, account.id, request.match_info["id"], change, if_match(request))
    if changes.get("enabled"):
        await ctx.store.set_failing_since(updated.id, None)
    if url_changed:
        await start_handshake(ctx, updated)
    await registry_changed(ctx)
    return _with_etag(json_response(callback_json(updated)), updated)


async def _update(ctx: ApiContext, account_id: str, callback_id: str,
                  change: Callable[[Callback], Awaitable[tuple[Callback, dict[str, Any]]]],
                  expected: int | None) -> tuple[Callback, dict[str, Any]]:
    """Read, change, write only what changed — conditional on the version read, so nothing
    written meanwhile is lost: retried when no If-Match was given, 412 when one was."""
    for _ in range(5):
        current = await ctx.store.get_callback(callback_id, account_id)
        if expected is not None and current.version != expected:
            raise _stale(current)
        updated, changes = await change(current)
        if not changes:
            return current, changes
        try:
            version = await ctx.store.update_callback(updated, changes, expected_version=current.version)
        except PreconditionFailed:
            if expected is not None:
                raise _stale(await ctx.store.get_callback(callback_id, account_id)) from None
            continue
        return dataclasses.replace(updated, version=version), changes
    raise ApiError(409, "conflict", f"callback {callback_id} kept changing while being updated; try again")


def if_match(request: web.Request) -> int | None:
    """The version an ``If-Match`` header names (``"7"``, ``W/"7"``); None without one or for ``*``."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    tag = header.strip().removeprefix("W/").strip('"')
    return int(tag) if tag.isascii() and tag.isdigit() and len(tag) < 19 else -1  # -1 matches nothing


def _stale(current: Callback) -> ApiError:
    return ApiError(412, "precondition_failed",
                    f"callback {current.id} changed since that version (now {etag(current)}); read it again")


def etag(callback: Callback) -> str:
    return f'"{callback.version}"'


def _with_etag(response: web.Response, callback: Callback) -> web.Response:
    response.headers["ETag"] = etag(callback)
    return response


def _with_ed25519(callback: Callback, wanted: bool, now: float) -> tuple[SigningSecret, ...]:
    has = any(s.secret.startswith(SIGNING_KEY_PREFIX) for s in callback.secrets)
    if wanted and not has:
        return (*callback.secrets, SigningSecret(new_signing_key(), now))
    if not wanted:
        return tuple(s for s in callback.secrets if not s.secret.startswith(SIGNING_KEY_PREFIX))
    return callback.secrets


@routes.delete(ONE_CALLBACK)
async def delete_callback(request: web.Request) -> web.Response:
    account = require_account(request)
    ctx = context(request)
    await ctx.store.delete_callback(request.match_info["id"], account.id)
    await registry_changed(ctx)
    return web.Response(status=204)


@routes.post("/v1/callbacks/{id}/rotate-secret")
async def rotate_secret(request: web.Request) -> web.Response:
    """A new secret signs from now on; the previous one stays valid for the overlap, and
    deliveries carry both signatures until it ends."""
    account = require_account(request)
    ctx = context(request)
    data = await body.read_object(request, {"overlapSeconds"})
    default_overlap = ctx.settings.secret_rotation_overlap
    overlap = body.integer(data, "overlapSeconds", default=int(default_overlap), low=0, high=30 * 86400)
    now = ctx.clock()
    secret = new_secret()

    async def rotate(callback: Callback) -> tuple[Callback, dict[str, Any]]:
        active = callback.active_secrets(now)
        fresh = [SigningSecret(secret, now)]
        if any(s.secret.startswith(SIGNING_KEY_PREFIX) for s in active):
            fresh.append(SigningSecret(new_signing_key(), now))
        kept = [
            dataclasses.replace(s, expires_at=min(s.expires_at or now + overlap, now + overlap))
            for s in active
        ]
        secrets_ = (*fresh, *kept)
        return dataclasses.replace(callback, secrets=secrets_), {"secrets": secrets_}

    rotated, _ = await _update(ctx, account.id, request.match_info["id"], rotate, if_match(request))
    await registry_changed(ctx)
    return _with_etag(json_response({
        "id": rotated.id, "secret": secret, "previousSecretsExpireAt": now + overlap,
        "publicKeys": callback_json(rotated)["publicKeys"],
    }), rotated)
