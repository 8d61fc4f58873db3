"""Outbound webhooks against receivers written from the documentation alone: seed 002's Kindly-HMAC
check with Python's own `hmac` and `base64`, and the `standardwebhooks` PyPI library. Also the crash
test: `confide serve` is killed with SIGKILL in the middle of deliveries, restarted, and every event
still arrives with its original webhook-id."""

import base64
import datetime as real_datetime
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from standardwebhooks import webhooks as standard
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PASSWORD = "violet kayak under seven lanterns"
FAST_WEBHOOKS = {
    "CONFIDE_WEBHOOK_POLL_MS": "50",
    "CONFIDE_WEBHOOK_RETRY_FIRST_DELAY_MS": "100",
    "CONFIDE_WEBHOOK_RETRY_MAX_DELAY_MS": "200",
    # A killed worker's claims come back after two seconds.
    "CONFIDE_WEBHOOK_LEASE_MS": "2000",
    # The receivers listen on loopback, which only the operator's allowlist opens.
    "CONFIDE_OUTBOUND_ALLOW": "127.0.0.0/8",
}


def kindly_signature_is_valid(secret, body, headers):
    """Seed 002: HMAC_SHA256 keyed with the shared secret over the payload, base64 encoded, in
    `Kindly-HMAC`; `Kindly-HMAC-algorithm` must say `HMAC-SHA-256 (base64 encoded)`. The algorithm
    works on bytes, so the secret (a str) is encoded first. Header names are case-insensitive."""
    headers = {name.lower(): value for name, value in headers.items()}
    if headers.get("kindly-hmac-algorithm") != "HMAC-SHA-256 (base64 encoded)":
        return False
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    expected = base64.b64encode(digest).decode("ascii")
    return hmac.compare_digest(expected, headers.get("kindly-hmac", ""))


class Receiver:
    """An HTTP receiver on 127.0.0.1 that records every request; `delay` makes it slow."""

    def __init__(self, delay=0.0):
        self.requests = []
        self.lock = threading.Lock()
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow endpoint, not a wait in the test
                with receiver.lock:
                    headers = {name.lower(): value for name, value in self.headers.items()}
                    receiver.requests.append((headers, body))
                answer = json.dumps({"new_context": {"checked": "yes"}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def all(self):
        with self.lock:
            return list(self.requests)

    def wait_for(self, ready, what, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.all()
            if ready(got):
                return got
            time.sleep(0.02)
        raise AssertionError(f"the receiver never saw {what}; got {len(self.all())}")

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Tenant:
    def __init__(self, confide):
        self.confide = confide
        owner = confide.create_owner("owner@example.com", "Hooked Inc", PASSWORD)
        self.org = owner["org_id"]
        login = confide.login("owner@example.com", PASSWORD)
        assert login.status_code == 200, login.text
        self.auth = {"Authorization": "Bearer " + login.json()["access_token"]}
        bot = self.post(f"/api/v1/orgs/{self.org}/bots", {"name": "Hook Bot"})
        self.bot, self.bot_key = bot["id"], bot["key"]
        self.hooks = f"/api/v1/orgs/{self.org}/bots/{self.bot}/webhooks"
        # Every visitor here writes from 127.0.0.1, quickly: spam screening would pause them.
        self.post(f"/api/v1/orgs/{self.org}/trusted-addresses", {"network": "127.0.0.1/32"})

    def post(self, path, body, status=(200, 201, 202)):
        r = requests.post(self.confide.base + path, json=body, headers=self.auth, timeout=30)
        assert r.status_code in status, r.text
        return r.json()

    def get(self, path):
        r = requests.get(self.confide.base + path, headers=self.auth, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def webhook(self, url, **extra):
        created = self.post(self.hooks, {"url": url, "events": ["message.created"], **extra})
        return created["webhook"]["id"], created["secret"]

    def chat(self, texts):
        base = self.confide.base
        session = requests.post(f"{base}/chat/v1/{self.bot_key}/sessions", json={}, timeout=30)
        assert session.status_code == 201, session.text
        token = session.json()["token"]
        for text in texts:
            sent = requests.post(f"{base}/chat/v1/messages", json={"text": text},
                                 headers={"X-Chat-Token": token}, timeout=30)
            assert sent.status_code == 202, sent.text


def standard_headers(headers):
    return {k: v for k, v in headers.items() if k.lower().startswith("webhook-")}


def test_a_kindly_receiver_and_the_standardwebhooks_library_accept_every_delivery(make_confide, receiver):
    confide = make_confide(**FAST_WEBHOOKS)
    tenant = Tenant(confide)
    _, secret = tenant.webhook(receiver.url)
    tenant.chat(["Where is my anvil?"])
    got = receiver.wait_for(lambda r: len(r) >= 2, "two events")
    texts = set()
    for headers, body in got:
        assert kindly_signature_is_valid(secret, body, headers)
        payload = Webhook(secret).verify(body, standard_headers(headers))
        assert payload["type"] == "message.created"
        assert payload["bot_id"] == tenant.bot and payload["organization_id"] == tenant.org
        texts.add(payload["message"])
        # A changed body fails both checks.
        tampered = body.replace(b"anvil", b"anvjl") if b"anvil" in body else body + b" "
        assert not kindly_signature_is_valid(secret, tampered, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, standard_headers(headers))
    assert "Where is my anvil?" in texts


def test_during_a_rotation_old_and_new_secrets_verify_and_afterwards_only_the_new(make_confide, receiver):
    confide = make_confide(**FAST_WEBHOOKS)
    tenant = Tenant(confide)
    hook, old = tenant.webhook(receiver.url)
    rotated = tenant.post(f"{tenant.hooks}/{hook}/rotate-secret", {"overlap_seconds": 3600})
    new = rotated["secret"]
    tenant.chat(["during the rotation"])
    for headers, body in receiver.wait_for(lambda r: len(r) >= 2, "two events"):
        Webhook(old).verify(body, standard_headers(headers))
        Webhook(new).verify(body, standard_headers(headers))
        assert kindly_signature_is_valid(new, body, headers)

    newest = tenant.post(f"{tenant.hooks}/{hook}/rotate-secret", {"overlap_seconds": 0})["secret"]
    tenant.chat(["after the rotation"])
    got = receiver.wait_for(lambda r: len(r) >= 4, "two more events")
    for headers, body in got[2:]:
        Webhook(newest).verify(body, standard_headers(headers))
        assert kindly_signature_is_valid(newest, body, headers)
        for retired in (old, new):
            with pytest.raises(WebhookVerificationError):
                Webhook(retired).verify(body, standard_headers(headers))


def test_a_delivery_replayed_outside_the_timestamp_window_is_rejected(make_confide, receiver, monkeypatch):
    confide = make_confide(**FAST_WEBHOOKS)
    tenant = Tenant(confide)
    _, secret = tenant.webhook(receiver.url)
    tenant.chat(["replay me"])
    headers, body = receiver.wait_for(lambda r: len(r) >= 1, "an event")[0]
    Webhook(secret).verify(body, standard_headers(headers))

    class SixMinutesLater(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return real_datetime.datetime.now(tz) + real_datetime.timedelta(minutes=6)

    # The same request arriving again six minutes later: the library's clock moves, nothing else.
    monkeypatch.setattr(standard, "datetime", SixMinutesLater)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, standard_headers(headers))


def test_sigkill_in_the_middle_of_deliveries_loses_no_event(make_confide):
    slow = Receiver(delay=0.1)
    try:
        confide = make_confide(**FAST_WEBHOOKS)
        tenant = Tenant(confide)
        hook, secret = tenant.webhook(slow.url, max_concurrency=1)
        sent = [f"message {chat}-{n}" for chat in range(4) for n in range(5)]
        for chat in range(4):
            tenant.chat(sent[chat * 5:(chat + 1) * 5])
        expected = 2 * len(sent)  # every visitor message and the bot's reply

        slow.wait_for(lambda r: len(r) >= 5, "the first deliveries")
        confide.process.kill()  # SIGKILL: no shutdown, claims left behind
        confide.process.wait(timeout=30)
        confide.log_file.close()
        before_restart = {h["webhook-id"] for h, _ in slow.all()}
        assert len(before_restart) < expected, "the kill came after everything was delivered"

        confide.start(**FAST_WEBHOOKS)
        log = tenant.get(f"{tenant.hooks}/{hook}/deliveries?limit=200")["deliveries"]
        assert len(log) == expected
        ids = {d["id"] for d in log}
        got = slow.wait_for(lambda r: ids <= {h["webhook-id"] for h, _ in r}, "every webhook-id")

        seen_texts = set()
        for headers, body in got:
            assert headers["webhook-id"] in ids
            Webhook(secret).verify(body, standard_headers(headers))
            assert kindly_signature_is_valid(secret, body, headers)
            seen_texts.add(json.loads(body)["message"])
        assert set(sent) <= seen_texts
        # The log catches up: every delivery ends delivered, none is lost or dead.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {d["state"] for d in
                      tenant.get(f"{tenant.hooks}/{hook}/deliveries?limit=200")["deliveries"]}
            if states == {"delivered"}:
                break
            time.sleep(0.05)
        assert states == {"delivered"}
    finally:
        slow.close()
