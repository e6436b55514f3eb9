package tuningdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLookupFallback(t *testing.T) {
	ctx := context.Background()
	db := openTest(t)
	here := testDevice("here", KindCPU, "x86_64/avx512f+fma")
	sibling := testDevice("sibling", KindCPU, "x86_64/avx512f+fma")
	stranger := testDevice("stranger", KindCPU, "x86_64/avx2+fma")
	gpu := testDevice("gpu", KindCUDA, "sm_90")
	w16, w64, w256 := testWorkload("lin", 16), testWorkload("lin", 64), testWorkload("lin", 256)
	w32 := testWorkload("lin", 32)     // stored, never measured ok
	w1024 := testWorkload("lin", 1024) // asked, never stored
	alone := testWorkload("alone", 0)
	mustBatch(t, db, Batch{
		Devices:   []Device{here, sibling, stranger, gpu},
		Workloads: []Workload{w16, w32, w64, w256, alone},
		Records: []Record{
			testRecord(w64, here, 1, 4e-3, StatusOK, t0),
			testRecord(w64, sibling, 1, 1e-3, StatusOK, t0), // faster, but the asked device wins
			testRecord(w16, sibling, 1, 2e-3, StatusOK, t0),
			testRecord(w256, stranger, 1, 1e-4, StatusOK, t0), // incompatible device
			testRecord(w256, sibling, 1, 9e-3, StatusOK, t0),
			testRecord(w32, here, 1, 0, StatusBuildError, t0),
			testRecord(alone, here, 2, 1e-3, StatusOK, t0), // only at codegen version 2
			testRecord(alone, gpu, 1, 1e-5, StatusOK, t0),
		},
	})
	newMachine := HashJSON([]byte(`{"name":"new"}`))
	cases := []struct {
		name       string
		q          Query
		level      Level
		wantWl     Workload
		wantDevice Device
	}{
		{"exact", Query{WorkloadKey: w64.Key, DeviceHash: here.Hash, CodegenVersion: 1}, LevelExact, w64, here},
		{"compatible device", Query{WorkloadKey: w16.Key, DeviceHash: here.Hash, CodegenVersion: 1}, LevelCompatible, w16, sibling},
		{"new machine of a known class", Query{WorkloadKey: w64.Key, DeviceHash: newMachine, Kind: KindCPU, Compat: "x86_64/avx512f+fma", CodegenVersion: 1},
			LevelCompatible, w64, sibling}, // no asked device among them: the fastest
		{"by class only", Query{WorkloadKey: w256.Key, Kind: KindCPU, Compat: "x86_64/avx512f+fma", CodegenVersion: 1}, LevelCompatible, w256, sibling},
		// w32 has only a failed record: the smallest bucket above with an ok record is 64.
		{"nearest bucket above", Query{WorkloadKey: w32.Key, DeviceHash: here.Hash, CodegenVersion: 1}, LevelNearestBucket, w64, here},
		{"unstored bucket above", Query{Family: w16.Family, Bucket: 8, DeviceHash: here.Hash, CodegenVersion: 1}, LevelNearestBucket, w16, sibling},
		{"largest bucket below", Query{WorkloadKey: w1024.Key, Family: w1024.Family, Bucket: 1024, DeviceHash: here.Hash, CodegenVersion: 1},
			LevelNearestBucket, w256, sibling},
		{"other codegen version ignored", Query{WorkloadKey: alone.Key, DeviceHash: here.Hash, CodegenVersion: 2}, LevelExact, alone, here},
		{"other kind never answers", Query{WorkloadKey: alone.Key, DeviceHash: here.Hash, CodegenVersion: 1}, LevelNone, Workload{}, Device{}},
		{"own device's other bucket before others' exact shape", Query{WorkloadKey: w64.Key, DeviceHash: stranger.Hash, CodegenVersion: 1},
			LevelNearestBucket, w256, stranger},
		{"incompatible class", Query{WorkloadKey: w64.Key, DeviceHash: newMachine, Kind: KindCPU, Compat: "aarch64/neon", CodegenVersion: 1},
			LevelNone, Workload{}, Device{}},
		{"unknown codegen version", Query{WorkloadKey: w64.Key, DeviceHash: here.Hash, CodegenVersion: 3}, LevelNone, Workload{}, Device{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := db.Lookup(ctx, tc.q)
			if tc.level == LevelNone {
				if !errors.Is(err, ErrNotFound) || a.Level != LevelNone {
					t.Fatalf("got level %v (%v), want none with ErrNotFound", a.Level, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Level != tc.level || a.Workload.Key != tc.wantWl.Key || a.Device.Hash != tc.wantDevice.Hash {
				t.Errorf("got level %v, bucket %d, device %.8s; want %v, bucket %d, device %.8s",
					a.Level, a.Workload.Bucket, a.Device.Hash, tc.level, tc.wantWl.Bucket, tc.wantDevice.Hash)
			}
			if a.Record.WorkloadKey != a.Workload.Key || a.Record.DeviceHash != a.Device.Hash || a.Record.Status != StatusOK {
				t.Errorf("answer's record %+v does not match its workload and device", a.Record)
			}
		})
	}
	if _, err := db.Lookup(ctx, Query{DeviceHash: here.Hash}); err == nil {
		t.Errorf("lookup without a workload succeeded")
	}
	if _, err := db.Lookup(ctx, Query{WorkloadKey: w16.Key}); err == nil {
		t.Errorf("lookup without a device succeeded")
	}
}

func TestLayeredLookup(t *testing.T) {
	ctx := context.Background()
	user, pre := openTest(t), openTest(t)
	here := testDevice("here", KindCUDA, "sm_90")
	sibling := testDevice("sibling", KindCUDA, "sm_90")
	wA, wB, wC := testWorkload("a", 0), testWorkload("b", 0), testWorkload("c", 128)
	wC64 := testWorkload("c", 64)
	mustBatch(t, user, Batch{Devices: []Device{here, sibling}, Workloads: []Workload{wA, wB, wC},
		Records: []Record{
			testRecord(wA, here, 1, 5e-3, StatusOK, t0),
			testRecord(wB, sibling, 1, 5e-3, StatusOK, t0),
			testRecord(wC, here, 1, 5e-3, StatusOK, t0),
		}})
	mustBatch(t, pre, Batch{Devices: []Device{here, sibling}, Workloads: []Workload{wA, wB, wC64},
		Records: []Record{
			testRecord(wA, here, 1, 1e-3, StatusOK, t0.Add(time.Hour)),
			testRecord(wB, here, 1, 9e-3, StatusOK, t0),
			testRecord(wC64, here, 1, 1e-3, StatusOK, t0),
		}})
	l := NewLayered(user, pre)
	cases := []struct {
		wl     Workload
		level  Level
		layer  string
		median float64
	}{
		{wA, LevelExact, LayerUser, 5e-3},        // same level: the user's database wins
		{wB, LevelExact, LayerPrecompiled, 9e-3}, // an exact answer beats the user's sibling
		{wC64, LevelExact, LayerPrecompiled, 1e-3},
		{wC, LevelExact, LayerUser, 5e-3},
	}
	for _, tc := range cases {
		a, err := l.Lookup(ctx, Query{WorkloadKey: tc.wl.Key, DeviceHash: here.Hash, CodegenVersion: 1})
		if err != nil {
			t.Fatal(err)
		}
		if a.Level != tc.level || a.Layer != tc.layer || a.Record.Median != tc.median {
			t.Errorf("workload %s/%d: level %v from %s (median %v), want %v from %s (median %v)",
				tc.wl.Family[:6], tc.wl.Bucket, a.Level, a.Layer, a.Record.Median, tc.level, tc.layer, tc.median)
		}
	}
	// A machine only the user's database knows: its class comes from there
	// and lets the precompiled layer answer at the compatible level.
	fresh := testDevice("fresh", KindCUDA, "sm_90")
	if err := user.PutDevice(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	a, err := NewLayered(user, pre).Lookup(ctx, Query{WorkloadKey: wC64.Key, DeviceHash: fresh.Hash, CodegenVersion: 1})
	if err != nil || a.Level != LevelCompatible || a.Layer != LayerPrecompiled {
		t.Errorf("fresh device: level %v from %q (%v), want compatible-device from precompiled", a.Level, a.Layer, err)
	}
}

func TestOpenStack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "never.db")
	s, err := OpenStack(ctx, missing, true)
	if err != nil {
		t.Fatal(err)
	}
	if s.User != nil || s.Precompiled == nil || len(s.Layers) != 1 || s.Layers[0].Name != LayerPrecompiled {
		t.Errorf("missing user database: %+v", s.Layers)
	}
	s.Close()
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("OpenStack created the user database")
	}

	notes := filepath.Join(dir, "notes.db")
	os.WriteFile(notes, []byte("not a database"), 0o644)
	if _, err := OpenStack(ctx, notes, true); !errors.Is(err, ErrNotDatabase) {
		t.Errorf("unreadable user database: %v, want ErrNotDatabase", err)
	}

	user := filepath.Join(dir, "user.db")
	db, err := Open(ctx, user, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, w := testDevice("a", KindCPU, "x"), testWorkload("f", 0)
	mustBatch(t, db, Batch{Devices: []Device{d}, Workloads: []Workload{w}, Records: []Record{testRecord(w, d, 4, 1e-3, StatusOK, t0)}})
	db.Close()
	s, err = OpenStack(ctx, user, false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.User == nil || s.Precompiled != nil || len(s.Layers) != 1 {
		t.Errorf("user database only: %+v", s.Layers)
	}
	if v, err := s.MaxCodegenVersion(ctx, ""); err != nil || v != 4 {
		t.Errorf("MaxCodegenVersion = %d, %v; want 4", v, err)
	}
	if err := s.User.PutDevice(ctx, testDevice("b", KindCPU, "x")); !errors.Is(err, ErrReadOnly) {
		t.Errorf("the stack's user database is writable: %v", err)
	}
}

// TestLayeredRanked: every trace a lookup of the workload could answer
// with at the exact and compatible-device levels, once each, in the
// lookup's order (levels before layers, the asked device first, then the
// fastest); never another class's, a failed record, another codegen
// version's or another workload's.
func TestLayeredRanked(t *testing.T) {
	ctx := context.Background()
	user, pre := openTest(t), openTest(t)
	here := testDevice("here", KindCPU, "x86_64/avx512f")
	sibling := testDevice("sibling", KindCPU, "x86_64/avx512f")
	twin := testDevice("twin", KindCPU, "x86_64/avx512f")
	stranger := testDevice("stranger", KindCPU, "x86_64/avx2")
	w, w2 := testWorkload("lin", 64), testWorkload("lin", 128)
	rec := func(d Device, wl Workload, trace string, cv int, median float64, st Status) Record {
		r := testRecord(wl, d, cv, median, st, t0)
		r.Trace = []byte(trace)
		return r
	}
	mustBatch(t, user, Batch{Devices: []Device{here, sibling, stranger}, Workloads: []Workload{w, w2}, Records: []Record{
		rec(here, w, `{"t":"mine"}`, 1, 5e-3, StatusOK),
		rec(sibling, w, `{"t":"sib-fast"}`, 1, 1e-3, StatusOK),
		rec(sibling, w, `{"t": "mine"}`, 1, 1e-4, StatusOK), // the same trace, spaced otherwise
		rec(sibling, w, `{"t":"sib-slow"}`, 1, 2e-3, StatusOK),
		rec(sibling, w, `{"t":"failed"}`, 1, 0, StatusRuntimeError),
		rec(sibling, w, `{"t":"old"}`, 2, 1e-5, StatusOK),
		rec(sibling, w2, `{"t":"other-shape"}`, 1, 1e-5, StatusOK),
		rec(stranger, w, `{"t":"stranger"}`, 1, 1e-6, StatusOK),
	}})
	mustBatch(t, pre, Batch{Devices: []Device{here, twin}, Workloads: []Workload{w}, Records: []Record{
		rec(here, w, `{"t":"shipped-here"}`, 1, 9e-3, StatusOK),
		rec(twin, w, `{"t":"shipped-twin"}`, 1, 1e-4, StatusOK),
		rec(twin, w, `{"t":"sib-fast"}`, 1, 1e-5, StatusOK), // replayed once, from the user's
	}})
	l := NewLayered(user, pre)
	q := Query{WorkloadKey: w.Key, DeviceHash: here.Hash, CodegenVersion: 1}
	type got struct {
		trace string
		level Level
		layer string
		dev   string
	}
	var all []got
	for a, err := range l.Ranked(ctx, q) {
		if err != nil {
			t.Fatal(err)
		}
		if a.Record.WorkloadKey != w.Key || a.Workload.Key != w.Key || a.Device.Hash != a.Record.DeviceHash {
			t.Errorf("answer %s: workload %.8s, device %.8s of record on %.8s", a.Record.Trace, a.Workload.Key, a.Device.Hash, a.Record.DeviceHash)
		}
		all = append(all, got{string(compactJSON(a.Record.Trace)), a.Level, a.Layer, a.Device.Hash})
	}
	want := []got{
		{`{"t":"mine"}`, LevelExact, LayerUser, here.Hash},
		{`{"t":"shipped-here"}`, LevelExact, LayerPrecompiled, here.Hash},
		{`{"t":"sib-fast"}`, LevelCompatible, LayerUser, sibling.Hash},
		{`{"t":"sib-slow"}`, LevelCompatible, LayerUser, sibling.Hash},
		{`{"t":"shipped-twin"}`, LevelCompatible, LayerPrecompiled, twin.Hash},
	}
	if fmt.Sprint(all) != fmt.Sprint(want) {
		t.Errorf("ranked:\n got %v\nwant %v", all, want)
	}
	first, err := l.Lookup(ctx, q)
	if err != nil || string(first.Record.Trace) != all[0].trace {
		t.Errorf("Lookup answers %s (%v), Ranked starts with %s", first.Record.Trace, err, all[0].trace)
	}

	// A machine only its class is known of: the same traces, the class's
	// fastest first.
	n := 0
	for a, err := range l.Ranked(ctx, Query{WorkloadKey: w.Key, Kind: KindCPU, Compat: "x86_64/avx512f", CodegenVersion: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && string(a.Record.Trace) != `{"t":"mine"}` {
			t.Errorf("by class: first %s, want the class's fastest", a.Record.Trace)
		}
		if n++; n == 2 {
			break // stopping early is no error
		}
	}
	if n != 2 {
		t.Errorf("by class: %d answers before stopping, want 2", n)
	}
	for _, bad := range []Query{{DeviceHash: here.Hash, CodegenVersion: 1}, {WorkloadKey: w.Key, CodegenVersion: 1}} {
		for _, err := range l.Ranked(ctx, bad) {
			if err == nil {
				t.Errorf("ranked %+v: no error", bad)
			}
		}
	}
}
