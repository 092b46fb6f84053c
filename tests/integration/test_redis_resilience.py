"""A slow Redis is not an outage, a dead one is noticed, and a subscriber
that was away does not leave the cache trusting what it may have missed.

Stalls are a real redis-server stopped with SIGSTOP and resumed with
SIGCONT: it answers nothing meanwhile, then everything, in order.
"""

import os
import signal
import threading
import time

import pytest

import harness
from harness import (Load, METRICS_LOCATION, app_location, cookie, metric, parse_metrics,
                     redis_directive, seed_session, seed_user, wait_until)

CHANNEL = "session:revocations"
RESUBSCRIBED = "revocation channel subscribed again"
EVICTION_WARNING = ("maxmemory-policy is allkeys-lru: Redis may evict session tombstones and "
                    "user bans; use noeviction or volatile-*")


def control(srv):
    """One connection of our own (so that CLIENT LIST tells it apart)."""
    return srv.client(single_connection_client=True)


def nginx_connections(ctl):
    """Ids of every client of the server but `ctl`: nginx's connections."""
    me = ctl.client_id()
    return {c["id"] for c in ctl.client_list() if int(c["id"]) != me}


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


class Stall:
    """SIGSTOP of the real redis-server until the block ends; `window` is
    (sent SIGSTOP, saw Redis answer again)."""

    def __init__(self, srv, ctl):
        self.srv, self.ctl = srv, ctl
        self.window = None

    def __enter__(self):
        self.start = time.monotonic()
        os.kill(self.srv.proc.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.srv.proc.pid, signal.SIGCONT)
        wait_until(self.ctl.ping, 10, what="redis-server to answer after SIGCONT")
        self.window = (self.start, time.monotonic())
        return False


def test_stalls_shorter_than_dead_after_fail_only_their_lookups(nginx, redis_factory, upstream):
    # timeout=300ms, stalls of 600ms; dead_after= far beyond the stall so
    # that a slow test machine cannot make the stall look like death.
    srv = redis_factory()
    ctl = control(srv)
    seed_session(ctl, "sess_load", "user_load")
    n = nginx(http=redis_directive(srv.address(),
                                   "timeout=300ms connect_timeout=1s dead_after=5s"),
              server=app_location("/app/", "session_cache off;") + METRICS_LOCATION)
    assert n.get("/app/", headers=cookie("sess_load")).status == 200
    before = nginx_connections(ctl)
    assert len(before) == 1, ctl.client_list()

    load = Load(n, "sess_load")
    windows = []
    for _ in range(3):
        wait_until(lambda: len(load.results) >= len(windows) * 10 + 10, 30,
                   what="requests between stalls")
        with Stall(srv, ctl) as stall:
            time.sleep(0.6)  # twice timeout=
        windows.append(stall.window)
    done = len(load.results)
    wait_until(lambda: len(load.results) >= done + 20, 30, what="requests after the last stall")
    results = load.stop()

    assert {r.status for r in results} <= {200, 503}, results
    failed = [(r.started, r.ended) for r in results if r.status != 200]
    # The stalls did make lookups time out (else this proves nothing) ...
    assert failed, "no request failed during %d stalls" % len(windows)
    assert metric(metrics(n), "nginx_session_redis_timeouts_total") >= 1
    # ... but only requests that were waiting while Redis was stopped.
    for a, b in failed:
        assert any(a <= resumed and b >= stopped for stopped, resumed in windows), \
            ("a request failed outside any stall", (a, b), windows)
    after_last = [r.status for r in results if r.started > windows[-1][1]]
    assert after_last and set(after_last) == {200}, after_last
    # No connection was closed for it.
    assert "closing connection" not in n.log()
    assert nginx_connections(ctl) == before
    assert metric(metrics(n), "nginx_session_redis_reconnects_total") == 0


def test_stall_longer_than_dead_after_closes_and_reopens(nginx, redis_factory):
    # Default dead_after= (3x timeout=, 600ms here), a stall of seconds.
    srv = redis_factory()
    ctl = control(srv)
    seed_session(ctl, "sess_dead", "user_dead")
    n = nginx(http=redis_directive(srv.address(), "timeout=200ms connect_timeout=1s"),
              server=app_location("/app/") + METRICS_LOCATION)
    assert n.get("/app/", headers=cookie("sess_dead")).status == 200
    before = nginx_connections(ctl)
    with Stall(srv, ctl):
        # A lookup outstanding: its reply never comes while Redis is stopped.
        assert n.get("/app/", headers=cookie("sess_dead")).status == 503
        wait_until(lambda: "closing connection: no reply for" in n.log(), 15,
                   what="the module to give up the silent connection")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_dead")).status == 200, 15,
               interval=0.2, what="lookups to work again on a new connection")
    wait_until(lambda: (lambda ids: ids and not ids & before)(nginx_connections(ctl)), 10,
               what="the old connection to be gone and a new one there")
    assert metric(metrics(n), "nginx_session_redis_reconnects_total") >= 1


def test_lookup_waits_for_the_handshake(nginx, redis_factory):
    # nginx starts while Redis is stopped: the kernel completes the TCP
    # connection, the handshake waits. A lookup sent meanwhile is pipelined
    # behind it and answered once Redis resumes, within its own timeout.
    srv = redis_factory()
    ctl = control(srv)
    seed_session(ctl, "sess_hs", "user_hs")
    result = {}
    with Stall(srv, ctl):
        n = nginx(http=redis_directive(srv.address(),
                                       "timeout=10s connect_timeout=10s dead_after=20s"),
                  server=app_location("/app/"))
        t = threading.Thread(target=lambda: result.setdefault(
            "status", n.get("/app/", headers=cookie("sess_hs"), timeout=30).status))
        t.start()
        time.sleep(0.5)  # let the lookup be queued behind the handshake
        assert "status" not in result, result
    t.join(30)
    assert result.get("status") == 200, result
    assert "closing connection" not in n.log()


def test_allkeys_eviction_policy_is_warned_once_per_worker(nginx, redis_factory):
    srv = redis_factory()
    ctl = control(srv)
    ctl.config_set("maxmemory-policy", "allkeys-lru")
    seed_session(ctl, "sess_ev", "user_ev")
    n = nginx(http=redis_directive(srv.address()), server=app_location("/app/"))
    wait_until(lambda: EVICTION_WARNING in n.log(), 10, what="the eviction-policy warning")
    first = nginx_connections(ctl)
    # A reconnect asks again, and must not warn again.
    ctl.client_kill_filter(_type="normal")
    wait_until(lambda: nginx_connections(ctl) - first, 15, what="nginx to reconnect")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_ev")).status == 200, 15,
               interval=0.2, what="lookups on the new connection")
    assert n.log().count("maxmemory-policy") == 1, n.log()
    assert "[warn]" in [l for l in n.log().splitlines() if EVICTION_WARNING in l][0]


def test_safe_eviction_policy_is_not_warned(nginx, redis_factory):
    srv = redis_factory()
    ctl = control(srv)
    ctl.config_set("maxmemory-policy", "volatile-lru")
    seed_session(ctl, "sess_ok", "user_ok")
    n = nginx(http=redis_directive(srv.address()), server=app_location("/app/"))
    # The lookup is pipelined after CONFIG GET: its answer has been read.
    assert n.get("/app/", headers=cookie("sess_ok")).status == 200
    assert "maxmemory-policy" not in n.log()


def test_config_refused_by_acl_is_ignored(nginx, redis_factory):
    srv = redis_factory()
    ctl = control(srv)
    ctl.config_set("maxmemory-policy", "allkeys-lru")
    ctl.execute_command("ACL", "SETUSER", "default", "-config")
    seed_session(ctl, "sess_acl", "user_acl")
    n = nginx(http=redis_directive(srv.address()), server=app_location("/app/"))
    assert n.get("/app/", headers=cookie("sess_acl")).status == 200
    assert n.get("/app/", headers=cookie("sess_acl")).status == 200
    log = n.log()
    assert "maxmemory-policy" not in log
    assert "closing connection" not in log and "failed" not in log, log


def cached_start(nginx, srv, zone):
    n = nginx(http=redis_directive(srv.address()) + "\n    session_cache_zone %s;" % zone,
              server=app_location("/app/", "session_cache sess;"))
    return n


def numsub(ctl):
    return dict(ctl.pubsub_numsub(CHANNEL)).get(CHANNEL, 0)


def test_resubscription_expires_cached_sessions(nginx, rds, r):
    ctl = control(rds)
    seed_session(r, "sess_missed", "user_missed")
    seed_user(r, "user_missed", role="admin")
    n = cached_start(nginx, rds, "sess:1m ttl=60s")
    wait_until(lambda: numsub(ctl) == 1, 10, what="the module to subscribe")
    assert n.get("/app/", headers=cookie("sess_missed")).status == 200
    # Revoked without a message: the cache, trusted, still lets it through.
    r.hset("sess:sess_missed", "status", "revoked")
    assert n.get("/app/", headers=cookie("sess_missed")).status == 200

    # The subscriber loses its connection; what was published meanwhile is
    # gone (here: nothing was, which the module cannot know).
    assert ctl.client_kill_filter(_type="pubsub") == 1
    wait_until(lambda: RESUBSCRIBED in n.log() and numsub(ctl) == 1, 10,
               what="the module to subscribe again")
    resp = n.get("/app/", headers=cookie("sess_missed"))
    assert resp.status == 401, resp
    assert n.last_session_status() != "ok"


def test_expired_entry_serves_stale_while_redis_is_down(nginx, redis_factory, upstream):
    srv = redis_factory()
    ctl = control(srv)
    seed_session(ctl, "sess_st", "user_st")
    n = cached_start(nginx, srv, "sess:1m ttl=60s stale=60s")
    wait_until(lambda: numsub(ctl) == 1, 10, what="the module to subscribe")
    assert n.get("/app/", headers=cookie("sess_st")).status == 200
    ctl.close()

    # The subscriber is down, and with it all of Redis: the entry stays
    # fresh, nothing else changes.
    srv.stop()
    resp = n.get("/app/", headers=cookie("sess_st"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-Session-Status") == "ok"

    # Redis comes back (empty), the module subscribes again: entries are no
    # longer fresh. Redis goes away again: the entry serves as stale.
    srv.start()
    wait_until(lambda: RESUBSCRIBED in n.log(), 15, what="the module to subscribe again")
    srv.stop()
    resp = n.get("/app/", headers=cookie("sess_st"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-Session-Status") == "stale"
    assert n.last_session_status() == "stale"


def test_late_replies_and_a_dead_connection_under_valgrind(tmp_path, upstream_server,
                                                         redis_factory):
    # The lookups that time out stay with hiredis until their late reply
    # (or the connection's end) frees them: no leak, no use after free.
    from test_valgrind import VALGRIND, valgrind_errors, valgrind_wrapper
    if not os.path.exists(VALGRIND):
        pytest.skip("valgrind is not installed")
    srv = redis_factory()
    ctl = control(srv)
    seed_session(ctl, "sess_vg", "user_vg")
    d = str(tmp_path / "vg")
    os.makedirs(d)
    n = harness.Nginx(d, upstream_server.port, wrapper=valgrind_wrapper(d),
                      http=redis_directive(srv.address(), "timeout=500ms connect_timeout=5s"
                                           " dead_after=3s"),
                      server=app_location("/app/"))
    n.start(timeout=120)
    try:
        wait_until(lambda: n.get("/app/", headers=cookie("sess_vg"), timeout=30).status == 200,
                   60, interval=0.5, what="nginx under valgrind to answer")
        # Late replies: lookups time out, Redis answers them afterwards.
        with Stall(srv, ctl):
            for _ in range(3):
                assert n.get("/app/", headers=cookie("sess_vg"), timeout=30).status == 503
        wait_until(lambda: n.get("/app/", headers=cookie("sess_vg"), timeout=30).status == 200,
                   60, interval=0.5, what="lookups after the stall")
        # A dead connection: closed with lookups (timed out) still on it.
        with Stall(srv, ctl):
            assert n.get("/app/", headers=cookie("sess_vg"), timeout=30).status == 503
            wait_until(lambda: "closing connection: no reply for" in n.log(), 60,
                       what="the silent connection to be closed")
        wait_until(lambda: n.get("/app/", headers=cookie("sess_vg"), timeout=30).status == 200,
                   60, interval=0.5, what="lookups on a new connection")
    finally:
        assert n.stop(signal.SIGQUIT, timeout=120), "nginx under valgrind did not exit"
    assert n.bad_log_lines() == []
    assert valgrind_errors(d) == {}


@pytest.mark.parametrize("params,needle", [
    ("timeout=100ms dead_after=50ms", '"dead_after=" in "session_redis" directive is shorter'),
    ("dead_after=soon", 'invalid value "dead_after=soon"'),
    ("dead_after=0", 'invalid value "dead_after=0"'),
])
def test_dead_after_is_checked_by_nginx_t(tmp_path, params, needle):
    from test_config import conf, nginx_t
    rc, out = nginx_t(conf(redis="session_redis 127.0.0.1:6379 %s;" % params), tmp_path)
    assert rc != 0 and "[emerg]" in out and needle in out, out


def test_dead_after_accepted(tmp_path):
    from test_config import conf, nginx_t
    rc, out = nginx_t(conf(redis="session_redis 127.0.0.1:6379 timeout=50ms dead_after=1s;"),
                      tmp_path)
    assert rc == 0, out
