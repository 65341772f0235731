#!/usr/bin/env bash
# bench/routed.sh: how fast plexusd's routed network puts 10,000 BGP prefixes
# into a node's kernel, side by side with a BIRD node ingesting the same
# update in the same rounds.
#
#   sudo bench/routed.sh [ROUNDS]        (default 3 rounds)
#
# Throwaway namespaces (plxbench-*-PID) on a private underlay: a "lan" netns
# with a bridge, etcd (.2), the plexusd node (.10), a BIRD node (.11, BIRD's
# kernel protocol exporting everything) and an announcer (.13, BIRD with a
# static protocol of N /24s, disabled at start). plexusd learns them as a
# global peer (records written straight into etcd in plexus-ipam's layout).
# Each round enables the static protocol and times, from just before
# `birdc enable`, until each node's kernel holds all N routes (polled with
# `ip route`, ~10-20 ms resolution at this size), then disables it and
# waits for both to be empty. Also: plexusd's peak RSS (VmHWM) at the end.
# Nothing touches the root namespace; processes are killed by pid.
#
# BENCH_BIN=DIR uses a prebuilt plexusd (e.g. target/debug, for a quick look;
# figures need `cargo build --release -p plexusd`, the default).
set -euo pipefail

ROUNDS=${1:-3}
N=${N:-10000}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
bench_requires bench/routed.sh etcd curl bird birdc nsenter awk
if [[ -n ${BENCH_BIN:-} ]]; then
    agent_bin=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd)
    agent_bin=$root/target/release
fi

tag=$$
lan=plxbench-lan-$tag
tmp=$(mktemp -d /tmp/plexus-bench-routed.XXXXXX)
netns=()
pids=()
etcd_ip=10.200.0.2
etcd_url=http://$etcd_ip:2379

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
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
mkns "$lan"
ip -n "$lan" link add lan0 type bridge
ip -n "$lan" link set lan0 up
etcdns=plxbench-etcd-$tag node=plxbench-node-$tag birdnode=plxbench-bird-$tag ann=plxbench-ann-$tag
mkns "$etcdns"; plug "$etcdns" "$etcd_ip"
mkns "$node"; plug "$node" 10.200.0.10
mkns "$birdnode"; plug "$birdnode" 10.200.0.11
mkns "$ann"; plug "$ann" 10.200.0.13

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
etcd_put /plexus/routed/bgp/peers/10.200.0.13 '{"address":"10.200.0.13","asn":65000}'

nsenter --net=/var/run/netns/"$node" "$agent_bin/plexusd" --node-name n1 \
    --store "etcd://$etcd_ip:2379" --public-ip 10.200.0.10 --run-dir "$tmp/run" \
    --log-level warn >"$tmp/plexusd.log" 2>&1 &
pids+=($!)
agent_pid=$!
for _ in $(seq 600); do [[ -e $tmp/run/ready ]] && break; sleep 0.05; done
[[ -e $tmp/run/ready ]] || { echo "plexusd not ready:" >&2; cat "$tmp/plexusd.log" >&2; exit 1; }

cat >"$tmp/birdnode.conf" <<CONF
router id 10.200.0.11;
protocol device {}
protocol kernel k4 { ipv4 { import none; export all; }; }
protocol bgp uplink { local as 64513; neighbor 10.200.0.13 as 65000; ipv4 { import all; export none; }; }
CONF
{
    echo 'router id 10.200.0.13;'
    echo 'protocol device {}'
    echo 'protocol static bulk { disabled; ipv4;'
    for ((i = 0; i < N; i++)); do echo "route 172.$((16 + i / 256)).$((i % 256)).0/24 blackhole;"; done
    echo '}'
    echo 'template bgp feeder { local as 65000; ipv4 { import none; export where proto = "bulk"; }; }'
    echo 'protocol bgp plexus from feeder { neighbor 10.200.0.10 as 64512; }'
    echo 'protocol bgp birdnode from feeder { neighbor 10.200.0.11 as 64513; }'
} >"$tmp/ann.conf"
for b in birdnode ann; do
    [[ $b == ann ]] && ns=$ann || ns=$birdnode
    nsenter --net=/var/run/netns/"$ns" bird -f -c "$tmp/$b.conf" -s "$tmp/$b.ctl" -P "$tmp/$b.pid" \
        >"$tmp/$b.log" 2>&1 &
    pids+=($!)
done
birdc_ann() { ip netns exec "$ann" birdc -s "$tmp/ann.ctl" "$@"; }
for _ in $(seq 300); do
    [[ $(birdc_ann show protocols 2>/dev/null | grep -c Established) -eq 2 ]] && break
    sleep 0.1
done
[[ $(birdc_ann show protocols | grep -c Established) -eq 2 ]] || { birdc_ann show protocols >&2; exit 1; }

count() { ip -n "$1" route show proto "$2" | wc -l; }
now() { echo "$EPOCHREALTIME"; }
printf '%-6s %12s %12s\n' round plexusd_s bird_s
for ((r = 1; r <= ROUNDS; r++)); do
    t0=$(now)
    birdc_ann enable bulk >/dev/null
    tp='' tb=''
    while [[ -z $tp || -z $tb ]]; do
        [[ -z $tp && $(count "$node" 114) -ge $N ]] && tp=$(now)
        [[ -z $tb && $(count "$birdnode" bird) -ge $N ]] && tb=$(now)
    done
    printf '%-6s %12.3f %12.3f\n' "$r" "$(awk "BEGIN{print $tp-$t0}")" "$(awk "BEGIN{print $tb-$t0}")"
    birdc_ann disable bulk >/dev/null
    while [[ $(count "$node" 114) -gt 0 || $(count "$birdnode" bird) -gt 0 ]]; do sleep 0.05; done
done
echo "plexusd peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$agent_pid/status)"
