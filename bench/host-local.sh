#!/usr/bin/env bash
# Benchmark (not a test): plexus-host-local vs the reference host-local.
#
# N ADD+DEL cycles (default 200), alternating ours and the reference in one
# run so both see the same machine state, each in its own dataDir that is
# pre-filled with FILL allocations (default 100; the reference reads every
# reservation file on ADD and DEL, so an empty directory flatters it).
# Prints median and p99 latency per op, peak RSS per op, and ours/reference
# ratios. Latency is wall time of the exec'd plugin process measured with
# bash's $EPOCHREALTIME (no extra forks inside the measured interval); RSS
# comes from a separate pass under /usr/bin/time -f %M so the wrapper does
# not distort the latency figures.
#
# Usage: bench/host-local.sh [N]   (env: FILL, REF, OURS, RSS_RUNS)
set -euo pipefail

N=${1:-${N:-200}}
FILL=${FILL:-100}
RSS_RUNS=${RSS_RUNS:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REF=${REF:-/usr/lib/cni/host-local}
OURS=${OURS:-$ROOT/target/release/plexus-host-local}

if [[ ! -x $REF ]]; then
    echo "reference $REF missing: apt-get install -y containernetworking-plugins" >&2
    exit 1
fi
if [[ ! -x /usr/bin/time ]]; then
    echo "/usr/bin/time missing: apt-get install -y time" >&2
    exit 1
fi
if [[ -z ${SKIP_BUILD:-} ]]; then
    (cd "$ROOT" && cargo build --release -q -p plexus-host-local)
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

conf() { # $1 = dataDir
    printf '{"cniVersion":"1.0.0","name":"bench","type":"bridge","ipam":{"type":"host-local","dataDir":"%s","ranges":[[{"subnet":"10.200.0.0/16"}],[{"subnet":"fd00:200::/64"}]],"routes":[{"dst":"0.0.0.0/0"}]}}' "$1"
}
echo "$(conf "$WORK/ours")" >"$WORK/ours.json"
echo "$(conf "$WORK/ref")" >"$WORK/ref.json"

export CNI_NETNS=/var/run/netns/bench CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni

run() { # $1 = binary, $2 = conf file, $3 = command, $4 = container id
    CNI_COMMAND=$3 CNI_CONTAINERID=$4 "$1" <"$2" >/dev/null || {
        echo "$3 $4 failed with $1" >&2
        exit 1
    }
}

for ((i = 0; i < FILL; i++)); do
    run "$OURS" "$WORK/ours.json" ADD "fill$i"
    run "$REF" "$WORK/ref.json" ADD "fill$i"
done

: >"$WORK/ours.add" >"$WORK/ours.del" >"$WORK/ref.add" >"$WORK/ref.del"
timed() { # $1 = out file, rest = run args; appends microseconds
    local t0 t1
    t0=$EPOCHREALTIME
    run "${@:2}"
    t1=$EPOCHREALTIME
    echo $(((${t1/./} - ${t0/./}))) >>"$1"
}
for ((i = 0; i < N; i++)); do
    timed "$WORK/ours.add" "$OURS" "$WORK/ours.json" ADD "c$i"
    timed "$WORK/ref.add" "$REF" "$WORK/ref.json" ADD "c$i"
    timed "$WORK/ours.del" "$OURS" "$WORK/ours.json" DEL "c$i"
    timed "$WORK/ref.del" "$REF" "$WORK/ref.json" DEL "c$i"
done

rss() { # $1 = binary, $2 = conf, $3 = command, $4 = id; prints KiB
    CNI_COMMAND=$3 CNI_CONTAINERID=$4 /usr/bin/time -f %M -o "$WORK/rss" "$1" <"$2" >/dev/null
    cat "$WORK/rss"
}
: >"$WORK/ours.rss.add" >"$WORK/ours.rss.del" >"$WORK/ref.rss.add" >"$WORK/ref.rss.del"
for ((i = 0; i < RSS_RUNS; i++)); do
    rss "$OURS" "$WORK/ours.json" ADD "r$i" >>"$WORK/ours.rss.add"
    rss "$REF" "$WORK/ref.json" ADD "r$i" >>"$WORK/ref.rss.add"
    rss "$OURS" "$WORK/ours.json" DEL "r$i" >>"$WORK/ours.rss.del"
    rss "$REF" "$WORK/ref.json" DEL "r$i" >>"$WORK/ref.rss.del"
done

pct() { # $1 = file, $2 = percentile (0-100): nearest-rank
    sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END {i=int((p/100)*NR+0.999999); if(i<1)i=1; print a[i]}'
}
maxof() { sort -n "$1" | tail -1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

echo "host-local benchmark: N=$N ADD+DEL cycles, $FILL pre-filled allocations, dual-stack (2 range sets)"
echo "ours: $OURS"
echo "reference: $REF ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown))"
printf '%-5s %-10s %12s %12s %14s\n' op plugin "median(us)" "p99(us)" "peakRSS(KiB)"
for op in add del; do
    for who in ours ref; do
        printf '%-5s %-10s %12s %12s %14s\n' "$op" "$who" "$(pct "$WORK/$who.$op" 50)" \
            "$(pct "$WORK/$who.$op" 99)" "$(maxof "$WORK/$who.rss.$op")"
    done
    printf '%-5s %-10s %12s %12s %14s\n' "$op" "ours/ref" \
        "$(ratio "$(pct "$WORK/ours.$op" 50)" "$(pct "$WORK/ref.$op" 50)")" \
        "$(ratio "$(pct "$WORK/ours.$op" 99)" "$(pct "$WORK/ref.$op" 99)")" \
        "$(ratio "$(maxof "$WORK/ours.rss.$op")" "$(maxof "$WORK/ref.rss.$op")")"
done
