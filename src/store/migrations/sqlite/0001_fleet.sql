-- The fleet store, version 1: agents as last reported, the revisions each ran, the audit
-- trail, and the replicas that write here.
CREATE TABLE agents (
    instance_uid BLOB PRIMARY KEY,
    identifying TEXT NOT NULL,
    non_identifying TEXT NOT NULL,
    capabilities INTEGER NOT NULL,
    sequence_num INTEGER,
    reported_hash TEXT,
    remote_config_status TEXT,
    error_message TEXT,
    healthy INTEGER,
    health_status TEXT,
    health_error TEXT,
    effective_config_hash TEXT,
    effective_config TEXT,
    desired_hash TEXT,
    revision TEXT,
    rule TEXT,
    transport TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    connected INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    token_name TEXT
);

CREATE TABLE agent_history (
    instance_uid BLOB NOT NULL,
    seq INTEGER NOT NULL,
    revision TEXT,
    config_hash TEXT NOT NULL,
    applied_at INTEGER NOT NULL,
    left_at INTEGER,
    PRIMARY KEY (instance_uid, seq)
);
CREATE INDEX agent_history_revision ON agent_history (revision);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);

CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    admin_url TEXT
);
