package tuningdb

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Format and FormatVersion name the export format: JSON Lines whose first
// line is a Header and every other line one Line.
const (
	Format        = "llmir-tuningdb"
	FormatVersion = 1
)

// MaxLineBytes bounds one line of an import (a trace is rarely above a few KiB).
const MaxLineBytes = 64 << 20

// Header is the first line of an export. The counts let an import notice a
// truncated file. It holds no timestamp or host name, so exporting equal
// contents gives byte-equal files on any machine.
type Header struct {
	Format    string `json:"format"`
	Version   int    `json:"version"`
	Devices   int    `json:"devices"`
	Workloads int    `json:"workloads"`
	Records   int    `json:"records"`
	Models    int    `json:"models"`
}

// Line is one object of an export after the header; Type says which field
// is set.
type Line struct {
	Type     string    `json:"type"` // "device", "workload", "record" or "model"
	Device   *Device   `json:"device,omitempty"`
	Workload *Workload `json:"workload,omitempty"`
	Record   *Record   `json:"record,omitempty"`
	Model    *Model    `json:"model,omitempty"`
}

// ExportOptions select what Export writes.
type ExportOptions struct {
	// BestK > 0 keeps only the BestK fastest ok records per (workload,
	// device, codegen version), and only the devices and workloads they
	// use, without cost models: what lookups need, as for the precompiled
	// database.
	BestK int
	// CodegenVersion > 0 keeps only records of that codegen version.
	CodegenVersion int
	// MaxSamples > 0 writes at most that many samples per record: evenly
	// spaced order statistics of its samples (the smallest and largest
	// included), while median, min and IQR stay as measured. A GPU record
	// of a microsecond kernel holds thousands of samples, which lookups
	// never read; the precompiled database is built into the binary.
	MaxSamples int
}

// Export writes the database as JSON Lines in a stable order (devices by
// hash, workloads by key, records by workload, device, codegen version,
// time and digest, models by device and name), from one read snapshot.
func (db *DB) Export(ctx context.Context, w io.Writer, opts ExportOptions) (Header, error) {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return Header{}, fmt.Errorf("export: %w", classify(err))
	}
	defer conn.Close()
	// A deferred transaction is a read snapshot that blocks no writer.
	if _, err := conn.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
		return Header{}, fmt.Errorf("export: %w", classify(err))
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
	h, err := exportConn(ctx, conn, w, opts)
	if err != nil {
		return Header{}, fmt.Errorf("export: %w", classify(err))
	}
	return h, nil
}

func exportConn(ctx context.Context, conn *sql.Conn, w io.Writer, opts ExportOptions) (Header, error) {
	// The chosen records go into a temporary table first, so
	// that counts, devices and workloads all follow from the same choice.
	if _, err := conn.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS export_keep (id INTEGER PRIMARY KEY)`); err != nil {
		return Header{}, err
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS temp.export_keep`)
	if _, err := conn.ExecContext(ctx, `DELETE FROM temp.export_keep`); err != nil {
		return Header{}, err
	}
	sel := `INSERT INTO temp.export_keep (id) SELECT id FROM records WHERE (? = 0 OR codegen_version = ?)`
	if opts.BestK > 0 {
		sel = `INSERT INTO temp.export_keep (id) SELECT id FROM (
			SELECT id, row_number() OVER (PARTITION BY workload_id, device_id, codegen_version
				ORDER BY median, created_at, digest) AS n
			FROM records WHERE status = 'ok' AND (? = 0 OR codegen_version = ?)) WHERE n <= ` + fmt.Sprint(opts.BestK)
	}
	if _, err := conn.ExecContext(ctx, sel, opts.CodegenVersion, opts.CodegenVersion); err != nil {
		return Header{}, err
	}
	devWhere, wlWhere, withModels := "", "", opts.BestK == 0
	if opts.BestK > 0 || opts.CodegenVersion > 0 {
		devWhere = ` WHERE id IN (SELECT device_id FROM records WHERE id IN (SELECT id FROM temp.export_keep))`
		wlWhere = ` WHERE id IN (SELECT workload_id FROM records WHERE id IN (SELECT id FROM temp.export_keep))`
	}
	const modelWhere = ` WHERE (? = 0 OR m.codegen_version = ?)`

	var h Header
	h.Format, h.Version = Format, FormatVersion
	counts := []struct {
		dst *int
		q   string
	}{
		{&h.Devices, `SELECT count(*) FROM devices` + devWhere},
		{&h.Workloads, `SELECT count(*) FROM workloads` + wlWhere},
		{&h.Records, `SELECT count(*) FROM temp.export_keep`},
	}
	for _, c := range counts {
		if err := conn.QueryRowContext(ctx, c.q).Scan(c.dst); err != nil {
			return Header{}, err
		}
	}
	if withModels {
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM models m`+modelWhere, opts.CodegenVersion, opts.CodegenVersion).Scan(&h.Models); err != nil {
			return Header{}, err
		}
	}

	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(h); err != nil {
		return Header{}, err
	}
	each := func(q string, args []any, line func(scanner) (Line, error)) error {
		rows, err := conn.QueryContext(ctx, q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			l, err := line(rows)
			if err != nil {
				return err
			}
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	err := each(`SELECT hash, kind, compat, fingerprint, roofline FROM devices`+devWhere+` ORDER BY hash`, nil,
		func(s scanner) (Line, error) {
			var d Device
			var kind, fp, roof string
			if err := s.Scan(&d.Hash, &kind, &d.Compat, &fp, &roof); err != nil {
				return Line{}, err
			}
			d.Kind, d.Fingerprint = Kind(kind), json.RawMessage(fp)
			if err := json.Unmarshal([]byte(roof), &d.Roofline); err != nil {
				return Line{}, fmt.Errorf("device %.12s: roofline: %w", d.Hash, err)
			}
			return Line{Type: "device", Device: &d}, nil
		})
	if err == nil {
		err = each(`SELECT key, family, bucket, op_group, json FROM workloads`+wlWhere+` ORDER BY key`, nil,
			func(s scanner) (Line, error) {
				var wl Workload
				var js string
				if err := s.Scan(&wl.Key, &wl.Family, &wl.Bucket, &wl.Group, &js); err != nil {
					return Line{}, err
				}
				wl.JSON = json.RawMessage(js)
				return Line{Type: "workload", Workload: &wl}, nil
			})
	}
	if err == nil {
		err = each(`SELECT `+recordColumns+` FROM temp.export_keep k JOIN records r ON r.id = k.id
			JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id
			ORDER BY w.key, d.hash, r.codegen_version, r.created_at, r.digest`, nil,
			func(s scanner) (Line, error) {
				r, err := scanRecord(s)
				r.RunID = 0
				r.Samples = thinSamples(r.Samples, opts.MaxSamples)
				return Line{Type: "record", Record: &r}, err
			})
	}
	if err == nil && withModels {
		err = each(`SELECT `+modelColumns+` FROM models m JOIN devices d ON d.id = m.device_id`+modelWhere+
			` ORDER BY d.hash, m.name, m.codegen_version`, []any{opts.CodegenVersion, opts.CodegenVersion},
			func(s scanner) (Line, error) {
				m, err := scanModel(s)
				return Line{Type: "model", Model: &m}, err
			})
	}
	if err != nil {
		return Header{}, err
	}
	return h, bw.Flush()
}

// ImportResult counts what an import added.
type ImportResult struct {
	Devices, Workloads int // new ones
	Records            int // new records
	Duplicates         int // records already stored, skipped
	Models             int // models added or replaced by newer ones
}

// LineError is an import error that names the line.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ErrFormat marks input that is not a valid export.
var ErrFormat = errors.New("not a valid llmir-tuningdb export")

// Import reads an export and adds what the database lacks, in one
// transaction: a malformed line (reported as a *LineError naming it)
// imports nothing. Records already stored are counted as duplicates.
func (db *DB) Import(ctx context.Context, r io.Reader) (ImportResult, error) {
	var (
		res     ImportResult
		entered bool
	)
	err := db.write(ctx, func(tx *sql.Tx) error {
		// The reader cannot be rewound, so a retried transaction could not
		// replay it. SQLite does not report busy inside an immediate
		// transaction, so this guards an invariant rather than a case.
		if entered {
			return errors.New("database lock lost during import; nothing was imported, run it again")
		}
		entered = true
		var err error
		res, err = db.importTx(ctx, tx, r)
		return err
	})
	if err != nil {
		return ImportResult{}, fmt.Errorf("import: %w", err)
	}
	return res, nil
}

func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value on the line")
	}
	return nil
}

func (db *DB) importTx(ctx context.Context, tx *sql.Tx, r io.Reader) (ImportResult, error) {
	w, err := db.newBatchWriter(ctx, tx)
	if err != nil {
		return ImportResult{}, err
	}
	defer w.close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), MaxLineBytes)
	var (
		h    Header
		seen Header
		n    int
		res  ImportResult
	)
	for sc.Scan() {
		n++
		if err := ctx.Err(); err != nil {
			return ImportResult{}, err
		}
		b := sc.Bytes()
		if len(bytes.TrimSpace(b)) == 0 {
			return ImportResult{}, &LineError{n, fmt.Errorf("%w: empty line", ErrFormat)}
		}
		if n == 1 {
			if err := decodeStrict(b, &h); err != nil {
				return ImportResult{}, &LineError{n, fmt.Errorf("%w: header: %v", ErrFormat, err)}
			}
			if h.Format != Format {
				return ImportResult{}, &LineError{n, fmt.Errorf("%w: header format %q, want %q", ErrFormat, h.Format, Format)}
			}
			if h.Version > FormatVersion || h.Version < 1 {
				return ImportResult{}, &LineError{n, fmt.Errorf("%w: format version %d, this llmir reads version %d", ErrFormat, h.Version, FormatVersion)}
			}
			if h.Devices < 0 || h.Workloads < 0 || h.Records < 0 || h.Models < 0 {
				return ImportResult{}, &LineError{n, fmt.Errorf("%w: negative count in header", ErrFormat)}
			}
			continue
		}
		var l Line
		if err := decodeStrict(b, &l); err != nil {
			return ImportResult{}, &LineError{n, fmt.Errorf("%w: %v", ErrFormat, err)}
		}
		if err := w.importLine(ctx, l, &seen, &res); err != nil {
			return ImportResult{}, &LineError{n, err}
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return ImportResult{}, &LineError{n + 1, fmt.Errorf("%w: line longer than %d bytes", ErrFormat, MaxLineBytes)}
		}
		return ImportResult{}, fmt.Errorf("read line %d: %w", n+1, err)
	}
	if n == 0 {
		return ImportResult{}, fmt.Errorf("%w: empty input (no header line)", ErrFormat)
	}
	seen.Format, seen.Version = h.Format, h.Version
	if seen != h {
		return ImportResult{}, fmt.Errorf("%w: header promises %d devices, %d workloads, %d records, %d models; the file holds %d, %d, %d, %d (truncated?)",
			ErrFormat, h.Devices, h.Workloads, h.Records, h.Models, seen.Devices, seen.Workloads, seen.Records, seen.Models)
	}
	res.Devices, res.Workloads = w.insertedDev, w.insertedWl
	res.Records, res.Duplicates = w.insertedRecs, w.duplicateRec
	return res, nil
}

func (w *batchWriter) importLine(ctx context.Context, l Line, seen *Header, res *ImportResult) error {
	set := 0
	for _, p := range []bool{l.Device != nil, l.Workload != nil, l.Record != nil, l.Model != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%w: want exactly one of device, workload, record, model; got %d", ErrFormat, set)
	}
	switch {
	case l.Type == "device" && l.Device != nil:
		seen.Devices++
		return w.putDevice(ctx, *l.Device)
	case l.Type == "workload" && l.Workload != nil:
		seen.Workloads++
		return w.putWorkload(ctx, *l.Workload)
	case l.Type == "record" && l.Record != nil:
		seen.Records++
		return w.putRecord(ctx, *l.Record)
	case l.Type == "model" && l.Model != nil:
		seen.Models++
		added, err := w.db.putModelTx(ctx, w.tx, *l.Model, false)
		if added {
			res.Models++
		}
		return err
	}
	return fmt.Errorf("%w: type %q does not match its object", ErrFormat, l.Type)
}

var errImportStopped = errors.New("import stopped")

// Merge adds every record, device, workload and model of other that db
// lacks, in one transaction of db.
func (db *DB) Merge(ctx context.Context, other *DB) (ImportResult, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := other.Export(ctx, pw, ExportOptions{})
		pw.CloseWithError(err)
		done <- err
	}()
	res, err := db.Import(ctx, pr)
	pr.CloseWithError(errImportStopped)
	// When the export failed first, its error is the cause and the
	// import's ("read line N") only the echo.
	if exportErr := <-done; err != nil && exportErr != nil && !errors.Is(exportErr, errImportStopped) {
		err = exportErr
	}
	if err != nil {
		return ImportResult{}, fmt.Errorf("merge %s: %w", other.path, err)
	}
	return res, nil
}

// thinSamples returns n evenly spaced order statistics of xs (all of xs,
// in their order, when n ≤ 0 or xs has no more than n).
func thinSamples(xs []float64, n int) []float64 {
	if n <= 0 || len(xs) <= n {
		return xs
	}
	sorted := slices.Clone(xs)
	slices.Sort(sorted)
	if n == 1 {
		return sorted[len(sorted)/2 : len(sorted)/2+1]
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = sorted[i*(len(sorted)-1)/(n-1)]
	}
	return out
}
