#!/usr/bin/env bash
# schemathesis against a live server's OpenAPI document, authenticated as an organization owner,
# with every check enabled. Usage: e2e/schemathesis.sh VENV_DIR [sqlite|postgres]
# (postgres creates a fresh database next to CONFIDE_TEST_DATABASE_URL).
set -euo pipefail
venv=${1:-.venv}
backend=${2:-sqlite}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/debug/confide"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
db_args=()
if [ "$backend" = postgres ]; then
  admin_url=${CONFIDE_TEST_DATABASE_URL:?postgres needs CONFIDE_TEST_DATABASE_URL}
  db="confide_st_$(date +%s)_$$"
  psql "$admin_url" -qc "CREATE DATABASE $db"
  db_args=(--database-url "${admin_url%/*}/$db")
fi
echo "schemathesis on $backend"

CONFIDE_LOG=warn CONFIDE_RATE_LIMIT_API_PER_MINUTE=1000000 CONFIDE_RATE_LIMIT_CREDENTIALS_PER_MINUTE=1000000 "$bin" --data-dir "$work/data" "${db_args[@]}" serve --listen "127.0.0.1:$port" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"; if [ -n "${db:-}" ]; then psql "$admin_url" -qc "DROP DATABASE IF EXISTS $db" || true; fi' EXIT
for _ in $(seq 1 200); do curl -fs "$base/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

echo 'schemathesis owner passphrase' | "$bin" --data-dir "$work/data" "${db_args[@]}" admin create-owner --email owner@example.com --org "Schemathesis" >"$work/owner.json"
token=$(curl -fs "$base/api/v1/auth/login" -H 'content-type: application/json' \
  -d '{"email":"owner@example.com","password":"schemathesis owner passphrase"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

auth=(-H "Authorization: Bearer $token")
export CONFIDE_ST_ORG_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["org_id"])' "$work/owner.json")
export CONFIDE_ST_USER_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["user_id"])' "$work/owner.json")
bot=$(curl -fs "$base/api/v1/orgs/$CONFIDE_ST_ORG_ID/bots" "${auth[@]}" -H 'content-type: application/json' \
  -d '{"name":"Schemathesis bot"}')
export CONFIDE_ST_BOT_ID=$(echo "$bot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
bot_key=$(echo "$bot" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
export CONFIDE_ST_CHAT_ID=$(curl -fs "$base/chat/v1/$bot_key/sessions" -H 'content-type: application/json' \
  -d '{}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["chat_id"])')

# Signing out, changing the password or revoking sessions would end the session the whole run is
# authenticated with.
"$venv/bin/schemathesis" --config-file "$root/e2e/schemathesis.toml" run "$base/api/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --exclude-path /api/v1/auth/logout \
  --exclude-path /api/v1/auth/password \
  --exclude-path /api/v1/me/sessions/{session_id} \
  --max-examples 30 \
  --seed 1 \
  --no-color \
  --suppress-health-check all
