#!/usr/bin/env bash
# The screenshot in docs/observability.md: `xinfang up --demo` with its Prometheus, a few
# minutes of demo petitions, then headless Chromium on Prometheus's graph of 满意率 by district.
#   scripts/screenshot-demo.sh [MINUTES]    (after cargo build --release; needs prometheus, chromium)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-4}
data=$(mktemp -d)
out=$(mktemp)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
XF_LOG=warn target/release/xinfang up --demo --data "$data" >"$out" 2>/dev/null &
pid=$!
for _ in $(seq 120); do grep -q '"ready":true' "$out" && break; sleep 1; done
prom=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["prometheus"])' "$out")
echo "demo ready; Prometheus at $prom; waiting $minutes min for the indicators to move"
sleep $((minutes * 60))
expr='node:xf_satisfied:ratio1d'
url="$prom/graph?g0.expr=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))' "$expr")&g0.tab=0&g0.range_input=${minutes}m&g0.stacked=0"
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --hide-scrollbars --window-size=1400,900 \
  --virtual-time-budget=15000 --screenshot=docs/observability-demo.png "$url"
echo "wrote docs/observability-demo.png ($expr over $minutes min)"
