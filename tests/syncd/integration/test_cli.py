"""The subcommands, signals and systemd integration."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from syncd_harness import (SECOND_SECRET, SECRET, SYNCD_BIN, Syncd, new_id, now_ms, session_data,
                     user_data, wait_for)

SOURCE_DIR = os.environ.get("SYNCD_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def run(env, *args):
    return subprocess.run([SYNCD_BIN, *args], env=env, capture_output=True, text=True, timeout=60)


def test_version():
    out = run({}, "--version")
    assert out.returncode == 0 and out.stdout.startswith("syncd ")


def test_check_config_names_the_key_and_hides_the_secret(pg, redis_server):
    base = {"SYNCD_DATABASE_URL": pg.url, "SYNCD_REDIS_URL": redis_server.url,
            "SYNCD_WEBHOOK_SECRETS": SECRET}
    ok = run(base, "check-config")
    assert ok.returncode == 0, ok.stderr
    assert "1 webhook secret" in ok.stdout and "MfKQ9r8" not in ok.stdout + ok.stderr
    cases = {
        "SYNCD_DATABASE_URL": {k: v for k, v in base.items() if k != "SYNCD_DATABASE_URL"},
        "SYNCD_MAX_BODY": dict(base, SYNCD_MAX_BODY="huge"),
        "SYNCD_LISTEN": dict(base, SYNCD_LISTEN="nowhere"),
        "SYNCD_REDIS_URL": dict(base, SYNCD_REDIS_URL="redis://:hunter2@host:port"),
        "SYNCD_WEBHOOK_SECRETS": dict(base, SYNCD_WEBHOOK_SECRETS=SECRET + " whsec_hunter2!"),
        "SYNCD_LOG_LEVEL": dict(base, SYNCD_LOG_LEVEL="chatty"),
    }
    for key, env in cases.items():
        out = run(env, "check-config")
        assert out.returncode == 78, key
        assert key in out.stderr, (key, out.stderr)
        assert "hunter2" not in out.stderr and "MfKQ9r8" not in out.stderr
    # serve refuses to start on the same errors, before listening.
    out = run(cases["SYNCD_WEBHOOK_SECRETS"], "serve")
    assert out.returncode == 78 and "SYNCD_WEBHOOK_SECRETS" in out.stderr


def test_config_file(pg, redis_server, tmp_path):
    conf = tmp_path / "syncd.env"
    conf.write_text(f"# test\nSYNCD_DATABASE_URL={pg.url}\nSYNCD_REDIS_URL='{redis_server.url}'\n"
                    f"SYNCD_WEBHOOK_SECRETS=\"{SECRET}\"\n")
    assert run({}, "--config", str(conf), "check-config").returncode == 0
    conf.write_text("SYNCD_LISTEN\n")
    out = run({}, "--config", str(conf), "check-config")
    assert out.returncode == 78 and f"{conf}:1" in out.stderr
    # A typo in the file is an error; in the shared environment, a warning.
    conf.write_text(f"SYNCD_DATABASE_URL={pg.url}\nSYNCD_LISTN=127.0.0.1:1\n")
    out = run({}, "--config", str(conf), "check-config")
    assert out.returncode == 78 and "SYNCD_LISTN: unknown key" in out.stderr
    out = run({"SYNCD_TYPO": "1", "SYNCD_DATABASE_URL": pg.url, "SYNCD_REDIS_URL": redis_server.url,
               "SYNCD_WEBHOOK_SECRETS": SECRET}, "check-config")
    assert out.returncode == 0 and "SYNCD_TYPO" in out.stderr


def test_migrate_is_idempotent_and_safe_concurrently(pg):
    db = "migrate_" + new_id("t").split("_")[1][:8]
    pg.query(f'CREATE DATABASE "{db}"')
    env = {"SYNCD_DATABASE_URL": pg.url.rsplit("/", 1)[0] + "/" + db}
    procs = [subprocess.Popen([SYNCD_BIN, "migrate"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    files = sorted(f for f in os.listdir(os.path.join(SOURCE_DIR, "schema")) if f.endswith(".sql"))
    applied = sum(int(o.split("migrations: ")[1].split()[0]) for o, _ in outs)
    assert applied == len(files)
    again = run(env, "migrate")
    assert again.returncode == 0
    assert f"0 applied, {len(files)} already applied" in again.stdout
    rows = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                           "-d", db, "-Atc", "SELECT name FROM schema_migrations ORDER BY version"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert rows == files


def test_reconcile_after_flushall(pg, redis_server):
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    try:
        t = now_ms()
        live, banned, gone = new_id("user"), new_id("user"), new_id("user")
        s_live, s_ended, s_banned = new_id("sess"), new_id("sess"), new_id("sess")
        s_old = new_id("sess")
        assert daemon.deliver("user.created", user_data(live, t, role="admin"))[0] == 200
        assert daemon.deliver("user.created", user_data(banned, t, banned=True))[0] == 200
        assert daemon.deliver("user.created", user_data(gone, t))[0] == 200
        assert daemon.deliver("user.deleted", {"object": "user", "id": gone, "deleted": True})[0] == 200
        assert daemon.deliver("session.created", session_data(s_live, live))[0] == 200
        assert daemon.deliver("session.created", session_data(s_ended, live, updated_at=t))[0] == 200
        assert daemon.deliver("session.ended",
                              session_data(s_ended, live, "ended", updated_at=t + 1))[0] == 200
        assert daemon.deliver("session.created", session_data(s_banned, banned))[0] == 200
        # Ended long before any token for it could still verify.
        assert daemon.deliver("session.ended",
                              session_data(s_old, live, "ended",
                                           updated_at=t - 11 * 60_000))[0] == 200
        wait_for(lambda: pg.scalar("SELECT count(*) FROM outbox") == "0", what="outbox")
        expected = {k: (rds.hgetall(k), rds.ttl(k) > 0)
                    for k in (f"user:{live}", f"user:{banned}", f"user:{gone}", f"sess:{s_live}",
                              f"sess:{s_ended}", f"sess:{s_banned}")}
        assert all(h for h, _ in expected.values())
        assert expected[f"sess:{s_ended}"] == ({"status": "ended", "token_type": "jwt"}, True)
        assert expected[f"sess:{s_banned}"] == ({"status": "revoked", "token_type": "jwt"}, True)
        assert not rds.exists(f"sess:{s_old}")
    finally:
        assert daemon.stop() == 0
    rds.flushall()
    # Drift the other way too: the ended session's key brought back to life
    # (reconcile must not resurrect it), a key for a long-ended session.
    rds.hset(f"sess:{s_ended}", mapping={"user_id": live, "expires_at": "99999999999999"})
    rds.hset(f"sess:{s_old}", mapping={"user_id": live, "expires_at": "99999999999999"})
    out = daemon.run("reconcile")
    assert "reconcile: users checked" in out.stdout
    for key, (fields, has_ttl) in expected.items():
        assert rds.hgetall(key) == fields, key
        assert (rds.ttl(key) > 0) == has_ttl, key
    for sid in (s_ended, s_banned):
        assert 120 <= rds.ttl(f"sess:{sid}") <= 600
    assert not rds.exists(f"sess:{s_old}")
    assert rds.hget(f"user:{gone}", "status") == "deleted"
    assert "written 1, tombstones written 2, removed 1" in out.stdout, out.stdout
    # A second run finds nothing to do, and leaves the tombstones alone.
    ttl_before = rds.ttl(f"sess:{s_ended}")
    again = daemon.run("reconcile").stdout
    assert ", written 0; sessions checked" in again
    assert "written 0, tombstones written 0, removed 0" in again, again
    assert rds.ttl(f"sess:{s_ended}") <= ttl_before


def test_sighup_reloads_secrets(pg, redis_server, tmp_path):
    conf = tmp_path / "syncd.env"
    conf.write_text(f"SYNCD_WEBHOOK_SECRETS={SECRET}\n")
    daemon = Syncd(pg, redis_server, config_file=str(conf)).start()
    try:
        uid = new_id("user")
        assert daemon.deliver("user.created", user_data(uid, now_ms()),
                              secret=SECOND_SECRET)[0] == 401
        conf.write_text(f"SYNCD_WEBHOOK_SECRETS={SECOND_SECRET}\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "webhook secrets reloaded" in daemon.read_log(), what="reload")
        assert daemon.deliver("user.created", user_data(uid, now_ms()),
                              secret=SECOND_SECRET)[0] == 200
        assert daemon.deliver("user.created", user_data(new_id("user"), now_ms()),
                              secret=SECRET)[0] == 401
        # A broken file keeps the previous secrets.
        conf.write_text("SYNCD_WEBHOOK_SECRETS=whsec_\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload failed" in daemon.read_log(), what="failed reload")
        assert daemon.deliver("user.created", user_data(new_id("user"), now_ms()),
                              secret=SECOND_SECRET)[0] == 200
    finally:
        assert daemon.stop() == 0
    assert "MfKQ9r8" not in daemon.read_log() and "C2FVsBQ" not in daemon.read_log()


def test_sigterm_finishes_requests_in_flight(pg, redis_server):
    daemon = Syncd(pg, redis_server).start()
    # Hold a lock that the webhook's transaction needs, so that the request
    # is provably in flight when SIGTERM arrives.
    holder = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                               "-X", "-q"], stdin=subprocess.PIPE, text=True)
    holder.stdin.write("BEGIN; LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE;\n")
    holder.stdin.flush()
    wait_for(lambda: pg.scalar("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' "
                               "AND relation = 'webhook_events'::regclass") == "1", what="lock")
    result = {}
    uid = new_id("user")
    sender = threading.Thread(target=lambda: result.update(
        status=daemon.deliver("user.created", user_data(uid, now_ms()))[0]))
    sender.start()
    wait_for(lambda: pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                               "'Lock' AND application_name = 'syncd'") == "1", what="waiting")
    daemon.proc.send_signal(signal.SIGTERM)
    # New connections are refused while the request is still held.
    def refused():
        try:
            socket.create_connection(("127.0.0.1", daemon.port), timeout=0.5).close()
            return False
        except OSError:
            return True
    wait_for(refused, what="listening socket to close")
    assert daemon.proc.poll() is None and sender.is_alive()
    holder.stdin.write("COMMIT;\n")
    holder.stdin.close()
    holder.wait(10)
    sender.join(10)
    assert result["status"] == 200
    assert daemon.proc.wait(20) == 0
    assert pg.scalar("SELECT count(*) FROM users WHERE clerk_id = :'p1'", uid) == "1"


def test_sd_notify_protocol(pg, redis_server, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    daemon = Syncd(pg, redis_server, extra_env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    daemon.start()
    try:
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = [m for m in messages if "READY=1" in m]
        assert ready, messages
        # READY came once the socket listened: a request works right away.
        assert daemon.request("GET", "/healthz")[0] == 200
        daemon.proc.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages[-1]:
            messages.append(sock.recv(4096).decode())
        assert daemon.proc.wait(20) == 0
    finally:
        daemon.stop()
        sock.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_unit_verifies(tmp_path):
    unit = open(os.path.join(SOURCE_DIR, "syncd", "syncd.service")).read()
    assert "Type=notify" in unit and "ExecStartPre=/usr/bin/syncd" in unit
    # verify checks that the binaries exist: point it at the one just built.
    copy = tmp_path / "syncd.service"
    copy.write_text(unit.replace("/usr/bin/syncd", os.path.abspath(SYNCD_BIN)))
    out = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
