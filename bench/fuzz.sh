#!/usr/bin/env bash
# bench/fuzz.sh: build the fuzz targets (fuzz/, one per parser of untrusted
# input; docs/fuzzing.md) and run each on its kept corpus, then print per
# target its executions, exec/s, peak RSS and whether it crashed.
#
#   bench/fuzz.sh SECONDS [TARGET...]        each target for SECONDS
#   bench/fuzz.sh --runs N [TARGET...]       each target until N executions
#   bench/fuzz.sh --runs N --max-time S ...  whichever comes first
#
# Exits non-zero when any target crashed, hung (one input over 10 s), or
# ran out of memory (over 1 GiB RSS); the input that did it is kept under
# the work directory printed at the end (fuzz/artifacts/ unless FUZZ_WORK
# is set) and replays with `fuzz/target/x86_64-unknown-linux-gnu/release/TARGET FILE`.
# New inputs the runs find go to that work directory, never into
# fuzz/corpus/ (the kept corpus stays small; add an input there by hand
# when it is worth keeping).
#
# FUZZ_SANITIZER=address builds with AddressSanitizer (slower; default
# none: the targets are safe Rust, a panic is what they look for, and
# overflow checks and debug assertions are on either way).
# FUZZ_ARGS adds libFuzzer flags (e.g. FUZZ_ARGS=-seed=1); FUZZ_JOBS=N runs
# N targets at a time; FUZZ_CODEGEN_UNITS=16 builds faster (default 1, as
# cargo-fuzz: faster targets).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

runs="" max_time=""
while (($#)); do
  case $1 in
    --runs) runs=${2:?}; shift 2 ;;
    --max-time) max_time=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) break ;;
  esac
done
if [[ -z "$runs" && -z "$max_time" ]]; then
  [[ $# -ge 1 && "$1" =~ ^[0-9]+$ ]] || usage
  max_time=$1
  shift
fi
for n in $runs $max_time; do [[ "$n" =~ ^[0-9]+$ ]] || usage; done

sanitizer=${FUZZ_SANITIZER:-none}
"$root/scripts/install-fuzz.sh"
cd "$root/fuzz"
echo "fuzz.sh: building the fuzz targets (sanitizer: $sanitizer)" >&2
RUSTC_BOOTSTRAP=1 cargo fuzz build -O --debug-assertions --sanitizer "$sanitizer" \
  --codegen-units "${FUZZ_CODEGEN_UNITS:-1}" >&2
bin=$root/fuzz/target/x86_64-unknown-linux-gnu/release

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
work=${FUZZ_WORK:-$root/fuzz/artifacts/run-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$work"

limits=()
[[ -n "$runs" ]] && limits+=("-runs=$runs")
[[ -n "$max_time" ]] && limits+=("-max_total_time=$max_time")
# shellcheck disable=SC2206
extra=(${FUZZ_ARGS:-})

# One target's run; its table row goes to $work/TARGET/row.
run_one() {
  local t=$1 d=$work/$1 t0 t1 rc=0 execs rate rss secs art result
  mkdir -p "$d/new" "$d/artifacts"
  echo "fuzz.sh: $t (${limits[*]})" >&2
  t0=$EPOCHREALTIME
  "$bin/$t" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
    -artifact_prefix="$d/artifacts/" "${limits[@]}" "${extra[@]}" \
    "$d/new" "$root/fuzz/corpus/$t" >"$d/log" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  stat() { awk -v k="stat::$1:" '$1 == k {print $2}' "$d/log" | tail -n1; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  rss=$(stat peak_rss_mb)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
  art=$(find "$d/artifacts" -type f | head -n1)
  if [[ $rc -eq 0 && -z "$art" ]]; then
    result=ok
  else
    result="FAILED (exit $rc${art:+: $art})"
    echo "fuzz.sh: $t failed; its log ($d/log) ends:" >&2
    grep -v '^#[0-9]' "$d/log" | tail -n 25 >&2
  fi
  printf '%-20s %14s %8s %9s %7s  %s\n' "$t" "${execs:-?}" "$secs" "${rate:-?}" "${rss:-?}" "$result" >"$d/row"
}

for t in "${targets[@]}"; do
  [[ -x "$bin/$t" && -d "$root/fuzz/corpus/$t" ]] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
done
# FUZZ_JOBS targets at a time (default 1: each has the machine to itself).
jobs=${FUZZ_JOBS:-1}
running=0
for t in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n || true
    running=$((running - 1))
  fi
  run_one "$t" &
  running=$((running + 1))
done
wait

failed=0
rows=()
for t in "${targets[@]}"; do
  rows+=("$(cat "$work/$t/row")")
  grep -q ' ok$' "$work/$t/row" || failed=1
done

printf '\n%-20s %14s %8s %9s %7s  %s\n' target executions seconds exec/s rss_mb result
printf '%s\n' "${rows[@]}"
echo "work directory (logs, new inputs, crashing inputs): $work"
exit "$failed"
