# shellcheck shell=bash
# Sourced by scripts/demo.sh: the demo's Clerk instance and the Clerk part of
# the demo.
#
# start_fapi makes a fresh instance key (demo/clerk.py keygen, with
# tests/clerk/tokens.py) in build/demo/clerk/: instance.pem (private, 0600),
# jwks.json (what nginx reads: session_jwt_keys) and public.pem; then starts
# tests/clerk/frontend_api.py, a stand-in for Clerk's Frontend API (the
# handshake and /.well-known/jwks.json), on 127.0.0.1:$FAPI_PORT, signing with
# that key, its issuer its own URL, signed in as $CLERK_USER on the session
# $CLERK_PHONE.
#
# demonstrate_clerk: signed webhooks create the user (role admin in
# public_metadata), their membership of an organization (org:admin) and two
# sessions; syncd commits them to PostgreSQL and projects them into Redis.
# Then tokens minted with the instance key (demo/clerk.py mint) are accepted
# with the identity from PostgreSQL, the org-role gate refuses a member and
# lets an admin through, an expired cookie on a page load makes the handshake
# round trip through the stand-in Frontend API, and after a signed
# session.revoked the same, still unexpired token is refused.
# Tokens are kept in files under build/demo/clerk/ (mode 0600) and in shell
# variables; what is printed is cut short.

FAPI_URL=http://127.0.0.1:$FAPI_PORT   # the issuer and the Frontend API
APP_ORIGIN=http://127.0.0.1:$NGINX_PORT  # the authorized party (azp)
CLERK_DIR=$DEMO/clerk
CLERK_KID=ins_demo_1
CLERK_USER=user_demo_clerk
CLERK_LAPTOP=sess_demo_clerk_laptop  # its tokens are shown, then it is revoked
CLERK_PHONE=sess_demo_clerk_phone    # the stand-in's session; tokens to try by hand
CLERK_ORG=org_demo_acme
CLERK_ORG_SLUG=acme

# --------------------------------------------------------------------------
# The stand-in Frontend API (a service of scripts/demo.sh)

start_fapi() {
    port_free "$FAPI_PORT" || die "port $FAPI_PORT is in use (DEMO_FAPI_PORT=... to choose another)"
    rm -rf "$CLERK_DIR"
    mkdir -p "$CLERK_DIR"
    chmod 0755 "$CLERK_DIR"
    "$PYTHON" "$ROOT/demo/clerk.py" keygen "$CLERK_DIR" --kid "$CLERK_KID" >/dev/null \
        || die "could not make the demo's instance key (demo/clerk.py keygen; python3-cryptography?)"
    nohup "$PYTHON" "$ROOT/tests/clerk/frontend_api.py" --port "$FAPI_PORT" \
        --key-file "$CLERK_DIR/instance.pem" --kid "$CLERK_KID" --issuer "$FAPI_URL" \
        --sub "$CLERK_USER" --sid "$CLERK_PHONE" >"$DEMO/fapi.log" 2>&1 &
    echo $! >"$DEMO/fapi.pid"
    wait_for "the stand-in Frontend API on port $FAPI_PORT" \
        curl -sf -o /dev/null "$FAPI_URL/.well-known/jwks.json"
    # what it serves must be the key nginx reads
    curl -s "$FAPI_URL/.well-known/jwks.json" | "$PYTHON" -c \
        'import json, sys; sys.exit(json.load(sys.stdin) != json.load(open(sys.argv[1])))' \
        "$CLERK_DIR/jwks.json" ||
        die "the stand-in Frontend API serves another key than $CLERK_DIR/jwks.json"
    log "Frontend API  127.0.0.1:$FAPI_PORT (pid $(<"$DEMO/fapi.pid"), tests/clerk/frontend_api.py: a stand-in for Clerk's;"
    log "              instance key $CLERK_KID: $CLERK_DIR/jwks.json)"
}

stop_fapi() { stop_pid fapi frontend_api.py TERM; }

# --------------------------------------------------------------------------
# Tokens: minted into files, never printed whole

mint() {  # mint NAME ARGS...: a session token of $CLERK_USER into $CLERK_DIR/NAME.jwt
    local name=$1
    shift
    "$PYTHON" "$ROOT/demo/clerk.py" mint "$CLERK_DIR" "$CLERK_DIR/$name.jwt" --kid "$CLERK_KID" \
        --sub "$CLERK_USER" --iss "$FAPI_URL" --azp "$APP_ORIGIN" "$@" \
        || die "demo/clerk.py mint $name failed"
    printf '  %-18s ' "$name.jwt"
    "$PYTHON" "$ROOT/demo/clerk.py" describe "$CLERK_DIR/$name.jwt"
}

# org_admin / org_member: the `o` claim of the user's membership of acme
ORG_ADMIN=(--org-id "$CLERK_ORG" --org-slug "$CLERK_ORG_SLUG" --org-role admin
           --permission read --permission manage --feature 'billing=read,manage')
ORG_MEMBER=(--org-id "$CLERK_ORG" --org-slug "$CLERK_ORG_SLUG" --org-role member
            --permission read --permission manage --feature billing=read)

# Any JWT in the text cut to its first characters (URLs, Set-Cookie lines).
short_jwts() {
    sed -E 's/(eyJ[A-Za-z0-9_-]{6})[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+/\1.../g'
}

# --------------------------------------------------------------------------
# The handshake, hop by hop

HOP_LOCATION=
# hop EXPECTED DESCRIPTION CURL-ARGS...: one request (no redirect following),
# its status, Location and Set-Cookie lines (tokens cut short); dies when the
# status is not the expected one. The Location is left in HOP_LOCATION.
hop() {
    local expected=$1 what=$2 out status
    shift 2
    out=$(mktemp)
    status=$(curl -s -o /dev/null -D "$out" -w '%{http_code}' "$@" || true)
    HOP_LOCATION=$(grep -i '^location:' "$out" | head -n 1 | cut -d' ' -f2- | tr -d '\r' || true)
    printf '\n# %s\n' "$what"
    print_command "$@"
    printf '  -> %s\n' "$status"
    grep -i '^\(location\|set-cookie\|cache-control\):' "$out" | tr -d '\r' | short_jwts |
        sed 's/^/     /' || true
    rm -f "$out"
    if [[ $status != "$expected" ]]; then
        die "EXPECTED $expected from that request, got $status (see $DEMO/error.log)"
    fi
}

# --------------------------------------------------------------------------

demonstrate_clerk() {
    local base=$APP_ORIGIN api=$APP_ORIGIN/api/orders
    local r=("$REDIS_CLI" -p "$REDIS_PORT")
    log ""
    log "== Clerk session tokens (RS256 JWTs), checked by nginx =="
    log "# The demo's Clerk instance: key $CLERK_KID (nginx reads $CLERK_DIR/jwks.json),"
    log "# issuer $FAPI_URL (the stand-in Frontend API), authorized party $APP_ORIGIN."

    # a. the user, their organization membership and two sessions, by webhook
    log ""
    log "# a. Signed webhooks: syncd commits them to PostgreSQL and projects them into Redis"
    send_webhook user.created --user "$CLERK_USER" --role admin --email ada@example.com
    send_webhook organizationMembership.created --membership orgmem_demo_clerk \
        --user "$CLERK_USER" --org-id "$CLERK_ORG" --org-slug "$CLERK_ORG_SLUG" \
        --org-role org:admin --permission org:billing:read --permission org:billing:manage
    send_webhook session.created --session "$CLERK_LAPTOP" --user "$CLERK_USER"
    send_webhook session.created --session "$CLERK_PHONE" --user "$CLERK_USER"
    local db_id=
    for _ in $(seq 50); do
        db_id=$("${r[@]}" hget "user:$CLERK_USER" db_id)
        if [[ -n $db_id ]] && [[ $("${r[@]}" hget "user:$CLERK_USER" roles) == *org_demo_acme/* ]] &&
            [[ $("${r[@]}" exists "sess:$CLERK_LAPTOP" "sess:$CLERK_PHONE") == 2 ]]; then
            break
        fi
        sleep 0.1
    done
    [[ -n $db_id ]] || die "syncd did not project user:$CLERK_USER into Redis (see $DEMO/syncd.log)"
    log ""
    log "\$ psql -h 127.0.0.1 -p $PG_PORT -U postgres -c \"SELECT id, clerk_id, email, role FROM users\""
    "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q \
        -c "SELECT id, clerk_id, email, role FROM users WHERE clerk_id = '$CLERK_USER'" | sed 's/^/  /'
    log "\$ redis-cli -p $REDIS_PORT hgetall user:$CLERK_USER"
    "${r[@]}" hgetall "user:$CLERK_USER" | paste -d' ' - - | sed 's/^/  /'
    log "\$ redis-cli -p $REDIS_PORT hgetall sess:$CLERK_LAPTOP"
    "${r[@]}" hgetall "sess:$CLERK_LAPTOP" | paste -d' ' - - | sed 's/^/  /'

    # b. a token for that session, accepted with the identity from PostgreSQL
    log ""
    log "# b. Session tokens minted with the instance key (demo/clerk.py mint; Clerk's last"
    log "#    60 s, these 10 minutes so that you can try them by hand), in $CLERK_DIR:"
    mint laptop-admin --sid "$CLERK_LAPTOP" --lifetime 600 "${ORG_ADMIN[@]}"
    mint laptop-member --sid "$CLERK_LAPTOP" --lifetime 600 "${ORG_MEMBER[@]}"
    local ADMIN_JWT MEMBER_JWT
    ADMIN_JWT=$(<"$CLERK_DIR/laptop-admin.jwt")
    MEMBER_JWT=$(<"$CLERK_DIR/laptop-member.jwt")
    redact ADMIN_JWT "$ADMIN_JWT"
    redact MEMBER_JWT "$MEMBER_JWT"
    EXPECT_IN_BODY="\"X-User-Db-Id\": \"$db_id\"" \
        show 200 "a Clerk session token in the __session cookie: the upstream gets the user's
# db id, role and email from PostgreSQL (via syncd), the organization from the token" \
        "$base/app/dashboard" -H "Cookie: __session=$ADMIN_JWT"
    EXPECT_IN_BODY="\"X-User-Id\": \"$CLERK_USER\"" \
        show 200 "the same token as Authorization: Bearer on the API" \
        "$api" -H "Authorization: Bearer $ADMIN_JWT"
    show 401 "a Clerk session id is no secret, and no token: refused" \
        "$api" -H "Authorization: Bearer $CLERK_LAPTOP"
    local forged sig=${ADMIN_JWT##*.}
    if [[ ${sig:0:1} == A ]]; then forged=${ADMIN_JWT%.*}.B${sig:1}; else forged=${ADMIN_JWT%.*}.A${sig:1}; fi
    redact FORGED_JWT "$forged"
    show 401 "the same token with one character of its signature changed: refused" \
        "$api" -H "Authorization: Bearer $forged"

    # c. the org-role gate
    log ""
    log "# c. The org-role gate on /org/billing/ (session_require_org_role admin)"
    show 403 "the same user, as a member of the active organization (o.rol member): 403" \
        "$base/org/billing/invoices" -H "Cookie: __session=$MEMBER_JWT"
    EXPECT_IN_BODY='"X-Org-Role": "org:admin"' \
        show 200 "as an admin of it (o.rol admin): 200" \
        "$base/org/billing/invoices" -H "Cookie: __session=$ADMIN_JWT"

    # d. the handshake
    log ""
    log "# d. The handshake: a page load with an expired __session cookie goes to the"
    log "#    Frontend API and comes back with fresh cookies (a browser's cookie jar: curl -b/-c)"
    mint expired --sid "$CLERK_PHONE" --age 120 --lifetime 60 "${ORG_ADMIN[@]}"
    local EXPIRED_JWT jar=$CLERK_DIR/cookies.txt uat
    EXPIRED_JWT=$(<"$CLERK_DIR/expired.jwt")
    redact EXPIRED_JWT "$EXPIRED_JWT"
    uat=$(($(date +%s) - 180))  # signed in 3 minutes ago
    rm -f "$jar"
    (umask 077 && : >"$jar")
    hop 307 "1. a page load (Sec-Fetch-Dest: document) with an expired token: to the Frontend API" \
        "$base/app/dashboard" -c "$jar" -H 'Sec-Fetch-Dest: document' -H 'Accept: text/html' \
        -H "Cookie: __session=$EXPIRED_JWT; __client_uat=$uat"
    [[ $HOP_LOCATION == "$FAPI_URL/v1/client/handshake?"* ]] ||
        die "EXPECTED a Location at $FAPI_URL/v1/client/handshake, got: $HOP_LOCATION"
    hop 307 "2. the Frontend API (the stand-in) answers with a signed handshake token" \
        "$HOP_LOCATION" -b "$jar" -c "$jar"
    [[ $HOP_LOCATION == "$base/app/dashboard?__clerk_handshake="* ]] ||
        die "EXPECTED a Location back at $base/app/dashboard?__clerk_handshake=..., got $(short_jwts <<<"$HOP_LOCATION")"
    hop 307 "3. nginx verifies it, sets its cookies and sends the browser back to the page" \
        "$HOP_LOCATION" -b "$jar" -c "$jar" -H 'Sec-Fetch-Dest: document' -H 'Accept: text/html'
    [[ $HOP_LOCATION == /app/dashboard || $HOP_LOCATION == "$base/app/dashboard" ]] ||
        die "EXPECTED a Location of /app/dashboard, got $(short_jwts <<<"$HOP_LOCATION")"
    grep -q $'\t__session\teyJ' "$jar" || die "EXPECTED a __session cookie from the handshake"
    EXPECT_IN_BODY="\"X-User-Id\": \"$CLERK_USER\"" \
        show 200 "4. the page, with the cookie from the handshake" \
        "$base/app/dashboard" -b "$jar" -H 'Sec-Fetch-Dest: document' -H 'Accept: text/html'

    # e. revocation
    log ""
    log "# e. A signed session.revoked: the same token, not yet expired, is refused"
    show 200 "before: the token passes (and is in nginx's cache)" \
        "$api" -H "Authorization: Bearer $ADMIN_JWT"
    send_webhook session.revoked --session "$CLERK_LAPTOP" --user "$CLERK_USER"
    log ""
    log "# polling until nginx refuses it (syncd projects the revocation and publishes it;"
    log "# nginx's cache drops the session at once, or at worst after ttl=5s)"
    POLL_INTERVAL=0.05 poll_status 401 8 "$api" -H "Authorization: Bearer $ADMIN_JWT" ||
        die "the revoked session's token was not refused within 8 s"
    printf '  '
    "$PYTHON" "$ROOT/demo/clerk.py" describe "$CLERK_DIR/laptop-admin.jwt"
    show 401 "after session.revoked: refused, though its signature and exp are valid" \
        "$api" -H "Authorization: Bearer $ADMIN_JWT"
    show 302 "a page load with it (and the browser's __client_uat): to the sign-in page" \
        "$base/app/dashboard" -H "Cookie: __session=$ADMIN_JWT; __client_uat=$uat" \
        -H 'Sec-Fetch-Dest: document' -H 'Accept: text/html'
    log "\$ redis-cli -p $REDIS_PORT hgetall sess:$CLERK_LAPTOP"
    "${r[@]}" hgetall "sess:$CLERK_LAPTOP" | paste -d' ' - - | sed 's/^/  /'

    # tokens to try by hand: the other session, not revoked
    log ""
    log "# Tokens of the user's other session ($CLERK_PHONE, not revoked), valid for an hour:"
    mint admin --sid "$CLERK_PHONE" --lifetime 3600 "${ORG_ADMIN[@]}"
    mint member --sid "$CLERK_PHONE" --lifetime 3600 "${ORG_MEMBER[@]}"
    local PHONE_JWT
    PHONE_JWT=$(<"$CLERK_DIR/admin.jwt")
    redact TOKEN "$PHONE_JWT"
    show 200 "the user's other session is not affected" \
        "$api" -H "Authorization: Bearer $PHONE_JWT"
}

try_clerk_by_hand() {
    local base=$APP_ORIGIN d=${CLERK_DIR#"$ROOT"/}
    log ""
    log "== Try the Clerk tokens by hand (from $ROOT) =="
    cat <<EOF
TOKEN=\$(cat $d/admin.jwt)      # o.rol admin, org:billing:manage
MEMBER=\$(cat $d/member.jwt)    # o.rol member
REVOKED=\$(cat $d/laptop-admin.jwt)   # its session was revoked
curl -s $base/app/dashboard -H "Cookie: __session=\$TOKEN"
curl -s $base/org/billing/invoices -H "Authorization: Bearer \$TOKEN"
curl -s -o /dev/null -w '%{http_code}\\n' $base/org/billing/invoices -H "Authorization: Bearer \$MEMBER"   # 403
curl -s -o /dev/null -w '%{http_code}\\n' $base/api/orders -H "Authorization: Bearer \$REVOKED"           # 401
curl -s -D - -o /dev/null $base/app/dashboard -H 'Sec-Fetch-Dest: document' -H "Cookie: __client_uat=\$(date +%s)"   # 307 to the handshake
# more tokens (see demo/clerk.py --help):
demo/clerk.py mint $d $d/mine.jwt --sub $CLERK_USER --sid $CLERK_PHONE --iss $FAPI_URL --azp $APP_ORIGIN --org-id $CLERK_ORG --org-slug $CLERK_ORG_SLUG --org-role admin
EOF
}
