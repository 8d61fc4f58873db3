"""Deployment-facing HTTP policies: the CORS allowlist and trusted proxies."""

import requests

PASSWORD = "marble finch reads the tide chart"
ALLOWED = "https://app.example.com"


def test_cors_credentials_go_only_to_listed_origins(make_confide):
    confide = make_confide(CONFIDE_CORS_ORIGINS=ALLOWED)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-csrf-token",
    }
    allowed = requests.options(confide.base + "/api/v1/auth/login", headers={"Origin": ALLOWED, **preflight},
                               timeout=10)
    assert allowed.headers.get("access-control-allow-origin") == ALLOWED
    assert allowed.headers.get("access-control-allow-credentials") == "true"

    other = requests.options(confide.base + "/api/v1/auth/login",
                             headers={"Origin": "https://evil.example.net", **preflight}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-credentials" not in other.headers

    simple = requests.get(confide.base + "/healthz", headers={"Origin": "https://evil.example.net"}, timeout=10)
    assert "access-control-allow-origin" not in simple.headers


def test_no_cors_headers_at_all_without_an_allowlist(confide):
    response = requests.options(confide.base + "/api/v1/auth/login",
                                headers={"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}, timeout=10)
    assert "access-control-allow-origin" not in response.headers


def session_ips(confide, forwarded_for):
    confide.create_owner("owner@example.com", "Acme", PASSWORD) if not getattr(confide, "_owner", False) else None
    confide._owner = True
    login = requests.post(confide.base + "/api/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD},
                          headers={"X-Forwarded-For": forwarded_for}, timeout=30)
    assert login.status_code == 200
    sessions = requests.get(confide.base + "/api/v1/me/sessions",
                            headers={"Authorization": f"Bearer {login.json()['access_token']}"}, timeout=10).json()
    return [s["ip"] for s in sessions["sessions"] if s["current"]]


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_confide):
    untrusting = make_confide()
    assert session_ips(untrusting, "203.0.113.7") == ["127.0.0.1"]


def test_behind_a_trusted_proxy_the_forwarded_client_address_counts(make_confide):
    trusting = make_confide(CONFIDE_TRUSTED_PROXIES="127.0.0.0/8")
    assert session_ips(trusting, "198.51.100.1, 203.0.113.7") == ["203.0.113.7"]
