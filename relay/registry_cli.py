"""``relay accounts|callbacks|subs …``: the registry API from the command line.

Readable tables by default, ``--json`` for scripts. The API address comes from ``--api`` or
``RELAY_API_URL``; the key from ``--key`` or ``RELAY_API_KEY`` (``RELAY_ADMIN_KEY`` for accounts).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click


@dataclass
class Api:
    url: str
    key: str
    as_json: bool

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url.rstrip("/") + path, data=data, method=method,
            headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            try:
                error = json.loads(detail)["error"]
                field = f" (field: {error['field']})" if error.get("field") else ""
                message = f"{exc.code} {error['code']}: {error['message']}{field}"
            except (ValueError, KeyError, TypeError):
                message = f"{exc.code}: {detail[:200]}"
            raise click.ClickException(message) from None
        except urllib.error.URLError as exc:
            raise click.ClickException(f"cannot reach the API at {self.url}: {exc.reason}") from None
        return json.loads(raw) if raw else None

    def show(self, data: Any, columns: Sequence[str]) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2))
            return
        rows = data["data"] if isinstance(data, dict) and "data" in data else [data]
        click.echo(table(rows, columns))


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value)) or "-"
    return str(value)


def _api_options(admin: bool = False) -> Any:
    def decorate(fn: Any) -> Any:
        fn = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(fn)
        fn = click.option("--key", envvar="RELAY_ADMIN_KEY" if admin else "RELAY_API_KEY", show_envvar=True,
                          required=True, help="Admin key." if admin else "Account API key.")(fn)
        fn = click.option("--api", envvar="RELAY_API_URL", default="http://127.0.0.1:8080", show_envvar=True,
                          show_default=True, help="Relay API address.")(fn)
        return fn

    return decorate


CALLBACK_COLUMNS = ("id", "name", "url", "verified", "enabled", "maxBatchSize", "disabledReason")
SUB_COLUMNS = ("id", "name", "callbackId", "eventCategoryTypes", "filters", "status", "ordering")


# -- accounts ----------------------------------------------------------------------------
@click.group()
def accounts() -> None:
    """Accounts and their API keys (admin key)."""


@accounts.command("create")
@click.argument("name")
@click.option("--mid", required=True, help="The account's MID; events route by it.")
@_api_options(admin=True)
def accounts_create(name: str, mid: str, api: str, key: str, as_json: bool) -> None:
    """Create an account for a MID; prints its first API key (shown once)."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", "/v1/accounts", {"name": name, "mid": mid}),
                ("id", "name", "mid", "apiKey", "keyId"))


@accounts.command("list")
@_api_options(admin=True)
def accounts_list(api: str, key: str, as_json: bool) -> None:
    """Every account (admin key)."""
    client = Api(api, key, as_json)
    client.show(client.call("GET", "/v1/accounts"), ("id", "name", "mid"))


@accounts.command("add-key")
@click.argument("account_id")
@click.option("--name", default="unnamed")
@_api_options(admin=True)
def accounts_add_key(account_id: str, name: str, api: str, key: str, as_json: bool) -> None:
    """Another API key for an account (shown once)."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", f"/v1/accounts/{account_id}/keys", {"name": name}),
                ("keyId", "name", "apiKey"))


@accounts.command("revoke-key")
@click.argument("account_id")
@click.argument("key_id")
@_api_options(admin=True)
def accounts_revoke_key(account_id: str, key_id: str, api: str, key: str, as_json: bool) -> None:
    """Revoke an API key by its keyId; it stops working at once."""
    Api(api, key, as_json).call("DELETE", f"/v1/accounts/{account_id}/keys/{key_id}")
    click.echo(f"revoked {key_id}")


# -- callbacks ---------------------------------------------------------------------------
@click.group()
def callbacks() -> None:
    """Receiving endpoints. The account key comes from --key or RELAY_API_KEY, the API from --api or
    RELAY_API_URL (default http://127.0.0.1:8080)."""


def _callback_options(creating: bool) -> Any:
    """The API's callback fields as options, shared by create and update (update sends only those given)."""
    def decorate(fn: Any) -> Any:
        options = [
            click.option("--max-batch-size", type=click.IntRange(1, 1000), default=1000 if creating else None,
                         show_default=creating, help="Events per POST at most."),
            click.option("--ens-signature/--no-ens-signature", default=None, help="Also send x-sfmc-ens-signature."),
            click.option("--ed25519/--no-ed25519", default=None, help="Also sign with Ed25519 (v1a)."),
            click.option("--timeout", type=click.FloatRange(0.1, 60), default=None, help="Seconds per POST."),
            click.option("--retry-schedule", default=None, help="Waits in seconds, comma-separated (e.g. 0,5,30,300)."),
            click.option("--retry-max-age", type=click.FloatRange(1, 30 * 86400), default=None,
                         help="Seconds after which a job becomes a dead letter."),
            click.option("--max-in-flight", type=click.IntRange(1, 256), default=None, help="Concurrent POSTs."),
            click.option("--events-per-second", type=click.FloatRange(min=0, min_open=True), default=None,
                         help="Rate limit across all instances."),
            click.option("--requests-per-second", type=click.FloatRange(min=0, min_open=True), default=None,
                         help="Rate limit on POSTs across all instances."),
            click.option("--header", "headers", multiple=True, metavar="NAME=VALUE",
                         help="A static header (repeatable; replaces all of them)."),
            click.option("--transformation", default=None, help="A JMESPath expression applied to each event."),
            click.option("--format", "shape", type=click.Choice(["ens", "cloudevents"]), default=None,
                         help="ENS JSON array (default) or CloudEvents 1.0."),
            click.option("--oauth2-token-url", default=None, help="OAuth2 client credentials: the token endpoint."),
            click.option("--oauth2-client-id", default=None),
            click.option("--oauth2-client-secret", envvar="RELAY_OAUTH2_CLIENT_SECRET", show_envvar=True,
                         default=None),
            click.option("--oauth2-scope", default=None),
            click.option("--oauth2-audience", default=None),
            click.option("--mtls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                         help="Client certificate (PEM file) for mTLS."),
            click.option("--mtls-key", type=click.Path(exists=True, dir_okay=False), default=None,
                         help="Its key (PEM file)."),
            click.option("--mtls-ca", type=click.Path(exists=True, dir_okay=False), default=None,
                         help="CA bundle (PEM file) the endpoint's certificate is checked against."),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _callback_body(o: dict[str, Any]) -> dict[str, Any]:
    """The API fields for the options that were given."""
    body: dict[str, Any] = {}
    for option, field in (("max_batch_size", "maxBatchSize"), ("ens_signature", "ensSignature"),
                          ("ed25519", "ed25519"), ("timeout", "timeout"), ("retry_max_age", "retryMaxAge"),
                          ("max_in_flight", "maxInFlight"), ("transformation", "transformation"),
                          ("shape", "format")):
        if o.get(option) is not None:
            body[field] = o[option]
    if o.get("retry_schedule"):
        try:
            body["retrySchedule"] = [float(v) for v in o["retry_schedule"].split(",")]
        except ValueError:
            raise click.BadParameter("comma-separated seconds", param_hint="--retry-schedule") from None
    if o.get("events_per_second") is not None or o.get("requests_per_second") is not None:
        body["rateLimit"] = {"eventsPerSecond": o.get("events_per_second"),
                             "requestsPerSecond": o.get("requests_per_second")}
    if o.get("headers"):
        pairs = [h.partition("=") for h in o["headers"]]
        if any(not sep for _, sep, _ in pairs):
            raise click.BadParameter("NAME=VALUE", param_hint="--header")
        body["headers"] = {n: v for n, _, v in pairs}
    if o.get("oauth2_token_url"):
        body["oauth2"] = {"tokenUrl": o["oauth2_token_url"], "clientId": o.get("oauth2_client_id"),
                          "clientSecret": o.get("oauth2_client_secret"), "scope": o.get("oauth2_scope"),
                          "audience": o.get("oauth2_audience")}
    if o.get("mtls_cert") or o.get("mtls_key"):
        if not (o.get("mtls_cert") and o.get("mtls_key")):
            raise click.UsageError("--mtls-cert and --mtls-key go together")
        body["mtls"] = {"certificate": _read(o["mtls_cert"]), "key": _read(o["mtls_key"]),
                        "ca": _read(o["mtls_ca"]) if o.get("mtls_ca") else None}
    return body


@callbacks.command("create")
@click.argument("name")
@click.argument("url")
@_callback_options(creating=True)
@_api_options()
def callbacks_create(name: str, url: str, api: str, key: str, as_json: bool, **options: Any) -> None:
    """Register URL; Relay sends it a verification key (see `relay callbacks verify`)."""
    client = Api(api, key, as_json)
    body = {"name": name, "url": url, **_callback_body(options)}
    client.show(client.call("POST", "/v1/callbacks", body), ("id", "name", "url", "verified", "secret"))
    if not as_json:
        click.echo("The secret is shown once: store it now.", err=True)


@callbacks.command("update")
@click.argument("callback_id")
@click.option("--name", default=None)
@click.option("--url", default=None, help="A new URL is verified again.")
@click.option("--enable/--disable", "enabled", default=None, help="Enable again (e.g. after a 410), or disable.")
@_callback_options(creating=False)
@_api_options()
def callbacks_update(callback_id: str, name: str | None, url: str | None, enabled: bool | None, api: str, key: str,
                     as_json: bool, **options: Any) -> None:
    """Change only the given fields of a callback."""
    client = Api(api, key, as_json)
    body = _callback_body(options)
    for field, value in (("name", name), ("url", url), ("enabled", enabled)):
        if value is not None:
            body[field] = value
    if not body:
        raise click.UsageError("give at least one field to change")
    client.show(client.call("PATCH", f"/v1/callbacks/{callback_id}", body), CALLBACK_COLUMNS)


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@callbacks.command("list")
@_api_options()
def callbacks_list(api: str, key: str, as_json: bool) -> None:
    """Your callbacks (RELAY_API_KEY, RELAY_API_URL)."""
    client = Api(api, key, as_json)
    client.show(client.call("GET", "/v1/callbacks"), CALLBACK_COLUMNS)


@callbacks.command("show")
@click.argument("callback_id")
@_api_options()
def callbacks_show(callback_id: str, api: str, key: str, as_json: bool) -> None:
    """One callback: URL, state, delivery options."""
    client = Api(api, key, as_json)
    client.show(client.call("GET", f"/v1/callbacks/{callback_id}"), CALLBACK_COLUMNS)


@callbacks.command("verify")
@click.argument("callback_id")
@click.argument("verification_key")
@_api_options()
def callbacks_verify(callback_id: str, verification_key: str, api: str, key: str, as_json: bool) -> None:
    """Prove you own the URL with the key Relay POSTed to it."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", f"/v1/callbacks/{callback_id}/verify",
                            {"verificationKey": verification_key}), CALLBACK_COLUMNS)


@callbacks.command("rotate")
@click.argument("callback_id")
@click.option("--overlap", type=click.IntRange(0), default=None,
              help="Seconds the old secret keeps signing (default: the relay's setting).")
@_api_options()
def callbacks_rotate(callback_id: str, overlap: int | None, api: str, key: str, as_json: bool) -> None:
    """A new signing secret; the old ones keep signing for the overlap."""
    client = Api(api, key, as_json)
    body = {} if overlap is None else {"overlapSeconds": overlap}
    client.show(client.call("POST", f"/v1/callbacks/{callback_id}/rotate-secret", body),
                ("id", "secret", "previousSecretsExpireAt"))


@callbacks.command("delete")
@click.argument("callback_id")
@_api_options()
def callbacks_delete(callback_id: str, api: str, key: str, as_json: bool) -> None:
    """Delete a callback no subscription uses."""
    Api(api, key, as_json).call("DELETE", f"/v1/callbacks/{callback_id}")
    click.echo(f"deleted {callback_id}")


@callbacks.command("test")
@click.argument("callback_id")
@click.option("--type", "event_type", default="TransactionalSendEvents.EmailSent", show_default=True,
              help="The sample event's type.")
@_api_options()
def callbacks_test(callback_id: str, event_type: str, api: str, key: str, as_json: bool) -> None:
    """Send one signed sample event now (marked webhook-test) and show what the endpoint answered."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", f"/v1/callbacks/{callback_id}/test", {"eventType": event_type}),
                ("ok", "status", "latencyMs", "error", "responseExcerpt", "webhookId"))


@callbacks.command("limit")
@click.argument("callback_id")
@click.option("--events-per-second", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--requests-per-second", type=click.FloatRange(min=0, min_open=True), default=None)
@_api_options()
def callbacks_limit(callback_id: str, events_per_second: float | None, requests_per_second: float | None,
                    api: str, key: str, as_json: bool) -> None:
    """Set the callback's rate limit across all instances; with neither option, remove it."""
    client = Api(api, key, as_json)
    limit = None
    if events_per_second is not None or requests_per_second is not None:
        limit = {"eventsPerSecond": events_per_second, "requestsPerSecond": requests_per_second}
    client.show(client.call("PATCH", f"/v1/callbacks/{callback_id}", {"rateLimit": limit}),
                ("id", "name", "rateLimit"))


@callbacks.command("recover")
@click.argument("callback_id")
@click.option("--since", required=True, type=float, help="Unix seconds (event time), inclusive.")
@click.option("--until", default=None, type=float, help="Unix seconds, exclusive (default: now).")
@click.option("--type", "event_types", multiple=True, help="Only these event types (repeatable).")
@click.option("--rate", type=click.IntRange(1, 10000), default=50, show_default=True, help="Events per second.")
@click.option("--detach", is_flag=True, help="Start it and return; follow with `relay operations show`.")
@_api_options()
def callbacks_recover(callback_id: str, since: float, until: float | None, event_types: tuple[str, ...], rate: int,
                      detach: bool, api: str, key: str, as_json: bool) -> None:
    """Send every stored event of a time window again (delivered or not), in order, at a rate."""
    client = Api(api, key, as_json)
    body: dict[str, Any] = {"since": since, "until": until if until is not None else time.time(),
                            "ratePerSecond": rate}
    if event_types:
        body["eventTypes"] = list(event_types)
    op = client.call("POST", f"/v1/callbacks/{callback_id}/recover", body)
    if not detach:
        op = _follow(client, op)
    client.show(op, OPERATION_COLUMNS)


def _follow(client: Api, op: dict[str, Any]) -> dict[str, Any]:
    """Poll the operation until it finishes, with a progress bar on the terminal."""
    shown = 0
    with click.progressbar(length=op["progress"]["total"] or 1, label=op["id"], show_eta=True,
                           file=sys.stderr) as bar:
        while op["state"] in ("queued", "running"):
            time.sleep(0.5)
            op = client.call("GET", f"/v1/operations/{op['id']}")
            bar.length = max(op["progress"]["total"] or 1, op["progress"]["done"])
            bar.update(op["progress"]["done"] - shown)
            shown = op["progress"]["done"]
    return op


# -- operations ----------------------------------------------------------------------------
OPERATION_COLUMNS = ("id", "kind", "state", "progress", "ratePerSecond", "etaSeconds", "error")


@click.group()
def operations() -> None:
    """Durable background work: bulk replays, recoveries, handshakes (account key)."""


@operations.command("list")
@click.option("--kind", type=click.Choice(["redrive", "recover", "handshake", "release-held"]), default=None)
@_api_options()
def operations_list(kind: str | None, api: str, key: str, as_json: bool) -> None:
    """Recent background operations of your account."""
    client = Api(api, key, as_json)
    query = f"?kind={kind}" if kind else ""
    client.show(client.call("GET", f"/v1/operations{query}"), OPERATION_COLUMNS)


@operations.command("show")
@click.argument("operation_id")
@click.option("--follow", is_flag=True, help="Follow it with a progress bar until it finishes.")
@_api_options()
def operations_show(operation_id: str, follow: bool, api: str, key: str, as_json: bool) -> None:
    """One operation's state and progress (--follow for a progress bar)."""
    client = Api(api, key, as_json)
    op = client.call("GET", f"/v1/operations/{operation_id}")
    client.show(_follow(client, op) if follow else op, OPERATION_COLUMNS)


def _operation_action(action: str, help_text: str) -> None:
    @operations.command(action, help=help_text)
    @click.argument("operation_id")
    @_api_options()
    def command(operation_id: str, api: str, key: str, as_json: bool) -> None:
        client = Api(api, key, as_json)
        client.show(client.call("POST", f"/v1/operations/{operation_id}/{action}", {}), OPERATION_COLUMNS)


_operation_action("cancel", "Stop it at its next step; what was done stays done.")
_operation_action("pause", "Stop it at its next step until resumed.")
_operation_action("resume", "Continue a paused operation where it stopped, on any instance.")


# -- subscriptions -----------------------------------------------------------------------
@click.group()
def subs() -> None:
    """Subscriptions of callbacks to event types (account key)."""


@subs.command("create")
@click.argument("name")
@click.option("--callback", "callback_id", required=True)
@click.option("--type", "types", multiple=True, required=True,
              help="Event type or Category.*; repeat for several.")
@click.option("--filter", "filters", multiple=True, help="field=value, field!=value, field=a|b.")
@click.option("--ordering", type=click.Choice(["subscriberKey", "messageKey", "none"]),
              default="subscriberKey", show_default=True)
@click.option("--hold-when-paused", is_flag=True, help="Keep events while paused instead of dropping.")
@click.option("--paused", is_flag=True, help="Create it paused.")
@_api_options()
def subs_create(name: str, callback_id: str, types: tuple[str, ...], filters: tuple[str, ...],
                ordering: str, hold_when_paused: bool, paused: bool, api: str, key: str, as_json: bool) -> None:
    """Subscribe a callback to event types, with optional filters."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", "/v1/subscriptions", {
        "name": name, "callbackId": callback_id, "eventCategoryTypes": list(types),
        "filters": list(filters), "ordering": ordering,
        "onPause": "hold" if hold_when_paused else "drop", "status": "paused" if paused else "active",
    }), SUB_COLUMNS)


@subs.command("update")
@click.argument("subscription_id")
@click.option("--name", default=None)
@click.option("--callback", "callback_id", default=None)
@click.option("--type", "types", multiple=True, help="Event type or Category.*; replaces the list.")
@click.option("--filter", "filters", multiple=True, help="field=value …; replaces the list.")
@click.option("--no-filters", is_flag=True, help="Remove every filter.")
@click.option("--ordering", type=click.Choice(["subscriberKey", "messageKey", "none"]), default=None)
@click.option("--on-pause", type=click.Choice(["drop", "hold"]), default=None)
@_api_options()
def subs_update(subscription_id: str, name: str | None, callback_id: str | None, types: tuple[str, ...],
                filters: tuple[str, ...], no_filters: bool, ordering: str | None, on_pause: str | None, api: str,
                key: str, as_json: bool) -> None:
    """Change only the given fields of a subscription."""
    client = Api(api, key, as_json)
    body: dict[str, Any] = {field: value for field, value in (
        ("name", name), ("callbackId", callback_id), ("ordering", ordering), ("onPause", on_pause))
        if value is not None}
    if types:
        body["eventCategoryTypes"] = list(types)
    if filters or no_filters:
        body["filters"] = list(filters)
    if not body:
        raise click.UsageError("give at least one field to change")
    client.show(client.call("PATCH", f"/v1/subscriptions/{subscription_id}", body), SUB_COLUMNS)


@subs.command("list")
@_api_options()
def subs_list(api: str, key: str, as_json: bool) -> None:
    """Your subscriptions."""
    client = Api(api, key, as_json)
    client.show(client.call("GET", "/v1/subscriptions"), SUB_COLUMNS)


@subs.command("show")
@click.argument("subscription_id")
@_api_options()
def subs_show(subscription_id: str, api: str, key: str, as_json: bool) -> None:
    """One subscription."""
    client = Api(api, key, as_json)
    client.show(client.call("GET", f"/v1/subscriptions/{subscription_id}"), (*SUB_COLUMNS, "statusReason"))


@subs.command("pause")
@click.argument("subscription_id")
@click.option("--reason", default=None)
@_api_options()
def subs_pause(subscription_id: str, reason: str | None, api: str, key: str, as_json: bool) -> None:
    """Pause a subscription: its events are dropped, or held if it was created with onPause hold."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", f"/v1/subscriptions/{subscription_id}/pause",
                            {"statusReason": reason}), (*SUB_COLUMNS, "statusReason"))


@subs.command("resume")
@click.argument("subscription_id")
@_api_options()
def subs_resume(subscription_id: str, api: str, key: str, as_json: bool) -> None:
    """Resume a subscription; held events are delivered in order."""
    client = Api(api, key, as_json)
    client.show(client.call("POST", f"/v1/subscriptions/{subscription_id}/resume", {}), SUB_COLUMNS)


@subs.command("delete")
@click.argument("subscription_id")
@_api_options()
def subs_delete(subscription_id: str, api: str, key: str, as_json: bool) -> None:
    """Delete a subscription."""
    Api(api, key, as_json).call("DELETE", f"/v1/subscriptions/{subscription_id}")
    click.echo(f"deleted {subscription_id}")


# -- dead letters and message status -----------------------------------------------------
DLQ_COLUMNS = ("id", "eventType", "subscriberKey", "callbackId", "reason", "attemptCount", "webhookId")


@click.group()
def dlq() -> None:
    """Dead letters: list, inspect, replay, purge (account key)."""


def _dlq_query(callback_id: str | None, event_type: str | None, reason: str | None) -> dict[str, str]:
    return {k: v for k, v in (("callbackId", callback_id), ("eventType", event_type), ("reason", reason)) if v}


@dlq.command("list")
@click.option("--callback", "callback_id", default=None)
@click.option("--type", "event_type", default=None)
@click.option("--reason", default=None, help="Substring of the reason.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@_api_options()
def dlq_list(callback_id: str | None, event_type: str | None, reason: str | None, limit: int, api: str,
             key: str, as_json: bool) -> None:
    """Dead letters, oldest first, filtered by callback, type or reason."""
    client = Api(api, key, as_json)
    query = urllib.parse.urlencode({**_dlq_query(callback_id, event_type, reason), "limit": limit})
    client.show(client.call("GET", f"/v1/deadletters?{query}"), DLQ_COLUMNS)


@dlq.command("show")
@click.argument("deadletter_id", type=int)
@_api_options()
def dlq_show(deadletter_id: int, api: str, key: str, as_json: bool) -> None:
    """One dead letter with its event and every attempt."""
    client = Api(api, key, as_json)
    letter = client.call("GET", f"/v1/deadletters/{deadletter_id}")
    if as_json:
        client.show(letter, ())
        return
    click.echo(table([letter], DLQ_COLUMNS[:-2]))
    click.echo("\nattempts:")
    click.echo(table(letter["attempts"], ("at", "status", "latencyMs", "error", "responseExcerpt")))
    click.echo("\nevent:\n" + json.dumps(letter["event"], indent=2))


@dlq.command("replay")
@click.argument("deadletter_ids", type=int, nargs=-1)
@click.option("--all-matching", is_flag=True, help="Replay everything matching the filters instead.")
@click.option("--callback", "callback_id", default=None)
@click.option("--type", "event_type", default=None)
@click.option("--reason", default=None)
@click.option("--rate", type=click.IntRange(1, 10000), default=100, show_default=True, help="Per second.")
@click.option("--enable-callback", is_flag=True, help="Enable the callback again if the relay disabled it.")
@_api_options()
def dlq_replay(deadletter_ids: tuple[int, ...], all_matching: bool, callback_id: str | None,
               event_type: str | None, reason: str | None, rate: int, enable_callback: bool, api: str, key: str,
               as_json: bool) -> None:
    """Replay the given ids, or --all-matching a filter, and follow the progress."""
    client = Api(api, key, as_json)
    if not deadletter_ids and not all_matching:
        raise click.UsageError("give dead-letter ids, or --all-matching with filters")
    body: dict[str, Any] = {"ratePerSecond": rate, **_dlq_query(callback_id, event_type, reason)}
    if deadletter_ids:
        body["ids"] = list(deadletter_ids)
    elif len(body) == 1:
        body["all"] = True  # --all-matching with no filter: every dead letter, as asked
    if enable_callback:
        body["enableCallback"] = True
    progress = client.call("POST", "/v1/deadletters/replay", body)
    while not progress["done"]:
        time.sleep(0.5)
        progress = client.call("GET", f"/v1/deadletters/replay/{progress['id']}")
    client.show(progress, ("id", "replayed", "done", "error"))


@dlq.command("purge")
@click.argument("deadletter_ids", type=int, nargs=-1)
@click.option("--all-matching", is_flag=True)
@click.option("--callback", "callback_id", default=None)
@click.option("--type", "event_type", default=None)
@click.option("--reason", default=None)
@_api_options()
def dlq_purge(deadletter_ids: tuple[int, ...], all_matching: bool, callback_id: str | None,
              event_type: str | None, reason: str | None, api: str, key: str, as_json: bool) -> None:
    """Delete dead letters by id, or --all-matching a filter."""
    client = Api(api, key, as_json)
    if deadletter_ids:
        for letter_id in deadletter_ids:
            client.call("DELETE", f"/v1/deadletters/{letter_id}")
        click.echo(f"purged {len(deadletter_ids)}")
    elif all_matching:
        selection: dict[str, Any] = {**_dlq_query(callback_id, event_type, reason)} or {"all": True}
        result = client.call("POST", "/v1/deadletters/purge", selection)
        click.echo(f"purged {result['purged']}")
    else:
        raise click.UsageError("give dead-letter ids, or --all-matching with filters")


@click.command()
@click.option("--message-key", default=None)
@click.option("--subscriber-key", default=None)
@_api_options()
def messages(message_key: str | None, subscriber_key: str | None, api: str, key: str, as_json: bool) -> None:
    """Did this message arrive or bounce? Its events and where each was delivered."""
    if (message_key is None) == (subscriber_key is None):
        raise click.UsageError("give exactly one of --message-key or --subscriber-key")
    client = Api(api, key, as_json)
    field, value = ("messageKey", message_key) if message_key else ("subscriberKey", subscriber_key)
    result = client.call("GET", f"/v1/messages?{urllib.parse.urlencode({field: value})}")
    if as_json:
        client.show(result, ())
        return
    rows = [{**e, "delivered": "; ".join(f"{d['callbackId']}: {d['state']}" for d in e["deliveries"]) or "-"}
            for e in result["events"]]
    click.echo(table(rows, ("timestampUTC", "eventCategoryType", "status", "bounceCode", "reason", "delivered")))


def register(group: click.Group) -> None:
    for command in (accounts, callbacks, subs, dlq, operations, messages):
        group.add_command(command)

