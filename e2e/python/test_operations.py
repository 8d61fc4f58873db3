"""Operating Confide: mail through a real SMTP server, errors to a Sentry-compatible endpoint,
and logs that never carry a secret."""

import email
import gzip
import http.server
import json
import re
import sqlite3
import threading
import time

import pytest
import requests
from aiosmtpd.controller import Controller

from conftest import free_port

OWNER_PASSWORD = "amber tortoise juggles nine plums"
NEW_PASSWORD = "quiet harbour lights at dawn 42"


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content)
        body = message.get_payload(decode=True).decode("utf-8")
        self.messages.append((envelope.rcpt_tos, body))
        return "250 OK"


def wait_for(predicate, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller.port, inbox
    finally:
        controller.stop()


def test_a_password_reset_arrives_by_smtp_and_its_token_works_once(make_confide, smtp):
    port, inbox = smtp
    confide = make_confide(
        CONFIDE_SMTP_HOST="127.0.0.1",
        CONFIDE_SMTP_PORT=str(port),
        CONFIDE_SMTP_SECURITY="none",
        CONFIDE_SMTP_FROM="Confide <noreply@example.com>",
    )
    confide.create_owner("owner@example.com", "Acme", OWNER_PASSWORD)

    for email in ("owner@example.com", "nobody@example.com"):
        response = requests.post(confide.base + "/api/v1/auth/password-reset", json={"email": email}, timeout=10)
        assert response.status_code == 202

    recipients, message = wait_for(lambda: inbox.messages and inbox.messages[0])
    assert recipients == ["owner@example.com"]
    time.sleep(0.5)
    assert len(inbox.messages) == 1, "an unknown address gets no mail"
    token = re.search(r"Reset token: (\S+)", message).group(1)
    assert token not in confide.log(), "the token never reaches the log"

    confirm = confide.base + "/api/v1/auth/password-reset/confirm"
    assert requests.post(confirm, json={"token": token, "new_password": NEW_PASSWORD}, timeout=30).status_code == 204
    again = requests.post(confirm, json={"token": token, "new_password": NEW_PASSWORD + "!"}, timeout=30)
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "invalid_token"

    assert confide.login("owner@example.com", OWNER_PASSWORD).status_code == 401
    assert confide.login("owner@example.com", NEW_PASSWORD).status_code == 200


class SentryReceiver(http.server.BaseHTTPRequestHandler):
    envelopes = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        SentryReceiver.envelopes.append((self.path, body.decode("utf-8", "replace")))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id":"00000000000000000000000000000000"}')

    def log_message(self, *args):
        pass


def test_an_internal_error_is_reported_to_the_error_tracker_with_its_opaque_id(make_confide):
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), SentryReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    SentryReceiver.envelopes = []
    try:
        dsn = f"http://publickey@127.0.0.1:{receiver.server_port}/42"
        confide = make_confide(CONFIDE_SENTRY_DSN=dsn)
        owner = confide.create_owner("owner@example.com", "Acme", OWNER_PASSWORD)
        token = confide.login("owner@example.com", OWNER_PASSWORD).json()["access_token"]

        # Break the database under the running server: the next query of that table fails.
        if confide.backend == "sqlite":
            with sqlite3.connect(confide.data_dir / "confide.db") as db:
                db.execute("DROP TABLE api_keys")
        else:
            import psycopg

            with psycopg.connect(confide.database_url, autocommit=True) as db:
                db.execute("DROP TABLE api_keys")

        response = requests.get(
            f"{confide.base}/api/v1/orgs/{owner['org_id']}/api-keys",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "internal_error"
        assert "api_keys" not in response.text, "no SQL detail reaches the client"
        error_id = error["id"]
        assert error_id in confide.log()

        path, envelope = wait_for(lambda: next((e for e in SentryReceiver.envelopes if error_id in e[1]), None))
        assert path == "/api/42/envelope/"
        assert OWNER_PASSWORD not in envelope and token not in envelope
    finally:
        receiver.shutdown()


def test_no_password_or_token_ever_reaches_the_log(confide):
    confide.create_owner("owner@example.com", "Acme", OWNER_PASSWORD)
    login = confide.login("owner@example.com", OWNER_PASSWORD)
    assert login.status_code == 200
    body = login.json()
    cookie = login.cookies.get("__Host-confide_session") or re.search(
        r"__Host-confide_session=([^;]+)", login.headers["set-cookie"]
    ).group(1)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    org = requests.get(confide.base + "/api/v1/me", headers=headers, timeout=10).json()["organizations"][0]["id"]
    created = requests.post(
        f"{confide.base}/api/v1/orgs/{org}/api-keys",
        headers=headers,
        json={"name": "ci", "scopes": ["bots:read"]},
        timeout=10,
    ).json()
    assert requests.get(
        f"{confide.base}/api/v1/orgs/{org}/bots", headers={"Authorization": f"Bearer {created['key']}"}, timeout=10
    ).status_code == 200
    confide.login("owner@example.com", "a wrong password entirely")

    log = confide.log()
    assert "response" in log, "the server does log requests"
    for secret in (OWNER_PASSWORD, "a wrong password entirely", body["access_token"], cookie,
                   body["csrf_token"], created["key"]):
        assert secret not in log


def audit_actions(confide, chain):
    query = "SELECT action FROM audit_events WHERE chain = {} ORDER BY seq"
    if confide.backend == "sqlite":
        with sqlite3.connect(confide.data_dir / "confide.db") as db:
            return [row[0] for row in db.execute(query.format("?"), (chain,))]
    import psycopg

    with psycopg.connect(confide.database_url) as db:
        return [row[0] for row in db.execute(query.format("%s"), (chain,))]


def test_credential_endpoints_are_rate_limited_per_address_in_a_moving_window(make_confide):
    confide = make_confide(CONFIDE_RATE_LIMIT_CREDENTIALS_PER_MINUTE="3")
    statuses = [confide.login("someone@example.com", "not the password at all").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    limited = confide.login("someone@example.com", "not the password at all")
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Other endpoints have their own, larger quota.
    assert requests.get(confide.base + "/api/v1/me", timeout=10).status_code == 401
    assert audit_actions(confide, "platform").count("rate_limit.hit") == 1, "audited once per address and minute"


def test_every_chat_endpoint_shares_one_moving_window_per_visitor_address(make_confide):
    confide = make_confide(CONFIDE_RATE_LIMIT_CHAT_PER_MINUTE="3")
    calls = [
        lambda: requests.post(confide.base + "/chat/v1/no-such-bot/sessions", json={}, timeout=10),
        lambda: requests.post(confide.base + "/chat/v1/auth", data={"socket_id": "1.2", "channel_name": "x"},
                              timeout=10),
        lambda: requests.post(confide.base + "/chat/v1/messages", json={"text": "hi"}, timeout=10),
        lambda: requests.get(confide.base + "/chat/v1/messages", timeout=10),
    ]
    statuses = [call().status_code for call in calls]
    assert all(s != 429 for s in statuses[:3]) and statuses[3] == 429, statuses
    limited = calls[0]()
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
    # A CORS preflight is not a request and is not counted or refused.
    preflight = requests.options(confide.base + "/chat/v1/messages",
                                 headers={"Origin": "https://shop.example.com",
                                          "Access-Control-Request-Method": "POST"}, timeout=10)
    assert preflight.status_code == 204
