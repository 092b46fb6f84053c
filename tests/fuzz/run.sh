#!/usr/bin/env bash
# Runs every fuzzer of the project (the module's and syncd's) for SECONDS
# each; exits non-zero when one finds a crash.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is the tree configured with -DSESSION_FUZZ=ON and built with
# --target fuzzers. Corpora grow under BUILD_DIR/fuzz-corpus/<target>,
# seeded from <source dir>/corpus/<target>; crash inputs land in
# BUILD_DIR/fuzz-artifacts/<target>/.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
root=$(cd "$(dirname "$0")/../.." && pwd)

# Each fuzzer's directory, relative to the source tree and to BUILD_DIR.
fuzzers=(
  tests/fuzz/fuzz_token
  tests/fuzz/fuzz_reply
  tests/fuzz/fuzz_jwt
  syncd/fuzz/syncd_fuzz_signature
  syncd/fuzz/syncd_fuzz_event
)

# UB reports must stop the run; leaks in a short-lived harness still count.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

failed=()
for fuzzer in "${fuzzers[@]}"; do
  target=$(basename "$fuzzer")
  seeds="$root/$(dirname "$fuzzer")/corpus/$target"
  binary="$build_dir/$fuzzer"
  if [ ! -x "$binary" ]; then
    echo "run.sh: $binary not built (cmake --build $build_dir --target fuzzers)" >&2
    exit 2
  fi
  corpus="$build_dir/fuzz-corpus/$target"
  artifacts="$build_dir/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  if [ -d "$seeds" ]; then
    cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
  fi
  log="$build_dir/fuzz-$target.log"
  echo "== $target: ${seconds}s, corpus $corpus"
  set +e
  "$binary" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)' \
    "$log" || true
  grep -E '^Done [0-9]+ runs' "$log" || true
  if [ $status -ne 0 ]; then
    echo "== $target FAILED (exit $status); see $log and $artifacts" >&2
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20 >&2 || true
    failed+=("$target")
  else
    echo "== $target ok"
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzzers that failed: ${failed[*]}" >&2
  exit 1
fi
