# Sourced by the syncd benchmarks: a temporary PostgreSQL cluster (run as
# the postgres user) and a redis-server, each on a free loopback port, in a
# temporary directory that goes away on exit (BENCH_KEEP=1 keeps it).
#   start_servers NAME [postgres -c options...]
# sets work, pg_port, redis_port; pids appended to bench_pids are stopped
# first on exit (a syncd the benchmark started, say).

pg_bin=/usr/lib/postgresql/15/bin
bench_pids=()
redis_pid=

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_servers() {
  local pid
  for pid in "${bench_pids[@]+"${bench_pids[@]}"}" $redis_pid; do
    kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  done
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $work"; else rm -rf "$work"; fi
}

start_servers() {  # start_servers NAME [-c option ...]
  local name=$1
  shift
  work=$(mktemp -d "/tmp/$name.XXXXXX")
  chmod 755 "$work"
  trap stop_servers EXIT
  pg_port=$(free_port)
  redis_port=$(free_port)
  mkdir "$work/pg" && chown postgres:postgres "$work/pg"
  runuser -u postgres -- "$pg_bin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 >/dev/null
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 $*" start >/dev/null
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
  redis_pid=$!
  local _
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
}
