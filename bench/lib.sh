# bench/lib.sh: shell helpers the bench scripts share (sourced, not run).

# bench_requires SCRIPT CMD...: root, and each command on PATH.
bench_requires() {
    local script=$1 c
    shift
    [[ $(id -u) -eq 0 ]] || { echo "$script: needs root" >&2; exit 1; }
    for c in "$@"; do
        command -v "$c" >/dev/null || { echo "$script: $c missing (scripts/install-deps.sh)" >&2; exit 1; }
    done
}

# mine PID: still our unreaped child? (A reaped pid may belong to someone
# else now.)
mine() { [[ $(awk '{print $4}' "/proc/$1/stat" 2>/dev/null) == "$$" ]]; }

# started_at PID: the process's start time (clock ticks since boot), which
# tells a pid from a later process that reuses it.
started_at() { awk '{sub(/.*\) /, ""); print $20}' "/proc/$1/stat" 2>/dev/null; }

# bench_stop_driver DRIVER DPID TMP: stop a harness driver (a bench binary
# on tests/src, started with setsid and TMPDIR=TMP) and everything it
# started, then its namespaces (plx-DPID-*) and TMP. The driver is frozen
# first so it starts nothing new; its children (by parent pid) get TERM, three
# seconds to go, then KILL. Processes whose command line names TMP are
# stopped too: a driver that panicked (release builds abort) never ran
# the harness's Drop, and its daemons were re-parented to init. Either
# argument may be empty (the driver already reaped, or never started).
bench_stop_driver() {
    local driver=$1 dpid=$2 tmp=$3 p k n kids=()
    if [[ -n $driver ]] && mine "$driver"; then
        kill -STOP "$driver"
        for p in $(awk -v d="$driver" '$4 == d {print $1}' /proc/[0-9]*/stat 2>/dev/null); do
            kids+=("$p:$(started_at "$p")")
        done
    fi
    if [[ -n $tmp ]]; then
        # (grep's own pid matches too; it is gone by the time its start
        # time is read, and an entry without one is skipped below.)
        for p in $(grep -lsF -- "$tmp" /proc/[0-9]*/cmdline | cut -d/ -f3); do
            [[ $p == "$$" || $p == "$BASHPID" ]] || kids+=("$p:$(started_at "$p")")
        done
    fi
    local live_kids=()
    for k in "${kids[@]}"; do [[ -n ${k#*:} ]] && live_kids+=("$k"); done
    kids=("${live_kids[@]}")
    for k in "${kids[@]}"; do
        [[ $(started_at "${k%%:*}") == "${k#*:}" ]] && kill -TERM "${k%%:*}" 2>/dev/null
    done
    for _ in $(seq 30); do
        local live=0
        for k in "${kids[@]}"; do
            [[ $(started_at "${k%%:*}") == "${k#*:}" && $(awk '{print $3}' "/proc/${k%%:*}/stat" 2>/dev/null) != Z ]] && live=1
        done
        ((live)) || break
        sleep 0.1
    done
    for k in "${kids[@]}"; do
        [[ $(started_at "${k%%:*}") == "${k#*:}" ]] && kill -KILL "${k%%:*}" 2>/dev/null
    done
    if [[ -n $driver ]] && mine "$driver"; then
        kill -KILL "$driver"
        wait "$driver" 2>/dev/null
    fi
    # The driver deletes its namespaces itself unless it was killed.
    if [[ -n $dpid ]]; then
        for n in $(ip netns list 2>/dev/null | awk -v p="plx-$dpid-" 'index($1, p) == 1 {print $1}'); do
            ip netns del "$n"
        done
    fi
    [[ -z $tmp ]] || rm -rf "$tmp"
}

# bench_timed_call SCRIPT IMPL CMD POD PLUGIN CNI_PATH IFNAME: one CNI call of
# PLUGIN with $tmp/IMPL.json on stdin for pod netns POD; appends "seconds
# rss_kib" (wall time by $EPOCHREALTIME, peak RSS by GNU time) to
# $tmp/IMPL-CMD. A failed call prints its output and ends the run.
bench_timed_call() {
    local script=$1 impl=$2 cmd=$3 pod=$4 plugin=$5 path=$6 ifname=$7
    local t0=$EPOCHREALTIME
    if ! CNI_COMMAND=$cmd CNI_CONTAINERID="bench-$pod" CNI_NETNS="/var/run/netns/$pod" \
        CNI_IFNAME=$ifname CNI_PATH="$path" \
        /usr/bin/time -f %M -o "$tmp/rss" "$plugin" <"$tmp/$impl.json" >"$tmp/out" 2>"$tmp/err"; then
        echo "$script: $impl $cmd $pod failed:" >&2
        cat "$tmp/out" "$tmp/err" >&2
        exit 1
    fi
    local t1=$EPOCHREALTIME
    echo "$t0 $t1 $(tail -n1 "$tmp/rss")" | awk '{printf "%.6f %d\n", $2-$1, $3}' >>"$tmp/$impl-$cmd"
}

# bench_alternate A B CMD: `call A CMD POD` and `call B CMD POD` for every pod
# in $pods, alternating which goes first so neither always runs warm.
bench_alternate() {
    local a=$1 b=$2 cmd=$3 i=0 p
    for p in "${pods[@]}"; do
        if (( i % 2 == 0 )); then call "$a" "$cmd" "$p"; call "$b" "$cmd" "$p"
        else call "$b" "$cmd" "$p"; call "$a" "$cmd" "$p"; fi
        i=$((i + 1))
    done
}
