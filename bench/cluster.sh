#!/usr/bin/env bash
# bench/cluster.sh: Plexus at cluster scale, both networks at once.
#
#   sudo bench/cluster.sh NODES PODS_PER_NODE        (e.g. 50 4; try 3 2 first)
#
# A simulated cluster (tests/src/cluster, the harness the integration tests
# use): an underlay netns with a bridge, a real etcd in its own netns, one
# netns per node running plexusd with the flannel-style overlay (vxlan) and
# the calico-style routed network (a /26-block pool, iBGP full mesh), and
# PODS_PER_NODE pods per node, each with eth0 on the overlay (plexus-vxlan)
# and net1 on the routed network (plexus-bgp-routes). The driver is
# tests/src/bin/cluster-bench (its header lists what it measures): time from
# the agents' start to all pairs of pods reaching each other on both
# networks; each agent's RSS and CPU; store requests per node per minute at
# rest; ADD latency with 10 and 250 pods on a node; iperf3 pod to pod over
# both networks against a plain veth pair.
#
# Knobs (environment): IDLE_SECS (60), ADD_LEVELS (10,250), ADD_ROUNDS (100),
# IPERF_SECS (3), IPERF_ROUNDS (3), REACH_TIMEOUT (120), PLEXUS_LOG (warn);
# BRIDGE_IPMASQ=1 runs the agents without --ip-masq (the bridge then adds an
# nftables masquerade chain per pod, as with flanneld run without it).
# BENCH_BIN=DIR takes plexusd, plexusctl, cluster-bench and the plugins
# from DIR instead of building them (e.g. target/debug, for a quick look).
#
# Binaries: plexusd, plexusctl and the driver from `cargo build --release`,
# the plugins from scripts/build-dist.sh (as shipped). Everything runs in
# namespaces named plx-<driver pid>-*; on any exit (failure and signals
# included) the driver's own processes are stopped by pid, its namespaces
# deleted and its files removed. Nothing touches the root namespace.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
[[ $# -eq 2 ]] || { echo "usage: bench/cluster.sh NODES PODS_PER_NODE" >&2; exit 2; }
bench_requires bench/cluster.sh etcd fping iperf3 nsenter setsid awk

if [[ -n ${BENCH_BIN:-} ]]; then
    bin=$BENCH_BIN plugins=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd -p plexusctl &&
        cargo build -q --release -p plexus-tests --bin cluster-bench)
    bin=$root/target/release
    plugins=$("$root/scripts/build-dist.sh")
fi

# The kernel's ARP and NDP tables are one per machine, shared by every netns,
# with one limit (gc_thresh3, 1024 by default); past it, new entries fail
# ("neighbor table overflow" in dmesg) and the simulated underlay loses
# nodes at random. A real node has its own table; this simulation puts every
# node's in one: about 2 per remote node (eth0, flannel.1) and 4 per pod,
# plus 250-pod nodes for the ADD latency. BENCH_RAISE_NEIGH=1 raises the
# limits (gc_thresh2/3, machine-wide) to fit, and puts them back at the end
# unless another cluster-bench still runs.
need=$(($1 * 2 * $1 + 4 * $1 * $2 + 8 * 250 + 1024))
neigh=(/proc/sys/net/ipv4/neigh/default/gc_thresh2 /proc/sys/net/ipv4/neigh/default/gc_thresh3
       /proc/sys/net/ipv6/neigh/default/gc_thresh2 /proc/sys/net/ipv6/neigh/default/gc_thresh3)
neigh_was=()
if (($(cat /proc/sys/net/ipv4/neigh/default/gc_thresh3) < need)); then
    if [[ -z ${BENCH_RAISE_NEIGH:-} ]]; then
        echo "bench/cluster.sh: $1 nodes x $2 pods need about $need neighbour entries; the kernel's limit" \
            "(net.ipv4.neigh.default.gc_thresh3, machine-wide) is $(cat "${neigh[1]}"). Raise it, or run" \
            "with BENCH_RAISE_NEIGH=1 to let this script raise it for the run." >&2
        exit 1
    fi
    for f in "${neigh[@]}"; do neigh_was+=("$(cat "$f")"); echo "$need" >"$f"; done
    echo "bench/cluster.sh: neighbour table limits (gc_thresh2/3, IPv4 and IPv6) raised to $need for this run"
fi
restore_neigh() {
    ((${#neigh_was[@]})) || return 0
    local others
    others=$(awk -v me="$dpid" '$2 == "(cluster-bench)" && $1 != me' /proc/[0-9]*/stat 2>/dev/null | wc -l)
    ((others == 0)) || return 0
    local i
    for i in "${!neigh[@]}"; do
        [[ $(cat "${neigh[$i]}") == "$need" ]] && echo "${neigh_was[$i]}" >"${neigh[$i]}"
    done
}

tmp=$(mktemp -d /tmp/plexus-bench-cluster.XXXXXX)
driver='' dpid=''
cleanup() {
    set +e
    bench_stop_driver "$driver" "$dpid" "$tmp"
    restore_neigh
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench/cluster.sh $*: $(uptime)"
# The harness's temporary directories (etcd data, run dirs, CNI state) go
# under $tmp. setsid: a terminal's Ctrl-C reaches this script, whose trap
# stops the driver's processes in order, not the driver mid-way.
TMPDIR=$tmp PLEXUS_BIN_DIR=$bin PLEXUS_PLUGIN_DIR=$plugins PLEXUS_LOG=${PLEXUS_LOG:-warn} \
    setsid "$bin/cluster-bench" "$1" "$2" &
driver=$! dpid=$!
status=0
wait "$driver" || status=$?
driver=''
[[ $status -eq 0 ]] || exit "$status"
echo "bench/cluster.sh $*: done: $(uptime)"
