#!/usr/bin/env python3
"""What one `user <id>` revocation message costs with a full cache.

Fills a session_cache_zone with BENCH_REVOKE_SESSIONS (200k) opaque sessions
through nginx (wrk, distinct cookies, each a Redis lookup then cached), then
publishes users' revocations on the revocation channel and reports:

- microseconds of the subscribing worker's CPU per revocation
  (/proc/<pid>/stat utime+stime, over the whole burst, divided by its count);
- the wall time until the burst is applied (a sentinel revocation published
  last is seen to land), per revocation;
- the worst stall: the slowest of a probe's cached requests sent one after
  another on one keep-alive connection during the burst, against its slowest
  before the burst. With one worker, a revocation that holds the worker (or
  the zone's lock) shows here.

Usage: bench/cache_revocation.py [MODULE_SO ...]
  default: build/nginx/objs/ngx_session_module.so. Several modules are run
  one after another (e.g. before/after a change) against the same Redis.
Environment: BENCH_REVOKE_SESSIONS=200000, BENCH_REVOKE_PER_USER=5 (sessions
per user), BENCH_REVOKE_USERS=2000 (revocations per burst; capped at a
quarter of the users), BENCH_REVOKE_ZONE=256m, NGINX=/usr/sbin/nginx.
Measurements, not assertions: nothing here fails on a slow figure.
"""

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = os.environ.get("NGINX", "/usr/sbin/nginx")
SESSIONS = int(os.environ.get("BENCH_REVOKE_SESSIONS", "200000"))
PER_USER = int(os.environ.get("BENCH_REVOKE_PER_USER", "5"))
BURST = int(os.environ.get("BENCH_REVOKE_USERS", "2000"))
ZONE = os.environ.get("BENCH_REVOKE_ZONE", "256m")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHANNEL = "session:revocations"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    sys.exit("cache_revocation: timed out waiting for %s" % what)


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def worker_pid(master):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], stdout=subprocess.PIPE,
                         check=True).stdout.split()
    return int(out[0])


def seed(r):
    expires = str(int(time.time() * 1000) + 6 * 3600_000)
    pipe = r.pipeline(transaction=False)
    for i in range(SESSIONS):
        pipe.hset("sess:rv_%d" % i, mapping={"user_id": "user_%d" % (i // PER_USER),
                                             "expires_at": expires, "status": "active"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.hset("sess:rv_sentinel", mapping={"user_id": "user_sentinel", "expires_at": expires})


NGINX_CONF = """
load_module %(module)s;
daemon off;
worker_processes 1;
error_log %(dir)s/error.log notice;
pid %(dir)s/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    session_redis 127.0.0.1:%(redis_port)d timeout=1s connect_timeout=1s;
    session_cache_zone sessions:%(zone)s ttl=6h;
    client_body_temp_path %(dir)s/tmp;
    proxy_temp_path %(dir)s/tmp;
    fastcgi_temp_path %(dir)s/tmp;
    uwsgi_temp_path %(dir)s/tmp;
    scgi_temp_path %(dir)s/tmp;
    server {
        listen 127.0.0.1:%(port)d;
        location /app/ {
            session_check on;
            session_token cookie=sessionId;
            session_cache sessions;
            empty_gif;
        }
        location /metrics { session_metrics; }
    }
}
"""

WRK_FILL = """
local next_thread = 0
function setup(thread)
  thread:set("first", next_thread)
  next_thread = next_thread + 1
end
function init(args)
  i = first
  step = tonumber(os.getenv("FILL_THREADS"))
  n = tonumber(os.getenv("FILL_N"))
end
function request()
  local sid = i %% n
  i = i + step
  return wrk.format("GET", "/app/", {["Cookie"] = "sessionId=rv_" .. sid})
end
"""


def get(port, sid, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/app/", headers={"Cookie": "sessionId=" + sid})
    resp = c.getresponse()
    resp.read()
    if conn is None:
        c.close()
    return resp.status


def misses(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    body = c.getresponse().read().decode()
    c.close()
    for line in body.splitlines():
        if line.startswith("nginx_session_cache_misses_total "):
            return int(float(line.split()[1]))
    return 0


class Probe(threading.Thread):
    """Cached requests one after another; the slowest, in a window."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.worst = 0.0
        self.count = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            get(0, "rv_probe", self.conn)
            self.worst = max(self.worst, time.perf_counter() - t)
            self.count += 1
            time.sleep(0.002)

    def window(self):
        self.worst, self.count = 0.0, 0


def run(module, redis_port, r, tmp):
    d = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
    os.makedirs(os.path.join(d, "tmp"))
    port = free_port()
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF % dict(module=module, dir=d, redis_port=redis_port, zone=ZONE,
                                  port=port))
    master = subprocess.Popen([NGINX, "-p", d + "/", "-c", os.path.join(d, "nginx.conf"),
                               "-e", os.path.join(d, "error.log")])
    try:
        wait_for(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
                 15, "nginx")
        worker = worker_pid(master.pid)
        wait_for(lambda: r.pubsub_numsub(CHANNEL)[0][1] > 0, 15, "the module's subscription")

        # Fill: every session once (a miss, then cached for 6 h).
        script = os.path.join(d, "fill.lua")
        with open(script, "w") as f:
            f.write(WRK_FILL % ())
        env = dict(os.environ, FILL_N=str(SESSIONS), FILL_THREADS="2")
        t0 = time.monotonic()
        while misses(port) < SESSIONS:
            # wrk runs for a duration: a run past the last session only hits.
            subprocess.run(["wrk", "-t2", "-c16", "-d10s", "-s", script,
                            "http://127.0.0.1:%d/app/" % port], env=env,
                           stdout=subprocess.DEVNULL, check=True)
        fill_s = time.monotonic() - t0
        r.hset("sess:rv_probe", mapping={"user_id": "user_probe",
                                         "expires_at": str(int(time.time() * 1000) + 3600_000)})
        assert get(port, "rv_probe") == 200 and get(port, "rv_sentinel") == 200
        r.delete("sess:rv_sentinel")  # cached: only its revocation makes it 401

        probe = Probe(port)
        probe.start()
        time.sleep(1.0)
        idle_worst = probe.worst
        users = random.Random(1).sample(range(SESSIONS // PER_USER),
                                        min(BURST, SESSIONS // PER_USER // 4))
        probe.window()
        before = cpu_ticks(worker)
        t = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for u in users:
            pipe.publish(CHANNEL, "user user_%d" % u)
        pipe.publish(CHANNEL, "session rv_sentinel")
        pipe.execute()
        while get(port, "rv_sentinel") != 401:
            time.sleep(0.001)
        wall = time.perf_counter() - t
        ticks = cpu_ticks(worker) - before
        burst_worst = probe.worst
        probe.stop.set()
        probe.join()
        n = len(users)
        # The user's sessions are gone from the cache: a request asks Redis.
        m0 = misses(port)
        get(port, "rv_%d" % (users[0] * PER_USER))
        dropped = misses(port) == m0 + 1
        return dict(module=module, fill_s=fill_s, n=n, cpu_us=ticks / CLK_TCK / n * 1e6,
                    wall_us=wall / n * 1e6, wall_s=wall, idle_worst_ms=idle_worst * 1e3,
                    burst_worst_ms=burst_worst * 1e3, dropped=dropped)
    finally:
        master.send_signal(signal.SIGQUIT)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()


def main():
    modules = sys.argv[1:] or [os.path.join(ROOT, "build/nginx/objs/ngx_session_module.so")]
    tmp = tempfile.mkdtemp(prefix="bench-revocation-")
    redis_port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", tmp],
                           stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=redis_port)
        wait_for(r.ping, 10, "redis-server")
        seed(r)
        results = [run(os.path.abspath(m), redis_port, r, tmp) for m in modules]
    finally:
        srv.terminate()
        srv.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n%d cached sessions (%d per user), zone %s; bursts of `user <id>` messages"
          % (SESSIONS, PER_USER, ZONE))
    print("| module | revocations | CPU us / revocation | wall us / revocation | burst wall s "
          "| worst probe ms (idle -> burst) | user's entries dropped |")
    print("|---|---|---|---|---|---|---|")
    for x in results:
        print("| %s | %d | %.1f | %.1f | %.2f | %.1f -> %.1f | %s |"
              % (x["module"], x["n"], x["cpu_us"], x["wall_us"], x["wall_s"], x["idle_worst_ms"],
                 x["burst_worst_ms"], "yes" if x["dropped"] else "NO"))


if __name__ == "__main__":
    main()
