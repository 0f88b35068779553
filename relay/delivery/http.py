"""The outbound HTTP client: pooled, keep-alive, never follows redirects, and SSRF-safe.

Address rules are enforced where the connection is made (in the resolver), not only when a URL
is registered, so a DNS name that later points at 127.0.0.1 or 169.254.169.254 is still refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
EXCERPT_BYTES = 1024


class UnsafeUrl(ValueError):
    """A callback URL that Relay refuses to call; the message says which rule it breaks."""


class UrlPolicy:
    """https only, and only public addresses — unless host or address is on the allow-list."""

    def __init__(self, allowlist: tuple[str, ...] = ()) -> None:
        self._hosts = frozenset(e for e in allowlist if "/" not in e and not _is_ip(e))
        self._networks = tuple(
            ipaddress.ip_network(e if "/" in e else f"{e}/{'128' if ':' in e else '32'}",
                                 strict=False)
            for e in allowlist
            if "/" in e or _is_ip(e)
        )

    def host_allowlisted(self, host: str) -> bool:
        host = host.lower().strip("[]")
        if host in self._hosts:
            return True
        return _is_ip(host) and self.ip_allowlisted(ipaddress.ip_address(host))

    def ip_allowlisted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self._networks)

    def ip_allowed(self, host: str, ip: IPAddress) -> bool:
        if host.lower() in self._hosts or self.ip_allowlisted(ip):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: str) -> None:
        """Static checks (scheme, userinfo, literal addresses); names are checked on connect."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise UnsafeUrl(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not host:
            raise UnsafeUrl("must be an absolute https:// URL")
        if parts.username is not None or parts.password is not None:
            raise UnsafeUrl("must not contain user information")
        if parts.scheme == "http" and not self.host_allowlisted(host):
            raise UnsafeUrl("must use https (http:// only for hosts in RELAY_URL_ALLOWLIST)")
        if _is_ip(host) and not self.ip_allowed(host, ipaddress.ip_address(host)):
            raise UnsafeUrl(f"address {host} is private, loopback, link-local or reserved")
        if host.lower() in ("localhost", "localhost.localdomain") and not self.host_allowlisted(host):
            raise UnsafeUrl("localhost is not allowed")


class GuardedResolver(AbstractResolver):
    """Resolves as usual, then drops every address the policy refuses."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.ip_allowed(host, ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses Relay may not call")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    status: int | None
    latency_ms: float
    error: str | None = None
    excerpt: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class DeliveryClient:
    """One pooled aiohttp session for every callback. Inject a different session in tests."""

    def __init__(self, policy: UrlPolicy, max_connections: int = 256,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.policy = policy
        self._own_session = session is None
        self._session = session
        self._max_connections = max_connections

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                resolver=GuardedResolver(self.policy),
                keepalive_timeout=30,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"user-agent": "Relay-Webhooks/0.1"}
            )

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   timeout: float) -> HttpOutcome:
        assert self._session is not None, "client not started"
        started = time.perf_counter()
        try:
            self.policy.check_url(url)
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.content.read(EXCERPT_BYTES)
                return HttpOutcome(
                    status=response.status,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    excerpt=raw.decode("utf-8", "replace") if raw else None,
                    retry_after=_retry_after(response.headers.get("retry-after")),
                )
        except TimeoutError:
            return self._failed(started, f"timeout after {timeout:g}s")
        except UnsafeUrl as exc:
            return self._failed(started, f"unsafe url: {exc}")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(started, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _failed(started: float, error: str) -> HttpOutcome:
        return HttpOutcome(None, (time.perf_counter() - started) * 1000, error=error[:500])


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


async def resolve_all(host: str) -> list[Any]:
    """Addresses of ``host`` (for registration-time checks)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]
