"""Versioned schema migrations, one list per store. Append only: a released migration is never
edited. SQLite records its version in ``PRAGMA user_version``, PostgreSQL in
``schema_migrations`` (under an advisory lock, so instances starting together migrate once)."""

SQLITE_MIGRATIONS: tuple[str, ...] = (
    # 1: registry, events, jobs, attempts, dead letters, quarantine
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 0);

    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        mid TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX api_keys_account ON api_keys(account_id);
    CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        max_batch_size INTEGER NOT NULL,
        secrets BLOB NOT NULL,
        verified INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        ens_signature INTEGER NOT NULL DEFAULT 0,
        delivery_options TEXT NOT NULL DEFAULT '{}',
        failing_since REAL,
        verification_hash TEXT,
        verification_expires_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX callbacks_account ON callbacks(account_id);
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        callback_id TEXT NOT NULL REFERENCES callbacks(id),
        event_types TEXT NOT NULL,
        filters TEXT NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        ordering TEXT NOT NULL,
        on_pause TEXT NOT NULL DEFAULT 'drop',
        created_at REAL NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX subscriptions_callback ON subscriptions(callback_id);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        type TEXT NOT NULL,
        mid TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        subscriber_key TEXT,
        message_key TEXT,
        body BLOB NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX events_message_key ON events(account_id, message_key, timestamp_ms);
    CREATE INDEX events_subscriber_key ON events(account_id, subscriber_key, timestamp_ms);
    CREATE INDEX events_account_time ON events(account_id, timestamp_ms);
    CREATE INDEX events_received ON events(received_at);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        ordering_key TEXT,
        partition INTEGER NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        batch_id TEXT,
        held_by TEXT,
        created_at REAL NOT NULL,
        finished_at REAL,
        UNIQUE (event_id, callback_id)
    );
    CREATE INDEX jobs_held ON jobs(held_by) WHERE state = 'held';
    CREATE INDEX jobs_pending ON jobs(callback_id, id) WHERE state = 'pending';
    CREATE INDEX jobs_batch ON jobs(batch_id);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        job_count INTEGER NOT NULL,
        at REAL NOT NULL,
        status INTEGER,
        latency_ms REAL NOT NULL,
        error TEXT,
        response_excerpt TEXT,
        outcome TEXT NOT NULL
    );
    CREATE INDEX attempts_batch ON attempts(batch_id);
    CREATE INDEX attempts_callback ON attempts(callback_id, id);
    CREATE INDEX attempts_at ON attempts(at);
    CREATE TABLE deadletters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL UNIQUE REFERENCES jobs(id),
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX deadletters_callback ON deadletters(callback_id, id);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        raw BLOB,
        key BLOB,
        at REAL NOT NULL
    )
    """,
    # 2: jobs know their source topic (partition ownership across instances); a requeue counter
    """
    ALTER TABLE jobs ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    UPDATE jobs SET topic = COALESCE((SELECT e.topic FROM events e WHERE e.id = jobs.event_id), '');
    INSERT INTO meta (key, value) VALUES ('requeue_version', 0)
    """,
    # 3: one quarantine row per record (a re-read batch cannot add another); the table is the
    #    outbox of the quarantine topic: published_at is set once the record is on the topic
    """
    DELETE FROM quarantine WHERE id NOT IN
        (SELECT MIN(id) FROM quarantine GROUP BY topic, partition, "offset");
    CREATE UNIQUE INDEX quarantine_record ON quarantine(topic, partition, "offset");
    ALTER TABLE quarantine ADD COLUMN published_at REAL;
    UPDATE quarantine SET published_at = at;
    CREATE INDEX quarantine_unpublished ON quarantine(id) WHERE published_at IS NULL
    """,
    # 4: callbacks carry a version: PATCH writes only the fields it names, under If-Match
    """
    ALTER TABLE callbacks ADD COLUMN version INTEGER NOT NULL DEFAULT 1
    """,
)

# PostgreSQL starts at the schema SQLite reaches after migration 2 (JSON columns are BYTEA: the
# store writes orjson bytes).
POSTGRES_MIGRATIONS: tuple[str, ...] = (
    # 1: registry, events, jobs (with source topic), attempts, dead letters, quarantine
    r"""
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 0), ('requeue_version', 0);

    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        mid TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    );
    CREATE INDEX api_keys_account ON api_keys(account_id);
    CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        max_batch_size BIGINT NOT NULL,
        secrets BYTEA NOT NULL,
        verified BIGINT NOT NULL,
        enabled BIGINT NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        ens_signature BIGINT NOT NULL DEFAULT 0,
        delivery_options BYTEA NOT NULL DEFAULT '\x7b7d',
        failing_since DOUBLE PRECISION,
        verification_hash TEXT,
        verification_expires_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX callbacks_account ON callbacks(account_id);
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        callback_id TEXT NOT NULL REFERENCES callbacks(id),
        event_types BYTEA NOT NULL,
        filters BYTEA NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        ordering TEXT NOT NULL,
        on_pause TEXT NOT NULL DEFAULT 'drop',
        created_at DOUBLE PRECISION NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX subscriptions_callback ON subscriptions(callback_id);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        type TEXT NOT NULL,
        mid TEXT NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        subscriber_key TEXT,
        message_key TEXT,
        body BYTEA NOT NULL,
        topic TEXT NOT NULL,
        partition BIGINT NOT NULL,
        "offset" BIGINT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX events_message_key ON events(account_id, message_key, timestamp_ms);
    CREATE INDEX events_subscriber_key ON events(account_id, subscriber_key, timestamp_ms);
    CREATE INDEX events_account_time ON events(account_id, timestamp_ms);
    CREATE INDEX events_received ON events(received_at);
    CREATE TABLE jobs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        ordering_key TEXT,
        topic TEXT NOT NULL,
        partition BIGINT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        batch_id TEXT,
        held_by TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        UNIQUE (event_id, callback_id)
    );
    CREATE INDEX jobs_held ON jobs(held_by) WHERE state = 'held';
    CREATE INDEX jobs_pending ON jobs(callback_id, id) WHERE state = 'pending';
    CREATE INDEX jobs_batch ON jobs(batch_id);
    CREATE TABLE attempts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        job_count BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        status BIGINT,
        latency_ms DOUBLE PRECISION NOT NULL,
        error TEXT,
        response_excerpt TEXT,
        outcome TEXT NOT NULL
    );
    CREATE INDEX attempts_batch ON attempts(batch_id);
    CREATE INDEX attempts_callback ON attempts(callback_id, id);
    CREATE INDEX attempts_at ON attempts(at);
    CREATE TABLE deadletters (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        job_id BIGINT NOT NULL UNIQUE REFERENCES jobs(id),
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX deadletters_callback ON deadletters(callback_id, id);
    CREATE TABLE quarantine (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        topic TEXT NOT NULL,
        partition BIGINT NOT NULL,
        "offset" BIGINT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        raw BYTEA,
        key BYTEA,
        at DOUBLE PRECISION NOT NULL
    )
    """,
    # 2: see SQLite migration 3
    """
    DELETE FROM quarantine WHERE id NOT IN
        (SELECT MIN(id) FROM quarantine GROUP BY topic, partition, "offset");
    CREATE UNIQUE INDEX quarantine_record ON quarantine(topic, partition, "offset");
    ALTER TABLE quarantine ADD COLUMN published_at DOUBLE PRECISION;
    UPDATE quarantine SET published_at = at;
    CREATE INDEX quarantine_unpublished ON quarantine(id) WHERE published_at IS NULL
    """,
    # 3: see SQLite migration 4
    """
    ALTER TABLE callbacks ADD COLUMN version BIGINT NOT NULL DEFAULT 1
    """,
)
