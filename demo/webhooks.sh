# shellcheck shell=bash
# Sourced by scripts/demo.sh: a signed webhook taking effect at nginx.
#
# sess_demo_webhook is unknown (401); a signed user.created (role admin) and
# session.created reach syncd, which commits them to PostgreSQL and projects
# them into Redis (asynchronously: poll until nginx lets the session in);
# then a signed session.revoked, and nginx refuses the session again (the
# module's cache drops it on the revocation message, or after ttl=5s).

WEBHOOK_USER=user_demo_webhook
WEBHOOK_SESSION=sess_demo_webhook

send_webhook() {  # send_webhook TYPE ARGS...: print the command, run it, check it
    local args=("$@")
    if [[ $SYNCD_PORT != 8787 ]]; then
        args+=(--url "http://127.0.0.1:$SYNCD_PORT/webhooks/clerk")
    fi
    if [[ $SECRET_FILE != "$ROOT/build/demo/webhook-secret" ]]; then
        args+=(--secret-file "$SECRET_FILE")
    fi
    printf '\n$ demo/send_webhook.py %s\n' "${args[*]}"
    if ! "$PYTHON" "$ROOT/demo/send_webhook.py" "${args[@]}"; then
        printf '     (EXPECTED 200)\n'
        # shellcheck disable=SC2034 # show() and finish() in scripts/demo.sh use it
        FAILED=1
    fi
}

poll_status() {  # poll_status EXPECTED SECONDS CURL-ARGS...: wait for that status
    local expected=$1 seconds=$2 start deadline status
    shift 2
    start=$(date +%s%N)
    deadline=$((start + seconds * 1000000000))
    while :; do
        status=$(curl -s -o /dev/null -w '%{http_code}' "$@" || true)
        if [[ $status == "$expected" ]]; then
            printf '  (%s after %d ms of polling)\n' "$expected" $((($(date +%s%N) - start) / 1000000))
            return 0
        fi
        (($(date +%s%N) < deadline)) || break
        sleep 0.2
    done
    printf '  (still %s after %d s of polling)\n' "$status" "$seconds"
}

demonstrate_webhooks() {
    local url=http://127.0.0.1:$NGINX_PORT/api/orders
    local cookie="Cookie: __session=$WEBHOOK_SESSION"
    log ""
    log "== A signed webhook taking effect (syncd -> PostgreSQL -> Redis -> nginx) =="
    show 401 "before: nginx does not know $WEBHOOK_SESSION yet" "$url" -H "$cookie"

    send_webhook user.created --user "$WEBHOOK_USER" --role admin
    send_webhook session.created --session "$WEBHOOK_SESSION" --user "$WEBHOOK_USER"

    log ""
    log "# waiting for syncd's projection to reach Redis (asynchronous), and for"
    log "# nginx's cached miss from the first request to expire (negative_ttl=1s)"
    poll_status 200 5 "$url" -H "$cookie"
    EXPECT_IN_BODY="\"X-User-Id\": \"$WEBHOOK_USER\"" \
        show 200 "after: the same request passes, and the upstream sees X-User-Id" "$url" -H "$cookie"
    log ""
    log "\$ redis-cli -p $REDIS_PORT hgetall sess:$WEBHOOK_SESSION"
    "$REDIS_CLI" -p "$REDIS_PORT" hgetall "sess:$WEBHOOK_SESSION" | paste -d' ' - - | sed 's/^/  /'

    send_webhook session.revoked --session "$WEBHOOK_SESSION" --user "$WEBHOOK_USER"
    log ""
    log "# waiting for nginx to drop the revoked session (revocation message, or ttl=5s)"
    poll_status 401 8 "$url" -H "$cookie"
    show 401 "after session.revoked: refused again" "$url" -H "$cookie"
}
