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
[[ $(id -u) -eq 0 ]] || { echo "bench/routed-plugin.sh: needs root" >&2; exit 1; }
for c in etcd curl nsenter awk /usr/bin/time; do
    command -v "$c" >/dev/null || { echo "bench/routed-plugin.sh: $c missing (scripts/install-deps.sh)" >&2; exit 1; }
done
bin=$("$root/scripts/build-dist.sh")
if [[ -n ${BENCH_BIN:-} ]]; then
    agent_bin=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd)
    agent_bin=$root/target/release
fi

tag=$$
lan=plxbench-lan-$tag etcdns=plxbench-etcd-$tag node=plxbench-node-$tag
tmp=$(mktemp -d /tmp/plexus-bench-rplugin.XXXXXX)
netns=()
pids=()
pods=()
etcd_ip=10.200.0.2
etcd_url=http://$etcd_ip:2379

mine() { [[ $(awk '{print $4}' "/proc/$1/stat" 2>/dev/null) == "$$" ]]; }
cleanup() {
    set +e
    local p
    for p in "${pids[@]}"; do mine "$p" && kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${pids[@]}"; do mine "$p" && kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    for n in "${pods[@]}" "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    [[ -n ${KEEP:-} ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; netns+=("$1"); }
plug_n=0
plug() { # NS IP: eth0 in NS on the lan bridge
    plug_n=$((plug_n + 1))
    ip -n "$lan" link add "v$plug_n" type veth peer name eth0 netns "$1"
    ip -n "$lan" link set "v$plug_n" master lan0 up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
mkns "$lan"
ip -n "$lan" link add lan0 type bridge
ip -n "$lan" link set lan0 up
mkns "$etcdns"; plug "$etcdns" "$etcd_ip"
mkns "$node"; plug "$node" 10.200.0.10
for i in $(seq 1 "$N"); do
    ip netns add "plxbench-pod-$tag-$i"
    pods+=("plxbench-pod-$tag-$i")
done

nsenter --net=/var/run/netns/"$etcdns" etcd --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bench=http://127.0.0.1:2380 >"$tmp/etcd.log" 2>&1 &
pids+=($!)
b64() { printf %s "$1" | base64 -w0; }
etcd_api() { ip netns exec "$etcdns" curl -sf -X POST "$etcd_url$1" -d "$2"; }
for _ in $(seq 100); do etcd_api /v3/kv/range "{\"key\":\"$(b64 x)\"}" >/dev/null 2>&1 && break; sleep 0.1; done
etcd_put() { etcd_api /v3/kv/put "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}" >/dev/null; }
etcd_put /plexus/routed/pools/default '{"name":"default","cidr":"10.96.0.0/16","blockSize":26}'
etcd_put /plexus/routed/bgp/config '{"asn":64512,"nodeToNodeMesh":true}'

nsenter --net=/var/run/netns/"$node" "$agent_bin/plexusd" --node-name n1 \
    --store "etcd://$etcd_ip:2379" --public-ip 10.200.0.10 --run-dir "$tmp/run" \
    --log-level warn >"$tmp/plexusd.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do [[ -e $tmp/run/ready ]] && break; sleep 0.05; done
[[ -e $tmp/run/ready ]] || { echo "plexusd not ready:" >&2; cat "$tmp/plexusd.log" >&2; exit 1; }

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
    local impl=$1 cmd=$2 pod=$3 plugin ifname
    if [[ $impl == routed ]]; then plugin=plexus-bgp-routes ifname=eth0
    else plugin=plexus-bridge ifname=eth1; fi
    local t0=$EPOCHREALTIME
    if ! CNI_COMMAND=$cmd CNI_CONTAINERID="bench-$pod" CNI_NETNS="/var/run/netns/$pod" \
        CNI_IFNAME=$ifname CNI_PATH="$bin" \
        /usr/bin/time -f %M -o "$tmp/rss" "$bin/$plugin" <"$tmp/$impl.json" >"$tmp/out" 2>"$tmp/err"; then
        echo "bench/routed-plugin.sh: $impl $cmd $pod failed:" >&2
        cat "$tmp/out" "$tmp/err" >&2
        exit 1
    fi
    local t1=$EPOCHREALTIME
    echo "$t0 $t1 $(tail -n1 "$tmp/rss")" | awk '{printf "%.6f %d\n", $2-$1, $3}' >>"$tmp/$impl-$cmd"
}
run_all() { # CMD
    local i=0
    for p in "${pods[@]}"; do
        if (( i % 2 == 0 )); then call routed "$1" "$p"; call bridge "$1" "$p"
        else call bridge "$1" "$p"; call routed "$1" "$p"; fi
        i=$((i + 1))
    done
}
export -f call run_all
export tmp bin
echo "bench/routed-plugin.sh: $N pods, ADD then DEL; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
nsenter --net=/var/run/netns/"$node" bash -c "pods=(${pods[*]}); run_all ADD; run_all DEL"

stats() { # file -> "p50_ms p99_ms maxrss_kib sum_s"
    sort -n "$1" | awk '{t[NR]=$1; s+=$1; if ($2>m) m=$2}
        END {i50=int(NR*0.50+0.5); if(i50<1)i50=1; i99=int(NR*0.99+0.5); if(i99<1)i99=1; if(i99>NR)i99=NR;
             printf "%.2f %.2f %d %.3f\n", t[i50]*1000, t[i99]*1000, m, s}'
}
printf "%-7s %-4s %10s %10s %12s %10s\n" plugin op p50_ms p99_ms peakRSS_KiB total_s
declare -A S
for impl in routed bridge; do
    for op in ADD DEL; do
        S[$impl-$op]=$(stats "$tmp/$impl-$op")
        read -r p50 p99 rss sum <<<"${S[$impl-$op]}"
        printf "%-7s %-4s %10s %10s %12s %10s\n" "$impl" "$op" "$p50" "$p99" "$rss" "$sum"
    done
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b>0)?a/b:0}'; }
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
