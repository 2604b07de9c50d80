#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine: the one test command the README and
# CI use. It needs only a Rust toolchain today; when tests start real servers (Redis, NATS,
# ...), this script installs any that are missing before running cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"
