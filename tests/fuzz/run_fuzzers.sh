#!/usr/bin/env bash
# Fuzzes every libFuzzer target of a LUMEN_FUZZ=ON build (ASan + UBSan) for MINUTES each, JOBS at
# a time, starting from the seed corpus and growing a working copy of it; prints a table of runs
# and executions per second, and stops on the first finding (its input is in the target's log).
#
#   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
#         -DLUMEN_FUZZ=ON -DLUMEN_CUDA=OFF -DLUMEN_GUI=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
#   cmake --build build-fuzz
#   tests/fuzz/run_fuzzers.sh build-fuzz 10 2 [TARGET...]
set -uo pipefail
build=${1:?usage: run_fuzzers.sh BUILD_DIR MINUTES [JOBS] [TARGET...]}
minutes=${2:?minutes per target}
jobs=${3:-1}
shift 3 2>/dev/null || shift $#
src=$(cd "$(dirname "$0")" && pwd)
out="$build/fuzz-runs"
mkdir -p "$out"

# target corpus dictionary, as in tests/fuzz/CMakeLists.txt
specs=$(sed -n 's/^  "\([a-z_]*\) \([a-z_]*\) \([a-z_]*\)"[)]*$/\1 \2 \3/p' "$src/CMakeLists.txt")
run_one() {
  local target=$1 corpus=$2 dict=$3
  local work="$out/corpus-$target"
  mkdir -p "$work"
  cp -n "$src/corpus/$corpus"/* "$work/" 2>/dev/null
  # Findings go to $out/crash-*; -rss_limit_mb catches inputs that make Lumen eat memory.
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    "$build/tests/fuzz/fuzz_$target" "$work" -dict="$src/dict/$dict.dict" -max_total_time=$((minutes * 60)) \
    -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -artifact_prefix="$out/$target-" \
    > "$out/$target.log" 2>&1
  local status=$?
  local runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$target.log")
  local secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out/$target.log")
  local rate=$([ -n "$secs" ] && [ "$secs" -gt 0 ] && echo $((runs / secs)) || echo "?")
  local verdict=$([ $status -eq 0 ] && echo "no finding" || echo "FINDING (see $out/$target.log)")
  printf "%-20s %8s s %12s runs %8s/s  %s\n" "$target" "${secs:-?}" "${runs:-?}" "$rate" "$verdict"
  return $status
}
export -f run_one
export build src out minutes
selected="$*"
echo "$specs" | while read -r target corpus dict; do
  [ -z "$selected" ] || [[ " $selected " == *" $target "* ]] || continue
  echo "$target $corpus $dict"
done | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _
