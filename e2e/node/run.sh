#!/usr/bin/env bash
# End-to-end tests of Confide's Pusher-protocol hub with the real pusher-js 8 and pusher 5 npm
# packages, run by Node's built-in test runner against a real `confide serve` (SQLite, and
# PostgreSQL too when CONFIDE_TEST_DATABASE_URL is set). Usage: e2e/node/run.sh [node --test args]
# The server binary: $CONFIDE_BIN, else target/debug/confide (built when missing).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${CONFIDE_BIN:-}" ] && [ ! -x "$root/target/debug/confide" ]; then
  (cd "$root" && cargo build -p confide --bin confide)
fi

cd "$here"
npm ci --no-audit --no-fund
# One test file at a time: each starts its own servers, and the machine has two cores.
exec node --test --test-concurrency=1 "$@" test/*.test.js
