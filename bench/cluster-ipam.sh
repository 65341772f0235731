#!/usr/bin/env bash
# bench/cluster-ipam.sh: cluster-wide IPAM for any network (issue 21) at scale.
#
#   sudo bench/cluster-ipam.sh NODES PODS_PER_NODE        (e.g. 10 100; try 3 10 first)
#
# A simulated cluster (tests/src/cluster/clusteripam.rs, the harness the
# integration tests use): an underlay netns with a bridge, a real etcd, one
# netns per node running plexusd serving only cluster IPAM, every node's
# uplink on one shared L2 segment. Each pod gets net1 from the reference
# macvlan plugin with plexus-cluster-ipam (one range for the cluster, a /22
# by default) and net2 from the same macvlan plugin with plexus-host-local (a
# /24 per node): the same ADD with node-local IPAM, in the same run. The
# driver is tests/src/bin/cluster-ipam-bench.rs (its header lists what it
# measures): time until every ADD returned, ADD p50/p99 of both, the p99 of
# the first 100 against the last 100 cluster-IPAM ADDs, store requests per
# ADD (etcd's metrics), duplicates (must be 0), addresses left after deleting
# every pod (must be 0).
#
# Knobs (environment): RANGE (10.80.0.0/22), PARALLEL (1: ADD threads per
# node), IDLE_SECS (10: the agents' store requests at rest, measured before
# the ADDs), PLEXUS_LOG (warn). BENCH_BIN=DIR takes plexusd, plexusctl, the
# driver and the plugins from DIR instead of building them.
#
# Binaries: plexusd, plexusctl and the driver from `cargo build --release`,
# the plugins from scripts/build-dist.sh (as shipped), macvlan from
# /usr/lib/cni. Everything runs in namespaces named plx-<driver pid>-*; on
# any exit the driver's processes are stopped by pid, its namespaces deleted
# and its files removed. Nothing touches the root namespace.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
[[ $# -eq 2 ]] || { echo "usage: bench/cluster-ipam.sh NODES PODS_PER_NODE" >&2; exit 2; }
bench_requires bench/cluster-ipam.sh etcd nsenter setsid awk
[[ -x /usr/lib/cni/macvlan ]] || { echo "bench/cluster-ipam.sh: /usr/lib/cni/macvlan missing (scripts/install-deps.sh)" >&2; exit 1; }

if [[ -n ${BENCH_BIN:-} ]]; then
    bin=$BENCH_BIN plugins=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd -p plexusctl &&
        cargo build -q --release -p plexus-tests --bin cluster-ipam-bench)
    bin=$root/target/release
    plugins=$("$root/scripts/build-dist.sh")
fi

tmp=$(mktemp -d /tmp/plexus-bench-cipam.XXXXXX)
driver='' dpid=''
cleanup() {
    set +e
    bench_stop_driver "$driver" "$dpid" "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench/cluster-ipam.sh $*: $(uptime)"
TMPDIR=$tmp PLEXUS_BIN_DIR=$bin PLEXUS_PLUGIN_DIR=$plugins PLEXUS_LOG=${PLEXUS_LOG:-warn} \
    setsid "$bin/cluster-ipam-bench" "$1" "$2" &
driver=$! dpid=$!
status=0
wait "$driver" || status=$?
driver=''
[[ $status -eq 0 ]] || exit "$status"
echo "bench/cluster-ipam.sh $*: done: $(uptime)"
