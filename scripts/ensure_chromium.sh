#!/usr/bin/env bash
# Installs Debian's chromium for the browser smoke test when it is missing and we may
# (root with apt-get). Never downloads a browser build of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian chromium for the browser smoke test" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "note: no chromium and no root apt-get: the browser smoke test will be skipped" >&2
fi
