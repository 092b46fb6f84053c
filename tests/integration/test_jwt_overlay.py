"""JWT mode after the signature: the Redis overlay (one pipelined round
trip: HMGET of the session hash and of the user hash), session_jwt_session
optional / required / off, identity from the user hash or the claims, the
role / organization / permission gates, and the cache (claims per token
digest, overlay per session, revocation messages).

PYTEST_DONT_REWRITE: pytest's assertion introspection would print the
tokens these tests send and receive; every assertion here carries its own
message, with tokens replaced by their digest (tokens.redact)."""

import json
import re
import time

import pytest

import jwt_suite  # puts tests/clerk on sys.path
import tokens as T

import harness
from harness import seed_session, seed_user, wait_until
from jwt_suite import _redacted_responses, keys  # noqa: F401: fixtures
from jwt_suite import AZP, ISS, assert_not_logged, expect, session_cookie, start, tok

# the session hash's fields as the module reads them (harness.SESSION_FIELDS:
# the brief's five, and token_type since the tombstones of docs/redis-contract.md)
SESSION_FIELDS = list(harness.SESSION_FIELDS)
USER_FIELDS = ["role", "roles", "db_id", "email", "status"]

key = jwt_suite.key_fixture("ins_overlay")


def lookups(rds):
    return rds.calls("hmget"), rds.calls("evalsha", "eval")


# ---------------------------------------------------------------- the round trip

def monitor_args(line):
    """The quoted arguments of a MONITOR line."""
    return re.findall(r'"((?:[^"\\]|\\.)*)"', line.split("]", 1)[1])


@pytest.mark.parametrize("prefix", ["", "app1:"])
def test_overlay_is_two_hmgets_in_one_round_trip(nginx, rds, r, key, keys, prefix):
    seed_session(r, "sess_ov", "user_ov", prefix=prefix)
    seed_user(r, "user_ov", role="member", prefix=prefix)
    params = "timeout=1s connect_timeout=1s" + (" prefix=%s" % prefix if prefix else "")
    n = start(nginx, rds.address(), keys, redis_params=params)
    mon = harness.Monitor(rds)
    try:
        resp = n.get("/app/", headers=session_cookie(tok(key, "user_ov", "sess_ov")))
        assert resp.status == 200, T.redact(resp)
        wait_until(lambda: len([l for l in mon.lines if '"HMGET"' in l.upper()]) >= 2, 5,
                   what="MONITOR to show the overlay")
    finally:
        mon.close()
    cmds = [l for l in mon.lines if '"MONITOR"' not in l and '"INFO"' not in l.upper()]
    hmgets = [l for l in cmds if monitor_args(l)[0].upper() == "HMGET"]
    assert [monitor_args(l) for l in hmgets] == [
        ["HMGET", "%ssess:sess_ov" % prefix] + SESSION_FIELDS,
        ["HMGET", "%suser:user_ov" % prefix] + USER_FIELDS], cmds
    # both on the module's one connection, one right after the other
    clients = {l.split("[", 1)[1].split("]", 1)[0] for l in hmgets}
    assert len(clients) == 1, hmgets
    assert cmds.index(hmgets[1]) == cmds.index(hmgets[0]) + 1, cmds
    assert not [l for l in cmds if monitor_args(l)[0].upper() in ("EVALSHA", "EVAL")], cmds
    assert lookups(rds) == (2, 0), lookups(rds)


# ---------------------------------------------------------------- optional (default)

def test_optional_accepts_a_session_redis_does_not_know(nginx, rds, upstream, key, keys):
    n = start(nginx, rds.address(), keys)
    resp = n.get("/app/", headers=session_cookie(tok(key, "user_new", "sess_new")))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Id") == "user_new", T.redact(resp.upstream_headers("X-User-Id"))
    assert resp.upstream_header("X-Session-Id") == "sess_new", T.redact(resp.upstream_headers("X-Session-Id"))
    assert lookups(rds) == (2, 0), lookups(rds)


@pytest.mark.parametrize("status", ["revoked", "ended", "removed", "expired"])
def test_optional_session_not_active_is_revoked(nginx, rds, r, upstream, key, keys, status):
    seed_session(r, "sess_r", "user_r", status=status)
    n = start(nginx, rds.address(), keys)
    t = tok(key, "user_r", "sess_r")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert n.last_session_status() == "revoked", T.redact(n.session_log()[-3:])
    assert_not_logged(n, t)


@pytest.mark.parametrize("fields", [
    {"status": "revoked", "token_type": "jwt"},                                   # a tombstone
    {"user_id": "user_someone_else", "expires_at": str(harness.now_ms() + 3600_000)},
], ids=["tombstone", "other-user"])
def test_optional_tombstone_or_foreign_session_is_revoked(nginx, rds, r, upstream, key, keys, fields):
    r.hset("sess:sess_t", mapping=fields)
    n = start(nginx, rds.address(), keys)
    resp = n.get("/app/", headers=session_cookie(tok(key, "user_t", "sess_t")))
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert n.last_session_status() == "revoked", T.redact(n.session_log()[-3:])


def test_optional_session_past_expires_at_is_refused(nginx, rds, r, upstream, key, keys):
    seed_session(r, "sess_old", "user_old", expires_in_ms=-1000)
    n = start(nginx, rds.address(), keys)
    resp = n.get("/app/", headers=session_cookie(tok(key, "user_old", "sess_old")))
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert n.last_session_status() == "expired", T.redact(n.session_log()[-3:])


def test_optional_active_session_status_is_accepted(nginx, rds, r, key, keys):
    seed_session(r, "sess_act", "user_act", status="active")
    n = start(nginx, rds.address(), keys)
    expect(n.get("/app/", headers=session_cookie(tok(key, "user_act", "sess_act"))), 200)


@pytest.mark.parametrize("user_status", ["banned", "deleted"])
def test_user_banned_or_deleted_is_revoked(nginx, rds, r, upstream, key, keys, user_status):
    seed_user(r, "user_bad", role="admin", status=user_status)  # no session hash at all
    n = start(nginx, rds.address(), keys)
    t = tok(key, "user_bad", "sess_bad")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 401, T.redact(resp)
    assert upstream.requests == [], T.redact(upstream.requests)
    assert n.last_session_status() == "revoked", T.redact(n.session_log()[-3:])
    assert_not_logged(n, t)


def test_identity_from_the_user_hash(nginx, rds, r, key, keys):
    seed_session(r, "sess_u", "user_u")
    seed_user(r, "user_u", role="admin", roles="admin acme/org:admin", db_id=42, email="u@example.com",
              status="active")
    n = start(nginx, rds.address(), keys, locations=(("/app/", ""),
                                                     ("/admin/", "session_require_role admin;")))
    t = tok(key, "user_u", "sess_u", metadata={"role": "viewer"})  # the hash wins over the claim
    resp = n.get("/admin/", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Role") == "admin", T.redact(resp.upstream_headers("X-User-Role"))
    assert resp.upstream_header("X-User-Roles") == "admin acme/org:admin", T.redact(resp.upstream_headers("X-User-Roles"))
    assert resp.upstream_header("X-User-Db-Id") == "42", T.redact(resp.upstream_headers("X-User-Db-Id"))
    assert resp.upstream_header("X-User-Email") == "u@example.com", T.redact(resp.upstream_headers("X-User-Email"))
    # without the user hash: the claim's role, no db_id / email
    r.delete("user:user_u")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Role") == "viewer", T.redact(resp.upstream_headers("X-User-Role"))
    assert resp.upstream_header("X-User-Db-Id") is None, T.redact(resp.upstream_headers("X-User-Db-Id"))
    assert resp.upstream_header("X-User-Email") is None, T.redact(resp.upstream_headers("X-User-Email"))
    expect(n.get("/admin/", headers=session_cookie(t)), 403)


# ---------------------------------------------------------------- gates on the claims

ORG = T.org_claim("org_1", "acme", "admin", ["read", "manage"],
                  [("billing", ["read"]), ("members", ["read", "manage"])])

def test_org_role_and_permission_gates(nginx, rds, upstream, key, keys):
    n = start(nginx, rds.address(), keys, locations=(
        ("/admin/", "session_require_org_role admin;"),
        ("/admin2/", "session_require_org_role org:admin;"),
        ("/billing/", "session_require_permission org:billing:read;"),
        ("/billing-manage/", "session_require_permission org:billing:manage org:billing:delete;")))
    admin = tok(key, **ORG)
    member = tok(key, **T.org_claim("org_1", "acme", "member", ["read", "manage"],
                                         [("billing", []), ("members", ["read"])]))
    no_org = tok(key)
    for path in ("/admin/", "/admin2/", "/billing/"):
        expect(n.get(path, headers=session_cookie(admin)), 200, path)
    resp = n.get("/billing-manage/", headers=session_cookie(admin))
    assert resp.status == 403, T.redact(resp)
    assert n.last_session_status() == "forbidden", T.redact(n.session_log()[-3:])
    for t in (member, no_org):
        for path in ("/admin/", "/admin2/", "/billing/"):
            expect(n.get(path, headers=session_cookie(t)), 403, path)
    assert len(upstream.requests) == 3, T.redact(upstream.requests)


def test_role_gate_on_the_role_claim(nginx, rds, key, keys):
    n = start(nginx, rds.address(), keys, locations=(
        ("/editor/", "session_require_role editor;"),
        ("/custom/", "session_jwt_role_claim app.access.level; session_require_role gold;")))
    ok = n.get("/editor/", headers=session_cookie(tok(key, metadata={"role": ["viewer", "editor"]})))
    assert ok.status == 200, T.redact(ok)
    assert ok.upstream_header("X-User-Role") == "viewer", T.redact(ok.upstream_headers("X-User-Role"))
    assert ok.upstream_header("X-User-Roles") == "viewer editor", T.redact(ok.upstream_headers("X-User-Roles"))
    expect(n.get("/editor/", headers=session_cookie(tok(key, metadata={"role": "viewer"}))), 403)
    expect(n.get("/editor/", headers=session_cookie(tok(key))), 403)
    gold = tok(key, app={"access": {"level": "gold"}}, metadata={"role": "editor"})
    resp = n.get("/custom/", headers=session_cookie(gold))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Role") == "gold", T.redact(resp.upstream_headers("X-User-Role"))
    expect(n.get("/custom/", headers=session_cookie(tok(key, metadata={"role": "gold"}))), 403)


def test_org_gate_refuses_an_opaque_session(nginx, rds, r, upstream, keys):
    seed_session(r, "sess_opaque", "user_o")
    seed_user(r, "user_o", role="admin", roles="admin acme/org:admin")
    n = start(nginx, rds.address(), keys, locations=(("/org/", "session_require_org_role admin;"),))
    expect(n.get("/org/", headers=session_cookie("sess_opaque")), 403)
    assert n.last_session_status() == "forbidden", T.redact(n.session_log()[-3:])


# ---------------------------------------------------------------- required / off

def test_required_needs_the_session_hash(nginx, rds, r, upstream, key, keys):
    n = start(nginx, rds.address(), keys, locations=(("/app/", "session_jwt_session required;"),))
    t = tok(key, "user_q", "sess_q")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 401, T.redact(resp)
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])
    assert upstream.requests == [], T.redact(upstream.requests)
    seed_session(r, "sess_q", "user_q")
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "sess_q", T.redact(resp.upstream_headers("X-Session-Id"))
    r.hset("sess:sess_q", "status", "revoked")
    expect(n.get("/app/", headers=session_cookie(t)), 401)
    assert n.last_session_status() == "revoked", T.redact(n.session_log()[-3:])


def test_off_asks_redis_nothing(nginx, rds, r, key, keys):
    seed_session(r, "sess_off", "user_off", status="revoked")
    seed_user(r, "user_off", role="admin", status="banned")
    n = start(nginx, rds.address(), keys, locations=(("/app/", "session_jwt_session off;"),))
    resp = n.get("/app/", headers=session_cookie(tok(key, "user_off", "sess_off",
                                                     metadata={"role": "viewer"})))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Role") == "viewer", T.redact(resp.upstream_headers("X-User-Role"))
    assert lookups(rds) == (0, 0), lookups(rds)


def test_off_works_with_redis_down(nginx, key, keys):
    dead = "127.0.0.1:%d" % harness.free_port()
    n = start(nginx, dead, keys, locations=(("/app/", "session_jwt_session off;"),
                                            ("/optional/", "")))
    resp = n.get("/app/", headers=session_cookie(tok(key)))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-Session-Status") == "ok", T.redact(resp.upstream_headers("X-Session-Status"))
    # where the overlay is asked for, a dead Redis is not silently skipped
    expect(n.get("/optional/", headers=session_cookie(tok(key))), 503)


# ---------------------------------------------------------------- cache

CACHE = "\n    session_cache_zone jwt:1m ttl=60s negative_ttl=60s;"


def cached(nginx, rds, keys, extra=()):
    n = start(nginx, rds.address(), keys, http=CACHE,
              locations=(("/app/", "session_cache jwt;"),) + tuple(extra))
    wait_until(lambda: rds.client().pubsub_numsub("session:revocations")[0][1] >= 1, 10,
               what="the module to subscribe to the revocation channel")
    return n


def test_cache_second_request_asks_redis_nothing(nginx, rds, r, key, keys):
    seed_session(r, "sess_c", "user_c")
    seed_user(r, "user_c", role="admin", email="c@example.com")
    n = cached(nginx, rds, keys)
    t = tok(key, "user_c", "sess_c")
    expect(n.get("/app/", headers=session_cookie(t)), 200)
    assert lookups(rds) == (2, 0), lookups(rds)
    resp = n.get("/app/", headers=session_cookie(t))
    assert resp.status == 200, T.redact(resp)
    assert resp.upstream_header("X-User-Email") == "c@example.com", T.redact(resp.upstream_headers("X-User-Email"))
    assert lookups(rds) == (2, 0), lookups(rds)


@pytest.mark.parametrize("kind", ["session", "user"])
def test_revocation_message_drops_the_cached_overlay(nginx, rds, r, key, keys, kind):
    seed_session(r, "sess_x", "user_x")
    seed_user(r, "user_x", role="admin")
    n = cached(nginx, rds, keys)
    t = tok(key, "user_x", "sess_x")
    expect(n.get("/app/", headers=session_cookie(t)), 200)
    if kind == "session":
        r.hset("sess:sess_x", "status", "revoked")
    else:
        r.hset("user:user_x", "status", "banned")
    # still cached (ttl=60s): only the message makes the revocation land now
    expect(n.get("/app/", headers=session_cookie(t)), 200)

    def refused():
        r.publish("session:revocations", "%s %s" % (kind, "sess_x" if kind == "session" else "user_x"))
        time.sleep(0.1)
        return n.get("/app/", headers=session_cookie(t)).status == 401
    wait_until(refused, 5, interval=0.2, what="the revocation message to drop the entry")
    assert n.last_session_status() == "revoked", T.redact(n.session_log()[-3:])
    assert_not_logged(n, t)


def test_cache_is_keyed_by_the_token_not_the_session(nginx, rds, r, upstream, key, keys):
    other = T.SigningKey(kid=key.kid)
    seed_session(r, "sess_k", "user_k")
    n = cached(nginx, rds, keys)
    good = tok(key, "user_k", "sess_k")
    expect(n.get("/app/", headers=session_cookie(good)), 200)
    # same sid, same kid, another key: never served from the cache
    forged = other.mint(T.session_claims("user_k", "sess_k", ISS, azp=AZP))
    expect(n.get("/app/", headers=session_cookie(forged)), 401)
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])
    # a refreshed token of the same session is verified and accepted
    expect(n.get("/app/", headers=session_cookie(tok(key, "user_k", "sess_k"))), 200)
    assert len(upstream.requests) == 2, T.redact(upstream.requests)
    assert_not_logged(n, forged)


def test_a_cached_signature_vouches_only_for_its_own_claims(nginx, rds, r, upstream, key, keys):
    # The claims cache is keyed by the signature: a token that reuses a
    # cached token's signature under another payload gets the claims that
    # signature vouches for (the cached token's), never its own payload's.
    seed_session(r, "sess_s1", "user_s1")
    n = cached(nginx, rds, keys)
    good = tok(key, "user_s1", "sess_s1")
    expect(n.get("/app/", headers=session_cookie(good)), 200)
    header, _, signature = good.split(".")
    payload = T.b64u(json.dumps(T.session_claims("user_admin", "sess_admin", ISS, azp=AZP)).encode())
    spliced = "%s.%s.%s" % (header, payload, signature)
    resp = expect(n.get("/app/", headers=session_cookie(spliced)), 200)
    assert resp.upstream_header("X-User-Id") == "user_s1", T.redact(resp)
    assert resp.upstream_header("X-Session-Id") == "sess_s1", T.redact(resp)
    # without the cache, the same splice is what it is: a bad signature
    m = start(nginx, rds.address(), keys)
    expect(m.get("/app/", headers=session_cookie(spliced)), 401)
    assert m.last_session_status() == "invalid", T.redact(m.session_log()[-3:])


def test_cached_claims_still_meet_each_locations_policy(nginx, rds, key, keys):
    n = cached(nginx, rds, keys, extra=(
        ("/strict/", "session_cache jwt; session_jwt_authorized_parties https://other.example.test;"),))
    t = tok(key, "user_p", "sess_p")
    expect(n.get("/app/", headers=session_cookie(t)), 200)
    expect(n.get("/strict/", headers=session_cookie(t)), 401)
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])


def test_stale_overlay_when_redis_is_down(nginx, redis_factory, key, keys):
    srv = redis_factory()
    seed_session(srv.client(), "sess_st", "user_st")
    seed_user(srv.client(), "user_st", role="admin")
    n = start(nginx, srv.address(), keys, http="\n    session_cache_zone jwt:1m ttl=1s stale=60s;",
              locations=(("/app/", "session_cache jwt;"),))
    t = tok(key, "user_st", "sess_st")
    expect(n.get("/app/", headers=session_cookie(t)), 200)
    time.sleep(1.3)  # past ttl=, well within stale=
    srv.stop()
    resp = expect(n.get("/app/", headers=session_cookie(t)), 200)
    assert resp.upstream_header("X-User-Role") == "admin", T.redact(resp)
    assert resp.upstream_header("X-Session-Status") == "stale", T.redact(resp)
    # another session has no overlay to fall back on: Redis cannot answer
    expect(n.get("/app/", headers=session_cookie(tok(key, "user_st", "sess_other"))), 503)


def test_session_touch_does_not_apply_to_tokens(nginx, rds, r, key, keys):
    seed_session(r, "sess_tt", "user_tt", idle_timeout=600, last_active_at=harness.now_ms() - 60_000)
    n = start(nginx, rds.address(), keys, locations=(("/app/", "session_touch 1s;"),))
    writes = ("evalsha", "eval", "hset", "pexpire", "expire")
    before = rds.calls(*writes), r.hget("sess:sess_tt", "last_active_at")  # after the seeding's HSET
    expect(n.get("/app/", headers=session_cookie(tok(key, "user_tt", "sess_tt"))), 200)
    # a touch the first request sent would be answered before the second's
    # overlay on the module's one connection: the second request is the barrier
    expect(n.get("/app/", headers=session_cookie(tok(key, "user_tt", "sess_tt"))), 200)
    after = rds.calls(*writes), r.hget("sess:sess_tt", "last_active_at")
    assert after == before, (before, after)


def test_cached_token_is_not_used_after_exp(nginx, rds, key, keys):
    n = start(nginx, rds.address(), keys, http=CACHE,
              locations=(("/app/", "session_cache jwt; session_jwt_leeway 1s;"),))
    t = tok(key, "user_e", "sess_e", lifetime=2, nbf=int(time.time()) - 10)
    expect(n.get("/app/", headers=session_cookie(t)), 200)
    wait_until(lambda: n.get("/app/", headers=session_cookie(t)).status == 401, 15,
               what="the cached token to expire (exp + leeway, not ttl=60s)")
    assert n.last_session_status() == "invalid", T.redact(n.session_log()[-3:])
