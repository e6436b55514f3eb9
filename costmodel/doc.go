// Package costmodel predicts which schedules of a kernel run fastest, from
// their lowered loop nests, so that search measures only the most
// promising candidates: features extracted from a schedule.Nest, an
// analytic roofline model (the fallback and the baseline), a learned model
// (gradient-boosted trees) trained online from measurements and serialized
// per device into the tuning database, and the evaluation that compares
// the two on held-out workloads.
//
// # Main types
//
//   - Device: vector width, threads, cache sizes, measured peak GFLOP/s and
//     read GB/s. Callers fill it (search from the CPU fingerprint and its
//     roofline probes); costmodel imports only schedule.
//   - Features(nest, dev, dims): the fixed-length vector (NumFeatures,
//     names in FeatureNames), dynamic dims at the given runtime extents
//     (nil: their buckets). Analyze returns the same quantities unlogged.
//   - Model: Predict (higher = faster; comparable within a task only),
//     Update(task, features, seconds) (online), Format + MarshalBinary, and
//     Unmarshal(format, data). Roofline is analytic; GBT learns and uses the
//     roofline until it has Params.MinTrain measurements.
//   - ScheduleFeatures(s, work, dev, dims): Features plus what the nest
//     does not show — the kernel's work and the trace's knob values — and
//     the only features of template kernels; ScheduleFeaturesBatch runs it
//     over a population in parallel (conc pool): what search calls per round.
//   - FeaturesBatch and Rank: nest features of a population in parallel and
//     the model's order over it.
//   - PairwiseAccuracy, TopKRecall, LeaveOneTaskOut, SimulateSearch,
//     SimulateEvolution: the evaluation; Example/ReadDataset/WriteDataset:
//     the JSONL datasets of measured candidates (testdata/*.jsonl, see its
//     README), run by BenchmarkRankAccuracy, BenchmarkSearchTrials and
//     BenchmarkEvolutionTrials. SimulateEvolution mirrors search's
//     Evolutionary step for step (options, batch, transfer from the same
//     op's other tasks: those that align with the task's draws, ranked by
//     the model, EvolveSim.Features scoring those outside the pool) on the
//     measured pools, so a change to one is a change to the other;
//     EvolveSim.DefaultFirst adds the tuner's rule-based default as every
//     strategy's first trial (the tuning suite reports both readings). RandomTrials is random order's exact
//     expectation.
//
// Storing a model (search does this; costmodel does not import tuningdb):
//
//	data, _ := m.MarshalBinary()
//	db.PutModel(ctx, tuningdb.Model{DeviceHash: dev, Name: m.Name(), CodegenVersion: v,
//		Format: m.Format(), Data: data, TrainedOn: m.Trained()})
//	rec, err := db.Model(ctx, dev, "gbt", v) // next run
//	m, err := costmodel.Unmarshal(rec.Format, rec.Data)
//
// # How the nest is measured
//
// Extents may depend on outer loops (split tails) and on dynamic dims, so
// the walk is weighted rather than enumerated: a loop no extent depends on
// multiplies its body's weight by its extent; one that some extent depends
// on is evaluated at every value when short (≤ 8), else at its first value
// with weight E-1 and its last with weight 1 — exact for the min(f, E-o·f)
// tails splits make (tests check FLOPs = 2·M·N·K with tails), linear in the
// nest's size at any shape. Each access's physical address (layout
// applied) gives, by finite differences, its stride along every enclosing
// loop; the distinct elements under a loop are the product of the mean
// extents of the loops inside it that move the address. Traffic into a
// cache of size C: each access reloads, once per entry of the outermost
// loop whose subtree's footprint fits C, the cache lines it touches under
// that loop (register buffers cost nothing). The "main block" is the block
// with the most float work; loop-structure features are read along its
// loops.
//
// # Features
//
// Counts and sizes are log2(1+x) ("log_" prefix); "bytes" are bytes.
//
//	log_flops             float ops (+ - * / min max; a reduction's += is one)
//	log_special_ops       element-wise function calls (exp, silu, …)
//	log_ideal_bytes       every parameter read or written once
//	log_traffic_l1        bytes brought into L1 (from L2) by the cache-fit model
//	log_traffic_l2        bytes brought into L2 (from the LLC)
//	log_traffic_dram      bytes brought from memory
//	log_ai_ideal          FLOPs per ideal byte
//	log_ai_dram           FLOPs per byte of modelled memory traffic
//	log_loads_<scope>     element loads from global, local, register, shared buffers
//	log_stores_<scope>    element stores, same scopes
//	vec_lanes             f32 lanes of the main block's vectorized loop (1: none)
//	vec_util              vec_lanes over the device's lanes, at most 1
//	vec_loops             vectorized loops around the main block
//	log_unroll            product of the main block's unrolled extents
//	log_parallel_extent   product of its parallel loops' extents (0: none)
//	par_balance           mean over busiest thread's share of parallel iterations
//	par_thread_frac       threads given work over threads available
//	depth                 main block's loop depth
//	blocks                blocks in the nest (copies, inits, write-backs)
//	log_inner_extent      mean extent of the main block's innermost loop
//	fit_l1/l2/llc         share of main loop levels whose subtree fits L1/L2/LLC
//	ws_over_l1/l2/llc     log2(whole working set / cache size), signed
//	log_roofline_seconds  log2 of the Roofline prediction (not log1p)
//	log_scratch_bytes     local/shared scratch buffers (packing)
//	acc_vregs             register buffers measured in vector registers
//
// Then, for the LoopLevels innermost loops around the main block
// (innermost first, zeros when fewer), "loopN.":
//
//	log_extent            mean extent (tails averaged)
//	kind                  1 serial, 2 parallel, 3 vectorized, 4 unrolled, 5 GPU-bound
//	moves_output          1 when the block's store address moves with the loop
//	fp_over_l1/l2         log2(bytes the loop's whole subtree touches / L1 or L2), signed
//
// Then, for the TopBuffers buffers with the most bytes accessed (largest
// first, zeros when fewer), "bufN.":
//
//	log_bytes             bytes loaded and stored, every access counted
//	log_unique_bytes      distinct bytes touched
//	log_cache_lines       cache-line touches of the innermost access streams
//	log_inner_stride      bytes between consecutive innermost iterations (0: broadcast)
//	contiguous            1 when that stride is one element
//	log_reuse_distance    bytes the block touches between two uses of an element
//	log_reuse_count       extent of the innermost loop that carries reuse
//	reuse_level           that loop's depth over the nest depth (0: no reuse)
//	written               1 when the buffer is stored to
//	log_dram_traffic      this buffer's modelled memory traffic
//
// Buffer strides and reuse are those of the buffer's heaviest access (a
// load on ties: a packed copy's store walks the layout in copy order).
//
// Then the work features, which ScheduleFeatures fills from the kernel's
// own FLOPs and Bytes (Work) and Features from the nest's counts:
//
//	template              1 for a template kernel (no loop nest), else 0
//	log_kernel_flops      the kernel's FLOPs at its runtime extents
//	log_kernel_bytes      the kernel's minimum bytes moved
//	log_kernel_ai         FLOPs per byte (log2(1+x))
//	knobs                 number of sampling steps in the trace
//	kind                  the compute definition's name hashed to [0, 1)
//	                      (KindCode; 0 from Features): which kernel the knobs
//	                      belong to
//
// Then, for the first MaxKnobs sampling steps of the trace, in trace order
// (the order the kernel's Space samples them, so the same knob across a
// task's candidates; zeros when fewer, and always zero from Features, which
// sees no trace), "knobN.":
//
//	log_value             log2(1+chosen value): the candidate a categorical
//	                      step picked, or a perfect tile's innermost factor
//	frac                  position of the choice in its domain, 0…1: index
//	                      over (candidates-1), or log(innermost)/log(extent)
//
// Template kernels (paged attention, int4 linear, …) are generated C with
// knobs, not nests: their nest features are zero but for log_flops,
// log_ideal_bytes, log_ai_ideal and log_roofline_seconds (the kernel's work
// at the device's peaks, the same for every candidate, so the roofline ties
// them and keeps their order); the learned model tells them apart by the
// knob features, which is what a template's speed depends on.
//
// # Why gradient-boosted trees
//
// The learned model is regression trees boosted on per-task normalized
// log-throughput (a measurement's log time minus its task's mean), as
// TVM's default XGBoost model is. With the tens to thousands of samples a
// tune produces, trees need no feature scaling (the features mix logs,
// ratios and flags), capture the thresholds that dominate CPU kernels
// (fits in L2 or not, accumulators spill or not), train deterministically
// in ~0.1–0.5 s on 500–3000 samples (BenchmarkGBTFit), and have few
// hyper-parameters that matter (an MLP needs input scaling and a learning
// rate tuned per dataset; none was built to compare, and
// BenchmarkRankAccuracy is where a challenger would be measured against
// both). Normalizing per task makes
// tasks of very different sizes one regression problem; search only
// compares candidates of one task. Retraining from the kept buffer on
// every Update (not appending trees) makes the model a function of its
// measurements, so a reloaded model continues exactly as one never saved.
// gonum/stat supplies the split quantiles and task means.
//
// # The sibling prior
//
// A new shape of an op that was tuned at another shape (decode and
// prefill of one rms_norm, say) is cold for the trees: they rank its
// knobs by what every kernel in the buffer taught. The sibling task's own
// measurements are a sharper guide where the design spaces coincide, so
// GBT.Predict blends (GBTParams.SiblingWeight) into a candidate's score
// the mean normalized speed of the other tasks' samples with the same kind
// and knob features (the same point of the same kernel's space at another
// shape), at the batch's mean roofline base, so that prior and score are
// in the same units (the trees' target is centered per task, the base is
// not), the weight halving as the task's own measurements arrive
// (SiblingHalf). How much of the weight a candidate's prior gets is
// learned from the buffer (SiblingShare): the rank correlation of the
// sibling shapes that measured its knob point with each other, over the
// points each pair shares (Fisher z pooled by shared points and shrunk
// towards 0 when they are few), against the roofline's rank correlation
// with the same shapes' measurements — share ρs/(ρs+ρr). Only the tasks
// other than the one scored are read, so a held-out shape never informs
// its own weight; a kernel with no pair of other shapes (decode and
// prefill only) takes the buffer's agreement over all pairs. So a GEMV
// whose skinny-GEMM siblings disagree on the few points they share gets
// little of the prior and the GEMMs of one design space most of it. The
// same mean (and how many samples it averages) is
// also two more inputs of the trees (SiblingFeature), computed for a
// training sample from the tasks other than its own: the trees learn from
// the buffer how far a sibling's ranking carries to another shape, per
// kind of kernel. Blend and inputs read one index of the buffer (per knob
// point, the sums per task, so that leaving one task out is a
// subtraction; the pairs' agreements and the shares as asked for),
// rebuilt when the buffer changes. It lives in the model, not in search,
// so the tuner and SimulateEvolution get it from the same code.
//
// # The roofline as the trees' base
//
// The trees fit the residual of the roofline's prediction weighted by its
// least-squares slope on the training buffer (GBTParams.RooflineFit; the
// weight is refitted with the trees and saved with them): where the
// roofline orders tile choices well (linear layers) the trees correct it
// rather than re-learn it from other shapes, where it says nothing
// (template kernels, constant within a task) the slope goes to 0.
//
// # Random order in the simulations
//
// Random search's trials to a good candidate are the exact expectation
// (RandomTrials: (N+1)/(G+1) for G good of N, after the default when it
// is measured first), not a mean over a few seeds, which on pools of a few
// dozen points moves the median over tasks by a trial.
package costmodel
