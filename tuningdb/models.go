package tuningdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Model is a serialized cost model trained for one device. The costmodel
// package owns Format and Data; tuningdb only keeps them.
type Model struct {
	DeviceHash     string    `json:"device"`
	Name           string    `json:"name"`
	CodegenVersion int       `json:"codegen_version"`
	Format         string    `json:"format"`
	Data           []byte    `json:"data"`
	TrainedOn      int       `json:"trained_on"` // number of records it was trained on
	CreatedAt      time.Time `json:"created_at"`
	LLMIRVersion   string    `json:"llmir_version"`
}

const modelColumns = `d.hash, m.name, m.codegen_version, m.format, m.data, m.trained_on, m.created_at, m.llmir_version`

func scanModel(s scanner) (Model, error) {
	var m Model
	var created int64
	if err := s.Scan(&m.DeviceHash, &m.Name, &m.CodegenVersion, &m.Format, &m.Data, &m.TrainedOn, &created, &m.LLMIRVersion); err != nil {
		return Model{}, err
	}
	m.CreatedAt = time.Unix(0, created).UTC()
	return m, nil
}

// PutModel stores a model, replacing the one of the same device, name and
// codegen version.
func (db *DB) PutModel(ctx context.Context, m Model) error {
	if m.CreatedAt.IsZero() {
		m.CreatedAt = db.opts.Now()
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		_, err := db.putModelTx(ctx, tx, m, true)
		return err
	})
	if err != nil {
		return fmt.Errorf("put model %s for device %.12s: %w", m.Name, m.DeviceHash, err)
	}
	return nil
}

// putModelTx stores m; unless always, an existing model is replaced only by
// a newer one (the rule that makes import and merge keep the latest).
func (db *DB) putModelTx(ctx context.Context, tx *sql.Tx, m Model, always bool) (bool, error) {
	if m.Name == "" || m.Format == "" {
		return false, fmt.Errorf("model %q: name and format are required", m.Name)
	}
	if err := checkTime(m.CreatedAt); err != nil {
		return false, fmt.Errorf("model %s: %w", m.Name, err)
	}
	var did int64
	err := tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE hash = ?`, m.DeviceHash).Scan(&did)
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("model %s: %w %.12s", m.Name, ErrUnknownDevice, m.DeviceHash)
	}
	if err != nil {
		return false, err
	}
	cond := ""
	if !always {
		cond = ` WHERE excluded.created_at > models.created_at`
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO models (device_id, name, codegen_version, format, data, trained_on, created_at, llmir_version)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (device_id, name, codegen_version) DO UPDATE SET format = excluded.format, data = excluded.data,
			trained_on = excluded.trained_on, created_at = excluded.created_at, llmir_version = excluded.llmir_version`+cond,
		did, m.Name, m.CodegenVersion, m.Format, nonNilBytes(m.Data), m.TrainedOn, m.CreatedAt.UnixNano(), m.LLMIRVersion)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Model returns the stored model of a device by name and codegen version;
// ErrNotFound if there is none.
func (db *DB) Model(ctx context.Context, deviceHash, name string, codegenVersion int) (Model, error) {
	row := db.sql.QueryRowContext(ctx, `SELECT `+modelColumns+` FROM models m JOIN devices d ON d.id = m.device_id
		WHERE d.hash = ? AND m.name = ? AND m.codegen_version = ?`, deviceHash, name, codegenVersion)
	m, err := scanModel(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Model{}, fmt.Errorf("model %s for device %.12s, codegen version %d: %w", name, deviceHash, codegenVersion, ErrNotFound)
	}
	if err != nil {
		return Model{}, fmt.Errorf("model %s for device %.12s: %w", name, deviceHash, classify(err))
	}
	return m, nil
}

// TuningRun is one `llmir tune` invocation.
type TuningRun struct {
	ID            int64
	DeviceHash    string // optional
	StartedAt     time.Time
	EndedAt       time.Time // zero while running (or if it was killed)
	BudgetTrials  int
	BudgetSeconds float64
	Command       string
	Results       json.RawMessage // the tuner's summary, any JSON object
	LLMIRVersion  string
}

// StartRun records the start of a tuning run and returns its id, which the
// run's records carry in Record.RunID.
func (db *DB) StartRun(ctx context.Context, r TuningRun) (int64, error) {
	if r.StartedAt.IsZero() {
		r.StartedAt = db.opts.Now()
	}
	if r.LLMIRVersion == "" {
		r.LLMIRVersion = db.opts.LLMIRVersion
	}
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		var dev sql.NullInt64
		if r.DeviceHash != "" {
			if err := tx.QueryRowContext(ctx, `SELECT id FROM devices WHERE hash = ?`, r.DeviceHash).Scan(&dev); err != nil {
				if errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("%w %.12s", ErrUnknownDevice, r.DeviceHash)
				}
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO tuning_runs (device_id, started_at, budget_trials, budget_seconds, command, llmir_version)
			VALUES (?, ?, ?, ?, ?, ?)`, dev, r.StartedAt.UnixNano(), r.BudgetTrials, r.BudgetSeconds, r.Command, r.LLMIRVersion)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("start tuning run: %w", err)
	}
	return id, nil
}

// FinishRun records the end of a tuning run and its results (a JSON object).
func (db *DB) FinishRun(ctx context.Context, id int64, results json.RawMessage) error {
	if len(results) == 0 {
		results = json.RawMessage("{}")
	}
	if !json.Valid(results) {
		return fmt.Errorf("finish tuning run %d: results are not valid JSON", id)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE tuning_runs SET ended_at = ?, results = ? WHERE id = ?`,
			db.opts.Now().UnixNano(), string(results), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("finish tuning run %d: %w", id, err)
	}
	return nil
}

// Run returns a tuning run by id.
func (db *DB) Run(ctx context.Context, id int64) (TuningRun, error) {
	var (
		r       TuningRun
		dev     sql.NullString
		started int64
		ended   sql.NullInt64
		results string
	)
	err := db.sql.QueryRowContext(ctx, `SELECT t.id, d.hash, t.started_at, t.ended_at, t.budget_trials, t.budget_seconds,
		t.command, t.results, t.llmir_version FROM tuning_runs t LEFT JOIN devices d ON d.id = t.device_id WHERE t.id = ?`, id).
		Scan(&r.ID, &dev, &started, &ended, &r.BudgetTrials, &r.BudgetSeconds, &r.Command, &results, &r.LLMIRVersion)
	if errors.Is(err, sql.ErrNoRows) {
		return TuningRun{}, fmt.Errorf("tuning run %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return TuningRun{}, fmt.Errorf("tuning run %d: %w", id, classify(err))
	}
	r.DeviceHash = dev.String
	r.StartedAt = time.Unix(0, started).UTC()
	if ended.Valid {
		r.EndedAt = time.Unix(0, ended.Int64).UTC()
	}
	r.Results = json.RawMessage(results)
	return r, nil
}

// BenchResult is one number of a benchmark suite, kept for dashboards and
// regression detection.
type BenchResult struct {
	Suite        string          `json:"suite"`
	Name         string          `json:"name"` // e.g. "Linear/M=1,N=4096,K=4096/f32"
	DeviceHash   string          `json:"device,omitempty"`
	Metric       string          `json:"metric"` // e.g. "GB/s", "median_s"
	Value        float64         `json:"value"`
	Unit         string          `json:"unit,omitempty"`
	Extra        json.RawMessage `json:"extra,omitempty"`
	CreatedAt    time.Time       `json:"created_at"`
	LLMIRVersion string          `json:"llmir_version"`
}

// AddBenchResults stores benchmark results in one transaction.
func (db *DB) AddBenchResults(ctx context.Context, rs []BenchResult) error {
	err := db.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO bench_results (suite, name, device_id, metric, value, unit, extra, created_at, llmir_version)
			VALUES (?, ?, (SELECT id FROM devices WHERE hash = ?), ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range rs {
			if r.CreatedAt.IsZero() {
				r.CreatedAt = db.opts.Now()
			}
			if r.LLMIRVersion == "" {
				r.LLMIRVersion = db.opts.LLMIRVersion
			}
			extra := r.Extra
			if len(extra) == 0 {
				extra = json.RawMessage("{}")
			}
			if !json.Valid(extra) {
				return fmt.Errorf("result %d (%s/%s): extra is not valid JSON", i, r.Suite, r.Name)
			}
			if r.DeviceHash != "" {
				var one int
				if err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE hash = ?`, r.DeviceHash).Scan(&one); err != nil {
					return fmt.Errorf("result %d (%s/%s): %w %.12s", i, r.Suite, r.Name, ErrUnknownDevice, r.DeviceHash)
				}
			}
			if _, err := stmt.ExecContext(ctx, r.Suite, r.Name, r.DeviceHash, r.Metric, r.Value, r.Unit, string(extra),
				r.CreatedAt.UnixNano(), r.LLMIRVersion); err != nil {
				return fmt.Errorf("result %d (%s/%s): %w", i, r.Suite, r.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add %d benchmark results: %w", len(rs), err)
	}
	return nil
}

// BenchResults returns the results of one suite (and, if name is not empty,
// one benchmark), oldest first: a time series per (name, metric).
func (db *DB) BenchResults(ctx context.Context, suite, name string) ([]BenchResult, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT b.suite, b.name, coalesce(d.hash, ''), b.metric, b.value, b.unit, b.extra,
		b.created_at, b.llmir_version FROM bench_results b LEFT JOIN devices d ON d.id = b.device_id
		WHERE b.suite = ? AND (? = '' OR b.name = ?) ORDER BY b.name, b.metric, b.created_at, b.id`, suite, name, name)
	if err != nil {
		return nil, fmt.Errorf("benchmark results of %s: %w", suite, classify(err))
	}
	defer rows.Close()
	var out []BenchResult
	for rows.Next() {
		var (
			r       BenchResult
			extra   string
			created int64
		)
		if err := rows.Scan(&r.Suite, &r.Name, &r.DeviceHash, &r.Metric, &r.Value, &r.Unit, &extra, &created, &r.LLMIRVersion); err != nil {
			return nil, err
		}
		r.Extra = json.RawMessage(extra)
		r.CreatedAt = time.Unix(0, created).UTC()
		out = append(out, r)
	}
	return out, classify(rows.Err())
}
