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
