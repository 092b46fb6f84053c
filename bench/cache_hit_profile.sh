#!/usr/bin/env bash
# What one request costs nginx's worker, in instructions, for plain nginx
# (`return 200`), plain nginx answering as the module's locations do (`gif`:
# empty_gif and an add_header, no check), the module with its shared-memory cache (every request a
# cache hit) and the module without cache (one HMGET a request): the
# measurement behind issue 8's cache-hit target, made to be repeatable on a
# small, shared, noisy machine where requests/s are not.
#
# Each variant gets its own nginx (bench/run.sh's configuration of the same
# variant, plus a stub_status location that counts the requests served) and
# the same Redis, seeded with PROFILE_SESSIONS v2 session hashes. wrk sends
# PROFILE_REQUESTS requests, each with the
# cookie of a session picked at random, after a warm-up that sends every
# session's request once (so that the cache variant then only hits: the
# script checks that Redis saw no HMGET during the measured run).
#
# Two passes, each optional (PROFILE_PASSES):
#   callgrind  nginx (one process, master_process off) under valgrind's
#              callgrind: Ir, the user-space instructions executed, counted
#              exactly (no hardware counters needed, no noise from the other
#              processes on the machine: the same build gives the same
#              figure run after run, to within a few instructions). The
#              kernel's share (the sockets) is not in it. Prints Ir/request
#              and the functions with the most self Ir per request
#              (callgrind_annotate), per variant.
#   perf       nginx natively (one worker, pinned as in bench/run.sh), with
#              `perf stat -p <worker>`: task-clock (CPU time, noisy) and,
#              where the machine has hardware counters (not in most VMs),
#              instructions and cycles, user and kernel together.
# How to read it: bench/run.sh's ratio compares the module with `plain`;
# the module's own cost is its Ir/request minus `gif`'s (the rest is
# empty_gif and add_header, which plain's `return 200` does not do). A change to the
# module's hot path shows up as a change in that difference, and the
# per-function table says where it went.
#
# Environment (all optional):
#   PROFILE_VARIANTS="plain gif cache nocache"
#   PROFILE_PASSES="callgrind perf"
#   PROFILE_REQUESTS=20000 (callgrind), PROFILE_PERF_REQUESTS=200000 (perf)
#   PROFILE_SESSIONS=1000   PROFILE_CONNECTIONS=50   PROFILE_TOP=12
#   PROFILE_KEEP=0          1: keep the temporary directory (callgrind.out.*)
#   PROFILE_CACHE_SIM=0     1: callgrind also simulates the CPU caches and
#                           reports data-cache misses per request (D1: first
#                           level, LL: last level), per object and function:
#                           what a walk through shared memory costs beyond
#                           its instructions
#   NGINX_CORE=0 WRK_CORE=1 (perf pass; Redis shares nginx's core)
#   NGINX=/usr/sbin/nginx MODULE_SO=<repo>/build/nginx/objs/ngx_session_module.so
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE_VARIANTS=${PROFILE_VARIANTS:-plain gif cache nocache}
PROFILE_PASSES=${PROFILE_PASSES:-callgrind perf}
PROFILE_REQUESTS=${PROFILE_REQUESTS:-20000}
PROFILE_PERF_REQUESTS=${PROFILE_PERF_REQUESTS:-200000}
PROFILE_SESSIONS=${PROFILE_SESSIONS:-1000}
PROFILE_CONNECTIONS=${PROFILE_CONNECTIONS:-50}
PROFILE_TOP=${PROFILE_TOP:-12}
PROFILE_KEEP=${PROFILE_KEEP:-0}
PROFILE_CACHE_SIM=${PROFILE_CACHE_SIM:-0}
NGINX_CORE=${NGINX_CORE:-0}
WRK_CORE=${WRK_CORE:-1}
NGINX=${NGINX:-/usr/sbin/nginx}
MODULE_SO=${MODULE_SO:-$ROOT/build/nginx/objs/ngx_session_module.so}

say() { printf 'profile: %s\n' "$*" >&2; }
die() { printf 'profile: FAILED: %s\n' "$*" >&2; exit 1; }

for tool in "$NGINX" redis-server redis-cli wrk curl python3 taskset; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
for pass in $PROFILE_PASSES; do
  case $pass in
    callgrind) command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
                 || die "valgrind (callgrind) not found" ;;
    perf) command -v perf >/dev/null || die "perf not found" ;;
    *) die "unknown pass '$pass' in PROFILE_PASSES" ;;
  esac
done
for v in $PROFILE_VARIANTS; do
  case $v in
    plain|gif) ;;
    cache|nocache) [ -f "$MODULE_SO" ] || die "$MODULE_SO not built (set MODULE_SO)" ;;
    *) die "unknown variant '$v' (plain, gif, cache, nocache)" ;;
  esac
done
[[ $PROFILE_REQUESTS =~ ^[1-9][0-9]*$ && $PROFILE_SESSIONS =~ ^[1-9][0-9]*$ ]] \
  || die "PROFILE_REQUESTS and PROFILE_SESSIONS must be positive numbers"
PIN=1
[ "$(nproc)" -ge 2 ] || PIN=0

TMP=$(mktemp -d /tmp/ngx-session-profile.XXXXXX)
chmod 755 "$TMP"  # nginx's worker runs as nobody when we are root
REDIS_PID= NGX_PID= PERF_PID= WRK_PID=

stop_pid() { # TERM, then KILL after 10 s (valgrind takes a while to exit)
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  stop_pid "$WRK_PID"
  stop_pid "$PERF_PID"
  stop_pid "$NGX_PID"
  stop_pid "$REDIS_PID"
  wait 2>/dev/null
  if [ "$PROFILE_KEEP" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_ports() { # free_ports <n>
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
wait_for() { # wait_for <what> <tries of 0.1 s> <command...>
  local what=$1 tries=$2 i; shift 2
  for i in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up"
}

# --- Redis, seeded as bench/run.sh seeds it (contract v2 hashes) ----------------
read -r REDIS_PORT HTTP_PORT <<<"$(free_ports 2)"
REDIS_PIN=()
[ "$PIN" = 1 ] && REDIS_PIN=(taskset -c "$NGINX_CORE")
${REDIS_PIN[@]+"${REDIS_PIN[@]}"} redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
  --appendonly no --daemonize no --dir "$TMP" --logfile "$TMP/redis.log" &
REDIS_PID=$!
wait_for "redis-server" 100 redis-cli -p "$REDIS_PORT" ping
EXPIRES=$(( ($(date +%s) + 7200) * 1000 ))
awk -v n="$PROFILE_SESSIONS" -v expat="$EXPIRES" '
  function cmd(a, k, i, s) { s = "*" k "\r\n"; for (i = 1; i <= k; i++) s = s "$" length(a[i]) "\r\n" a[i] "\r\n"; printf "%s", s }
  BEGIN {
    a[1] = "FLUSHALL"; cmd(a, 1)
    for (i = 1; i <= n; i++) {
      split("", a)
      a[1] = "HSET"; a[2] = "sess:bench_" i; a[3] = "user_id"; a[4] = "user_" i
      a[5] = "expires_at"; a[6] = expat; a[7] = "status"; a[8] = "active"
      a[9] = "user_status"; a[10] = "active"; a[11] = "role"; a[12] = "member"
      a[13] = "db_id"; a[14] = i; a[15] = "email"; a[16] = "user" i "@bench.example"; cmd(a, 16)
    }
  }' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null || die "seeding Redis failed"
[ "$(redis-cli -p "$REDIS_PORT" dbsize)" = "$PROFILE_SESSIONS" ] || die "seeding Redis failed"

hmget_calls() {
  redis-cli -p "$REDIS_PORT" info commandstats |
    awk -F'[:=,]' '$1 == "cmdstat_hmget" { print $3; found = 1 } END { if (!found) print 0 }'
}

# --- nginx ---------------------------------------------------------------------
# bench/run.sh's configuration of the variant (the cache's ttl longer: a run
# under valgrind may outlast 30 s), with a request counter beside it.
write_conf() { # write_conf <variant> <dir> <single: 1 = master_process off>
  local v=$1 dir=$2 single=$3 load= http= location
  location='location / { default_type text/plain; return 200 "ok"; }'
  if [ "$v" = gif ]; then
    location='location / { add_header X-Session-User user_1 always; empty_gif; }'
  elif [ "$v" != plain ]; then
    load="load_module $MODULE_SO;"
    http="session_redis 127.0.0.1:$REDIS_PORT;"
    # under valgrind, replies seem slow to nginx (it is the slow one)
    [ "$single" = 1 ] && http="session_redis 127.0.0.1:$REDIS_PORT timeout=30s dead_after=60s;"
    local cache="session_cache off;"
    if [ "$v" = cache ]; then
      http="$http
    session_cache_zone sessions:16m ttl=600s;"
      cache="session_cache sessions;"
    fi
    location="location / {
            session_check on;
            session_token cookie=sessionId bearer;
            $cache
            add_header X-Session-User \$session_user_id always;
            empty_gif;
        }"
  fi
  local proc="worker_processes 1;"
  if [ "$single" = 1 ]; then
    proc="master_process off;"
  elif [ "$PIN" = 1 ]; then
    # worker_cpu_affinity's bitmask: 1 followed by NGINX_CORE zeros
    proc="$proc
worker_cpu_affinity 1$(printf '%*s' "$NGINX_CORE" '' | tr ' ' 0);"
  fi
  cat >"$dir/nginx.conf" <<EOF
$load
$proc
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $http
    server {
        listen 127.0.0.1:$HTTP_PORT;
        location = /__requests { stub_status; }
        $location
    }
}
EOF
  "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" 2>"$dir/nginx-t.log" \
    || { cat "$dir/nginx-t.log" >&2; die "nginx -t rejected $dir/nginx.conf"; }
}

served() { # requests nginx has read, from stub_status (this probe included)
  curl -s -m 60 "http://127.0.0.1:$HTTP_PORT/__requests" | awk 'NR == 3 { print $3 }'
}

sanity() { # sanity <variant>
  local got want
  got=$(curl -s -m 60 -o /dev/null -w '%{http_code}' -H 'Cookie: sessionId=bench_1' \
    "http://127.0.0.1:$HTTP_PORT/")
  [ "$got" = 200 ] || die "$1: GET / with a seeded session answered $got"
  if [ "$1" = cache ] || [ "$1" = nocache ]; then
    want=401
    got=$(curl -s -m 60 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/")
    [ "$got" = "$want" ] || die "$1: GET / without a session answered $got, expected $want"
  fi
}

# wrk's script: requests formatted once; `seq` sends every session's in
# turn, `random` picks one (the same sequence every run: a fixed seed); the
# thread stops once PROFILE_N responses came back. A response() callback
# costs wrk, not nginx.
cat >"$TMP/profile.lua" <<'EOF'
local reqs, n, sent, done, limit, order = {}, 0, 0, 0, 0, "random"
function init(args)
  n = tonumber(os.getenv("PROFILE_SESSIONS"))
  limit = tonumber(os.getenv("PROFILE_N"))
  order = os.getenv("PROFILE_ORDER") or "random"
  for i = 1, n do
    reqs[i] = wrk.format("GET", "/", { ["Cookie"] = "sessionId=bench_" .. i })
  end
  math.randomseed(20240521)
end
function request()
  sent = sent + 1
  if order == "seq" then return reqs[(sent - 1) % n + 1] end
  return reqs[math.random(n)]
end
function response(status, headers, body)
  done = done + 1
  if done == limit then
    -- wrk's main thread sleeps for -d whatever its threads do: tell the
    -- script, which then interrupts it
    io.open(os.getenv("PROFILE_DONE"), "w"):close()
    wrk.thread:stop()
  end
end
EOF

# drive <requests> <order: seq|random>: wrk sends (at least) that many
# requests; what nginx served is counted on its side (stub_status).
drive() {
  local wrk=(wrk -t1 -c"$PROFILE_CONNECTIONS" -d3600s -s "$TMP/profile.lua"
             "http://127.0.0.1:$HTTP_PORT/")
  [ "$PIN" = 1 ] && [ "${DRIVE_PIN:-0}" = 1 ] && wrk=(taskset -c "$WRK_CORE" "${wrk[@]}")
  local i
  rm -f "$TMP/wrk.done"
  PROFILE_N=$1 PROFILE_ORDER=$2 PROFILE_SESSIONS=$PROFILE_SESSIONS PROFILE_DONE=$TMP/wrk.done \
    "${wrk[@]}" >"$TMP/wrk.out" &
  WRK_PID=$!
  for ((i = 0; i < 36000; i++)); do   # hang guard: an hour
    [ -e "$TMP/wrk.done" ] && break
    kill -0 "$WRK_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -INT "$WRK_PID" 2>/dev/null || true
  wait "$WRK_PID" || { cat "$TMP/wrk.out" >&2; die "wrk failed"; }
  WRK_PID=
  [ -e "$TMP/wrk.done" ] || { cat "$TMP/wrk.out" >&2; die "wrk ended before $1 responses"; }
  if grep -q 'Non-2xx' "$TMP/wrk.out"; then cat "$TMP/wrk.out" >&2; die "non-2xx responses"; fi
}

declare -A IR PERF_TASK PERF_INSN PERF_CYC
# --- callgrind pass ------------------------------------------------------------
callgrind_variant() { # callgrind_variant <variant>
  local v=$1 dir=$TMP/cg-$1 out before after n hm0 hm1 total
  mkdir -p "$dir"
  write_conf "$v" "$dir" 1
  out=$dir/callgrind.out
  local sim=no
  [ "$PROFILE_CACHE_SIM" = 1 ] && sim=yes
  valgrind --tool=callgrind --callgrind-out-file="$out" --instr-atstart=no --cache-sim="$sim" \
    --log-file="$dir/valgrind.log" \
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
  NGX_PID=$!
  wait_for "nginx ($v) under callgrind" 600 curl -s -m 5 -o /dev/null "http://127.0.0.1:$HTTP_PORT/__requests"
  callgrind_control -i on "$NGX_PID" >/dev/null
  sanity "$v"
  drive "$PROFILE_SESSIONS" seq               # every session once: the cache holds them all
  drive $(( PROFILE_REQUESTS / 10 )) random   # warm the code paths
  hm0=$(hmget_calls)
  before=$(served)
  callgrind_control -z "$NGX_PID" >/dev/null
  drive "$PROFILE_REQUESTS" random
  callgrind_control -d "$NGX_PID" >/dev/null
  after=$(served)
  hm1=$(hmget_calls)
  n=$(( after - before - 1 ))   # the probe that read `after`
  stop_pid "$NGX_PID"; wait "$NGX_PID" 2>/dev/null || true; NGX_PID=
  if [ "$v" = cache ] && [ "$hm1" != "$hm0" ]; then
    die "cache: Redis saw $(( hm1 - hm0 )) HMGETs during the measured run (expected none)"
  fi
  local dump
  dump=$(ls "$out".* 2>/dev/null | sort -t. -k3 -n | tail -1)
  [ -n "$dump" ] || dump=$out
  total=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null |
    awk '/PROGRAM TOTALS/ && !seen { gsub(",", "", $1); print $1; seen = 1 }')
  [ -n "$total" ] || die "$v: no totals in $dump"
  IR[$v]=$(( total / n ))
  python3 "$TMP/self_cost.py" "$dump" "$n" "$v" "$PROFILE_TOP" >>"$TMP/report.txt"
}

# Self Ir per request by object (nginx, the module, libc, libcrypto...) and
# by function, from callgrind's output file: callgrind_annotate names no
# object, and most of nginx's and libcrypto's functions have no symbol here.
cat >"$TMP/self_cost.py" <<'EOF'
import collections, os, re, sys
path, n, variant, top = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
names = {"ob": {}, "fn": {}, "fl": {}}
table = {"ob": "ob", "cob": "ob", "fn": "fn", "cfn": "fn",
         "fl": "fl", "fi": "fl", "fe": "fl", "cfl": "fl", "cfi": "fl"}
events = ["Ir"]
by_fn = collections.defaultdict(lambda: [0] * len(events))
by_ob = collections.defaultdict(lambda: [0] * len(events))
ob = fn = None
after_call = False
for line in open(path, errors="replace"):
    if line.startswith("events:"):
        events = line.split()[1:]
        continue
    head = line.split("=", 1)[0]
    if head in table and "=" in line:
        val = line.rstrip("\n").split("=", 1)[1]
        m = re.match(r"\((\d+)\)(?: (.*))?$", val)
        if m:
            if m.group(2) is not None:
                names[table[head]][m.group(1)] = m.group(2)
            val = names[table[head]].get(m.group(1), "?")
        if head == "ob":
            ob = val
        elif head == "fn":
            fn = val
        continue
    if line.startswith("calls="):
        after_call = True  # the next cost line is the call's inclusive cost
        continue
    if line[:1] in "0123456789+-*":
        if after_call:
            after_call = False
            continue
        parts = line.split()[1:]
        f, o = by_fn[(ob, fn)], by_ob[ob]
        for i, x in enumerate(parts):
            f[i] += int(x)
            o[i] += int(x)

# Ir, and with --cache-sim data-cache misses (reads and writes): D1, LL
def cols(c):
    out = [c[events.index("Ir")] / n]
    if "D1mr" in events:
        out.append((c[events.index("D1mr")] + c[events.index("D1mw")]) / n)
        out.append((c[events.index("DLmr")] + c[events.index("DLmw")]) / n)
    return "".join("%9.2f" % x if i else "%8.0f" % x for i, x in enumerate(out))

header = "      Ir" + ("   D1miss   LLmiss" if "D1mr" in events else "")
total = [sum(c[i] for c in by_ob.values()) for i in range(len(events))]
print("\n== %s: %d requests, per request:\n%s\n%s  total" % (variant, n, header, cols(total)))
print("   self cost by object:")
for o, c in sorted(by_ob.items(), key=lambda kv: -kv[1][0])[:8]:
    print("%s  %s" % (cols(c), os.path.basename(o or "?")))
for k, label in [(0, "Ir")] + ([(events.index("D1mr"), "D1 read misses")] if "D1mr" in events else []):
    print("   self cost by function, by %s:" % label)
    for (o, f), c in sorted(by_fn.items(), key=lambda kv: -kv[1][k])[:top]:
        print("%s  %s  [%s]" % (cols(c), f[:100], os.path.basename(o or "?")))
EOF

# --- perf pass -----------------------------------------------------------------
PERF_EVENTS=task-clock
if perf stat -e instructions,cycles true >/dev/null 2>&1 &&
   ! perf stat -x, -e instructions true 2>&1 | grep -q 'not supported'; then
  PERF_EVENTS=task-clock,instructions,cycles
fi
perf_variant() { # perf_variant <variant>
  local v=$1 dir=$TMP/perf-$1 before after n worker i
  mkdir -p "$dir"
  write_conf "$v" "$dir" 0
  if [ "$PIN" = 1 ]; then
    taskset -c "$NGINX_CORE" "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
  else
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" 2>>"$dir/error.log" &
  fi
  NGX_PID=$!
  wait_for "nginx ($v)" 100 curl -s -m 5 -o /dev/null "http://127.0.0.1:$HTTP_PORT/__requests"
  worker=$(ps -o pid= --ppid "$NGX_PID" | awk 'NR == 1 { print $1 }')
  [ -n "$worker" ] || die "$v: no nginx worker"
  sanity "$v"
  DRIVE_PIN=1 drive "$PROFILE_SESSIONS" seq
  DRIVE_PIN=1 drive $(( PROFILE_PERF_REQUESTS / 10 )) random
  before=$(served)
  perf stat -x, -e "$PERF_EVENTS" -p "$worker" -o "$dir/perf.csv" &
  PERF_PID=$!
  sleep 0.5   # perf attaches
  DRIVE_PIN=1 drive "$PROFILE_PERF_REQUESTS" random
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=
  after=$(served)
  n=$(( after - before - 1 ))
  stop_pid "$NGX_PID"; wait "$NGX_PID" 2>/dev/null || true; NGX_PID=
  for i in task-clock instructions cycles; do
    local val
    val=$(awk -F, -v e="$i" '$3 ~ "^" e { print $1 }' "$dir/perf.csv")
    case $i in
      task-clock) PERF_TASK[$v]=$(awk -v x="$val" -v n="$n" 'BEGIN { printf "%.2f", x * 1000 / n }') ;;
      instructions) if [[ $val =~ ^[0-9]+$ ]]; then PERF_INSN[$v]=$(( val / n )); fi ;;
      cycles) if [[ $val =~ ^[0-9]+$ ]]; then PERF_CYC[$v]=$(( val / n )); fi ;;
    esac
  done
}

: >"$TMP/report.txt"
for pass in $PROFILE_PASSES; do
  for v in $PROFILE_VARIANTS; do
    say "$pass: $v"
    "${pass}_variant" "$v"
  done
done

printf '\n%-8s %14s %14s %16s %14s\n' variant "Ir/request" "over plain" "task-clock us/req" "insn/cyc/req"
for v in $PROFILE_VARIANTS; do
  over=-
  if [ -n "${IR[$v]:-}" ] && [ -n "${IR[plain]:-}" ] && [ "$v" != plain ]; then
    over=$(( IR[$v] - IR[plain] ))
  fi
  printf '%-8s %14s %14s %16s %14s\n' "$v" "${IR[$v]:--}" "$over" "${PERF_TASK[$v]:--}" \
    "${PERF_INSN[$v]:--}/${PERF_CYC[$v]:--}"
done
cat "$TMP/report.txt"
