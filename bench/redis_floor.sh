#!/usr/bin/env bash
# What Redis itself spends per command on this machine, with nothing but
# redis-benchmark in front of it: the floor under the module's uncached
# check (issue 8's "Redis CPU per check" figure). redis-server is pinned to
# nginx's core as in bench/run.sh, redis-benchmark to the load generator's,
# and the commands arrive pipelined about as deep as one nginx worker sends
# them under bench/run.sh's load (`BENCH_PIPELINE`, measured there as
# commands per read(2) of redis-server: about 8).
#
# Commands: GET of a short string (the cheapest read), the uncached check's
# HMGET of contract v2's 11 fields, and the v1 check's HMGET of the session's
# 6 fields. Reported: Redis's CPU (utime+stime) per command, and the
# command's own time from INFO commandstats; the difference is reading,
# parsing, replying and waking up, which the module does not control.
#
# Environment: BENCH_REQUESTS=400000 BENCH_PIPELINE=8 BENCH_CLIENTS=4
#              BENCH_ROUNDS=3 NGINX_CORE=0 WRK_CORE=1 REDIS_CORES=$NGINX_CORE
set -euo pipefail

BENCH_REQUESTS=${BENCH_REQUESTS:-400000}
BENCH_PIPELINE=${BENCH_PIPELINE:-8}
BENCH_CLIENTS=${BENCH_CLIENTS:-4}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
NGINX_CORE=${NGINX_CORE:-0}
WRK_CORE=${WRK_CORE:-1}
REDIS_CORES=${REDIS_CORES:-$NGINX_CORE}

dir=$(mktemp -d)
cleanup() {
  [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
  --daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
pid=$(cat "$dir/redis.pid")
taskset -pc "$REDIS_CORES" "$pid" >/dev/null

# One session hash as contract version 2 writes it (docs/redis-contract.md).
redis-cli -p "$port" hset sess:bench_1 user_id user_1 expires_at 4102444800000 status active \
  idle_timeout 0 last_active_at 1800000000000 token_type opaque user_status active role member \
  roles member db_id 1 email user1@example.com >/dev/null
redis-cli -p "$port" set str:bench_1 user_1 >/dev/null

ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
clk=$(getconf CLK_TCK)

declare -A commands=(
  [get]="get str:bench_1"
  [hmget_v2]="hmget sess:bench_1 user_id expires_at status idle_timeout last_active_at token_type user_status role roles db_id email"
  [hmget_v1]="hmget sess:bench_1 user_id expires_at status idle_timeout last_active_at token_type"
)
declare -A best=()
for round in $(seq "$BENCH_ROUNDS"); do
  for name in get hmget_v2 hmget_v1; do
    redis-cli -p "$port" config resetstat >/dev/null
    before=$(ticks)
    # shellcheck disable=SC2086
    taskset -c "$WRK_CORE" redis-benchmark -p "$port" -c "$BENCH_CLIENTS" -P "$BENCH_PIPELINE" \
      -n "$BENCH_REQUESTS" -q ${commands[$name]} >/dev/null
    after=$(ticks)
    us=$(awk -v t=$((after - before)) -v c="$clk" -v n="$BENCH_REQUESTS" \
      'BEGIN { printf "%.2f", t * 1e6 / c / n }')
    verb=${name%%_*}
    own=$(redis-cli -p "$port" info commandstats | tr -d '\r' |
      awk -F'[,=]' -v v="cmdstat_$verb:calls" '$1 == v { print $6 }')
    echo "round $round: $name $us us/command (command itself $own us)" >&2
    if [ -z "${best[$name]:-}" ] || awk -v a="$us" -v b="${best[$name]%% *}" 'BEGIN { exit !(a < b) }'; then
      best[$name]="$us $own"
    fi
  done
done

echo "Redis CPU per command (redis-server on cpus $REDIS_CORES, redis-benchmark on $WRK_CORE," \
  "-c $BENCH_CLIENTS -P $BENCH_PIPELINE, least of $BENCH_ROUNDS rounds):"
printf '  %-9s %6s %8s\n' command "us/cmd" "itself"
for name in get hmget_v2 hmget_v1; do
  read -r us own <<<"${best[$name]}"
  printf '  %-9s %6s %8s\n' "$name" "$us" "$own"
done
