"""Who may open a realtime connection to a real `confide serve`: the operator's connection limits
(CONFIDE_REALTIME_MAX_CONNECTIONS and CONFIDE_REALTIME_MAX_CONNECTIONS_PER_APP) and a bot's IP
rules, each refused with the Pusher close code pusher-js understands (4100 over capacity: retry
later; 4004 over quota; 4009 unauthorized: do not retry)."""

import json
import time

import requests
import websocket

PASSWORD = "cobalt heron crosses two rivers"


def connect(server, key):
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/app/{key}?protocol=7&client=test&version=1.0", timeout=10)
    frame = json.loads(ws.recv())
    return ws, frame


def refused_with(server, key):
    """Opens a connection the server must refuse; answers the pusher:error code and the close code."""
    ws, frame = connect(server, key)
    assert frame["event"] == "pusher:error", frame
    error_code = json.loads(frame["data"])["code"] if isinstance(frame["data"], str) else frame["data"]["code"]
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE, opcode
    ws.close()
    return error_code, int.from_bytes(payload[:2], "big")


def create_bot(server, email):
    """An owner, its organization and a bot: (org id, bearer headers, bot)."""
    owner = server.create_owner(email, "Acme", PASSWORD)
    token = server.login(email, PASSWORD).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    bot = requests.post(f"{server.base}/api/v1/orgs/{owner['org_id']}/bots", json={"name": "Helper"},
                        headers=headers, timeout=10)
    assert bot.status_code == 201, bot.text
    return owner["org_id"], headers, bot.json()


def bot_key(server, email):
    return create_bot(server, email)[2]["key"]


def wait_until_refused_no_more(server, key):
    """A closed connection gives its place back once the server has seen the close."""
    deadline = time.monotonic() + 10
    while True:
        ws, frame = connect(server, key)
        if frame["event"] == "pusher:connection_established":
            return ws
        ws.close()
        assert time.monotonic() < deadline, "the place of a closed connection was not given back"
        time.sleep(0.05)


def test_the_configured_node_wide_connection_limit_is_enforced_with_4100(make_confide):
    server = make_confide(CONFIDE_REALTIME_MAX_CONNECTIONS="2")
    key = bot_key(server, "owner@example.com")
    open_ones = [connect(server, key) for _ in range(2)]
    for ws, frame in open_ones:
        assert frame["event"] == "pusher:connection_established", frame
    assert refused_with(server, key) == (4100, 4100)
    open_ones[0][0].close()
    wait_until_refused_no_more(server, key).close()
    open_ones[1][0].close()


def test_the_configured_per_app_connection_quota_is_enforced_with_4004(make_confide):
    server = make_confide(CONFIDE_REALTIME_MAX_CONNECTIONS_PER_APP="1")
    key = bot_key(server, "owner@example.com")
    ws, frame = connect(server, key)
    assert frame["event"] == "pusher:connection_established", frame
    assert refused_with(server, key) == (4004, 4004)
    ws.close()


def test_a_zero_limit_is_refused_at_start(make_confide):
    try:
        make_confide(CONFIDE_REALTIME_MAX_CONNECTIONS_PER_APP="0")
    except RuntimeError as error:
        assert "CONFIDE_REALTIME_MAX_CONNECTIONS_PER_APP must be at least 1" in str(error)
    else:
        raise AssertionError("a zero limit was accepted")


def test_a_bots_ip_rules_refuse_its_widget_connection_with_4009_and_the_refusal_is_audited(make_confide):
    server = make_confide()
    org, headers, bot = create_bot(server, "owner@example.com")
    settings_url = f"{server.base}/api/v1/orgs/{org}/bots/{bot['id']}/chat-settings"

    def restrict(restrictions):
        answer = requests.put(settings_url, headers=headers, timeout=10, json={
            "greeting": "Hello", "fallback_reply": "Sorry?", "allowed_domains": [],
            "restrictions": restrictions})
        assert answer.status_code == 200, answer.text

    ws, frame = connect(server, bot["key"])
    assert frame["event"] == "pusher:connection_established", frame
    ws.close()

    # The test client is 127.0.0.1.
    restrict({"ip_deny": ["127.0.0.0/8"]})
    assert refused_with(server, bot["key"]) == (4009, 4009)
    restrict({"ip_allow": ["10.0.0.0/8"]})
    assert refused_with(server, bot["key"]) == (4009, 4009)

    events = requests.get(f"{server.base}/api/v1/orgs/{org}/audit", headers=headers, timeout=10).json()["events"]
    refused = [e for e in events if e["action"] == "realtime.address_refused"]
    assert len(refused) == 2, [e["action"] for e in events]
    assert refused[0]["ip"] == "127.0.0.1"
    assert refused[0]["target"] == f"bot:{bot['id']}"
    assert refused[0]["details"] == {"reason": "ip"}

    # Allowed again: the widget connects.
    restrict({"ip_allow": ["127.0.0.1"]})
    ws, frame = connect(server, bot["key"])
    assert frame["event"] == "pusher:connection_established", frame
    ws.close()


def test_an_address_the_organization_blocked_cannot_open_its_bots_sockets_unless_trusted(make_confide):
    server = make_confide()
    org, headers, bot = create_bot(server, "owner@example.com")
    lists = f"{server.base}/api/v1/orgs/{org}"
    block = requests.post(f"{lists}/blocked-addresses", headers=headers, timeout=10,
                          json={"network": "127.0.0.0/8", "note": "abuse"})
    assert block.status_code == 201, block.text
    assert refused_with(server, bot["key"]) == (4009, 4009)
    events = requests.get(f"{lists}/audit", headers=headers, timeout=10).json()["events"]
    refused = [e for e in events if e["action"] == "realtime.address_refused"]
    assert [e["details"] for e in refused] == [{"reason": "blocked"}]

    # A trusted address wins over the block.
    trusted = requests.post(f"{lists}/trusted-addresses", headers=headers, timeout=10,
                            json={"network": "127.0.0.1"})
    assert trusted.status_code == 201, trusted.text
    ws, frame = connect(server, bot["key"])
    assert frame["event"] == "pusher:connection_established", frame
    ws.close()


def test_a_client_refused_in_a_loop_does_not_flood_the_audit_log(make_confide):
    server = make_confide()
    org, headers, bot = create_bot(server, "owner@example.com")
    block = requests.post(f"{server.base}/api/v1/orgs/{org}/blocked-addresses", headers=headers,
                          timeout=10, json={"network": "127.0.0.0/8"})
    assert block.status_code == 201, block.text
    for _ in range(12):
        assert refused_with(server, bot["key"]) == (4009, 4009)
    events = requests.get(f"{server.base}/api/v1/orgs/{org}/audit", headers=headers, timeout=10).json()["events"]
    refused = [e for e in events if e["action"] == "realtime.address_refused"]
    assert len(refused) == 5, len(refused)
