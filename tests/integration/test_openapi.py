"""The OpenAPI document is complete, and the server never contradicts it (schemathesis)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from relay.api import ApiContext, build_api
from relay.api.docs import OPENAPI_PATH
from relay.config import load_settings
from tests.helpers.harness import ADMIN_KEY, ApiClient, create_tenant, settings_values
from tests.helpers.kafka import KafkaBroker
from tests.helpers.process import RelayProcess

SPEC = yaml.safe_load(OPENAPI_PATH.read_text())


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    app = build_api(ApiContext(load_settings(env={}), store=None, client=None))  # type: ignore[arg-type]
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
        and not route.resource.canonical.startswith("/ui")  # the dashboard's static files
    }
    documented = {(method, path) for path, item in SPEC["paths"].items() for method in item
                  if method in ("get", "post", "put", "patch", "delete")}
    assert served == documented


@pytest.fixture(scope="module")
def live_relay(kafka: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A relay process with one account and one verified-able callback for the fuzzer to hit."""
    tmp = tmp_path_factory.mktemp("openapi")
    relay = RelayProcess(settings_values(kafka.bootstrap, tmp / "data"), Path(tmp / "relay.log"))

    async def start() -> str:
        await relay.start()
        admin = ApiClient(relay.base, ADMIN_KEY)
        tenant = await create_tenant(admin)
        await admin.close()
        await tenant.api.close()
        return tenant.api.key

    key = asyncio.run(start())
    KEYS["account"] = key
    try:
        yield {"base": relay.base, "key": key}
    finally:
        relay.ensure_stopped()


# The activity stream never ends by design; its own test reads it (test_operations.py).
schema = schemathesis.openapi.from_path(str(OPENAPI_PATH)).exclude(path="/v1/activity/stream")
KEYS: dict[str, str] = {}


@schema.auth()
class Bearer:
    """The admin key for /v1/accounts, the account's key elsewhere — applied by schemathesis, so
    the cases it generates without credentials stay without them."""

    def get(self, case, ctx):  # type: ignore[no-untyped-def]
        return ADMIN_KEY if case.path.startswith("/v1/accounts") else KEYS["account"]

    def set(self, case, data, ctx):  # type: ignore[no-untyped-def]
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_never_errors_and_never_contradicts_its_spec(case, live_relay) -> None:  # type: ignore[no-untyped-def]
    """Every schemathesis check except positive-data acceptance: a schema-valid body can still
    break a rule a schema cannot express (a URL that resolves to a private address, an unknown
    callbackId), and those answers are 400/404 by design."""
    case.call_and_validate(base_url=live_relay["base"], excluded_checks=[positive_data_acceptance])
