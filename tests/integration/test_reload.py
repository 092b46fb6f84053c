"""Reloads under traffic, what survives them, graceful shutdown."""

import signal
import socket
import threading
import time

import harness
from harness import (METRICS_LOCATION, app_location, cookie, metric, parse_metrics,
                     redis_directive, request, seed_session, seed_user, wait_until)


def conf_for(rds, workers=2, zone="sess:1m ttl=60s"):
    return dict(http=redis_directive(rds.address()) + "\n    session_cache_zone %s;" % zone,
                server=app_location("/app/") + app_location("/cached/", "session_cache sess;")
                + METRICS_LOCATION, workers=workers)


def metrics(n):
    resp = n.get("/metrics")
    assert resp.status == 200, resp
    return parse_metrics(resp.body)[0]


def test_reload_under_traffic_zero_failures(nginx, rds, r):
    seed_session(r, "sess_load", "user_load")
    seed_user(r, "user_load", role="admin")
    n = nginx(**conf_for(rds))
    results, errors = [], []
    stop = threading.Event()

    def client(path):
        while not stop.is_set():
            try:
                resp = request(n.port, path, headers=cookie("sess_load"), timeout=15)
                ok = resp.status == 200 and resp.upstream_header("X-User-Id") == "user_load"
                results.append(resp.status if ok else ("bad", resp.status, resp.body[:200]))
            except Exception as e:  # noqa: BLE001 - every failure counts
                errors.append(repr(e))
    threads = [threading.Thread(target=client, args=(p,)) for p in ("/app/", "/app/", "/cached/", "/cached/")]
    for t in threads:
        t.start()
    try:
        time.sleep(0.7)
        first_workers = n.worker_pids()
        n.reload()
        time.sleep(1.0)
        n.reload()
        time.sleep(1.3)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    failures = [x for x in results if x != 200]
    assert errors == [], errors[:5]
    assert failures == [], failures[:5]
    assert len(results) > 50, len(results)
    assert "reconfiguring" in n.log()
    # the old workers exited (gracefully)
    wait_until(lambda: not set(first_workers) & set(n.worker_pids()), 15, what="old workers to exit")
    assert len(n.worker_pids()) == 2
    assert n.get("/app/", headers=cookie("sess_load")).status == 200


def test_metrics_survive_reload(nginx, rds, r):
    # README: counters survive reloads
    seed_session(r, "sess_m", "user_m")
    n = nginx(**conf_for(rds, workers=1))
    for _ in range(5):
        assert n.get("/app/", headers=cookie("sess_m")).status == 200
    assert metric(metrics(n), "nginx_session_checks_total", '{outcome="ok"}') == 5
    before = n.worker_pids()
    n.reload()
    wait_until(lambda: n.worker_pids() and not set(before) & set(n.worker_pids()), 15, what="new workers")
    for _ in range(2):
        assert n.get("/app/", headers=cookie("sess_m")).status == 200
    m = metrics(n)
    assert metric(m, "nginx_session_checks_total", '{outcome="ok"}') == 7
    assert metric(m, "nginx_session_workers") == 1


def test_cache_entries_survive_reload(nginx, rds, r):
    # README: entries survive reloads
    seed_session(r, "sess_c", "user_c")
    n = nginx(**conf_for(rds, workers=1))
    assert n.get("/cached/", headers=cookie("sess_c")).status == 200
    r.delete("sess:sess_c")
    before = n.worker_pids()
    n.reload()
    wait_until(lambda: n.worker_pids() and not set(before) & set(n.worker_pids()), 15, what="new workers")
    resp = n.get("/cached/", headers=cookie("sess_c"))
    assert resp.status == 200, resp
    assert resp.upstream_header("X-User-Id") == "user_c"


def test_reload_to_another_redis(nginx, rds, r, redis_factory):
    seed_session(r, "sess_old", "user_old")
    other = redis_factory()
    seed_session(other.client(), "sess_new", "user_new")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    assert n.get("/app/", headers=cookie("sess_old")).status == 200
    n.write_conf(http=redis_directive(other.address()), server=app_location("/app/"))
    before = n.worker_pids()
    n.reload()
    wait_until(lambda: n.worker_pids() and not set(before) & set(n.worker_pids()), 15, what="new workers")
    assert n.get("/app/", headers=cookie("sess_new")).status == 200
    assert n.get("/app/", headers=cookie("sess_old")).status == 401


def test_bad_reload_keeps_old_configuration(nginx, rds, r):
    seed_session(r, "sess_k", "user_k")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    good = open(n.conf_path).read()
    with open(n.conf_path, "w") as f:
        f.write(good.replace("session_redis", "session_redis 127.0.0.1:1 bogus=1;\n#"))
    n.reload()
    wait_until(lambda: "\"bogus=\"" in n.log(), 10, what="the reload to be refused")
    assert n.get("/app/", headers=cookie("sess_k")).status == 200
    # the refused reload is an [emerg] by design: drop it before teardown
    with open(n.conf_path, "w") as f:
        f.write(good)
    log = n.log()
    assert log.count("[emerg]") == 1 and "session_redis" in [l for l in log.splitlines() if "[emerg]" in l][0]
    with open(n.error_log, "w") as f:
        f.write("\n".join(l for l in log.splitlines() if "[emerg]" not in l))


def test_graceful_quit_with_idle_redis_connection(nginx, rds, r):
    seed_session(r, "sess_q", "user_q")
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"))
    assert n.get("/app/", headers=cookie("sess_q")).status == 200
    assert n.stop(signal.SIGQUIT, timeout=10), "nginx did not exit within 10 s of SIGQUIT"
    assert "exited with code 0" in n.log()


def test_graceful_quit_with_lookup_in_flight(nginx, fake_redis):
    fake = fake_redis(mode="slow", delay=1.0)
    n = nginx(http=redis_directive(fake.address(), "timeout=5s connect_timeout=5s"),
              server=app_location("/app/"))
    s = socket.create_connection(("127.0.0.1", n.port), timeout=15)
    s.sendall(b"GET /app/q HTTP/1.1\r\nHost: t\r\nCookie: sessionId=sess_inflight\r\nConnection: close\r\n\r\n")
    wait_until(lambda: fake.saw("HMGET"), 10, what="the lookup at the fake Redis")
    n.proc.send_signal(signal.SIGQUIT)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    # the request in flight is finished, not dropped
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    n.proc.wait(15)


def test_redis_connection_per_worker(nginx, rds):
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/") + METRICS_LOCATION, workers=2)
    wait_until(lambda: metric(metrics(n), "nginx_session_redis_connected_workers") == 2, 10,
               what="both workers to connect")
    clients = rds.client().client_list()
    assert len(clients) >= 2 + 1, clients  # two workers and this client


def test_single_process_reload_closes_the_link(nginx, rds, r):
    # master_process off: a reload builds the new cycle in the same process
    # without init_process, so the link of the old cycle is closed (it would
    # point into freed configuration) and the log says to restart.
    seed_session(r, "sess_single", "user_s")
    # The module's connections are the ones that appear with nginx; other
    # clients (this test's, idle ones not yet collected) are left out.
    before = {c["id"] for c in r.client_list()}
    n = nginx(http=redis_directive(rds.address()), server=app_location("/app/"), master=False)
    assert n.get("/app/", headers=cookie("sess_single")).status == 200
    module_ids = {c["id"] for c in r.client_list()} - before
    assert module_ids, "the module has no connection to close"
    n.proc.send_signal(signal.SIGHUP)
    harness.wait_until(lambda: "reload with master_process off is not supported" in n.log(),
                       10, what="the warning")
    wait_until(lambda: not module_ids & {c["id"] for c in r.client_list()}, 10,
               what="the module's connection to close")
    assert n.proc.poll() is None, "nginx exited"
    # nginx's single-process loop looks at its quit flag only after an event:
    # a SIGQUIT that lands while it is still reconfiguring waits for one that
    # never comes here. Repeat it until nginx is gone.
    def quit_sent():
        if n.proc.poll() is None:
            n.proc.send_signal(signal.SIGQUIT)
        return n.proc.poll() is not None
    wait_until(quit_sent, 15, interval=0.5, what="nginx to quit")
