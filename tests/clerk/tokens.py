"""Clerk-shaped session tokens for the tests: an instance signing key, compact
JWS minting (including deliberately broken tokens), JWKS documents, Clerk v2
session claims, v2 organization claims and handshake tokens. Minted tokens
are `Secret`s (their repr is a digest) and `redact` hides JWT-shaped text in
anything meant for a message: tokens stay out of test output and logs.

Shapes follow Clerk's public backend SDK (clerk/javascript): the header
{alg, kid, typ: JWT, cat}, v2 claims (azp, exp, fva, iat, iss, jti, nbf, sid,
sts, sub, v), the v2 organization encoding (o.per, o.fpm, fea) and the
handshake token ({handshake: [Set-Cookie directive, ...]}).

No test code here; nothing in this module prints or logs a token.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SESSION_CATEGORY = "cl_B7d4PD111AAA"   # session tokens (and handshake tokens)
TEMPLATE_CATEGORY = "cl_B7d4PD222AAA"  # JWT-template tokens: never a session
MACHINE_CATEGORY = "cl_B7d4PD333AAA"   # machine tokens: never a session
IGNORE_CATEGORY = "cl_I7d4PD111III"    # "ignore the category"

_HASHES = {"RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512}
_HMACS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_DEFAULT = object()


class Secret(str):
    """A token: a str whose repr is its digest, so that a token that ends up
    in a list, a dict or a traceback's arguments is not printed."""

    def __repr__(self):
        return "<token %s>" % digest(self)


def b64u(data):
    """base64url without padding (RFC 7515)."""
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint_b64u(n):
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode()


class SigningKey:
    """An RSA instance key, as Clerk signs session tokens with one."""

    def __init__(self, kid="ins_test_1", bits=2048, private_key=None):
        self.kid = kid
        self._key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=bits)

    @classmethod
    def from_pem(cls, pem, kid="ins_test_1"):
        if isinstance(pem, str):
            pem = pem.encode()
        return cls(kid=kid, private_key=serialization.load_pem_private_key(pem, password=None))

    def private_pem(self):
        return self._key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()

    def public_key(self):
        return self._key.public_key()

    def public_pem(self):
        """SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"), as the
        dashboard shows it (CLERK_JWT_KEY)."""
        return self.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwk(self):
        numbers = self.public_key().public_numbers()
        jwk = {"use": "sig", "kty": "RSA", "kid": self.kid, "alg": "RS256",
               "n": _uint_b64u(numbers.n), "e": _uint_b64u(numbers.e)}
        if self.kid is None:
            del jwk["kid"]
        return jwk

    def sign(self, signing_input, alg="RS256"):
        """The signature of `signing_input` (bytes) under `alg`: RS256/384/512
        with this key; HS256/384/512 keyed with this key's public PEM (the
        algorithm-confusion forgery); "none": empty."""
        if alg in _HASHES:
            return self._key.sign(signing_input, padding.PKCS1v15(), _HASHES[alg]())
        if alg in _HMACS:
            return hmac.new(self.public_pem().encode(), signing_input, _HMACS[alg]).digest()
        if alg == "none":
            return b""
        raise ValueError("cannot sign with alg %r" % alg)

    def mint(self, claims, alg="RS256", header=None, kid=_DEFAULT, signature=None):
        """A compact JWS. `claims` is a dict (or raw bytes/str for a payload
        that is not JSON). The header is {"alg", "typ": "JWT", "kid",
        "cat": session category}, then `header` overrides or extends it (a
        value None removes the key). `kid` defaults to this key's kid (None:
        no kid). `signature` (bytes) replaces the computed one."""
        if kid is _DEFAULT:
            kid = self.kid
        h = {"alg": alg, "typ": "JWT", "kid": kid, "cat": SESSION_CATEGORY}
        if kid is None:
            del h["kid"]
        for k, v in (header or {}).items():
            if v is None:
                h.pop(k, None)
            else:
                h[k] = v
        payload = claims if isinstance(claims, (bytes, str)) else _json(claims)
        return self.mint_segments(b64u(_json(h)), b64u(payload), alg=alg, signature=signature)

    def mint_segments(self, header_segment, payload_segment, alg="RS256", signature=None):
        """Signs the two first segments exactly as given (they may be bad
        base64url on purpose) and appends the signature segment."""
        signing_input = ("%s.%s" % (header_segment, payload_segment)).encode("ascii")
        sig = self.sign(signing_input, alg) if signature is None else signature
        return Secret("%s.%s.%s" % (header_segment, payload_segment, b64u(sig)))


def jwks(*keys):
    """A JWKS document (JSON text) of these keys' public halves."""
    return json.dumps({"keys": [k.jwk() for k in keys]}, indent=1)


def decode(token):
    """(header, claims) of a compact JWS, without verifying it."""
    h, p, _ = token.split(".")
    return json.loads(b64u_decode(h)), json.loads(b64u_decode(p))


def verify(token, key):
    """Verifies an RS256/384/512 token against a SigningKey (or an RSA public
    key) with python3-cryptography; (header, claims) or an exception."""
    header, claims = decode(token)
    pub = key.public_key() if isinstance(key, SigningKey) else key
    h, p, s = token.split(".")
    pub.verify(b64u_decode(s), ("%s.%s" % (h, p)).encode(), padding.PKCS1v15(),
               _HASHES[header["alg"]]())
    return header, claims


def new_jti():
    return os.urandom(10).hex()


def session_claims(sub, sid, iss, azp=None, lifetime=60, iat=None, **extra):
    """Clerk v2 session-token claims: iat now (or `iat`), nbf = iat - 10,
    exp = iat + lifetime, a fresh jti, fva [0, -1], sts active. `extra` adds
    or replaces claims; an extra value None removes that claim."""
    iat = int(time.time()) if iat is None else int(iat)
    claims = {
        "azp": azp,
        "exp": iat + lifetime,
        "fva": [0, -1],
        "iat": iat,
        "iss": iss,
        "jti": new_jti(),
        "nbf": iat - 10,
        "sid": sid,
        "sts": "active",
        "sub": sub,
        "v": 2,
    }
    if azp is None:
        del claims["azp"]
    for k, v in extra.items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def org_claim(id, slug, role, permissions=(), features=(), user_features=()):
    """The v2 active-organization claims {"o": {...}, "fea": "..."}, to merge
    into session_claims(**org_claim(...)).

    `role` without the "org:" prefix (as Clerk writes `rol`); `permissions`
    the permission names, in the order of `per`; `features` pairs (or a
    dict) feature -> the permission names the member holds in it. `fpm` is
    one integer per org feature (in the order of `fea`): bit i (value 1 << i)
    set when permission i of `per` is held. That is the order of Clerk's
    current SDK (packages/shared/src/jwtPayloadParser.ts pads the binary
    digits to len(per) and then reverses them; its spec has per
    "read,manage", fpm "1,3": feature 1 read, feature 2 read and manage).
    `user_features` adds "u:<name>" entries, which carry no org permission."""
    permissions = list(permissions)
    items = list(features.items() if isinstance(features, dict) else features)
    fpm = []
    for feature, held in items:
        mask = 0
        for name in held:
            mask |= 1 << permissions.index(name)
        fpm.append(str(mask))
    o = {"id": id, "slg": slug, "rol": role}
    if permissions:
        o["per"] = ",".join(permissions)
    if items:
        o["fpm"] = ",".join(fpm)
    fea = ["o:%s" % f for f, _ in items] + ["u:%s" % f for f in user_features]
    out = {"o": o}
    if fea:
        out["fea"] = ",".join(fea)
    return out


def sdk_org_permissions(claims):
    """The org permissions Clerk's current SDK derives from v2 claims
    (org:<feature>:<permission>), in its order: a reference decoder for the
    tests' expectations, written from the SDK's documented behaviour."""
    o = claims.get("o")
    if claims.get("v") != 2 or not o:
        return list(claims.get("org_permissions") or [])
    per, fpm = o.get("per"), o.get("fpm")
    if not per or not fpm:
        return []
    perms = [p.strip() for p in per.split(",")]
    feats = [f.strip() for f in (claims.get("fea") or "").split(",") if f.strip()]
    org_feats = [f.split(":")[1] for f in feats if "o" in f.split(":")[0]]
    masks = [int(x.strip(), 10) for x in fpm.split(",")]
    out = []
    for i, feature in enumerate(org_feats):
        if i >= len(masks):
            continue
        bits = list(reversed(format(masks[i], "b").rjust(len(perms), "0")))
        for j, bit in enumerate(bits):
            if bit == "1" and j < len(perms):
                out.append("org:%s:%s" % (feature, perms[j]))
    return out


def handshake_token(key, directives, lifetime=60, header=None, iat=None):
    """A handshake result token signed by `key`: claim `handshake` = the
    Set-Cookie directives, with iat and exp."""
    iat = int(time.time()) if iat is None else int(iat)
    return key.mint({"handshake": list(directives), "iat": iat, "exp": iat + lifetime},
                    header=header)


def digest(token):
    """A short, non-reversible name for a token (for messages: never print
    the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# a compact JWS, or a piece of one cut short (a JSON segment starts "eyJ")
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
                       r"|eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}")


def redact(obj):
    """repr(obj) with every JWT-shaped string replaced by its digest: for
    assertion messages, which end up in CI logs."""
    return _JWT_LIKE.sub(lambda m: "<jwt %s>" % digest(m.group(0)), obj if isinstance(obj, str) else repr(obj))
