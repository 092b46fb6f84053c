#!/usr/bin/env bash
# Runs syncd's fuzzers for SECONDS each; exits non-zero when one finds a
# crash. Same interface as tests/fuzz/run.sh:
#   syncd/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is the tree configured with -DSESSION_FUZZ=ON and built with
# --target syncd_fuzzers (or fuzzers). Corpora grow under
# BUILD_DIR/fuzz-corpus/<target>, seeded from syncd/fuzz/corpus/<target>.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "$0")" && pwd)

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

failed=()
for target in syncd_fuzz_signature syncd_fuzz_event; do
  binary="$build_dir/syncd/fuzz/$target"
  if [ ! -x "$binary" ]; then
    echo "run.sh: $binary not built (cmake --build $build_dir --target syncd_fuzzers)" >&2
    exit 2
  fi
  corpus="$build_dir/fuzz-corpus/$target"
  artifacts="$build_dir/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  cp -n "$here/corpus/$target"/* "$corpus"/ 2>/dev/null || true
  log="$build_dir/fuzz-$target.log"
  echo "== $target: ${seconds}s, corpus $corpus"
  set +e
  "$binary" -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
  status=$?
  set -e
  if [ $status -ne 0 ]; then
    echo "== $target FAILED (exit $status); log: $log" >&2
    tail -30 "$log" >&2
    failed+=("$target")
  else
    grep -E "^stat::number_of_executed_units|cov:" "$log" | tail -2 || true
  fi
done

if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no crash"
