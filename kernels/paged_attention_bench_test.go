package kernels_test

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"llmir/kernels"
	"llmir/schedule"
	"llmir/search"
	"llmir/target"
	"llmir/target/cpu"
	"llmir/target/cpu/cputest"
)

// pagedS3 is the session-3 kernel (4 streams of 4-token tiles, 16×16
// shuffle-reduction trees) as its generator emitted it for Llama-3-8B
// (f32, block size 16, no split): the fixed baseline every change to the
// generator is measured against; BS and PART are set per workload.
//
//go:embed testdata/paged_attention_s3.c
var pagedS3 string

var (
	pagedBlocks   = flag.String("paged.bs", "8,16,64,256", "BenchmarkPagedAttentionVariants: block sizes")
	pagedContext  = flag.Int64("paged.ctx", 4096, "BenchmarkPagedAttentionVariants: context length of every sequence")
	pagedThreads  = flag.Int("paged.threads", 1, "BenchmarkPagedAttentionVariants: thread count")
	pagedRounds   = flag.Int("paged.rounds", 2, "BenchmarkPagedAttentionVariants: measurement rounds (order reversed every other round)")
	pagedMiB      = flag.Int64("paged.mib", 64, "BenchmarkPagedAttentionVariants: least MiB of K+V one call reads")
	pagedVariants = flag.String("paged.variants", "", "BenchmarkPagedAttentionVariants: extra schedules, ';'-separated knob overrides of the default (e.g. 'prefetch=1;streams=2')")
	pagedC        = flag.String("paged.c", "", "BenchmarkPagedAttentionVariants: extra frozen Llama-3-8B f32 kernels, ','-separated C files (BS and PART set per workload), e.g. testdata/paged_attention_s5_tokenmajor.c")
)

// BenchmarkPagedAttentionVariants measures the generator's default
// schedule, the frozen session-3 kernel, any -paged.variants (knob
// overrides of the default) and any -paged.c (frozen C kernels) side by
// side in one process, at Llama-3-8B's decode attention (32 query heads,
// 8 KV heads, d 128, f32), in rounds of one batch each, the order
// reversed every other round, so that drift on a shared machine hits
// every candidate alike. Every candidate is validated against the
// reference before it is timed. It reports each one's median GB/s (median
// over rounds of the round medians), its share of the read bandwidth
// measured every round by cpu.ReadCandidate over as many bytes (and of
// the roofline probe's cached one), and its speedup over session 3.
//
//	go test ./kernels -run '^$' -bench PagedAttentionVariants -benchtime 1x -args -paged.bs 8,16,256 -paged.threads 1 -paged.variants 'streams=2;prefetch=1' -paged.c testdata/paged_attention_s5_tokenmajor.c
func BenchmarkPagedAttentionVariants(b *testing.B) {
	cputest.Need(b, "gcc")
	ctx := context.Background()
	// The default cache directory: its roofline probes are reused.
	tg, err := cpu.New(ctx, cpu.Options{})
	if err != nil {
		b.Skip(err)
	}
	threads := max(*pagedThreads, 1)
	hw := search.CPUHardware(tg.CPU(), threads)
	var probeGBs float64
	if roof, err := tg.Roofline(ctx); err == nil {
		if pt, ok := roof.At(threads); ok {
			probeGBs = pt.ReadGBs
		}
	}
	variants, err := parseVariants(*pagedVariants)
	if err != nil {
		b.Fatal(err)
	}
	frozen := map[string]string{"s3": pagedS3}
	for _, f := range strings.Split(*pagedC, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			b.Fatalf("-paged.c: %v", err)
		}
		frozen[strings.TrimSuffix(filepath.Base(f), ".c")] = string(src)
	}
	for _, f := range strings.Split(*pagedBlocks, ",") {
		bs, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || bs < 1 {
			b.Fatalf("-paged.bs %q: want positive integers", *pagedBlocks)
		}
		ctxLen := *pagedContext
		perSeq := 2 * ctxLen * 8 * 128 * 4
		batch := max((*pagedMiB<<20+perSeq-1)/perSeq, 1)
		lens := make([]int64, batch)
		for i := range lens {
			lens[i] = ctxLen
		}
		k := kernels.PagedAttention{Batch: batch, QHeads: 32, KVHeads: 8, HeadDim: 128, BlockSize: bs,
			MaxBlocks: (ctxLen + bs - 1) / bs, Lengths: lens}
		b.Run(fmt.Sprintf("BS=%d,ctx=%d,B=%d/threads=%d", bs, ctxLen, batch, threads), func(b *testing.B) {
			cands, err := pagedCandidates(k, hw, variants, frozen)
			if err != nil {
				b.Fatal(err)
			}
			p, err := search.NewProblem(k, 1)
			if err != nil {
				b.Fatal(err)
			}
			rp := cpu.ReadProblem(int64(p.Bytes), p.Seed)
			var reads []float64
			med := map[string][]float64{}
			for b.Loop() {
				for r := range max(*pagedRounds, 1) {
					// The read baseline, measured every round beside the
					// kernels: the bandwidth of a shared machine drifts.
					rm, err := target.Measure(ctx, tg, rp, []target.Candidate{cpu.ReadCandidate("read", threads)}, target.RunOptions{})
					if err != nil {
						b.Fatal(err)
					}
					if m := rm["read"]; !m.OK() {
						b.Fatalf("read baseline: %s: %s", m.Status, m.Error)
					} else {
						reads = append(reads, m.Median)
					}
					order := slices.Clone(cands)
					if r%2 == 1 {
						slices.Reverse(order)
					}
					ms, err := target.Measure(ctx, tg, p, order, target.RunOptions{})
					if err != nil {
						b.Fatal(err)
					}
					for _, c := range order {
						m := ms[c.ID]
						if m.Status != target.StatusOK {
							b.Fatalf("%s: %s: %s", c.ID, m.Status, m.Error)
						}
						med[c.ID] = append(med[c.ID], m.Median)
					}
				}
			}
			base := median(med["s3"])
			_, nowGBs := rp.Rates(median(reads))
			b.ReportMetric(nowGBs, "read-GB/s")
			for _, c := range cands {
				s := median(med[c.ID])
				_, gbs := p.Rates(s)
				name := metricName(c.ID)
				b.ReportMetric(gbs, name+"-GB/s")
				b.ReportMetric(100*gbs/nowGBs, name+"-%readBW")
				if probeGBs > 0 {
					b.ReportMetric(100*gbs/probeGBs, name+"-%probeBW")
				}
				if c.ID != "s3" {
					b.ReportMetric(base/s, name+"/s3")
				}
			}
		})
	}
}

// parseVariants reads "a=1,b=2;c=3" into knob overrides.
func parseVariants(s string) ([]map[string]int64, error) {
	var out []map[string]int64
	for _, v := range strings.Split(s, ";") {
		if strings.TrimSpace(v) == "" {
			continue
		}
		m := map[string]int64{}
		for _, kv := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(kv, "=")
			n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
			if !ok || err != nil {
				return nil, fmt.Errorf("-paged.variants %q: %q is not knob=integer", s, kv)
			}
			m[strings.TrimSpace(name)] = n
		}
		out = append(out, m)
	}
	return out, nil
}

// pagedCandidates are the frozen kernels (by name; "s3" among them), the
// default ("default") and the variants, named by their overrides.
func pagedCandidates(k kernels.PagedAttention, hw kernels.Hardware, variants []map[string]int64, frozen map[string]string) ([]target.Candidate, error) {
	s, err := search.DefaultSchedule(k, hw)
	if err != nil {
		return nil, err
	}
	def, err := k.Knobs(hw).Read(s)
	if err != nil {
		return nil, err
	}
	var cands []target.Candidate
	for _, name := range slices.Sorted(maps.Keys(frozen)) {
		src := regexp.MustCompile(`(?m)^#define BS \d+$`).ReplaceAllString(frozen[name], fmt.Sprintf("#define BS %d", k.BlockSize))
		src = regexp.MustCompile(`(?m)^#define PART \d+$`).ReplaceAllString(src, fmt.Sprintf("#define PART %d", def["split"]))
		cands = append(cands, target.Candidate{ID: name, Source: src, Entry: search.Entry, Threads: hw.Threads})
	}
	for i, over := range append([]map[string]int64{nil}, variants...) {
		for name := range over {
			if _, ok := def[name]; !ok {
				return nil, fmt.Errorf("-paged.variants: no knob %q (knobs: %v)", name, slices.Sorted(maps.Keys(def)))
			}
		}
		knobs := merged(def, over)
		d, err := k.Def()
		if err != nil {
			return nil, err
		}
		vs, err := schedule.New(d, 0)
		if err != nil {
			return nil, err
		}
		if err := k.Knobs(hw).Choose(vs, knobs); err != nil {
			return nil, err
		}
		id := "default"
		if i > 0 {
			var parts []string
			for name, v := range over {
				parts = append(parts, fmt.Sprintf("%s=%d", name, v))
			}
			slices.Sort(parts)
			id = strings.Join(parts, ",")
		}
		c, err := search.NewCandidate(id, k, vs, hw)
		if err != nil {
			return nil, err
		}
		cands = append(cands, c)
	}
	return cands, nil
}

func merged(base, over map[string]int64) map[string]int64 {
	out := maps.Clone(base)
	maps.Copy(out, over)
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// metricName keeps a candidate's id usable as a benchmark unit (no
// spaces or '=').
func metricName(id string) string {
	return strings.NewReplacer("=", "", ",", "+", " ", "").Replace(id)
}
