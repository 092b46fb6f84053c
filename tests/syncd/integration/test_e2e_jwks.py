"""End to end, the instance's keys (issue 9): syncd fetches the JWKS from
the Backend API (the stand-in), stores it in Redis and publishes `keys`;
nginx, configured with `session_jwt_keys redis;` and no key file, verifies
Clerk session tokens with it, follows a rotation without a reload, and stops
accepting a key the instance dropped. Real syncd, PostgreSQL, Redis and the
stock nginx with the module. Skipped when the module is not built."""

import json
import os
import sys

import pytest

import nginx_process
from clerk_backend_standin import ClerkBackendStandin
from syncd_harness import Syncd, new_id, wait_for

sys.path.insert(0, os.path.join(nginx_process.SOURCE_DIR, "tests", "clerk"))

import tokens  # noqa: E402

ISSUER = "https://clerk.e2e-keys.example"
INTERVAL = 10  # the smallest SYNCD_CLERK_JWKS_INTERVAL syncd accepts

pytestmark = nginx_process.requires_module


def key_set(*keys):
    return json.loads(tokens.jwks(*keys))


def status_of(port, token):
    return nginx_process.get_app(port, {"Authorization": f"Bearer {token}"},
                                 ("X-User-Id",))[0]


def test_rotation_reaches_nginx_without_a_reload(pg, redis_server):
    old_key = tokens.SigningKey(kid="ins_e2e_old")
    new_key = tokens.SigningKey(kid="ins_e2e_new")
    rds = redis_server.client
    with ClerkBackendStandin() as api:
        api.set_jwks(key_set(old_key))
        daemon = Syncd(pg, redis_server, extra_env={
            "SYNCD_CLERK_SECRET_KEY": api.secret,
            "SYNCD_CLERK_API_URL": api.url,
            "SYNCD_CLERK_JWKS_INTERVAL": f"{INTERVAL}s"}).start()
        try:
            wait_for(lambda: rds.get("jwks"), timeout=20, what="the key set in Redis")
            with nginx_process.running_nginx(redis_server.port, """
                    session_check on;
                    session_jwt_keys redis;
                    session_jwt_issuer %s;
                    session_jwt_session off;
                    add_header X-User-Id $session_user_id always;""" % ISSUER,
                                             name="syncd-e2e-jwks-") as server:

                def token(key):
                    return key.mint(tokens.session_claims(new_id("user"), new_id("sess"),
                                                          ISSUER, lifetime=300))

                old_token, new_token = token(old_key), token(new_key)
                # Read when the worker started: the old key verifies, the new
                # one is unknown (the re-read finds nothing newer).
                wait_for(lambda: status_of(server.port, old_token) == 200, timeout=10,
                         what="the key set read by the worker")
                assert status_of(server.port, new_token) == 401

                # Clerk rotates: both keys for a while. syncd's next fetch
                # stores the set and publishes `keys`; nginx reads it.
                api.set_jwks(key_set(old_key, new_key))
                wait_for(lambda: status_of(server.port, new_token) == 200,
                         timeout=3 * INTERVAL, what="the rotated key at nginx")
                assert status_of(server.port, old_token) == 200

                # The old key retired: its tokens stop verifying.
                api.set_jwks(key_set(new_key))
                wait_for(lambda: status_of(server.port, old_token) == 401,
                         timeout=3 * INTERVAL, what="the retired key dropped at nginx")
                assert status_of(server.port, new_token) == 200

                log = server.log()
                assert "reload" not in log.lower() and "signal" not in log.lower(), log
                assert old_token not in log and new_token not in log
        finally:
            assert daemon.stop() == 0
            assert api.secret not in daemon.read_log()
