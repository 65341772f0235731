#!/usr/bin/env bash
# Run the integration tests that need kernel features this machine lacks
# under a Debian kernel (tests/vm/run-in-vm.sh): exactly the tests listed in
# tests/vm/kernel-tests.list (IPVLAN, bridge VLAN filtering, IP-in-IP), each
# by its exact name. The same list decides which kernel-feature skips pass on
# the host (tests/src/kernel.rs), so a test that skips there is a test that
# runs here. Everything is built on the host; only the test binaries run
# inside the VM. Exits with the tests' status (124: VM timeout, 125: VM
# failure).
#
#   tests/vm/kernel-tests.sh [ARGS...]     extra ARGS go to every test binary
#
# PLEXUS_VM_TESTS_TIMEOUT (seconds, default 900) bounds the VM run.
# PLEXUS_VM_TESTS_ONLY=TARGET runs only that target's listed tests (to retry one
# while working on it; CI runs them all).
# Inside the VM PLEXUS_IN_VM=1 is set, so a missing kernel feature makes the
# tests fail instead of skip.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"

log() { echo "kernel-tests: $*" >&2; }

list=tests/vm/kernel-tests.list
# Targets in first-seen order, and each target's test names.
targets=()
declare -A names=()
while read -r target name extra; do
    [[ -z ${target:-} || $target == \#* ]] && continue
    if [[ -z ${name:-} || -n ${extra:-} ]]; then
        log "$list: not '<target> <test>': $target $name $extra"
        exit 1
    fi
    [[ -e tests/tests/$target.rs ]] || { log "$list: no test target tests/tests/$target.rs"; exit 1; }
    [[ -z ${PLEXUS_VM_TESTS_ONLY:-} || $target == "$PLEXUS_VM_TESTS_ONLY" ]] || continue
    [[ -n ${names[$target]+x} ]] || targets+=("$target")
    names[$target]="${names[$target]:-} $name"
done <"$list"
[[ ${#targets[@]} -gt 0 ]] || { log "$list lists no tests"; exit 1; }

log "building workspace binaries"
cargo build --workspace --bins

# The executables of the test targets, from cargo's JSON messages.
test_args=()
for t in "${targets[@]}"; do test_args+=(--test "$t"); done
log "building test binaries: ${targets[*]}"
json=$(cargo test -p plexus-tests "${test_args[@]}" --no-run --message-format=json)
# The VM runs one line per binary: its path, --exact and its listed names
# (names are Rust identifiers, paths are checked to need no quoting beyond
# single quotes), then the extra ARGS ("$@" inside the runner).
runner='status=0'
total=0
for t in "${targets[@]}"; do
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
    [[ $exe != *"'"* ]] || { log "cannot quote $exe"; exit 1; }
    # Every listed name must be a test of that binary: an --exact filter
    # that matches nothing would pass without running anything.
    have=$("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p')
    read -ra want <<<"${names[$t]}"
    for n in "${want[@]}"; do
        [[ $n =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { log "$list: $t: not a test name: $n"; exit 1; }
        grep -qxF -- "$n" <<<"$have" || { log "$list: $t has no test named $n"; exit 1; }
    done
    runner+="
echo \"== $t (kernel \$(uname -r)): ${#want[@]} tests\" >&2
'$exe' --test-threads=2 --exact ${want[*]} \"\$@\" || status=\$?"
    total=$((total + ${#want[@]}))
done
runner+='
exit $status'

log "running $total tests of ${#targets[@]} test binaries in the VM"
start=$(date +%s)
set +e
RUST_BACKTRACE=${RUST_BACKTRACE:-1} tests/vm/run-in-vm.sh \
    --timeout "${PLEXUS_VM_TESTS_TIMEOUT:-900}" \
    --module ipvlan --module dummy --module bridge --module 8021q --module ipip \
    -- sh -c "$runner" sh "$@"
status=$?
set -e
log "VM run finished in $(( $(date +%s) - start ))s with status $status"
exit $status
