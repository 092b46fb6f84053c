# shellcheck shell=bash
# Sourced by scripts/demo.sh: helpers for the webhook steps of the Clerk part
# (demo/clerk.sh). send_webhook signs a Clerk-shaped event with
# demo/send_webhook.py and posts it to syncd, which commits it to PostgreSQL
# and projects it into Redis (asynchronously); poll_status waits for nginx to
# give a status.

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
        die "syncd did not accept the signed $1 webhook (see $DEMO/syncd.log)"
    fi
}

# poll_status EXPECTED SECONDS CURL-ARGS...: wait for that status (returns 1
# when it does not come); prints how long it took.
poll_status() {
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
        sleep "${POLL_INTERVAL:-0.2}"
    done
    printf '  (still %s after %d s of polling, EXPECTED %s)\n' "$status" "$seconds" "$expected"
    return 1
}
