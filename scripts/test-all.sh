#!/usr/bin/env bash
# Runs every test of the project: Rust (unit, integration, doc) and Python (tools/).
# Installs what it needs first: the pinned Python venv in tools/.venv (which also provides
# libonnxruntime for the Rust tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh
export PATH="$PWD/tools/.venv/bin:$PATH"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# lib, bin, integration and doc tests (benches are compiled by clippy above and run with `cargo bench`)
cargo test
ruff check tools
ruff format --check tools
python -m pytest -q tools
