package tuningdb

import (
	"bytes"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mattn/go-sqlite3"
)

// ApplicationID marks a SQLite file as an llmir tuning database
// (PRAGMA application_id; the bytes spell "LLMT").
const ApplicationID = 0x4c4c4d54

// Sentinel errors; check them with errors.Is.
var (
	// ErrNotDatabase: the file is not an SQLite database at all.
	ErrNotDatabase = errors.New("not an SQLite database")
	// ErrForeign: an SQLite database that belongs to another application.
	ErrForeign = errors.New("SQLite database of another application, not an llmir tuning database")
	// ErrNewerSchema: written by a newer llmir whose schema this binary does not know.
	ErrNewerSchema = errors.New("tuning database schema is newer than this llmir")
	// ErrCorrupt: SQLite found the file damaged.
	ErrCorrupt = errors.New("tuning database is corrupt")
	// ErrReadOnly: a write was attempted on a database opened read-only.
	ErrReadOnly = errors.New("tuning database is open read-only")
	// ErrNotFound: no record answers a lookup.
	ErrNotFound = errors.New("no tuning record found")
	// ErrUnknownWorkload and ErrUnknownDevice: a record names a workload or
	// device that is neither in its batch nor in the database.
	ErrUnknownWorkload = errors.New("unknown workload")
	ErrUnknownDevice   = errors.New("unknown device")
)

//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the embedded schema steps, in version order. Each file is
// named NNNN_what.sql; NNNN is its version.
var migrations = mustLoadMigrations()

func mustLoadMigrations() []migration {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	var ms []migration
	for _, n := range names {
		base := filepath.Base(n)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			panic(fmt.Sprintf("tuningdb: migration %s is not named NNNN_what.sql", n))
		}
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			panic(err)
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			panic(fmt.Sprintf("tuningdb: migration %s: versions must run 1, 2, … without gaps", m.name))
		}
	}
	return ms
}

// SchemaVersion is the schema version this binary writes.
func SchemaVersion() int { return len(migrations) }

// Options configure Open. The zero value is usable.
type Options struct {
	// ReadOnly opens an existing database without creating, migrating or
	// writing it.
	ReadOnly bool
	// BusyTimeout is how long one SQLite call waits for another process's
	// lock (default 5 s). Writes are retried beyond it, up to LockWait.
	BusyTimeout time.Duration
	// LockWait bounds how long a write keeps retrying a locked database
	// (default 2 minutes); the context may end it sooner.
	LockWait time.Duration
	// Now is the clock for created_at columns (default time.Now).
	Now func() time.Time
	// LLMIRVersion is stamped on tuning runs and benchmark results.
	LLMIRVersion string
}

// DB is an open tuning database. It is safe for concurrent use by many
// goroutines, and many processes may open the same file at once.
type DB struct {
	sql  *sql.DB
	path string // "" for an in-memory database
	opts Options
}

// Path is the database file ("" for an in-memory database).
func (db *DB) Path() string { return db.path }

// Close closes the database.
func (db *DB) Close() error { return db.sql.Close() }

func (o Options) withDefaults() Options {
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 5 * time.Second
	}
	if o.LockWait <= 0 {
		o.LockWait = 2 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// dsn builds the connection string. Per-connection settings go in the DSN
// because database/sql pools connections and a PRAGMA run with Exec would
// reach only one of them.
func dsn(path string, o Options, mode string) string {
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(o.BusyTimeout.Milliseconds(), 10))
	q.Set("_foreign_keys", "on")
	// Lookups repeat a few statements; re-preparing a three-way join
	// costs more than running it.
	q.Set("_stmt_cache_size", "32")
	// 64 MiB of page cache per connection (allocated as used): the indexes
	// of a million records then stay in memory between lookups.
	q.Set("_cache_size", "-65536")
	switch mode {
	case "ro":
		q.Set("mode", "ro")
	default:
		q.Set("mode", mode)
		q.Set("_journal_mode", "WAL")
		// synchronous stays FULL (the default): a commit survives power
		// loss, and one fsync per tuning batch costs nothing next to the
		// measurements in it.
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Path: path}
	return "file:" + u.EscapedPath() + "?" + q.Encode()
}

// Open opens the tuning database at path, creating it (and its parent
// directories) unless opts.ReadOnly, and brings its schema up to date.
// A file that is not an llmir tuning database is refused with ErrNotDatabase,
// ErrForeign, ErrNewerSchema or ErrCorrupt, and is left exactly as it was.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open tuning database %s: %w", path, err)
	}
	fail := func(err error) (*DB, error) {
		return nil, fmt.Errorf("open tuning database %s: %w", path, err)
	}
	exists, err := checkHeader(abs)
	if err != nil {
		return fail(err)
	}
	if !exists {
		if opts.ReadOnly {
			return fail(fs.ErrNotExist)
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return fail(err)
		}
	} else if err := probe(ctx, abs, opts); err != nil {
		return fail(err)
	}
	mode := "rwc"
	if opts.ReadOnly {
		mode = "ro"
	}
	sdb, err := sql.Open("sqlite3", dsn(abs, opts, mode))
	if err != nil {
		return fail(err)
	}
	db := &DB{sql: sdb, path: abs, opts: opts}
	if opts.ReadOnly {
		err = db.checkSchema(ctx)
	} else {
		err = db.migrate(ctx)
	}
	if err != nil {
		sdb.Close()
		return fail(err)
	}
	return db, nil
}

var memSeq atomic.Int64

// OpenMemory opens a private in-memory tuning database with the current
// schema. The precompiled layer and tests use it.
func OpenMemory(ctx context.Context, opts Options) (*DB, error) {
	opts = opts.withDefaults()
	q := url.Values{}
	q.Set("mode", "memory")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	q.Set("_stmt_cache_size", "32")
	q.Set("_busy_timeout", strconv.FormatInt(opts.BusyTimeout.Milliseconds(), 10))
	name := fmt.Sprintf("file:llmir-mem-%d-%d?%s", os.Getpid(), memSeq.Add(1), q.Encode())
	sdb, err := sql.Open("sqlite3", name)
	if err != nil {
		return nil, fmt.Errorf("open in-memory tuning database: %w", err)
	}
	// One connection: every connection to "mode=memory" gets its own
	// database, and that database lives only while its connection does.
	sdb.SetMaxOpenConns(1)
	sdb.SetMaxIdleConns(1)
	sdb.SetConnMaxLifetime(0)
	sdb.SetConnMaxIdleTime(0)
	db := &DB{sql: sdb, opts: opts}
	if err := db.migrate(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open in-memory tuning database: %w", err)
	}
	return db, nil
}

var sqliteMagic = []byte("SQLite format 3\x00")

// checkHeader reports whether path exists with content, and refuses files
// that are not SQLite at all before SQLite touches them.
func checkHeader(path string) (exists bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	if st.IsDir() {
		return false, fmt.Errorf("is a directory")
	}
	if st.Size() == 0 {
		// SQLite treats an empty file as an empty database; so do we.
		return false, nil
	}
	var hdr [100]byte
	n, err := io.ReadFull(f, hdr[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, err
	}
	if n < len(hdr) || !bytes.Equal(hdr[:16], sqliteMagic) {
		return false, fmt.Errorf("%w (the file was not changed)", ErrNotDatabase)
	}
	return true, nil
}

// probe reads an existing file's identity through a read-only connection
// without WAL settings, so that a foreign database is never switched to WAL
// or migrated. It asks SQLite rather than reading the raw header because
// the newest schema version may still sit in the write-ahead log, and it
// asks in one statement, one snapshot: another process may be creating the
// database at this very moment.
func probe(ctx context.Context, path string, opts Options) error {
	sdb, err := sql.Open("sqlite3", dsn(path, opts, "ro"))
	if err != nil {
		return err
	}
	defer sdb.Close()
	var appID, userVersion, objects int64
	err = retryBusy(ctx, opts.LockWait, func() error {
		return sdb.QueryRowContext(ctx, `SELECT (SELECT application_id FROM pragma_application_id),
			(SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_schema)`).Scan(&appID, &userVersion, &objects)
	})
	if err != nil {
		return fmt.Errorf("%w (the file was not changed)", classify(err))
	}
	switch {
	case appID == 0 && objects == 0:
		return nil // an empty SQLite file: ours to initialise
	case appID != ApplicationID:
		return fmt.Errorf("%w: application_id %#x (the file was not changed)", ErrForeign, uint32(appID))
	case int(userVersion) > SchemaVersion():
		return fmt.Errorf("%w: schema version %d, this llmir knows up to %d (the file was not changed)", ErrNewerSchema, userVersion, SchemaVersion())
	}
	return nil
}

// classify maps SQLite's damage codes onto the package's sentinels.
func classify(err error) error {
	if errors.Is(err, ErrCorrupt) || errors.Is(err, ErrNotDatabase) || errors.Is(err, ErrReadOnly) {
		return err // classified already
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrCorrupt:
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		case sqlite3.ErrNotADB:
			return fmt.Errorf("%w: %v", ErrNotDatabase, err)
		case sqlite3.ErrReadonly:
			return fmt.Errorf("%w: %v", ErrReadOnly, err)
		}
	}
	return err
}

func (db *DB) schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func (db *DB) checkSchema(ctx context.Context) error {
	var v int
	err := retryBusy(ctx, db.opts.LockWait, func() (err error) {
		v, err = db.schemaVersion(ctx, db.sql)
		return err
	})
	if err != nil {
		return err
	}
	if v != SchemaVersion() {
		return fmt.Errorf("schema version %d, this llmir reads version %d: open it once without read-only to migrate", v, SchemaVersion())
	}
	return nil
}

// migrate applies the missing migrations, each in its own immediate
// transaction, so that processes opening a fresh file at the same time
// take turns and each step is applied exactly once.
func (db *DB) migrate(ctx context.Context) error {
	for _, m := range migrations {
		err := db.write(ctx, func(tx *sql.Tx) error {
			v, err := db.schemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			if v > SchemaVersion() {
				return fmt.Errorf("%w: schema version %d, this llmir knows up to %d", ErrNewerSchema, v, SchemaVersion())
			}
			if v >= m.version {
				return nil
			}
			if v == 0 {
				if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA application_id = %d", ApplicationID)); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `CREATE TABLE schema_migrations (
					version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
				m.version, m.name, db.opts.Now().UnixNano()); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			_, err = tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// write runs fn in an immediate transaction, retrying while the database
// is locked (see retryBusy).
func (db *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if db.opts.ReadOnly {
		return ErrReadOnly
	}
	return retryBusy(ctx, db.opts.LockWait, func() error { return db.tryWrite(ctx, fn) })
}

// retryBusy runs fn until it does not fail with a lock error. A lock held
// by another process past the busy timeout is retried with jittered
// backoff until lockWait or the context ends, so "database is locked" does
// not reach the caller while the database is merely busy.
func retryBusy(ctx context.Context, lockWait time.Duration, fn func() error) error {
	deadline := time.Now().Add(lockWait)
	backoff := 2 * time.Millisecond
	for {
		err := fn()
		if err == nil || !isBusy(err) || time.Now().After(deadline) {
			return classify(err)
		}
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (while waiting for a lock: %v)", ctx.Err(), err)
		case <-time.After(d):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

func (db *DB) tryWrite(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func isBusy(err error) bool {
	var se sqlite3.Error
	return errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)
}
