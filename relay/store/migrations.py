"""Versioned schema migrations, written once and rendered per dialect. Append only: a released
migration is never edited.

Each step is portable SQL with type tokens (``{int}``, ``{real}``, ``{blob}``, ``{serial}``,
``{json}``, ``{empty_json}``) that :func:`render` fills in for SQLite or PostgreSQL, or one text per
dialect where they cannot share it. A dialect's versions are
groups of steps: PostgreSQL arrived after step 2, so its version 1 is steps 1 and 2, and its later
version numbers are one lower than SQLite's. SQLite records its version in ``PRAGMA user_version``,
PostgreSQL in ``schema_migrations`` (under an advisory lock, so instances starting together
migrate once)."""

STEPS: tuple[str | dict[str, str], ...] = (
    # 1: registry, events, jobs, attempts, dead letters, quarantine
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value {int} NOT NULL);
    INSERT INTO meta (key, value) VALUES ('registry_version', 0);

    CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        mid TEXT NOT NULL UNIQUE,
        created_at {real} NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at {real} NOT NULL,
        revoked_at {real}
    );
    CREATE INDEX api_keys_account ON api_keys(account_id);
    CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        max_batch_size {int} NOT NULL,
        secrets {blob} NOT NULL,
        verified {int} NOT NULL,
        enabled {int} NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        ens_signature {int} NOT NULL DEFAULT 0,
        delivery_options {json} NOT NULL DEFAULT {empty_json},
        failing_since {real},
        verification_hash TEXT,
        verification_expires_at {real},
        created_at {real} NOT NULL
    );
    CREATE INDEX callbacks_account ON callbacks(account_id);
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts(id),
        name TEXT NOT NULL,
        callback_id TEXT NOT NULL REFERENCES callbacks(id),
        event_types {json} NOT NULL,
        filters {json} NOT NULL,
        status TEXT NOT NULL,
        status_reason TEXT,
        ordering TEXT NOT NULL,
        on_pause TEXT NOT NULL DEFAULT 'drop',
        created_at {real} NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE INDEX subscriptions_callback ON subscriptions(callback_id);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        type TEXT NOT NULL,
        mid TEXT NOT NULL,
        timestamp_ms {int} NOT NULL,
        subscriber_key TEXT,
        message_key TEXT,
        body {blob} NOT NULL,
        topic TEXT NOT NULL,
        partition {int} NOT NULL,
        "offset" {int} NOT NULL,
        received_at {real} NOT NULL
    );
    CREATE INDEX events_message_key ON events(account_id, message_key, timestamp_ms);
    CREATE INDEX events_subscriber_key ON events(account_id, subscriber_key, timestamp_ms);
    CREATE INDEX events_account_time ON events(account_id, timestamp_ms);
    CREATE INDEX events_received ON events(received_at);
    CREATE TABLE jobs (
        id {serial},
        event_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        ordering_key TEXT,
        partition {int} NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts {int} NOT NULL DEFAULT 0,
        next_attempt_at {real} NOT NULL,
        batch_id TEXT,
        held_by TEXT,
        created_at {real} NOT NULL,
        finished_at {real},
        UNIQUE (event_id, callback_id)
    );
    CREATE INDEX jobs_held ON jobs(held_by) WHERE state = 'held';
    CREATE INDEX jobs_pending ON jobs(callback_id, id) WHERE state = 'pending';
    CREATE INDEX jobs_batch ON jobs(batch_id);
    CREATE TABLE attempts (
        id {serial},
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        job_count {int} NOT NULL,
        at {real} NOT NULL,
        status {int},
        latency_ms {real} NOT NULL,
        error TEXT,
        response_excerpt TEXT,
        outcome TEXT NOT NULL
    );
    CREATE INDEX attempts_batch ON attempts(batch_id);
    CREATE INDEX attempts_callback ON attempts(callback_id, id);
    CREATE INDEX attempts_at ON attempts(at);
    CREATE TABLE deadletters (
        id {serial},
        job_id {int} NOT NULL UNIQUE REFERENCES jobs(id),
        batch_id TEXT NOT NULL,
        callback_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_at {real} NOT NULL
    );
    CREATE INDEX deadletters_callback ON deadletters(callback_id, id);
    CREATE TABLE quarantine (
        id {serial},
        topic TEXT NOT NULL,
        partition {int} NOT NULL,
        "offset" {int} NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        raw {blob},
        key {blob},
        at {real} NOT NULL
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
    ALTER TABLE quarantine ADD COLUMN published_at {real};
    UPDATE quarantine SET published_at = at;
    CREATE INDEX quarantine_unpublished ON quarantine(id) WHERE published_at IS NULL
    """,
    # 4: callbacks carry a version: PATCH writes only the fields it names, under If-Match
    """
    ALTER TABLE callbacks ADD COLUMN version {int} NOT NULL DEFAULT 1
    """,
    # 5: durable operations (bulk replay, handshakes, delayed sweeps): visible to every instance,
    #    claimed under a lease, resumed after a crash; params are sealed (they may hold a key)
    """
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        params {blob} NOT NULL,
        state TEXT NOT NULL,
        done_count {int} NOT NULL DEFAULT 0,
        total {int},
        cursor TEXT,
        error TEXT,
        not_before {real} NOT NULL,
        lease_owner TEXT,
        lease_until {real} NOT NULL DEFAULT 0,
        created_at {real} NOT NULL,
        updated_at {real} NOT NULL,
        finished_at {real}
    );
    CREATE INDEX operations_due ON operations(not_before) WHERE state IN ('queued', 'running');
    CREATE INDEX operations_account ON operations(account_id, created_at)
    """,
    # 6: a 429 with Retry-After pauses a callback on every instance until then
    """
    ALTER TABLE callbacks ADD COLUMN throttled_until {real}
    """,
    # 7: how Relay authenticates to the endpoint (custom headers, OAuth2 client credentials, mTLS),
    #    sealed like signing secrets
    """
    ALTER TABLE callbacks ADD COLUMN auth {blob}
    """,
    # 8: the producer's W3C traceparent travels with its event to the POST
    """
    ALTER TABLE events ADD COLUMN traceparent TEXT
    """,
    # 9: a quarantined record whose JSON names a known MID is shown to that account
    """
    ALTER TABLE quarantine ADD COLUMN account_id TEXT;
    CREATE INDEX quarantine_account ON quarantine(account_id, id)
    """,
    # 10: a callback's health history (circuit opened and closed, disabled, throttled) for its page
    """
    CREATE TABLE callback_history (
        id {serial},
        callback_id TEXT NOT NULL,
        at {real} NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX callback_history_callback ON callback_history(callback_id, id);
    CREATE INDEX callback_history_at ON callback_history(at)
    """,
    # 11: no query looks jobs up by batch_id (results update by job id), yet every batch assignment
    # and every result moved each job's entry in this index: two B-tree writes per job for nothing
    """
    DROP INDEX jobs_batch
    """,
    # 12: sequential keys. Events get an integer key (``seq``) and jobs point at it (``event_seq``), so
    # "one job per event and callback" is an index that grows at its end instead of one keyed by a
    # random text id: on 150,000 rows that index cost 18-20 us per inserted job, against 1-3.
    # ``jobs.event_id`` stays (every reader of a job wants it) but is no longer indexed; the text
    # event id stays unique on events, for lookups and for telling a record read again. SQLite
    # cannot change a table's keys in place, so it rebuilds both tables (ids and the jobs' id
    # sequence kept), with foreign keys off for the step (see sqlite.py); PostgreSQL alters them.
    {
        "sqlite": """
    CREATE TABLE events_new (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        account_id TEXT NOT NULL,
        type TEXT NOT NULL,
        mid TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        subscriber_key TEXT,
        message_key TEXT,
        body BLOB NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        "offset" INTEGER NOT NULL,
        received_at REAL NOT NULL,
        traceparent TEXT
    );
    INSERT INTO events_new (id, account_id, type, mid, timestamp_ms, subscriber_key, message_key, body, topic,
                            partition, "offset", received_at, traceparent)
        SELECT id, account_id, type, mid, timestamp_ms, subscriber_key, message_key, body, topic, partition,
               "offset", received_at, traceparent FROM events ORDER BY rowid;
    DROP TABLE events;
    ALTER TABLE events_new RENAME TO events;
    CREATE INDEX events_message_key ON events(account_id, message_key, timestamp_ms);
    CREATE INDEX events_subscriber_key ON events(account_id, subscriber_key, timestamp_ms);
    CREATE INDEX events_account_time ON events(account_id, timestamp_ms);
    CREATE INDEX events_received ON events(received_at);
    CREATE TABLE jobs_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_seq INTEGER NOT NULL,
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
        topic TEXT NOT NULL DEFAULT '',
        UNIQUE (event_seq, callback_id)
    );
    INSERT INTO jobs_new (id, event_seq, event_id, callback_id, ordering_key, partition, state, attempts,
                          next_attempt_at, batch_id, held_by, created_at, finished_at, topic)
        SELECT j.id, COALESCE(e.seq, -j.id), j.event_id, j.callback_id, j.ordering_key, j.partition, j.state,
               j.attempts, j.next_attempt_at, j.batch_id, j.held_by, j.created_at, j.finished_at, j.topic
        FROM jobs j LEFT JOIN events e ON e.id = j.event_id ORDER BY j.id;
    DELETE FROM sqlite_sequence WHERE name = 'jobs_new';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'jobs_new', seq FROM sqlite_sequence WHERE name = 'jobs';
    DROP TABLE jobs;
    ALTER TABLE jobs_new RENAME TO jobs;
    CREATE INDEX jobs_held ON jobs(held_by) WHERE state = 'held';
    CREATE INDEX jobs_pending ON jobs(callback_id, id) WHERE state = 'pending'
    """,
        "postgres": """
    ALTER TABLE events ADD COLUMN seq BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE;
    ALTER TABLE jobs ADD COLUMN event_seq BIGINT;
    UPDATE jobs SET event_seq = COALESCE((SELECT e.seq FROM events e WHERE e.id = jobs.event_id), -jobs.id);
    ALTER TABLE jobs ALTER COLUMN event_seq SET NOT NULL;
    ALTER TABLE jobs DROP CONSTRAINT jobs_event_id_callback_id_key;
    ALTER TABLE jobs ADD UNIQUE (event_seq, callback_id)
    """,
    },
    # 13: event ids that follow the offsets. Records up to each partition's last stored offset keep the
    # hashed id they were stored with, so one read again after the upgrade is still recognised.
    """
    CREATE TABLE hashed_event_ids (
        topic TEXT NOT NULL,
        partition {int} NOT NULL,
        last_offset {int} NOT NULL,
        PRIMARY KEY (topic, partition)
    );
    INSERT INTO hashed_event_ids (topic, partition, last_offset)
        SELECT topic, partition, MAX("offset") FROM events GROUP BY topic, partition
    """,
    # 14: a batch's composition is pinned as one row (its job ids packed), not by writing
    # ``jobs.batch_id`` on each of its jobs: on PostgreSQL every such UPDATE was a new row version
    # with its index entries, 15-18 us a job. A pin lives until the batch's first result, which
    # writes the batch id on the jobs themselves. Jobs pinned before this step keep their batch_id.
    """
    CREATE TABLE batch_pins (
        batch_id TEXT PRIMARY KEY,
        callback_id TEXT NOT NULL,
        first_job_id {int} NOT NULL,
        last_job_id {int} NOT NULL,
        job_ids {blob} NOT NULL,
        created_at {real} NOT NULL
    );
    CREATE INDEX batch_pins_callback ON batch_pins(callback_id, last_job_id)
    """,
)


_TYPES = {
    "sqlite": {"int": "INTEGER", "real": "REAL", "blob": "BLOB",
               "serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "empty_json": "'{}'", "json": "TEXT"},
    # JSON columns are BYTEA in PostgreSQL: the store writes orjson bytes.
    "postgres": {"int": "BIGINT", "real": "DOUBLE PRECISION", "blob": "BYTEA",
                 "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "empty_json": r"'\x7b7d'",
                 "json": "BYTEA"},
}
# Which steps make up each version, per dialect (1-based step numbers).
_VERSIONS = {
    "sqlite": ((1,), (2,), (3,), (4,), (5,), (6,), (7,), (8,), (9,), (10,), (11,), (12,), (13,), (14,)),
    "postgres": ((1, 2), (3,), (4,), (5,), (6,), (7,), (8,), (9,), (10,), (11,), (12,), (13,), (14,)),
}


def render(dialect: str) -> tuple[str, ...]:
    """The dialect's migrations, one script per version, statements separated by ``;``."""
    types = _TYPES[dialect]
    return tuple(";\n".join(_step(n, dialect).format(**types).strip() for n in steps)
                 for steps in _VERSIONS[dialect])


def _step(number: int, dialect: str) -> str:
    """A step's SQL: the same for both dialects, or one text per dialect where they cannot share it."""
    step = STEPS[number - 1]
    return step if isinstance(step, str) else step[dialect]


SQLITE_MIGRATIONS = render("sqlite")
POSTGRES_MIGRATIONS = render("postgres")
