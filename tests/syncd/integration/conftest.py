import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.append(os.path.join(os.path.dirname(__file__), "..", ".."))  # tests/topology.py

from syncd_harness import Postgres, Redis, Syncd  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    server = Postgres()
    yield server
    server.close()


@pytest.fixture(scope="module")
def redis_server():
    server = Redis()
    yield server
    server.close()


@pytest.fixture(scope="module")
def syncd(pg, redis_server):
    daemon = Syncd(pg, redis_server).start()
    yield daemon
    code = daemon.stop()
    log = daemon.read_log()
    # The secret never reaches the log, whatever happened.
    assert "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" not in log
    assert code == 0, log


@pytest.fixture
def rds(redis_server):
    return redis_server.client
