"""The database schema and its migrations.

``PRAGMA user_version`` holds how many entries of ``MIGRATIONS`` the file has
had applied; opening a store applies the rest in order, each in one
transaction (``connection.py``). Append new versions; never edit one that
shipped, since databases in the field already ran it.
"""

SCHEMA_V1 = """
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    title         TEXT    NOT NULL DEFAULT '',
    model         TEXT,
    system_prompt TEXT,
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL,
    next_seq      INTEGER NOT NULL DEFAULT 10
);
CREATE INDEX conversations_by_activity ON conversations(updated_at DESC);

CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('user', 'assistant', 'notice')),
    content         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    error           TEXT,
    reply_to        INTEGER,
    key             TEXT,
    meta            TEXT
);
CREATE UNIQUE INDEX messages_in_order ON messages(conversation_id, seq);
-- The claim query asks "is anything earlier in this conversation unsettled?";
-- this partial index keeps that a seek however long the history is.
CREATE INDEX messages_unsettled ON messages(conversation_id, seq)
    WHERE role = 'user' AND state NOT IN ('delivered', 'cancelled');
CREATE INDEX messages_changed ON messages(updated_at);

CREATE TABLE outbox (
    message_id      INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    conversation_id INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL    NOT NULL,
    lease_owner     TEXT,
    lease_expires   REAL,
    last_error      TEXT,
    enqueued_at     REAL    NOT NULL
);
CREATE INDEX outbox_due ON outbox(next_attempt_at);

CREATE TABLE drafts (
    conversation_id INTEGER PRIMARY KEY,  -- 0: the composer of a conversation not yet created
    text            TEXT NOT NULL,
    updated_at      REAL NOT NULL
);

CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
END;
"""

# Context windows, stopping a reply: what was learned about each model's window
# (per endpoint and model), which turns the last request carried, and a stop
# flag the lease holder polls (so `cancel` from another process stops a send).
SCHEMA_V2_CONTEXT = """
CREATE TABLE context_limits (
    endpoint        TEXT NOT NULL,
    model           TEXT NOT NULL,
    window          INTEGER,
    source          TEXT,
    bytes_per_token REAL,
    updated_at      REAL NOT NULL,
    PRIMARY KEY (endpoint, model)
);
ALTER TABLE conversations ADD COLUMN context_from_seq INTEGER;
ALTER TABLE conversations ADD COLUMN context_to_seq INTEGER;
ALTER TABLE outbox ADD COLUMN stop_requested TEXT;
"""

# Named endpoints, versions and branches: each conversation belongs to one endpoint
# (NULL: the default); a regenerated or edited turn keeps its earlier versions in
# turn_versions (the messages table holds the version shown, the one sent as
# context); a branch remembers where it came from.
SCHEMA_V3_ENDPOINTS = """
ALTER TABLE conversations ADD COLUMN endpoint TEXT;
ALTER TABLE conversations ADD COLUMN branch_of INTEGER;
ALTER TABLE conversations ADD COLUMN branch_seq INTEGER;
CREATE TABLE turn_versions (
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    version         INTEGER NOT NULL,
    question        TEXT    NOT NULL,
    reply           TEXT,
    reply_state     TEXT,
    reply_meta      TEXT,
    created_at      REAL    NOT NULL,
    PRIMARY KEY (conversation_id, seq, version)
);
"""

# Each entry upgrades the schema by one version; append, never edit.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2_CONTEXT, SCHEMA_V3_ENDPOINTS]
