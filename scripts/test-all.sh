#!/usr/bin/env bash
# Runs every test of the project: Rust (unit, integration, doc) and Python (tools/).
# Installs what it needs first: the pinned Python venv in tools/.venv (which also provides
# libonnxruntime for the Rust tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh
export PATH="$PWD/tools/.venv/bin:$PATH"
# CI builds once from scratch: incremental caches only cost disk there.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# lib, bin, integration and doc tests (benches are compiled by clippy above and run with `cargo bench`)
cargo test
ruff check tools
ruff format --check tools
python -m pytest -q --durations=12 tools
