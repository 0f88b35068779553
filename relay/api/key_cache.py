"""Which account an API key belongs to, remembered for a moment.

Why: every request looked its key up in the store, a trip through the event loop and a reader
thread. While the relay delivers flat out each trip waits behind a full loop iteration, and that
lookup was up to 40 ms of a console request's 100 (measured with 200 callbacks delivering).

Only keys that were found are remembered, so a new key works at once. Revoking a key on this
instance forgets its account's keys at once; another instance goes on accepting a revoked key for
at most ``ttl`` seconds (``api_key_cache``, 0 turns the cache off). Long-lived responses re-check
the store itself (``still_authorized``)."""

from __future__ import annotations

from relay.store.models import Account


class KeyCache:
    def __init__(self, ttl: float, max_keys: int = 10_000) -> None:
        self._ttl = ttl
        self._max_keys = max_keys
        self._accounts: dict[str, tuple[Account, float]] = {}  # key hash -> (account, remembered until)

    def get(self, key_hash: str, now: float) -> Account | None:
        entry = self._accounts.get(key_hash)
        if entry is None:
            return None
        account, until = entry
        if now >= until:
            del self._accounts[key_hash]
            return None
        return account

    def put(self, key_hash: str, account: Account, now: float) -> None:
        if self._ttl <= 0:
            return
        if len(self._accounts) >= self._max_keys:
            self._accounts.clear()  # many keys at once: start over rather than track their ages
        self._accounts[key_hash] = (account, now + self._ttl)

    def forget_account(self, account_id: str) -> None:
        """A key of this account was revoked: which one is not known by hash here, so all of them."""
        for key_hash in [h for h, (account, _) in self._accounts.items() if account.id == account_id]:
            del self._accounts[key_hash]
