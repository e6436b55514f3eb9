// Package tuningdb is llmir's tuning database: every measurement the tuner
// makes, kept in SQLite (github.com/mattn/go-sqlite3) so that the tuner can
// skip work already done, the cost model can learn from it, `llmir compile`
// can look the best schedules up, and a database tuned on one machine can be
// shipped to others.
//
// Main types:
//
//   - DB: one database file (Open) or an in-memory one (OpenMemory). Safe
//     for many goroutines and many processes at once.
//   - Device, Workload, Record: what is stored. tuningdb imports no other
//     llmir package, so producers hand it their identities as data: a
//     device is a fingerprint hash plus a compatibility class (Kind +
//     Compat), a workload a canonical-key hash plus a Family (the key
//     without dynamic dims) and a shape Bucket.
//   - Batch / RecordBatch: one tuning round, written in one transaction.
//   - Query, Answer, Layered: lookups with fallback (exact device →
//     compatible device → nearest shape bucket → none) over the user's
//     database and the precompiled one, saying which level and layer
//     answered; Layered.Ranked yields every distinct trace the exact and
//     compatible-device levels could answer with, in the lookup's order,
//     for a tuner to replay on a new machine.
//   - Export / Import / Merge: versioned JSON Lines (Header, Line) for moving
//     records between machines; imports deduplicate by Record.Digest.
//   - Verify, Prune, Stats: maintenance behind `llmir db …`.
//   - Model, TuningRun, BenchResult: cost models per device, tuning-run
//     history and benchmark series for dashboards.
//
// Design choices a newcomer asks about:
//
// Codegen versions. A trace means something only to the lowering that
// produced it, so every record carries the codegen version and every lookup
// names one. Records of other versions are ignored, never deleted: an old
// binary keeps working on a shared file, and `llmir db prune
// --codegen-version-below N` removes them only when a user asks.
//
// Concurrency. Every connection runs in WAL mode with a busy timeout, and
// every write transaction is BEGIN IMMEDIATE (all set in the DSN, since a
// PRAGMA run with Exec reaches one pooled connection only). Immediate
// transactions take the write lock up front, so a transaction never fails
// half-way on a lock upgrade; a lock held past the busy timeout is retried
// with backoff, so "database is locked" does not reach users.
//
// Refusing foreign files. Before SQLite opens a file in WAL mode (which
// would rewrite its header), Open checks the magic bytes and, through a
// read-only connection, PRAGMA application_id (ApplicationID, set on
// creation) and user_version (the schema version). A file of another
// application, a newer schema or a damaged file gives ErrForeign,
// ErrNewerSchema, ErrNotDatabase or ErrCorrupt and is never written.
//
// The precompiled database ships as a JSON Lines export embedded with
// go:embed (precompiled/tuningdb.jsonl) and is imported into an in-memory
// SQLite database on use. JSONL rather than an embedded .db file: it is
// diffable in review, deterministic byte for byte (Export's order is
// stable), needs no temporary file, and loads through the same importer
// (and the same validation) as any user's import. Until a tuner has run,
// the shipped file holds only its header line.
package tuningdb
