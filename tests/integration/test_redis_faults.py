"""Redis down, restarted, stalling; clients leaving mid-lookup."""

import socket
import struct
import time

import harness
from harness import (METRICS_LOCATION, app_location, cookie, metric, parse_metrics,
                     redis_directive, seed_session, seed_user, wait_until)


def start(nginx, address, params="timeout=1s connect_timeout=1s", extra_server=""):
    return nginx(http=redis_directive(address, params),
                 server=app_location("/app/")
                 + app_location("/open/", "session_fail_mode open;")
                 + app_location("/closed/", "session_fail_mode closed;")
                 + "\n        location = /plain { return 200 plain; }"
                 + METRICS_LOCATION + extra_server)


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def test_redis_down_fail_closed_is_503(nginx, upstream):
    n = start(nginx, "127.0.0.1:%d" % harness.free_port())
    for path in ("/app/", "/closed/"):
        resp = n.get(path, headers=cookie("sess_any"))
        assert resp.status == 503, (path, resp)
    assert upstream.requests == []
    assert n.last_session_status() == "error"
    # no token at all is still 401: Redis is not needed to say so
    assert n.get("/app/").status == 401
    m = metrics(n)
    assert metric(m, "nginx_session_checks_total", '{outcome="error"}') == 2
    assert metric(m, "nginx_session_redis_connected_workers") == 0
    assert metric(m, "nginx_session_workers") == 1
    assert metric(m, "nginx_session_redis_errors_total") >= 2


def test_redis_down_fail_open_is_anonymous(nginx, upstream):
    n = start(nginx, "127.0.0.1:%d" % harness.free_port())
    resp = n.get("/open/", headers=[("Cookie", "sessionId=sess_any"), ("X-User-Id", "user_evil")])
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-User-Id") == []
    assert resp.upstream_headers("X-User-Role") == []
    assert resp.upstream_header("X-Session-Status") == "error"
    assert n.last_session_status() == "error"


def test_fail_open_does_not_admit_bad_sessions(nginx, rds, r):
    # open only matters when Redis cannot answer
    seed_session(r, "sess_rev", "user_1", status="revoked")
    n = start(nginx, rds.address())
    assert n.get("/open/").status == 401
    assert n.get("/open/", headers=cookie("sess_nope")).status == 401
    assert n.get("/open/", headers=cookie("sess_rev")).status == 401


def test_redis_restart_mid_run(nginx, redis_factory, upstream):
    srv = redis_factory()
    seed_session(srv.client(), "sess_r", "user_r")
    n = start(nginx, srv.address())
    assert n.get("/app/", headers=cookie("sess_r")).status == 200
    srv.stop()
    resp = n.get("/app/", headers=cookie("sess_r"))
    assert resp.status == 503, resp
    srv.start()  # same port, empty: seed again
    seed_session(srv.client(), "sess_r", "user_r")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_r")).status == 200, 15, interval=0.25,
               what="the module to reconnect to the restarted Redis")
    resp = n.get("/app/", headers=cookie("sess_r"))
    assert resp.status == 200 and resp.upstream_header("X-User-Id") == "user_r"
    m = metrics(n)
    assert metric(m, "nginx_session_redis_reconnects_total") >= 1
    assert metric(m, "nginx_session_redis_connected_workers") == 1


def test_redis_not_up_at_start_then_comes_up(nginx, redis_factory):
    port = harness.later_redis_port()
    n = start(nginx, "127.0.0.1:%d" % port)
    assert n.get("/app/", headers=cookie("sess_late")).status == 503
    srv = redis_factory(port=port)
    seed_session(srv.client(), "sess_late", "user_late")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_late")).status == 200, 15, interval=0.25,
               what="the module to connect to a Redis that came up late")


def test_redis_killed_with_requests_in_flight(nginx, redis_factory):
    # SIGKILL while clients keep asking: every answer is 200 or 503, never a hang
    srv = redis_factory()
    seed_session(srv.client(), "sess_k", "user_k")
    n = start(nginx, srv.address())
    statuses = []
    for i in range(30):
        if i == 10:
            srv.proc.kill()
            srv.proc.wait()
        statuses.append(n.get("/app/", headers=cookie("sess_k")).status)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[:10] == [200] * 10
    assert statuses[-1] == 503


def test_stalling_redis_times_out_503(nginx, fake_redis, upstream):
    fake = fake_redis(mode="stall")
    n = start(nginx, fake.address(), "timeout=300ms connect_timeout=300ms")
    resp = n.get("/app/", headers=cookie("sess_slow"), timeout=30)
    assert resp.status == 503, resp
    assert upstream.requests == []
    assert n.last_session_status() == "error"
    resp = n.get("/open/", headers=cookie("sess_slow"), timeout=30)
    assert resp.status == 200, resp
    assert resp.upstream_headers("X-User-Id") == []
    m = metrics(n)
    assert metric(m, "nginx_session_redis_timeouts_total") >= 1
    # nginx keeps serving
    assert n.get("/plain").status == 200


def test_slow_redis_answer_within_timeout(nginx, fake_redis):
    # the fake answers every command 0.2 s late; the timeout is 3 s
    fake = fake_redis(mode="slow", delay=0.2, user_id="user_fake")
    n = start(nginx, fake.address(), "timeout=3s connect_timeout=3s")
    resp = n.get("/app/", headers=cookie("sess_slowok"), timeout=30)
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_fake"
    assert resp.upstream_header("X-User-Role") == "admin"
    assert any("sess_slowok" in " ".join(c) for c in fake.saw("HMGET"))


def _abort(sock, rst):
    if rst:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _send_raw(port, token):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(("GET /app/abort HTTP/1.1\r\nHost: t\r\nCookie: sessionId=%s\r\n\r\n" % token).encode())
    return s


def test_client_abort_while_lookup_in_flight_slow_answer(nginx, fake_redis):
    fake = fake_redis(mode="slow", delay=1.0)
    n = start(nginx, fake.address(), "timeout=5s connect_timeout=5s")
    for i, rst in enumerate([False, True, False]):
        before = fake.replies_sent
        s = _send_raw(n.port, "sess_abort_%d" % i)
        wait_until(lambda: any("sess_abort_%d" % i in " ".join(c) for c in fake.saw("HMGET")),
                   10, what="the lookup to reach the fake Redis")
        _abort(s, rst)
        # the late answer arrives for a request that is gone
        wait_until(lambda: fake.replies_sent > before and fake.replies_sent >= len(fake.commands),
                   15, what="the fake to answer the abandoned lookup")
        time.sleep(0.3)
        assert n.get("/plain").status == 200
    # a normal lookup still works on the same connection
    resp = n.get("/app/", headers=cookie("sess_after"), timeout=30)
    assert resp.status == 200, resp
    assert n.bad_log_lines() == []


def test_client_abort_while_lookup_stalls(nginx, fake_redis):
    fake = fake_redis(mode="stall")
    n = start(nginx, fake.address(), "timeout=1s connect_timeout=1s")
    workers = n.worker_pids()
    for i, rst in enumerate([False, True]):
        s = _send_raw(n.port, "sess_stall_%d" % i)
        wait_until(lambda: any("sess_stall_%d" % i in " ".join(c) for c in fake.saw("HMGET")),
                   10, what="the lookup to reach the fake Redis")
        _abort(s, rst)
        time.sleep(1.5)  # past the Redis timeout: it fires for a gone request
        assert n.get("/plain").status == 200
    assert n.worker_pids() == workers, "a worker was replaced"
    assert n.bad_log_lines() == []


def test_many_clients_abort_then_redis_answers(nginx, fake_redis):
    fake = fake_redis(mode="slow", delay=1.0)
    n = start(nginx, fake.address(), "timeout=5s connect_timeout=5s")
    socks = [_send_raw(n.port, "sess_many_%d" % i) for i in range(20)]
    wait_until(lambda: len(fake.saw("HMGET")) >= 20, 10, what="20 lookups at the fake")
    for i, s in enumerate(socks):
        _abort(s, i % 2 == 0)
    wait_until(lambda: fake.replies_sent >= len(fake.commands), 15, what="every late answer sent")
    time.sleep(0.3)
    assert n.get("/plain").status == 200
    assert n.get("/app/", headers=cookie("sess_then"), timeout=30).status == 200


def test_wrong_password_is_503_and_logged(nginx, redis_factory):
    srv = redis_factory(password="right")
    seed_session(srv.client(), "sess_pw", "user_pw")
    n = start(nginx, srv.address(), "password=Xyzzy-not-it timeout=1s connect_timeout=1s")
    resp = n.get("/app/", headers=cookie("sess_pw"))
    assert resp.status == 503, resp
    assert "Xyzzy" not in n.log(), "the password leaked into the error log"


def test_redis_before_7_checks_without_a_script(nginx, fake_redis):
    # The check is a plain HMGET: a Redis that compiles no flagged script and
    # forgets loaded ones (6, or after SCRIPT FLUSH) answers it all the same.
    fake = fake_redis(mode="redis6", user_id="user_old")
    n = start(nginx, fake.address())
    resp = n.get("/app/", headers=cookie("sess_old"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_old"
    assert [c[:2] for c in fake.saw("HMGET")] == [["HMGET", "sess:sess_old"]]
    assert fake.saw("EVALSHA", "EVAL") == []
    # only the touch script is loaded, and it has no flags line
    scripts = [c[2] for c in fake.saw("SCRIPT") if len(c) > 2]
    assert scripts and not [s for s in scripts if s.startswith("#!") or "user:" in s], scripts
    assert n.bad_log_lines() == []


def test_wrong_password_then_fixed(nginx, redis_factory):
    # While AUTH fails, every command answers NOAUTH; once the password is
    # right the module authenticates on its next connection and checks again.
    srv = redis_factory(password="right")
    seed_session(srv.client(), "sess_pw2", "user_pw2")
    n = start(nginx, srv.address(), "password=later-right timeout=1s connect_timeout=1s")
    assert n.get("/app/", headers=cookie("sess_pw2")).status == 503
    srv.client().config_set("requirepass", "later-right")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_pw2")).status == 200, 15,
               interval=0.3, what="the module to authenticate after the password was fixed")
