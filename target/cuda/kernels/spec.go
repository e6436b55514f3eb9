package cudakernels

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"llmir/kernels/ref"
)

// specFields are the fields of each kernel's spec, all required except
// those with a default.
var specFields = map[string][]string{
	"gemv":            {"M", "N", "K"},
	"cublas_gemv":     {"M", "N", "K"},
	"gemm":            {"M", "N", "K"},
	"cublas_gemm":     {"M", "N", "K"},
	"paged_attention": {"B", "QH", "KVH", "D", "BS", "ctx"},
	"attention":       {"B", "S", "HQ", "HKV", "D"},
	"embedding":       {"T", "V", "H"},
	"argmax":          {"M", "N"},
	"rms_norm":        {"M", "H"},
	"silu_mul":        {"M", "I"},
	"silu":            {"M", "H"},
	"mul":             {"M", "H"},
	"add":             {"M", "H"},
	"rope":            {"T", "H", "D"},
	"append_kv":       {"T", "KVH", "D", "BS"},
	"loopnest_gemv":   {"M", "N", "K"},
	"loopnest_gemm":   {"M", "N", "K"},
	"loopnest_mul":    {"M", "H"},
	"loopnest_add":    {"M", "H"},
}

// SpecKinds lists the kernel kinds ParseSpec knows.
func SpecKinds() []string {
	var out []string
	for k := range specFields {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseSpec reads a kernel from "KIND:F=V,F=V,…", e.g.
// "gemv:M=1,N=4096,K=4096" or
// "paged_attention:B=32,QH=32,KVH=8,D=128,BS=16,ctx=4096" or
// "rope:T=1,H=32,D=128" (Llama-3's rope) (a trailing
// ",ragged" draws ragged lengths). Errors name the field.
func ParseSpec(spec string) (Kernel, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	fields, known := specFields[kind]
	if !ok || !known {
		return nil, fmt.Errorf("kernel spec %q: want KIND:F=V,… with KIND one of %s", spec, strings.Join(SpecKinds(), ", "))
	}
	vals := map[string]int64{}
	ragged := false
	for _, kv := range strings.Split(rest, ",") {
		if kv == "ragged" && kind == "paged_attention" {
			ragged = true
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !slices.Contains(fields, k) {
			return nil, fmt.Errorf("kernel spec %q: field %q (want %s=…)", spec, kv, strings.Join(fields, "=…, "))
		}
		if _, dup := vals[k]; dup {
			return nil, fmt.Errorf("kernel spec %q: field %s given twice", spec, k)
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("kernel spec %q: field %s=%q is not a positive integer", spec, k, v)
		}
		vals[k] = n
	}
	for _, f := range fields {
		if _, ok := vals[f]; !ok {
			return nil, fmt.Errorf("kernel spec %q: missing field %s", spec, f)
		}
	}
	var k Kernel
	switch kind {
	case "gemv":
		k = GEMV{M: vals["M"], N: vals["N"], K: vals["K"]}
	case "cublas_gemv":
		k = GEMVCuBLAS{GEMV{M: vals["M"], N: vals["N"], K: vals["K"]}}
	case "gemm":
		k = GEMM{M: vals["M"], N: vals["N"], K: vals["K"]}
	case "cublas_gemm":
		k = GEMMCuBLAS{GEMM{M: vals["M"], N: vals["N"], K: vals["K"]}}
	case "paged_attention":
		k = PagedAttention{Batch: vals["B"], QHeads: vals["QH"], KVHeads: vals["KVH"], HeadDim: vals["D"],
			BlockSize: vals["BS"], Context: vals["ctx"], Ragged: ragged}
	case "attention":
		k = PrefillAttention{Batch: vals["B"], Seq: vals["S"], QHeads: vals["HQ"], KVHeads: vals["HKV"], HeadDim: vals["D"]}
	case "embedding":
		k = Embedding{Tokens: vals["T"], Vocab: vals["V"], Hidden: vals["H"]}
	case "argmax":
		k = Argmax{M: vals["M"], N: vals["N"]}
	case "rms_norm":
		k = RMSNorm{M: vals["M"], H: vals["H"]}
	case "silu_mul":
		k = SiluMul{M: vals["M"], I: vals["I"]}
	case "silu", "mul", "add":
		k = Pointwise{Op: PointwiseOp(kind), M: vals["M"], H: vals["H"]}
	case "rope":
		// Llama-3's rope: neox pairs, theta 500000, llama3 scaling.
		k = Rope{Tokens: vals["T"], Heads: vals["H"], HeadDim: vals["D"], Config: ref.RopeConfig{Theta: 500000, Style: ref.Neox,
			Scaling: &ref.RopeScaling{Type: "llama3", Factor: 8, OriginalMaxPositions: 8192, LowFreqFactor: 1, HighFreqFactor: 4}}}
	case "append_kv":
		k = AppendKV{Tokens: vals["T"], KVHeads: vals["KVH"], HeadDim: vals["D"], BlockSize: vals["BS"]}
	default:
		var err error
		if k, err = loopNestFromSpec(kind, vals); err != nil {
			return nil, fmt.Errorf("kernel spec %q: %w", spec, err)
		}
	}
	if _, err := k.Def(); err != nil {
		return nil, fmt.Errorf("kernel spec %q: %w", spec, err)
	}
	return k, nil
}
