"""Throwaway Redis topologies as they are deployed, for both integration
suites (tests/integration and tests/syncd/integration): a test PKI made with
the openssl CLI, redis-server over TLS (optionally mutual) with ACL users,
a Sentinel group (primary, replica, three sentinels) that can be made to
fail over, and a Redis Cluster (three primaries, optional replicas) that can
be resharded or have a slot held half-migrated (ASK).

Only Debian 12 packages: redis-server 7.0 (redis-sentinel is redis-server
--sentinel), redis-cli, openssl, python3-redis 4.3. Every process listens on
127.0.0.1 on ports chosen at run time, runs as the current user, and is
stopped by close() (every class is a context manager), at interpreter exit
(atexit) or, if pytest itself is killed, by the kernel (PR_SET_PDEATHSIG).

In a pytest fixture:

    @pytest.fixture(scope="module")
    def sentinels(request, tmp_path_factory):
        yield from topology.managed(request, topology.SentinelGroup(
            str(tmp_path_factory.mktemp("sentinel")), pki=topology.shared_pki()))

managed() prints every server's log tail in teardown when a test of the
scope failed.
"""

import atexit
import ctypes
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse

import redis as redis_py
import redis.cluster as redis_cluster

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_harness():
    """tests/integration/harness.py, whichever suite imports us: the
    integration suite has it on sys.path as `harness` (reuse that module so
    there is one copy); syncd's suite does not, so load it by path."""
    path = os.path.join(_HERE, "integration", "harness.py")
    loaded = sys.modules.get("harness")
    if loaded is not None and os.path.abspath(getattr(loaded, "__file__", "")) == path:
        return loaded
    spec = importlib.util.spec_from_file_location("session_integration_harness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_harness = _load_harness()
free_port = _harness.free_port
wait_until = _harness.wait_until
terminate = _harness.terminate
REDIS_BIN = _harness.REDIS_BIN
REDIS_CLI = os.environ.get("REDIS_CLI", "/usr/bin/redis-cli")
OPENSSL = os.environ.get("OPENSSL_BIN", "/usr/bin/openssl")
HOST = "127.0.0.1"
# In a config line, replaced by a port chosen when the file is written.
FREE_PORT = object()
_NODE_PORT = object()  # the node's own port, in its config lines


def listen_port():
    """A free loopback port below the kernel's ephemeral range, so that no
    outgoing connection (cluster bus, replication, redis-cli) can take it
    between this choice and the server's bind; harness.free_port() when none
    is found. A race with another process choosing the same port remains:
    RedisNode.start() retries on "Address already in use"."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(50):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        return port
    return free_port()

# --------------------------------------------------------------------------
# Process hygiene

_LIVE = set()  # every RedisNode whose process may be running
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    # A ctest timeout SIGKILLs pytest; atexit never runs then, and a
    # redis-server left behind would hold its port and CPU forever.
    # (The signal follows the thread that forked: start servers from the
    # main thread, as fixtures do.)
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _stop_leftovers():
    for node in list(_LIVE):
        node.stop(grace=2)


# --------------------------------------------------------------------------
# PKI


class TestPki:
    """Paths of a throwaway PKI (PEM files). EC P-256, two days' validity.

    ca_cert/ca_key          the test CA
    server_cert/server_key  signed by it; SAN IP:127.0.0.1, DNS:localhost,
                            DNS:redis.test; serverAuth and clientAuth (Redis
                            presents it as a client too: replication, the
                            cluster bus, sentinels)
    client_cert/client_key  signed by it; clientAuth (mutual TLS)
    other_ca_cert/other_ca_key  an unrelated CA (the "wrong CA")
    other_client_cert/other_client_key  a client cert signed by the other CA
    """

    __test__ = False  # not a pytest test class despite the name

    NAMES = ("ca", "server", "client", "other_ca", "other_client")

    def __init__(self, directory):
        self.dir = directory
        for name in self.NAMES:
            setattr(self, name + "_cert", os.path.join(directory, name + ".crt"))
            setattr(self, name + "_key", os.path.join(directory, name + ".key"))

    def complete(self):
        return all(os.path.exists(getattr(self, n + "_cert")) for n in self.NAMES)


def _openssl(*args, cwd):
    done = subprocess.run([OPENSSL] + list(args), cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], done.stdout))


def _make_ca(d, name, subject):
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-out", name + ".crt", "-days", "2",
             "-subj", subject,
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _make_leaf(d, name, ca, subject, extensions):
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(extensions)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject, cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
             "-CAcreateserial", "-days", "2", "-extfile", name + ".ext",
             "-out", name + ".crt", cwd=d)


_PKI_CACHE = {}


def make_test_pki(directory):
    """Creates (once per directory and process: later calls return the same
    object, and files already there are reused) the test PKI in
    `directory`."""
    directory = os.path.abspath(directory)
    cached = _PKI_CACHE.get(directory)
    if cached is not None:
        return cached
    pki = TestPki(directory)
    if not pki.complete():
        os.makedirs(directory, exist_ok=True)
        _make_ca(directory, "ca", "/CN=ngx-session test CA")
        _make_ca(directory, "other_ca", "/CN=unrelated test CA")
        _make_leaf(directory, "server", "ca", "/CN=redis.test",
                   "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\n")
        client_ext = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                      "extendedKeyUsage=clientAuth\n")
        _make_leaf(directory, "client", "ca", "/CN=test client", client_ext)
        _make_leaf(directory, "other_client", "other_ca", "/CN=stranger", client_ext)
        # Test keys only: readable by whatever user a server under test
        # drops to (nginx workers, syncd under runuser).
        for name in os.listdir(directory):
            os.chmod(os.path.join(directory, name), 0o644)
    _PKI_CACHE[directory] = pki
    return pki


_SHARED_PKI_DIR = None


def shared_pki():
    """One PKI per process (a pytest run) in a temporary directory removed
    at exit: the cheap default for fixtures."""
    global _SHARED_PKI_DIR
    if _SHARED_PKI_DIR is None:
        _SHARED_PKI_DIR = tempfile.mkdtemp(prefix="redis-pki-")
        atexit.register(shutil.rmtree, _SHARED_PKI_DIR, True)
    return make_test_pki(_SHARED_PKI_DIR)


# --------------------------------------------------------------------------
# One server


def _quote(value):
    """A value for redis.conf (sdssplitargs): quoted when it is empty or
    holds a space, a quote or a backslash."""
    value = str(value)
    if value and not any(c in value for c in ' "\\\'\t'):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


class RedisNode:
    """One redis-server (or, with sentinel=True, a sentinel) on 127.0.0.1.

    pki                 a TestPki: TLS only (`port 0`, `tls-port`), else
                        plain TCP
    mutual_tls          `tls-auth-clients yes` (else no)
    password            `requirepass` (the default user's password)
    users               {name: password}: ACL users with every right
                        (`user <name> on ><password> ~* &* +@all`)
    acl                 further raw `user` rules, e.g. "ro on >pw ~* +get"
    disable_default_user  `user default off` (a managed service's habit)
    config              extra redis.conf lines: sequences of words
    As a client, client() and cli() use the first of `users` when the default
    user is disabled, else the default user with `password`.
    """

    def __init__(self, workdir, *, pki=None, mutual_tls=False, password=None, users=None,
                 acl=(), disable_default_user=False, config=(), sentinel=False, name="redis",
                 start=True):
        self.dir = tempfile.mkdtemp(prefix=name + "-", dir=workdir)
        self.pki = pki
        self.tls = pki is not None
        self.mutual_tls = mutual_tls
        self.sentinel = sentinel
        self.port = listen_port()
        self.host = HOST
        self.users = dict(users or {})
        self.username, self.password = None, password
        if disable_default_user:
            if not self.users:
                raise ValueError("disable_default_user needs at least one of users")
            self.username, self.password = next(iter(self.users.items()))
        self.log_path = os.path.join(self.dir, "redis.log")
        self.conf_path = os.path.join(self.dir, "sentinel.conf" if sentinel else "redis.conf")
        self.node_id = None  # a cluster sets it
        self.proc = None
        self._paused = False
        self._sleeper = None  # the client that sent DEBUG SLEEP
        lines = [("bind", HOST), ("dir", self.dir), ("logfile", self.log_path),
                 ("daemonize", "no"), ("protected-mode", "no")]
        if not sentinel:
            lines += [("save", ""), ("appendonly", "no"),
                      # A replica's first sync would wait 5 s for others.
                      ("repl-diskless-sync-delay", 0),
                      # DEBUG SLEEP is one of the ways to fail a primary.
                      ("enable-debug-command", "local")]
        if self.tls:
            lines += [("port", 0), ("tls-port", _NODE_PORT), ("tls-cert-file", pki.server_cert),
                      ("tls-key-file", pki.server_key), ("tls-ca-cert-file", pki.ca_cert),
                      ("tls-auth-clients", "yes" if mutual_tls else "no"),
                      # Replication, sentinel links and MIGRATE speak TLS
                      # too: a TLS-only server has no plain port to reach.
                      ("tls-replication", "yes")]
        else:
            lines.append(("port", _NODE_PORT))
        if password is not None:
            lines.append(("requirepass", password))
        for user, secret in self.users.items():
            lines.append(("user", user, "on", ">" + secret, "~*", "&*", "+@all"))
        for rule in acl:
            lines.append(("user",) + tuple(rule.split()))
        if disable_default_user:
            lines.append(("user", "default", "off"))
        self._lines = lines + [tuple(line) for line in config]
        if start:
            self.start()

    # -- lifecycle

    def _write_conf(self):
        with open(self.conf_path, "w") as f:
            for line in self._lines:
                words = [listen_port() if w is FREE_PORT else self.port if w is _NODE_PORT else w
                         for w in line]
                f.write(" ".join(_quote(w) for w in words) + "\n")

    def spawn(self):
        self._write_conf()
        args = [REDIS_BIN, self.conf_path] + (["--sentinel"] if self.sentinel else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        self._paused = False
        _LIVE.add(self)

    def wait_ready(self, timeout=15, attempts=3):
        """Until it answers PING. A port taken since it was chosen (the log
        says "Address already in use") is chosen again, `attempts` times:
        call this before anything else knows the node's port."""
        for attempt in range(attempts):
            try:
                wait_until(self._ping, timeout,
                           what="%s on port %d" % (self.describe(), self.port))
                return
            except AssertionError:
                if self.proc.poll() is None or "Address already in use" not in self.log_tail():
                    raise
                if attempt == attempts - 1:
                    raise
            self.port = listen_port()
            os.replace(self.log_path, self.log_path + ".%d" % attempt)
            self.spawn()

    def start(self, timeout=15):
        self.spawn()
        self.wait_ready(timeout)
        return self

    def _ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited: %s" % (self.describe(), self.log_tail()))
        with self.client(socket_timeout=2) as c:
            return c.ping()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None and not self._paused

    def kill(self, sig=signal.SIGKILL):
        """SIGKILL (a crash) by default; SIGSTOP freezes it (the kernel still
        accepts connections, nothing answers) until resume()."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self._paused = True
        elif sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(10)
            _LIVE.discard(self)

    def resume(self):
        if self.proc is not None and self._paused:
            self.proc.send_signal(signal.SIGCONT)
            self._paused = False

    def sleep(self, seconds):
        """DEBUG SLEEP: the server blocks for `seconds` then carries on (a
        stall, not a crash). Returns at once."""
        c = self.client()
        conn = c.connection_pool.get_connection("DEBUG")
        conn.send_command("DEBUG", "SLEEP", str(seconds))
        self._sleeper = c  # the reply is never read; closed on stop

    def stop(self, grace=10):
        if self._sleeper is not None:
            self._sleeper.close()
            self._sleeper = None
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            terminate(self.proc, grace)
        self.proc = None
        self._paused = False
        _LIVE.discard(self)

    # -- clients

    def address(self):
        return "%s:%d" % (self.host, self.port)

    def url(self, db=None, credentials=True):
        """redis://[user:password@]127.0.0.1:port[/db], rediss:// over TLS."""
        auth = _userinfo(self.username, self.password) if credentials else ""
        return "%s://%s%s%s" % ("rediss" if self.tls else "redis", auth, self.address(),
                                "" if db is None else "/%d" % db)

    def tls_kwargs(self, ca=None, cert=None, key=None):
        """redis-py keyword arguments for TLS to this server: the test CA, and
        under mutual TLS the client certificate, unless overridden
        (cert=False for none)."""
        if not self.tls:
            return {}
        kw = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": ca or self.pki.ca_cert}
        if cert is None and self.mutual_tls:
            cert, key = self.pki.client_cert, self.pki.client_key
        if cert:
            kw["ssl_certfile"], kw["ssl_keyfile"] = cert, key
        return kw

    def client(self, username=None, password=None, ca=None, cert=None, key=None, **kw):
        """redis-py client (decode_responses); credentials default to the
        node's (see the class comment)."""
        if username is None and password is None:
            username, password = self.username, self.password
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("decode_responses", True)
        return redis_py.Redis(host=self.host, port=self.port, username=username,
                              password=password, **self.tls_kwargs(ca, cert, key), **kw)

    def cli_args(self):
        """redis-cli's connection options for this server."""
        args = [REDIS_CLI, "-h", self.host, "-p", str(self.port)]
        if self.tls:
            args += ["--tls", "--cacert", self.pki.ca_cert]
            if self.mutual_tls:
                args += ["--cert", self.pki.client_cert, "--key", self.pki.client_key]
        if self.username:
            args += ["--user", self.username]
        if self.password is not None:
            args += ["--pass", self.password, "--no-auth-warning"]
        return args

    def cli(self, *args, timeout=60):
        """Runs redis-cli against this server; its stdout (raises on failure)."""
        done = subprocess.run(self.cli_args() + [str(a) for a in args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError("redis-cli %s failed (%d): %s"
                               % (" ".join(map(str, args)), done.returncode, done.stdout))
        return done.stdout

    def role(self):
        with self.client(socket_timeout=2) as c:
            return c.execute_command("ROLE")[0]

    # -- diagnostics

    def describe(self):
        return "%s %s" % ("redis-sentinel" if self.sentinel else "redis-server", self.address())

    def log_tail(self, size=3000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-size:]
        except OSError:
            return ""


def TlsRedisServer(workdir, pki, **kw):  # noqa: N802 - reads as a class at call sites
    """redis-server over TLS only (see RedisNode for the options)."""
    return RedisNode(workdir, pki=pki, **kw)


class _Topology:
    """Shared lifecycle: a work directory (removed on close when we made
    it), every node stopped on close or on a failed start."""

    def __init__(self, workdir, prefix):
        self._own_dir = workdir is None
        self.dir = tempfile.mkdtemp(prefix=prefix) if workdir is None else workdir
        os.makedirs(self.dir, exist_ok=True)
        self.all_nodes = []

    def _start(self, nodes):
        self.all_nodes += nodes
        for n in nodes:  # all at once, then wait: start-up overlaps
            n.spawn()
        for n in nodes:
            n.wait_ready()

    def _guarded(self, start):
        try:
            start()
        except BaseException:
            sys.stdout.write(self.log_tails())
            self.close()
            raise

    def node_at(self, address):
        host, port = address if isinstance(address, tuple) else address.rsplit(":", 1)
        for n in self.all_nodes:
            if n.port == int(port):
                return n
        raise KeyError("no node at %s:%s" % (host, port))

    def log_tails(self, size=2000):
        return "".join("\n--- %s (%s) log tail ---\n%s\n" % (n.describe(), n.log_path,
                                                            n.log_tail(size))
                       for n in self.all_nodes)

    def close(self, dump_logs=False):
        if dump_logs:
            sys.stdout.write(self.log_tails())
        for n in self.all_nodes:
            n.stop(grace=5)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(dump_logs=exc_type is not None)


def managed(request, topo):
    """Generator for a pytest fixture: yields `topo` and closes it, printing
    the logs when a test failed meanwhile (works without any conftest hook:
    it compares the session's failure count)."""
    before = request.session.testsfailed
    try:
        yield topo
    finally:
        topo.close(dump_logs=request.session.testsfailed > before)


def made_per_test(request, tmp_path, cls, stem):
    """Generator for a pytest fixture whose value is make(**options): each
    call builds a fresh `cls` under tmp_path; all are closed after the test,
    printing their logs when a test failed meanwhile."""
    made = []

    def make(**kw):
        topo = cls(str(tmp_path / ("%s%d" % (stem, len(made)))), **kw)
        made.append(topo)
        return topo
    before = request.session.testsfailed
    try:
        yield make
    finally:
        for topo in made:
            topo.close(dump_logs=request.session.testsfailed > before)


def _userinfo(username, password):
    """"user:password@" for a URL, percent-encoded; "" without a password."""
    if password is None:
        return ""
    q = urllib.parse.quote
    return "%s:%s@" % (q(username or "", safe=""), q(password, safe=""))


def _auth_config(password, user):
    """Data-node options so that a replica can authenticate to its primary."""
    users, config = {}, []
    if user is not None:
        users[user[0]] = user[1]
        config += [("masteruser", user[0]), ("masterauth", user[1])]
    elif password is not None:
        config.append(("masterauth", password))
    return users, config


# --------------------------------------------------------------------------
# Sentinel


class SentinelGroup(_Topology):
    """A primary, `replicas` replicas and `sentinels` sentinels monitoring
    them as `master_name`.

    password    requirepass on the data nodes (`sentinel auth-pass`)
    user        (name, password): an ACL user on the data nodes, used by the
                replicas and the sentinels (`sentinel auth-user`); the
                default user is then off
    sentinel_password  requirepass on the sentinels themselves
    pki, mutual_tls    TLS everywhere (data nodes, sentinels, their links)
    """

    def __init__(self, workdir=None, *, pki=None, mutual_tls=False, password=None, user=None,
                 sentinel_password=None, master_name="mymaster", replicas=1, sentinels=3,
                 quorum=2, down_after_ms=1000, failover_timeout_ms=5000):
        super().__init__(workdir, "sentinel-group-")
        self.master_name = master_name
        self.password, self.user = password, user
        self._pki, self._mutual = pki, mutual_tls
        self._sentinel_password = sentinel_password
        self._sentinel_conf = [
            ("sentinel", "resolve-hostnames", "no"),
            ("sentinel", "monitor", master_name, HOST, None, quorum),
            ("sentinel", "down-after-milliseconds", master_name, down_after_ms),
            ("sentinel", "failover-timeout", master_name, failover_timeout_ms),
            ("sentinel", "parallel-syncs", master_name, 1)]
        if password is not None and user is None:
            self._sentinel_conf.append(("sentinel", "auth-pass", master_name, password))
        if user is not None:
            self._sentinel_conf += [("sentinel", "auth-user", master_name, user[0]),
                                    ("sentinel", "auth-pass", master_name, user[1])]
        if sentinel_password is not None:
            self._sentinel_conf.append(("sentinel", "sentinel-pass", sentinel_password))
        self.data_nodes, self.sentinels = [], []
        self._guarded(lambda: self._start_group(replicas, sentinels))

    def _data_node(self, config):
        users, auth = _auth_config(self.password, self.user)
        return RedisNode(self.dir, pki=self._pki, mutual_tls=self._mutual, password=self.password,
                         users=users, disable_default_user=self.user is not None,
                         config=auth + config,
                         name="data", start=False)

    def _start_group(self, replicas, sentinels):
        primary = self._data_node([])
        self._start([primary])
        self.data_nodes.append(primary)
        reps = [self._data_node([("replicaof", HOST, primary.port)]) for _ in range(replicas)]
        self._start(reps)
        self.data_nodes += reps
        # Replicas in sync before the sentinels start: a sentinel lists the
        # replicas from its first INFO of the primary, the next is 10 s later.
        wait_until(lambda: all("master_link_status:up" in r.cli("INFO", "replication")
                               for r in reps), 20, what="replicas in sync")
        conf = [tuple(primary.port if w is None else w for w in line)
                for line in self._sentinel_conf]
        sents = [RedisNode(self.dir, pki=self._pki, mutual_tls=self._mutual,
                           password=self._sentinel_password, config=conf, sentinel=True,
                           name="sentinel", start=False) for _ in range(sentinels)]
        self._start(sents)
        self.sentinels = sents
        self.wait_ready(replicas)

    def wait_ready(self, replicas=1, timeout=30):
        """Until every live sentinel knows the primary, the other sentinels
        and `replicas` healthy replicas: only then can they fail over."""
        want_others = len(self.live_sentinels()) - 1

        def ready():
            for s in self.live_sentinels():
                with s.client(socket_timeout=2) as c:
                    m = c.sentinel_master(self.master_name)
                    if not m.get("is_master") or m.get("is_sdown") or m.get("is_odown"):
                        return False
                    if m["num-other-sentinels"] < want_others:
                        return False
                    healthy = [r for r in c.sentinel_slaves(self.master_name)
                               if not r.get("is_sdown") and not r.get("is_disconnected")
                               and r.get("master-link-status") == "ok"]
                    if len(healthy) < replicas:
                        return False
            return True
        wait_until(ready, timeout, interval=0.1, what="sentinels to agree on the topology")

    def live_sentinels(self):
        return [s for s in self.sentinels if s.alive()]

    def sentinel_addresses(self):
        return [s.address() for s in self.sentinels]

    def address_url(self, credentials=False, db=None):
        """sentinel://[user:password@]h1:p1,h2:p2,h3:p3/mymaster[/db]; the
        credentials are the data nodes'."""
        auth = _userinfo(*(self.user or (None, self.password))) if credentials else ""
        return "sentinel://%s%s/%s%s" % (auth, ",".join(self.sentinel_addresses()),
                                         self.master_name, "" if db is None else "/%d" % db)

    def primary(self):
        """(host, port) of the primary as the first live sentinel says."""
        for s in self.live_sentinels():
            with s.client(socket_timeout=2) as c:
                host, port = c.sentinel_get_master_addr_by_name(self.master_name)
                return host, int(port)
        raise AssertionError("no live sentinel")

    def primary_node(self):
        return self.node_at(self.primary())

    def client(self, **kw):
        """redis-py client to the current primary."""
        return self.primary_node().client(**kw)

    def kill_primary(self, how="kill", seconds=30):
        """Fails the current primary: "kill" (SIGKILL, a crash), "stop"
        (SIGSTOP, a hung host: connections open, nothing answers; resume()
        the node to bring it back: the sentinels make it a replica within
        about 10 s, their INFO period) or "sleep" (DEBUG SLEEP `seconds`, a
        stall after which it comes back and is demoted). Returns the node."""
        node = self.primary_node()
        if how == "kill":
            node.kill(signal.SIGKILL)
        elif how == "stop":
            node.kill(signal.SIGSTOP)
        elif how == "sleep":
            node.sleep(seconds)
        else:
            raise ValueError("kill_primary: how is kill, stop or sleep, not %r" % how)
        return node

    def wait_failover(self, old=None, timeout=30):
        """Until every live sentinel names the same primary, other than `old`
        (default: the primary when called), and that node answers ROLE
        master. Returns its (host, port)."""
        old = tuple(old) if old else self.primary()

        def moved():
            addrs = set()
            for s in self.live_sentinels():
                with s.client(socket_timeout=2) as c:
                    host, port = c.sentinel_get_master_addr_by_name(self.master_name)
                    addrs.add((host, int(port)))
            if len(addrs) != 1 or old in addrs:
                return None
            addr = addrs.pop()
            return addr if self.node_at(addr).role() == "master" else None
        return wait_until(moved, timeout, interval=0.1, what="sentinel failover from %s:%d" % old)


# --------------------------------------------------------------------------
# Cluster

SLOTS = 16384


class RedisCluster(_Topology):
    """`primaries` primaries (and one replica each with replicas=True),
    created with redis-cli --cluster create. Options as SentinelGroup's;
    `tls-cluster yes` with a pki. node_timeout_ms is how long a node may be
    silent before it is failed over."""

    def __init__(self, workdir=None, *, primaries=3, replicas=False, pki=None, mutual_tls=False,
                 password=None, user=None, node_timeout_ms=2000):
        super().__init__(workdir, "redis-cluster-")
        self.password, self.user = password, user
        self._pki = pki
        users, auth = _auth_config(password, user)
        n = primaries * (2 if replicas else 1)
        self._seed = []
        nodes = []
        for _ in range(n):
            config = auth + [("cluster-enabled", "yes"), ("cluster-config-file", "nodes.conf"),
                             ("cluster-node-timeout", node_timeout_ms),
                             # Chosen, not port+10000: that one may be taken.
                             ("cluster-port", FREE_PORT)]
            if pki is not None:
                config.append(("tls-cluster", "yes"))
            nodes.append(RedisNode(self.dir, pki=pki, mutual_tls=mutual_tls, password=password,
                                   users=users, disable_default_user=user is not None,
                                   config=config, name="cluster", start=False))
        self._guarded(lambda: self._create(nodes, replicas))

    def _create(self, nodes, replicas):
        self._start(nodes)
        args = ["--cluster", "create"] + [n.address() for n in nodes]
        if replicas:
            args += ["--cluster-replicas", "1"]
        nodes[0].cli(*(args + ["--cluster-yes"]), timeout=120)
        for n in nodes:
            with n.client() as c:
                n.node_id = c.execute_command("CLUSTER", "MYID")
        self.wait_ok()
        self._seed = self.primaries()

    # -- views

    def nodes(self):
        return list(self.all_nodes)

    def live_nodes(self):
        return [n for n in self.all_nodes if n.alive()]

    def primaries(self):
        return [n for n in self.live_nodes() if n.role() == "master"]

    def replicas(self):
        return [n for n in self.live_nodes() if n.role() == "slave"]

    def node_by_id(self, node_id):
        for n in self.all_nodes:
            if n.node_id == node_id:
                return n
        raise KeyError(node_id)

    def slot_map(self, via=None):
        """[(first, last, primary port)] sorted, as `via` (default: the first
        live node) sees it in CLUSTER SLOTS."""
        via = via or self.live_nodes()[0]
        with via.client(socket_timeout=5) as c:
            # Split words: no redis-py reply parser for this one, raw lists.
            slots = c.execute_command("CLUSTER", "SLOTS")
        return sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)

    def slots_of(self, node):
        return [slot for first, last, port in self.slot_map() if port == node.port
                for slot in range(first, last + 1)]

    def keyslot(self, key):
        """The server's hash slot of `key` (CLUSTER KEYSLOT)."""
        with self.live_nodes()[0].client() as c:
            return int(c.execute_command("CLUSTER", "KEYSLOT", key))

    def slot_owner(self, key=None, slot=None):
        """The primary RedisNode serving `key` (or `slot`)."""
        slot = self.keyslot(key) if slot is None else slot
        for first, last, port in self.slot_map():
            if first <= slot <= last:
                return self.node_at((HOST, port))
        raise KeyError("slot %d has no owner" % slot)

    def seed_url(self, credentials=False):
        """cluster://[user:password@]h1:p1,h2:p2,h3:p3 (the primaries at
        creation)."""
        auth = _userinfo(*(self.user or (None, self.password))) if credentials else ""
        return "cluster://%s%s" % (auth, ",".join(n.address() for n in self._seed))

    def client(self, **kw):
        """redis-py RedisCluster seeded with the live primaries."""
        seed = [n for n in self._seed if n.alive()] or self.primaries()
        any_node = seed[0]
        if self.user is not None:
            kw.setdefault("username", self.user[0])
            kw.setdefault("password", self.user[1])
        elif self.password is not None:
            kw.setdefault("password", self.password)
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        for k, v in any_node.tls_kwargs().items():
            kw.setdefault(k, v)
        return redis_cluster.RedisCluster(
            startup_nodes=[redis_cluster.ClusterNode(n.host, n.port) for n in seed], **kw)

    # -- health

    def wait_ok(self, timeout=30):
        """Until every live node says cluster_state:ok and all of them see
        the same slot map, which covers every slot with live nodes only (a
        killed primary counts as served until the others notice)."""
        def ok():
            maps = set()
            live = self.live_nodes()
            for n in live:
                with n.client(socket_timeout=2) as c:
                    if c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") < 0:
                        return False
                maps.add(tuple(self.slot_map(n)))
            if len(maps) != 1:
                return False
            slot_map = maps.pop()
            if not {port for _, _, port in slot_map} <= {n.port for n in live}:
                return False
            return sum(last - first + 1 for first, last, _ in slot_map) == SLOTS
        wait_until(ok, timeout, interval=0.1, what="cluster_state:ok on every node")

    # -- changes

    def reshard(self, from_node, to_node, slots):
        """Moves `slots` slots (and their keys) with redis-cli --cluster
        reshard; waits for the cluster to agree; returns the slots moved."""
        before = set(self.slots_of(from_node))
        from_node.cli("--cluster", "reshard", from_node.address(),
                      "--cluster-from", from_node.node_id, "--cluster-to", to_node.node_id,
                      "--cluster-slots", slots, "--cluster-yes", timeout=300)
        self.wait_ok()
        return sorted(before & set(self.slots_of(to_node)))

    def begin_migration(self, slot, from_node, to_node):
        """Leaves `slot` half-migrated: IMPORTING on to_node, MIGRATING on
        from_node. Keys still on from_node are served there; a key already
        moved (migrate_keys) or missing gets -ASK to to_node."""
        with to_node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", from_node.node_id)
        with from_node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to_node.node_id)

    def migrate_keys(self, slot, from_node, to_node, keys=None):
        """MIGRATE `keys` (default: every key of the slot on from_node) to
        to_node; returns the keys moved."""
        with from_node.client() as c:
            if keys is None:
                keys = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
            if not keys:
                return []
            args = ["MIGRATE", to_node.host, to_node.port, "", 0, 10000]
            if self.user is not None:
                args += ["AUTH2", self.user[0], self.user[1]]
            elif self.password is not None:
                args += ["AUTH", self.password]
            c.execute_command(*(args + ["KEYS"] + list(keys)))
        return list(keys)

    def finish_migration(self, slot, to_node):
        """CLUSTER SETSLOT <slot> NODE <to_node> on the target first, then on
        every other primary (the order redis-cli uses); waits for agreement."""
        for n in [to_node] + [p for p in self.primaries() if p is not to_node]:
            with n.client() as c:
                c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to_node.node_id)
        self.wait_ok()

    def kill_primary(self, node=None, how="kill"):
        """SIGKILLs (how="stop": SIGSTOPs) a primary (default: the owner of
        slot 0). With replicas, wait_ok() then returns once its replica took
        over. Returns the node."""
        node = node or self.slot_owner(slot=0)
        node.kill(signal.SIGSTOP if how == "stop" else signal.SIGKILL)
        return node
