"""Real servers for syncd's integration tests: a temporary PostgreSQL
cluster (initdb/pg_ctl as the postgres user), a redis-server and syncd
itself, all on loopback ports chosen at run time."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

PG_BIN = "/usr/lib/postgresql/15/bin"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECOND_SECRET = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
SYNCD_BIN = os.environ.get("SYNCD_BIN", "syncd")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Postgres:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="syncd-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self._as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, argv):
        subprocess.run(["runuser", "-u", "postgres", "--"] + argv, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self):
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c max_connections=200")
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l",
                           os.path.join(self.dir, "log"), "-w", "-o", opts, "start"])

    def stop(self):
        self._as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])

    def close(self):
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql, *params):
        """Rows as lists of strings (None for NULL). Parameters are passed
        as psql variables and quoted by psql (:'name'), never spliced."""
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                "-d", "postgres", "-X", "-q", "-A", "-t", "-F", "\x1f", "-P", "null=\x1e",
                "-v", "ON_ERROR_STOP=1"]
        for i, p in enumerate(params, 1):
            argv += ["-v", f"p{i}={p}"]
        out = subprocess.run(argv, input=sql, capture_output=True, text=True, check=True).stdout
        rows = []
        for line in out.split("\n"):
            if line == "":
                continue
            rows.append([None if f == "\x1e" else f for f in line.split("\x1f")])
        return rows

    def scalar(self, sql, *params):
        rows = self.query(sql, *params)
        return rows[0][0] if rows else None


class Redis:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="syncd-redis-")
        self.port = free_port()
        self.proc = None
        self.start()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis as redis_py
        self.client = redis_py.Redis(host="127.0.0.1", port=self.port, decode_responses=True)

        def up():
            try:
                return self.client.ping()
            except Exception:
                return False
        wait_for(up, what="redis-server")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def sign(secret, msg_id, timestamp, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def new_id(prefix):
    return f"{prefix}_{uuid.uuid4().hex}"


class Syncd:
    def __init__(self, pg, redis, prefix="", secrets=SECRET, extra_env=None, config_file=None):
        self.port = free_port()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SYNCD_LISTEN": f"127.0.0.1:{self.port}",
            "SYNCD_DATABASE_URL": pg.url,
            "SYNCD_REDIS_URL": redis.url,
            "SYNCD_REDIS_PREFIX": prefix,
            "SYNCD_WEBHOOK_SECRETS": secrets,
            "SYNCD_LOG_LEVEL": "debug",
        }
        if extra_env:
            self.env.update(extra_env)
        self.config_file = config_file
        self.prefix = prefix
        self.proc = None
        # In the cluster's directory: removed with it.
        self.log_path = tempfile.mktemp(prefix="syncd-log-", dir=pg.dir)

    def run(self, *args, check=True):
        argv = [SYNCD_BIN] + (["--config", self.config_file] if self.config_file else []) + list(args)
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, check=check,
                              timeout=60)

    def start(self):
        self.run("migrate")
        self.log = open(self.log_path, "a")
        argv = [SYNCD_BIN] + (["--config", self.config_file] if self.config_file else []) + ["serve"]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=self.log)

        def listening():
            assert self.proc.poll() is None, "syncd exited: " + self.read_log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, what="syncd to listen")
        return self

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)
        code = self.proc.returncode if self.proc else None
        self.proc = None
        return code

    def metric(self, name, default=None):
        """The value of one unlabelled sample of GET /metrics; `default` when
        it is absent (None: absent is a failure)."""
        status, text = self.request("GET", "/metrics")
        assert status == 200, text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        if default is not None:
            return default
        raise AssertionError(f"{name} not in /metrics:\n{text}")

    def request(self, method, path, body=b"", headers=None, timeout=20, chunked=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def deliver(self, event_type, data, msg_id=None, secret=SECRET, timestamp=None,
                body=None, headers=None, path="/webhooks/clerk"):
        """Signs and POSTs one event; returns (status, body text, msg id)."""
        msg_id = msg_id or new_id("msg")
        ts = str(int(time.time()) if timestamp is None else timestamp)
        if body is None:
            body = json.dumps({"data": data, "object": "event", "type": event_type,
                               "timestamp": int(time.time() * 1000),
                               "instance_id": "ins_test"}).encode()
        h = {"svix-id": msg_id, "svix-timestamp": ts,
             "svix-signature": sign(secret, msg_id, ts, body),
             "content-type": "application/json"}
        if headers is not None:
            h = headers(h) if callable(headers) else headers
        status, text = self.request("POST", path, body, h)
        return status, text, msg_id


# Clerk payloads, shaped like the real ones (reference/webhooks.md).

def now_ms():
    return int(time.time() * 1000)


def user_data(user_id, updated_at, role=None, email="ada@example.com", banned=False,
              first="Ada", last="Lovelace"):
    return {
        "object": "user", "id": user_id, "first_name": first, "last_name": last,
        "username": "ada", "image_url": "https://img.clerk.com/ada.png",
        "primary_email_address_id": "idn_primary",
        "email_addresses": [
            {"id": "idn_other", "email_address": "other@example.com"},
            {"id": "idn_primary", "email_address": email,
             "verification": {"status": "verified"}}],
        "public_metadata": {"role": role} if role else {},
        "private_metadata": None, "banned": banned, "locked": False,
        "created_at": updated_at - 1000, "updated_at": updated_at,
    }


def session_data(session_id, user_id, status="active", updated_at=None, expire_in_ms=3600_000):
    t = updated_at or now_ms()
    return {
        "object": "session", "id": session_id, "user_id": user_id, "client_id": "client_1",
        "status": status, "expire_at": now_ms() + expire_in_ms,
        "abandon_at": now_ms() + 10 * expire_in_ms, "last_active_at": t,
        "created_at": t - 1000, "updated_at": t,
        "latest_activity": {"ip_address": "192.0.2.7", "city": "London"},
    }


def membership_data(mem_id, user_id, slug="acme", role="org:admin", updated_at=None):
    t = updated_at or now_ms()
    return {
        "object": "organization_membership", "id": mem_id, "role": role,
        "role_name": "Admin", "permissions": ["org:posts:read"],
        "organization": {"id": "org_" + slug, "slug": slug, "name": slug.title()},
        "public_user_data": {"user_id": user_id, "identifier": "ada@example.com"},
        "created_at": t - 1000, "updated_at": t,
    }


def hold_lock(pg, table):
    """A psql session holding an exclusive lock on `table` until release()."""
    holder = subprocess.Popen(["psql", "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                               "-X", "-q"], stdin=subprocess.PIPE, text=True)
    holder.stdin.write(f"BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n")
    holder.stdin.flush()
    wait_for(lambda: pg.scalar("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' "
                               "AND relation = :'p1'::regclass AND granted", table) == "1",
             what=f"the lock on {table}")
    return holder


def release(holder):
    holder.stdin.write("COMMIT;\n")
    holder.stdin.close()
    holder.wait(10)


def waiting_on_lock(pg, application_name):
    return pg.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND application_name = :'p1'", application_name) != "0"
