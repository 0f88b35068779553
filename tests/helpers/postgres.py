"""A real PostgreSQL server for tests (Debian's binaries via deploy/postgres/pg.sh), and a fresh
schema per relay so tests never see each other's rows."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.helpers.kafka import free_port

PG_SH = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "pg.sh"
URL_VARIABLE = "RELAY_TEST_POSTGRES_URL"


class PostgresServer:
    def __init__(self) -> None:
        home = Path(tempfile.mkdtemp(prefix="relay-test-pg-"))
        home.chmod(0o755)  # the server runs as the postgres user when tests run as root
        self.env = {**os.environ, "PG_PORT": str(free_port()), "PG_HOME_DIR": str(home / "pg"), "PG_FAST": "1"}

    def start(self) -> str:
        subprocess.run([str(PG_SH), "up"], env=self.env, check=True, timeout=120)
        return subprocess.run([str(PG_SH), "url"], env=self.env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def stop(self) -> None:
        subprocess.run([str(PG_SH), "down"], env=self.env, check=False, timeout=60)


def fresh_store_url(base: str) -> str:
    """A new, empty schema on the server at ``base``, as a store URL whose search_path is it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}options={quote(f'-csearch_path={schema}')}"


def testing_postgres() -> bool:
    """``RELAY_TEST_STORE=postgres`` runs the whole suite on PostgreSQL instead of SQLite."""
    return os.environ.get("RELAY_TEST_STORE", "sqlite") == "postgres"
