#!/usr/bin/env bash
# bench/bridge.sh: plexus-bridge + plexus-host-local against the reference
# bridge + host-local (/usr/lib/cni), side by side in one run.
#
#   sudo bench/bridge.sh [N]            N pods (default 100)
#
# Builds our plugins as shipped (scripts/build-dist.sh: static, size-optimised),
# creates a throwaway node netns (plxbench-node-PID)
# and N pod netns, then for each pod runs ADD with both implementations
# (alternating which goes first), and afterwards DEL for each pod, again
# alternating. Each implementation has its own bridge and subnet in the same
# node netns. Every plugin call runs under GNU time (%M: peak RSS in KiB of
# the plugin or of its IPAM child, whichever is larger); wall time is taken
# with bash's $EPOCHREALTIME around the call. Prints p50/p99 of ADD and DEL
# latency, the max peak RSS, and ours/reference ratios. The target is a ratio
# of at most 0.5 for time and memory. Namespaces and temp files are removed
# on exit (trap). Environment: BENCH_IPMASQ=1 adds "ipMasq": true to both
# configs (the reference then uses iptables, we use nftables).
#
# Last, it times N bare veth deletions (`ip link del`, minus the cost of an
# `ip` call that changes nothing) in the same node netns: the kernel's own
# time to delete and free a veth. The reference's DEL waits for all of it;
# ours returns once the veth is gone and leaves the kernel's final free
# (rcu_barrier) to a detached process (plexus_netlink::detached).
set -euo pipefail

N=${1:-100}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
[[ $(id -u) -eq 0 ]] || { echo "bench/bridge.sh: needs root" >&2; exit 1; }
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || {
    echo "bench/bridge.sh: reference plugins missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "bench/bridge.sh: GNU time missing (apt-get install time)" >&2; exit 1; }

bin=$("$root/scripts/build-dist.sh")

node="plxbench-node-$$"
tmp=$(mktemp -d /tmp/plexus-bench.XXXXXX)
pods=()
cleanup() {
    for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null || true; done
    ip netns del "$node" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

ip netns add "$node"
ip -n "$node" link set lo up
for i in $(seq 1 "$N"); do
    p="plxbench-pod-$$-$i"
    ip netns add "$p"
    pods+=("$p")
done

masq=false
[[ ${BENCH_IPMASQ:-0} == 1 ]] && masq=true

conf() { # impl bridge subnet ipam
    cat <<EOF
{"cniVersion":"1.0.0","name":"bench-$1","type":"$2","bridge":"$3","isGateway":true,
 "isDefaultGateway":true,"ipMasq":$masq,"mtu":1500,
 "ipam":{"type":"$5","subnet":"$4","dataDir":"$tmp/ipam-$1"}}
EOF
}
conf ours plexus-bridge plxb-ours 10.201.0.0/16 plexus-host-local >"$tmp/ours.json"
conf ref bridge plxb-ref 10.202.0.0/16 host-local >"$tmp/ref.json"

# call IMPL CMD POD: appends "seconds rss_kib" to $tmp/IMPL-CMD.
call() {
    if [[ $1 == ours ]]; then
        bench_timed_call bench/bridge.sh "$1" "$2" "$3" "$bin/plexus-bridge" "$bin" "eth-$1"
    else
        bench_timed_call bench/bridge.sh "$1" "$2" "$3" /usr/lib/cni/bridge /usr/lib/cni "eth-$1"
    fi
}
run_all() { bench_alternate ours ref "$1"; }

# Everything below runs inside the node netns: re-enter this script's
# functions there through nsenter of a child bash.
export -f call run_all bench_timed_call bench_alternate
export tmp bin
run_in_node() { nsenter --net="/var/run/netns/$node" bash -c "$1"; }

echo "bench/bridge.sh: $N pods, ADD then DEL, ours = plexus-bridge + plexus-host-local, ref = /usr/lib/cni bridge + host-local" >&2
pods_list="${pods[*]}"
run_in_node "pods=($pods_list); run_all ADD; run_all DEL"

# The DEL must have left nothing behind.
left=$(ip -n "$node" -o link show | grep -c veth || true)
[[ $left -eq 0 ]] || echo "bench/bridge.sh: WARNING: $left veth(s) left in the node netns" >&2

stats() { # file -> "p50_ms p99_ms maxrss_kib sum_s"
    sort -n "$1" | awk '{t[NR]=$1; s+=$1; if ($2>m) m=$2}
        END {i50=int(NR*0.50+0.5); if(i50<1)i50=1; i99=int(NR*0.99+0.5); if(i99<1)i99=1; if(i99>NR)i99=NR;
             printf "%.2f %.2f %d %.3f\n", t[i50]*1000, t[i99]*1000, m, s}'
}

printf "%-6s %-4s %10s %10s %12s %10s\n" impl op p50_ms p99_ms peakRSS_KiB total_s
declare -A S
for impl in ours ref; do
    for op in ADD DEL; do
        S[$impl-$op]=$(stats "$tmp/$impl-$op")
        read -r p50 p99 rss sum <<<"${S[$impl-$op]}"
        printf "%-6s %-4s %10s %10s %12s %10s\n" "$impl" "$op" "$p50" "$p99" "$rss" "$sum"
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b>0)?a/b:0}'; }
for op in ADD DEL; do
    read -r o50 o99 orss _ <<<"${S[ours-$op]}"
    read -r r50 r99 rrss _ <<<"${S[ref-$op]}"
    echo "ratio $op (ours/ref): p50 $(ratio "$o50" "$r50")  p99 $(ratio "$o99" "$r99")  peakRSS $(ratio "$orss" "$rrss")"
done
read -r _ _ _ oa <<<"${S[ours-ADD]}"; read -r _ _ _ od <<<"${S[ours-DEL]}"
read -r _ _ _ ra <<<"${S[ref-ADD]}"; read -r _ _ _ rd <<<"${S[ref-DEL]}"
ot=$(awk -v a="$oa" -v b="$od" 'BEGIN{print a+b}'); rt=$(awk -v a="$ra" -v b="$rd" 'BEGIN{print a+b}')
orss=$(awk '{if($2>m)m=$2} END{print m}' "$tmp"/ours-*); rrss=$(awk '{if($2>m)m=$2} END{print m}' "$tmp"/ref-*)
echo "ADD+DEL total: ours ${ot}s ref ${rt}s ratio $(ratio "$ot" "$rt") (target <= 0.50)"
echo "peak RSS: ours ${orss} KiB ref ${rrss} KiB ratio $(ratio "$orss" "$rrss") (target <= 0.50)"

# The kernel's share of DEL: delete N idle veth pairs with `ip`, and subtract
# the time of an `ip` call that only reads.
floor() {
    local i t0 t1
    for i in $(seq 1 "$N"); do ip link add plxf$i type veth peer name plxg$i; done
    for i in $(seq 1 "$N"); do
        t0=$EPOCHREALTIME; ip link del plxf$i; t1=$EPOCHREALTIME
        echo "$t0 $t1" | awk '{printf "%.6f 0\n", $2-$1}' >>"$tmp/floor-del"
        t0=$EPOCHREALTIME; ip link show lo >/dev/null; t1=$EPOCHREALTIME
        echo "$t0 $t1" | awk '{printf "%.6f 0\n", $2-$1}' >>"$tmp/floor-ip"
    done
}
export -f floor
export N
run_in_node floor
read -r fdel _ _ _ <<<"$(stats "$tmp/floor-del")"
read -r fip _ _ _ <<<"$(stats "$tmp/floor-ip")"
echo "kernel veth delete (ip link del minus an ip no-op, p50): $(awk -v a="$fdel" -v b="$fip" 'BEGIN{printf "%.2f", a-b}') ms (the reference waits for all of it in DEL; we stop waiting once the link is gone)"
