#!/usr/bin/env bash
# bench/bgp-failover.sh: time from a peer's link failure to its routes
# leaving the kernel, plexusd side by side with a BIRD node, both with BFD
# at 100 ms x 3 and both without BFD (hold time 9 s), in the same run.
#
#   sudo bench/bgp-failover.sh [ROUNDS]      (default 3 rounds per mode)
#
# Throwaway namespaces (plxbench-*-PID) on a private underlay: etcd (.2), the
# plexusd node (.10), a BIRD node (.11, its kernel protocol exporting what
# it learns) and the upstream router (.13, BIRD announcing N /24s to both
# over eBGP, hold time 9 s). plexusd learns them as a global peer (records
# written straight into etcd). Each round sets the upstream's eth0 down (one
# event for both sessions) and times, from just before that, until each
# node's kernel holds none of the N routes (polled with `ip route`, a few ms
# resolution); then sets it up again and waits for both sessions and all
# routes to be back. Modes: BFD on (the peer record's bfd, BIRD's `bfd on`,
# and BIRD's `protocol bfd` at 100 ms x 3 on all three), then BFD off.
# Nothing touches the root namespace; processes are killed by pid.
#
# BENCH_BIN=DIR uses a prebuilt plexusd (e.g. target/debug).
set -euo pipefail

ROUNDS=${1:-3}
N=${N:-100}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=bench/bgp-failover.sh
. "$root/bench/lib/routed-env.sh"
need bird birdc
routed_env_init plexus-bench-failover
bird_upstream_env
peer_record() { # on|off
    local bfd=''
    [[ $1 == on ]] && bfd=',"bfd":{"minTxMs":100,"minRxMs":100,"multiplier":3}'
    etcd_put /plexus/routed/bgp/peers/10.200.0.13 "{\"address\":\"10.200.0.13\",\"asn\":65000$bfd}"
}
peer_record on
start_plexusd "$node" 10.200.0.10

bfd_proto='protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; multiplier 3; }; }'
write_confs() { # on|off
    local b=off
    [[ $1 == on ]] && b=on
    cat >"$tmp/birdnode.conf" <<CONF
router id 10.200.0.11;
protocol device {}
$bfd_proto
protocol kernel k4 { ipv4 { import none; export all; }; }
protocol bgp uplink { local as 64513; neighbor 10.200.0.13 as 65000; hold time 9; connect retry time 1;
  error wait time 1, 2; bfd $b; ipv4 { import all; export none; }; }
CONF
    {
        echo 'router id 10.200.0.13;'
        echo 'protocol device {}'
        echo "$bfd_proto"
        echo 'protocol static bulk { ipv4;'
        for ((i = 0; i < N; i++)); do echo "route 172.$((16 + i / 256)).$((i % 256)).0/24 blackhole;"; done
        echo '}'
        echo "template bgp feeder { local as 65000; hold time 9; connect retry time 1; error wait time 1, 2; bfd $b;"
        echo '  ipv4 { import none; export where proto = "bulk"; }; }'
        echo 'protocol bgp plexus from feeder { neighbor 10.200.0.10 as 64512; }'
        echo 'protocol bgp birdnode from feeder { neighbor 10.200.0.11 as 64513; }'
    } >"$tmp/ann.conf"
}
write_confs on
for b in birdnode ann; do
    [[ $b == ann ]] && ns=$ann || ns=$birdnode
    nsenter --net=/var/run/netns/"$ns" bird -f -c "$tmp/$b.conf" -s "$tmp/$b.ctl" -P "$tmp/$b.pid" \
        >"$tmp/$b.log" 2>&1 &
    pids+=($!)
done
birdc_ann() { ip netns exec "$ann" birdc -s "$tmp/ann.ctl" "$@"; }
birdc_node() { ip netns exec "$birdnode" birdc -s "$tmp/birdnode.ctl" "$@"; }
count() { ip -n "$1" route show proto "$2" | wc -l; }
now() { echo "$EPOCHREALTIME"; }
wait_up() { # both sessions Established, all routes in both kernels (and BFD Up when on)
    local mode=$1
    for _ in $(seq 600); do
        if [[ $(birdc_ann show protocols 2>/dev/null | grep -c Established) -eq 2 &&
            $(count "$node" 114) -ge $N && $(count "$birdnode" bird) -ge $N ]]; then
            [[ $mode == off ]] && return
            [[ $(birdc_ann show bfd sessions 2>/dev/null | grep -c ' Up ') -eq 2 ]] && return
        fi
        sleep 0.1
    done
    birdc_ann show protocols >&2; birdc_ann show bfd sessions >&2
    die "sessions or routes not back (mode $mode)"
}

printf '%-5s %-6s %12s %12s\n' bfd round plexusd_s bird_s
for mode in on off; do
    if [[ $mode == off ]]; then
        write_confs off
        birdc_ann configure >/dev/null
        birdc_node configure >/dev/null
        peer_record off
    fi
    : >"$tmp/$mode.p"
    : >"$tmp/$mode.b"
    for ((r = 1; r <= ROUNDS; r++)); do
        wait_up "$mode"
        sleep 1
        t0=$(now)
        ip -n "$ann" link set eth0 down
        tp='' tb=''
        while [[ -z $tp || -z $tb ]]; do
            [[ -z $tp && $(count "$node" 114) -eq 0 ]] && tp=$(now)
            [[ -z $tb && $(count "$birdnode" bird) -eq 0 ]] && tb=$(now)
        done
        dp=$(awk "BEGIN{print $tp-$t0}") db=$(awk "BEGIN{print $tb-$t0}")
        echo "$dp" >>"$tmp/$mode.p"
        echo "$db" >>"$tmp/$mode.b"
        printf '%-5s %-6s %12.3f %12.3f\n' "$mode" "$r" "$dp" "$db"
        ip -n "$ann" link set eth0 up
    done
done
median() { sort -n "$1" | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
printf '%-5s %14s %14s %8s\n' bfd plexusd_med_s bird_med_s ratio
for mode in on off; do
    mp=$(median "$tmp/$mode.p") mb=$(median "$tmp/$mode.b")
    printf '%-5s %14.3f %14.3f %8s\n' "$mode" "$mp" "$mb" "$(ratio "$mp" "$mb")"
done
