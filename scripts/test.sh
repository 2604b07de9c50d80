#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: the one test command the README and
# CI use. It installs the real servers the tests start (nginx, for the WebSocket tests
# through a reverse proxy) when they are missing, then runs cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test servers: ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --workspace --locked "$@"
