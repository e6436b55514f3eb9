package costmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Model scores candidate schedules of one task from their feature vectors.
// Scores are comparable within a task only (higher = faster); search ranks
// a batch of one task's candidates with Predict and measures the best.
type Model interface {
	// Name identifies the model in logs and in the tuning database.
	Name() string
	// Predict scores feature vectors (each NumFeatures long).
	Predict(features [][]float64) []float64
	// Update adds measurements of one task (median seconds per candidate,
	// in the order of features) and retrains as needed. An Update without
	// measurements announces that task's candidates are scored next (a
	// model that weighs the current task may refit).
	Update(task string, features [][]float64, seconds []float64) error
	// Trained is the number of measurements the model has learned from.
	Trained() int
	// Format is the serialization format: name/version, stored in
	// tuningdb.Model.Format and given back to Unmarshal.
	Format() string
	MarshalBinary() ([]byte, error)
}

// ErrFormat is wrapped by Unmarshal for data it cannot read: an unknown
// format, a newer version, or a model of another FeatureVersion.
var ErrFormat = errors.New("unknown cost model format")

// header is written first in every serialized model.
type header struct {
	Format         string `json:"format"`
	FeatureVersion int    `json:"feature_version"`
}

// Unmarshal reads a model written by MarshalBinary; format is the value
// Format returned (tuningdb keeps it next to the data).
func Unmarshal(format string, data []byte) (Model, error) {
	var h header
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("cost model %s: %w", format, err)
	}
	if h.Format != format {
		return nil, fmt.Errorf("cost model: data says format %q, stored as %q: %w", h.Format, format, ErrFormat)
	}
	if h.FeatureVersion != FeatureVersion {
		return nil, fmt.Errorf("cost model %s: trained on feature version %d, this build has %d: %w", format, h.FeatureVersion, FeatureVersion, ErrFormat)
	}
	switch format {
	case rooflineFormat:
		return &Roofline{}, nil
	case gbtFormat:
		g := &GBT{}
		if err := g.unmarshal(data); err != nil {
			return nil, fmt.Errorf("cost model %s: %w", format, err)
		}
		return g, nil
	}
	return nil, fmt.Errorf("cost model %q: %w", format, ErrFormat)
}

// checkBatch validates the arguments of Update.
func checkBatch(features [][]float64, seconds []float64) error {
	if len(features) != len(seconds) {
		return fmt.Errorf("update: %d feature vectors for %d measurements", len(features), len(seconds))
	}
	for i, f := range features {
		if len(f) != NumFeatures {
			return fmt.Errorf("update: feature vector %d has %d entries, want %d", i, len(f), NumFeatures)
		}
		if s := seconds[i]; !(s > 0) || math.IsInf(s, 0) {
			return fmt.Errorf("update: measurement %d is %v seconds: want finite and positive", i, s)
		}
	}
	return nil
}

// Roofline is the analytic model, the fallback before enough measurements
// and the baseline of the evaluation: predicted time = max(FLOPs / peak
// compute at the nest's vector and thread utilisation, estimated traffic
// of each memory level / its bandwidth), with traffic from the access
// features (cache-fit reload model), not the ideal bytes.
type Roofline struct{}

const rooflineFormat = "roofline/v1"

var rooflineIndex = indexOf("log_roofline_seconds")

func indexOf(name string) int {
	for i, n := range globalFeatureNames {
		if n == name {
			return i
		}
	}
	panic("costmodel: no feature " + name)
}

// Name is "roofline".
func (*Roofline) Name() string { return "roofline" }

// Predict is minus the log2 of the predicted seconds.
func (*Roofline) Predict(features [][]float64) []float64 {
	out := make([]float64, len(features))
	for i, f := range features {
		out[i] = -f[rooflineIndex]
	}
	return out
}

// Update only checks its arguments: the roofline is analytic.
func (*Roofline) Update(_ string, features [][]float64, seconds []float64) error {
	return checkBatch(features, seconds)
}

// Trained is 0: the roofline learns nothing.
func (*Roofline) Trained() int { return 0 }

// Format is "roofline/v1".
func (*Roofline) Format() string { return rooflineFormat }

// MarshalBinary writes the header only.
func (*Roofline) MarshalBinary() ([]byte, error) {
	return json.Marshal(header{Format: rooflineFormat, FeatureVersion: FeatureVersion})
}

// rooflineSeconds: per level, bytes over bandwidth; the LLC and L2 are
// taken as 2× and 4× the measured memory read bandwidth, a ratio that holds
// within a factor of two on the x86 cores llmir targets and only matters
// for nests that stream from them.
func rooflineSeconds(a *Analysis, dev Device) float64 {
	eff := math.Max(a.VecUtil, 1/dev.lanes()) * math.Max(a.ThreadFrac*a.ParBalance, 1/float64(dev.Threads))
	compute := (a.FLOPs + 8*a.SpecialOps) / (dev.PeakGFLOPs * 1e9 * eff)
	bw := dev.ReadGBs * 1e9
	return max(compute, a.TrafficDRAM/bw, a.TrafficL2/(2*bw), a.TrafficL1/(4*bw))
}
