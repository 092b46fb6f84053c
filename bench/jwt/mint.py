#!/usr/bin/env python3
"""Clerk-shaped RS256 session tokens for bench/run.sh's JWT variants.

    bench/jwt/mint.py OUT_DIR [--tokens 20] [--lifetime 3600]

writes into OUT_DIR:
  jwks.json   the JWKS of a fresh 2048-bit RSA key (kid ins_bench_1), for
              session_jwt_keys
  tokens.txt  --tokens distinct session tokens, one a line (wrk rotates over
              them, bench/wrk/jwt.lua)
  probes.txt  for the sanity checks, one "<name> <token> <sub>" a line:
              good     (the first token of tokens.txt)
              revoked  (a valid token whose sess:<sid> hash says revoked: the
                        overlay must refuse it, verification alone passes it)
              tampered (the first token with one signature byte changed)
  redis.resp  the Redis commands (RESP, for redis-cli --pipe) that seed
              sess:<sid> {user_id, expires_at (ms), status active} and
              user:<sub> {role, db_id, email, status active} for every token,
              and the revoked token's pair

Tokens are minted with the team's tests/clerk/tokens.py (header alg RS256,
kid, typ JWT, cat cl_B7d4PD111AAA; Clerk v2 claims). Ids look like Clerk's:
user_/sess_/org_ followed by 27 base62 characters.
"""

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "clerk"))
import tokens  # noqa: E402  (tests/clerk/tokens.py, owned by the tests)

ISSUER = "https://clerk.bench.example"
AZP = "https://app.bench.example"
KID = "ins_bench_1"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def clerk_id(prefix, rng):
    return prefix + "".join(rng.choice(BASE62) for _ in range(27))


def resp(*args):
    out = ["*%d\r\n" % len(args)]
    for a in args:
        a = str(a).encode()
        out.append("$%d\r\n" % len(a))
        out.append(a.decode() + "\r\n")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--lifetime", type=int, default=3600, help="token lifetime, s")
    args = ap.parse_args()
    if args.tokens < 1:
        ap.error("--tokens must be at least 1")
    os.makedirs(args.out, exist_ok=True)

    rng = random.SystemRandom()
    key = tokens.SigningKey(kid=KID, bits=2048)
    now = int(time.time())
    session_expires_ms = (now + args.lifetime) * 1000

    def mint(i):
        sub, sid = clerk_id("user_", rng), clerk_id("sess_", rng)
        role = "admin" if i % 5 == 0 else "member"
        org = tokens.org_claim(clerk_id("org_", rng), "bench-org-%d" % (i % 4),
                               role, permissions=("read", "manage"),
                               features={"articles": ("read",),
                                         "billing": ("read", "manage")})
        claims = tokens.session_claims(sub, sid, ISSUER, azp=AZP, lifetime=args.lifetime,
                                       iat=now, sts=None, metadata={"role": role}, **org)
        return key.mint(claims), sub, sid, role

    seed = []

    def seed_pair(i, sub, sid, role, status):
        seed.append(resp("HSET", "sess:" + sid, "user_id", sub,
                         "expires_at", session_expires_ms, "status", status))
        seed.append(resp("HSET", "user:" + sub, "role", role, "db_id", 100000 + i,
                         "email", "jwt%d@bench.example" % i, "status", "active"))

    minted = []
    for i in range(1, args.tokens + 1):
        tok, sub, sid, role = mint(i)
        minted.append((tok, sub))
        seed_pair(i, sub, sid, role, "active")
    revoked, rsub, rsid, rrole = mint(0)
    seed_pair(0, rsub, rsid, rrole, "revoked")

    good, gsub = minted[0]
    head, payload, sig = good.split(".")
    raw = bytearray(tokens.b64u_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    tampered = "%s.%s.%s" % (head, payload, tokens.b64u(bytes(raw)))
    tokens.verify(good, key)  # our own tokens must verify

    def write(name, text):
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text)

    write("jwks.json", tokens.jwks(key))
    write("tokens.txt", "".join(t + "\n" for t, _ in minted))
    write("probes.txt", "good %s %s\nrevoked %s %s\ntampered %s -\n"
          % (good, gsub, revoked, rsub, tampered))
    write("redis.resp", "".join(seed))


if __name__ == "__main__":
    main()
