"""session_touch: sliding expiry, at most once per interval, fire-and-forget."""

from harness import (METRICS_LOCATION, app_location, cookie, metric, now_ms, parse_metrics,
                     redis_directive, seed_session, seed_user, wait_until)


def start(nginx, rds, touch="60s", extra=""):
    return nginx(http=redis_directive(rds.address()),
                 server=app_location("/app/", "session_touch %s; %s" % (touch, extra))
                 + app_location("/notouch/") + METRICS_LOCATION)


def touches(n):
    return metric(parse_metrics(n.get("/metrics").body)[0], "nginx_session_touches_total")


def test_touch_updates_last_active_and_ttl(nginx, rds, r):
    old = now_ms() - 120_000
    seed_session(r, "sess_t", "user_t", idle_timeout=600, last_active_at=old, ttl_s=7200)
    seed_user(r, "user_t", role="admin")
    n = start(nginx, rds)
    t0 = now_ms()
    assert n.get("/app/", headers=cookie("sess_t")).status == 200
    updated = wait_until(lambda: int(r.hget("sess:sess_t", "last_active_at")) != old and
                         int(r.hget("sess:sess_t", "last_active_at")), 10,
                         what="last_active_at to be updated")
    assert t0 - 2000 <= updated <= now_ms() + 2000, (t0, updated)
    # TTL = min(idle_timeout, expires_at - now) = 600 s
    pttl = r.pttl("sess:sess_t")
    assert 590_000 <= pttl <= 600_000, pttl
    assert touches(n) == 1


def test_touch_at_most_once_per_interval(nginx, rds, r):
    old = now_ms() - 120_000
    seed_session(r, "sess_once", "user_o", idle_timeout=600, last_active_at=old)
    n = start(nginx, rds)
    assert n.get("/app/", headers=cookie("sess_once")).status == 200
    first = wait_until(lambda: int(r.hget("sess:sess_once", "last_active_at")) != old and
                       r.hget("sess:sess_once", "last_active_at"), 10, what="the first touch")
    hsets = rds.calls("hset")
    for _ in range(5):
        assert n.get("/app/", headers=cookie("sess_once")).status == 200
    # a lookup on another session after them: Redis runs commands in order,
    # so any touch sent for the requests above has run by now
    seed_session(r, "sess_other", "user_o")
    hsets += 1
    assert n.get("/notouch/", headers=cookie("sess_other")).status == 200
    assert r.hget("sess:sess_once", "last_active_at") == first
    assert rds.calls("hset") == hsets, "last_active_at written more than once"
    assert touches(n) == 1


def test_recent_activity_is_not_touched(nginx, rds, r):
    recent = now_ms() - 5_000
    seed_session(r, "sess_recent", "user_r", idle_timeout=600, last_active_at=recent)
    n = start(nginx, rds)
    for _ in range(3):
        assert n.get("/app/", headers=cookie("sess_recent")).status == 200
    assert n.get("/notouch/", headers=cookie("sess_recent")).status == 200
    assert r.hget("sess:sess_recent", "last_active_at") == str(recent)
    assert touches(n) == 0


def test_touch_without_last_active_at(nginx, rds, r):
    seed_session(r, "sess_never", "user_n", idle_timeout=300)
    n = start(nginx, rds)
    assert n.get("/app/", headers=cookie("sess_never")).status == 200
    wait_until(lambda: r.hget("sess:sess_never", "last_active_at"), 10, what="last_active_at to appear")
    assert 290_000 <= r.pttl("sess:sess_never") <= 300_000


def test_touch_ttl_capped_by_expires_at(nginx, rds, r):
    old = now_ms() - 120_000
    seed_session(r, "sess_cap", "user_c", expires_in_ms=100_000, idle_timeout=600, last_active_at=old)
    n = start(nginx, rds)
    assert n.get("/app/", headers=cookie("sess_cap")).status == 200
    wait_until(lambda: r.hget("sess:sess_cap", "last_active_at") != str(old), 10, what="the touch")
    pttl = r.pttl("sess:sess_cap")
    assert 80_000 <= pttl <= 100_000, pttl


def test_touch_without_idle_timeout_keeps_ttl(nginx, rds, r):
    old = now_ms() - 120_000
    seed_session(r, "sess_noidle", "user_ni", last_active_at=old, ttl_s=5000)
    n = start(nginx, rds)
    assert n.get("/app/", headers=cookie("sess_noidle")).status == 200
    wait_until(lambda: r.hget("sess:sess_noidle", "last_active_at") != str(old), 10, what="the touch")
    assert 4_000_000 <= r.pttl("sess:sess_noidle") <= 5_000_000


def test_no_touch_without_directive_or_for_bad_sessions(nginx, rds, r):
    old = now_ms() - 120_000
    seed_session(r, "sess_nt", "user_nt", idle_timeout=600, last_active_at=old)
    seed_session(r, "sess_rev", "user_nt", status="revoked", last_active_at=old)
    seed_user(r, "user_nt", role="viewer")
    n = start(nginx, rds, extra="session_require_role admin;")
    assert n.get("/notouch/", headers=cookie("sess_nt")).status == 200
    assert n.get("/app/", headers=cookie("sess_rev")).status == 401
    assert n.get("/notouch/", headers=cookie("sess_nt")).status == 200
    assert r.hget("sess:sess_nt", "last_active_at") == str(old)
    assert r.hget("sess:sess_rev", "last_active_at") == str(old)
    assert touches(n) == 0


def test_touch_keeps_idle_session_alive(nginx, rds, r):
    # idle_timeout 3 s, touch every 1 s: requests every ~0.5 s for 4 s keep it valid
    import time
    seed_session(r, "sess_alive", "user_a", idle_timeout=3, last_active_at=now_ms())
    n = start(nginx, rds, touch="1s")
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        resp = n.get("/app/", headers=cookie("sess_alive"))
        assert resp.status == 200, resp
        time.sleep(0.5)
    assert int(r.hget("sess:sess_alive", "last_active_at")) > now_ms() - 3000


def test_touch_goes_on_after_script_flush(nginx, rds, r):
    # SCRIPT FLUSH (or a Redis restart from an RDB) forgets the touch script:
    # touches must not stop until the connection happens to be reopened.
    seed_session(r, "sess_fl", "user_fl", idle_timeout=600, last_active_at=now_ms() - 120_000)
    n = start(nginx, rds, touch="1s")
    assert n.get("/app/", headers=cookie("sess_fl")).status == 200
    wait_until(lambda: int(r.hget("sess:sess_fl", "last_active_at")) > now_ms() - 60_000, 10,
               what="the first touch")
    r.script_flush()
    old = now_ms() - 120_000
    r.hset("sess:sess_fl", "last_active_at", old)
    assert n.get("/app/", headers=cookie("sess_fl")).status == 200
    wait_until(lambda: int(r.hget("sess:sess_fl", "last_active_at")) != old, 10,
               what="the touch after SCRIPT FLUSH")
