package cgen

// CodegenVersion is stamped on every tuning record of the CPU target. Bump
// it whenever lowering (schedule → nest) or this package changes what a
// stored trace means: records of another version are not looked up.
const CodegenVersion = 1
