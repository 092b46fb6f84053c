"""session_cache_zone / session_cache: shared, TTL'd, negative entries,
stale-on-error, LRU, revocation messages."""

import threading
import time

import pytest

import harness
from harness import (METRICS_LOCATION, app_location, cookie, metric, parse_metrics,
                     redis_directive, seed_session, seed_session_v2, seed_user, wait_until)


def start(nginx, address, zone="sess:1m ttl=30s negative_ttl=30s", directives="session_cache sess;",
          **kw):
    return nginx(http=redis_directive(address) + "\n    session_cache_zone %s;" % zone,
                 server=app_location("/app/", directives)
                 + app_location("/admin/", directives + " session_require_role admin;")
                 + app_location("/nocache/", "session_cache off;")
                 + METRICS_LOCATION, **kw)


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def test_cache_hit_after_key_deleted(nginx, rds, r, upstream):
    # A contract version 2 session: one HMGET per lookup.
    seed_session_v2(r, "sess_c", "user_c", role="admin", email="c@example.com")
    n = start(nginx, rds.address())
    assert n.get("/app/", headers=cookie("sess_c")).status == 200
    lookups = rds.calls("hmget")
    assert lookups == 1
    r.delete("sess:sess_c", "user:user_c")
    resp = n.get("/app/", headers=cookie("sess_c"))
    assert resp.status == 200, resp
    # the cached entry carries the user's fields too
    assert resp.upstream_header("X-User-Id") == "user_c"
    assert resp.upstream_header("X-User-Role") == "admin"
    assert resp.upstream_header("X-User-Email") == "c@example.com"
    assert rds.calls("hmget") == lookups
    m = metrics(n)
    assert metric(m, "nginx_session_cache_hits_total") == 1
    assert metric(m, "nginx_session_cache_misses_total") == 1
    # without the cache the deletion is seen at once
    assert n.get("/nocache/", headers=cookie("sess_c")).status == 401


def test_cache_hit_on_a_large_entry(nginx, rds, r):
    # An entry larger than the room first taken for a copy is still served
    # from the cache, whole.
    roles = " ".join("org%d/org:member" % i for i in range(400))  # about 6 KiB
    seed_session(r, "sess_big", "user_big")
    seed_user(r, "user_big", role="admin", roles=roles)
    n = start(nginx, rds.address())
    assert n.get("/app/", headers=cookie("sess_big")).status == 200
    lookups = rds.calls("hmget")
    resp = n.get("/app/", headers=cookie("sess_big"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Roles") == roles
    assert rds.calls("hmget") == lookups
    assert metric(metrics(n), "nginx_session_cache_hits_total") == 1


def test_cache_entry_expires_after_ttl(nginx, rds, r):
    seed_session(r, "sess_t", "user_t")
    n = start(nginx, rds.address(), zone="sess:1m ttl=1s negative_ttl=1s")
    assert n.get("/app/", headers=cookie("sess_t")).status == 200
    r.delete("sess:sess_t")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_t")).status == 401, 10,
               what="the cache entry to expire")


def test_cached_entry_still_honours_expires_at(nginx, rds, r):
    seed_session(r, "sess_short", "user_s", expires_in_ms=3000)
    n = start(nginx, rds.address(), zone="sess:1m ttl=60s")
    assert n.get("/app/", headers=cookie("sess_short")).status == 200
    time.sleep(3.2)
    resp = n.get("/app/", headers=cookie("sess_short"))
    assert resp.status == 401, resp
    assert n.last_session_status() == "expired"


def test_cached_entry_honours_each_locations_roles(nginx, rds, r):
    seed_session(r, "sess_v", "user_v")
    seed_user(r, "user_v", role="viewer")
    n = start(nginx, rds.address())
    assert n.get("/app/", headers=cookie("sess_v")).status == 200
    assert n.get("/admin/", headers=cookie("sess_v")).status == 403
    assert n.get("/app/", headers=cookie("sess_v")).status == 200


def test_negative_cache(nginx, rds, r):
    n = start(nginx, rds.address(), zone="sess:1m ttl=30s negative_ttl=30s")
    assert n.get("/app/", headers=cookie("sess_later")).status == 401
    lookups = rds.calls("hmget")
    seed_session(r, "sess_later", "user_l")
    resp = n.get("/app/", headers=cookie("sess_later"))
    assert resp.status == 401, "negative entry not honoured: %r" % resp
    assert rds.calls("hmget") == lookups
    m = metrics(n)
    assert metric(m, "nginx_session_cache_hits_total") == 1
    # an uncached location sees the new session
    assert n.get("/nocache/", headers=cookie("sess_later")).status == 200


def test_negative_entry_has_its_own_ttl(nginx, rds, r):
    n = start(nginx, rds.address(), zone="sess:1m ttl=60s negative_ttl=1s")
    assert n.get("/app/", headers=cookie("sess_soon")).status == 401
    seed_session(r, "sess_soon", "user_s")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_soon")).status == 200, 10,
               what="the negative entry to expire")


def test_stale_entry_honoured_when_redis_down(nginx, redis_factory, upstream):
    srv = redis_factory()
    c = srv.client()
    seed_session(c, "sess_st", "user_st")
    seed_user(c, "user_st", role="admin")
    n = start(nginx, srv.address(), zone="sess:1m ttl=1s stale=60s")
    assert n.get("/admin/", headers=cookie("sess_st")).status == 200
    time.sleep(1.3)  # past ttl, well within stale
    srv.stop()
    resp = n.get("/admin/", headers=cookie("sess_st"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_st"
    assert resp.upstream_header("X-Session-Status") == "stale"
    assert n.last_session_status() == "stale"
    # an unknown session is still refused: nothing cached to honour
    assert n.get("/admin/", headers=cookie("sess_other")).status == 503
    m = metrics(n)
    assert metric(m, "nginx_session_checks_total", '{outcome="stale"}') == 1


def test_no_stale_by_default(nginx, redis_factory):
    srv = redis_factory()
    seed_session(srv.client(), "sess_st", "user_st")
    n = start(nginx, srv.address(), zone="sess:1m ttl=1s")
    assert n.get("/app/", headers=cookie("sess_st")).status == 200
    time.sleep(1.3)
    srv.stop()
    resp = n.get("/app/", headers=cookie("sess_st"))
    assert resp.status == 503, resp
    assert n.last_session_status() == "error"


def test_stale_window_passed(nginx, redis_factory):
    srv = redis_factory()
    seed_session(srv.client(), "sess_st", "user_st")
    n = start(nginx, srv.address(), zone="sess:1m ttl=1s stale=1s")
    assert n.get("/app/", headers=cookie("sess_st")).status == 200
    time.sleep(2.5)  # expired 1.5 s ago: more than stale=1s
    srv.stop()
    assert n.get("/app/", headers=cookie("sess_st")).status == 503


def test_fresh_cache_entry_served_while_redis_down(nginx, redis_factory):
    srv = redis_factory()
    seed_session(srv.client(), "sess_f", "user_f")
    n = start(nginx, srv.address(), zone="sess:1m ttl=60s")
    assert n.get("/app/", headers=cookie("sess_f")).status == 200
    srv.stop()
    resp = n.get("/app/", headers=cookie("sess_f"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-Session-Status") == "ok"


def test_cache_shared_by_workers(nginx, rds, r):
    seed_session_v2(r, "sess_w", "user_w")  # one HMGET per lookup
    n = nginx(http=redis_directive(rds.address())
              + "\n    session_cache_zone sess:1m ttl=60s;"
              + "\n    log_format pids '$pid $status';"
              + "\n    access_log @TMP@/pids.log pids;",
              server=app_location("/app/", "session_cache sess;") + METRICS_LOCATION,
              workers=2, listen_extra="reuseport")
    assert n.get("/app/", headers=cookie("sess_w")).status == 200
    r.delete("sess:sess_w")

    def pids():
        try:
            with open(n.tmp + "/pids.log") as f:
                return {l.split()[0] for l in f if l.strip()}
        except OSError:
            return set()
    for i in range(200):
        resp = n.get("/app/", headers=cookie("sess_w"))
        assert resp.status == 200, (i, resp)
        if i >= 4 and len(pids()) >= 2:
            break
    assert len(pids()) == 2, "requests never reached the second worker: %r" % pids()
    assert rds.calls("hmget") == 1


def test_lru_eviction_in_a_small_zone(nginx, rds, r):
    # far more sessions than the zone holds: entries are evicted quietly (no
    # "[crit] ngx_slab_alloc() failed"), answers stay right
    tokens = ["sess_%04d_%s" % (i, "x" * 300) for i in range(600)]
    pipe = r.pipeline()
    for i, t in enumerate(tokens):
        pipe.hset("sess:" + t, mapping={"user_id": "user_%d" % i,
                                        "expires_at": str(harness.now_ms() + 3600_000)})
    pipe.execute()
    n = start(nginx, rds.address(), zone="sess:64k ttl=60s")
    for i, t in enumerate(tokens):
        resp = n.get("/app/", headers=cookie(t))
        assert resp.status == 200, (i, resp)
        assert resp.upstream_header("X-User-Id") == "user_%d" % i
    for i in (0, 1, 2, 599):
        resp = n.get("/app/", headers=cookie(tokens[i]))
        assert resp.status == 200, (i, resp)
        assert resp.upstream_header("X-User-Id") == "user_%d" % i
    m = metrics(n)
    assert metric(m, "nginx_session_cache_misses_total") >= 600


def test_revocation_message_drops_cached_session(nginx, rds, r):
    seed_session(r, "sess_pub", "user_pub")
    seed_user(r, "user_pub", role="admin")
    n = start(nginx, rds.address(), zone="sess:1m ttl=120s")
    assert n.get("/app/", headers=cookie("sess_pub")).status == 200
    r.hset("sess:sess_pub", "status", "revoked")
    # still cached: only the message makes the revocation land before ttl
    assert n.get("/app/", headers=cookie("sess_pub")).status == 200

    def revoked():
        r.publish("session:revocations", "session sess_pub")
        time.sleep(0.1)
        return n.get("/app/", headers=cookie("sess_pub")).status == 401
    wait_until(revoked, 5, interval=0.2, what="the revocation message to drop the entry")


def test_revocation_message_for_user(nginx, rds, r):
    seed_session(r, "sess_u1", "user_ban")
    seed_session(r, "sess_u2", "user_ban")
    seed_user(r, "user_ban", role="admin")
    n = start(nginx, rds.address(), zone="sess:1m ttl=120s")
    assert n.get("/app/", headers=cookie("sess_u1")).status == 200
    assert n.get("/app/", headers=cookie("sess_u2")).status == 200
    r.hset("user:user_ban", "status", "banned")
    assert n.get("/app/", headers=cookie("sess_u1")).status == 200

    def banned():
        r.publish("session:revocations", "user user_ban")
        time.sleep(0.1)
        return (n.get("/app/", headers=cookie("sess_u1")).status == 401
                and n.get("/app/", headers=cookie("sess_u2")).status == 401)
    wait_until(banned, 5, interval=0.2, what="the user revocation message to drop both entries")


def test_revocation_while_a_lookup_is_in_flight_is_not_cached_over(nginx, fake_redis):
    # Redis may answer a lookup with the state from before a revocation whose
    # message nginx handles first: that answer must not be cached.
    fake = fake_redis(mode="slow", delay=0.8, user_id="user_race")
    n = nginx(http=harness.redis_directive(fake.address(), "timeout=5s connect_timeout=5s")
              + "\n    session_cache_zone sess:1m ttl=60s;",
              server=harness.app_location("/app/", "session_cache sess;"))
    wait_until(lambda: "session:revocations" in fake.subscribers(), 10,
               what="the module to subscribe to the revocation channel")

    def lookups():
        return len([c for c in fake.saw("HMGET") if "sess:sess_race" in c])

    first = {}
    t = threading.Thread(target=lambda: first.setdefault(
        "resp", n.get("/app/", headers=cookie("sess_race"), timeout=10)))
    t.start()
    wait_until(lambda: lookups() == 1, 10, what="the first lookup to reach the fake Redis")
    assert fake.publish("session:revocations", "session sess_race") == 1
    t.join(15)
    assert first["resp"].status == 200, first["resp"]

    # not cached: the next request asks Redis again ...
    assert n.get("/app/", headers=cookie("sess_race"), timeout=10).status == 200
    assert lookups() == 2
    # ... and that answer, with no revocation in between, is cached
    assert n.get("/app/", headers=cookie("sess_race"), timeout=10).status == 200
    assert lookups() == 2


def test_record_with_a_control_byte_is_never_cached(nginx, rds, r):
    # The cache holds only records free of control bytes, so that a hit is
    # not scanned again: such a record is refused from Redis every time, and
    # a writer's fix is seen at once rather than after the TTL.
    seed_session_v2(r, "sess_cb", "user_cb", role="member", email="cb@example.com\r\nX-Evil: 1")
    n = start(nginx, rds.address())
    for _ in range(2):
        assert n.get("/app/", headers=cookie("sess_cb")).status == 401
    assert rds.calls("hmget") == 2
    assert metric(metrics(n), "nginx_session_cache_hits_total") == 0
    r.hset("sess:sess_cb", "email", "cb@example.com")
    assert n.get("/app/", headers=cookie("sess_cb")).status == 200
    # that clean record is cached
    assert n.get("/app/", headers=cookie("sess_cb")).status == 200
    assert rds.calls("hmget") == 3
