#!/usr/bin/env bash
# Prepares a GPU check on a CUDA 13 machine that has no internet and sees only this checkout
# (run from the repository root, with ../shared beside it and tools/.venv set up):
#   1. ../shared/gpu/bundle.sh: the onnxruntime-gpu wheel in chunks (.gpu/wheel/cNN), the
#      stripped release binary and on-device.sh (.gpu/run/);
#   2. the RetinaNet-shaped synthetic head (.gpu/run/synth/retina_synth.onnx; the GPU machine
#      has no torch);
#   3. the data subset scripts/gpu-check.sh reads, laid out like ../shared
#      (.gpu/data/shared/: NanoDet-m 320, the first N COCO val2017 images, the BCCD test list
#      and its first N images).
# Each transfer to the GPU machine carries the tracked files plus one folder, so the wheel
# chunks, .gpu/data and .gpu/run travel one at a time; the sizes are printed. On the machine:
#   mkdir -p /tmp/ak && cp .gpu/wheel/c00 /tmp/ak/          (carry .gpu/wheel/c00; then c01, ...)
#   mkdir -p /tmp/ak && cp -r .gpu/data/shared /tmp/ak/     (carry .gpu/data)
#   bash .gpu/run/on-device.sh bash scripts/gpu-check.sh --shared /tmp/ak/shared --out "$OUT"
#                                                           (carry .gpu/run)
# Usage: bash scripts/gpu-prepare.sh [N]   (N images per set, default 48)
set -euo pipefail
n=${1:-48}
case "$n" in '' | *[!0-9]*) echo "gpu-prepare: N must be a number" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
shared=../shared
[ -d "$shared/data" ] || { echo "gpu-prepare: $shared/data not found" >&2; exit 2; }
bash "$shared/gpu/bundle.sh"
tools/.venv/bin/python tools/make_synthetic_heads.py --out .gpu/run/synth --kinds retina
d=.gpu/data/shared
rm -rf .gpu/data
mkdir -p "$d/models/nanodet-m-coco" "$d/data/coco-val2017/images" \
  "$d/data/bccd/BCCD/ImageSets/Main" "$d/data/bccd/BCCD/JPEGImages"
cp "$shared/models/nanodet-m-coco/nanodet-m-320.onnx" "$d/models/nanodet-m-coco/"
ls "$shared/data/coco-val2017/images" | sort | head -n "$n" |
  while read -r f; do cp "$shared/data/coco-val2017/images/$f" "$d/data/coco-val2017/images/"; done
head -n "$n" "$shared/data/bccd/BCCD/ImageSets/Main/test.txt" > "$d/data/bccd/BCCD/ImageSets/Main/test.txt"
while read -r id; do cp "$shared/data/bccd/BCCD/JPEGImages/$id.jpg" "$d/data/bccd/BCCD/JPEGImages/"; done \
  < "$d/data/bccd/BCCD/ImageSets/Main/test.txt"
mib() { echo $(( $(du -sb "$1" | cut -f1) / 1048576 )); }
tracked=$(( $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) / 1048576 ))
echo "tracked files ${tracked} MiB; .gpu/data $(mib .gpu/data) MiB; .gpu/run $(mib .gpu/run) MiB;" \
  "largest wheel chunk $(( $(ls -S -l .gpu/wheel | awk 'NR==2{print $5}') / 1048576 )) MiB" \
  "(each transfer: tracked + one of them, under 64 MiB)"
