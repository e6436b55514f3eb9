package tuningdb

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
)

// precompiledJSONL is the precompiled database: a distilled export of a
// tuned database (`make precompiled-db`), kept as JSON Lines so that it is
// diffable in review and loads through the same importer as any export.
//
//go:embed precompiled/tuningdb.jsonl
var precompiledJSONL []byte

// Layer names used by Layered lookups.
const (
	LayerUser        = "user"
	LayerPrecompiled = "precompiled"
)

// OpenPrecompiled loads the precompiled database embedded in the binary into
// a private in-memory database. Callers treat it as read-only; it is loaded
// per call (a few milliseconds) rather than cached globally so that nothing
// shared can be written by one user and read by another.
func OpenPrecompiled(ctx context.Context) (*DB, error) {
	db, err := OpenMemory(ctx, Options{})
	if err != nil {
		return nil, fmt.Errorf("precompiled database: %w", err)
	}
	if _, err := db.Import(ctx, bytes.NewReader(precompiledJSONL)); err != nil {
		db.Close()
		return nil, fmt.Errorf("precompiled database: %w", err)
	}
	db.opts.ReadOnly = true
	return db, nil
}

// PrecompiledHeader is the header line of the embedded database.
func PrecompiledHeader() (Header, error) {
	line, _, _ := bytes.Cut(precompiledJSONL, []byte("\n"))
	var h Header
	if err := decodeStrict(line, &h); err != nil {
		return Header{}, fmt.Errorf("precompiled database header: %w", err)
	}
	return h, nil
}

// Stack is a Layered lookup that owns its databases.
type Stack struct {
	Layered
	// User is the user's database, nil when its file does not exist.
	User *DB
	// Precompiled is the embedded database, nil when it was left out.
	Precompiled *DB
}

// OpenStack opens what `llmir compile` and `llmir db lookup` look records up
// in: the user's database at userPath, read-only and only if it exists (a
// machine that never tuned still has the precompiled layer), above the
// precompiled database unless withPrecompiled is false. A user database
// that exists but cannot be opened is an error, not a silent skip.
func OpenStack(ctx context.Context, userPath string, withPrecompiled bool) (*Stack, error) {
	s := &Stack{}
	user, err := Open(ctx, userPath, Options{ReadOnly: true})
	switch {
	case err == nil:
		s.User = user
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if withPrecompiled {
		if s.Precompiled, err = OpenPrecompiled(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	s.Layered = NewLayered(s.User, s.Precompiled)
	return s, nil
}

// Close closes the stack's databases.
func (s *Stack) Close() error {
	var errs []error
	for _, db := range []*DB{s.User, s.Precompiled} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	return errors.Join(errs...)
}

// MaxCodegenVersion is the newest codegen version recorded in any layer for
// devices of the given kind ("" any).
func (l Layered) MaxCodegenVersion(ctx context.Context, kind Kind) (int, error) {
	v := 0
	for _, layer := range l.Layers {
		lv, err := layer.DB.MaxCodegenVersion(ctx, kind)
		if err != nil {
			return 0, fmt.Errorf("%s database: %w", layer.Name, err)
		}
		v = max(v, lv)
	}
	return v, nil
}

// NewLayered stacks the user's database above the precompiled one; either
// may be nil (no user database yet, or --no-precompiled).
func NewLayered(user, precompiled *DB) Layered {
	var l Layered
	if user != nil {
		l.Layers = append(l.Layers, Layer{Name: LayerUser, DB: user})
	}
	if precompiled != nil {
		l.Layers = append(l.Layers, Layer{Name: LayerPrecompiled, DB: precompiled})
	}
	return l
}
