"""End to end with the nginx module: a session.created webhook through
syncd makes nginx accept the session id as the session token; a
session.revoked makes it refuse (no cache). Skipped when the module is not
built (`make module`)."""

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
        return resp.status, resp.getheader("X-User-Id")
    finally:
        conn.close()


def test_webhooks_drive_nginx(pg, redis_server, nginx):
    daemon = Syncd(pg, redis_server).start()
    try:
        uid, sid, t = new_id("user"), new_id("sess"), now_ms()
        assert get(nginx, sid)[0] == 401
        assert daemon.deliver("user.created", user_data(uid, t))[0] == 200
        assert daemon.deliver("session.created", session_data(sid, uid, updated_at=t))[0] == 200
        assert wait_for(lambda: get(nginx, sid) == (200, uid), what="nginx to accept")
        assert daemon.deliver("session.revoked",
                              session_data(sid, uid, "revoked", updated_at=t + 1))[0] == 200
        wait_for(lambda: get(nginx, sid)[0] == 401, what="nginx to refuse")
        # A ban refuses every session of the user at once.
        sid2 = new_id("sess")
        assert daemon.deliver("session.created", session_data(sid2, uid, updated_at=t))[0] == 200
        wait_for(lambda: get(nginx, sid2)[0] == 200, what="second session")
        assert daemon.deliver("user.updated", user_data(uid, t + 5, banned=True))[0] == 200
        wait_for(lambda: get(nginx, sid2)[0] == 401, what="ban to refuse")
    finally:
        assert daemon.stop() == 0
