#!/usr/bin/env bash
# `syncd reconcile` on a large table: BENCH_USERS users (each with one active
# session and BENCH_HISTORY ended, expired sessions: the history a long-lived
# deployment accumulates; every 10th user in an organization, every 50th
# banned) seeded directly in PostgreSQL with generate_series, then reconcile
# against an empty Redis. Prints the wall time and the rate in rows of
# PostgreSQL per second (users + sessions in the tables, whether reconcile
# reads them or skips them in SQL) and in rows checked per second.
# With OLD_SYNCD_BIN set (or the lead's build at build/cmake/syncd/syncd
# present and different), the same data is reconciled by that binary too,
# on a flushed Redis, and the key counts of both runs are compared.
#
# Environment (all optional):
#   SYNCD_BIN=build/cmake/syncd/syncd  the binary measured
#   OLD_SYNCD_BIN=                     a binary to compare with ("none": skip)
#   BENCH_USERS=100000
#   BENCH_HISTORY=1                    ended sessions per user
#   BENCH_OLD_TIMEOUT=900              seconds before the old run is cut off
#   BENCH_KEEP=0                       1: keep the temporary directory
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
syncd_bin=${SYNCD_BIN:-$root/build/cmake/syncd/syncd}
unset SYNCD_BIN  # not a key of syncd's own: it would warn about it
old_bin=${OLD_SYNCD_BIN:-}
users=${BENCH_USERS:-100000}
history=${BENCH_HISTORY:-1}
old_timeout=${BENCH_OLD_TIMEOUT:-900}

[ -x "$syncd_bin" ] || { echo "bench: $syncd_bin not built (make)" >&2; exit 2; }
for tool in redis-server redis-cli psql runuser; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (make deps)" >&2; exit 2; }
done

# shellcheck source=servers.sh
. "$here/servers.sh"

start_servers syncd-reconcile-bench

export SYNCD_DATABASE_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres
export SYNCD_REDIS_URL=redis://127.0.0.1:$redis_port/0
export SYNCD_LOG_LEVEL=warn
psql_q() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -X -Atq -v ON_ERROR_STOP=1 "$@"; }

"$syncd_bin" migrate >/dev/null
echo "== seeding $users users, $users active sessions, $((users * history)) ended ones"
psql_q -v users="$users" -v history="$history" <<'SQL'
INSERT INTO users (clerk_id, email, role, banned, source_updated_at)
SELECT 'user_' || lpad(i::text, 7, '0'), 'u' || i || '@example.com',
       CASE WHEN i % 100 = 0 THEN 'admin' ELSE 'user' END, i % 50 = 0, 1
FROM generate_series(1, :users) i;
INSERT INTO memberships (id, clerk_user_id, organization_id, organization_slug, role,
                         created_at, updated_at, source_updated_at)
SELECT 'mem_' || i, 'user_' || lpad(i::text, 7, '0'), 'org_' || (i % 97), 'acme' || (i % 97),
       'org:member', now(), now(), 1
FROM generate_series(1, :users) i WHERE i % 10 = 0;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, last_active_at, created_at,
                      updated_at, source_updated_at)
SELECT 'sess_a' || lpad(i::text, 7, '0'), 'user_' || lpad(i::text, 7, '0'), 'active',
       now() + interval '7 days', now(), now() - interval '1 hour', now() - interval '1 hour', 1
FROM generate_series(1, :users) i;
INSERT INTO sessions (id, clerk_user_id, status, expires_at, created_at, updated_at,
                      source_updated_at)
SELECT 'sess_h' || lpad(i::text, 7, '0') || '_' || k, 'user_' || lpad(i::text, 7, '0'), 'ended',
       now() - interval '20 days', now() - interval '30 days', now() - interval '25 days', 1
FROM generate_series(1, :users) i, generate_series(1, :history) k;
VACUUM ANALYZE;
SQL
rows=$(psql_q -c "SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM sessions)")

run() {  # name binary timeout
  redis-cli -p "$redis_port" flushall >/dev/null
  local start end out
  start=$(date +%s.%N)
  if ! out=$(timeout "$3" "$2" reconcile 2>&1); then
    echo "$1: did not finish within $3 s (or failed): ${out:0:200}"
    return 1
  fi
  end=$(date +%s.%N)
  local keys checked seconds
  keys=$(redis-cli -p "$redis_port" dbsize)
  checked=$(echo "$out" | python3 -c "
import re, sys
m = re.search(r'users checked (\d+).*sessions checked (\d+)', sys.stdin.read())
print(int(m[1]) + int(m[2]) if m else 0)")
  seconds=$(python3 -c "print(f'{$end - $start:.2f}')")
  printf '%-10s %8s s  %9s rows/s  %9s checked/s  %8s checked  %8s keys\n' "$1" "$seconds" \
    "$(python3 -c "print(int($rows / ($end - $start)))")" \
    "$(python3 -c "print(int($checked / ($end - $start)))")" "$checked" "$keys" | tee -a "$work/result.txt"
  echo "$keys" >"$work/keys.$1"
}

echo "== reconcile of $rows rows into an empty Redis"
run new "$syncd_bin" 3600
if [ -z "$old_bin" ] && [ -x "$root/build/cmake/syncd/syncd" ] &&
   ! cmp -s "$root/build/cmake/syncd/syncd" "$syncd_bin"; then
  old_bin=$root/build/cmake/syncd/syncd
fi
if [ -n "$old_bin" ] && [ "$old_bin" != none ]; then
  run old "$old_bin" "$old_timeout" || true
  if [ -f "$work/keys.old" ]; then
    # The old binary has no marker key; the new one adds one.
    [ "$(cat "$work/keys.old")" -eq $(($(cat "$work/keys.new") - 1)) ] &&
      echo "same key count (old + the marker)" || echo "bench: key counts differ"
  fi
fi
mkdir -p "$root/bench/results"
{
  echo "syncd reconcile $(date -u +%FT%TZ), $(nproc) cores, $users users, $rows rows"
  cat "$work/result.txt"
} >"$root/bench/results/syncd-reconcile.txt"
