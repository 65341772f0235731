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
