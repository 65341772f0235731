#!/usr/bin/env bash
# bench/policy.sh: network policy at scale against real plexusd.
#
#   sudo bench/policy.sh
#
# A simulated cluster (tests/src/cluster: etcd, NODES nodes running plexusd
# with --policy on and --ip-masq, the API stand-in as the Kubernetes API).
# The driver, tests/src/bin/policy-bench.rs (its header says exactly what it
# does), measures in one run:
#   - enforcement latency: PODS pods spread over the nodes, then POLICIES
#     NetworkPolicies created one at a time, each selecting a pod on every
#     node: from the policy's creation in the API to every selected pod's
#     table holding it, as each node's plexusd reports (p50, p99, max);
#   - node0's plexusd RSS once the API holds RSS_PODS pods and RSS_POLICIES
#     policies, beside its RSS before any pod or policy (the anchor);
#   - pod-to-pod iperf3 throughput and TCP connections per second without a
#     policy and with an allowing policy holding 1,000 peers (rounds
#     interleaved, medians, and their ratio).
# Knobs (environment): NODES (3), PODS (200), POLICIES (200), RSS_PODS (1000),
# RSS_POLICIES (500), IPERF_SECS (3), ROUNDS (3), CONN_SECS (2),
# PLEXUS_LOG (warn). BENCH_BIN=DIR takes plexusd, plexusctl, the driver and
# the plugins from DIR instead of building them in release (e.g. target/debug).
#
# Everything runs in namespaces named plx-<driver pid>-*; on any exit the
# driver's processes are stopped by pid and its namespaces deleted. Nothing
# touches the root namespace.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
bench_requires bench/policy.sh etcd iperf3 nsenter setsid awk

# The harness runs the plugins from the same directory as plexusd (its
# CNI_PATH, then the reference plugins for macvlan).
if [[ -n ${BENCH_BIN:-} ]]; then
    bin=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd -p plexusctl -p plexus -p plexus-vxlan \
        -p plexus-bridge -p plexus-host-local -p plexus-bgp-routes &&
        cargo build -q --release -p plexus-tests --bin policy-bench)
    bin=$root/target/release
fi

tmp=$(mktemp -d /tmp/plexus-bench-policy.XXXXXX)
driver='' dpid=''
cleanup() {
    set +e
    bench_stop_driver "$driver" "$dpid" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench/policy.sh: $(uptime)"
TMPDIR=$tmp PLEXUS_BIN_DIR=$bin PLEXUS_LOG=${PLEXUS_LOG:-warn} \
    setsid "$bin/policy-bench" &
driver=$! dpid=$!
status=0
wait "$driver" || status=$?
driver=''
[[ $status -eq 0 ]] || exit "$status"
echo "bench/policy.sh: done: $(uptime)"
