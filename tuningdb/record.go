package tuningdb

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"
)

// Batch is what one tuning round writes: the devices and workloads its
// records refer to (stored if new) and the records themselves.
type Batch struct {
	Devices   []Device
	Workloads []Workload
	Records   []Record
}

// BatchResult counts what a batch changed.
type BatchResult struct {
	Inserted   int // new records
	Duplicates int // records already stored (same Digest), skipped
}

// RecordBatch stores a batch in one transaction: either all of it is
// committed or none. Records may name devices and workloads already in the
// database. A record whose digest is already stored is skipped, so writing
// the same batch twice is harmless.
func (db *DB) RecordBatch(ctx context.Context, b Batch) (BatchResult, error) {
	var res BatchResult
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = db.recordBatchTx(ctx, tx, b)
		return err
	})
	if err != nil {
		return BatchResult{}, fmt.Errorf("record batch of %d records: %w", len(b.Records), err)
	}
	return res, nil
}

// batchWriter holds one transaction's prepared statements and id caches.
type batchWriter struct {
	db                         *DB
	tx                         *sql.Tx
	devStmt, wlStmt, recStmt   *sql.Stmt
	devID, wlID                *sql.Stmt
	devices, workloads         map[string]int64
	insertedDev, insertedWl    int
	insertedRecs, duplicateRec int
}

func (db *DB) newBatchWriter(ctx context.Context, tx *sql.Tx) (*batchWriter, error) {
	w := &batchWriter{db: db, tx: tx, devices: map[string]int64{}, workloads: map[string]int64{}}
	var err error
	prep := func(s **sql.Stmt, q string) {
		if err == nil {
			*s, err = tx.PrepareContext(ctx, q)
		}
	}
	prep(&w.devStmt, `INSERT INTO devices (hash, kind, compat, fingerprint, roofline, created_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (hash) DO UPDATE SET roofline = excluded.roofline
		WHERE devices.roofline = '{}' AND excluded.roofline <> '{}'`)
	prep(&w.wlStmt, `INSERT INTO workloads (key, family, bucket, op_group, json, created_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING`)
	prep(&w.recStmt, `INSERT INTO records (workload_id, device_id, codegen_version, trace, status, error,
		samples, median, min, iqr, created_at, llmir_version, run_id, digest)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING`)
	prep(&w.devID, `SELECT id FROM devices WHERE hash = ?`)
	prep(&w.wlID, `SELECT id FROM workloads WHERE key = ?`)
	if err != nil {
		w.close()
		return nil, err
	}
	return w, nil
}

func (w *batchWriter) close() {
	for _, s := range []*sql.Stmt{w.devStmt, w.wlStmt, w.recStmt, w.devID, w.wlID} {
		if s != nil {
			s.Close()
		}
	}
}

func (w *batchWriter) putDevice(ctx context.Context, d Device) error {
	if err := d.check(); err != nil {
		return err
	}
	roof, err := json.Marshal(d.Roofline)
	if err != nil {
		return fmt.Errorf("device %.12s: roofline: %w", d.Hash, err)
	}
	res, err := w.devStmt.ExecContext(ctx, d.Hash, string(d.Kind), d.Compat, string(d.Fingerprint), string(roof), w.db.opts.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("device %.12s: %w", d.Hash, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		w.insertedDev++
	}
	return nil
}

func (w *batchWriter) putWorkload(ctx context.Context, wl Workload) error {
	if err := wl.check(); err != nil {
		return err
	}
	res, err := w.wlStmt.ExecContext(ctx, wl.Key, wl.Family, wl.Bucket, wl.Group, string(wl.JSON), w.db.opts.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("workload %.12s: %w", wl.Key, err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		w.insertedWl++
	}
	return nil
}

func (w *batchWriter) id(ctx context.Context, cache map[string]int64, stmt *sql.Stmt, key string, unknown error) (int64, error) {
	if id, ok := cache[key]; ok {
		return id, nil
	}
	var id int64
	err := stmt.QueryRowContext(ctx, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w %.12s", unknown, key)
	}
	if err != nil {
		return 0, err
	}
	cache[key] = id
	return id, nil
}

func (w *batchWriter) putRecord(ctx context.Context, r Record) error {
	if err := r.normalize(); err != nil {
		return err
	}
	wid, err := w.id(ctx, w.workloads, w.wlID, r.WorkloadKey, ErrUnknownWorkload)
	if err != nil {
		return err
	}
	did, err := w.id(ctx, w.devices, w.devID, r.DeviceHash, ErrUnknownDevice)
	if err != nil {
		return err
	}
	samples, err := json.Marshal(nonNil(r.Samples))
	if err != nil {
		return err
	}
	var median, mn, iqr sql.NullFloat64
	if len(r.Samples) > 0 {
		median = sql.NullFloat64{Float64: r.Median, Valid: true}
		mn = sql.NullFloat64{Float64: r.Min, Valid: true}
		iqr = sql.NullFloat64{Float64: r.IQR, Valid: true}
	}
	var run sql.NullInt64
	if r.RunID != 0 {
		run = sql.NullInt64{Int64: r.RunID, Valid: true}
	}
	digest := r.Digest()
	res, err := w.recStmt.ExecContext(ctx, wid, did, r.CodegenVersion, string(compactJSON(r.Trace)), string(r.Status), r.Error,
		string(samples), median, mn, iqr, r.CreatedAt.UnixNano(), r.LLMIRVersion, run, digest[:])
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		w.insertedRecs++
	} else {
		w.duplicateRec++
	}
	return nil
}

func nonNil(s []float64) []float64 {
	if s == nil {
		return []float64{}
	}
	return s
}

func (db *DB) recordBatchTx(ctx context.Context, tx *sql.Tx, b Batch) (BatchResult, error) {
	w, err := db.newBatchWriter(ctx, tx)
	if err != nil {
		return BatchResult{}, err
	}
	defer w.close()
	for _, d := range b.Devices {
		if err := w.putDevice(ctx, d); err != nil {
			return BatchResult{}, err
		}
	}
	for _, wl := range b.Workloads {
		if err := w.putWorkload(ctx, wl); err != nil {
			return BatchResult{}, err
		}
	}
	for i, r := range b.Records {
		if err := w.putRecord(ctx, r); err != nil {
			return BatchResult{}, fmt.Errorf("record %d: %w", i, err)
		}
	}
	return BatchResult{Inserted: w.insertedRecs, Duplicates: w.duplicateRec}, nil
}

// PutDevice stores a device (or fills in its roofline if it was stored
// without one).
func (db *DB) PutDevice(ctx context.Context, d Device) error {
	_, err := db.RecordBatch(ctx, Batch{Devices: []Device{d}})
	return err
}

// PutWorkloads stores workloads that are not stored yet.
func (db *DB) PutWorkloads(ctx context.Context, ws ...Workload) error {
	_, err := db.RecordBatch(ctx, Batch{Workloads: ws})
	return err
}

const recordColumns = `w.key, d.hash, r.codegen_version, r.trace, r.status, r.error, r.samples,
	r.median, r.min, r.iqr, r.created_at, r.llmir_version, r.run_id`

type scanner interface{ Scan(dest ...any) error }

// scanRecord scans recordColumns and then any extra columns into extra.
func scanRecord(s scanner, extra ...any) (Record, error) {
	var (
		r               Record
		trace, samples  string
		status          string
		median, mn, iqr sql.NullFloat64
		created         int64
		run             sql.NullInt64
	)
	err := s.Scan(append([]any{&r.WorkloadKey, &r.DeviceHash, &r.CodegenVersion, &trace, &status, &r.Error, &samples,
		&median, &mn, &iqr, &created, &r.LLMIRVersion, &run}, extra...)...)
	if err != nil {
		return Record{}, err
	}
	r.Trace = json.RawMessage(trace)
	r.Status = Status(status)
	if err := json.Unmarshal([]byte(samples), &r.Samples); err != nil {
		return Record{}, fmt.Errorf("record of workload %.12s: samples: %w", r.WorkloadKey, err)
	}
	if len(r.Samples) == 0 {
		r.Samples = nil
	}
	r.Median, r.Min, r.IQR = median.Float64, mn.Float64, iqr.Float64
	r.CreatedAt = time.Unix(0, created).UTC()
	r.RunID = run.Int64
	return r, nil
}

// BestRecord is the record with the lowest median among the ok records of
// workload on device at codegenVersion; ErrNotFound if there is none.
func (db *DB) BestRecord(ctx context.Context, workloadKey, deviceHash string, codegenVersion int) (Record, error) {
	rs, err := db.TopK(ctx, workloadKey, deviceHash, codegenVersion, 1)
	if err != nil {
		return Record{}, err
	}
	if len(rs) == 0 {
		return Record{}, fmt.Errorf("workload %.12s on device %.12s, codegen version %d: %w", workloadKey, deviceHash, codegenVersion, ErrNotFound)
	}
	return rs[0], nil
}

// TopK is up to k ok records of workload on device at codegenVersion, fastest
// first (ties by age, oldest first).
func (db *DB) TopK(ctx context.Context, workloadKey, deviceHash string, codegenVersion, k int) ([]Record, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+recordColumns+`
		FROM records r JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id
		WHERE w.key = ? AND d.hash = ? AND r.codegen_version = ? AND r.status = 'ok'
		ORDER BY r.median, r.created_at LIMIT ?`, workloadKey, deviceHash, codegenVersion, k)
	if err != nil {
		return nil, fmt.Errorf("top %d of workload %.12s: %w", k, workloadKey, classify(err))
	}
	return collect(rows)
}

func collect(rows *sql.Rows) ([]Record, error) {
	defer rows.Close()
	var rs []Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, classify(rows.Err())
}

// DeviceRecords yields every record (any status) of a device at
// codegenVersion, for training a cost model; failed records matter there
// too. The iteration holds one read snapshot.
func (db *DB) DeviceRecords(ctx context.Context, deviceHash string, codegenVersion int) iter.Seq2[Record, error] {
	return func(yield func(Record, error) bool) {
		rows, err := db.sql.QueryContext(ctx, `SELECT `+recordColumns+`
			FROM records r JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id
			WHERE d.hash = ? AND r.codegen_version = ? ORDER BY r.id`, deviceHash, codegenVersion)
		if err != nil {
			yield(Record{}, fmt.Errorf("records of device %.12s: %w", deviceHash, classify(err)))
			return
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRecord(rows)
			if !yield(r, err) || err != nil {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Record{}, fmt.Errorf("records of device %.12s: %w", deviceHash, classify(err)))
		}
	}
}

// Device returns a stored device; ErrUnknownDevice if it is not stored.
func (db *DB) Device(ctx context.Context, hash string) (Device, error) {
	var (
		d        Device
		kind, fp string
		roof     string
	)
	err := db.sql.QueryRowContext(ctx, `SELECT hash, kind, compat, fingerprint, roofline FROM devices WHERE hash = ?`, hash).
		Scan(&d.Hash, &kind, &d.Compat, &fp, &roof)
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("%w %s", ErrUnknownDevice, hash)
	}
	if err != nil {
		return Device{}, fmt.Errorf("device %.12s: %w", hash, classify(err))
	}
	d.Kind, d.Fingerprint = Kind(kind), json.RawMessage(fp)
	if err := json.Unmarshal([]byte(roof), &d.Roofline); err != nil {
		return Device{}, fmt.Errorf("device %.12s: roofline: %w", hash, err)
	}
	return d, nil
}

// Workload returns a stored workload; ErrUnknownWorkload if it is not stored.
func (db *DB) Workload(ctx context.Context, key string) (Workload, error) {
	var (
		w  Workload
		js string
	)
	err := db.sql.QueryRowContext(ctx, `SELECT key, family, bucket, op_group, json FROM workloads WHERE key = ?`, key).
		Scan(&w.Key, &w.Family, &w.Bucket, &w.Group, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return Workload{}, fmt.Errorf("%w %s", ErrUnknownWorkload, key)
	}
	if err != nil {
		return Workload{}, fmt.Errorf("workload %.12s: %w", key, classify(err))
	}
	w.JSON = json.RawMessage(js)
	return w, nil
}

// MaxCodegenVersion is the newest codegen version with a record of a device
// of the given kind ("cpu", "cuda"; "" any), 0 if none. Each target numbers
// its codegen versions on its own, so a CUDA record's version says nothing
// about CPU records.
func (db *DB) MaxCodegenVersion(ctx context.Context, kind Kind) (int, error) {
	var v sql.NullInt64
	err := db.sql.QueryRowContext(ctx, `SELECT max(r.codegen_version) FROM records r JOIN devices d ON d.id = r.device_id
		WHERE ? = '' OR d.kind = ?`, kind, kind).Scan(&v)
	if err != nil {
		return 0, classify(err)
	}
	return int(v.Int64), nil
}

// DeviceKind is the kind of the device with this hash, "" when the database
// does not know it.
func (db *DB) DeviceKind(ctx context.Context, hash string) (Kind, error) {
	var kind Kind
	err := db.sql.QueryRowContext(ctx, `SELECT kind FROM devices WHERE hash = ?`, hash).Scan(&kind)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", classify(err)
	}
	return kind, nil
}
