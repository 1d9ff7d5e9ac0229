"""Digest answers for outbound INVITEs, checked against the published examples."""

from __future__ import annotations

import pytest

from opensips_ai_core.signalling.sip.auth import (
    Credentials,
    DigestError,
    authorization,
    parse_challenge,
)


def test_rfc2617_example_with_qop_auth() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = authorization(challenge, Credentials("Mufasa", "Circle Of Life"), "GET",
                          "/dir/index.html", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth" in value and "nc=00000001" in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_rfc7616_sha256_example() -> None:
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    value = authorization(challenge, Credentials("Mufasa", "Circle of Life"), "GET",
                          "/dir/index.html", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    assert ('response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"'
            in value)


@pytest.mark.parametrize("value", ['Basic realm="x"', 'Digest nonce="n"',
                                   'Digest realm="r", nonce="n", algorithm=SHA-512-256x',
                                   'Digest realm="r", nonce="n", qop="auth-int"'])
def test_unanswerable_challenges_are_refused(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)
