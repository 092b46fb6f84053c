"""session_cache_zone under hostile or changing conditions: a flood of
unknown long tokens, user revocations against an index, a reload that points
session_redis elsewhere (issue 7, items 2, 5 and 9)."""

import random
import string

import pytest

from harness import (app_location, cookie, redis_directive, seed_session, seed_user,
                     wait_until)

ALPHABET = string.ascii_letters + string.digits


def start(nginx, address, zone, params="timeout=1s connect_timeout=1s", workers=1):
    return nginx(http=redis_directive(address, params) + "\n    session_cache_zone %s;" % zone,
                 server=app_location("/app/", "session_cache sess;"), workers=workers)


def new_workers(n, before):
    wait_until(lambda: n.worker_pids() and not set(before) & set(n.worker_pids()), 15,
               what="new workers")


def test_flood_of_unknown_long_tokens_keeps_real_sessions(nginx, redis_factory):
    # Each unknown token becomes a negative entry. Were entries keyed by the
    # token itself, one 4 KiB token would take two 4 KiB slab pages and the
    # flood (about 75 times the zone) would evict every real session.
    srv = redis_factory()
    c = srv.client()
    warmed = ["sess_warm_%02d" % i for i in range(20)]
    for i, sid in enumerate(warmed):
        seed_session(c, sid, "user_w%d" % i)
    n = start(nginx, srv.address(), "sess:64k ttl=60s negative_ttl=60s stale=60s")
    for sid in warmed:
        assert n.get("/app/", headers=cookie(sid)).status == 200

    rng = random.Random(7)
    flood = ["".join(rng.choice(ALPHABET) for _ in range(4096)) for _ in range(600)]
    for token in flood:
        resp = n.get("/app/", headers=cookie(token))
        assert resp.status == 401, resp

    srv.stop()
    for i, sid in enumerate(warmed):
        resp = n.get("/app/", headers=cookie(sid))
        assert resp.status == 200, (sid, resp)
        assert resp.upstream_header("X-User-Id") == "user_w%d" % i
        assert resp.upstream_header("X-Session-Status") in ("ok", "stale")
    # negative entries still work, within their own share: the latest
    # unknown token is refused from the cache, not with 503
    assert n.get("/app/", headers=cookie(flood[-1])).status == 401


def test_user_revocation_drops_that_users_entries_only(nginx, rds, r):
    for sid in ("sess_a1", "sess_a2", "sess_a3"):
        seed_session(r, sid, "user_a")
    seed_user(r, "user_a", role="admin")
    seed_session(r, "sess_b1", "user_b")
    n = start(nginx, rds.address(), "sess:1m ttl=120s")
    for sid in ("sess_a1", "sess_a2", "sess_a3", "sess_b1"):
        assert n.get("/app/", headers=cookie(sid)).status == 200
    # cached from here on: only a revocation message makes a change land
    r.hset("user:user_a", "status", "banned")
    r.delete("sess:sess_b1")

    # one of the user's entries leaves through a session message first
    r.hset("sess:sess_a1", "status", "revoked")

    def session_revoked():
        r.publish("session:revocations", "session sess_a1")
        return n.get("/app/", headers=cookie("sess_a1")).status == 401
    wait_until(session_revoked, 5, interval=0.2, what="the session message")
    assert n.get("/app/", headers=cookie("sess_a2")).status == 200

    def user_revoked():
        r.publish("session:revocations", "user user_a")
        return all(n.get("/app/", headers=cookie(s)).status == 401 for s in ("sess_a2", "sess_a3"))
    wait_until(user_revoked, 5, interval=0.2, what="the user message to drop the user's entries")
    resp = n.get("/app/", headers=cookie("sess_b1"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_b"

    # the user comes back (the banned state was cached meanwhile: the
    # message drops it), is cached again, and is revoked again
    r.hset("user:user_a", "status", "active")

    def unbanned():
        r.publish("session:revocations", "user user_a")
        return n.get("/app/", headers=cookie("sess_a2")).status == 200
    wait_until(unbanned, 5, interval=0.2, what="the unban to land")
    r.hset("user:user_a", "status", "banned")
    assert n.get("/app/", headers=cookie("sess_a2")).status == 200  # cached

    def revoked_again():
        r.publish("session:revocations", "user user_a")
        return n.get("/app/", headers=cookie("sess_a2")).status == 401
    wait_until(revoked_again, 5, interval=0.2, what="the second user message")


@pytest.mark.parametrize("change", ["prefix=other:", "db=1"])
def test_reload_to_another_keyspace_drops_cached_entries(nginx, rds, r, change):
    # With stale= the old entries would even outlive their ttl; what the old
    # keyspace said is no answer for the new one.
    seed_session(r, "sess_k", "user_k")
    zone = "sess:1m ttl=60s stale=60s"
    n = start(nginx, rds.address(), zone)
    assert n.get("/app/", headers=cookie("sess_k")).status == 200
    n.write_conf(http=redis_directive(rds.address(), "timeout=1s connect_timeout=1s " + change)
                 + "\n    session_cache_zone %s;" % zone,
                 server=app_location("/app/", "session_cache sess;"), workers=1)
    before = n.worker_pids()
    n.reload()
    new_workers(n, before)
    resp = n.get("/app/", headers=cookie("sess_k"))
    assert resp.status == 401, resp
    assert "emptied: session_redis changed" in n.log()
