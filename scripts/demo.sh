#!/usr/bin/env bash
# Sets up tools, builds, and runs the Wuxi demo city (the hub and seven districts, each its own
# nats-server, linked as leaf nodes) with demo petitions flowing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace --bins
exec ./target/release/xinfang up --demo --data "${XF_DEMO_DATA:-data/demo}"
