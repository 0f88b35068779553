"""The ``relay`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from relay import registry_cli
from relay.api.server import ListenError, check_free
from relay.config import ConfigError, Settings, load_settings, settings_table_markdown
from relay.logs import configure_logging


def _settings(config: str | None) -> Settings:
    try:
        return load_settings(config_file=config)
    except ConfigError as exc:
        click.echo(f"relay: configuration error: {exc}", err=True)
        sys.exit(2)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a declared dependency on Linux
        asyncio.run(coro)


@click.group()
def main() -> None:
    """Relay: Kafka messaging events in, signed webhooks out."""


@main.command()
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Relay processes sharing the work (default: the workers setting, 1).")
@click.option("--worker-index", type=click.IntRange(min=0), default=None, hidden=True)
def serve(config: str | None, workers: int | None, worker_index: int | None) -> None:
    """Run the relay: consume, route, deliver, and serve the API."""
    from relay.app import Relay

    settings = _settings(config)
    configure_logging(settings.log_level, settings.log_format)
    count = workers or settings.workers
    try:
        if count > 1:
            from relay.workers import Workers

            sys.exit(Workers(settings, count, config).run())
        _run(Relay(settings, serve_api=not worker_index).run_until_signalled())
    except ConfigError as exc:
        click.echo(f"relay: configuration error: {exc}", err=True)
        sys.exit(2)
    except ListenError as exc:
        click.echo(f"relay: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--type", "types", multiple=True, default=["EmailSent", "EmailBounced"],
              show_default=True, help="Event type (short or full); repeat for a mix; 'all' for every type.")
@click.option("--count", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Events per second; 0 sends as fast as possible.")
@click.option("--mid", default="514009876", show_default=True, help="Account MID of the events.")
@click.option("--topic", default=None, help="Topic (default: the first of RELAY_TOPICS).")
@click.option("--subscribers", default=1000, show_default=True, type=click.IntRange(min=1),
              help="How many distinct subscriber keys to draw from.")
@click.option("--seed", default=None, type=int, help="Random seed, for repeatable samples.")
def produce(types: tuple[str, ...], count: int, rate: float, mid: str, topic: str | None,
            subscribers: int, seed: int | None) -> None:
    """Send realistic sample events to Kafka."""
    from relay.events import KNOWN_EVENT_TYPES
    from relay.produce import produce_samples
    from relay.samples import full_type

    settings = _settings(None)
    chosen = list(KNOWN_EVENT_TYPES) if "all" in types else list(types)
    try:
        for t in chosen:
            full_type(t)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--type") from None
    sent = asyncio.run(produce_samples(
        settings.kafka_bootstrap, topic or settings.topics[0], chosen, count, rate, mid,
        subscribers, seed,
    ))
    click.echo(f"produced {sent} events to {topic or settings.topics[0]}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
@click.option("--secret", envvar="RELAY_RECEIVER_SECRET", default=None,
              help="The callback's whsec_ secret.")
@click.option("--secret-file", default=None, type=click.Path(dir_okay=False),
              help="Read the secret from this file (re-read until it exists).")
@click.option("--api", "api_url", default=None, help="Relay API URL, to answer the handshake.")
@click.option("--api-key", default=None, help="Account API key, to answer the handshake.")
def receiver(host: str, port: int, secret: str | None, secret_file: str | None,
             api_url: str | None, api_key: str | None) -> None:
    """Run an endpoint that verifies signatures and prints what arrives."""
    from aiohttp import web

    from relay.receiver import Receiver, secret_from

    if not secret and not secret_file:
        raise click.UsageError("give --secret or --secret-file")
    app = Receiver(secret_from(secret, secret_file), api_url=api_url, api_key=api_key).app()
    click.echo(f"receiver listening on http://{host}:{port}/", err=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


@main.command()
@click.option("--secret", "keys", multiple=True, required=True,
              help="whsec_ secret or whpk_ public key (whsk_ signing key with --sign); repeat for rotation.")
@click.option("--headers", "headers_file", type=click.File("r"), default=None,
              help="File of 'Name: value' lines, as captured (- for stdin).")
@click.option("--body", "body_file", type=click.File("rb"), required=True, help="Raw body file.")
@click.option("--tolerance", default=300, show_default=True, type=int, help="Allowed clock skew, seconds.")
@click.option("--sign", is_flag=True, help="Print signed headers for the body instead of verifying.")
@click.option("--id", "msg_id", default=None, help="webhook-id for --sign (default: random).")
@click.option("--timestamp", default=None, type=int, help="webhook-timestamp for --sign (default: now).")
def verify(keys: tuple[str, ...], headers_file: TextIO | None, body_file: BinaryIO, tolerance: int,
           sign: bool, msg_id: str | None, timestamp: int | None) -> None:
    """Verify a captured delivery and say exactly why it fails (or --sign a test body)."""
    import secrets as random
    import time

    from relay.signing import SigningKeys, delivery_headers
    from relay.verify import VerificationError, verify_ens
    from relay.verify import verify as check

    body = body_file.read()
    if sign:
        headers = delivery_headers(SigningKeys.from_secrets(keys), msg_id or "msg_" + random.token_hex(12),
                                   timestamp if timestamp is not None else int(time.time()), body, ens=True)
        for name, value in headers.items():
            click.echo(f"{name}: {value}")
        return
    if headers_file is None:
        raise click.UsageError("give --headers (or --sign)")
    headers = {}
    for line in headers_file.read().splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        msg_id = check(list(keys), headers, body, tolerance=tolerance)
        if "x-sfmc-ens-signature" in headers:
            secret = next((k for k in keys if k.startswith("whsec_")), None)
            if secret is not None:
                verify_ens(secret, headers["x-sfmc-ens-signature"], body)
    except (VerificationError, ValueError) as exc:
        click.echo(f"INVALID: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    click.echo(f"valid: webhook-id {msg_id}")


@main.command()
@click.option("--markdown", is_flag=True, help="Print the settings table as Markdown.")
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file.")
def config(markdown: bool, config: str | None) -> None:
    """Show every setting: its value and where the value came from."""
    if markdown:
        click.echo(settings_table_markdown())
        return
    settings = _settings(config)
    for name, source in settings.sources.items():
        value = getattr(settings, name)
        if name in ("admin_key", "master_key") and value:
            value = "********"
        click.echo(f"{name:22} {value!s:40} ({source})")


@main.command()
@click.option("--rate", default=2.0, show_default=True, type=float, help="Sample events per second.")
@click.option("--receiver-port", default=9000, show_default=True, type=int)
def demo(rate: float, receiver_port: int) -> None:
    """Relay + a verifying receiver + a stream of sample events, all on 127.0.0.1."""
    from relay.demo import run_demo

    settings = _settings(None)
    demo_dir = Path(settings.data_dir) / "demo"
    level = settings.log_level if settings.sources["log_level"] != "default" else "warning"
    configure_logging(level, "console")
    try:
        check_free(settings.api_host_port, "RELAY_API_LISTEN")
        check_free(("127.0.0.1", receiver_port), "RECEIVER_PORT (make run RECEIVER_PORT=9100) or --receiver-port")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_demo(settings, demo_dir, rate, receiver_port))
    except ListenError as exc:
        click.echo(f"relay demo: {exc}", err=True)
        sys.exit(2)


registry_cli.register(main)

if __name__ == "__main__":
    main()
