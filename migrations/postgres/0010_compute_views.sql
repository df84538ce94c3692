-- The compute network's read models, written only by the `compute` projection from node and
-- job events (`job_payments_view` by the `payments` projection, which owns the ledger). JSON
-- columns hold values copied whole from events; money is canonical 6-decimal text.
CREATE TABLE nodes_view
(
    node_id             text    NOT NULL PRIMARY KEY,
    owner               text    NOT NULL,
    name                text    NOT NULL,
    owner_wallet        text    NOT NULL,
    resources           text    NOT NULL, -- JSON, as in NodeRegistered
    cpu_cores           bigint  NOT NULL,
    memory_mb           bigint  NOT NULL,
    disk_gb             bigint  NOT NULL,
    gpus                bigint  NOT NULL,
    max_concurrent_jobs bigint  NOT NULL,
    status              text    NOT NULL, -- online | offline | deactivated
    offline_reason      text,             -- heartbeat_timeout | shutdown, while offline
    registered_at       text    NOT NULL,
    updated_at          text    NOT NULL
);
CREATE INDEX nodes_view_by_owner ON nodes_view (owner, registered_at);
CREATE INDEX nodes_view_by_status ON nodes_view (status, node_id);

-- Every state change of a node, in log order.
CREATE TABLE node_history_view
(
    node_id    text    NOT NULL,
    position   bigint  NOT NULL,
    event_type text    NOT NULL,
    status     text    NOT NULL,
    detail     text    NOT NULL, -- JSON: the reason or the admin
    at         text    NOT NULL,
    PRIMARY KEY (node_id, position)
);

CREATE TABLE jobs_view
(
    job_id              text    NOT NULL PRIMARY KEY,
    creator             text    NOT NULL,
    payment_id          text    NOT NULL,
    job_type            text    NOT NULL,
    image               text    NOT NULL,
    spec                text    NOT NULL, -- JSON, as in JobSubmitted
    needs_cpu_cores     bigint  NOT NULL,
    needs_memory_mb     bigint  NOT NULL,
    needs_gpus          bigint  NOT NULL,
    needs_gpu_memory_mb bigint  NOT NULL,
    max_runtime_secs    bigint  NOT NULL,
    price               text    NOT NULL,
    status              text    NOT NULL, -- pending | assigned | running | completed | failed | cancelled | timed_out
    node_id             text,             -- the assignee while assigned or running, else the last one
    attempt             bigint  NOT NULL,
    exit_code           bigint,
    failure_reason      text,
    message             text,
    outputs             text    NOT NULL, -- JSON array
    node_net            text,
    platform_fee        text,
    refund              text,
    submitted_at        text    NOT NULL,
    assigned_at         text,
    started_at          text,
    ended_at            text,
    updated_at          text    NOT NULL
);
CREATE INDEX jobs_view_by_creator ON jobs_view (creator, submitted_at, job_id);
-- The scheduler reads pending jobs oldest first, and each node's assigned and running jobs.
CREATE INDEX jobs_view_by_status ON jobs_view (status, submitted_at, job_id);
CREATE INDEX jobs_view_by_node ON jobs_view (node_id, status);

-- Every transition of a job, in log order.
CREATE TABLE job_history_view
(
    job_id     text    NOT NULL,
    position   bigint  NOT NULL,
    event_type text    NOT NULL,
    status     text    NOT NULL,
    node_id    text,
    attempt    bigint  NOT NULL,
    at         text    NOT NULL,
    PRIMARY KEY (job_id, position)
);

-- Which payment paid each job: the ledger names it on the job's settlement postings.
CREATE TABLE job_payments_view
(
    job_id     text NOT NULL PRIMARY KEY,
    payment_id text NOT NULL
);
