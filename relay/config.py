"""Every setting of the relay, in one place: defaults < TOML file < ``RELAY_*`` environment.

Each setting is declared once in ``SETTINGS`` with its parser, default and help text; the
configuration table (docs/configuration.md) and ``relay config`` are generated from that list, so the
docs cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting has a value the relay cannot use; the message names it and the expected form."""


def _str(value: Any) -> str:
    if not isinstance(value, str | int | float):
        raise ValueError("a string")
    return str(value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("an integer") from None


def _positive_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("an integer >= 1")
    return number


def _seconds(value: Any) -> float:
    """Durations: a number of seconds, or with a unit suffix (ms, s, m, h, d)."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 10, 2.5, 500ms, 30s, 5m, 4h or 3d")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        factor = 1.0
        for suffix in ("ms", "s", "m", "h", "d"):
            if text.endswith(suffix):
                factor, text = units[suffix], text[: -len(suffix)]
                break
        try:
            seconds = float(text) * factor
        except ValueError:
            raise ValueError("a duration such as 10, 2.5, 500ms, 30s, 5m, 4h or 3d") from None
    if seconds < 0:
        raise ValueError("a duration >= 0")
    return seconds


def _duration_list(value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
    if not items:
        raise ValueError("a non-empty comma-separated list of durations, e.g. 0,5s,30s,2m")
    try:
        return tuple(_seconds(item) for item in items)
    except ValueError:
        raise ValueError("a comma-separated list of durations, e.g. 0,5s,30s,2m") from None


def _name_list(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError("a non-empty comma-separated list")
    return names


def _event_types(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        category, dot, kind = name.partition(".")
        well_formed = dot and name.isascii() and category.isalnum() and kind.isalnum()
        if not (well_formed and category[0].isalpha() and kind[0].isalpha()):
            raise ValueError("comma-separated event types of the form Category.Type, e.g. MobilePush.PushSent")
    return names


def _allowlist(value: Any) -> tuple[str, ...]:
    """Hosts or CIDRs: validated here so a typo fails at start, not at first delivery."""
    items = value if isinstance(value, list) else str(value).split(",")
    entries = []
    for item in (str(i).strip().lower() for i in items):
        if not item:
            continue
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError("comma-separated hosts or CIDRs, e.g. 127.0.0.1,10.0.0.0/8") from None
        entries.append(item)
    return tuple(entries)


def _host_port(value: Any) -> str:
    text = _str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("host:port, e.g. 127.0.0.1:8080")
    return text


def _optional_store_url(value: Any) -> str:
    text = _str(value)
    if text and not (text.startswith("sqlite:///") or text.startswith(("postgresql://", "postgres://"))):
        raise ValueError("sqlite:///path/to/relay.db or postgresql://user@host/db")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _optional_host_port(value: Any) -> str:
    return "" if _str(value).strip() == "" else _host_port(value)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value).lower()
        if text not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[Any], Any]
    help: str

    @property
    def env(self) -> str:
        return "RELAY_" + self.name.upper()


def setting(default: Any, parse: Callable[[Any], Any], help: str) -> Any:
    """A field of ``Settings`` that is a setting: its default, its parser and its help, declared once."""
    return field(default=default, metadata={"parse": parse, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once: name and type here, then default, parser and help."""

    kafka_bootstrap: str = setting("127.0.0.1:19092", _str, "Kafka bootstrap servers (comma-separated host:port).")
    topics: tuple[str, ...] = setting(("relay.events",), _name_list, "Topics the relay consumes events from.")
    consumer_group: str = setting("relay", _str, "Kafka consumer group shared by all relay instances.")
    quarantine_topic: str = setting("relay.quarantine", _str, "Where undecodable or schema-invalid records go.")
    deadletter_topic: str = setting("relay.deadletter", _str, "Where jobs go when their retry schedule is exhausted.")
    ops_topic: str = setting("relay.ops", _str, "Operational events (callback disabled, circuit opened).")
    # A trade: 5,000 drained a backlog 6-10 % faster (a persist's random index inserts dirty pages
    # each commit writes back, so larger transactions cost less per event) but took the live p50/p99
    # at 10,000 events/s from 77/158 to 107/178 ms (medians of five alternating pairs).
    fetch_max_records: int = setting(
        2000, _positive_int,
        "Most records taken from Kafka per consumed batch (and so per store transaction). Larger drains a "
        "backlog faster; smaller keeps latency down under live load.")
    max_record_bytes: int = setting(1_048_576, _positive_int, "Records larger than this are quarantined unread.")
    extra_event_types: tuple[str, ...] = setting((), _event_types,
        "Event types accepted besides the known ones (comma-separated, e.g. MobilePush.PushSent).")
    ingest_stall_seconds: float = setting(60.0, _seconds,
        "Ingest that has records to read but has not committed for this long is a stall: /readyz "
        "turns unready and relay.ops says so.")
    workers: int = setting(1, _positive_int,
        "Relay processes on this machine (`relay serve --workers N`): each a consumer-group member on the "
        "same store, Kafka assigning the partitions; the first serves the API and /metrics.")
    data_dir: str = setting("./.relay", _str, "Data directory: SQLite store, generated master key, local Kafka.")
    store_url: str = setting("", _optional_store_url, "Store location; empty means sqlite:///<data_dir>/relay.db.")
    api_listen: str = setting("127.0.0.1:8080", _host_port, "Address of the REST API, dashboard and /metrics.")
    webhook_origin: str = setting("relay.invalid", str,
        "The DNS name Relay gives as WebHook-Request-Origin in the CloudEvents validation handshake.")
    metrics_listen: str = setting("", _optional_host_port,
        "Serve /metrics on this host:port instead of the API's (keeps it off a public API port).")
    metrics_per_callback: bool = setting(True, _bool,
        "Label delivery metrics by callback id; false sums them under callback_id=\"all\" (many callbacks).")
    admin_key: str = setting("", _str, "Admin API key: creates accounts and their keys. Empty disables admin routes.")
    api_key_cache: float = setting(1.0, _seconds,
        "How long this instance remembers the account of an API key it has seen. A key revoked through another "
        "instance is still accepted here for at most this long; 0 looks every request's key up in the store.")
    master_key: str = setting("", _str, "Base64 32-byte key encrypting secrets at rest; empty: generated in data_dir.")
    url_allowlist: tuple[str, ...] = setting((), _allowlist,
        "Hosts/CIDRs allowed despite the SSRF rules; http:// only for these.")
    delivery_timeout: float = setting(10.0, _seconds, "Timeout of one delivery attempt.")
    lane_max_in_flight: int = setting(64, _positive_int, "Most concurrent POSTs per callback (a callback's "
                                      "maxInFlight overrides it). The limit in use starts at 8 and adapts "
                                      "below this ceiling from the endpoint's answers (AIMD).")
    global_max_in_flight: int = setting(256, _positive_int, "Concurrent POSTs across all callbacks.")
    batch_linger: float = setting(0.005, _seconds, "How long a lane waits to fill a batch.")
    lane_window: int = setting(5000, _positive_int, "Pending jobs a lane keeps in memory; the rest wait in the store.")
    retry_schedule: tuple[float, ...] = setting(
        (0.0, 5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0),
        _duration_list, "Delays between attempts; the last repeats until retry_max_age.")
    retry_max_age: float = setting(72 * 3600.0, _seconds, "A job older than this is dead-lettered.")
    retry_after_max: float = setting(3600.0, _seconds, "Upper bound for a receiver's Retry-After.")
    secret_rotation_overlap: float = setting(86400.0, _seconds, "How long a rotated-out secret keeps signing.")
    circuit_failure_threshold: int = setting(5, _positive_int, "Consecutive failures that open a callback's circuit.")
    circuit_cooldown: float = setting(5.0, _seconds, "First wait before an open circuit lets one probe through.")
    circuit_cooldown_max: float = setting(300.0, _seconds, "Longest wait between probes (the wait doubles).")
    disable_after: float = setting(5 * 86400.0, _seconds, "A callback failing without a success this long is disabled.")
    deadletter_alert_threshold: int = setting(1000, _positive_int, "Dead letters that trigger an event on relay.ops.")
    retention_events: float = setting(7 * 86400.0, _seconds,
        "Delivered events and their jobs older than this are purged.")
    retention_attempts: float = setting(7 * 86400.0, _seconds, "Attempt log entries older than this are purged.")
    retention_deadletters: float = setting(30 * 86400.0, _seconds, "Dead letters older than this are purged.")
    retention_interval: float = setting(60.0, _seconds, "How often the background purge runs.")
    operation_lease: float = setting(30.0, _seconds,
        "How long an instance holds a durable operation (bulk replay, handshake) without reporting "
        "progress; after that another instance resumes it.")
    log_level: str = setting("info", _choice("debug", "info", "warning", "error"), "Log level.")
    log_format: str = setting("json", _choice("json", "console"), "Log format.")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{Path(self.data_dir) / 'relay.db'}"

    @property
    def api_host_port(self) -> tuple[str, int]:
        return split_host_port(self.api_listen)

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        return split_host_port(self.metrics_listen) if self.metrics_listen else None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, f.default, f.metadata["parse"], f.metadata["help"])
    for f in dataclasses.fields(Settings) if "parse" in f.metadata
)
_BY_NAME = {s.name: s for s in SETTINGS}


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def load_settings(
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from defaults, then the TOML file, then the environment, then overrides.

    The TOML file is ``config_file``, else ``$RELAY_CONFIG`` when set. Its keys are the setting
    names (``kafka_bootstrap = "..."``), at the top level or under a ``[relay]`` table.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        values[setting.name] = setting.default
        sources[setting.name] = "default"

    path = config_file or env.get("RELAY_CONFIG")
    if path:
        for name, raw in _read_toml(Path(path)).items():
            if name not in _BY_NAME:
                raise ConfigError(f"{path}: unknown setting {name!r}; known: {', '.join(_BY_NAME)}")
            values[name] = _parse(_BY_NAME[name], raw, f"{path}: {name}")
            sources[name] = str(path)

    for setting in SETTINGS:
        if setting.env in env:
            values[setting.name] = _parse(setting, env[setting.env], setting.env)
            sources[setting.name] = "environment"

    for name, raw in (overrides or {}).items():
        if name not in _BY_NAME:
            raise ConfigError(f"unknown setting {name!r}")
        values[name] = _parse(_BY_NAME[name], raw, name)
        sources[name] = "override"

    return Settings(**values, sources=sources)


def _parse(setting: Setting, raw: Any, where: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}={raw!r} is not valid: expected {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = data.get("relay", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [relay] must be a table")
    return table


def settings_table_markdown() -> str:
    """The configuration table of docs/configuration.md."""
    rows = ["| setting (TOML) | environment | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default
        if isinstance(default, tuple):
            default = ",".join(_fmt(v) for v in default)
        rows.append(f"| `{s.name}` | `{s.env}` | `{_fmt(default)}` | {s.help} |")
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
