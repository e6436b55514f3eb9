package tuningdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"llmir/internal/buildinfo"
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

// RecentRuns returns up to limit tuning runs, newest first (limit ≤ 0: all).
// Dashboards draw their tuning-progress curves from them.
func (db *DB) RecentRuns(ctx context.Context, limit int) ([]TuningRun, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	var out []TuningRun
	err := eachRow(ctx, db.sql, `SELECT t.id, coalesce(d.hash, ''), t.started_at, t.ended_at, t.budget_trials, t.budget_seconds,
		t.command, t.results, t.llmir_version FROM tuning_runs t LEFT JOIN devices d ON d.id = t.device_id
		ORDER BY t.started_at DESC, t.id DESC LIMIT ?`, []any{limit}, func(rows *sql.Rows) error {
		var (
			r       TuningRun
			started int64
			ended   sql.NullInt64
			results string
		)
		if err := rows.Scan(&r.ID, &r.DeviceHash, &started, &ended, &r.BudgetTrials, &r.BudgetSeconds, &r.Command, &results, &r.LLMIRVersion); err != nil {
			return err
		}
		r.StartedAt = time.Unix(0, started).UTC()
		if ended.Valid {
			r.EndedAt = time.Unix(0, ended.Int64).UTC()
		}
		r.Results = json.RawMessage(results)
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("recent tuning runs: %w", classify(err))
	}
	return out, nil
}

// RunTrial is one measurement of a tuning run with the workload it measured.
type RunTrial struct {
	Record
	Group  string // the workload's op group, e.g. "linear"
	Bucket int64  // the workload's shape bucket
}

// RunRecords returns every record of a tuning run in the order they were
// measured (oldest first, failures included): the run's trials.
func (db *DB) RunRecords(ctx context.Context, runID int64) ([]RunTrial, error) {
	var out []RunTrial
	err := eachRow(ctx, db.sql, `SELECT `+recordColumns+`, w.op_group, w.bucket FROM records r
		JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id
		WHERE r.run_id = ? ORDER BY r.created_at, r.id`, []any{runID}, func(rows *sql.Rows) error {
		var t RunTrial
		var err error
		t.Record, err = scanRecord(rows, &t.Group, &t.Bucket)
		if err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("records of tuning run %d: %w", runID, classify(err))
	}
	return out, nil
}

// Better says which direction of a benchmark's value is an improvement.
type Better string

const (
	// BetterAuto (empty) leaves it to the reader to infer from the unit.
	BetterAuto   Better = ""
	BetterLower  Better = "lower"  // times
	BetterHigher Better = "higher" // rates, speedups, fractions
)

// BenchResult is one number of a benchmark suite, kept for dashboards and
// regression detection. One benchmark's series is identified by (Suite,
// Name, Metric) on one device (BenchmarkID).
type BenchResult struct {
	// ID is the row's id in this database (0 before it is stored).
	ID         int64  `json:"id,omitempty"`
	Suite      string `json:"suite"`
	Name       string `json:"name"` // e.g. "Linear/M=1,N=4096,K=4096/f32"
	DeviceHash string `json:"device,omitempty"`
	Metric     string `json:"metric"` // e.g. "GB/s", "median_s"
	// Value is the headline number; when it is 0 and Samples are given,
	// AddBenchResults sets it to their median.
	Value float64 `json:"value"`
	Unit  string  `json:"unit,omitempty"`
	// Samples are all measurements behind Value (seconds for a time,
	// GB/s for a bandwidth, …); Median and IQR summarise them and are
	// computed by AddBenchResults when both are 0.
	Samples []float64 `json:"samples,omitempty"`
	Median  float64   `json:"median,omitempty"`
	IQR     float64   `json:"iqr,omitempty"`
	Better  Better    `json:"better,omitempty"`
	// Baseline names what BaselineRatio compares with (e.g. "openblas");
	// BaselineRatio is oriented so that > 1 means better than the baseline
	// (baseline time / llmir time). 0: does not apply.
	Baseline      string  `json:"baseline,omitempty"`
	BaselineRatio float64 `json:"baseline_ratio,omitempty"`
	// RooflineFraction is the fraction of the device's roofline bound
	// reached (0: does not apply).
	RooflineFraction float64         `json:"roofline_fraction,omitempty"`
	Extra            json.RawMessage `json:"extra,omitempty"`
	CreatedAt        time.Time       `json:"created_at"`
	LLMIRVersion     string          `json:"llmir_version"`
	// GitCommit is the commit the measured binary was built from; when
	// empty, AddBenchResults stamps the running binary's VCS revision
	// (with a "-dirty" suffix for a modified tree), if it has one.
	GitCommit string `json:"git_commit,omitempty"`
}

// BenchmarkID names the benchmark's series across devices: suite/name:metric.
func (r *BenchResult) BenchmarkID() string { return r.Suite + "/" + r.Name + ":" + r.Metric }

// BuildCommit is the commit results are stamped with: $LLMIR_GIT_COMMIT
// when set (builds made with -buildvcs=false record none, so `make
// nightly` passes it), else the VCS revision this binary was built from,
// "-dirty" appended when the tree had changes ("" when neither exists, as
// under go test).
func BuildCommit() string {
	if c := os.Getenv("LLMIR_GIT_COMMIT"); c != "" {
		return c
	}
	return buildinfo.Commit()
}

// normalize validates a result and fills its defaults.
func (r *BenchResult) normalize(now time.Time, version string) error {
	switch {
	case r.Suite == "" || r.Name == "" || r.Metric == "":
		return errors.New("suite, name and metric are required")
	case math.IsNaN(r.Value) || math.IsInf(r.Value, 0):
		return fmt.Errorf("value is %v", r.Value)
	case r.Better != BetterAuto && r.Better != BetterLower && r.Better != BetterHigher:
		return fmt.Errorf("better %q: want lower, higher or empty", r.Better)
	case !finiteNonNeg(r.BaselineRatio) || !finiteNonNeg(r.RooflineFraction):
		return fmt.Errorf("baseline ratio %v, roofline fraction %v: want finite and ≥ 0", r.BaselineRatio, r.RooflineFraction)
	case math.IsNaN(r.Median) || math.IsInf(r.Median, 0) || !finiteNonNeg(r.IQR):
		return fmt.Errorf("median %v, iqr %v: want finite, IQR ≥ 0", r.Median, r.IQR)
	}
	if len(r.Samples) > 0 && r.Median == 0 && r.IQR == 0 {
		s, err := Summarize(r.Samples)
		if err != nil {
			return err
		}
		r.Median, r.IQR = s.Median, s.IQR
	} else if _, err := Summarize(r.Samples); err != nil && !errors.Is(err, ErrNoSamples) {
		return err
	}
	if r.Value == 0 && len(r.Samples) > 0 {
		r.Value = r.Median
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = now
	}
	if err := checkTime(r.CreatedAt); err != nil {
		return err
	}
	if r.LLMIRVersion == "" {
		r.LLMIRVersion = version
	}
	if r.GitCommit == "" {
		r.GitCommit = BuildCommit()
	}
	if len(r.Extra) == 0 {
		r.Extra = json.RawMessage("{}")
	}
	if !json.Valid(r.Extra) {
		return errors.New("extra is not valid JSON")
	}
	return nil
}

// nullZero stores 0 as NULL: "does not apply".
func nullZero(v float64) sql.NullFloat64 { return sql.NullFloat64{Float64: v, Valid: v != 0} }

// AddBenchResults stores benchmark results in one transaction: all or none.
func (db *DB) AddBenchResults(ctx context.Context, rs []BenchResult) error {
	err := db.write(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO bench_results (suite, name, device_id, metric, value, unit, extra,
			created_at, llmir_version, git_commit, samples, median, iqr, better, baseline, baseline_ratio, roofline_fraction)
			VALUES (?, ?, (SELECT id FROM devices WHERE hash = ?), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, r := range rs {
			if err := r.normalize(db.opts.Now(), db.opts.LLMIRVersion); err != nil {
				return fmt.Errorf("result %d (%s/%s %s): %w", i, r.Suite, r.Name, r.Metric, err)
			}
			if r.DeviceHash != "" {
				var one int
				if err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices WHERE hash = ?`, r.DeviceHash).Scan(&one); err != nil {
					return fmt.Errorf("result %d (%s/%s): %w %.12s", i, r.Suite, r.Name, ErrUnknownDevice, r.DeviceHash)
				}
			}
			samples, err := json.Marshal(nonNil(r.Samples))
			if err != nil {
				return fmt.Errorf("result %d (%s/%s): samples: %w", i, r.Suite, r.Name, err)
			}
			if _, err := stmt.ExecContext(ctx, r.Suite, r.Name, r.DeviceHash, r.Metric, r.Value, r.Unit, string(r.Extra),
				r.CreatedAt.UnixNano(), r.LLMIRVersion, r.GitCommit, string(samples), nullZero(r.Median), nullZero(r.IQR),
				string(r.Better), r.Baseline, nullZero(r.BaselineRatio), nullZero(r.RooflineFraction)); err != nil {
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
	rs, err := db.QueryBenchResults(ctx, BenchFilter{Suite: suite, Name: name})
	if err != nil {
		return nil, fmt.Errorf("benchmark results of %s: %w", suite, err)
	}
	return rs, nil
}

// BenchFilter selects benchmark results; empty fields match everything.
type BenchFilter struct {
	Suite, Name, Metric string
	DeviceHash          string
	Since               time.Time // results at or after Since (zero: all)
}

// QueryBenchResults returns the results f selects, ordered by suite, name,
// metric, device and then time (oldest first), so that each series is one
// contiguous run of rows.
func (db *DB) QueryBenchResults(ctx context.Context, f BenchFilter) ([]BenchResult, error) {
	var since int64
	if !f.Since.IsZero() {
		since = f.Since.UnixNano()
	}
	var out []BenchResult
	err := eachRow(ctx, db.sql, `SELECT b.id, b.suite, b.name, coalesce(d.hash, ''), b.metric, b.value, b.unit, b.extra,
		b.created_at, b.llmir_version, b.git_commit, b.samples, b.median, b.iqr, b.better, b.baseline, b.baseline_ratio,
		b.roofline_fraction FROM bench_results b LEFT JOIN devices d ON d.id = b.device_id
		WHERE (?1 = '' OR b.suite = ?1) AND (?2 = '' OR b.name = ?2) AND (?3 = '' OR b.metric = ?3)
			AND (?4 = '' OR d.hash = ?4) AND b.created_at >= ?5
		ORDER BY b.suite, b.name, b.metric, coalesce(d.hash, ''), b.created_at, b.id`,
		[]any{f.Suite, f.Name, f.Metric, f.DeviceHash, since}, func(rows *sql.Rows) error {
			var (
				r                           BenchResult
				extra, samples, better      string
				created                     int64
				median, iqr, ratio, roofFra sql.NullFloat64
			)
			if err := rows.Scan(&r.ID, &r.Suite, &r.Name, &r.DeviceHash, &r.Metric, &r.Value, &r.Unit, &extra, &created,
				&r.LLMIRVersion, &r.GitCommit, &samples, &median, &iqr, &better, &r.Baseline, &ratio, &roofFra); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(samples), &r.Samples); err != nil {
				return fmt.Errorf("benchmark result %d: samples: %w", r.ID, err)
			}
			if len(r.Samples) == 0 {
				r.Samples = nil
			}
			r.Extra = json.RawMessage(extra)
			r.CreatedAt = time.Unix(0, created).UTC()
			r.Median, r.IQR, r.BaselineRatio, r.RooflineFraction = median.Float64, iqr.Float64, ratio.Float64, roofFra.Float64
			r.Better = Better(better)
			out = append(out, r)
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("query benchmark results: %w", classify(err))
	}
	return out, nil
}

// BenchDevices returns the devices that have benchmark results, with their
// fingerprints and rooflines, so that a dashboard can name them.
func (db *DB) BenchDevices(ctx context.Context) ([]Device, error) {
	var out []Device
	err := eachRow(ctx, db.sql, `SELECT hash, kind, compat, fingerprint, roofline FROM devices
		WHERE id IN (SELECT device_id FROM bench_results) ORDER BY kind, compat, hash`, nil, func(rows *sql.Rows) error {
		var (
			d             Device
			kind, fp, roo string
		)
		if err := rows.Scan(&d.Hash, &kind, &d.Compat, &fp, &roo); err != nil {
			return err
		}
		d.Kind, d.Fingerprint = Kind(kind), json.RawMessage(fp)
		if err := json.Unmarshal([]byte(roo), &d.Roofline); err != nil {
			return fmt.Errorf("device %.12s: roofline: %w", d.Hash, err)
		}
		out = append(out, d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("devices of benchmark results: %w", classify(err))
	}
	return out, nil
}
