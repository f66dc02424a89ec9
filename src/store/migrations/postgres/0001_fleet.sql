-- The fleet store, version 1 (PostgreSQL): agents as last reported, the revisions each ran,
-- the audit trail, and the replicas that write here. Times are milliseconds since the epoch.
CREATE TABLE agents (
    instance_uid BYTEA PRIMARY KEY,
    identifying JSONB NOT NULL,
    non_identifying JSONB NOT NULL,
    capabilities BIGINT NOT NULL,
    sequence_num BIGINT,
    reported_hash TEXT,
    remote_config_status TEXT,
    error_message TEXT,
    healthy BOOLEAN,
    health_status TEXT,
    health_error TEXT,
    effective_config_hash TEXT,
    effective_config JSONB,
    desired_hash TEXT,
    revision TEXT,
    rule TEXT,
    transport TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    connected BOOLEAN NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    token_name TEXT
);
CREATE INDEX agents_replica ON agents (replica_id);

CREATE TABLE agent_history (
    instance_uid BYTEA NOT NULL,
    seq INTEGER NOT NULL,
    revision TEXT,
    config_hash TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    left_at BIGINT,
    PRIMARY KEY (instance_uid, seq)
);
CREATE INDEX agent_history_revision ON agent_history (revision);

-- Each replica numbers its own events: the key is both.
CREATE TABLE events (
    replica_id TEXT NOT NULL,
    id BIGINT NOT NULL,
    at BIGINT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (replica_id, id)
);
CREATE INDEX events_at ON events (at);

CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    admin_url TEXT
);
