#!/usr/bin/env bash
# Sets up tools, builds, and runs the Wuxi demo city (the hub and seven districts, each its own
# nats-server, linked as leaf nodes) with demo petitions flowing, and a Prometheus over it
# with the project's rules when Debian's prometheus can be installed (docs/observability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --prometheus
cargo build --release --workspace --bins
exec ./target/release/xinfang up --demo --data "${XF_DEMO_DATA:-data/demo}"
