"""Realistic sample events of every type, valid against ``schemas/event.schema.json``.

Used by ``relay produce``, the demo, the tests and the benchmarks.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from relay.events import KNOWN_EVENT_TYPES

SHORT_TYPES = {t.split(".")[1]: t for t in KNOWN_EVENT_TYPES}
_DEFINITIONS = ("password-reset", "mfa-code", "order-confirmation", "shipping-notice",
                "appointment-reminder", "flight-change-alert")
_FIRST = ("ada", "grace", "alan", "edsger", "barbara", "ken", "linus", "margaret", "dennis")
_DOMAINS = ("example.com", "example.org", "mail.example.net")


def full_type(name: str) -> str:
    """``EmailBounced`` or ``TransactionalSendEvents.EmailBounced`` → the full type."""
    if name in KNOWN_EVENT_TYPES:
        return name
    if name in SHORT_TYPES:
        return SHORT_TYPES[name]
    raise ValueError(f"unknown event type {name!r}; known: {', '.join(SHORT_TYPES)}")


def sample_event(
    event_type: str,
    mid: int | str = 514009876,
    rng: random.Random | None = None,
    subscriber_key: str | None = None,
    message_key: str | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    rng = rng or random.Random()
    event_type = full_type(event_type)
    sms = ".Sms" in event_type
    who = rng.choice(_FIRST)
    to = f"+1555{rng.randrange(10**7):07d}" if sms else f"{who}{rng.randrange(1000)}@{rng.choice(_DOMAINS)}"
    definition = rng.choice(_DEFINITIONS)
    info: dict[str, Any] = {
        "to": to,
        "subscriberKey": subscriber_key or f"sub-{rng.randrange(100000):05d}",
        "messageKey": message_key or uuid.UUID(int=rng.getrandbits(128)).hex[:16],
    }
    kind = event_type.split(".")[1]
    if kind.endswith("Bounced"):
        hard = rng.random() < 0.6
        info.update(
            status="Bounced",
            bounceCode="HARD" if hard else "SOFT",
            statusCode="5.1.1" if hard else "4.2.2",
            reason="Mailbox does not exist" if hard else "Mailbox full",
            bounceMessage="550 5.1.1 user unknown" if hard else "452 4.2.2 mailbox full",
            smtpReason="550 5.1.1 user unknown" if hard else "452 4.2.2 over quota",
        )
    elif kind.endswith("NotSent"):
        info.update(status="NotSent", reason="Subscriber is unsubscribed", statusCode="UNSUB")
    elif kind == "SmsTransient":
        info.update(status="Transient", reason="Carrier temporarily unavailable", statusCode=4001)
    elif kind.endswith("Delivered"):
        info.update(status="Delivered", statusCode=0)
    elif kind.endswith("Sent"):
        info.update(status="Sent")
    return {
        "eventCategoryType": event_type,
        "timestampUTC": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
        "compositeId": f"{uuid.UUID(int=rng.getrandbits(128))}.0.1",
        "composite": {"jobId": rng.randrange(10**6), "batchId": 1},
        "definitionKey": definition,
        "definitionId": str(uuid.UUID(int=rng.getrandbits(128))),
        "mid": int(mid) if str(mid).isdigit() else mid,
        "eid": 514000001,
        "info": info,
    }
