-- 0001: the first schema of the tuning database.
--
-- Text keys (device hash, workload key) are stored once and referenced by
-- integer ids, so a million records do not repeat 64-byte hashes in every
-- row and index.

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY,
    hash        TEXT    NOT NULL UNIQUE CHECK (length(hash) = 64),
    kind        TEXT    NOT NULL CHECK (kind IN ('cpu', 'cuda')),
    compat      TEXT    NOT NULL CHECK (compat <> ''),
    fingerprint TEXT    NOT NULL CHECK (json_valid(fingerprint)),
    roofline    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(roofline)),
    created_at  INTEGER NOT NULL
);
-- Compatible-device fallback: all devices of one class.
CREATE INDEX devices_class ON devices (kind, compat);

CREATE TABLE workloads (
    id         INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL UNIQUE CHECK (length(key) = 64),
    family     TEXT    NOT NULL CHECK (family <> ''),
    bucket     INTEGER NOT NULL DEFAULT 0 CHECK (bucket >= 0),
    op_group   TEXT    NOT NULL CHECK (op_group <> ''),
    json       TEXT    NOT NULL CHECK (json_valid(json)),
    created_at INTEGER NOT NULL
);
-- Nearest-bucket fallback: the buckets of one family, in order.
CREATE INDEX workloads_family ON workloads (family, bucket);
CREATE INDEX workloads_group ON workloads (op_group);

CREATE TABLE tuning_runs (
    id             INTEGER PRIMARY KEY,
    device_id      INTEGER REFERENCES devices (id),
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    budget_trials  INTEGER NOT NULL DEFAULT 0,
    budget_seconds REAL    NOT NULL DEFAULT 0,
    command        TEXT    NOT NULL DEFAULT '',
    results        TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(results)),
    llmir_version  TEXT    NOT NULL
);

CREATE TABLE records (
    id              INTEGER PRIMARY KEY,
    workload_id     INTEGER NOT NULL REFERENCES workloads (id),
    device_id       INTEGER NOT NULL REFERENCES devices (id),
    codegen_version INTEGER NOT NULL,
    trace           TEXT    NOT NULL CHECK (json_valid(trace)),
    status          TEXT    NOT NULL CHECK (status IN
                        ('ok', 'build_error', 'runtime_error', 'timeout', 'wrong_result')),
    error           TEXT    NOT NULL DEFAULT '',
    samples         TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(samples)),
    median          REAL,
    min             REAL,
    iqr             REAL,
    created_at      INTEGER NOT NULL,
    llmir_version   TEXT    NOT NULL,
    run_id          INTEGER REFERENCES tuning_runs (id) ON DELETE SET NULL,
    -- SHA-256 of the record's content: import and merge skip a record
    -- whose digest is already stored.
    digest          BLOB    NOT NULL UNIQUE CHECK (length(digest) = 32),
    CHECK (status <> 'ok' OR (median > 0 AND min > 0 AND iqr >= 0))
);
-- Best record: one index seek, then the first entry is the answer (ties by
-- age, so created_at is in the index too and no sort is needed).
CREATE INDEX records_best ON records (workload_id, device_id, codegen_version, median, created_at)
    WHERE status = 'ok';
-- Training reads every record of a device.
CREATE INDEX records_device ON records (device_id, codegen_version);
CREATE INDEX records_run ON records (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE models (
    id              INTEGER PRIMARY KEY,
    device_id       INTEGER NOT NULL REFERENCES devices (id),
    name            TEXT    NOT NULL CHECK (name <> ''),
    codegen_version INTEGER NOT NULL,
    format          TEXT    NOT NULL,
    data            BLOB    NOT NULL,
    trained_on      INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    llmir_version   TEXT    NOT NULL,
    UNIQUE (device_id, name, codegen_version)
);

CREATE TABLE bench_results (
    id            INTEGER PRIMARY KEY,
    suite         TEXT    NOT NULL CHECK (suite <> ''),
    name          TEXT    NOT NULL CHECK (name <> ''),
    device_id     INTEGER REFERENCES devices (id),
    metric        TEXT    NOT NULL CHECK (metric <> ''),
    value         REAL    NOT NULL,
    unit          TEXT    NOT NULL DEFAULT '',
    extra         TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(extra)),
    created_at    INTEGER NOT NULL,
    llmir_version TEXT    NOT NULL
);
CREATE INDEX bench_results_series ON bench_results (suite, name, metric, created_at);
