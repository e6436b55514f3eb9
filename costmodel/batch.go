package costmodel

import (
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"

	"github.com/sourcegraph/conc/pool"

	"llmir/schedule"
)

// FeaturesBatch extracts the features of many candidate nests of one task
// in parallel (up to GOMAXPROCS goroutines): the step before Predict when
// search ranks a population. Results are in the order of nests; the first
// error (naming the candidate) cancels the rest.
func FeaturesBatch(ctx context.Context, nests []*schedule.Nest, dev Device, dims []int64) ([][]float64, error) {
	out := make([][]float64, len(nests))
	p := pool.New().WithMaxGoroutines(runtime.GOMAXPROCS(0)).WithContext(ctx).WithCancelOnError()
	for i, n := range nests {
		p.Go(func(ctx context.Context) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			f, err := Features(n, dev, dims)
			if err != nil {
				return fmt.Errorf("candidate %d: %w", i, err)
			}
			out[i] = f
			return nil
		})
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// Rank scores the nests of one task with m and returns their indices,
// best first (ties keep the input order), with the scores.
func Rank(ctx context.Context, m Model, nests []*schedule.Nest, dev Device, dims []int64) ([]int, []float64, error) {
	fs, err := FeaturesBatch(ctx, nests, dev, dims)
	if err != nil {
		return nil, nil, err
	}
	sc := m.Predict(fs)
	return ByScore(sc), sc, nil
}

// ByScore is the indices of scores, highest score first (ties keep the
// input order): a model's ranking of the candidates it scored.
func ByScore(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
	return idx
}
