"""One signed POST to a callback outside its lane: the ownership handshake, a test send, a
recovery. Same signature headers, same SSRF-safe client; no window, no retry schedule, no
attempt log — the caller decides what an outcome means. Authenticated like any delivery
(``EndpointSender``: custom headers, OAuth2, mTLS)."""

from __future__ import annotations

from collections.abc import Mapping

from relay.delivery.endpoint import EndpointSender
from relay.delivery.http import HttpOutcome
from relay.delivery.shape import ENS_CONTENT_TYPE
from relay.signing import SigningKeys, delivery_headers
from relay.store.models import Callback


async def post_signed(sender: EndpointSender, callback: Callback, body: bytes, webhook_id: str, now: float,
                      timeout: float, marks: Mapping[str, str] | None = None,
                      content_type: str = ENS_CONTENT_TYPE) -> HttpOutcome:
    """``marks`` are extra headers that say what kind of send this is (``webhook-test``,
    ``webhook-recovered``); they never replace a signature or content header."""
    keys = SigningKeys.from_secrets(s.secret for s in callback.active_secrets(now))
    headers = delivery_headers(keys, webhook_id, int(now), body, ens=callback.ens_signature)
    headers["content-type"] = content_type
    for name, value in (marks or {}).items():
        headers.setdefault(name, value)
    return await sender.post(callback, body, headers, timeout)
