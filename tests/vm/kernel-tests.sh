#!/usr/bin/env bash
# Run the integration tests that need kernel features this machine lacks
# under a Debian kernel (tests/vm/run-in-vm.sh): every tests/tests/ipvlan_*.rs
# (IPVLAN), the bridge VLAN tests (bridge VLAN filtering) and the routed
# network's IP-in-IP tests (ipip, in tests/tests/routed_cluster.rs). Everything is
# built on the host; only the test binaries run inside the VM. Exits with the
# tests' status (124: VM timeout, 125: VM failure).
#
#   tests/vm/kernel-tests.sh [ARGS...]     extra ARGS go to every test binary
#
# PLEXUS_VM_TESTS_TIMEOUT (seconds, default 900) bounds the VM run.
# Inside the VM PLEXUS_IN_VM=1 is set, so a missing kernel feature makes the
# tests fail instead of skip.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

log() { echo "kernel-tests: $*" >&2; }

# Test target and the name filter selecting its kernel-dependent tests.
tests=()
filters=()
for f in tests/tests/ipvlan_*.rs; do
    [[ -e $f ]] || continue
    tests+=("$(basename "$f" .rs)")
    filters+=("")
done
tests+=(bridge_plugin)
filters+=(vlan)
tests+=(routed_cluster)
filters+=(ipip)

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

# Inside the VM: run each binary with its filter (in the repo dir, which the
# VM keeps as cwd). The pairs come first, then arguments for every binary.
runner='
n=$1; shift
i=0; pairs=""
while [ $i -lt "$n" ]; do pairs="$pairs $1=$2"; shift 2; i=$((i+1)); done
status=0
for p in $pairs; do
    exe=${p%%=*}; filter=${p#*=}
    echo "== $(basename "$exe") ${filter:+(tests matching $filter) }(kernel $(uname -r))" >&2
    "$exe" --test-threads=2 $filter "$@" || status=$?
done
exit $status
'
pairs=()
for i in "${!exes[@]}"; do pairs+=("${exes[$i]}" "${filters[$i]}"); done
log "running ${#exes[@]} test binaries in the VM"
start=$(date +%s)
set +e
RUST_BACKTRACE=${RUST_BACKTRACE:-1} tests/vm/run-in-vm.sh \
    --timeout "${PLEXUS_VM_TESTS_TIMEOUT:-900}" \
    --module ipvlan --module dummy --module bridge --module 8021q --module ipip \
    -- sh -c "$runner" sh "${#exes[@]}" "${pairs[@]}" "$@"
status=$?
set -e
log "VM run finished in $(( $(date +%s) - start ))s with status $status"
exit $status
