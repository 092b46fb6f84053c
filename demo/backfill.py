#!/usr/bin/env python3
"""The demo's backfill step (scripts/demo.sh): starts the stand-in for
Clerk's Backend API (tests/syncd/integration/clerk_backend_standin.py) on a
free loopback port with a few users, an organization, a membership and an
active session, then runs `syncd backfill` against it with the demo's
configuration, and prints what syncd printed. Exits with syncd's status.

usage: backfill.py SYNCD SYNCD_ENV"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "syncd", "integration"))

from clerk_backend_standin import ClerkBackendStandin, make_user  # noqa: E402


def main():
    syncd, env_file = sys.argv[1], sys.argv[2]
    with ClerkBackendStandin() as api:
        grace = api.add_user(make_user("user_backfill_grace", first="Grace", last="Hopper",
                                       email="grace@example.com", role="admin"))
        alan = api.add_user(make_user("user_backfill_alan", first="Alan", last="Turing",
                                      email="alan@example.com"))
        api.add_user(make_user("user_backfill_barbara", first="Barbara", last="Liskov",
                               email="barbara@example.com", banned=True))
        org = api.add_org(org_id="org_backfill_acme", slug="acme-backfill", name="Acme")
        api.add_membership(org, alan["id"], role="org:admin")
        api.add_session(grace["id"], session_id="sess_backfill_grace")
        env = dict(os.environ, SYNCD_CLERK_SECRET_KEY=api.secret, SYNCD_CLERK_API_URL=api.url)
        print(f"  (stand-in Backend API on {api.url}: 3 users, 1 organization, "
              "1 membership, 1 active session)")
        print(f"$ syncd --config {env_file} backfill")
        out = subprocess.run([syncd, "--config", env_file, "backfill"], env=env,
                             capture_output=True, text=True, timeout=120)
        for line in (out.stderr + out.stdout).splitlines():
            print("  " + line)
        calls = len(api.requests)
        print(f"  ({calls} Backend API calls)")
        return out.returncode


if __name__ == "__main__":
    sys.exit(main())
