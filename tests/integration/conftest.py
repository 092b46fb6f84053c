"""pytest fixtures over harness.py.

Per test file: one real redis-server and one echo upstream (flushed and
reset before every test). Per test: nginx instances started from the test's
own configuration; after every test each is stopped and its error log must
hold no [alert], [crit] or [emerg] line and no "exited on signal", or the
test fails in teardown.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.append(os.path.join(os.path.dirname(__file__), ".."))  # tests/topology.py

import harness  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def pytest_configure(config):
    config.addinivalue_line("markers", "no_module: runs against the stock nginx without the module")


@pytest.fixture(autouse=True)
def _module_present(request):
    if request.node.get_closest_marker("no_module"):
        return
    path = harness.module_path()
    if not os.path.exists(path):
        pytest.fail("the module is not built: %s (run `make module`, or set SESSION_MODULE_SO)" % path,
                    pytrace=False)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = harness.RedisServer(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture
def rds(redis_server):
    """The file's redis-server, empty and with fresh command statistics."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    c = redis_server.client()
    c.flushall()
    c.config_resetstat()
    return redis_server


@pytest.fixture
def r(rds):
    """A redis-py client (decode_responses) to the file's redis-server."""
    return rds.client()


@pytest.fixture(scope="module")
def upstream_server():
    up = harness.Upstream()
    yield up
    up.close()


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    return upstream_server


@pytest.fixture
def redis_factory(tmp_path):
    """Extra redis-servers (password, unix socket, restarts), stopped after
    the test."""
    servers = []

    def make(**kw):
        s = harness.RedisServer(str(tmp_path), **kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def fake_redis():
    if harness.REDIS_TLS:
        # The module would reach it over plain TCP: the same test as in the
        # plain run, nothing of the TLS transport.
        pytest.skip("the scripted fake Redis speaks plain TCP only (run without "
                    "SESSION_TEST_REDIS_TLS)")
    fakes = []

    def make(**kw):
        f = harness.FakeRedis(**kw)
        fakes.append(f)
        return f
    yield make
    for f in fakes:
        f.close()


@pytest.fixture
def nginx(request, tmp_path, upstream_server):
    """nginx(http=..., server=..., ...) starts an nginx with that
    configuration (see harness.conf_text) and returns the harness.Nginx."""
    started = []

    def start(**conf):
        d = os.path.join(str(tmp_path), "nginx%d" % len(started))
        os.makedirs(d)
        n = harness.Nginx(d, upstream_server.port, **conf)
        started.append(n)
        return n.start()
    yield start

    problems = []
    for n in started:
        if not n.stop(signal.SIGQUIT, timeout=15):
            problems.append("nginx in %s did not exit within 15 s of SIGQUIT" % n.tmp)
        bad = n.bad_log_lines()
        if bad:
            problems.append("error log %s has:\n  %s" % (n.error_log, "\n  ".join(bad[:20])))
        failed = getattr(request.node, "rep_call", None)
        if problems or (failed is not None and failed.failed):
            sys.stdout.write("\n--- %s (tail) ---\n%s\n" % (n.error_log, n.log_tail(80)))
    assert not problems, "\n".join(problems)

