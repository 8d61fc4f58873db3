"""Built-in TLS, and signing-key rotation seen by PyJWT."""

import json
import subprocess
import time

import jwt
import requests

PASSWORD = "granite owl sings over the fjord"


def test_the_server_speaks_tls_with_a_configured_certificate_and_sends_hsts(make_confide, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    confide = make_confide(CONFIDE_TLS_CERT=str(cert), CONFIDE_TLS_KEY=str(key))
    https = confide.base.replace("http://", "https://")
    response = requests.get(https + "/healthz", verify=str(cert), timeout=10)
    assert response.status_code == 200
    assert response.headers["strict-transport-security"].startswith("max-age=")

    confide.create_owner("owner@example.com", "Acme", PASSWORD)
    login = requests.post(https + "/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD},
                          verify=str(cert), timeout=30)
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_a_rotated_signing_key_keeps_old_tokens_valid_and_signs_new_ones(confide):
    confide.create_owner("owner@example.com", "Acme", PASSWORD)
    old_token = confide.login("owner@example.com", PASSWORD).json()["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    rotated = confide.cli("admin", "rotate-signing-key")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["active_kid"]
    assert new_kid != old_kid

    # The server re-reads its keys every few seconds.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        token = confide.login("owner@example.com", PASSWORD).json()["access_token"]
        if jwt.get_unverified_header(token)["kid"] == new_kid:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the server never signed with the rotated key")

    kids = {k["kid"] for k in requests.get(confide.base + "/.well-known/jwks.json", timeout=10).json()["keys"]}
    assert {old_kid, new_kid} <= kids
    client = jwt.PyJWKClient(confide.base + "/.well-known/jwks.json")
    for t in (old_token, token):
        jwt.decode(t, client.get_signing_key_from_jwt(t).key, algorithms=["RS256"], audience="confide-api",
                   issuer=confide.base)
        assert requests.get(confide.base + "/api/v1/me", headers={"Authorization": f"Bearer {t}"},
                            timeout=10).status_code == 200
