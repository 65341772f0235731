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
name=bench/routed.sh
. "$root/bench/lib/routed-env.sh"
need bird birdc
routed_env_init plexus-bench-routed
bird_upstream_env
etcd_put /plexus/routed/bgp/peers/10.200.0.13 '{"address":"10.200.0.13","asn":65000}'
start_plexusd "$node" 10.200.0.10

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
