import ipaddress

import pytest

from relay.api.callbacks import check_callback_url
from relay.api.context import ApiContext
from relay.api.errors import ApiError
from relay.config import load_settings
from relay.delivery.http import DeliveryClient, UnsafeUrl, UrlPolicy
from tests.helpers.resolver import StaticResolver


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.1/hook",
        "https://172.16.5.4/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fe80::1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://localhost/hook",
        "https://user:pw@example.com/hook",
        "ftp://example.com/hook",
        "https:///nohost",
        "https://example.com:99999/hook",
    ],
)
def test_unsafe_urls_are_refused(url) -> None:
    with pytest.raises(UnsafeUrl):
        UrlPolicy().check_url(url)


def test_public_https_is_fine() -> None:
    policy = UrlPolicy()
    for url in ("https://hooks.example.com/relay", "https://93.184.216.34/relay", "https://[2606:4700::1111]/x"):
        try:
            policy.check_url(url)
        except UnsafeUrl as exc:
            raise AssertionError(f"{url} refused: {exc}") from None
    assert policy.ip_allowed("hooks.example.com", ipaddress.ip_address("93.184.216.34"))


def test_allowlist_opens_hosts_and_cidrs_including_http() -> None:
    policy = UrlPolicy(("127.0.0.1", "10.0.0.0/8", "internal.test"))
    policy.check_url("http://127.0.0.1:9000/hook")
    policy.check_url("https://10.9.8.7/hook")
    policy.check_url("http://internal.test/hook")
    with pytest.raises(UnsafeUrl):
        policy.check_url("https://192.168.1.1/hook")


def test_resolved_addresses_are_checked_per_address() -> None:
    policy = UrlPolicy(("10.0.0.0/8",))
    assert policy.ip_allowed("x.example", ipaddress.ip_address("93.184.216.34"))
    assert policy.ip_allowed("x.example", ipaddress.ip_address("10.1.1.1"))
    assert not policy.ip_allowed("x.example", ipaddress.ip_address("127.0.0.1"))
    assert not policy.ip_allowed("x.example", ipaddress.ip_address("169.254.169.254"))


# Every standard way an IPv6 address carries an IPv4 one, each pointing somewhere Relay must not call.
EMBEDDED_PRIVATE = [
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 well-known prefix → 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # → 169.254.169.254
    "64:ff9b:1::a00:1",  # NAT64 local-use prefix → 10.0.0.1
    "2002:7f00:1::1",  # 6to4 → 127.0.0.1
    "2002:a9fe:a9fe::1",  # → 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (obfuscated)
]
EMBEDDED_PUBLIC = ["::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1"]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_ipv6_forms_embedding_private_ipv4_are_refused_as_literals(address) -> None:
    with pytest.raises(UnsafeUrl):
        UrlPolicy().check_url(f"https://[{address}]/hook")
    assert not UrlPolicy().ip_allowed("x.example", ipaddress.ip_address(address))


@pytest.mark.parametrize("address", EMBEDDED_PUBLIC)
def test_ipv6_forms_embedding_public_ipv4_are_judged_by_it(address) -> None:
    UrlPolicy().check_url(f"https://[{address}]/hook")


def _context(table: dict[str, list[str]]) -> ApiContext:
    client = DeliveryClient(UrlPolicy(), resolver=StaticResolver(table))
    return ApiContext(load_settings(env={}), store=None, client=client)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
async def test_names_resolving_to_embedded_private_ipv4_are_refused_at_registration(address) -> None:
    with pytest.raises(ApiError) as info:
        await check_callback_url(_context({"hooks.example": [address]}), "https://hooks.example/hook")
    assert info.value.code == "unsafe_url"


async def test_names_resolving_to_embedded_public_ipv4_are_accepted_at_registration() -> None:
    await check_callback_url(_context({"hooks.example": EMBEDDED_PUBLIC}), "https://hooks.example/hook")


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
async def test_names_resolving_to_embedded_private_ipv4_are_refused_at_connect_time(address) -> None:
    client = DeliveryClient(UrlPolicy(), resolver=StaticResolver({"hooks.example": [address]}))
    await client.start()
    try:
        outcome = await client.post("https://hooks.example/hook", b"[]", {}, timeout=5)
    finally:
        await client.close()
    assert outcome.status is None
    assert "may not call" in (outcome.error or ""), outcome.error


@pytest.mark.parametrize(
    "url",
    [
        "https://exa mple.com/hook",
        "https://example.com/ho ok",
        "https://example.com/hook\r\nX-Injected: 1",
        "https://example.com/\nhook",
        "https://example.com\t/hook",
        "https://example.com:0/hook",
        "https://" + "a" * 64 + ".example.com/hook",
        "https://" + ".".join(["abcdefghij"] * 25) + ".com/hook",
        "https://exa..mple.com/hook",
        "https://xn--zz.example/hook",
    ],
)
def test_malformed_urls_are_refused_with_a_reason(url) -> None:
    with pytest.raises(UnsafeUrl) as info:
        UrlPolicy().check_url(url)
    assert str(info.value)


def test_a_remembered_verdict_is_the_same_verdict() -> None:
    """Every POST asks again; the answer must not change because it was asked before."""
    policy = UrlPolicy(("internal.test",))
    for _ in range(3):
        with pytest.raises(UnsafeUrl, match="private, loopback"):
            policy.check_url("https://10.0.0.1/hook")
        policy.check_url("http://internal.test/hook")
        with pytest.raises(UnsafeUrl, match="must use https"):
            policy.check_url("http://public.example/hook")
