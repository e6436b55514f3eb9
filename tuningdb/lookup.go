package tuningdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"strings"
)

// Level says how closely a lookup's answer matches what was asked.
type Level int

const (
	// LevelNone: nothing answered.
	LevelNone Level = iota
	// LevelExact: the asked workload, measured on the asked device.
	LevelExact
	// LevelCompatible: the asked workload, measured on another device of the
	// same Kind and Compat class.
	LevelCompatible
	// LevelNearestBucket: another shape bucket of the asked workload's
	// family, on the asked or a compatible device.
	LevelNearestBucket
)

func (l Level) String() string {
	switch l {
	case LevelExact:
		return "exact"
	case LevelCompatible:
		return "compatible-device"
	case LevelNearestBucket:
		return "nearest-bucket"
	}
	return "none"
}

// Query asks for the best schedule of a workload on a device.
//
// The workload may be new to the database (a shape bucket nobody tuned):
// then Family and Bucket make the nearest-bucket fallback possible. The
// device may be new too (a fresh machine): then Kind and Compat make the
// compatible-device fallback possible. Fields left empty are filled from the
// database when the key or hash is stored there.
type Query struct {
	WorkloadKey    string
	Family         string
	Bucket         int64
	DeviceHash     string
	Kind           Kind
	Compat         string
	CodegenVersion int
}

// Answer is the result of a lookup.
type Answer struct {
	Level Level
	// Layer names the database that answered ("user", "precompiled", or the
	// path of a plain DB); empty when nothing answered.
	Layer  string
	Record Record
	// Workload is the workload the record belongs to; under
	// LevelNearestBucket it is the neighbour bucket's workload.
	Workload Workload
	// Device is the device the record was measured on.
	Device Device
}

// resolve fills a query's missing workload and device fields from db.
func (db *DB) resolve(ctx context.Context, q Query) (Query, error) {
	if q.WorkloadKey != "" && (q.Family == "" || q.Bucket == 0) {
		w, err := db.Workload(ctx, q.WorkloadKey)
		switch {
		case err == nil:
			if q.Family == "" {
				q.Family = w.Family
			}
			if q.Bucket == 0 {
				q.Bucket = w.Bucket
			}
		case !errors.Is(err, ErrUnknownWorkload):
			return q, err
		}
	}
	if q.DeviceHash != "" && (q.Kind == "" || q.Compat == "") {
		d, err := db.Device(ctx, q.DeviceHash)
		switch {
		case err == nil:
			if q.Kind == "" {
				q.Kind = d.Kind
			}
			if q.Compat == "" {
				q.Compat = d.Compat
			}
		case !errors.Is(err, ErrUnknownDevice):
			return q, err
		}
	}
	return q, nil
}

// lookupLevel answers q at one fallback level from this database alone.
func (db *DB) lookupLevel(ctx context.Context, q Query, level Level) (Answer, bool, error) {
	rs, err := db.levelRecords(ctx, q, level, 1)
	if err != nil || len(rs) == 0 {
		return Answer{}, false, err
	}
	a := Answer{Level: level, Record: rs[0]}
	if a.Workload, err = db.Workload(ctx, a.Record.WorkloadKey); err != nil {
		return Answer{}, false, err
	}
	if a.Device, err = db.Device(ctx, a.Record.DeviceHash); err != nil {
		return Answer{}, false, err
	}
	return a, true, nil
}

// levelRecords is up to limit (≤ 0: every one) ok records answering q at
// one fallback level in this database, in the lookup's order; none when q
// lacks what the level needs. The rows are read before it returns: an
// in-memory database has one connection, which the caller's next query
// needs.
func (db *DB) levelRecords(ctx context.Context, q Query, level Level, limit int) ([]Record, error) {
	var (
		where string
		args  []any
	)
	switch level {
	case LevelExact:
		if q.WorkloadKey == "" || q.DeviceHash == "" {
			return nil, nil
		}
		where, args = `w.key = ? AND d.hash = ?`, []any{q.WorkloadKey, q.DeviceHash}
	case LevelCompatible:
		if q.WorkloadKey == "" || q.Kind == "" || q.Compat == "" {
			return nil, nil
		}
		where, args = `w.key = ? AND d.kind = ? AND d.compat = ?`, []any{q.WorkloadKey, string(q.Kind), q.Compat}
	case LevelNearestBucket:
		if q.Family == "" {
			return nil, nil
		}
		dev, devArgs := `d.hash = ?`, []any{q.DeviceHash}
		if q.Kind != "" && q.Compat != "" {
			dev, devArgs = `(d.hash = ? OR (d.kind = ? AND d.compat = ?))`, []any{q.DeviceHash, string(q.Kind), q.Compat}
		}
		b, ok, err := db.nearestBucket(ctx, q, dev, devArgs)
		if err != nil || !ok {
			return nil, err
		}
		where, args = `w.family = ? AND w.bucket = ? AND w.key <> ? AND `+dev, append([]any{q.Family, b, q.WorkloadKey}, devArgs...)
	default:
		return nil, nil
	}
	// The asked device first, then the fastest: a record from this very
	// machine beats a slightly faster one from a sibling. (At the exact
	// level the device is fixed, and leaving the term out lets SQLite
	// read the answer straight off the records_best index.)
	order := `d.hash <> ?, `
	args = append(args, q.CodegenVersion)
	if level == LevelExact {
		order = ""
	} else {
		args = append(args, q.DeviceHash)
	}
	lim := -1 // SQLite's "no limit"
	if limit > 0 {
		lim = limit
	}
	args = append(args, lim)
	rows, err := db.sql.QueryContext(ctx, `SELECT `+recordColumns+`
		FROM records r JOIN workloads w ON w.id = r.workload_id JOIN devices d ON d.id = r.device_id
		WHERE `+where+` AND r.codegen_version = ? AND r.status = 'ok'
		ORDER BY `+order+`r.median, r.created_at LIMIT ?`, args...)
	if err != nil {
		return nil, classify(err)
	}
	return collect(rows)
}

// nearestBucket picks the bucket that answers a nearest-bucket lookup: the
// smallest bucket ≥ the asked one that has an ok record on a matching
// device, else the largest one below it. A kernel tuned for bucket B is
// correct for every size ≤ B, so a bucket above is always safe to run; a
// bucket below gives only a schedule to replay at the asked shape.
func (db *DB) nearestBucket(ctx context.Context, q Query, dev string, devArgs []any) (int64, bool, error) {
	const base = `SELECT w.bucket FROM workloads w
		JOIN records r ON r.workload_id = w.id JOIN devices d ON d.id = r.device_id
		WHERE w.family = ? AND w.key <> ? AND r.codegen_version = ? AND r.status = 'ok' AND `
	for _, order := range []string{`w.bucket >= ? ORDER BY w.bucket ASC`, `w.bucket < ? ORDER BY w.bucket DESC`} {
		args := append([]any{q.Family, q.WorkloadKey, q.CodegenVersion}, devArgs...)
		args = append(args, q.Bucket)
		var b int64
		err := db.sql.QueryRowContext(ctx, base+dev+` AND `+order+` LIMIT 1`, args...).Scan(&b)
		if err == nil {
			return b, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, false, classify(err)
		}
	}
	return 0, false, nil
}

// Lookup answers q from this database alone, trying exact, then
// compatible-device, then nearest-bucket. With nothing to answer it returns
// an Answer with LevelNone and an error wrapping ErrNotFound.
func (db *DB) Lookup(ctx context.Context, q Query) (Answer, error) {
	name := db.path
	if name == "" {
		name = "memory"
	}
	return Layered{Layers: []Layer{{Name: name, DB: db}}}.Lookup(ctx, q)
}

// Layer is one database of a Layered lookup.
type Layer struct {
	Name string
	DB   *DB
}

// Layered looks records up in several databases, the user's first and the
// precompiled one last. Levels come before layers: an exact answer from any
// layer beats a compatible-device answer from the user's database, since a
// measurement on this very device (or shape) says more than one on a
// sibling; within a level the earlier layer wins.
type Layered struct {
	Layers []Layer
}

// Lookup answers q; see Layered and DB.Lookup.
func (l Layered) Lookup(ctx context.Context, q Query) (Answer, error) {
	if q.WorkloadKey == "" && q.Family == "" {
		return Answer{}, errors.New("lookup: neither a workload key nor a family given")
	}
	q, err := l.resolve(ctx, q)
	if err != nil {
		return Answer{}, err
	}
	for _, level := range []Level{LevelExact, LevelCompatible, LevelNearestBucket} {
		for _, layer := range l.Layers {
			a, ok, err := layer.DB.lookupLevel(ctx, q, level)
			if err != nil {
				return Answer{}, fmt.Errorf("lookup in %s: %w", layer.Name, err)
			}
			if ok {
				a.Layer = layer.Name
				return a, nil
			}
		}
	}
	return Answer{Level: LevelNone}, fmt.Errorf("%s, codegen version %d: %w", q.describe(), q.CodegenVersion, ErrNotFound)
}

// resolve checks that q names a device and fills its missing fields from
// every layer.
func (l Layered) resolve(ctx context.Context, q Query) (Query, error) {
	if q.DeviceHash == "" && (q.Kind == "" || q.Compat == "") {
		return q, errors.New("lookup: neither a device hash nor a kind and compat class given")
	}
	resolved := make([]Query, len(l.Layers))
	for i, layer := range l.Layers {
		rq, err := layer.DB.resolve(ctx, q)
		if err != nil {
			return q, fmt.Errorf("lookup in %s: %w", layer.Name, err)
		}
		resolved[i] = rq
	}
	// A field one layer knows (say the device's class, from the user's
	// database) helps the others, which may never have seen that device.
	for _, rq := range resolved {
		q = merge(q, rq)
	}
	return q, nil
}

// Ranked yields every answer a lookup of q's workload could give at the
// exact and compatible-device levels — the ok records of that workload on
// the asked device or on another device of its Kind and Compat class — in
// the lookup's order: levels before layers, and within one the asked
// device first, then the fastest. Each trace comes once (compacted JSON),
// with its first record in that order; so the first answer is Lookup's
// when Lookup answers at those levels. Nearest-bucket records are not
// included: they belong to another workload. A tuner replays these as
// candidates (search.Options.Replay), so that schedules known good on a
// sibling machine, or shipped in the precompiled database, are measured
// early on a new one. The iteration stops where the caller stops: a layer
// is not queried before the answers of the previous ones are used up.
func (l Layered) Ranked(ctx context.Context, q Query) iter.Seq2[Answer, error] {
	return func(yield func(Answer, error) bool) {
		if q.WorkloadKey == "" {
			yield(Answer{}, errors.New("ranked lookup: no workload key given"))
			return
		}
		q, err := l.resolve(ctx, q)
		if err != nil {
			yield(Answer{}, err)
			return
		}
		seen := map[string]bool{}
		for _, level := range []Level{LevelExact, LevelCompatible} {
			for _, layer := range l.Layers {
				rs, err := layer.DB.levelRecords(ctx, q, level, 0)
				if err != nil {
					yield(Answer{}, fmt.Errorf("ranked lookup in %s: %w", layer.Name, err))
					return
				}
				var wl Workload
				devices := map[string]Device{}
				for _, r := range rs {
					key := string(compactJSON(r.Trace))
					if seen[key] {
						continue
					}
					seen[key] = true
					if wl.Key == "" {
						if wl, err = layer.DB.Workload(ctx, r.WorkloadKey); err != nil {
							yield(Answer{}, fmt.Errorf("ranked lookup in %s: %w", layer.Name, err))
							return
						}
					}
					d, ok := devices[r.DeviceHash]
					if !ok {
						if d, err = layer.DB.Device(ctx, r.DeviceHash); err != nil {
							yield(Answer{}, fmt.Errorf("ranked lookup in %s: %w", layer.Name, err))
							return
						}
						devices[r.DeviceHash] = d
					}
					if !yield(Answer{Level: level, Layer: layer.Name, Record: r, Workload: wl, Device: d}, nil) {
						return
					}
				}
			}
		}
	}
}

// describe names what a query asks for, leaving out what it does not know.
func (q Query) describe() string {
	var wl, dev []string
	if q.WorkloadKey != "" {
		wl = append(wl, "workload "+short(q.WorkloadKey))
	}
	if q.Family != "" {
		wl = append(wl, fmt.Sprintf("family %s bucket %d", short(q.Family), q.Bucket))
	}
	if q.DeviceHash != "" {
		dev = append(dev, "device "+short(q.DeviceHash))
	}
	if q.Kind != "" || q.Compat != "" {
		dev = append(dev, fmt.Sprintf("class %s %s", q.Kind, q.Compat))
	}
	return strings.Join(wl, ", ") + " on " + strings.Join(dev, ", ")
}

func short(h string) string { return h[:min(len(h), 12)] }

func merge(q, from Query) Query {
	if q.Family == "" {
		q.Family = from.Family
	}
	if q.Bucket == 0 {
		q.Bucket = from.Bucket
	}
	if q.Kind == "" {
		q.Kind = from.Kind
	}
	if q.Compat == "" {
		q.Compat = from.Compat
	}
	return q
}
