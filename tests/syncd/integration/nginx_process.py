"""The stock nginx with the session module, for the end-to-end tests that put
it behind syncd (test_e2e_nginx.py, test_e2e_jwt.py): one worker, no master,
static files under /app/, Redis at the test's redis-server. Each test says
what /app/ checks; the teardown fails on an alert in the error log."""

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import tempfile

import pytest

from syncd_harness import free_port, wait_for

SOURCE_DIR = os.environ.get("SYNCD_SOURCE_DIR",
                            os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODULE = os.environ.get("SESSION_MODULE_SO") or os.path.join(
    SOURCE_DIR, "build", "nginx", "objs", "ngx_session_module.so")
NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")

# For a test module: pytestmark = nginx_process.requires_module
requires_module = pytest.mark.skipif(not os.path.exists(MODULE) or not os.path.exists(NGINX),
                                     reason="the nginx module is not built")

# Error log levels that fail a test.
FORBIDDEN_LEVELS = ("[alert]", "[emerg]", "[crit]")


class Nginx:
    def __init__(self, prefix, port):
        self.prefix = prefix  # nginx's -p: the config, error.log, www/
        self.port = port

    @property
    def error_log(self):
        return os.path.join(self.prefix, "error.log")

    def log(self):
        with open(self.error_log) as f:
            return f.read()


def _config(prefix, port, redis_port, location, http):
    user = "user root root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
{user}
load_module {MODULE};
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/cb;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    session_redis 127.0.0.1:{redis_port};
    {http}
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location /app/ {{
            {location}
        }}
    }}
}}
"""


@contextlib.contextmanager
def running_nginx(redis_port, location, http="", name="syncd-e2e-nginx-"):
    """nginx serving www/app/index.html ("app\\n") until the block ends.
    `location` is the body of `location /app/`, `http` more directives of the
    http block (after session_redis)."""
    prefix = tempfile.mkdtemp(prefix=name)
    os.makedirs(os.path.join(prefix, "www", "app"))
    with open(os.path.join(prefix, "www", "app", "index.html"), "w") as f:
        f.write("app\n")
    port = free_port()
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(_config(prefix, port, redis_port, location, http))
    server = Nginx(prefix, port)
    proc = subprocess.Popen([NGINX, "-p", prefix + "/", "-c", path, "-e", server.error_log],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            assert proc.poll() is None, server.log()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(up, what="nginx")
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
    log = server.log()
    shutil.rmtree(prefix, ignore_errors=True)
    assert not any(level in log for level in FORBIDDEN_LEVELS), log


def get_app(port, headers, names):
    """GET /app/ with `headers`: the status and the response headers `names`
    (None for one that is absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/app/", headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {name: resp.getheader(name) for name in names}
    finally:
        conn.close()
