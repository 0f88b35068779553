"""Reading and showing how Relay authenticates to a callback: ``headers``, ``oauth2``, ``mtls``.

Each is checked before it is saved — header names and values, the token URL under the same rules
as callback URLs plus a real token request with the credentials, the certificate and key parsed and
matched — so a mistake is a 400 naming the field rather than failed deliveries later. Secrets are
never shown back: header values, the client secret and the private key stay sealed in the store.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from relay.api.context import ApiContext, sender
from relay.api.errors import bad_request
from relay.delivery.endpoint import RESERVED_HEADERS, TokenError, client_tls_context
from relay.delivery.http import UnsafeUrl
from relay.store.models import ClientCertificate, EndpointAuth, OAuth2Client

AUTH_FIELDS = {"headers", "oauth2", "mtls"}
PEM_FIELDS = frozenset({"mtls.certificate", "mtls.key", "mtls.ca"})  # may hold line breaks
MAX_HEADERS = 20
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
MAX_PEM = 64 * 1024


async def endpoint_auth(ctx: ApiContext, data: dict[str, Any], current: EndpointAuth) -> EndpointAuth:
    """The callback's authentication after applying the fields present in ``data`` (null removes one)."""
    headers, oauth2, mtls = current.headers, current.oauth2, current.mtls
    if "oauth2" in data:
        oauth2 = None if data["oauth2"] is None else await _oauth2(ctx, data["oauth2"])
    if "headers" in data:
        headers = () if data["headers"] is None else _headers(data["headers"])
    if oauth2 is not None and any(name == "authorization" for name, _ in headers):
        raise bad_request("headers must not set authorization when oauth2 is configured", field="headers")
    if "mtls" in data:
        mtls = None if data["mtls"] is None else _mtls(data["mtls"])
    return EndpointAuth(headers, oauth2, mtls)


def auth_json(auth: EndpointAuth) -> dict[str, Any]:
    o, m = auth.oauth2, auth.mtls
    return {
        "headers": [name for name, _ in auth.headers],
        "oauth2": None if o is None else {"tokenUrl": o.token_url, "clientId": o.client_id, "scope": o.scope,
                                          "audience": o.audience},
        "mtls": None if m is None else _certificate_summary(m),
    }


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict) or len(raw) > MAX_HEADERS:
        raise bad_request(f"headers must be an object of at most {MAX_HEADERS} names and values", field="headers")
    out = []
    for name, value in raw.items():
        field = f"headers.{name}"
        if not _TOKEN.match(name):
            raise bad_request("a header name is 1..64 token characters", field=field)
        if name.lower() in RESERVED_HEADERS:
            raise bad_request(f"{name} is set by Relay and cannot be replaced", field=field)
        if not isinstance(value, str) or not 0 < len(value) <= 1024:
            raise bad_request("a header value is a string of 1..1024 characters", field=field)
        out.append((name.lower(), value))
    return tuple(out)


async def _oauth2(ctx: ApiContext, raw: Any) -> OAuth2Client:
    if not isinstance(raw, dict) or not set(raw) <= {"tokenUrl", "clientId", "clientSecret", "scope", "audience"}:
        raise bad_request("oauth2 is {tokenUrl, clientId, clientSecret, scope?, audience?}", field="oauth2")
    values: dict[str, str | None] = {}
    for name, required in (("tokenUrl", True), ("clientId", True), ("clientSecret", True), ("scope", False),
                           ("audience", False)):
        value = raw.get(name)
        if value is None and not required:
            values[name] = None
            continue
        if not isinstance(value, str) or not 0 < len(value) <= 2000:
            raise bad_request(f"oauth2.{name} must be a string of 1..2000 characters", field=f"oauth2.{name}")
        values[name] = value
    client = OAuth2Client(str(values["tokenUrl"]), str(values["clientId"]), str(values["clientSecret"]),
                          values["scope"], values["audience"])
    try:
        ctx.client.policy.check_url(client.token_url)
    except UnsafeUrl as exc:
        raise bad_request(f"oauth2.tokenUrl {exc}", field="oauth2.tokenUrl", code="unsafe_url") from None
    try:  # the credentials are tried now: a typo is a 400 here, not a failed delivery later
        await sender(ctx).fetch_token(client)
    except TokenError as exc:
        raise bad_request(f"oauth2: no token with these credentials: {exc}", field="oauth2.tokenUrl") from None
    return client


def _mtls(raw: Any) -> ClientCertificate:
    if not isinstance(raw, dict) or not set(raw) <= {"certificate", "key", "ca"}:
        raise bad_request("mtls is {certificate, key, ca?} in PEM", field="mtls")
    for name in ("certificate", "key", "ca"):
        value = raw.get(name)
        if (value is not None or name != "ca") and (not isinstance(value, str) or not 0 < len(value) <= MAX_PEM):
            raise bad_request(f"mtls.{name} must be PEM text of at most {MAX_PEM} characters", field=f"mtls.{name}")
    try:
        certificate = x509.load_pem_x509_certificate(raw["certificate"].encode())
    except ValueError as exc:
        raise bad_request(f"mtls.certificate is not a PEM certificate: {exc}", field="mtls.certificate") from None
    try:
        key = serialization.load_pem_private_key(raw["key"].encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise bad_request(f"mtls.key is not an unencrypted PEM private key: {exc}", field="mtls.key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != certificate.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise bad_request("mtls.key does not belong to mtls.certificate", field="mtls.key")
    if raw.get("ca") is not None:
        try:
            x509.load_pem_x509_certificates(raw["ca"].encode())
        except ValueError as exc:
            raise bad_request(f"mtls.ca is not a PEM certificate bundle: {exc}", field="mtls.ca") from None
    cert = ClientCertificate(raw["certificate"], raw["key"], raw.get("ca"))
    try:
        client_tls_context(cert)
    except (ssl.SSLError, ValueError) as exc:
        raise bad_request(f"mtls: the certificate and key do not load for TLS: {exc}",
                          field="mtls.certificate") from None
    return cert


def _certificate_summary(cert: ClientCertificate) -> dict[str, Any]:
    parsed = x509.load_pem_x509_certificate(cert.certificate.encode())
    return {"subject": parsed.subject.rfc4514_string(), "notAfter": parsed.not_valid_after_utc.timestamp(),
            "customCa": cert.ca is not None}
