"""End to end with the nginx module. Clerk's session id is no secret (it is
in every session token's sid claim, in webhooks, visible to the browser), so
the session hash syncd writes carries token_type=jwt and nginx refuses the
bare session id as a bearer token, before and after session.revoked. A ban
projected by syncd refuses the user's other sessions (here an application's
own opaque session) at once (no cache). Clerk's session token end to end (a
signed JWT whose sid names the session) is tested with the module's JWT
suites, tests/integration/test_jwt*.py. Skipped when the module is not built
(`make module`)."""

import os
import shutil
import subprocess
import tempfile

import pytest

from syncd_harness import Syncd, free_port, new_id, now_ms, session_data, user_data, wait_for

SOURCE_DIR = os.environ.get("SYNCD_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODULE = os.environ.get("SESSION_MODULE_SO") or os.path.join(
    SOURCE_DIR, "build", "nginx", "objs", "ngx_session_module.so")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")

pytestmark = pytest.mark.skipif(not os.path.exists(MODULE) or not os.path.exists(NGINX),
                                reason="the nginx module is not built")


@pytest.fixture
def nginx(redis_server):
    tmp = tempfile.mkdtemp(prefix="syncd-e2e-nginx-")
    os.makedirs(os.path.join(tmp, "www", "app"))
    with open(os.path.join(tmp, "www", "app", "index.html"), "w") as f:
        f.write("app\n")
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
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location /app/ {{
            session_check on;
            session_token cookie=__session bearer;
            session_cache off;
            add_header X-User-Id $session_user_id always;
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
    import socket

    def up():
        assert proc.poll() is None, open(f"{tmp}/error.log").read()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    wait_for(up, what="nginx")
    yield port
    proc.terminate()
    proc.wait(10)
    log = open(f"{tmp}/error.log").read()
    shutil.rmtree(tmp, ignore_errors=True)
    assert "[alert]" not in log and "[emerg]" not in log, log


def get(port, token):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/app/", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-User-Id"), resp.getheader("X-Session-Status")
    finally:
        conn.close()


def test_webhooks_drive_nginx(pg, redis_server, nginx):
    rds = redis_server.client
    daemon = Syncd(pg, redis_server).start()
    try:
        uid, sid, t = new_id("user"), new_id("sess"), now_ms()
        assert get(nginx, sid)[0] == 401
        assert daemon.deliver("user.created", user_data(uid, t))[0] == 200
        assert daemon.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "user_id") == uid, what="session hash")
        assert rds.hget(f"sess:{sid}", "token_type") == "jwt"
        # The live session's id is refused: it names a session, it proves nothing.
        assert get(nginx, sid) == (401, None, "invalid")
        # An application's own session (no token_type) for the same user is
        # the credential it always was: the wiring works.
        app_sid = new_id("app")
        rds.hset(f"sess:{app_sid}", mapping={"user_id": uid, "expires_at": str(t + 3600_000)})
        assert get(nginx, app_sid) == (200, uid, "ok")
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t + 1))[0] == 200
        wait_for(lambda: rds.hget(f"sess:{sid}", "status") == "revoked", what="tombstone")
        assert get(nginx, sid) == (401, None, "invalid")
        # A ban refuses every session of the user at once.
        assert daemon.deliver("user.updated", user_data(uid, t + 5, banned=True))[0] == 200
        wait_for(lambda: get(nginx, app_sid)[0] == 401, what="ban to refuse")
        assert get(nginx, app_sid) == (401, None, "revoked")
    finally:
        assert daemon.stop() == 0
