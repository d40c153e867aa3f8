#!/usr/bin/env bash
# One command that prepares a fresh machine for peerdex: checks the Rust
# toolchain, installs the Debian packages that are missing, and builds the
# release binaries (target/release/peerdex-server, peerdex, peerdex-logger).
#
#   ./setup.sh            install + release build
#   ./setup.sh --no-build install only
set -euo pipefail
cd "$(dirname "$0")"

say() { printf 'setup: %s\n' "$*"; }

# Debian packages the build or the tests need, by the command that proves
# they are there. (gcc and pkg-config for crates that build C.)
declare -A NEED=([cc]=gcc [pkg-config]=pkg-config)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null; then
    say "missing packages: ${missing[*]} (run as root or install them)"; exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  for dir in "$HOME/.cargo/bin" /usr/local/cargo/bin; do
    [ -x "$dir/cargo" ] && export PATH="$dir:$PATH"
  done
fi
command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust with rustup (https://rustup.rs)"; exit 1; }
say "$(cargo --version)"

if [ "${1:-}" != "--no-build" ]; then
  say "building release binaries"
  cargo build --release --workspace --bins
  say "ready: target/release/peerdex-server, target/release/peerdex, target/release/peerdex-logger"
fi
