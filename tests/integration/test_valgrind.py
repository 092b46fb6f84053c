"""A handful of core cases with nginx (master and worker) under valgrind:
any memcheck error in any process's log fails the test."""

import glob
import os
import re
import signal
import socket
import time

import pytest

import harness
from harness import (METRICS_LOCATION, app_location, cookie, redis_directive, seed_session,
                     seed_user, wait_until)

VALGRIND = "/usr/bin/valgrind"
SUPPRESSIONS = os.path.join(os.path.dirname(__file__), "valgrind.supp")

pytestmark = pytest.mark.skipif(not os.path.exists(VALGRIND), reason="valgrind is not installed")


def valgrind_wrapper(tmp):
    return [VALGRIND, "--error-exitcode=99", "--trace-children=yes", "--child-silent-after-fork=no",
            "--log-file=%s/vg.%%p.log" % tmp, "--num-callers=40",
            "--leak-check=full", "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
            "--suppressions=%s" % SUPPRESSIONS]


ERRORS = re.compile(r"ERROR SUMMARY: (\d+) errors")


def valgrind_errors(tmp):
    """Logs of processes that reported errors: {path: text}."""
    bad = {}
    logs = glob.glob(os.path.join(tmp, "vg.*.log"))
    assert logs, "no valgrind log in %s" % tmp
    for path in logs:
        with open(path, errors="replace") as f:
            text = f.read()
        counts = [int(x) for x in ERRORS.findall(text)]
        if any(counts):
            bad[path] = text
    return bad


@pytest.fixture
def vg_nginx(tmp_path, upstream_server):
    """Like the `nginx` fixture, under valgrind, with one worker."""
    started = []

    def start(**conf):
        d = os.path.join(str(tmp_path), "vg%d" % len(started))
        os.makedirs(d)
        n = harness.Nginx(d, upstream_server.port, wrapper=valgrind_wrapper(d), **conf)
        started.append(n)
        return n.start(timeout=120)
    yield start
    problems = []
    for n in started:
        if not n.stop(signal.SIGQUIT, timeout=60):
            problems.append("nginx under valgrind did not exit within 60 s of SIGQUIT")
        bad = n.bad_log_lines()
        if bad:
            problems.append("error log has:\n  " + "\n  ".join(bad[:20]))
        for path, text in valgrind_errors(n.tmp).items():
            problems.append("valgrind errors in %s:\n%s" % (path, text[-12000:]))
        if n.proc is not None and n.proc.returncode == 99:
            problems.append("the master exited with valgrind's error code")
    assert not problems, "\n\n".join(problems)


SLOW = "timeout=5s connect_timeout=5s"


def test_valgrind_valid_missing_roles_and_cache(vg_nginx, rds, r):
    seed_session(r, "sess_vg", "user_vg")
    seed_user(r, "user_vg", role="viewer", roles="viewer acme/org:admin", db_id=9, email="vg@example.com")
    seed_session(r, "sess_rev", "user_vg", status="revoked")
    n = vg_nginx(http=redis_directive(rds.address(), SLOW) + "\n    session_cache_zone sess:1m ttl=60s;",
                 server=app_location("/app/", "session_touch 1s;")
                 + app_location("/cached/", "session_cache sess;")
                 + app_location("/admin/", "session_require_role admin;"
                                " session_redirect /sign-in?redirect_url=$request_uri;")
                 + METRICS_LOCATION)
    resp = n.get("/app/", headers=cookie("sess_vg"), timeout=60)
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Email") == "vg@example.com"
    assert n.get("/app/", timeout=60).status == 401
    assert n.get("/app/", headers=cookie("sess_rev"), timeout=60).status == 401
    assert n.get("/app/", headers=cookie("bad token!"), timeout=60).status == 401
    assert n.get("/admin/", headers={"Accept": "text/html"}, timeout=60).status == 302
    assert n.get("/admin/", headers=cookie("sess_vg"), timeout=60).status == 403
    # cache: a miss, then a hit after the key is gone
    assert n.get("/cached/", headers=cookie("sess_vg"), timeout=60).status == 200
    r.delete("sess:sess_vg")
    resp = n.get("/cached/", headers=cookie("sess_vg"), timeout=60)
    assert resp.status == 200, resp
    assert n.get("/metrics", timeout=60).status == 200


def test_valgrind_redis_down_and_back(vg_nginx, redis_factory):
    srv = redis_factory()
    seed_session(srv.client(), "sess_d", "user_d")
    n = vg_nginx(http=redis_directive(srv.address(), SLOW),
                 server=app_location("/app/") + app_location("/open/", "session_fail_mode open;"))
    assert n.get("/app/", headers=cookie("sess_d"), timeout=60).status == 200
    srv.stop()
    assert n.get("/app/", headers=cookie("sess_d"), timeout=60).status == 503
    assert n.get("/open/", headers=cookie("sess_d"), timeout=60).status == 200
    srv.start()
    seed_session(srv.client(), "sess_d", "user_d")
    wait_until(lambda: n.get("/app/", headers=cookie("sess_d"), timeout=60).status == 200, 30,
               interval=0.5, what="reconnect under valgrind")


def test_valgrind_client_abort_and_timeout(vg_nginx, fake_redis):
    fake = fake_redis(mode="slow", delay=1.5)
    n = vg_nginx(http=redis_directive(fake.address(), "timeout=1s connect_timeout=5s"),
                 server=app_location("/app/") + "\n        location = /plain { return 200; }")
    # abandoned lookup: the client leaves, the reply comes after the timeout
    s = socket.create_connection(("127.0.0.1", n.port), timeout=30)
    s.sendall(b"GET /app/ HTTP/1.1\r\nHost: t\r\nCookie: sessionId=sess_gone\r\n\r\n")
    wait_until(lambda: fake.saw("HMGET"), 30, what="the lookup at the fake")
    s.close()
    time.sleep(2.5)
    assert n.get("/plain", timeout=60).status == 200
    # a lookup that times out with the client still there: 503
    resp = n.get("/app/", headers=cookie("sess_slow"), timeout=60)
    assert resp.status == 503, resp


def test_valgrind_reload(vg_nginx, rds, r):
    seed_session(r, "sess_rl", "user_rl")
    n = vg_nginx(http=redis_directive(rds.address(), SLOW) + "\n    session_cache_zone sess:1m;",
                 server=app_location("/app/", "session_cache sess;"))
    assert n.get("/app/", headers=cookie("sess_rl"), timeout=60).status == 200
    before = n.worker_pids()
    n.reload()
    wait_until(lambda: n.worker_pids() and not set(before) & set(n.worker_pids()), 60, interval=0.5,
               what="new workers under valgrind")
    assert n.get("/app/", headers=cookie("sess_rl"), timeout=60).status == 200
