#!/usr/bin/env bash
# anchorkit on CUDA, end to end: inspect, bench (sequential, --pipeline, batch 1/4/8, shape
# buckets on/off, --strict-ep) for NanoDet-m 320, a BCCD model and the RetinaNet-shaped
# synthetic head, and CUDA-vs-CPU detection agreement (TF32 off); one JSON summary.
#
# On a GPU machine prepared with ../shared/gpu/bundle.sh (from the repository root):
#   bash .gpu/run/on-device.sh bash scripts/gpu-check.sh [--out DIR]
# Without a GPU it runs the CPU parts (CPU reference detections, a short CPU bench), writes the
# summary with "gpu": false and the reason, and exits 3.
#
# Options:
#   --out DIR      summary and logs (default: $OUT, else ./gpu-check-out)
#   --bin PATH     anchorkit binary (default: the newest of .gpu/run/anchorkit,
#                  target/release/anchorkit, target/debug/anchorkit)
#   --shared DIR   the data folder laid out like ../shared (default: ../shared; on a GPU machine
#                  the subset scripts/gpu-prepare.sh writes to .gpu/data/shared, copied there)
#   --synth DIR    directory with retina_synth.onnx (default: .gpu/run/synth, target/synthetic-heads;
#                  generated with tools/make_synthetic_heads.py when absent and torch is there)
#   --n N          images per set (default 48)
#   --iters N      measured iterations per bench (default 144)
#   --quick        4 images, 4 iterations (argument and CPU-path check)
#   --cpu-only     skip the GPU part even when a GPU is present
#   --gpu-ep EP    provider of the GPU part (default cuda; `cpu` runs it on the CPU provider
#                  as a smoke test of this script: no GPU figures)
# Exit: 0 all GPU checks ran (see "failures" in the summary), 1 a check failed, 2 usage,
# 3 no GPU (CPU parts only).
set -uo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2; }
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-}
bin="" synth="" shared="" n=48 iters=144 quick=0 cpu_only=0 gep=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=${2:?}; shift 2 ;;
    --bin) bin=${2:?}; shift 2 ;;
    --synth) synth=${2:?}; shift 2 ;;
    --shared) shared=${2:?}; shift 2 ;;
    --n) n=${2:?}; shift 2 ;;
    --iters) iters=${2:?}; shift 2 ;;
    --quick) quick=1; shift ;;
    --cpu-only) cpu_only=1; shift ;;
    --gpu-ep) gep=${2:?}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; echo "usage: see the header of $0" >&2; usage; exit 2 ;;
  esac
done
case "$n$iters" in *[!0-9]*) echo "gpu-check: --n and --iters take numbers; usage: see $0" >&2; exit 2 ;; esac
if [ "$quick" = 1 ]; then n=4; iters=4; fi
out=${out:-$PWD/gpu-check-out}
mkdir -p "$out/logs" "$out/reports" "$out/dets" "$out/images" || exit 2
out=$(cd "$out" && pwd)
cd "$root" || exit 2
if [ -z "$bin" ]; then
  # the newest of the bundled, release and debug binaries
  for b in .gpu/run/anchorkit target/release/anchorkit target/debug/anchorkit; do
    if [ -x "$b" ] && { [ -z "$bin" ] || [ "$b" -nt "$bin" ]; }; then bin=$PWD/$b; fi
  done
fi
[ -x "$bin" ] || { echo "gpu-check: no anchorkit binary (build it, or pass --bin PATH)" >&2; exit 2; }
shared=${shared:-$root/../shared}
[ -d "$shared" ] || { echo "gpu-check: no data folder $shared (pass --shared DIR)" >&2; exit 2; }
shared=$(cd "$shared" && pwd)
steps=$out/steps.tsv
: > "$steps"

# step NAME CMD...: run, log to logs/NAME.log, record "NAME rc seconds" in steps.tsv; with a
# GPU, sample its used memory every 200 ms into logs/NAME.mem (peak per step: one session per
# shape bucket costs memory)
gpu=0
step() {
  local name=$1; shift
  local t0 t1 rc mon=""
  if [ "$gpu" = 1 ]; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 \
      > "$out/logs/$name.mem" 2>/dev/null &
    mon=$!
  fi
  t0=$(date +%s.%N)
  "$@" > "$out/logs/$name.log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  if [ -n "$mon" ]; then kill "$mon" 2>/dev/null; wait "$mon" 2>/dev/null; fi
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >> "$steps"
  printf 'gpu-check: %-40s rc %s\n' "$name" "$rc" >&2
  return $rc
}

# image sets: the first N COCO val2017 images and the first N BCCD test images
coco=$out/images/coco; bccd=$out/images/bccd
rm -rf "$coco" "$bccd"; mkdir -p "$coco" "$bccd"
ls "$shared/data/coco-val2017/images" 2>/dev/null | sort | head -n "$n" |
  while read -r f; do ln -s "$shared/data/coco-val2017/images/$f" "$coco/$f"; done
head -n "$n" "$shared/data/bccd/BCCD/ImageSets/Main/test.txt" 2>/dev/null |
  while read -r id; do ln -s "$shared/data/bccd/BCCD/JPEGImages/$id.jpg" "$bccd/$id.jpg"; done

# models: name|onnx|spec or -|images|keep_ratio(0/1)|dynamic batch(0/1)
models=()
nd=$shared/models/nanodet-m-coco/nanodet-m-320.onnx
[ -f "$nd" ] && models+=("nanodet320|$nd|models/specs/nanodet-m-320.json|$coco|0|0")
[ -f models/bccd_freeanchor_w24.onnx ] && models+=("bccd_w24|models/bccd_freeanchor_w24.onnx|-|$bccd|1|1")
if [ -z "$synth" ]; then
  for d in .gpu/run/synth .gpu/synth target/synthetic-heads; do [ -f "$d/retina_synth.onnx" ] && synth=$d && break; done
fi
if [ -z "$synth" ] && [ "$quick" = 0 ] && [ -x tools/.venv/bin/python ]; then
  synth=$out/synth
  step make_synthetic_heads tools/.venv/bin/python tools/make_synthetic_heads.py --out "$synth" --kinds retina || synth=""
fi
if [ -n "$synth" ] && [ -f "$synth/retina_synth.onnx" ]; then
  models+=("retina_synth|$synth/retina_synth.onnx|-|$coco|1|1")
else
  echo "gpu-check: retina_synth.onnx not found and not generated (pass --synth DIR); skipping it" >&2
fi

spec_args() { [ "$1" = - ] && return 0; printf -- '--spec\n%s\n' "$1"; }

# GPU present? nvidia-smi sees one and a CUDA session registers. `run_gpu_part` = 1 when the
# GPU part runs (on `gep`); `gpu` = 1 when that is a real GPU (memory sampling).
reason="" run_gpu_part=0
if [ "$cpu_only" = 1 ]; then
  reason="no GPU check requested (--cpu-only)"
elif [ "$gep" = cpu ]; then
  run_gpu_part=1 reason="no GPU part on a GPU: --gpu-ep cpu (script smoke test)"
elif ! nvidia-smi -L > "$out/logs/nvidia-smi.log" 2>&1; then
  reason="no GPU: nvidia-smi failed or is absent"
else
  IFS='|' read -r _ m s _ <<< "${models[0]}"
  mapfile -t sa < <(spec_args "$s")
  if step inspect_cuda_probe "$bin" inspect --model "$m" "${sa[@]}" --ep cuda; then
    gpu=1 run_gpu_part=1
  else
    reason="no GPU: CUDAExecutionProvider did not register (see logs/inspect_cuda_probe.log)"
  fi
fi

bench_common=(--iters "$iters" --warmup 4 --rounds 1)
[ "$quick" = 1 ] && bench_common=(--iters "$iters" --warmup 1 --rounds 1 --no-bare)

# CPU parts: reference detections (TF32 is irrelevant on the CPU) and a short CPU bench
for entry in "${models[@]}"; do
  IFS='|' read -r name m s imgs kr _ <<< "$entry"
  mapfile -t sa < <(spec_args "$s")
  # keep-ratio models are compared with the same shape buckets as CUDA uses by default
  bk=(); [ "$kr" = 1 ] && bk=(--shape-buckets auto)
  step "cpu_detect_$name" "$bin" detect --model "$m" "${sa[@]}" --ep cpu "${bk[@]}" \
    --jsonl "$out/dets/${name}_cpu.jsonl" "$imgs"
  step "cpu_bench_$name" "$bin" bench --model "$m" "${sa[@]}" --ep cpu --images "$imgs" \
    "${bench_common[@]}" --json "$out/reports/${name}_cpu.json"
done

if [ "$run_gpu_part" = 1 ]; then
  for entry in "${models[@]}"; do
    IFS='|' read -r name m s imgs kr dynb <<< "$entry"
    mapfile -t sa < <(spec_args "$s")
    b=("$bin" bench --model "$m" "${sa[@]}" --ep "$gep" --images "$imgs" "${bench_common[@]}")
    step "inspect_$name" "$bin" inspect --model "$m" "${sa[@]}" --ep "$gep"
    step "bench_${name}_seq_strict" "${b[@]}" --strict-ep --json "$out/reports/${name}_seq_strict.json"
    step "bench_${name}_pipeline" "${b[@]}" --pipeline --workers 4 --json "$out/reports/${name}_pipeline.json"
    step "bench_${name}_pipeline6" "${b[@]}" --pipeline --workers 6 --json "$out/reports/${name}_pipeline6.json"
    if [ "$dynb" = 1 ]; then
      for bs in 1 4 8; do
        step "bench_${name}_batch$bs" "${b[@]}" --pipeline --workers 4 --batch "$bs" \
          --json "$out/reports/${name}_batch$bs.json"
      done
    else
      # a fixed-batch graph must refuse --batch 4 with a clear error (rc 2)
      step "bench_${name}_batch4_refused" "${b[@]}" --batch 4
    fi
    if [ "$kr" = 1 ]; then
      step "bench_${name}_buckets_off" "${b[@]}" --shape-buckets off \
        --json "$out/reports/${name}_buckets_off.json"
      step "bench_${name}_buckets_off_pipeline" "${b[@]}" --shape-buckets off --pipeline --workers 4 \
        --json "$out/reports/${name}_buckets_off_pipeline.json"
      # varying shapes with cuDNN's exhaustive search (ONNX Runtime's own default): slow,
      # so a short run
      step "bench_${name}_buckets_off_exhaustive" "$bin" bench --model "$m" "${sa[@]}" --ep "$gep" \
        --images "$imgs" --iters "$(( iters < 24 ? iters : 24 ))" --warmup 1 --rounds 1 \
        --shape-buckets off --cudnn-conv-algo-search exhaustive \
        --json "$out/reports/${name}_buckets_off_exhaustive.json"
    fi
    step "bench_${name}_tf32" "${b[@]}" --tf32 on --json "$out/reports/${name}_tf32.json"
    step "detect_${name}_cuda" "$bin" detect --model "$m" "${sa[@]}" --ep "$gep" --tf32 off \
      --jsonl "$out/dets/${name}_cuda.jsonl" "$imgs"
    if [ "$dynb" = 1 ]; then
      step "detect_${name}_cuda_batch8" "$bin" detect --model "$m" "${sa[@]}" --ep "$gep" --batch 8 \
        --jsonl "$out/dets/${name}_cuda_b8.jsonl" "$imgs"
    fi
  done
  nvidia-smi > "$out/logs/nvidia-smi-end.log" 2>&1
fi

# the summary
python3 - "$out" "$gpu" "$reason" "$bin" "$root" "$run_gpu_part" "$gep" <<'PY'
import json, os, sys, datetime, platform
out, gpu, reason, binary, root = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4], sys.argv[5]
run_gpu_part, gpu_ep = sys.argv[6] == "1", sys.argv[7]
steps = {}
for line in open(os.path.join(out, "steps.tsv")):
    name, rc, sec = line.rstrip("\n").split("\t")
    steps[name] = {"rc": int(rc), "seconds": round(float(sec or 0), 2)}
    mem = os.path.join(out, "logs", name + ".mem")
    if os.path.isfile(mem):
        vals = [int(v) for v in open(mem).read().split() if v.strip().isdigit()]
        if vals:
            steps[name]["gpu_mem_peak_mib"] = max(vals)

def report(name):
    p = os.path.join(out, "reports", name + ".json")
    if not os.path.isfile(p):
        return None
    r = json.load(open(p))
    st = r.get("stages", {})
    bare = r.get("bare_run") or {}
    s = {
        "throughput_ips": r.get("throughput_ips"),
        "inference_p50_ms": st.get("inference", {}).get("p50_ms"),
        "end_to_end_p50_ms": st.get("end_to_end", {}).get("p50_ms"),
        "one_time_ms": r.get("one_time"),
        "detections_per_image": r.get("detections_per_image"),
        "ep_check": r.get("ep_check"),
        "ep_elsewhere": r.get("ep_elsewhere", []),
    }
    if bare:
        s["bare_ips"] = bare.get("throughput_ips")
        s["bare_batch"] = bare.get("batch")
        s["share_of_bare"] = (r["throughput_ips"] / bare["throughput_ips"]) if bare.get("throughput_ips") else None
    return s

sys.path.insert(0, os.path.join(root, "scripts"))
from compare_dets import agreement as compare, load  # noqa: E402


def agreement(ref_path, other_path):
    if not (os.path.isfile(ref_path) and os.path.isfile(other_path)):
        return None
    return compare(load(ref_path), load(other_path))

models = sorted({k.split("_", 2)[2] for k in steps if k.startswith("cpu_detect_")})
summary = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"host": platform.node(), "cpus": os.cpu_count()},
    "binary": binary, "gpu": gpu, "skipped": "" if gpu else reason,
    "gpu_part_ep": gpu_ep if run_gpu_part else None,
    "cpu": {}, "gpu_results": {}, "steps": steps, "failures": [],
}
smi = os.path.join(out, "logs", "nvidia-smi.log")
if os.path.isfile(smi):
    summary["machine"]["nvidia_smi"] = open(smi).read().strip()[:500]
for m in models:
    summary["cpu"][m] = {"ok": steps.get("cpu_detect_" + m, {}).get("rc") == 0
                         and steps.get("cpu_bench_" + m, {}).get("rc") == 0,
                         "bench": report(m + "_cpu")}
    if run_gpu_part:
        g = {k[len(m) + 1:]: report(k) for k in
             [m + s for s in ("_seq_strict", "_pipeline", "_pipeline6", "_batch1", "_batch4", "_batch8",
                              "_buckets_off", "_buckets_off_pipeline", "_buckets_off_exhaustive", "_tf32")]}
        g = {k: v for k, v in g.items() if v is not None}
        g["strict_ep_passed"] = steps.get(f"bench_{m}_seq_strict", {}).get("rc") == 0
        d = os.path.join(out, "dets")
        g["cuda_vs_cpu"] = agreement(os.path.join(d, m + "_cpu.jsonl"), os.path.join(d, m + "_cuda.jsonl"))
        g["cuda_batch8_vs_batch1"] = agreement(os.path.join(d, m + "_cuda.jsonl"),
                                               os.path.join(d, m + "_cuda_b8.jsonl"))
        summary["gpu_results"][m] = g
for name, s in steps.items():
    expect_fail = name.endswith("_refused")
    if (s["rc"] != 0) != expect_fail and name != "inspect_cuda_probe":
        summary["failures"].append(name)
tmp = os.path.join(out, ".gpu-check.json.tmp")
json.dump(summary, open(tmp, "w"), indent=1)
os.replace(tmp, os.path.join(out, "gpu-check.json"))
print(f"gpu-check: summary in {os.path.join(out, 'gpu-check.json')}", file=sys.stderr)
sys.exit(0 if not summary["failures"] else 1)
PY
rc=$?
if [ "$gpu" != 1 ]; then
  [ "$rc" != 0 ] && echo "gpu-check: failed steps (see the summary's \"failures\")" >&2
  echo "gpu-check: $reason; ran the CPU parts only (exit 3)" >&2
  exit 3
fi
exit $rc
