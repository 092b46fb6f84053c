"""End to end with the nginx module in JWT mode, the cache on: Clerk's
session token (a JWT signed with the test's key, whose sid names the session)
passes once syncd has projected the user from PostgreSQL (the upstream sees
the application's db_id and role), and a signed session.revoked makes nginx
refuse the same, still valid token through the revocation message (the
cache's ttl= is a minute, so only the message can drop the entry). Skipped
when the module is not built (`make module`)."""

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from syncd_harness import Syncd, free_port, new_id, now_ms, session_data, user_data, wait_for

SOURCE_DIR = os.environ.get("SYNCD_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "clerk"))

import tokens  # noqa: E402

MODULE = os.environ.get("SESSION_MODULE_SO") or os.path.join(
    SOURCE_DIR, "build", "nginx", "objs", "ngx_session_module.so")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
ISSUER = "https://clerk.e2e.example"
ORIGIN = "https://app.e2e.example"

pytestmark = pytest.mark.skipif(not os.path.exists(MODULE) or not os.path.exists(NGINX),
                                reason="the nginx module is not built")


@pytest.fixture
def key():
    return tokens.SigningKey(kid="ins_e2e")


@pytest.fixture
def nginx(redis_server, key):
    tmp = tempfile.mkdtemp(prefix="syncd-e2e-jwt-")
    os.makedirs(os.path.join(tmp, "www", "app"))
    with open(os.path.join(tmp, "www", "app", "index.html"), "w") as f:
        f.write("app\n")
    with open(os.path.join(tmp, "jwks.json"), "w") as f:
        f.write(tokens.jwks(key))
    port = free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
{user}
load_module {MODULE};
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/cb;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    session_redis 127.0.0.1:{redis_server.port};
    session_cache_zone sessions:1m ttl=60s;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location /app/ {{
            session_check on;
            session_cache sessions;
            session_jwt_keys {tmp}/jwks.json;
            session_jwt_issuer {ISSUER};
            session_jwt_authorized_parties {ORIGIN};
            add_header X-User-Id $session_user_id always;
            add_header X-User-Db-Id $session_user_db_id always;
            add_header X-User-Role $session_user_role always;
            add_header X-Session-Id $session_id always;
            add_header X-Session-Status $session_status always;
        }}
    }}
}}
"""
    path = os.path.join(tmp, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    proc = subprocess.Popen([NGINX, "-p", tmp + "/", "-c", path, "-e", f"{tmp}/error.log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        assert proc.poll() is None, open(f"{tmp}/error.log").read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(up, what="nginx")
    yield port, tmp
    proc.terminate()
    proc.wait(10)
    log = open(f"{tmp}/error.log").read()
    shutil.rmtree(tmp, ignore_errors=True)
    assert "[alert]" not in log and "[emerg]" not in log and "[crit]" not in log, log


def get(port, token):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/app/", headers={"Cookie": f"__session={token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {h: resp.getheader(h) for h in (
            "X-User-Id", "X-User-Db-Id", "X-User-Role", "X-Session-Id", "X-Session-Status")}
    finally:
        conn.close()


def test_session_token_through_syncd_and_revocation(pg, redis_server, nginx, key):
    port, tmp = nginx
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    try:
        uid, sid, t = new_id("user"), new_id("sess"), now_ms()
        token = key.mint(tokens.session_claims(uid, sid, ISSUER, azp=ORIGIN, lifetime=300))
        assert daemon.deliver("user.created", user_data(uid, t, role="editor"))[0] == 200
        assert daemon.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "user_id") == uid, what="session hash")
        wait_for(lambda: rds.hget(f"user:{uid}", "db_id"), what="user hash")
        db_id = pg.scalar("SELECT id::text FROM users WHERE clerk_id = :'p1'", uid)

        status, headers = get(port, token)
        assert status == 200, headers
        assert headers["X-User-Id"] == uid
        assert headers["X-Session-Id"] == sid
        assert headers["X-User-Db-Id"] == db_id  # from PostgreSQL, through syncd
        assert headers["X-User-Role"] == "editor"
        assert headers["X-Session-Status"] == "ok"
        # Cached now: the same token is answered without Redis.
        assert get(port, token)[0] == 200

        sent = time.monotonic()
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t + 1))[0] == 200
        wait_for(lambda: get(port, token)[0] == 401, timeout=10, what="the revocation")
        took_ms = (time.monotonic() - sent) * 1000
        status, headers = get(port, token)
        assert (status, headers["X-Session-Status"]) == (401, "revoked")
        # The refusal came from the message, not from the cache entry aging
        # out (ttl=60s); the figure is for the reader, not an assertion.
        print("session.revoked -> refused at nginx in %.0f ms" % took_ms)
        with open(os.path.join(tmp, "error.log")) as f:
            assert token not in f.read()
    finally:
        assert daemon.stop() == 0
