"""The harness itself, against the stock nginx WITHOUT the module and a real
redis-server: if these fail, every other result is meaningless."""

import os
import signal
import socket
import time

import pytest

import harness

pytestmark = pytest.mark.no_module


def test_upstream_echoes_headers_through_stock_nginx(nginx, upstream):
    n = nginx(module=False, server="""
        location / {
            proxy_set_header X-Fixed fixed-value;
            proxy_pass http://app;
        }""")
    resp = n.get("/echo?x=1", headers=[("X-Client", "one"), ("X-Fixed", "spoofed")])
    assert resp.status == 200
    assert resp.json()["path"] == "/echo?x=1"
    assert resp.upstream_header("X-Client") == "one"
    # proxy_set_header replaces a client header of the same name
    assert resp.upstream_headers("X-Fixed") == ["fixed-value"]
    assert len(upstream.requests) == 1


def test_empty_proxy_set_header_value_is_not_sent(nginx):
    n = nginx(module=False, server="""
        location / {
            proxy_set_header X-User-Id $http_x_nothing;
            proxy_pass http://app;
        }""")
    resp = n.get("/", headers={"X-User-Id": "evil"})
    assert resp.status == 200
    assert resp.upstream_headers("X-User-Id") == []


def test_redis_server_seed_and_commandstats(rds, r):
    harness.seed_session(r, "sess_a", "user_a")
    harness.seed_user(r, "user_a", role="admin", roles="admin acme/org:admin")
    assert r.hget("sess:sess_a", "user_id") == "user_a"
    assert r.hget("user:user_a", "roles") == "admin acme/org:admin"
    assert rds.calls("hset") == 2


def test_redis_monitor_sees_commands(rds, r):
    mon = harness.Monitor(rds)
    try:
        r.get("needle-key")
        harness.wait_until(lambda: "needle-key" in mon.text(), 5, what="MONITOR line")
    finally:
        mon.close()


def test_redis_password_and_unix_socket(redis_factory):
    s = redis_factory(password="s3cret", unix_socket=True)
    assert s.client().ping()
    assert os.path.exists(s.unix_path)
    s.restart()
    assert s.client().ping()


def test_fake_redis_stalls_and_answers_slowly(fake_redis):
    stall = fake_redis(mode="stall")
    with socket.create_connection(("127.0.0.1", stall.port), timeout=5) as c:
        c.sendall(harness.resp_encode(["PING"]))
        c.settimeout(0.3)
        with pytest.raises(socket.timeout):
            c.recv(10)
    assert stall.saw("PING")

    slow = fake_redis(mode="slow", delay=0.2)
    with socket.create_connection(("127.0.0.1", slow.port), timeout=5) as c:
        c.sendall(harness.resp_encode(["SCRIPT", "LOAD", "return 1"]))
        data = c.recv(100)
        assert data.startswith(b"$40\r\n")


def test_log_checker_catches_alerts(nginx, tmp_path):
    # an nginx that logs an [alert] would fail its teardown; check the
    # detector directly on a worker killed by a signal
    n = nginx(module=False, server="location / { return 200 ok; }")
    assert n.get("/").status == 200
    [worker] = n.worker_pids()
    os.kill(worker, signal.SIGSEGV)
    harness.wait_until(lambda: n.bad_log_lines(), 10, what="master to log the crash")
    assert any("exited on signal 11" in l for l in n.bad_log_lines())
    # the master respawns it
    harness.wait_until(lambda: n.get("/").status == 200, 10, what="respawned worker")
    # keep teardown green: this crash was on purpose
    n.stop()
    open(n.error_log, "w").close()


def test_nginx_t_reports_errors():
    rc, out = harness.nginx_test_config("events {}\nhttp { bogus_directive 1; }\n")
    assert rc != 0
    assert '[emerg] unknown directive "bogus_directive"' in out


def test_reload_and_worker_pids(nginx):
    n = nginx(module=False, server="location / { return 200 ok; }")
    before = n.worker_pids()
    n.reload()
    harness.wait_until(lambda: n.worker_pids() and n.worker_pids() != before, 10, what="new workers")
    assert n.get("/").status == 200
