"""SIP digest authentication for the core's outbound INVITEs (RFC 3261 22, RFC 7616, RFC 8760).

Hand-written: the digest is a few hashes, and the Python digest helpers that exist
are bound to HTTP clients (httpx, requests). MD5 and SHA-256 (`-sess` variants too),
qop=auth or none; `auth-int` is not offered by the servers we talk to and is refused.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer (not Digest, unknown algorithm, no realm/nonce)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: str | None = None      # "auth" when the server offers it
    opaque: str | None = None


def parse_challenge(value: str) -> Challenge:
    """A WWW-Authenticate / Proxy-Authenticate value: `Digest realm="x", nonce="y", ...`."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest challenge: {scheme[:20]!r}")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        raw = match.group(2)
        params[match.group(1).lower()] = raw[1:-1].replace('\\"', '"') \
            if raw.startswith('"') else raw
    if "realm" not in params or "nonce" not in params:
        raise DigestError("challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm.removesuffix("-SESS") not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {algorithm}")
    qop = None
    if "qop" in params:
        offered = [q.strip().lower() for q in params["qop"].split(",")]
        if "auth" not in offered:
            raise DigestError(f"unsupported qop {params['qop']}")
        qop = "auth"
    return Challenge(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"))


def authorization(challenge: Challenge, credentials: Credentials, method: str, uri: str,
                  *, nonce_count: int = 1, cnonce: str | None = None) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge`."""
    base = challenge.algorithm.removesuffix("-SESS")
    hash_of = _HASHES[base]

    def h(text: str) -> str:
        return hash_of(text.encode()).hexdigest()

    cnonce = cnonce or secrets.token_hex(8)
    nc = f"{nonce_count:08x}"
    ha1 = h(f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if challenge.algorithm.endswith("-SESS"):
        ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = h(f"{method}:{uri}")
    if challenge.qop:
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{challenge.qop}:{ha2}")
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [f'username="{credentials.username}"', f'realm="{challenge.realm}"',
             f'nonce="{challenge.nonce}"', f'uri="{uri}"', f'response="{response}"',
             f"algorithm={challenge.algorithm}"]
    if challenge.qop:
        parts += [f"qop={challenge.qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
