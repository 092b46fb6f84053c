"""Integration harness: a real redis-server, the stock nginx with the module
loaded, a Python upstream that echoes the request headers it received, and
(only for faults a real Redis cannot produce) a scripted fake Redis peer.

Everything listens on loopback ports chosen at run time and lives in a
temporary directory. Nothing here knows the module's internals: tests talk
to it through nginx.conf, HTTP and the Redis contract (docs/redis-contract.md).
"""

import collections
import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import redis as redis_py

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NGINX_BIN = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
REDIS_BIN = os.environ.get("REDIS_BIN", "/usr/bin/redis-server")
DEFAULT_MODULE = os.path.join(REPO, "build", "nginx", "objs", "ngx_session_module.so")
# Error log level of every nginx the tests start; NGINX_LOG_LEVEL=debug for
# a full trace when investigating a failure (the stock nginx has --with-debug).
LOG_LEVEL = os.environ.get("NGINX_LOG_LEVEL", "info")

# SESSION_TEST_REDIS_TLS=1: every RedisServer speaks TLS only (the test CA of
# tests/topology.py), its clients use TLS, and redis_directive() points the
# module at it with rediss:// and ca=: the same suites then run over TLS.
REDIS_TLS = os.environ.get("SESSION_TEST_REDIS_TLS") == "1"
_TLS_PORTS = set()  # RedisServer ports that speak TLS


def test_pki():
    """tests/topology.py's shared test PKI (made once per run)."""
    tests_dir = os.path.join(REPO, "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)
    import topology  # noqa: E402 - imports this module back
    return topology.shared_pki()


test_pki.__test__ = False  # not a test despite the name

BAD_LOG_LINE = re.compile(r"\[(alert|crit|emerg)\]|exited on signal|AddressSanitizer|runtime error:")


def module_path():
    return os.environ.get("SESSION_MODULE_SO") or DEFAULT_MODULE


_PORTS_GIVEN = set()  # every port free_port() returned in this process


def free_port():
    """A loopback TCP port nobody listens on right now (bind port 0), and
    not one this process was given before: the kernel may hand out the same
    free port twice in a row, and a test that keeps one port closed ("Redis
    is down there") would then find its nginx listening on it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            break
    _PORTS_GIVEN.add(port)
    return port


def later_redis_port():
    """A free port for a RedisServer that a test starts after its nginx:
    redis_directive() then already speaks TLS to it under REDIS_TLS."""
    port = free_port()
    if REDIS_TLS:
        _TLS_PORTS.add(port)
    return port


def wait_until(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Polls `predicate` until it returns a truthy value; the value, or an
    AssertionError after `timeout` seconds (a guard against hangs, not a
    latency assertion)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))
        time.sleep(interval)


def wait_port(port, timeout=10.0, host="127.0.0.1"):
    def connectable():
        with socket.create_connection((host, port), timeout=1):
            return True
    wait_until(connectable, timeout, what="port %d to accept" % port)


def now_ms():
    return int(time.time() * 1000)


# --------------------------------------------------------------------------
# Redis


def terminate(proc, grace=10):
    """SIGTERM, then SIGKILL if the process is still there after `grace` s."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RedisServer:
    """A real redis-server on a free loopback port (and optionally a unix
    socket), no persistence, in its own directory."""

    def __init__(self, workdir, password=None, unix_socket=False, port=None):
        self.dir = os.path.join(workdir, "redis-%d" % id(self))
        os.makedirs(self.dir, exist_ok=True)
        self.password = password
        self.port = port or free_port()
        self.unix_path = os.path.join(self.dir, "redis.sock") if unix_socket else None
        self.proc = None
        self.start()

    def start(self):
        args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--logfile", os.path.join(self.dir, "redis.log"),
                "--daemonize", "no", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        if REDIS_TLS:
            pki = test_pki()
            args[2] = "0"  # no plain TCP port
            args += ["--tls-port", str(self.port), "--tls-cert-file", pki.server_cert,
                     "--tls-key-file", pki.server_key, "--tls-ca-cert-file", pki.ca_cert,
                     "--tls-auth-clients", "no"]
            _TLS_PORTS.add(self.port)
        if self.unix_path:
            args += ["--unixsocket", self.unix_path, "--unixsocketperm", "777"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping, 10, what="redis-server on port %d" % self.port)

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("redis-server exited: %s" % self._log_tail())
        return self.client().ping()

    def _log_tail(self):
        try:
            with open(os.path.join(self.dir, "redis.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def client(self, db=0, **kw):
        """redis-py client (decode_responses); `kw` as redis.Redis takes."""
        if REDIS_TLS:
            kw.update(ssl=True, ssl_ca_certs=test_pki().ca_cert, ssl_cert_reqs="required")
        kw.setdefault("socket_timeout", 10)
        return redis_py.Redis(host="127.0.0.1", port=self.port, db=db,
                              password=self.password, decode_responses=True, **kw)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            terminate(self.proc)
        self.proc = None

    def restart(self):
        self.stop()
        self.start()

    def address(self):
        return "127.0.0.1:%d" % self.port

    def calls(self, *commands):
        """Sum of the `calls` of these commands in INFO commandstats."""
        stats = self.client().info("commandstats")
        total = 0
        for c in commands:
            entry = stats.get("cmdstat_%s" % c.lower())
            if entry:
                total += int(entry["calls"])
        return total


class Monitor:
    """Records every command Redis executes (MONITOR), as raw lines."""

    def __init__(self, server):
        self.lines = []
        self._stop = False
        self._sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        if server.port in _TLS_PORTS:
            context = ssl.create_default_context(cafile=test_pki().ca_cert)
            self._sock = context.wrap_socket(self._sock, server_hostname="127.0.0.1")
        if server.password:
            self._sock.sendall(resp_encode(["AUTH", server.password]))
            self._readline()
        self._sock.sendall(resp_encode(["MONITOR"]))
        assert self._readline().startswith(b"+OK")
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._buf = b""

    def _readline(self):
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = self._sock.recv(1)
            if not chunk:
                break
            data += chunk
        return data

    def _run(self):
        buf = b""
        while not self._stop:
            try:
                chunk = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                self.lines.append(line.decode("utf-8", "replace"))

    def close(self):
        self._stop = True
        self._thread.join(2)
        self._sock.close()

    def text(self):
        return "\n".join(self.lines)


# The fields of <prefix>sess:<id> the JWT overlay reads, in its order
# (kSessionFieldNames in ngx_session_module/core/record.hpp).
SESSION_FIELDS = ("user_id", "expires_at", "status", "idle_timeout", "last_active_at",
                  "token_type")
# The opaque check's one-key read: those, then the copies of the user's
# fields that a contract version 2 writer keeps in the session hash
# (kSessionReadFieldNames).
SESSION_READ_FIELDS = SESSION_FIELDS + ("user_status", "role", "roles", "db_id", "email")
USER_FIELDS = ("role", "roles", "db_id", "email", "status")


def seed_session(r, sid, user_id="user_1", expires_in_ms=3600_000, status=None,
                 idle_timeout=None, last_active_at=None, prefix="", ttl_s=None,
                 token_type=None, **extra):
    fields = {"user_id": user_id, "expires_at": str(now_ms() + expires_in_ms)}
    if user_id is None:
        del fields["user_id"]
    if status is not None:
        fields["status"] = status
    if idle_timeout is not None:
        fields["idle_timeout"] = str(idle_timeout)
    if last_active_at is not None:
        fields["last_active_at"] = str(last_active_at)
    if token_type is not None:
        fields["token_type"] = token_type
    fields.update({k: str(v) for k, v in extra.items()})
    key = "%ssess:%s" % (prefix, sid)
    r.delete(key)
    r.hset(key, mapping=fields)
    if ttl_s:
        r.expire(key, ttl_s)
    return key


def seed_session_v2(r, sid, user_id="user_1", user_status="active", role="member", roles=None,
                    db_id=None, email=None, **kwargs):
    """A session hash as a contract version 2 writer (syncd) writes it: with
    copies of its user's fields, `user_status` for the user's `status`, so
    that the module's check reads this one key and no user hash."""
    copies = {"user_status": user_status, "role": role, "roles": roles, "db_id": db_id,
              "email": email}
    kwargs.update({k: v for k, v in copies.items() if v is not None})
    return seed_session(r, sid, user_id=user_id, **kwargs)


def seed_user(r, user_id="user_1", role="member", roles=None, db_id=None, email=None,
              status=None, prefix=""):
    fields = {}
    if role is not None:
        fields["role"] = role
    if roles is not None:
        fields["roles"] = roles
    if db_id is not None:
        fields["db_id"] = str(db_id)
    if email is not None:
        fields["email"] = email
    if status is not None:
        fields["status"] = status
    key = "%suser:%s" % (prefix, user_id)
    r.delete(key)
    if fields:
        r.hset(key, mapping=fields)
    return key


# --------------------------------------------------------------------------
# RESP, and a scripted fake Redis for faults a real server cannot produce


def resp_encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def resp_bulk(value):
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, str):
        value = value.encode()
    return b"$%d\r\n%s\r\n" % (len(value), value)


def resp_array(items):
    return b"*%d\r\n" % len(items) + b"".join(items)


def _parse_command(buf):
    """One RESP multibulk (or inline) command from buf: (args, rest) or
    (None, buf) when incomplete."""
    if not buf:
        return None, buf
    if buf[:1] != b"*":
        if b"\r\n" not in buf:
            return None, buf
        line, rest = buf.split(b"\r\n", 1)
        return line.split(), rest
    if b"\r\n" not in buf:
        return None, buf
    head, rest = buf.split(b"\r\n", 1)
    n = int(head[1:])
    args = []
    for _ in range(n):
        if b"\r\n" not in rest:
            return None, buf
        h, after = rest.split(b"\r\n", 1)
        size = int(h[1:])
        if len(after) < size + 2:
            return None, buf
        args.append(after[:size])
        rest = after[size + 2:]
    return args, rest


class FakeRedis:
    """A socket server that speaks enough RESP to stall or answer late.

    mode "stall": accepts, reads commands, never answers.
    mode "slow":  answers every command after `delay` seconds: AUTH/SELECT
                  +OK, PING +PONG, SCRIPT LOAD the script's SHA1, HMGET of a
                  sess: key a valid contract version 2 session of user
                  `user_id` (role admin), HMGET of a user: key role admin.
    mode "redis6": answers at once, in order, as "slow" does, but like a Redis
                  before 7: a script with a "#!" flags line does not compile,
                  and EVALSHA of a script never loaded is NOSCRIPT.
    mode "v1_stall_user": answers at once, as "slow" does, but the session
                  hash has no copies of its user's fields (contract version
                  1), and an HMGET of a user: key is never answered.
    """

    def __init__(self, mode="stall", delay=1.0, user_id="user_fake"):
        self.mode = mode
        self.delay = delay
        self.user_id = user_id
        self.commands = []  # every command received, as lists of str
        self.replies_sent = 0
        self.connections = 0
        self.loaded_scripts = set()  # SHA1s, "redis6" mode
        self._subscribers = []  # (connection, channel), answered at once in every mode
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._clients = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def address(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _reply(self, args):
        cmd = args[0].upper() if args else b""
        if cmd in (b"AUTH", b"SELECT", b"CLIENT"):
            return b"+OK\r\n"
        if cmd == b"PING":
            return b"+PONG\r\n"
        old_redis = self.mode == "redis6"
        if cmd == b"SCRIPT" and len(args) > 2:
            if old_redis and args[2].startswith(b"#!"):
                return b"-ERR Error compiling script: user_script:1: unexpected symbol near '#'\r\n"
            sha = hashlib.sha1(args[2]).hexdigest()
            self.loaded_scripts.add(sha)
            return resp_bulk(sha)
        if old_redis and cmd == b"EVALSHA" and args[1].decode("latin-1") not in self.loaded_scripts:
            return b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
        if old_redis and cmd == b"EVAL" and args[1].startswith(b"#!"):
            return b"-ERR Error compiling script: user_script:1: unexpected symbol near '#'\r\n"
        if cmd == b"HMGET" and len(args) > 2:
            key = args[1].decode("latin-1")
            if "sess:" in key:
                values = {"user_id": self.user_id, "expires_at": str(now_ms() + 3600_000),
                          "user_status": "active", "role": "admin"}
                if self.mode == "v1_stall_user":
                    del values["user_status"]
            else:
                values = {"role": "admin"}
            return resp_array([resp_bulk(values.get(f.decode("latin-1"))) for f in args[2:]])
        return b"-ERR fake redis does not know %s\r\n" % cmd

    def _serve(self, conn):
        buf = b""
        previous = None  # the Event of this connection's last delayed reply
        while not self._stop:
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while True:
                args, buf = _parse_command(buf)
                if args is None:
                    break
                with self._lock:
                    self.commands.append([a.decode("latin-1") for a in args])
                if args and args[0].upper() == b"SUBSCRIBE" and len(args) > 1:
                    with self._lock:
                        self._subscribers.append((conn, args[1]))
                    self._send(conn, resp_array([resp_bulk("subscribe"), resp_bulk(args[1]),
                                                 b":1\r\n"]))
                elif self.mode == "slow":
                    # Redis answers in order: each delayed reply waits for
                    # the one before it (two timers due together may fire
                    # in either order).
                    previous = self._send_later(conn, self._reply(args), previous)
                elif self.mode == "redis6":
                    self._send(conn, self._reply(args))
                elif self.mode == "v1_stall_user":
                    if not (args[0].upper() == b"HMGET" and b"user:" in args[1]):
                        self._send(conn, self._reply(args))

    def _send_later(self, conn, data, previous):
        sent = threading.Event()

        def send():
            if previous is not None:
                previous.wait(30)
            self._send(conn, data)
            sent.set()
        threading.Timer(self.delay, send).start()
        return sent

    def _send(self, conn, data):
        try:
            conn.sendall(data)
            with self._lock:
                self.replies_sent += 1
        except OSError:
            pass

    def subscribers(self):
        with self._lock:
            return [channel.decode("latin-1") for _, channel in self._subscribers]

    def publish(self, channel, message):
        """Delivers a message to the connections subscribed to channel."""
        frame = resp_array([resp_bulk("message"), resp_bulk(channel), resp_bulk(message)])
        with self._lock:
            conns = [c for c, ch in self._subscribers if ch.decode("latin-1") == channel]
        for c in conns:
            self._send(c, frame)
        return len(conns)

    def saw(self, *names):
        with self._lock:
            return [c for c in self.commands if c and c[0].upper() in names]

    def close(self):
        self._stop = True
        self._sock.close()
        with self._lock:
            for c in self._clients:
                try:
                    c.close()
                except OSError:
                    pass


# --------------------------------------------------------------------------
# Upstream


class _EchoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
        }
        self.server.owner.record(seen)
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


class _ThreadingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Upstream:
    """HTTP/1.1 server answering 200 with a JSON echo of the request."""

    def __init__(self):
        self.server = _ThreadingServer(("127.0.0.1", 0), _EchoHandler)
        self.server.owner = self
        self.port = self.server.server_address[1]
        self.requests = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def record(self, seen):
        with self._lock:
            self.requests.append(seen)

    def reset(self):
        with self._lock:
            self.requests = []

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# HTTP client


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def upstream_headers(self, name):
        """Values of `name` in the request the upstream echoed."""
        return [v for k, v in self.json()["headers"] if k.lower() == name.lower()]

    def upstream_header(self, name):
        values = self.upstream_headers(name)
        assert len(values) <= 1, "upstream saw %s %d times: %r" % (name, len(values), values)
        return values[0] if values else None

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:300])


Sent = collections.namedtuple("Sent", "started ended token status")


class Load:
    """A thread that sends one request after the other, with the session
    cookie of each of `tokens` in turn, until stopped: [Sent]."""

    def __init__(self, n, tokens, path="/app/"):
        self.n, self.path = n, path
        self.tokens = [tokens] if isinstance(tokens, str) else list(tokens)
        self.results = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        i = 0
        while not self._stop.is_set():
            token = self.tokens[i % len(self.tokens)]
            i += 1
            started = time.monotonic()
            status = request(self.n.port, self.path, headers=cookie(token)).status
            self.results.append(Sent(started, time.monotonic(), token, status))

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the load thread hangs"
        return self.results


def request(port, path="/", method="GET", headers=None, body=None, timeout=15):
    """One request on a fresh connection. `headers` may be a dict or a list
    of pairs (to repeat a header)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        items = list(headers.items() if isinstance(headers, dict) else (headers or []))
        conn.putrequest(method, path, skip_accept_encoding=True,
                        skip_host=any(k.lower() == "host" for k, _ in items))
        for k, v in items:
            conn.putheader(k, v)
        if body is not None:
            if isinstance(body, str):
                body = body.encode()
            conn.putheader("Content-Length", str(len(body)))
        conn.putheader("Connection", "close")
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, resp.getheaders(), data.decode("latin-1"))
    finally:
        conn.close()


# --------------------------------------------------------------------------
# nginx


def conf_text(tmp, port, upstream_port, http="", server="", main="", events="",
              module=True, workers=1, master=True, listen_extra="", error_log_level=None,
              session_log=None):
    """A whole nginx.conf: the directives a test passes, inside a skeleton
    that keeps every path in `tmp`. "@TMP@" in http, server or main stands
    for that directory."""
    http, server, main = (x.replace("@TMP@", tmp) for x in (http, server, main))
    lines = [
        "daemon off;",
        "master_process %s;" % ("on" if master else "off"),
        "worker_processes %d;" % workers,
        "pid %s/nginx.pid;" % tmp,
        "lock_file %s/nginx.lock;" % tmp,
        "error_log %s/error.log %s;" % (tmp, error_log_level or LOG_LEVEL),
    ]
    if os.geteuid() == 0:
        lines.append("user root root;")
    if module:
        lines.append("load_module %s;" % module_path())
    lines.append(main)
    lines.append("events { worker_connections 512; %s }" % events)
    if session_log is None:
        session_log = module
    log = ""
    if session_log:
        # $session_status of every request, to assert outcomes nginx only logs
        log = ("log_format session_t '$status|$session_status|$session_user_id|$request_uri';\n"
               "    access_log %s/session.log session_t;" % tmp)
    lines.append("""http {
    access_log %(tmp)s/access.log;
    %(log)s
    client_body_temp_path %(tmp)s/client_body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    upstream app { server 127.0.0.1:%(up)d; }
%(http)s
    server {
        listen 127.0.0.1:%(port)d %(listen_extra)s;
%(server)s
    }
}
""" % {"tmp": tmp, "up": upstream_port, "http": http, "port": port, "server": server,
       "listen_extra": listen_extra, "log": log})
    return "\n".join(lines)


def nginx_t_conf(http="", server="", location="", redis="session_redis 127.0.0.1:6379;"):
    """A small whole configuration for `nginx -t` cases: the module, one
    server and a location /app/ holding `location`. "@TMP@" stands for the
    directory nginx_test_config runs in."""
    return """
load_module %(so)s;
error_log stderr;
pid @TMP@/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    %(redis)s
    %(http)s
    server {
        listen 127.0.0.1:1;
        %(server)s
        location /app/ {
            %(location)s
            return 200;
        }
    }
}
""" % {"so": module_path(), "redis": redis, "http": http, "server": server,
       "location": location}


def nginx_test_config(text, workdir=None):
    """Runs `nginx -t` on a configuration text: (returncode, output)."""
    tmp = workdir or tempfile.mkdtemp(prefix="ngx-t-")
    path = os.path.join(tmp, "nginx-t.conf")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([NGINX_BIN, "-t", "-p", tmp + "/", "-c", path, "-e", os.path.join(tmp, "error-t.log")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return p.returncode, p.stdout.decode("utf-8", "replace")


class Nginx:
    """The stock nginx with a test's configuration, in the foreground
    (daemon off) so that the harness owns the master process."""

    def __init__(self, workdir, upstream_port, wrapper=None, **conf):
        self.tmp = workdir
        self.port = conf.pop("port", None) or free_port()
        self.upstream_port = upstream_port
        self.conf_kwargs = conf
        self.conf_path = os.path.join(self.tmp, "nginx.conf")
        self.error_log = os.path.join(self.tmp, "error.log")
        self.access_log = os.path.join(self.tmp, "access.log")
        self.wrapper = wrapper or []
        # Substrings of [alert]/[emerg] lines a test provokes on purpose.
        self.expected_bad_lines = []
        self.proc = None
        self.requests_sent = 0
        self.write_conf(**conf)

    def write_conf(self, **conf):
        text = conf_text(self.tmp, self.port, self.upstream_port, **conf)
        with open(self.conf_path, "w") as f:
            f.write(text)
        return text

    def check_config(self):
        p = subprocess.run([NGINX_BIN, "-t", "-p", self.tmp + "/", "-c", self.conf_path,
                            "-e", os.path.join(self.tmp, "error-t.log")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def start(self, timeout=15):
        rc, out = self.check_config()
        assert rc == 0, "nginx -t failed:\n%s\n--- config ---\n%s" % (out, open(self.conf_path).read())
        self._stderr = open(os.path.join(self.tmp, "nginx.stderr"), "ab")
        self.proc = subprocess.Popen(self.wrapper + [NGINX_BIN, "-p", self.tmp + "/", "-c", self.conf_path,
                                                     "-e", self.error_log],
                                     stdout=self._stderr, stderr=self._stderr)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited with %s:\n%s" % (self.proc.returncode, self.log_tail()))
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        wait_until(up, timeout, what="nginx on port %d" % self.port)
        return self

    @property
    def master_pid(self):
        return self.proc.pid

    def worker_pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.master_pid)],
                             stdout=subprocess.PIPE).stdout.decode()
        return sorted(int(x) for x in out.split())

    def reload(self):
        os.kill(self.master_pid, signal.SIGHUP)

    def stop(self, sig=signal.SIGQUIT, timeout=10):
        """Stops nginx; True when it exited on `sig` within `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return True
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            terminate(self.proc)
            return False
        finally:
            self._stderr.close()

    def log(self):
        try:
            with open(self.error_log, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def bad_log_lines(self):
        return [l for l in self.log().splitlines() if BAD_LOG_LINE.search(l)
                and not any(expected in l for expected in self.expected_bad_lines)]

    def access_lines(self):
        try:
            with open(self.access_log) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def session_log(self):
        """[(status, session_status, user_id, request_uri)] from session.log."""
        try:
            with open(os.path.join(self.tmp, "session.log")) as f:
                return [tuple(l.split("|", 3)) for l in f.read().splitlines()]
        except OSError:
            return []

    def last_session_status(self, uri=None):
        """$session_status logged for the last request (to `uri`)."""
        def find():
            log = self.session_log()
            # the log phase runs after the response went out: wait for the
            # line of every request made through get()
            if len(log) < self.requests_sent:
                return None
            for entry in reversed(log):
                if uri is None or entry[3] == uri:
                    return entry
            return None
        entry = wait_until(find, 5, what="session.log entry")
        return entry[1]

    def get(self, path="/", **kw):
        self.requests_sent += 1
        return request(self.port, path, **kw)


# --------------------------------------------------------------------------
# Metrics


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.eE+-]+|\+Inf|NaN)$')


def parse_metrics(text):
    """Prometheus text -> ({(name, labels): value}, {name: type})."""
    values, types = {}, {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind.strip()
            continue
        if line.startswith("#"):
            continue
        m = METRIC_LINE.match(line)
        assert m, "not a Prometheus sample line: %r" % line
        values[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return values, types


def metric(values, name, labels=""):
    return values.get((name, labels), 0.0)


# --------------------------------------------------------------------------
# Configuration snippets shared by the tests (each test still writes its own
# nginx.conf from them)

# Every session variable, sent to the upstream so tests can assert it.
SESSION_HEADERS = """
            proxy_set_header X-Session-Id     $session_id;
            proxy_set_header X-User-Id        $session_user_id;
            proxy_set_header X-User-Db-Id     $session_user_db_id;
            proxy_set_header X-User-Role      $session_user_role;
            proxy_set_header X-User-Roles     $session_user_roles;
            proxy_set_header X-User-Email     $session_user_email;
            proxy_set_header X-Session-Status $session_status;"""


def redis_directive(address, params="timeout=1s connect_timeout=1s"):
    host, _, port = address.rpartition(":")
    if REDIS_TLS and not address.startswith("unix:") and port.isdigit() and int(port) in _TLS_PORTS:
        address = "rediss://%s ca=%s" % (address, test_pki().ca_cert)
    return "session_redis %s %s;" % (address, params)


def app_location(path="/app/", directives="", token="cookie=sessionId bearer", headers=True):
    return """
        location %s {
            session_check on;
            session_token %s;
            %s
            %s
            proxy_pass http://app;
        }""" % (path, token, directives, SESSION_HEADERS if headers else "")


METRICS_LOCATION = "\n        location = /metrics { session_metrics; }"


def cookie(token, name="sessionId"):
    return {"Cookie": "%s=%s" % (name, token)}


def bearer(token):
    return {"Authorization": "Bearer %s" % token}
