#!/usr/bin/env bash
# Issue 3 §5 benchmarks: builds `confide` and `realtime-load` in release, then for each scenario
# starts a fresh `confide serve` (SQLite in a temporary data directory) on loopback, runs the load
# generator against it on the same machine, and prints a summary. Results go to $OUT (default:
# a temporary directory, printed at the end) as one JSON object per scenario.
#
# Knobs (environment): DURATION (30s), WARMUP (2s), COUNTS (2000,5000,10000), PUBLISH_RATE (500),
# CHANNELS (1000), PUBLISH_CONNECTIONS (1000), FANOUT_CONNECTIONS (10000; 0 skips that run),
# CHAT_RATE (200), SCENARIOS ("one-address connections publish fanout chat"), SKIP_BUILD=1, OUT.
#
# The hub allows 200 connections per client address (HubConfig::max_connections_per_ip, not
# configurable from the CLI), so the generator binds its sockets to 127.0.0.1, 127.0.0.2, ...,
# 200 connections each; the `one-address` scenario shows the limit from a single address.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-2s}
COUNTS=${COUNTS:-2000,5000,10000}
PUBLISH_RATE=${PUBLISH_RATE:-500}
CHANNELS=${CHANNELS:-1000}
PUBLISH_CONNECTIONS=${PUBLISH_CONNECTIONS:-1000}
FANOUT_CONNECTIONS=${FANOUT_CONNECTIONS:-10000}
CHAT_RATE=${CHAT_RATE:-200}
SCENARIOS=${SCENARIOS:-one-address connections publish fanout chat}

for tool in curl jq python3; do
  command -v "$tool" >/dev/null || { echo "run.sh needs $tool" >&2; exit 1; }
done

if [ -z "${SKIP_BUILD:-}" ]; then
  echo "== building confide and realtime-load (release)"
  cargo build --release -p confide -p realtime-load
fi
confide="$root/target/release/confide"
load="$root/target/release/realtime-load"

# Each side holds one descriptor per connection, plus the server's database and listeners.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max_count=${COUNTS##*,}
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((max_count + 1000)) ]; then
  echo "warning: ulimit -n is $(ulimit -n); $max_count connections need more" >&2
fi

work=$(mktemp -d)
OUT=${OUT:-$work/results}
mkdir -p "$OUT"
data="$work/data"
server_pid=
port=

stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}
trap 'stop_server; rm -rf "$data"' EXIT

start_server() { # $1: a name for the log
  stop_server
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  CONFIDE_LOG=warn \
  CONFIDE_RATE_LIMIT_API_PER_MINUTE=1000000 \
  CONFIDE_RATE_LIMIT_CHAT_PER_MINUTE=1000000 \
    "$confide" --data-dir "$data" serve --listen "127.0.0.1:$port" >>"$OUT/server-$1.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "confide serve did not start; log:" >&2
  tail -30 "$OUT/server-$1.log" >&2
  exit 1
}

credentials() {
  local creds
  creds=$("$confide" --data-dir "$data" admin realtime-credentials)
  app_id=$(jq -r .app_id <<<"$creds")
  app_key=$(jq -r .key <<<"$creds")
  # The generator reads the secret from the environment, not the command line.
  export REALTIME_LOAD_SECRET
  REALTIME_LOAD_SECRET=$(jq -r .secret <<<"$creds")
}

run_load() { # $1: result name, then the generator's arguments
  local name=$1
  shift
  echo "== $name: realtime-load $*"
  "$load" "$@" | tee "$OUT/$name.txt"
  grep '^RESULT ' "$OUT/$name.txt" | tail -1 | cut -d' ' -f2- >"$OUT/$name.json"
}

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"

for scenario in $SCENARIOS; do
  echo "== $scenario: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  case $scenario in
    one-address)
      # All connections from 127.0.0.1: the hub admits 200, then refuses with 4100.
      start_server one-address
      credentials
      run_load one-address connections --url "ws://127.0.0.1:$port" --key="$app_key" \
        --counts 100,200,400 --channels "$CHANNELS" --per-source 1000000 \
        --server-pid "$server_pid" --label one-address
      ;;
    connections)
      start_server connections
      credentials
      run_load connections connections --url "ws://127.0.0.1:$port" --key="$app_key" \
        --counts "$COUNTS" --channels "$CHANNELS" --per-source 200 \
        --server-pid "$server_pid" --label connections
      ;;
    publish)
      start_server publish
      credentials
      run_load publish publish --url "http://127.0.0.1:$port" --app-id "$app_id" --key="$app_key" \
        --rate "$PUBLISH_RATE" --channels "$CHANNELS" --connections "$PUBLISH_CONNECTIONS" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$server_pid" --label publish
      ;;
    fanout)
      [ "$FANOUT_CONNECTIONS" -gt 0 ] || continue
      start_server fanout
      credentials
      run_load fanout publish --url "http://127.0.0.1:$port" --app-id "$app_id" --key="$app_key" \
        --rate "$PUBLISH_RATE" --channels "$CHANNELS" --connections "$FANOUT_CONNECTIONS" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$server_pid" --label fanout
      ;;
    chat)
      start_server chat
      base="http://127.0.0.1:$port"
      if [ ! -f "$work/owner.json" ]; then
        echo 'a long passphrase 42' | "$confide" --data-dir "$data" admin create-owner \
          --email o@example.com --org Bench >"$work/owner.json"
      fi
      org=$(jq -r .org_id "$work/owner.json")
      token=$(curl -fs "$base/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email":"o@example.com","password":"a long passphrase 42"}' | jq -r .access_token)
      bot_key=$(curl -fs "$base/api/v1/orgs/$org/bots" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' -d '{"name":"Bench bot"}' | jq -r .key)
      # The load comes from loopback at a rate no visitor types: trust it, or spam detection
      # (bursts, repeats) would rightly block it.
      curl -fs "$base/api/v1/orgs/$org/trusted-addresses" -H "authorization: Bearer $token" \
        -H 'content-type: application/json' \
        -d '{"network":"127.0.0.0/8","note":"load generator"}' >/dev/null || true
      run_load chat chat --url "$base" --bot-key="$bot_key" --rate "$CHAT_RATE" \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$server_pid" --label chat
      ;;
    *)
      echo "unknown scenario $scenario" >&2
      exit 1
      ;;
  esac
  stop_server
done

echo
echo "== summary (targets from issue 3 §5; generator on the same $(nproc)-core machine, loopback)"
if [ -f "$OUT/one-address.json" ]; then
  jq -r '"one address:  " + ([.steps[] | "\(.target): \(.live) live, refused \(.open.refused)"] | join("; "))' "$OUT/one-address.json"
fi
if [ -f "$OUT/connections.json" ]; then
  jq -r '"connections:  " + ([.steps[] | "\(.live) live @ \(.rss_kib) KiB RSS (slope \(.slope_kib_per_conn // "n/a" | if type == "number" then (. * 100 | round / 100 | tostring) else . end) KiB/conn)"] | join("; "))
    + "\n              slope first→last step \(.slope_first_to_last_kib_per_conn * 100 | round / 100) KiB/conn (target ≤ 4), \(.connections_per_sec | round) connections/s"' "$OUT/connections.json"
fi
for name in publish fanout; do
  if [ -f "$OUT/$name.json" ]; then
    jq -r --arg tag "$(printf '%-13s' "$name:")" '"\($tag) \(.rate)/s over \(.channels) channels, \(.subscribed) subscribers: p50 \(.latency.p50_ms) ms, p99 \(.latency.p99_ms) ms, max \(.latency.max_ms) ms (target p99 ≤ 5 ms); \(.deliveries_per_sec | round) deliveries/s; \(.received_deliveries)/\(.expected_deliveries) delivered; statuses \(.statuses | tostring); CPU s: server \(.cpu.server_s * 10 | round / 10), generator \(.cpu.generator_s * 10 | round / 10), other \(.cpu.other_s * 10 | round / 10)"' "$OUT/$name.json"
  fi
done
if [ -f "$OUT/chat.json" ]; then
  jq -r '"chat:         \(.rate)/s over \(.chats) chats: p50 \(.round_trip.p50_ms) ms, p99 \(.round_trip.p99_ms) ms, max \(.round_trip.max_ms) ms (target p99 ≤ 10 ms); \(.messages_per_sec | round) messages/s answered; replies missing \(.replies_missing); statuses \(.statuses | tostring); CPU s: server \(.cpu.server_s * 10 | round / 10), generator \(.cpu.generator_s * 10 | round / 10), other \(.cpu.other_s * 10 | round / 10)"' "$OUT/chat.json"
fi
echo "results: $OUT"
