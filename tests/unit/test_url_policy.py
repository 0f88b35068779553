import ipaddress

import pytest

from relay.delivery.http import UnsafeUrl, UrlPolicy


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
    UrlPolicy().check_url("https://hooks.example.com/relay")
    UrlPolicy().check_url("https://93.184.216.34/relay")


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
