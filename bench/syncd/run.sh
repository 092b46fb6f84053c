#!/usr/bin/env bash
# syncd's benchmark: sustained signed deliveries per second through syncd
# into PostgreSQL and Redis at 16 concurrent senders (wrk, keep-alive), with
# p50/p99 latency, beside the limit: pgbench running the same SQL
# transaction (transaction.sql) at the same concurrency on the same database.
# Targets: syncd >= 0.5x pgbench's rate, p99 < 50 ms.
#
# Environment (all optional):
#   SYNCD_BIN=build/cmake/syncd/syncd
#   BENCH_SECONDS=15      measured seconds for each side
#   BENCH_CONNECTIONS=16  concurrent senders / pgbench clients
#   BENCH_THREADS=2       wrk and pgbench threads
#   BENCH_REQUESTS=       pre-signed deliveries (default: 8000 per second)
#   BENCH_STRICT=0        1: exit 1 when a target is missed
#   BENCH_KEEP=0          1: keep the temporary directory
# PostgreSQL runs with its defaults (fsync and synchronous_commit on).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
syncd_bin=${SYNCD_BIN:-$root/build/cmake/syncd/syncd}
seconds=${BENCH_SECONDS:-15}
conns=${BENCH_CONNECTIONS:-16}
threads=${BENCH_THREADS:-2}
requests=${BENCH_REQUESTS:-$((seconds * 8000))}
secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

[ -x "$syncd_bin" ] || { echo "bench: $syncd_bin not built (make)" >&2; exit 2; }
for tool in wrk redis-server psql pgbench runuser; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (make deps)" >&2; exit 2; }
done

# shellcheck source=servers.sh
. "$here/servers.sh"

start_servers syncd-bench -c max_connections=100
syncd_port=$(free_port)

export SYNCD_LISTEN=127.0.0.1:$syncd_port
export SYNCD_DATABASE_URL=postgresql://postgres@127.0.0.1:$pg_port/postgres
export SYNCD_REDIS_URL=redis://127.0.0.1:$redis_port/0
export SYNCD_WEBHOOK_SECRETS=$secret
export SYNCD_LOG_LEVEL=warn
export SYNCD_DB_POOL=$conns
"$syncd_bin" migrate >/dev/null
"$syncd_bin" serve >"$work/syncd.log" 2>&1 &
syncd_pid=$!
bench_pids+=("$syncd_pid")
for _ in $(seq 100); do
  curl -sf "http://$SYNCD_LISTEN/healthz" >/dev/null && break
  sleep 0.1
done
curl -sf "http://$SYNCD_LISTEN/healthz" >/dev/null || { cat "$work/syncd.log"; exit 1; }

psql_q() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -X -Atc "$1"; }

echo "== signing $requests deliveries"
python3 "$here/gen_requests.py" "$SYNCD_LISTEN" /webhooks/clerk "$secret" "$requests" \
  "$threads" "$work"

echo "== syncd: $conns senders, ${seconds}s"
SYNCD_BENCH_DIR=$work wrk -t"$threads" -c"$conns" -d"${seconds}s" --latency \
  -s "$here/replay.lua" "http://$SYNCD_LISTEN/webhooks/clerk" | tee "$work/wrk.txt"
sleep 1
metrics=$(curl -sf "http://$SYNCD_LISTEN/metrics")
applied=$(echo "$metrics" | awk -F' ' '/^syncd_events_total\{type="session.created",outcome="applied"\}/ {print $2}')
duplicates=$(echo "$metrics" | awk '/^syncd_duplicates_total/ {print $2}')
outbox=$(psql_q "SELECT count(*) FROM outbox")
keys=$(redis-cli -p "$redis_port" dbsize)
rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
non2xx=${non2xx:-0}

echo "== pgbench: the same transaction, $conns clients, ${seconds}s"
PGPASSWORD= pgbench -h 127.0.0.1 -p "$pg_port" -U postgres -n -M extended -c "$conns" \
  -j "$threads" -T "$seconds" -f "$here/transaction.sql" postgres | tee "$work/pgbench.txt"
tps=$(awk '/^tps = / {print $3}' "$work/pgbench.txt")

ratio=$(python3 -c "print(f'{float($rps) / float($tps):.2f}')")
to_ms() { python3 -c "
v='$1'
for unit, f in (('us', 0.001), ('ms', 1), ('s', 1000)):
    if v.endswith(unit) and not (unit == 's' and (v.endswith('ms') or v.endswith('us'))):
        print(f'{float(v[:-len(unit)]) * f:.2f}'); break"; }
p99_ms=$(to_ms "$p99")
mkdir -p "$root/bench/results"
{
  echo "syncd benchmark $(date -u +%FT%TZ), $(nproc) cores, $conns senders, ${seconds}s each"
  printf '%-34s %10s\n' "syncd deliveries/s" "$rps"
  printf '%-34s %10s\n' "syncd latency p50" "$p50"
  printf '%-34s %10s\n' "syncd latency p99" "$p99"
  printf '%-34s %10s\n' "pgbench tps (same transaction)" "$tps"
  printf '%-34s %10s   (target >= 0.5)\n' "ratio syncd / pgbench" "$ratio"
  printf '%-34s %10s\n' "events applied / non-2xx" "$applied / $non2xx"
  printf '%-34s %10s\n' "duplicates (replays: too few signed)" "$duplicates"
  printf '%-34s %10s\n' "outbox left after 1 s / redis keys" "$outbox / $keys"
} | tee "$root/bench/results/syncd.txt"

missed=0
python3 -c "import sys; sys.exit(0 if float('$ratio') >= 0.5 else 1)" || { echo "bench: ratio below 0.5"; missed=1; }
python3 -c "import sys; sys.exit(0 if float('$p99_ms') < 50 else 1)" || { echo "bench: p99 not under 50 ms"; missed=1; }
[ "$non2xx" = 0 ] || { echo "bench: $non2xx non-2xx answers"; missed=1; }
if [ "$missed" = 1 ] && [ "${BENCH_STRICT:-0}" = 1 ]; then exit 1; fi
exit 0
