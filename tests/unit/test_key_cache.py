"""The API key cache: found keys only, for the cache time, forgotten per account on revocation."""

from __future__ import annotations

from relay.api.key_cache import KeyCache
from relay.store.models import Account


def _account(account_id: str) -> Account:
    return Account(id=account_id, name=account_id, mid=account_id, created_at=0.0)


def test_an_account_is_remembered_for_the_cache_time_and_no_longer() -> None:
    cache = KeyCache(ttl=1.0)
    cache.put("h1", _account("a"), now=100.0)
    assert cache.get("h1", now=100.9) == _account("a")
    assert cache.get("h1", now=101.0) is None
    assert cache.get("h1", now=100.5) is None, "an expired entry is gone, not revived by an earlier clock"


def test_a_zero_cache_time_remembers_nothing() -> None:
    cache = KeyCache(ttl=0)
    cache.put("h1", _account("a"), now=100.0)
    assert cache.get("h1", now=100.0) is None


def test_revoking_forgets_every_key_of_that_account_and_only_those() -> None:
    cache = KeyCache(ttl=60)
    for key_hash, account_id in (("h1", "a"), ("h2", "a"), ("h3", "b")):
        cache.put(key_hash, _account(account_id), now=0.0)
    cache.forget_account("a")
    assert (cache.get("h1", 1.0), cache.get("h2", 1.0)) == (None, None)
    assert cache.get("h3", 1.0) == _account("b")


def test_the_cache_is_bounded() -> None:
    cache = KeyCache(ttl=60, max_keys=3)
    for n in range(10):
        cache.put(f"h{n}", _account("a"), now=0.0)
    assert sum(cache.get(f"h{n}", 1.0) is not None for n in range(10)) <= 3
    assert cache.get("h9", 1.0) is not None, "the newest key is kept"
