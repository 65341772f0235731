# bench/lib/routed-env.sh: sourced by the routed network's benchmarks
# (bench/routed*.sh). A private underlay in throwaway namespaces, etcd in its
# own netns, plexus-ipam records written straight into etcd, a release plexusd
# in a node netns, and the cleanup of all of it (processes by pid, namespaces
# by name). Before sourcing set: `name` (the script's name for messages),
# `root` (the repository). Then call `routed_env_init TMP_PREFIX`.
#
# Provides: tag, tmp, lan, etcd_ip, netns[], pids[], agent_bin (BENCH_BIN or
# a release build), mkns NS, plug NS IP/LEN, start_etcd NS, etcd_put KEY
# VALUE, start_plexusd NS IP (sets agent_pid, waits for ready),
# bird_upstream_env (the four namespaces of the BIRD benchmarks), and the
# latency statistics `stats FILE` / `ratio A B`.

. "$root/bench/lib.sh" # bench_requires, mine
die() { echo "$name: $*" >&2; exit 1; }
bench_requires "$name"

need() { bench_requires "$name" "$@"; } # commands the script needs

routed_env_init() { # TMP_PREFIX
    need etcd curl nsenter awk base64
    if [[ -n ${BENCH_BIN:-} ]]; then
        agent_bin=$BENCH_BIN
    else
        (cd "$root" && cargo build -q --release -p plexusd)
        agent_bin=$root/target/release
    fi
    tag=$$
    lan=plxbench-lan-$tag
    tmp=$(mktemp -d "/tmp/$1.XXXXXX")
    netns=()
    pids=()
    etcd_ip=10.200.0.2
    etcd_url=http://$etcd_ip:2379
    trap routed_env_cleanup EXIT INT TERM
    mkns "$lan"
    ip -n "$lan" link add lan0 type bridge
    ip -n "$lan" link set lan0 up
}

routed_env_cleanup() {
    set +e
    local p n
    for p in "${pids[@]}"; do mine "$p" && kill -TERM "$p" 2>/dev/null; done
    sleep 0.5
    for p in "${pids[@]}"; do mine "$p" && kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
    for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
    [[ -n ${KEEP:-} ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}

mkns() { ip netns add "$1"; ip -n "$1" link set lo up; netns+=("$1"); }
plug_n=0
plug() { # NS IP/LEN: eth0 in NS on the lan bridge
    plug_n=$((plug_n + 1))
    ip -n "$lan" link add "v$plug_n" type veth peer name eth0 netns "$1"
    ip -n "$lan" link set "v$plug_n" master lan0 up
    ip -n "$1" addr add "$2" dev eth0
    ip -n "$1" link set eth0 up
}

etcdns=
b64() { printf %s "$1" | base64 -w0; }
etcd_api() { ip netns exec "$etcdns" curl -sf -X POST "$etcd_url$1" -d "$2"; }
etcd_put() { etcd_api /v3/kv/put "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}" >/dev/null; }
start_etcd() { # NS (plugged in at $etcd_ip)
    etcdns=$1
    nsenter --net=/var/run/netns/"$etcdns" etcd --name bench --data-dir "$tmp/etcd" \
        --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster bench=http://127.0.0.1:2380 >"$tmp/etcd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do etcd_api /v3/kv/range "{\"key\":\"$(b64 x)\"}" >/dev/null 2>&1 && return; sleep 0.1; done
    die "etcd did not start: $(tail -5 "$tmp/etcd.log")"
}

start_plexusd() { # NS PUBLIC_IP: plexusd node n1 against the etcd above
    # etcd reachable from the node first (plexusd gives up on an
    # unreachable store at start; on a loaded machine the first
    # connection across the fresh bridge has been seen to take seconds).
    local ok=0
    for _ in $(seq 100); do
        ip netns exec "$1" curl -sf -m 1 -X POST "$etcd_url/v3/kv/range" \
            -d "{\"key\":\"$(b64 x)\"}" >/dev/null 2>&1 && { ok=1; break; }
        sleep 0.1
    done
    ((ok)) || die "etcd unreachable from $1"
    nsenter --net=/var/run/netns/"$1" "$agent_bin/plexusd" --node-name n1 \
        --store "etcd://$etcd_ip:2379" --public-ip "$2" --run-dir "$tmp/run" \
        --log-level warn >"$tmp/plexusd.log" 2>&1 &
    agent_pid=$!
    pids+=("$agent_pid")
    for _ in $(seq 600); do [[ -e $tmp/run/ready ]] && return; sleep 0.05; done
    die "plexusd not ready: $(cat "$tmp/plexusd.log")"
}

# bird_upstream_env: the topology bench/routed.sh and bench/bgp-failover.sh
# share: etcd (.2), the plexusd node (.10), a BIRD node (.11) and the
# upstream router announcing to both (.13), each in its own netns on the
# lan; etcd started with the default pool and a full-mesh BGP config
# (AS 64512). Sets etcdns, node, birdnode, ann.
bird_upstream_env() {
    etcdns=plxbench-etcd-$tag node=plxbench-node-$tag birdnode=plxbench-bird-$tag ann=plxbench-ann-$tag
    mkns "$etcdns"; plug "$etcdns" "$etcd_ip/24"
    mkns "$node"; plug "$node" 10.200.0.10/24
    mkns "$birdnode"; plug "$birdnode" 10.200.0.11/24
    mkns "$ann"; plug "$ann" 10.200.0.13/24
    start_etcd "$etcdns"
    etcd_put /plexus/routed/pools/default '{"name":"default","cidr":"10.96.0.0/16","blockSize":26}'
    etcd_put /plexus/routed/bgp/config '{"asn":64512,"nodeToNodeMesh":true}'
}

stats() { # FILE of "seconds rss_kib" lines -> "p50_ms p99_ms maxrss_kib sum_s"
    sort -n "$1" | awk '{t[NR]=$1; s+=$1; if ($2>m) m=$2}
        END {i50=int(NR*0.50+0.5); if(i50<1)i50=1; i99=int(NR*0.99+0.5); if(i99<1)i99=1; if(i99>NR)i99=NR;
             printf "%.2f %.2f %d %.3f\n", t[i50]*1000, t[i99]*1000, m, s}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b>0)?a/b:0}'; }
