package tuningdb

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"
)

// Stats summarises a database.
type Stats struct {
	Path          string         `json:"path"`
	SizeBytes     int64          `json:"size_bytes"`
	SchemaVersion int            `json:"schema_version"`
	Devices       int            `json:"devices"`
	Workloads     int            `json:"workloads"`
	Records       int            `json:"records"`
	ByStatus      map[Status]int `json:"by_status"`
	ByCodegen     map[int]int    `json:"by_codegen_version"`
	Models        int            `json:"models"`
	TuningRuns    int            `json:"tuning_runs"`
	BenchResults  int            `json:"bench_results"`
	PerDevice     []DeviceStats  `json:"per_device"`
}

// DeviceStats counts one device's records.
type DeviceStats struct {
	Hash    string `json:"hash"`
	Kind    Kind   `json:"kind"`
	Compat  string `json:"compat"`
	Records int    `json:"records"`
	OK      int    `json:"ok"`
}

// Stats counts what the database holds.
func (db *DB) Stats(ctx context.Context) (Stats, error) {
	s := Stats{Path: db.path, ByStatus: map[Status]int{}, ByCodegen: map[int]int{}}
	fail := func(err error) (Stats, error) { return Stats{}, fmt.Errorf("stats: %w", classify(err)) }
	var err error
	if s.SchemaVersion, err = db.schemaVersion(ctx, db.sql); err != nil {
		return fail(err)
	}
	for _, c := range []struct {
		dst *int
		q   string
	}{
		{&s.Devices, `SELECT count(*) FROM devices`},
		{&s.Workloads, `SELECT count(*) FROM workloads`},
		{&s.Records, `SELECT count(*) FROM records`},
		{&s.Models, `SELECT count(*) FROM models`},
		{&s.TuningRuns, `SELECT count(*) FROM tuning_runs`},
		{&s.BenchResults, `SELECT count(*) FROM bench_results`},
	} {
		if err := db.sql.QueryRowContext(ctx, c.q).Scan(c.dst); err != nil {
			return fail(err)
		}
	}
	err = eachRow(ctx, db.sql, `SELECT status, codegen_version, count(*) FROM records GROUP BY status, codegen_version`, nil,
		func(rows *sql.Rows) error {
			var st string
			var cv, n int
			if err := rows.Scan(&st, &cv, &n); err != nil {
				return err
			}
			s.ByStatus[Status(st)] += n
			s.ByCodegen[cv] += n
			return nil
		})
	if err != nil {
		return fail(err)
	}
	err = eachRow(ctx, db.sql, `SELECT d.hash, d.kind, d.compat, count(r.id), count(r.id) FILTER (WHERE r.status = 'ok')
		FROM devices d LEFT JOIN records r ON r.device_id = d.id GROUP BY d.id ORDER BY d.kind, d.compat, d.hash`, nil,
		func(rows *sql.Rows) error {
			var d DeviceStats
			var kind string
			if err := rows.Scan(&d.Hash, &kind, &d.Compat, &d.Records, &d.OK); err != nil {
				return err
			}
			d.Kind = Kind(kind)
			s.PerDevice = append(s.PerDevice, d)
			return nil
		})
	if err != nil {
		return fail(err)
	}
	if db.path != "" {
		for _, suffix := range []string{"", "-wal"} {
			if st, err := os.Stat(db.path + suffix); err == nil {
				s.SizeBytes += st.Size()
			}
		}
	}
	return s, nil
}

func eachRow(ctx context.Context, q querier, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// VerifyReport lists what Verify found wrong; empty means healthy.
type VerifyReport struct {
	Problems []string `json:"problems"`
	// Truncated is how many further problems were found but not listed.
	Truncated int `json:"truncated,omitempty"`
	Records   int `json:"records_checked"`
}

// OK reports whether no problem was found.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

const maxProblems = 100

func (r *VerifyReport) add(format string, args ...any) {
	if len(r.Problems) >= maxProblems {
		r.Truncated++
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Verify runs SQLite's integrity and foreign-key checks and llmir's own:
// the schema marks, that hashes are the SHA-256 of the JSON they name, that
// every record's digest matches its content, and that ok records carry
// samples consistent with their summary. Corruption is reported as a
// problem, not an error; the error is for a check that could not run.
func (db *DB) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	err := eachRow(ctx, db.sql, `PRAGMA integrity_check`, nil, func(rows *sql.Rows) error {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			return err
		}
		if msg != "ok" {
			rep.add("sqlite integrity_check: %s", msg)
		}
		return nil
	})
	if err != nil {
		// A badly damaged file fails the check itself; that is a finding.
		if !errors.Is(classify(err), ErrCorrupt) && !errors.Is(classify(err), ErrNotDatabase) {
			return rep, fmt.Errorf("verify: integrity_check: %w", classify(err))
		}
		rep.add("sqlite integrity_check: %v", err)
		return rep, nil
	}
	err = eachRow(ctx, db.sql, `PRAGMA foreign_key_check`, nil, func(rows *sql.Rows) error {
		var table, parent string
		var rowid sql.NullInt64
		var fk int
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			return err
		}
		rep.add("foreign key: %s row %d refers to a missing %s row", table, rowid.Int64, parent)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("verify: foreign_key_check: %w", classify(err))
	}
	if !rep.OK() {
		// The llmir checks read every row; on a damaged file they would
		// only repeat SQLite's findings.
		return rep, nil
	}
	if err := db.verifyLLMIR(ctx, &rep); err != nil {
		if errors.Is(classify(err), ErrCorrupt) {
			rep.add("reading rows: %v", err)
			return rep, nil
		}
		return rep, fmt.Errorf("verify: %w", classify(err))
	}
	return rep, nil
}

func (db *DB) verifyLLMIR(ctx context.Context, rep *VerifyReport) error {
	var appID, userVersion int64
	if err := db.sql.QueryRowContext(ctx, `PRAGMA application_id`).Scan(&appID); err != nil {
		return err
	}
	if appID != ApplicationID {
		rep.add("application_id is %#x, want %#x", uint32(appID), ApplicationID)
	}
	if err := db.sql.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&userVersion); err != nil {
		return err
	}
	if int(userVersion) != SchemaVersion() {
		rep.add("schema version %d, this llmir writes %d", userVersion, SchemaVersion())
	}
	var applied []string
	err := eachRow(ctx, db.sql, `SELECT version, name FROM schema_migrations ORDER BY version`, nil, func(rows *sql.Rows) error {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			return err
		}
		applied = append(applied, fmt.Sprintf("%d:%s", v, name))
		return nil
	})
	if err != nil {
		return err
	}
	var want []string
	for _, m := range migrations[:min(int(userVersion), len(migrations))] {
		want = append(want, fmt.Sprintf("%d:%s", m.version, m.name))
	}
	if !slices.Equal(applied, want) {
		rep.add("schema_migrations holds [%s], want [%s]", strings.Join(applied, " "), strings.Join(want, " "))
	}
	err = eachRow(ctx, db.sql, `SELECT hash, fingerprint FROM devices`, nil, func(rows *sql.Rows) error {
		var hash, fp string
		if err := rows.Scan(&hash, &fp); err != nil {
			return err
		}
		if HashJSON([]byte(fp)) != hash {
			rep.add("device %.12s: hash is not the SHA-256 of its fingerprint", hash)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = eachRow(ctx, db.sql, `SELECT key, json FROM workloads`, nil, func(rows *sql.Rows) error {
		var key, js string
		if err := rows.Scan(&key, &js); err != nil {
			return err
		}
		if HashJSON([]byte(js)) != key {
			rep.add("workload %.12s: key is not the SHA-256 of its JSON", key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return eachRow(ctx, db.sql, `SELECT `+recordColumns+`, r.id, r.digest
		FROM records r JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id`, nil,
		func(rows *sql.Rows) error {
			var id int64
			var digest []byte
			r, err := scanRecord(rows, &id, &digest)
			if err != nil {
				return err
			}
			rep.Records++
			if d := r.Digest(); !bytes.Equal(d[:], digest) {
				rep.add("record %d: digest does not match its content", id)
			}
			checkSamples(rep, id, r)
			return nil
		})
}

func checkSamples(rep *VerifyReport, id int64, r Record) {
	for i, v := range r.Samples {
		if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			rep.add("record %d: sample %d is %v", id, i, v)
			return
		}
	}
	if r.Status != StatusOK {
		return
	}
	if len(r.Samples) == 0 {
		rep.add("record %d: status ok without samples", id)
		return
	}
	lo, hi := slices.Min(r.Samples), slices.Max(r.Samples)
	if r.Min != lo {
		rep.add("record %d: min %v, but the smallest sample is %v", id, r.Min, lo)
	}
	if r.Median < lo || r.Median > hi {
		rep.add("record %d: median %v outside the samples' range [%v, %v]", id, r.Median, lo, hi)
	}
	if r.IQR < 0 || r.IQR > hi-lo {
		rep.add("record %d: IQR %v outside [0, %v]", id, r.IQR, hi-lo)
	}
}

// PruneFilter selects records to delete; the conditions that are set must
// all hold. An empty filter selects nothing: Prune never deletes implicitly.
type PruneFilter struct {
	CodegenVersionBelow int       // codegen_version < this
	Statuses            []Status  // status is one of these
	Before              time.Time // created before this
	DeviceHash          string    // measured on this device
	WorkloadKey         string    // of this workload
}

func (f PruneFilter) empty() bool {
	return f.CodegenVersionBelow == 0 && len(f.Statuses) == 0 && f.Before.IsZero() && f.DeviceHash == "" && f.WorkloadKey == ""
}

// ErrEmptyFilter is returned by Prune for a filter that selects nothing.
var ErrEmptyFilter = errors.New("prune: no selection given (refusing to delete every record)")

// Prune deletes the records f selects and returns how many; with dryRun it
// only counts them. Devices, workloads and models are never deleted.
func (db *DB) Prune(ctx context.Context, f PruneFilter, dryRun bool) (int64, error) {
	if f.empty() {
		return 0, ErrEmptyFilter
	}
	var conds []string
	var args []any
	if f.CodegenVersionBelow != 0 {
		conds, args = append(conds, `codegen_version < ?`), append(args, f.CodegenVersionBelow)
	}
	if len(f.Statuses) > 0 {
		ph := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			if _, err := ParseStatus(string(s)); err != nil {
				return 0, fmt.Errorf("prune: %w", err)
			}
			ph[i] = "?"
			args = append(args, string(s))
		}
		conds = append(conds, `status IN (`+strings.Join(ph, ", ")+`)`)
	}
	if !f.Before.IsZero() {
		conds, args = append(conds, `created_at < ?`), append(args, f.Before.UnixNano())
	}
	if f.DeviceHash != "" {
		conds, args = append(conds, `device_id = (SELECT id FROM devices WHERE hash = ?)`), append(args, f.DeviceHash)
	}
	if f.WorkloadKey != "" {
		conds, args = append(conds, `workload_id = (SELECT id FROM workloads WHERE key = ?)`), append(args, f.WorkloadKey)
	}
	where := strings.Join(conds, " AND ")
	var n int64
	if dryRun {
		if err := db.sql.QueryRowContext(ctx, `SELECT count(*) FROM records WHERE `+where, args...).Scan(&n); err != nil {
			return 0, fmt.Errorf("prune (dry run): %w", classify(err))
		}
		return n, nil
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM records WHERE `+where, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	return n, nil
}
