#!/usr/bin/env bash
# Runs every test of the project: Rust (unit, integration, doc) and Python (tools/).
# Installs what it needs first: the pinned Python venv in tools/.venv (which also provides
# libonnxruntime for the Rust tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh
# libjpeg-turbo (ABI 62) for OpenCV-exact JPEG decoding (src/preprocess/libjpeg.rs): the system
# library when it can be installed, else the copy inside Pillow in tools/.venv
if ! ldconfig -p 2>/dev/null | grep -q 'libjpeg\.so\.62 ' && [ -z "${ANCHORKIT_LIBJPEG:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libjpeg62-turbo (apt-get)"
    (apt-get update -qq && apt-get install -y -qq --no-install-recommends libjpeg62-turbo) ||
      echo "note: apt-get failed; JPEGs will be decoded with Pillow's libjpeg-turbo in tools/.venv"
  else
    echo "note: no libjpeg.so.62; JPEGs will be decoded with Pillow's libjpeg-turbo in tools/.venv"
  fi
fi
export PATH="$PWD/tools/.venv/bin:$PATH"
# CI builds once from scratch: incremental caches only cost disk there.
if [ "${CI:-}" = "true" ]; then export CARGO_INCREMENTAL=0; fi
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# the library without the `cli` feature (no clap, indicatif): a check, reusing clippy's metadata
cargo clippy --lib --no-default-features --quiet -- -D warnings
# lib, bin, integration and doc tests (benches are compiled by clippy above and run with `cargo bench`)
cargo test
# The portable kernels, as aarch64 devices (Jetson, Raspberry Pi) run them: every SIMD dispatch
# forced to its scalar path (src/simd.rs), then the unit tests and the exactness tests of the
# kernels again: OpenCV resize/normalize byte for byte, anchor objectives and optimizers, and
# mmdet parity (score scan, GFL integral, whole pipeline). Same binaries: nothing is rebuilt.
ANCHORKIT_SIMD=scalar cargo test --lib --test cv2_resize --test anchors --test parity
ruff check tools
ruff format --check tools
python -m pytest -q --durations=12 tools
