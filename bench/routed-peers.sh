#!/usr/bin/env bash
# bench/routed-peers.sh: plexusd's memory with many BGP peers and routes:
# P global peers (default 100) that announce R routes in all (default
# 10,000; R/P distinct /24s each), all installed in the node's kernel.
#
#   sudo bench/routed-peers.sh [P] [R]
#
# Throwaway namespaces (plxbench-*-PID) on a private /16 underlay: a "lan"
# netns with a bridge, etcd (10.200.0.2), the plexusd node (10.200.0.10, a
# release build) and one peers netns holding P addresses 10.200.1.1.. with
# ONE BIRD 2 process that runs P BGP protocols, each bound to its own
# address (`local ADDR`) and exporting its own static protocol of R/P
# routes. plexusd learns the P peers from the store (global peers written
# straight into etcd in plexus-ipam's layout). The script waits until BIRD
# shows P sessions Established and the node's kernel holds R routes of
# protocol 114, then prints plexusd's RSS (VmRSS) and peak (VmHWM), the time
# from BIRD's start to the last route, and the machine's load. Nothing
# touches the root namespace; processes are killed by pid.
set -euo pipefail

P=${1:-100}
R=${2:-10000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "bench/routed-peers.sh: needs root" >&2; exit 1; }
for c in etcd curl bird birdc nsenter awk; do
    command -v "$c" >/dev/null || { echo "bench/routed-peers.sh: $c missing (scripts/install-deps.sh)" >&2; exit 1; }
done
(( P >= 1 && P <= 250 )) || { echo "bench/routed-peers.sh: 1..250 peers" >&2; exit 1; }
per=$(( R / P ))
R=$(( per * P ))
if [[ -n ${BENCH_BIN:-} ]]; then
    agent_bin=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd)
    agent_bin=$root/target/release
fi

tag=$$
lan=plxbench-lan-$tag etcdns=plxbench-etcd-$tag node=plxbench-node-$tag peers=plxbench-peers-$tag
tmp=$(mktemp -d /tmp/plexus-bench-peers.XXXXXX)
netns=()
pids=()
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
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    [[ -n ${KEEP:-} ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; netns+=("$1"); }
plug_n=0
plug() { # NS IP: eth0 in NS on the lan bridge
    plug_n=$((plug_n + 1))
    ip -n "$lan" link add "v$plug_n" type veth peer name eth0 netns "$1"
    ip -n "$lan" link set "v$plug_n" master lan0 up
    ip -n "$1" addr add "$2/16" dev eth0
    ip -n "$1" link set eth0 up
}
mkns "$lan"
ip -n "$lan" link add lan0 type bridge
ip -n "$lan" link set lan0 up
mkns "$etcdns"; plug "$etcdns" "$etcd_ip"
mkns "$node"; plug "$node" 10.200.0.10
mkns "$peers"; plug "$peers" 10.200.1.1
for ((i = 2; i <= P; i++)); do echo "address add 10.200.1.$i/16 dev eth0"; done | ip -n "$peers" -batch -

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
for ((i = 1; i <= P; i++)); do
    etcd_put "/plexus/routed/bgp/peers/10.200.1.$i" "{\"address\":\"10.200.1.$i\",\"asn\":65000}"
done

nsenter --net=/var/run/netns/"$node" "$agent_bin/plexusd" --node-name n1 \
    --store "etcd://$etcd_ip:2379" --public-ip 10.200.0.10 --run-dir "$tmp/run" \
    --log-level warn >"$tmp/plexusd.log" 2>&1 &
pids+=($!)
agent_pid=$!
for _ in $(seq 600); do [[ -e $tmp/run/ready ]] && break; sleep 0.05; done
[[ -e $tmp/run/ready ]] || { echo "plexusd not ready:" >&2; cat "$tmp/plexusd.log" >&2; exit 1; }
idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)

{
    echo 'router id 10.200.1.1;'
    echo 'protocol device {}'
    k=0
    for ((i = 1; i <= P; i++)); do
        echo "protocol static feed$i { ipv4;"
        for ((j = 0; j < per; j++, k++)); do
            echo "route 172.$((16 + k / 256)).$((k % 256)).0/24 blackhole;"
        done
        echo '}'
        echo "protocol bgp peer$i { local 10.200.1.$i as 65000; neighbor 10.200.0.10 as 64512;"
        echo "  ipv4 { import none; export where proto = \"feed$i\"; }; }"
    done
} >"$tmp/bird.conf"
t0=$EPOCHREALTIME
nsenter --net=/var/run/netns/"$peers" bird -f -c "$tmp/bird.conf" -s "$tmp/bird.ctl" -P "$tmp/bird.pid" \
    >"$tmp/bird.log" 2>&1 &
pids+=($!)
birdc_() { ip netns exec "$peers" birdc -s "$tmp/bird.ctl" "$@"; }
count() { ip -n "$node" route show proto 114 | wc -l; }
established=0 routes=0
for _ in $(seq 1200); do
    established=$(birdc_ show protocols 2>/dev/null | grep -c Established || true)
    routes=$(count)
    [[ $established -ge $P && $routes -ge $R ]] && break
    sleep 0.1
done
t1=$EPOCHREALTIME
[[ $established -ge $P && $routes -ge $R ]] || {
    echo "bench/routed-peers.sh: only $established/$P sessions and $routes/$R routes after 120 s" >&2
    tail -20 "$tmp/plexusd.log" >&2; exit 1; }
sleep 2  # let the last updates settle before reading memory
echo "peers: $P Established (one BIRD, $P protocols on $P addresses); routes: $routes of protocol 114 in the kernel"
echo "BIRD start -> all sessions up and all routes in the kernel: $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") s"
echo "plexusd RSS idle (before the peers): $idle_rss KiB"
echo "plexusd RSS now: $(awk '/VmRSS/ {print $2, $3}' /proc/$agent_pid/status)  peak (VmHWM): $(awk '/VmHWM/ {print $2, $3}' /proc/$agent_pid/status)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
