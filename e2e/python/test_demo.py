"""`confide demo`: one command to a page that chats."""

import base64
import hashlib
import json
import os
import re
import subprocess
import time

import requests

from conftest import BINARY, free_port


def test_the_demo_serves_a_page_embedding_the_pinned_widget_and_working_owner_credentials(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [str(BINARY), "--data-dir", str(tmp_path / "data"), "demo", "--listen", f"127.0.0.1:{port}"],
        env={**os.environ, "CONFIDE_LOG": "warn"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        info = json.loads(process.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.05)
        assert info["demo_page"] == base + "/demo"

        page = requests.get(info["demo_page"], timeout=10)
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "unsafe-inline" not in csp and "script-src" in csp
        tag = re.search(r'<script src="([^"]+)" data-bot="([^"]+)" integrity="([^"]+)"', page.text)
        src, bot, integrity = tag.groups()
        assert bot == info["bot_key"]

        script = requests.get(src, timeout=10)
        digest = base64.b64encode(hashlib.sha384(script.content).digest()).decode()
        assert integrity == f"sha384-{digest}", "the page pins exactly the served script"
        assert requests.get(base + "/widget/v1/integrity", timeout=10).json()["integrity"] == integrity

        login = requests.post(base + "/api/v1/auth/login",
                              json={"email": info["owner_email"], "password": info["owner_password"]}, timeout=30)
        assert login.status_code == 200
        chat = requests.post(f"{base}/chat/v1/{bot}/sessions", json={}, headers={"Origin": base}, timeout=10)
        assert chat.status_code == 201
    finally:
        process.terminate()
        process.wait(timeout=30)
