"""Two `confide serve` processes sharing PostgreSQL and Redis behave as one service: a visitor
connected to one node receives what the bot publishes through the other, a rate limit counted
on one node holds on the other, and a presence channel has the same members on both."""

import hashlib
import hmac
import json
import os
import socket
import subprocess
import tempfile
import time

import pytest
import requests
import websocket

from conftest import Confide

REDIS_URL = os.environ.get("CONFIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
PASSWORD = "cobalt heron crosses two rivers"


def redis_answers():
    host, port = REDIS_URL.split("//")[1].split(":")
    try:
        with socket.create_connection((host, int(port.split("/")[0])), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


HAVE_POSTGRES = bool(os.environ.get("CONFIDE_TEST_DATABASE_URL"))
HAVE_REDIS = redis_answers()
# CONFIDE_REQUIRE_REDIS=1 (CI): a missing Redis fails these tests rather than skipping them.
if HAVE_POSTGRES and not HAVE_REDIS and os.environ.get("CONFIDE_REQUIRE_REDIS") == "1":
    raise RuntimeError(f"CONFIDE_REQUIRE_REDIS=1, but no Redis answers at {REDIS_URL}")

pytestmark = pytest.mark.skipif(
    not HAVE_POSTGRES or not HAVE_REDIS,
    reason="needs CONFIDE_TEST_DATABASE_URL (PostgreSQL) and a Redis at CONFIDE_TEST_REDIS_URL",
)


@pytest.fixture
def two_nodes():
    with tempfile.TemporaryDirectory() as tmp:
        first = Confide("postgres", tmp)
        # The second node shares the database and the data directory's keys.
        second = Confide("postgres", tmp)
        second.database_url = first.database_url
        first.cli("migrate")
        env = {"CONFIDE_REDIS_URL": REDIS_URL, "CONFIDE_REDIS_PREFIX": "t" + os.urandom(6).hex(),
               "CONFIDE_RATE_LIMIT_CREDENTIALS_PER_MINUTE": "4"}
        first.start(**env)
        second.start(**env)
        try:
            yield first, second
        finally:
            first.stop()
            second.stop()


def receive(ws, event, deadline):
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        frame = json.loads(ws.recv())
        if frame.get("event") == event:
            return frame
    raise AssertionError(f"no {event} in time")


def test_a_visitor_on_one_node_receives_the_reply_published_by_the_other(two_nodes):
    first, second = two_nodes
    owner = first.create_owner("owner@example.com", "Acme", PASSWORD)
    token = first.login("owner@example.com", PASSWORD).json()["access_token"]
    bot = requests.post(f"{first.base}/api/v1/orgs/{owner['org_id']}/bots", json={"name": "Helper"},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10).json()

    chat = requests.post(f"{first.base}/chat/v1/{bot['key']}/sessions", json={}, timeout=10).json()
    # The visitor's socket is on the second node.
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{second.port}/app/{bot['key']}?protocol=7&client=test&version=1.0", timeout=10)
    try:
        deadline = time.monotonic() + 20
        established = receive(ws, "pusher:connection_established", deadline)
        socket_id = json.loads(established["data"])["socket_id"]
        auth = requests.post(f"{second.base}/chat/v1/auth", headers={"X-Chat-Token": chat["token"]},
                             data={"socket_id": socket_id, "channel_name": chat["channel"]}, timeout=10)
        assert auth.status_code == 200, auth.text
        ws.send(json.dumps({"event": "pusher:subscribe",
                            "data": {"channel": chat["channel"], "auth": auth.json()["auth"]}}))
        receive(ws, "pusher_internal:subscription_succeeded", deadline)

        # The message goes to the first node, which publishes the reply.
        posted = requests.post(f"{first.base}/chat/v1/messages", headers={"X-Chat-Token": chat["token"]},
                               json={"text": "Are you there?"}, timeout=10)
        assert posted.status_code == 202, posted.text
        reply_id = posted.json()["reply"]["id"]
        seen = []
        while reply_id not in seen:
            frame = receive(ws, "message", deadline)
            seen.append(json.loads(frame["data"])["id"])
        assert posted.json()["message"]["id"] in seen, "the visitor's own message came through too"
    finally:
        ws.close()


def test_a_rate_limit_counted_on_one_node_holds_on_the_other(two_nodes):
    first, second = two_nodes
    statuses = [node.login("someone@example.com", "not the right password").status_code
                for node in (first, second, first, second, first)]
    assert statuses == [401, 401, 401, 401, 429]
    assert second.login("someone@example.com", "not the right password").status_code == 429


def join_presence(node, credentials, channel, user_id):
    """Connects to `node` on the platform app and joins a presence channel; answers the socket
    and the roster."""
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{node.port}/app/{credentials['key']}?protocol=7&client=test&version=1.0",
        timeout=10)
    deadline = time.monotonic() + 20
    established = receive(ws, "pusher:connection_established", deadline)
    socket_id = json.loads(established["data"])["socket_id"]
    channel_data = json.dumps({"user_id": user_id, "user_info": {"name": user_id}})
    signature = hmac.new(credentials["secret"].encode(), f"{socket_id}:{channel}:{channel_data}".encode(),
                         hashlib.sha256).hexdigest()
    ws.send(json.dumps({"event": "pusher:subscribe", "data": {
        "channel": channel, "auth": f"{credentials['key']}:{signature}", "channel_data": channel_data}}))
    succeeded = receive(ws, "pusher_internal:subscription_succeeded", deadline)
    return ws, json.loads(succeeded["data"])["presence"]


def test_a_presence_channel_has_the_same_members_on_both_nodes(two_nodes):
    first, second = two_nodes
    answer = first.cli("admin", "realtime-credentials")
    assert answer.returncode == 0, answer.stderr
    credentials = json.loads(answer.stdout)

    alice, roster = join_presence(first, credentials, "presence-desk", "alice")
    try:
        assert roster["ids"] == ["alice"]
        # Bob joins on the other node: his roster holds alice, and alice hears of him.
        bob, roster = join_presence(second, credentials, "presence-desk", "bob")
        assert sorted(roster["ids"]) == ["alice", "bob"]
        assert roster["hash"]["alice"] == {"name": "alice"}
        deadline = time.monotonic() + 20
        added = json.loads(receive(alice, "pusher_internal:member_added", deadline)["data"])
        assert added == {"user_id": "bob", "user_info": {"name": "bob"}}
        # He leaves: alice hears that too.
        bob.close()
        removed = json.loads(receive(alice, "pusher_internal:member_removed", deadline)["data"])
        assert removed == {"user_id": "bob"}
    finally:
        alice.close()
