#!/usr/bin/env bash
# Install what the fuzz targets need (fuzz/, docs/fuzzing.md): cargo-fuzz,
# pinned, built from crates.io with the lock file it ships. libFuzzer itself
# comes with the libfuzzer-sys crate (built by cargo with the C++ compiler
# rustup's image has). Idempotent: nothing is fetched when that version is
# already installed.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2

have=$(cargo fuzz --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$CARGO_FUZZ_VERSION" ]]; then
  echo "install-fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION (have: ${have:-none})" >&2
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
