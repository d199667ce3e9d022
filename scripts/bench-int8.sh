#!/usr/bin/env bash
# FP32 vs INT8 latency of the committed INT8 twins, interleaved in one sitting: for each round,
# model, and thread count, `anchorkit bench` runs the FP32 parent, then its INT8 twin with the
# FP32 report as --baseline (which prints the FP32 / INT8 ratio per stage). Load changes on a
# shared machine hit both alike; compare the ratios, and the medians over rounds.
#
#   bash scripts/bench-int8.sh [ROUNDS=3] [ITERS=200] [OUT=target/bench-int8]
#
# Needs target/release/anchorkit (cargo build --release) and ../shared/data/bccd (the 72 BCCD
# test images are the bench inputs). Writes OUT/<model>.<fp32|int8>.t<threads>.r<round>.json
# and .txt, then prints the median p50 per stage with tools/bench_int8_summary.py.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
iters="${2:-200}"
out="${3:-target/bench-int8}"
bin=target/release/anchorkit
bccd=../shared/data/bccd/BCCD
[ -x "$bin" ] || { echo "error: $bin missing (cargo build --release)" >&2; exit 2; }
[ -d "$bccd" ] || { echo "error: $bccd missing (../shared beside the repo)" >&2; exit 2; }
mkdir -p "$out/images"
while read -r id; do
  ln -sf "$(realpath "$bccd/JPEGImages/$id.jpg")" "$out/images/$id.jpg"
done < "$bccd/ImageSets/Main/test.txt"
for r in $(seq 1 "$rounds"); do
  for m in bccd_freeanchor_w24 bccd_atss; do
    for t in 1 2; do
      base="$out/$m.fp32.t$t.r$r"
      "$bin" bench --model "models/$m.onnx" --images "$out/images" --threads "$t" \
        --warmup 10 --iters "$iters" --json "$base.json" > "$base.txt"
      q="$out/$m.int8.t$t.r$r"
      "$bin" bench --model "models/$m.int8.onnx" --images "$out/images" --threads "$t" \
        --warmup 10 --iters "$iters" --json "$q.json" --baseline "$base.json" > "$q.txt"
      echo "round $r $m threads $t: $(grep -E '^inference ' "$q.txt" | tail -1)" >&2
    done
  done
done
tools/.venv/bin/python -m tools.bench_int8_summary "$out"
