#!/usr/bin/env bash
# bench/overlay.sh: plexusd's overlay against its practical floors, in one run.
#
#   sudo bench/overlay.sh [ROUNDS]        (default 5 rounds)
#
# Everything runs in throwaway namespaces (plxbench-*-PID) on a private
# underlay: a "lan" netns with a bridge, an etcd netns (Debian's etcd, with
# --max-txn-ops raised so one transaction can hold 1000 leases), and node
# netns with eth0 into the bridge. Nothing touches the root namespace; no
# packet leaves these namespaces. Namespaces, processes (killed by pid) and
# temp files go on exit.
#
# 1. Programming 1000 remote nodes. One etcd transaction (the v3 JSON API,
#    POST /v3/kv/txn) writes 1000 leases in flannel's format under a 24 h etcd
#    lease; we time from just before the POST until the agent's node holds all
#    1000 onlink routes, 1000 permanent neighbours and 1000 FDB entries
#    (polled with ip/bridge, ~5 ms resolution). One range delete removes them
#    and we wait for the entries to go before the next round. Side by side, in
#    the same rounds: `ip -batch` (neighbours, routes) + `bridge -batch` (FDB)
#    doing the same 3000 operations on an identical flannel.1 device in
#    another netns. Target: agent ≤ 3× batch.
# 2. The agent's peak RSS (VmHWM) holding 1000 remote nodes (target < 20 MiB)
#    and its idle CPU over IDLE_SECS (default 10) afterwards.
# 3. Pod-to-pod TCP throughput (iperf3, IPERF_SECS each, default 3) across
#    two simulated nodes: VXLAN, VXLAN with DirectRouting, and a plain veth
#    pair between two netns, alternating in every round; medians and ratios
#    to the veth pair.
#
# Binaries: plexusd from `cargo build --release`, the plugins from
# scripts/build-dist.sh (as shipped). BENCH_BIN=DIR uses prebuilt binaries
# from DIR instead (e.g. target/debug, for a quick look; not for figures).
set -euo pipefail

ROUNDS=${1:-5}
IDLE_SECS=${IDLE_SECS:-10}
IPERF_SECS=${IPERF_SECS:-3}
N=1000
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/bench/lib.sh"
bench_requires bench/overlay.sh etcd curl jq iperf3 nsenter bridge awk

if [[ -n ${BENCH_BIN:-} ]]; then
    agent_bin=$BENCH_BIN; plugin_bin=$BENCH_BIN
else
    (cd "$root" && cargo build -q --release -p plexusd)
    agent_bin=$root/target/release
    plugin_bin=$("$root/scripts/build-dist.sh")
fi

tag=$$
lan=plxbench-lan-$tag
etcdns=plxbench-etcd-$tag
tmp=$(mktemp -d /tmp/plexus-bench-overlay.XXXXXX)
netns=("$lan" "$etcdns")
pids=()
etcd_ip=10.200.0.2
etcd_url=http://$etcd_ip:2379

cleanup() {
    set +e
    # Our own children only, by pid: SIGTERM, SIGKILL for any still running
    # after 10 s, then a wait that reaps them (no zombies left behind).
    local p live
    for p in "${pids[@]}"; do mine "$p" && kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 100); do
        live=0
        for p in "${pids[@]}"; do
            mine "$p" && [[ $(awk '{print $3}' "/proc/$p/stat") != Z ]] && live=1
        done
        ((live)) || break
        sleep 0.1
    done
    for p in "${pids[@]}"; do mine "$p" && kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; netns+=("$1"); }
# plug NS IP: eth0 in NS on the lan bridge
plug_n=0
plug() {
    plug_n=$((plug_n + 1))
    ip -n "$lan" link add "v$plug_n" type veth peer name eth0 netns "$1"
    ip -n "$lan" link set "v$plug_n" master lan0 up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
    ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1
}

mkns "$lan"
ip -n "$lan" link add lan0 type bridge
ip -n "$lan" link set lan0 up
mkns "$etcdns"
plug "$etcdns" "$etcd_ip"
nsenter --net=/var/run/netns/"$etcdns" etcd --name bench --data-dir "$tmp/etcd" \
    --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bench=http://127.0.0.1:2380 --max-txn-ops 4096 \
    >"$tmp/etcd.log" 2>&1 &
pids+=($!)

etcd_api() { # PATH JSON
    ip netns exec "$etcdns" curl -sf -X POST "$etcd_url$1" -d "$2"
}
b64() { printf %s "$1" | base64 -w0; }
for _ in $(seq 100); do etcd_api /v3/kv/range "{\"key\":\"$(b64 x)\"}" >/dev/null 2>&1 && break; sleep 0.1; done
etcd_put() { etcd_api /v3/kv/put "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}" >/dev/null; }

declare -A agent_pid
# agent NODE PREFIX IP: start plexusd, wait until ready
agent() {
    mkdir -p "$tmp/$1"
    nsenter --net=/var/run/netns/"$1" "$agent_bin/plexusd" --node-name "$1" \
        --store "etcd://$etcd_ip:2379" --etcd-prefix "$2" --public-ip "$3" \
        --run-dir "$tmp/$1/run" --log-level warn >"$tmp/$1/plexusd.log" 2>&1 &
    pids+=($!)
    agent_pid[$1]=$!
    for _ in $(seq 600); do [[ -e $tmp/$1/run/ready ]] && return; sleep 0.05; done
    echo "bench/overlay.sh: plexusd on $1 not ready:" >&2; cat "$tmp/$1/plexusd.log" >&2; exit 1
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.6f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { echo "$EPOCHREALTIME"; }
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }   # awk reads iperf3's 1.2e+10

########## 1. 1000 remote leases ##########
scale=plxbench-scale-$tag
batch=plxbench-batch-$tag
mkns "$scale"; plug "$scale" 10.200.0.10
mkns "$batch"; plug "$batch" 10.200.0.11
sprefix=/bench/scale
# The agent's own subnet from 10.100.x; the remote leases sit in 10.64-10.67.
etcd_put "$sprefix/config" '{"Network":"10.64.0.0/10","SubnetMin":"10.100.0.0","SubnetMax":"10.100.255.0","Backend":{"Type":"vxlan"}}'
agent "$scale" "$sprefix" 10.200.0.10
scale_pid=${agent_pid[$scale]}

lease_id=$(etcd_api /v3/lease/grant '{"TTL":86400}' | jq -r .ID)
jq -nc --arg p "$sprefix/subnets/" --arg lease "$lease_id" --argjson n $N '
  def hex2: ("0123456789abcdef" | split("")) as $d | $d[(. / 16 | floor)] + $d[. % 16];
  {success: [range(1; $n + 1) as $i
    | ($i / 256 | floor) as $hi | ($i % 256) as $lo
    | {requestPut: {
        key: ("\($p)10.\(64 + $hi).\($lo).0-24" | @base64),
        value: ({PublicIP: "172.16.\($hi).\($lo)", PublicIPv6: null, BackendType: "vxlan",
                 BackendData: {VNI: 1, VtepMAC: "0e:00:00:00:\($hi | hex2):\($lo | hex2)"}} | tojson | @base64),
        lease: $lease}}]}' >"$tmp/txn-put.json"
jq -nc --arg k "$sprefix/subnets/10.6" --arg e "$sprefix/subnets/10.7" \
    '{success: [{requestDeleteRange: {key: ($k | @base64), range_end: ($e | @base64)}}]}' >"$tmp/txn-del.json"

# The same 3000 operations as batch files.
: >"$tmp/neigh.batch"; : >"$tmp/fdb.batch"; : >"$tmp/route.batch"
for i in $(seq 1 $N); do
    hi=$((i / 256)); lo=$((i % 256)); mac=$(printf '0e:00:00:00:%02x:%02x' $hi $lo)
    echo "neigh add 10.$((64 + hi)).$lo.0 lladdr $mac dev flannel.1 nud permanent" >>"$tmp/neigh.batch"
    echo "fdb add $mac dev flannel.1 dst 172.16.$hi.$lo self permanent" >>"$tmp/fdb.batch"
    echo "route add 10.$((64 + hi)).$lo.0/24 via 10.$((64 + hi)).$lo.0 dev flannel.1 onlink" >>"$tmp/route.batch"
done

counts() { # NS: routes neighbours fdb
    echo "$(ip -n "$1" route show dev flannel.1 2>/dev/null | grep -c onlink)" \
         "$(ip -n "$1" neigh show dev flannel.1 nud permanent 2>/dev/null | grep -c lladdr)" \
         "$(bridge -n "$1" fdb show dev flannel.1 2>/dev/null | grep -c ' dst ')"
}
wait_counts() { # NS WANT: poll until all three counts are WANT
    local r n f
    while :; do
        read -r r n f < <(counts "$1")
        [[ $r == "$2" && $n == "$2" && $f == "$2" ]] && return
        sleep 0.005
    done
}
base=$(counts "$scale" | awk '{print $1}')   # remote leases before (none)
flannel_dev() { # NS: a fresh flannel.1 as the agent makes it
    ip -n "$1" link del flannel.1 2>/dev/null || true
    ip -n "$1" link add flannel.1 type vxlan id 1 local 10.200.0.11 dev eth0 dstport 8472 nolearning
    ip -n "$1" link set flannel.1 mtu 1450 up
}

: >"$tmp/agent.times"; : >"$tmp/batch.times"
for r in $(seq 1 "$ROUNDS"); do
    t0=$(now)
    etcd_api /v3/kv/txn @"$tmp/txn-put.json" >/dev/null
    wait_counts "$scale" $((N + base))
    t1=$(now)
    { calc "$t1 - $t0"; echo; } >>"$tmp/agent.times"
    etcd_api /v3/kv/txn @"$tmp/txn-del.json" >/dev/null
    wait_counts "$scale" "$base"

    flannel_dev "$batch"
    t0=$(now)
    ip -n "$batch" -batch "$tmp/neigh.batch"
    bridge -n "$batch" -batch "$tmp/fdb.batch"
    ip -n "$batch" -batch "$tmp/route.batch"
    t1=$(now)
    [[ $(counts "$batch") == "$N $N $N" ]] || { echo "batch run incomplete: $(counts "$batch")" >&2; exit 1; }
    { calc "$t1 - $t0"; echo; } >>"$tmp/batch.times"
done
agent_med=$(median <"$tmp/agent.times")
batch_med=$(median <"$tmp/batch.times")

########## 2. memory and idle CPU with 1000 remote nodes ##########
etcd_api /v3/kv/txn @"$tmp/txn-put.json" >/dev/null
wait_counts "$scale" $((N + base))
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$scale_pid/stat"; }
c0=$(ticks); sleep "$IDLE_SECS"; c1=$(ticks)
idle_cpu=$(calc "100 * ($c1 - $c0) / $hz / $IDLE_SECS")
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$scale_pid/status")
rss_kib=$(awk '/^VmRSS/ {print $2}' "/proc/$scale_pid/status")

########## 3. pod-to-pod throughput ##########
# pod NODE NAME VAR: a pod netns attached through plexus-vxlan; its IPv4 goes to $VAR
pod() {
    local node=$1 name=$2 p=plxbench-$2-$tag
    mkns "$p"
    cat >"$tmp/$name.conf" <<EOF
{"cniVersion":"1.0.0","name":"cbr0","type":"plexus-vxlan","subnetFile":"$tmp/$node/run/subnet.env",
 "dataDir":"$tmp/$name-vxlan","ipam":{"dataDir":"$tmp/$name-ipam"},"delegate":{"isDefaultGateway":true}}
EOF
    CNI_COMMAND=ADD CNI_CONTAINERID="bench-$name" CNI_NETNS="/var/run/netns/$p" CNI_IFNAME=eth0 \
        CNI_PATH="$plugin_bin" nsenter --net=/var/run/netns/"$node" "$plugin_bin/plexus-vxlan" \
        <"$tmp/$name.conf" >"$tmp/$name.result"
    printf -v "$3" %s "$(jq -r '.ips[0].address | split("/")[0]' "$tmp/$name.result")"
}
# two_nodes MODE PREFIX CONFIG IP1 IP2: agents + one pod each; sets srv_MODE, cli_MODE, ip_MODE
two_nodes() {
    local n1=plxbench-$1a-$tag n2=plxbench-$1b-$tag
    mkns "$n1"; plug "$n1" "$4"
    mkns "$n2"; plug "$n2" "$5"
    etcd_put "$2/config" "$3"
    agent "$n1" "$2" "$4"
    agent "$n2" "$2" "$5"
    pod "$n1" "$1-c" unused
    pod "$n2" "$1-s" "ip_$1"
    printf -v "srv_$1" %s "plxbench-$1-s-$tag"
    printf -v "cli_$1" %s "plxbench-$1-c-$tag"
}
two_nodes vxlan /bench/vxlan '{"Network":"10.10.0.0/16","Backend":{"Type":"vxlan"}}' 10.200.0.20 10.200.0.21
two_nodes direct /bench/direct '{"Network":"10.11.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}' 10.200.0.22 10.200.0.23
# The floor: a veth pair straight between two netns.
mkns plxbench-veth-c-$tag; mkns plxbench-veth-s-$tag
ip -n plxbench-veth-c-$tag link add eth0 type veth peer name eth0 netns plxbench-veth-s-$tag
ip -n plxbench-veth-c-$tag addr add 10.99.0.1/24 dev eth0
ip -n plxbench-veth-s-$tag addr add 10.99.0.2/24 dev eth0
ip -n plxbench-veth-c-$tag link set eth0 up
ip -n plxbench-veth-s-$tag link set eth0 up
ip_veth=10.99.0.2 srv_veth=plxbench-veth-s-$tag cli_veth=plxbench-veth-c-$tag

for m in vxlan direct veth; do
    srv=$(eval echo "\$srv_$m")
    nsenter --net=/var/run/netns/"$srv" iperf3 -s -p 5201 >/dev/null 2>&1 &
    pids+=($!)
done
sleep 0.5
for m in vxlan direct veth; do : >"$tmp/$m.bps"; done
for r in $(seq 1 "$ROUNDS"); do
    for m in vxlan direct veth; do
        cli=$(eval echo "\$cli_$m"); ip=$(eval echo "\$ip_$m")
        ip netns exec "$cli" iperf3 -c "$ip" -p 5201 -t "$IPERF_SECS" -J \
            | jq '.end.sum_received.bits_per_second' >>"$tmp/$m.bps"
    done
done
vx=$(median <"$tmp/vxlan.bps"); dr=$(median <"$tmp/direct.bps"); ve=$(median <"$tmp/veth.bps")

########## report ##########
printf '\nbench/overlay.sh: %d rounds, %d remote leases\n\n' "$ROUNDS" "$N"
printf '%-58s %10s\n' "1000 leases in one etcd txn -> all entries (plexusd)" "$(printf '%.3f s' "$agent_med")"
printf '%-58s %10s\n' "same 3000 ops with ip -batch + bridge -batch" "$(printf '%.3f s' "$batch_med")"
printf '%-58s %10s   (target <= 3)\n' "ratio plexusd / batch" "$(printf '%.2f' "$(calc "$agent_med / $batch_med")")"
printf '%-58s %10s   (target < 20 MiB)\n' "plexusd peak RSS (VmHWM), 1000 remote nodes" "$(printf '%.1f MiB' "$(calc "$hwm_kib / 1024")")"
printf '%-58s %10s\n' "plexusd RSS now" "$(printf '%.1f MiB' "$(calc "$rss_kib / 1024")")"
printf '%-58s %10s\n' "plexusd idle CPU over ${IDLE_SECS}s" "$(printf '%.2f %%' "$idle_cpu")"
printf '%-58s %10s\n' "iperf3 pod->pod, VXLAN" "$(printf '%.2f Gb/s' "$(calc "$vx / 1e9")")"
printf '%-58s %10s\n' "iperf3 pod->pod, VXLAN + DirectRouting" "$(printf '%.2f Gb/s' "$(calc "$dr / 1e9")")"
printf '%-58s %10s\n' "iperf3 netns->netns, plain veth pair" "$(printf '%.2f Gb/s' "$(calc "$ve / 1e9")")"
printf '%-58s %10s\n' "ratio VXLAN / veth" "$(printf '%.2f' "$(calc "$vx / $ve")")"
printf '%-58s %10s\n' "ratio DirectRouting / veth" "$(printf '%.2f' "$(calc "$dr / $ve")")"
