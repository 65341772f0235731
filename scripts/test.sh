#!/usr/bin/env bash
# Set up a fresh machine and run every test: formatting and lints, unit
# tests, integration tests in throwaway network namespaces (root), and the
# ipvlan tests under a Debian kernel in QEMU (tests/vm).
#
#   scripts/test.sh            everything
#   PLEXUS_SKIP_VM=1 scripts/test.sh   everything but the VM tests
#   PLEXUS_SKIP_FUZZ=1 scripts/test.sh everything but the fuzz targets
#   PLEXUS_FUZZ_SECONDS=N               each fuzz target N s (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

# Every prerequisite is installed below, so a test that cannot run is a
# failure here, never a silent pass (tests/src/lib.rs: skip).
export PLEXUS_REQUIRE_ALL=1
if [ -z "${PLEXUS_SKIP_VM:-}" ]; then
  # The VM run below covers what this kernel lacks (ipvlan, VLAN filtering, ipip):
  # exactly the tests in tests/vm/kernel-tests.list, the only ones whose
  # kernel-feature skip passes here (tests/src/kernel.rs).
  export PLEXUS_KERNEL_TESTS_COVERED=1
fi

step "installing system packages"
scripts/install-deps.sh

step "deploy/: manifests built with kustomize and validated against the Kubernetes schemas"
deploy/validate.sh

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "building binaries (the integration tests run them)"
cargo build --workspace --bins

step "cargo test (unit and integration)"
cargo test --workspace --no-fail-fast

if [ -z "${PLEXUS_SKIP_FUZZ:-}" ]; then
  step "fuzz targets, ${PLEXUS_FUZZ_SECONDS:-20} s each on the kept corpus (docs/fuzzing.md)"
  scripts/install-fuzz.sh
  # Fails on any crash, hang or runaway memory. Two targets at a time (one
  # per core) and a parallel build keep the step near 10 minutes.
  FUZZ_WORK="$(mktemp -d)" FUZZ_JOBS=2 FUZZ_CODEGEN_UNITS=16 \
    bench/fuzz.sh "${PLEXUS_FUZZ_SECONDS:-20}"
fi

if [ -z "${PLEXUS_SKIP_VM:-}" ] && [ -x tests/vm/kernel-tests.sh ]; then
  step "ipvlan, bridge VLAN and IP-in-IP tests under a Debian kernel (QEMU)"
  tests/vm/kernel-tests.sh
fi
step "all tests passed"
