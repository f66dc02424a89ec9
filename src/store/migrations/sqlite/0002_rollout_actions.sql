-- The fleet store, version 2: the operator's standing decisions on rollouts (pause, resume,
-- promote), one row per revision and scope, so that they survive a restart.
CREATE TABLE rollout_actions (
    revision TEXT NOT NULL,
    scope TEXT NOT NULL,
    paused INTEGER NOT NULL,
    admitted INTEGER NOT NULL,
    resumes INTEGER NOT NULL,
    forgiven TEXT NOT NULL,
    actor TEXT,
    replica_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (revision, scope)
);
