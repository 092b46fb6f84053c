#!/usr/bin/env bash
# The local demo: `make demo` runs `scripts/demo.sh start` (after building the
# module), `make demo-stop` runs `scripts/demo.sh stop`.
#
#   scripts/demo.sh start    stop anything a previous run left, then start
#                            Redis, PostgreSQL, the demo upstream, a stand-in
#                            for Clerk's Frontend API, syncd and nginx; seed
#                            opaque demo sessions and show curl commands with
#                            their results; then the Clerk part: signed
#                            webhooks to syncd, Clerk session tokens (JWTs,
#                            signed with the demo's own instance key) accepted
#                            with the identity from PostgreSQL, the org-role
#                            gate, the handshake round trip, and a token
#                            refused after session.revoked. Dies when an
#                            answer is not the expected one.
#   scripts/demo.sh stop     stop what `start` started (by the pid files in
#                            build/demo/, nothing else)
#   scripts/demo.sh status   say what is running
#
# Fixed loopback ports (override with the environment variables):
#   Redis          127.0.0.1:6380   DEMO_REDIS_PORT
#   nginx          127.0.0.1:8080   DEMO_NGINX_PORT
#   demo upstream  127.0.0.1:8081   DEMO_UPSTREAM_PORT
#   PostgreSQL     127.0.0.1:6432   DEMO_PG_PORT     (not 5432: a system
#                                                     PostgreSQL may have it)
#   syncd          127.0.0.1:8787   DEMO_SYNCD_PORT
#   Frontend API   127.0.0.1:8788   DEMO_FAPI_PORT   (tests/clerk/frontend_api.py)
# Everything (configuration, pid files, logs, Redis's directory) lives in
# build/demo/. nginx runs the repository's nginx.conf.example with the module
# path, ports, log paths, the Clerk key file (build/demo/clerk/jwks.json), the
# Frontend API URL (issuer and handshake: the stand-in's URL) and the
# authorized party (the nginx origin, http://127.0.0.1:8080) substituted
# (build/demo/nginx.conf). PostgreSQL is
# a fresh cluster on every start, run as the postgres user (demo/postgres.sh);
# syncd uses it and the same Redis as nginx, with a webhook secret generated
# on every start (demo/syncd.sh, build/demo/syncd.env). The webhooks are
# signed by demo/send_webhook.py (demo/webhooks.sh). The Clerk instance key,
# the stand-in Frontend API and the Clerk part are in demo/clerk.sh; tokens are
# minted by demo/clerk.py (with tests/clerk/tokens.py) into build/demo/clerk/.
#
# Services are started in the order of SERVICES and stopped in reverse; each
# has start_<name>, stop_<name> and a pid file (PostgreSQL: its postmaster.pid).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
DEMO=$BUILD/demo
MODULE_SO=${SESSION_MODULE_SO:-$BUILD/nginx/objs/ngx_session_module.so}
NGINX=${NGINX:-/usr/sbin/nginx}
REDIS_SERVER=${REDIS_SERVER:-/usr/bin/redis-server}
REDIS_CLI=${REDIS_CLI:-/usr/bin/redis-cli}
PYTHON=${PYTHON:-/usr/bin/python3}

REDIS_PORT=${DEMO_REDIS_PORT:-6380}
NGINX_PORT=${DEMO_NGINX_PORT:-8080}
UPSTREAM_PORT=${DEMO_UPSTREAM_PORT:-8081}
PG_PORT=${DEMO_PG_PORT:-6432}
SYNCD_PORT=${DEMO_SYNCD_PORT:-8787}
FAPI_PORT=${DEMO_FAPI_PORT:-8788}

SERVICES=(redis postgres upstream fapi syncd nginx)

log() { printf '%s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------
# pid files: a pid counts only while its process still runs the expected
# program, so a recycled pid is never signalled.

pid_of() {  # pid_of NAME PROGRAM-SUBSTRING -> prints the live pid or nothing
    local file=$DEMO/$1.pid pid
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"; then
        echo "$pid"
    fi
}

stop_pid() {  # stop_pid NAME PROGRAM-SUBSTRING SIGNAL
    local pid
    pid=$(pid_of "$1" "$2")
    if [[ -n $pid ]]; then
        kill "-$3" "$pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$DEMO/$1.pid"
}

wait_for() {  # wait_for WHAT COMMAND...
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    die "$what did not come up (logs in $DEMO)"
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# PostgreSQL, syncd and the webhook part of the demo
# shellcheck source-path=SCRIPTDIR/.. source=demo/postgres.sh
source "$ROOT/demo/postgres.sh"
# shellcheck source-path=SCRIPTDIR/.. source=demo/syncd.sh
source "$ROOT/demo/syncd.sh"
# shellcheck source-path=SCRIPTDIR/.. source=demo/webhooks.sh
source "$ROOT/demo/webhooks.sh"
# shellcheck source-path=SCRIPTDIR/.. source=demo/clerk.sh
source "$ROOT/demo/clerk.sh"

# --------------------------------------------------------------------------
# Redis

start_redis() {
    port_free "$REDIS_PORT" || die "port $REDIS_PORT is in use (DEMO_REDIS_PORT=... to choose another)"
    mkdir -p "$DEMO/redis"
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$DEMO/redis" --logfile "$DEMO/redis.log" --pidfile "$DEMO/redis.pid" \
        --daemonize yes
    wait_for "Redis on port $REDIS_PORT" "$REDIS_CLI" -p "$REDIS_PORT" ping
    log "Redis         127.0.0.1:$REDIS_PORT (pid $(<"$DEMO/redis.pid"))"
}

stop_redis() { stop_pid redis redis-server TERM; }

# --------------------------------------------------------------------------
# The demo upstream (the application)

start_upstream() {
    port_free "$UPSTREAM_PORT" || die "port $UPSTREAM_PORT is in use (DEMO_UPSTREAM_PORT=... to choose another)"
    nohup "$PYTHON" "$ROOT/demo/upstream.py" "$UPSTREAM_PORT" >"$DEMO/upstream.log" 2>&1 &
    echo $! >"$DEMO/upstream.pid"
    wait_for "the demo upstream on port $UPSTREAM_PORT" \
        curl -sf -o /dev/null "http://127.0.0.1:$UPSTREAM_PORT/sign-in"
    log "upstream      127.0.0.1:$UPSTREAM_PORT (pid $(<"$DEMO/upstream.pid"), demo/upstream.py)"
}

stop_upstream() { stop_pid upstream upstream.py TERM; }

# --------------------------------------------------------------------------
# nginx with nginx.conf.example

write_nginx_conf() {
    local example=$ROOT/nginx.conf.example out=$DEMO/nginx.conf
    [[ -f $example ]] || die "$example is missing"
    sed -e "s#^load_module .*#load_module $MODULE_SO;#" \
        -e "s#session_redis 127\.0\.0\.1:6379#session_redis 127.0.0.1:$REDIS_PORT#" \
        -e "s#listen 127\.0\.0\.1:8080#listen 127.0.0.1:$NGINX_PORT#" \
        -e "s#server 127\.0\.0\.1:8081#server 127.0.0.1:$UPSTREAM_PORT#" \
        -e "s#access_log /var/log/nginx/access\.log#access_log $DEMO/access.log#" \
        -e "s#session_jwt_keys /etc/nginx/clerk-jwks\.json#session_jwt_keys $CLERK_DIR/jwks.json#" \
        -e "s#session_jwt_issuer https://clerk\.example\.com#session_jwt_issuer $FAPI_URL#" \
        -e "s#session_jwt_handshake https://clerk\.example\.com#session_jwt_handshake $FAPI_URL#" \
        -e "s#session_jwt_authorized_parties https://app\.example\.com#session_jwt_authorized_parties $APP_ORIGIN#" \
        -e "s#^http {#http {\n    client_body_temp_path $DEMO/tmp/body;\n    proxy_temp_path $DEMO/tmp/proxy;\n    fastcgi_temp_path $DEMO/tmp/fastcgi;\n    uwsgi_temp_path $DEMO/tmp/uwsgi;\n    scgi_temp_path $DEMO/tmp/scgi;\n#" \
        "$example" >"$out.body"
    {
        echo "# Generated by scripts/demo.sh from nginx.conf.example; do not edit."
        echo "pid $DEMO/nginx.pid;"
        echo "error_log $DEMO/error.log info;"
        cat "$out.body"
    } >"$out"
    rm -f "$out.body"
    # the example may change: make sure every substitution still applies
    grep -q "load_module $MODULE_SO;" "$out" || die "nginx.conf.example: no load_module line to substitute"
    grep -q "session_redis 127.0.0.1:$REDIS_PORT" "$out" || die "nginx.conf.example: no 'session_redis 127.0.0.1:6379' to substitute"
    grep -q "listen 127.0.0.1:$NGINX_PORT" "$out" || die "nginx.conf.example: no 'listen 127.0.0.1:8080' to substitute"
    grep -q "server 127.0.0.1:$UPSTREAM_PORT" "$out" || die "nginx.conf.example: no 'server 127.0.0.1:8081' to substitute"
    grep -q "session_jwt_keys $CLERK_DIR/jwks.json;" "$out" || die "nginx.conf.example: no 'session_jwt_keys /etc/nginx/clerk-jwks.json' to substitute"
    grep -q "session_jwt_issuer $FAPI_URL;" "$out" || die "nginx.conf.example: no 'session_jwt_issuer https://clerk.example.com' to substitute"
    grep -q "session_jwt_handshake $FAPI_URL;" "$out" || die "nginx.conf.example: no 'session_jwt_handshake https://clerk.example.com' to substitute"
    grep -q "session_jwt_authorized_parties $APP_ORIGIN;" "$out" || die "nginx.conf.example: no 'session_jwt_authorized_parties https://app.example.com' to substitute"
    # Commented-out variants (better-auth) are for the reader, not the demo.
    if grep -v '^[[:space:]]*#' "$out" | grep -q "example\.com"; then
        die "nginx.conf.example names an example.com URL that scripts/demo.sh does not substitute: $(grep -n 'example\.com' "$out" | grep -v '^[0-9]*:[[:space:]]*#' | head -n 1)"
    fi
    if grep -q "/var/log/nginx" "$out"; then
        die "nginx.conf.example logs to /var/log/nginx somewhere scripts/demo.sh does not substitute"
    fi
}

start_nginx() {
    [[ -f $MODULE_SO ]] || die "the module is not built: $MODULE_SO (run make module)"
    port_free "$NGINX_PORT" || die "port $NGINX_PORT is in use (DEMO_NGINX_PORT=... to choose another)"
    mkdir -p "$DEMO/tmp"
    : >"$DEMO/access.log"  # a fresh log for a fresh demo
    write_nginx_conf
    "$NGINX" -t -q -p "$DEMO/" -c "$DEMO/nginx.conf" -e "$DEMO/error.log" \
        || die "nginx -t refused $DEMO/nginx.conf"
    "$NGINX" -p "$DEMO/" -c "$DEMO/nginx.conf" -e "$DEMO/error.log"
    wait_for "nginx on port $NGINX_PORT" curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/sign-in"
    log "nginx         127.0.0.1:$NGINX_PORT (pid $(<"$DEMO/nginx.pid"), $DEMO/nginx.conf)"
}

stop_nginx() { stop_pid nginx nginx QUIT; }

# --------------------------------------------------------------------------
# Demo data (docs/redis-contract.md)

seed() {
    local now expires r=("$REDIS_CLI" -p "$REDIS_PORT")
    now=$(date +%s%3N)
    expires=$((now + 24 * 3600 * 1000))
    "${r[@]}" flushall >/dev/null
    "${r[@]}" hset user:user_admin role admin roles "admin org_demo_acme/org:admin" db_id 1 \
        email admin@example.com >/dev/null
    "${r[@]}" hset user:user_viewer role viewer roles "viewer org_demo_acme/org:member" db_id 2 \
        email viewer@example.com >/dev/null
    "${r[@]}" hset user:user_banned role admin db_id 3 email banned@example.com status banned >/dev/null
    "${r[@]}" hset sess:sess_demo_admin user_id user_admin expires_at "$expires" \
        idle_timeout 1800 last_active_at "$now" >/dev/null
    "${r[@]}" hset sess:sess_demo_viewer user_id user_viewer expires_at "$expires" >/dev/null
    "${r[@]}" hset sess:sess_demo_banned user_id user_banned expires_at "$expires" >/dev/null
    "${r[@]}" hset sess:sess_demo_revoked user_id user_admin expires_at "$expires" status revoked >/dev/null
    log "seeded        sessions sess_demo_admin (admin), sess_demo_viewer (viewer),"
    log "              sess_demo_banned (banned user), sess_demo_revoked (revoked session)"
}

# --------------------------------------------------------------------------
# Show: each curl command, its status, and what the upstream was told

FAILED=0
FAILED_STEPS=()

# Tokens are credentials: a command that carries one is printed with the
# token's name in its place ("$ADMIN_JWT"). redact NAME VALUE registers one.
REDACT_NAMES=()
REDACT_VALUES=()
redact() {
    REDACT_NAMES+=("$1")
    REDACT_VALUES+=("$2")
}

# print_command CURL-ARGS...: "$ curl -s ARGS", registered tokens by name, any
# other JWT (in a URL) cut short (short_jwts, demo/clerk.sh)
print_command() {
    local arg shown i
    {
        printf '$ curl -s'
        for arg in "$@"; do
            shown=$arg
            for i in "${!REDACT_VALUES[@]}"; do
                shown=${shown//"${REDACT_VALUES[i]}"/\$${REDACT_NAMES[i]}}
            done
            if [[ $shown != "$arg" ]]; then
                printf ' "%s"' "$shown"
            elif [[ $arg =~ ^[A-Za-z0-9_./:=-]+$ ]]; then
                printf ' %s' "$arg"
            else
                printf " '%s'" "$arg"
            fi
        done
        printf '\n'
    } | short_jwts
}

# show EXPECTED-STATUS DESCRIPTION CURL-ARGS...
# With EXPECT_IN_BODY=TEXT in its environment, the body must contain TEXT too.
show() {
    local expected=$1 what=$2 out status body location auth
    shift 2
    out=$(mktemp)
    status=$(curl -s -o "$out" -D "$out.headers" -w '%{http_code}' "$@" || true)
    body=$(head -c 600 "$out" | tr -d '\r')
    location=$(grep -i '^location:' "$out.headers" | tr -d '\r' || true)
    auth=$(grep -i '^www-authenticate:' "$out.headers" | tr -d '\r' || true)
    printf '\n# %s\n' "$what"
    print_command "$@"
    if [[ $status == "$expected" ]]; then
        printf '  -> %s' "$status"
    else
        printf '  -> %s   (EXPECTED %s)' "$status" "$expected"
        FAILED=1
        FAILED_STEPS+=("$what: $status, EXPECTED $expected")
    fi
    if [[ -n $location ]]; then printf '   %s' "$location"; fi
    if [[ -n $auth ]]; then printf '   %s' "$auth"; fi
    printf '\n'
    if [[ $status == 200 && -n $body ]]; then
        printf '     %s\n' "$(head -n 3 <<<"$body")"
    fi
    if [[ -n ${EXPECT_IN_BODY:-} ]] && ! grep -qF -- "$EXPECT_IN_BODY" "$out"; then
        printf '     (EXPECTED the body to contain %s)\n' "$EXPECT_IN_BODY"
        FAILED=1
        FAILED_STEPS+=("$what: the body lacks $EXPECT_IN_BODY")
    fi
    rm -f "$out" "$out.headers"
}

demonstrate() {
    local base=http://127.0.0.1:$NGINX_PORT
    log ""
    log "== The application's own opaque sessions (seeded in Redis) =="
    show 200 "signed in: the upstream gets the identity from nginx" \
        "$base/app/dashboard" -H 'Cookie: __session=sess_demo_admin'
    show 401 "API call without a session: 401 (WWW-Authenticate: Bearer)" \
        "$base/api/orders" -H 'Accept: application/json'
    show 302 "browser navigation without a session: 302 to the sign-in page" \
        "$base/app/dashboard" -H 'Accept: text/html'
    show 200 "an opaque session token (no dots: looked up in Redis) as a bearer token on the API" \
        "$base/api/orders" -H 'Authorization: Bearer sess_demo_viewer'
    show 403 "signed in, but not an admin: 403" \
        "$base/admin/users" -H 'Cookie: __session=sess_demo_viewer'
    show 200 "an admin on the admin pages" \
        "$base/admin/users" -H 'Cookie: __session=sess_demo_admin'
    show 401 "a banned user: 401" \
        "$base/api/orders" -H 'Cookie: __session=sess_demo_banned'
    show 401 "a revoked session: 401" \
        "$base/api/orders" -H 'Cookie: __session=sess_demo_revoked'
    show 200 "a spoofed X-User-Id never reaches the upstream" \
        "$base/" -H 'X-User-Id: user_admin' -H 'X-User-Role: admin'
    log ""
    log "# metrics (Prometheus text):"
    log "\$ curl -s $base/metrics | grep checks_total"
    curl -s "$base/metrics" | grep '^nginx_session_checks_total' | sed 's/^/  /' || true
}

# `syncd backfill` from a stand-in Backend API (demo/backfill.py): what
# Clerk already held arrives in PostgreSQL through the webhooks' rules, and
# in Redis through the running syncd's projector.
demonstrate_backfill() {
    log ""
    log "== Backfill: importing what Clerk already holds (syncd backfill) =="
    if ! "$PYTHON" "$ROOT/demo/backfill.py" "$SYNCD" "$SYNCD_ENV"; then
        FAILED=1
        FAILED_STEPS+=("syncd backfill")
        return
    fi
    log "\$ psql -c \"SELECT clerk_id, email, role, banned FROM users WHERE clerk_id LIKE 'user_backfill_%'\""
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q \
        -c "SELECT clerk_id, email, role, banned FROM users WHERE clerk_id LIKE 'user_backfill_%' ORDER BY clerk_id" |
        sed 's/^/  /'
    # The projector of syncd serve polls the outbox every second.
    local _
    for _ in $(seq 50); do
        if [[ $("$REDIS_CLI" -p "$REDIS_PORT" exists sess:sess_backfill_grace) == 1 ]]; then
            log "  Redis: sess:sess_backfill_grace projected by syncd serve from the outbox"
            return
        fi
        sleep 0.1
    done
    FAILED=1
    FAILED_STEPS+=("the backfilled session did not reach Redis")
}

finish() {
    log ""
    log "Logs in $DEMO/: access.log (with \$session_status), error.log, syncd.log,"
    log "postgres.log, fapi.log. Status: scripts/demo.sh status. Stop: make demo-stop"
    if [[ $FAILED -ne 0 ]]; then
        local step
        for step in "${FAILED_STEPS[@]}"; do
            printf 'demo: FAILED: %s\n' "$step" >&2
        done
        die "some answers were not the expected ones (see above and $DEMO/error.log)"
    fi
}

# --------------------------------------------------------------------------

stop_all() {
    local i
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        "stop_${SERVICES[i]}"
    done
}

start_all() {
    mkdir -p "$DEMO"
    stop_all
    local s
    for s in "${SERVICES[@]}"; do
        "start_$s"
    done
    seed
    demonstrate
    demonstrate_clerk
    try_clerk_by_hand
    demonstrate_backfill
    finish
}

status_all() {
    local s pid
    for s in "${SERVICES[@]}"; do
        case $s in
            redis) pid=$(pid_of redis redis-server) ;;
            upstream) pid=$(pid_of upstream upstream.py) ;;
            fapi) pid=$(pid_of fapi frontend_api.py) ;;
            nginx) pid=$(pid_of nginx nginx) ;;
            postgres) pid=$(pg_pid) ;;
            *) pid=$(pid_of "$s" "$s") ;;
        esac
        if [[ -n $pid ]]; then
            printf '%-10s running (pid %s)\n' "$s" "$pid"
        else
            printf '%-10s stopped\n' "$s"
        fi
    done
}

case ${1:-} in
    start) start_all ;;
    stop) mkdir -p "$DEMO" && stop_all ;;
    status) status_all ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
