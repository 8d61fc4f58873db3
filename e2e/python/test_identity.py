"""Identity checks with the reference implementations: Django's own hasher and PyJWT."""

import sqlite3

import django
import jwt
import requests
from django.conf import settings

if not settings.configured:
    settings.configure(PASSWORD_HASHERS=["django.contrib.auth.hashers.PBKDF2PasswordHasher"])
    django.setup()

from django.contrib.auth.hashers import make_password  # noqa: E402

PASSWORD = "violet kayak under seven lanterns"


def stored_hash(confide, user_id):
    if confide.backend == "sqlite":
        with sqlite3.connect(confide.data_dir / "confide.db") as db:
            return db.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()[0]
    import psycopg

    with psycopg.connect(confide.database_url) as db:
        return db.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,)).fetchone()[0]


def test_a_django_pbkdf2_hash_imports_logs_in_and_is_rehashed_to_argon2id(confide):
    owner = confide.create_owner("owner@example.com", "Acme", "owner passphrase 1")
    django_hash = make_password(PASSWORD, hasher="pbkdf2_sha256")
    assert django_hash.startswith("pbkdf2_sha256$")

    result = confide.cli(
        "admin", "import-user", "--email", "imported@example.com", "--org", owner["org_id"],
        "--password-hash", django_hash,
    )
    assert result.returncode == 0, result.stderr
    import json

    user_id = json.loads(result.stdout)["user_id"]
    assert stored_hash(confide, user_id) == django_hash

    assert confide.login("imported@example.com", "wrong password here").status_code == 401
    response = confide.login("imported@example.com", PASSWORD)
    assert response.status_code == 200, response.text
    assert stored_hash(confide, user_id).startswith("$argon2id$")

    # The re-hashed password still works.
    assert confide.login("imported@example.com", PASSWORD).status_code == 200


def test_an_access_token_verifies_with_pyjwt_against_the_jwks_and_dies_at_logout(confide):
    confide.create_owner("owner@example.com", "Acme", PASSWORD)
    login = confide.login("owner@example.com", PASSWORD)
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]

    jwks_client = jwt.PyJWKClient(confide.base + "/.well-known/jwks.json")
    signing_key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        signing_key.key,
        algorithms=["RS256"],
        audience="confide-api",
        issuer=confide.base,
        options={"require": ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]},
    )
    assert claims["exp"] - claims["iat"] <= 15 * 60
    assert jwt.get_unverified_header(token)["kid"] == signing_key.key_id

    headers = {"Authorization": f"Bearer {token}"}
    assert requests.get(confide.base + "/api/v1/me", headers=headers, timeout=10).status_code == 200
    assert requests.post(confide.base + "/api/v1/auth/logout", headers=headers, timeout=10).status_code == 204
    refused = requests.get(confide.base + "/api/v1/me", headers=headers, timeout=10)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
