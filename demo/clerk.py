#!/usr/bin/python3
"""The demo's Clerk instance: its signing key and its session tokens, made
with tests/clerk/tokens.py (the tests' token minter). Nothing here prints a
token or a key: tokens go to files (mode 0600).

    demo/clerk.py keygen DIR [--kid KID]
        a fresh RSA instance key: DIR/instance.pem (private, 0600, for the
        stand-in Frontend API), DIR/jwks.json and DIR/public.pem (what nginx
        reads with session_jwt_keys)
    demo/clerk.py mint DIR OUT --sub USER --sid SESSION --iss URL --azp ORIGIN
        [--lifetime S] [--age S] [--org-id ID --org-slug SLUG --org-role ROLE
         --permission NAME ... --feature FEATURE=NAME,NAME ...]
        a Clerk v2 session token signed with DIR/instance.pem, into OUT;
        --age S makes it as if minted S seconds ago (an expired one: S > lifetime)
    demo/clerk.py describe FILE
        one line about the token in FILE: its digest, a short prefix, and
        the claims a reader cares about (never the whole token)
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "clerk"))

import tokens  # noqa: E402  (tests/clerk/tokens.py)

KID = "ins_demo_1"


def write_private(path, text):
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def write_public(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o644)


def keygen(args):
    os.makedirs(args.dir, exist_ok=True)
    key = tokens.SigningKey(kid=args.kid)
    write_private(os.path.join(args.dir, "instance.pem"), key.private_pem())
    write_public(os.path.join(args.dir, "jwks.json"), tokens.jwks(key) + "\n")
    write_public(os.path.join(args.dir, "public.pem"), key.public_pem())
    print("instance key %s: %s/jwks.json, %s/public.pem (private key: instance.pem, 0600)"
          % (args.kid, args.dir, args.dir))


def load_key(directory, kid):
    with open(os.path.join(directory, "instance.pem")) as f:
        return tokens.SigningKey.from_pem(f.read(), kid=kid)


def mint(args):
    key = load_key(args.dir, args.kid)
    extra = {}
    if args.org_id:
        features = []
        for spec in args.feature or []:
            name, _, held = spec.partition("=")
            features.append((name, [p for p in held.split(",") if p]))
        extra.update(tokens.org_claim(args.org_id, args.org_slug, args.org_role,
                                      permissions=args.permission or [], features=features))
    if args.role:
        extra["metadata"] = {"role": args.role}
    iat = int(time.time()) - args.age
    claims = tokens.session_claims(args.sub, args.sid, args.iss, azp=args.azp,
                                   lifetime=args.lifetime, iat=iat, **extra)
    write_private(args.out, key.mint(claims) + "\n")


def short(token):
    return "%s...(%d chars, sha256 %s)" % (token[:10], len(token), tokens.digest(token))


def describe(args):
    with open(args.file) as f:
        token = f.read().strip()
    header, claims = tokens.decode(token)
    now = int(time.time())
    parts = ["kid=%s" % header.get("kid"), "sub=%s" % claims.get("sub"),
             "sid=%s" % claims.get("sid")]
    o = claims.get("o")
    if o:
        parts.append("o.rol=%s" % o.get("rol"))
        perms = tokens.sdk_org_permissions(claims)
        if perms:
            parts.append("permissions=%s" % ",".join(perms))
    left = claims["exp"] - now
    parts.append("expires in %ds" % left if left >= 0 else "EXPIRED %ds ago" % -left)
    print("%s  {%s}" % (short(token), " ".join(parts)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    k = sub.add_parser("keygen")
    k.add_argument("dir")
    k.add_argument("--kid", default=KID)
    k.set_defaults(run=keygen)

    m = sub.add_parser("mint")
    m.add_argument("dir")
    m.add_argument("out")
    m.add_argument("--kid", default=KID)
    m.add_argument("--sub", required=True)
    m.add_argument("--sid", required=True)
    m.add_argument("--iss", required=True)
    m.add_argument("--azp", required=True)
    m.add_argument("--lifetime", type=int, default=60)
    m.add_argument("--age", type=int, default=0)
    m.add_argument("--role", help="metadata.role (Clerk's RBAC guide's custom claim)")
    m.add_argument("--org-id")
    m.add_argument("--org-slug")
    m.add_argument("--org-role", help="o.rol, without the org: prefix")
    m.add_argument("--permission", action="append", help="a name of o.per (repeat)")
    m.add_argument("--feature", action="append", help="FEATURE=PERM,PERM (repeat)")
    m.set_defaults(run=mint)

    d = sub.add_parser("describe")
    d.add_argument("file")
    d.set_defaults(run=describe)

    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
