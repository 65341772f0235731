#!/usr/bin/env bash
# Run the ipvlan integration tests (tests/tests/ipvlan_*.rs) under a kernel
# that has IPVLAN: build everything on the host, then run only the test
# binaries inside the test VM (tests/vm/run-in-vm.sh). Exits with the tests'
# status (124: VM timeout, 125: VM failure).
#
#   tests/vm/ipvlan-tests.sh [TEST-BINARY ARGS...]     e.g. -- l2_pods --nocapture
#
# PLEXUS_IPVLAN_VM_TIMEOUT (seconds, default 900) bounds the VM run.
# Inside the VM PLEXUS_IN_VM=1 is set, so a kernel without IPVLAN makes the
# tests fail instead of skip.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

log() { echo "ipvlan-tests: $*" >&2; }

tests=()
for f in tests/tests/ipvlan_*.rs; do
    [[ -e $f ]] || continue
    t=$(basename "$f" .rs)
    tests+=("$t")
done
[[ ${#tests[@]} -gt 0 ]] || { log "no tests/tests/ipvlan_*.rs"; exit 1; }

log "building workspace binaries"
cargo build --workspace --bins

# The executables of the test targets, from cargo's JSON messages.
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
log "building test binaries: ${tests[*]}"
json=$(cargo test -p plexus-tests "${test_args[@]}" --no-run --message-format=json)
exes=()
for t in "${tests[@]}"; do
    exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] == name and "test" in m["target"]["kind"]:
        print(m["executable"])
' "$t" | tail -n1)
    [[ -n $exe && -x $exe ]] || { log "cannot find the executable of test $t"; exit 1; }
    exes+=("$exe")
done

# Inside the VM: run each binary (in the repo dir, which the VM keeps as cwd).
# Arguments after the binaries' list go to every binary.
runner='
n=$1; shift
i=0; bins=""
while [ $i -lt "$n" ]; do bins="$bins $1"; shift; i=$((i+1)); done
status=0
for exe in $bins; do
    echo "== $(basename "$exe") (kernel $(uname -r))" >&2
    "$exe" --test-threads=2 "$@" || status=$?
done
exit $status
'
log "running ${#exes[@]} test binaries in the VM"
start=$(date +%s)
set +e
RUST_BACKTRACE=${RUST_BACKTRACE:-1} tests/vm/run-in-vm.sh \
    --timeout "${PLEXUS_IPVLAN_VM_TIMEOUT:-900}" \
    --module ipvlan --module dummy \
    -- sh -c "$runner" sh "${#exes[@]}" "${exes[@]}" "$@"
status=$?
set -e
log "VM run finished in $(( $(date +%s) - start ))s with status $status"
exit $status
