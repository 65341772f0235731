#!/usr/bin/env bash
# bench/routed-plugin.sh: ADD and DEL latency of plexus-bgp-routes (addresses
# from plexusd's block IPAM over its control socket) against plexus-bridge +
# plexus-host-local, side by side in one run, on one node.
#
#   sudo bench/routed-plugin.sh [N]       N pods (default 100)
#
# Throwaway namespaces (plxbench-*-PID): a "lan" netns with a bridge, etcd
# (.2) and the node (.10) running a release plexusd with a routed pool
# (records written straight into etcd in plexus-ipam's layout), and N pod
# netns. Plugins as shipped (scripts/build-dist.sh). For each pod it runs ADD
# with both plugins (alternating which goes first), then DEL for each pod,
# again alternating, each plugin on its own interface in the pod. Wall time
# per call with bash's $EPOCHREALTIME; peak RSS of the plugin under GNU time.
# Prints p50/p99 per plugin and operation, and the ratios routed / bridge
# (the routed plugin's ADD includes plexusd's store write of the address:
# one etcd compare-and-swap). Nothing touches the root namespace; processes
# are killed by pid.
set -euo pipefail

N=${1:-100}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=bench/routed-plugin.sh
. "$root/bench/lib/routed-env.sh"
need /usr/bin/time
bin=$("$root/scripts/build-dist.sh")
routed_env_init plexus-bench-rplugin
etcdns=plxbench-etcd-$tag node=plxbench-node-$tag
mkns "$etcdns"; plug "$etcdns" "$etcd_ip/24"
mkns "$node"; plug "$node" 10.200.0.10/24
pods=()
for i in $(seq 1 "$N"); do
    mkns "plxbench-pod-$tag-$i"
    pods+=("plxbench-pod-$tag-$i")
done
start_etcd "$etcdns"
etcd_put /plexus/routed/pools/default '{"name":"default","cidr":"10.96.0.0/16","blockSize":26}'
etcd_put /plexus/routed/bgp/config '{"asn":64512,"nodeToNodeMesh":true}'
start_plexusd "$node" 10.200.0.10

cat >"$tmp/routed.json" <<EOF
{"cniVersion":"1.1.0","name":"bench-routed","type":"plexus-bgp-routes","runDir":"$tmp/run","mtu":1500}
EOF
cat >"$tmp/bridge.json" <<EOF
{"cniVersion":"1.1.0","name":"bench-bridge","type":"plexus-bridge","bridge":"plxb0","isGateway":true,
 "isDefaultGateway":true,"mtu":1500,
 "ipam":{"type":"plexus-host-local","subnet":"10.201.0.0/16","dataDir":"$tmp/ipam"}}
EOF

# call IMPL CMD POD: appends "seconds rss_kib" to $tmp/IMPL-CMD.
call() {
    if [[ $1 == routed ]]; then
        bench_timed_call bench/routed-plugin.sh "$1" "$2" "$3" "$bin/plexus-bgp-routes" "$bin" eth0
    else
        bench_timed_call bench/routed-plugin.sh "$1" "$2" "$3" "$bin/plexus-bridge" "$bin" eth1
    fi
}
run_all() { bench_alternate routed bridge "$1"; }
export -f call run_all bench_timed_call bench_alternate
export tmp bin
echo "bench/routed-plugin.sh: $N pods, ADD then DEL; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
nsenter --net=/var/run/netns/"$node" bash -c "pods=(${pods[*]}); run_all ADD; run_all DEL"

printf "%-7s %-4s %10s %10s %12s %10s\n" plugin op p50_ms p99_ms peakRSS_KiB total_s
declare -A S
for impl in routed bridge; do
    for op in ADD DEL; do
        S[$impl-$op]=$(stats "$tmp/$impl-$op")
        read -r p50 p99 rss sum <<<"${S[$impl-$op]}"
        printf "%-7s %-4s %10s %10s %12s %10s\n" "$impl" "$op" "$p50" "$p99" "$rss" "$sum"
    done
done
for op in ADD DEL; do
    read -r o50 o99 _ _ <<<"${S[routed-$op]}"
    read -r r50 r99 _ _ <<<"${S[bridge-$op]}"
    echo "ratio $op (routed/bridge): p50 $(ratio "$o50" "$r50")  p99 $(ratio "$o99" "$r99")"
done
read -r oa _ _ _ <<<"${S[routed-ADD]}"; read -r od _ _ _ <<<"${S[routed-DEL]}"
read -r ra _ _ _ <<<"${S[bridge-ADD]}"; read -r rd _ _ _ <<<"${S[bridge-DEL]}"
ot=$(awk -v a="$oa" -v b="$od" 'BEGIN{print a+b}'); rt=$(awk -v a="$ra" -v b="$rd" 'BEGIN{print a+b}')
echo "ADD+DEL p50: routed ${ot} ms, bridge ${rt} ms, ratio $(ratio "$ot" "$rt")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
