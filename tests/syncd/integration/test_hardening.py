"""Bounds and leaks: PostgreSQL timeouts and the watchdog, secrets and row
data kept out of messages, HTTP memory bounds, the projection's guards."""

import json
import socket
import subprocess
import threading
import time

from syncd_harness import (SYNCD_BIN, Syncd, hold_lock, membership_data, new_id, now_ms, release,
                           session_data, user_data, wait_for, waiting_on_lock)


def run(env, *args):
    return subprocess.run([SYNCD_BIN, *args], env=env, capture_output=True, text=True, timeout=60)




def test_unparsable_database_url_is_not_echoed(redis_server):
    env = {"SYNCD_DATABASE_URL": "postgresql://u:s3cr%ZZet@127.0.0.1/x",
           "SYNCD_REDIS_URL": redis_server.url, "SYNCD_WEBHOOK_SECRETS": "whsec_QUJD"}
    for command in ("migrate", "check-config", "reconcile", "serve"):
        out = run(env, command)
        assert out.returncode == 78, (command, out.stderr)
        assert "SYNCD_DATABASE_URL: not a valid libpq connection string or URL" in out.stderr
        assert "s3cr" not in out.stdout + out.stderr, command


def test_connection_error_names_only_the_server(pg):
    url = f"postgresql://nosuchrole_canary:hunter2@127.0.0.1:{pg.port}/postgres"
    out = run({"SYNCD_DATABASE_URL": url}, "migrate")
    assert out.returncode == 1
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{pg.port}/postgres" in out.stderr
    assert "nosuchrole_canary" not in out.stderr and "hunter2" not in out.stderr


def test_statement_error_logs_no_detail(syncd, pg):
    # DETAIL may quote row data: only SQLSTATE and the primary message are logged.
    pg.query("CREATE FUNCTION leak_canary() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
             "IF NEW.email LIKE '%@leak.test' THEN RAISE EXCEPTION 'canary refused' "
             "USING DETAIL = 'row ' || NEW.email; END IF; RETURN NEW; END $$; "
             "CREATE TRIGGER leak_canary BEFORE INSERT ON users FOR EACH ROW "
             "EXECUTE FUNCTION leak_canary();")
    try:
        status, body, msg = syncd.deliver("user.created", user_data(
            new_id("user"), now_ms(), email="grace@leak.test"))
        assert status == 503, body
    finally:
        pg.query("DROP TRIGGER leak_canary ON users; DROP FUNCTION leak_canary();")
    lines = [l for l in syncd.read_log().splitlines() if msg in l and "not stored" in l]
    assert lines and "canary refused (SQLSTATE P0001)" in lines[0], lines
    assert "grace@leak.test" not in syncd.read_log()


def test_statement_and_pool_timeouts(pg, redis_server):
    # A user `options` of its own: the default statement_timeout is merged in.
    url = pg.url + "?application_name=syncd_pool&options=-c%20search_path%3Dpublic"
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_DATABASE_URL": url,
                                                "SYNCD_DB_POOL": "1"}).start()
    holder = hold_lock(pg, "webhook_events")
    try:
        result = {}

        def stuck():
            start = time.monotonic()
            result["status"] = daemon.deliver("user.created", user_data(new_id("user"),
                                                                        now_ms()))[0]
            result["took"] = time.monotonic() - start
        sender = threading.Thread(target=stuck)
        sender.start()
        wait_for(lambda: waiting_on_lock(pg, "syncd_pool"), what="the delivery to wait")
        # The only pooled connection is taken: another delivery is answered
        # 503 after the 5 s pool wait (/healthz takes no pooled connection).
        start = time.monotonic()
        status, body, _ = daemon.deliver("user.created", user_data(new_id("user"), now_ms()))
        assert status == 503 and "database unavailable" in body
        assert 4 <= time.monotonic() - start < 8
        # The stuck statement ends within the delivery's 8 s budget, by
        # lock_timeout.
        sender.join(20)
        assert result["status"] == 503 and result["took"] < 14, result
    finally:
        release(holder)
        assert daemon.stop() == 0
    log = daemon.read_log()
    assert "no free pooled connection within 5 s" in log
    assert "lock timeout (SQLSTATE 55P03)" in log


def test_watchdog_withheld_while_the_projector_is_stuck(pg, redis_server, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    daemon = Syncd(pg, redis_server, extra_env={
        "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000",
        "SYNCD_DATABASE_URL": pg.url + "?application_name=syncd_watchdog"}).start()

    def pings(seconds):
        n, deadline = 0, time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                n += "WATCHDOG=1" in sock.recv(4096).decode()
            except socket.timeout:
                break
        return n
    try:
        assert pings(2) >= 2
        holder = hold_lock(pg, "outbox")
        try:
            wait_for(lambda: waiting_on_lock(pg, "syncd_watchdog"), what="the projector to block")
            time.sleep(1.2)  # past the watchdog interval
            sock.setblocking(False)
            try:
                while sock.recv(4096):
                    pass
            except BlockingIOError:
                pass
            assert pings(3) == 0, daemon.read_log()[-3000:]
            assert "withholding the watchdog ping" in daemon.read_log()
        finally:
            release(holder)
        assert pings(3) >= 2
    finally:
        assert daemon.stop() == 0
        sock.close()


def test_connection_limit_follows_the_pool(pg, redis_server):
    # The per-address limit (test_limits.py) out of the way: all from 127.0.0.1.
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_DB_POOL": "1",  # max(64, 4)
                                                "SYNCD_MAX_CONNECTIONS_PER_IP": "1000"}).start()
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", daemon.port), timeout=5)
                for _ in range(64)]
        time.sleep(0.5)
        try:
            status, _ = daemon.request("GET", "/metrics", timeout=2)
        except OSError:
            status = None
        assert status is None, "a 65th connection was served"
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: daemon.request("GET", "/metrics")[0] == 200, what="a free slot")
    assert daemon.stop() == 0


def test_chunked_body_past_the_drain_limit_is_cut(pg, redis_server):
    daemon = Syncd(pg, redis_server, extra_env={"SYNCD_MAX_BODY": "1k"}).start()
    try:
        chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
        sent, error = 0, None
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
            s.sendall(b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            try:
                while sent < 64 * 1024 * 1024:
                    s.sendall(chunk)
                    sent += 4096
                s.sendall(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError) as e:
                error = e
        # Closed after 8 KiB (8 x SYNCD_MAX_BODY), not read to the end.
        assert error is not None and sent < 64 * 1024 * 1024
        assert daemon.request("GET", "/healthz")[0] == 200
    finally:
        assert daemon.stop() == 0


def test_reprojection_keeps_the_newer_last_active_at(syncd, rds):
    uid, sid, t = new_id("user"), new_id("sess"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    assert syncd.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
    key = f"sess:{sid}"
    wait_for(lambda: rds.hget(key, "last_active_at") == str(t), what="session key")
    rds.hset(key, "last_active_at", str(t + 60_000))  # the module's sliding expiry
    newer = session_data(sid, uid, updated_at=t + 10, expire_in_ms=7200_000)
    assert syncd.deliver("session.created", newer)[0] == 200
    wait_for(lambda: rds.hget(key, "expires_at") == str(newer["expire_at"]), what="re-projection")
    assert rds.hget(key, "last_active_at") == str(t + 60_000)
    assert 3600_000 < rds.pttl(key) <= 7200_000
    # An older stored value gives way to the projected one.
    rds.hset(key, "last_active_at", str(t - 5000))
    newest = session_data(sid, uid, updated_at=t + 20, expire_in_ms=5400_000)
    assert syncd.deliver("session.created", newest)[0] == 200
    wait_for(lambda: rds.hget(key, "expires_at") == str(newest["expire_at"]), what="re-projection")
    assert rds.hget(key, "last_active_at") == str(t + 20)


def test_membership_words_cannot_inject_roles(syncd, pg, rds):
    uid, t = new_id("user"), now_ms()
    assert syncd.deliver("user.created", user_data(uid, t))[0] == 200
    for slug, role in (("evil admin", "org:member"), ("globex", "org:member admin"),
                       ("a/b", "org:member"), ("acme", "org:admin")):
        assert syncd.deliver("organizationMembership.created",
                             membership_data(new_id("orgmem"), uid, slug, role, t))[0] == 200
    assert pg.scalar("SELECT count(*) FROM memberships WHERE clerk_user_id = :'p1'", uid) == "4"
    wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox")
    # Roles name the organization by id (membership_data: "org_" + slug).
    assert rds.hget(f"user:{uid}", "roles") == "user org_acme/org:admin"


def test_nul_in_an_id_is_refused(syncd, pg):
    uid = new_id("user")
    status, body, _ = syncd.deliver("session.created", session_data("sess_a\u0000b", uid))
    assert status == 400 and "NUL" in json.loads(body)["error"]
    assert pg.scalar("SELECT count(*) FROM sessions WHERE clerk_user_id = :'p1'", uid) == "0"
