#!/usr/bin/env bash
# precompiled-db.sh [DB] — regenerates tuningdb/precompiled/tuningdb.jsonl, the
# precompiled tuning database built into llmir (go:embed), from a tuned database:
# DB, else $LLMIR_DB, else llmir's default (~/.cache/llmir/tuning.db).
#
# It keeps the BEST (default 3) fastest ok records per workload, device and codegen
# version (set CODEGEN_VERSION to keep one version only), checks that the result
# imports and verifies cleanly, and only then replaces the file. Rebuild llmir
# afterwards to embed it.
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
BEST=${BEST:-3}
src=${1:-${LLMIR_DB:-}}
out=tuningdb/precompiled/tuningdb.jsonl

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

CGO_ENABLED=1 "$GO" build -o "$tmp/llmir" ./cmd/llmir
db=()
[ -n "$src" ] && db=(--db "$src")
# Samples: 64 order statistics per record are plenty for a lookup layer
# (a GPU record of a µs kernel holds thousands; the file is built into llmir).
export_args=(--best "$BEST" --max-samples "${MAX_SAMPLES:-64}")
[ -n "${CODEGEN_VERSION:-}" ] && export_args+=(--codegen-version "$CODEGEN_VERSION")

"$tmp/llmir" "${db[@]}" db verify
"$tmp/llmir" "${db[@]}" db export "${export_args[@]}" -o "$tmp/precompiled.jsonl"
"$tmp/llmir" --db "$tmp/check.db" db import "$tmp/precompiled.jsonl" >/dev/null
"$tmp/llmir" --db "$tmp/check.db" db verify >/dev/null
mv "$tmp/precompiled.jsonl" "$out"
echo "precompiled-db: wrote $out ($(head -c 200 "$out" | head -n 1))"
