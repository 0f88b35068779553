import orjson
import pytest

from relay.events import RecordRef, decode_event
from relay.routing import InvalidFilter, SubscriptionIndex, parse_filter
from relay.samples import sample_event
from relay.store.models import Callback, SigningSecret, Subscription

REF = RecordRef("t", 0, 0)


def callback(cid: str, account: str = "acct_a", verified: bool = True, enabled: bool = True) -> Callback:
    return Callback(cid, account, cid, "https://example.com/h", 10, (SigningSecret("whsec_AA==", 0),),
                    verified=verified, enabled=enabled)


def sub(sid: str, cid: str, types: list[str], filters: tuple[str, ...] = (), account: str = "acct_a",
        status: str = "active", ordering: str = "subscriberKey") -> Subscription:
    return Subscription(sid, account, sid, cid, tuple(types), filters, status, None, ordering)  # type: ignore[arg-type]


def event(kind: str = "EmailBounced", mid: str = "100", **info):
    data = sample_event(kind, mid=mid, subscriber_key="s1", message_key="m1")
    data["info"].update(info)
    return decode_event(orjson.dumps(data), REF, 100_000)


def index(subs, callbacks=None) -> SubscriptionIndex:
    callbacks = callbacks or [callback("cb1"), callback("cb2")]
    return SubscriptionIndex({"100": "acct_a", "200": "acct_b"}, callbacks, subs)


def test_routes_by_account_and_type() -> None:
    idx = index([sub("s1", "cb1", ["TransactionalSendEvents.EmailBounced"])])
    assert [r.callback.id for r in idx.route(event(), "acct_a")] == ["cb1"]
    assert idx.route(event("EmailSent"), "acct_a") == []
    assert idx.route(event(mid="200"), "acct_b") == []
    assert idx.account_for("200") == "acct_b"
    assert idx.account_for("300") is None


def test_category_wildcard() -> None:
    idx = index([sub("s1", "cb1", ["TransactionalSendEvents.*"])])
    assert len(idx.route(event("SmsDelivered"), "acct_a")) == 1
    assert idx.route(event("EmailOpen"), "acct_a") == []


def test_one_delivery_per_callback_even_when_several_subscriptions_match() -> None:
    idx = index([
        sub("s1", "cb1", ["TransactionalSendEvents.EmailBounced"]),
        sub("s2", "cb1", ["TransactionalSendEvents.*"]),
        sub("s3", "cb2", ["TransactionalSendEvents.*"]),
    ])
    assert sorted(r.callback.id for r in idx.route(event(), "acct_a")) == ["cb1", "cb2"]


def test_paused_unverified_and_disabled_receive_nothing() -> None:
    idx = index(
        [sub("s1", "cb1", ["TransactionalSendEvents.*"], status="paused"),
         sub("s2", "cb2", ["TransactionalSendEvents.*"]),
         sub("s3", "cb3", ["TransactionalSendEvents.*"])],
        callbacks=[callback("cb1"), callback("cb2", verified=False), callback("cb3", enabled=False)],
    )
    assert idx.route(event(), "acct_a") == []


@pytest.mark.parametrize(
    ("filters", "hit"),
    [
        (("bounceCode=HARD",), True),
        (("bounceCode=SOFT",), False),
        (("bounceCode!=SOFT",), True),
        (("bounceCode=SOFT|HARD",), True),
        (("bounceCode=HARD", "definitionKey=password-reset"), True),
        (("bounceCode=HARD", "definitionKey=welcome"), False),
        (("subscriberKey=s1", "messageKey=m1"), True),
        (("statusCode=5.1.1",), True),
        (("smtpReason!=x",), True),
    ],
)
def test_filters_must_all_match(filters, hit) -> None:
    idx = index([sub("s1", "cb1", ["TransactionalSendEvents.*"], filters=filters)])
    e = event(bounceCode="HARD", statusCode="5.1.1")
    e.data["definitionKey"] = "password-reset"
    assert bool(idx.route(e, "acct_a")) is hit


@pytest.mark.parametrize("text", ["bounceCode", "=HARD", "nope=1", "bounceCode=", "bounceCode=A|"])
def test_bad_filters_are_refused(text) -> None:
    with pytest.raises(InvalidFilter):
        parse_filter(text)


@pytest.mark.parametrize(("ordering", "key"), [("subscriberKey", "s1"), ("messageKey", "m1"), ("none", None)])
def test_ordering_key_follows_the_subscription(ordering, key) -> None:
    idx = index([sub("s1", "cb1", ["TransactionalSendEvents.*"], ordering=ordering)])
    assert idx.route(event(), "acct_a")[0].ordering_key == key


# -- the equality-filter index must route exactly as testing every subscription would -----------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = ["a", "b", "c"]
_filter_texts = st.builds(
    lambda field, op, values: f"{field}{op}{'|'.join(values)}",
    st.sampled_from(["definitionKey", "status", "subscriberKey", "mid"]), st.sampled_from(["=", "!="]),
    st.lists(st.sampled_from([*_VALUES, "100", "s1"]), min_size=1, max_size=2, unique=True))


def naive_route(subs: list, callbacks: list, data_event) -> dict[str, tuple]:
    """Every subscription in order, every filter tested: the reference the index must match."""
    usable = {c.id: c for c in callbacks if c.verified and c.enabled}
    routes: dict[str, tuple] = {}
    exact = [s for s in subs if data_event.type in s.event_types]
    wildcard = [s for s in subs if f"{data_event.type.split('.')[0]}.*" in s.event_types]
    for s in exact + wildcard:
        held = s.status == "paused" and s.on_pause == "hold"
        if s.callback_id not in usable or (s.status != "active" and not held):
            continue
        known = routes.get(s.callback_id)
        if known is not None and known[1] is None:
            continue
        if all(parse_filter(f).matches(data_event.data) for f in s.filters):
            held_by = s.id if s.status == "paused" else None
            if known is None or held_by is None:
                key = data_event.subscriber_key if s.ordering == "subscriberKey" else (
                    data_event.message_key if s.ordering == "messageKey" else None)
                routes[s.callback_id] = (key, held_by)
    return routes


@settings(max_examples=1500)
@given(st.lists(st.tuples(st.sampled_from(["cb1", "cb2", "cb3"]),
                          st.sampled_from([["TransactionalSendEvents.EmailBounced"], ["TransactionalSendEvents.*"],
                                           ["TransactionalSendEvents.EmailSent"]]),
                          st.lists(_filter_texts, max_size=3), st.sampled_from(["active", "paused"]),
                          st.sampled_from(["subscriberKey", "messageKey", "none"])), max_size=12),
       st.sampled_from(_VALUES), st.sampled_from(_VALUES))
def test_indexed_routing_matches_testing_every_subscription(specs, definition_key, status) -> None:
    subs = []
    for n, (cid, types, filters, state, ordering) in enumerate(specs):
        s = sub(f"s{n}", cid, types, tuple(filters), status=state, ordering=ordering)
        subs.append(Subscription(s.id, s.account_id, s.name, s.callback_id, s.event_types, s.filters, s.status,
                                 None, s.ordering, on_pause="hold" if n % 2 else "drop"))
    callbacks = [callback("cb1"), callback("cb2"), callback("cb3")]
    data = sample_event("EmailBounced", mid="100", subscriber_key="s1", message_key="m1")
    data["definitionKey"] = definition_key
    data["info"]["status"] = status
    decoded = decode_event(orjson.dumps(data), REF, 100_000)
    routed = index(subs, callbacks).route(decoded, "acct_a")
    assert {r.callback.id: (r.ordering_key, r.held_by) for r in routed} == naive_route(subs, callbacks, decoded)


async def test_a_burst_of_refreshes_shares_reloads_and_each_sees_its_write() -> None:
    """Router.refresh is single-flight: callers during a reload wait for one that starts after them."""
    import asyncio

    from relay.routing import Router

    class Registry:
        def __init__(self) -> None:
            self.version = 0
            self.loads = 0

        async def registry_version(self) -> int:
            await asyncio.sleep(0.01)
            return self.version

        async def list_accounts(self) -> list:
            self.loads += 1
            await asyncio.sleep(0.01)
            return []

        async def list_callbacks(self) -> list:
            return []

        async def list_subscriptions(self) -> list:
            return []

    store = Registry()
    router = Router(store, supervisor=None)  # type: ignore[arg-type]

    async def write_then_refresh(delay: float) -> tuple[int, int]:
        await asyncio.sleep(delay)  # writes land before, during and after reloads
        store.version += 1
        written = store.version
        await router.refresh()
        return written, router.version

    seen = await asyncio.gather(*(write_then_refresh(n * 0.002) for n in range(50)))
    assert all(live >= written for written, live in seen), "every caller's write is live when it returns"
    assert store.loads <= 15, f"50 refreshes took {store.loads} reloads"
