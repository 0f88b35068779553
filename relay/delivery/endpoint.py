"""A POST to an endpoint, authenticated its owner's way: static custom headers, an OAuth2 bearer
token (client credentials), a client certificate (mTLS) and a custom CA.

Every send goes through here — lanes, test sends, recoveries, handshakes — so each authenticates the
same way. A callback with none of it configured costs one attribute check. Tokens are cached until
shortly before they expire and fetched again once after a 401; a token that cannot be had becomes
the attempt's error (``oauth2: …``), never a crash, and never carries the client secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from relay.delivery.http import DeliveryClient, HttpOutcome, UnsafeUrl
from relay.store.models import Callback, ClientCertificate, OAuth2Client

TOKEN_TIMEOUT = 10.0
# Headers Relay owns: a custom header never replaces them.
RESERVED_HEADERS = frozenset({
    "content-type", "content-length", "content-encoding", "transfer-encoding", "host", "connection",
    "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature", "webhook-test", "webhook-recovered",
    "x-sfmc-ens-signature",
})


class TokenError(Exception):
    """No token: the message says why, and never contains the client secret."""


@dataclass
class _Token:
    fingerprint: str
    value: str
    refresh_at: float


class EndpointSender:
    def __init__(self, client: DeliveryClient, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self._token_locks: dict[str, asyncio.Lock] = {}
        self._tls: dict[str, tuple[str, ssl.SSLContext]] = {}

    async def post(self, callback: Callback, body: bytes, headers: dict[str, str], timeout: float) -> HttpOutcome:
        auth = callback.auth
        if not auth.configured:
            return await self.client.post(callback.url, body, headers, timeout)
        headers = dict(headers)
        for name, value in auth.headers:
            headers.setdefault(name, value)
        tls = self.tls_context(callback.id, auth.mtls) if auth.mtls is not None else None
        if auth.oauth2 is None:
            return await self.client.post(callback.url, body, headers, timeout, tls)
        for fresh in (False, True):
            try:
                headers["authorization"] = "Bearer " + await self.token(callback.id, auth.oauth2, fresh=fresh)
            except TokenError as exc:
                return HttpOutcome(None, 0.0, error=f"oauth2: {exc}"[:500])
            outcome = await self.client.post(callback.url, body, headers, timeout, tls)
            if outcome.status != 401:
                break
        return outcome

    # -- OAuth2 client credentials ----------------------------------------------------------
    async def token(self, callback_id: str, oauth: OAuth2Client, fresh: bool = False) -> str:
        """A cached token for this callback's credentials; ``fresh`` after the endpoint said 401."""
        fingerprint = _fingerprint(oauth.token_url, oauth.client_id, oauth.client_secret, oauth.scope or "",
                                   oauth.audience or "")
        lock = self._token_locks.setdefault(callback_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(callback_id)
            if (cached is not None and cached.fingerprint == fingerprint and cached.refresh_at > self._clock()
                    and not fresh):
                return cached.value
            value, lifetime = await self.fetch_token(oauth)
            self._tokens[callback_id] = _Token(fingerprint, value, self._clock() + lifetime - min(60.0, lifetime / 10))
            return value

    async def fetch_token(self, oauth: OAuth2Client) -> tuple[str, float]:
        """A new token and its lifetime in seconds, or ``TokenError`` saying why not."""
        fields = {"grant_type": "client_credentials"}
        if oauth.scope:
            fields["scope"] = oauth.scope
        if oauth.audience:
            fields["audience"] = oauth.audience
        try:
            status, raw = await self.client.post_form(oauth.token_url, fields, oauth.client_id, oauth.client_secret,
                                                      TOKEN_TIMEOUT)
        except UnsafeUrl as exc:
            raise TokenError(f"token URL {exc}") from None
        except TimeoutError:
            raise TokenError(f"token endpoint did not answer within {TOKEN_TIMEOUT:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TokenError(f"token endpoint unreachable ({type(exc).__name__}: {exc})") from None
        if not 200 <= status < 300:
            raise TokenError(f"token endpoint answered {status}: {_excerpt(raw)}")
        try:
            reply = orjson.loads(raw)
            value = reply["access_token"]
            lifetime = float(reply.get("expires_in") or 3600)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise TokenError(f"token endpoint answered without an access_token: {_excerpt(raw)}") from None
        if not isinstance(value, str) or not value or any(ord(ch) < 0x21 for ch in value):
            raise TokenError("token endpoint answered with an unusable access_token")
        return value, max(1.0, lifetime)

    # -- mTLS --------------------------------------------------------------------------------
    def tls_context(self, callback_id: str, cert: ClientCertificate) -> ssl.SSLContext:
        """Built once per certificate (aiohttp pools connections per context)."""
        fingerprint = _fingerprint(cert.certificate, cert.key, cert.ca or "")
        cached = self._tls.get(callback_id)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        context = client_tls_context(cert)
        self._tls[callback_id] = (fingerprint, context)
        return context


def client_tls_context(cert: ClientCertificate) -> ssl.SSLContext:
    """An SSL context presenting the client certificate, checking the server against ``ca`` (or the
    system's CAs). Raises ``ssl.SSLError`` / ``ValueError`` for a certificate or key that does not load."""
    context = ssl.create_default_context(cadata=cert.ca) if cert.ca else ssl.create_default_context()
    # The standard library loads a certificate chain only from files: write both to a private
    # temporary directory (0700, files 0600) and remove them at once.
    with tempfile.TemporaryDirectory(prefix="relay-mtls-") as folder:
        cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        for path, text in ((cert_path, cert.certificate), (key_path, cert.key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
        context.load_cert_chain(cert_path, key_path)
    return context


def _fingerprint(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() + b"\x00")
    return digest.hexdigest()


def _excerpt(raw: bytes) -> str:
    return raw[:200].decode("utf-8", "replace") or "(empty)"
