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
# P BIRD 2 processes, each bound to its own address (`local ADDR`, `strict
# bind`) and exporting its own static protocol of R/P routes (one process
# per peer: BIRD holds one session per neighbor address). plexusd learns
# the P peers from the store (global peers written straight into etcd in
# plexus-ipam's layout). The script waits until the node's kernel holds R
# routes of protocol 114 and every BIRD shows its session Established, then
# prints plexusd's RSS (VmRSS) and peak (VmHWM), the time from the BIRDs'
# start to then, and the machine's load. Nothing touches the root
# namespace; processes are killed by pid (bench/lib/routed-env.sh).
set -euo pipefail

P=${1:-100}
R=${2:-10000}
PEER_AS=${PEER_AS:-65000}  # 64512 (the nodes' AS) makes them iBGP peers
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=bench/routed-peers.sh
. "$root/bench/lib/routed-env.sh"
need bird birdc
(( P >= 1 && P <= 250 )) || die "1..250 peers"
per=$(( R / P ))
R=$(( per * P ))
routed_env_init plexus-bench-peers
etcdns=plxbench-etcd-$tag node=plxbench-node-$tag peers=plxbench-peers-$tag
mkns "$etcdns"; plug "$etcdns" "$etcd_ip/16"
mkns "$node"; plug "$node" 10.200.0.10/16
mkns "$peers"; plug "$peers" 10.200.1.1/16
for ((i = 2; i <= P; i++)); do echo "address add 10.200.1.$i/16 dev eth0"; done | ip -n "$peers" -batch -
start_etcd "$etcdns"
etcd_put /plexus/routed/pools/default '{"name":"default","cidr":"10.96.0.0/16","blockSize":26}'
etcd_put /plexus/routed/bgp/config '{"asn":64512,"nodeToNodeMesh":true}'
for ((i = 1; i <= P; i++)); do
    etcd_put "/plexus/routed/bgp/peers/10.200.1.$i" "{\"address\":\"10.200.1.$i\",\"asn\":$PEER_AS}"
done
start_plexusd "$node" 10.200.0.10
idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$agent_pid/status)

# One BIRD process per peer: BIRD runs one session per neighbor address
# (an object lock), so P protocols to plexusd in one process would wait
# for each other. Each binds only its own address (`strict bind`).
k=0
for ((i = 1; i <= P; i++)); do
    {
        echo "router id 10.200.1.$i;"
        echo 'protocol device {}'
        echo "protocol static feed { ipv4;"
        for ((j = 0; j < per; j++, k++)); do
            echo "route 172.$((16 + k / 256)).$((k % 256)).0/24 blackhole;"
        done
        echo '}'
        echo "protocol bgp plexus { local 10.200.1.$i as $PEER_AS; strict bind yes; neighbor 10.200.0.10 as 64512;"
        echo "  ipv4 { import none; export where proto = \"feed\"; }; }"
    } >"$tmp/bird$i.conf"
done
t0=$EPOCHREALTIME
for ((i = 1; i <= P; i++)); do
    nsenter --net=/var/run/netns/"$peers" bird -f -c "$tmp/bird$i.conf" -s "$tmp/bird$i.ctl" \
        -P "$tmp/bird$i.pid" >"$tmp/bird$i.log" 2>&1 &
    pids+=($!)
done
# Sessions Established, over all the BIRD processes.
up() {
    local i n=0
    for ((i = 1; i <= P; i++)); do
        ip netns exec "$peers" birdc -s "$tmp/bird$i.ctl" show protocols plexus 2>/dev/null \
            | grep -q Established && n=$((n + 1))
    done
    echo "$n"
}
count() { ip -n "$node" route show proto 114 | wc -l; }
established=0 routes=0
deadline=$((SECONDS + 180))
while ((SECONDS < deadline)); do
    routes=$(count)
    if [[ $routes -ge $R ]]; then
        established=$(up)
        [[ $established -ge $P ]] && break
    fi
    sleep 0.2
done
t1=$EPOCHREALTIME
[[ $established -ge $P && $routes -ge $R ]] || {
    echo "bench/routed-peers.sh: only $established/$P sessions and $routes/$R routes after 180 s" >&2
    tail -20 "$tmp/plexusd.log" >&2; exit 1; }
sleep 2  # let the last updates settle before reading memory
echo "peers: $P Established ($P BIRD processes in one netns, one address each); routes: $routes of protocol 114 in the kernel"
echo "BIRD start -> all sessions up and all routes in the kernel: $(awk "BEGIN{printf \"%.2f\", $t1-$t0}") s"
echo "plexusd RSS idle (before the peers): $idle_rss KiB"
echo "plexusd RSS now: $(awk '/VmRSS/ {print $2, $3}' /proc/$agent_pid/status)  peak (VmHWM): $(awk '/VmHWM/ {print $2, $3}' /proc/$agent_pid/status)"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
