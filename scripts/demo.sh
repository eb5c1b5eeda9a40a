#!/usr/bin/env bash
# Sets up tools, builds, and runs the Wuxi demo node (滨湖区) with demo petitions flowing.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace --bins
exec ./target/release/xinfang up --demo --data "${XF_DEMO_DATA:-data/demo-320211}"
