#!/usr/bin/env bash
# Headless Chromium tests of the chat widget (web/widget/confide.js), run by Node's built-in test
# runner with playwright-core driving Debian's Chromium:
#   protocol.test.mjs  the widget's Pusher-protocol behaviour against a scripted hub
#   widget.test.mjs    a strict-CSP host page on another loopback origin against a real `confide serve`
#                      (SQLite, and PostgreSQL too when CONFIDE_TEST_DATABASE_URL is set)
#   answers.test.mjs   a generated answer streamed into the widget
#   avatar.test.mjs    the bot's avatar in the widget, on a page that allows it and on one that does not
# Usage: e2e/browser/run.sh [node --test args]
# The server binary: $CONFIDE_BIN, else target/debug/confide (built when missing).
# The browser: $CHROMIUM_BIN, else /usr/bin/chromium (installed from Debian when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

chromium_bin=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "no Chromium at $chromium_bin: install Debian's chromium package or set CHROMIUM_BIN" >&2
    exit 1
  fi
fi

if [ -z "${CONFIDE_BIN:-}" ] && [ ! -x "$root/target/debug/confide" ]; then
  (cd "$root" && cargo build -p confide --bin confide)
fi

cd "$here"
npm ci --no-audit --no-fund
# One file at a time: each starts its own servers and browser, and the machine has two cores.
if [ "$#" -eq 0 ]; then
  set -- protocol.test.mjs widget.test.mjs answers.test.mjs avatar.test.mjs
fi
exec node --test --test-concurrency=1 "$@"
