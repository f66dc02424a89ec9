-- The fleet store, version 2: the operator's standing decisions on rollouts (pause, resume,
-- promote), one row per revision and scope, so that they survive a restart and every replica
-- reads the same.
CREATE TABLE rollout_actions (
    revision TEXT NOT NULL,
    scope TEXT NOT NULL,
    paused BOOLEAN NOT NULL,
    admitted INTEGER NOT NULL,
    resumes INTEGER NOT NULL,
    forgiven JSONB NOT NULL,
    actor TEXT,
    replica_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (revision, scope)
);
