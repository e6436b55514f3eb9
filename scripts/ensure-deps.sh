#!/usr/bin/env bash
# ensure-deps.sh WHAT... — checks (and, as root on Debian, installs) the external
# tools llmir's make targets need. WHAT is any of: go gcc openblas mlir.
# A missing tool that cannot be installed stops with a clear message.
set -euo pipefail

need_pkgs=()
missing=()

have_go() { command -v go >/dev/null 2>&1; }
have_gcc() { command -v gcc >/dev/null 2>&1; }
have_openblas() {
  [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] ||
    ls /usr/include/x86_64-linux-gnu/openblas*/cblas.h >/dev/null 2>&1
}
have_mlir() { [ -n "$(scripts/find-mlir-opt.sh 2>/dev/null)" ]; }
# The dashboard's browser test drives Debian's Chromium (no downloaded browser).
have_chromium() { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; }

for what in "$@"; do
  case "$what" in
    go) have_go || missing+=("go (install Go 1.26 from the Go project; Debian's golang is too old)") ;;
    gcc) have_gcc || need_pkgs+=(gcc libc6-dev) ;;
    openblas) have_openblas || need_pkgs+=(libopenblas-dev) ;;
    mlir) have_mlir || need_pkgs+=(mlir-16-tools) ;;
    chromium) have_chromium || need_pkgs+=(chromium) ;;
    *) echo "ensure-deps: unknown requirement $what" >&2; exit 2 ;;
  esac
done

if [ ${#missing[@]} -gt 0 ]; then
  printf 'llmir: missing: %s\n' "${missing[@]}" >&2
  exit 1
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "llmir: installing Debian packages: ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "llmir: missing Debian packages: ${need_pkgs[*]}" >&2
    echo "llmir: install them with: sudo apt-get install ${need_pkgs[*]}" >&2
    exit 1
  fi
fi
