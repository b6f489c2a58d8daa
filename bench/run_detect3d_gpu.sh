#!/usr/bin/env bash
# The 3D benchmark on a GPU machine: one process per class and protocol, all in parallel.
#
#   PYTHONPATH=src bash bench/run_detect3d_gpu.sh OUTDIR [DEVICE] [LONG_STEPS]
#
# Runs bench/bench_detect3d.py --device DEVICE (default cuda) on the test split for every
# class: FPFH + the point network at the defaults (full MPAS training), the network trained
# on unseen types only, and the network trained LONG_STEPS steps (default 900; more than
# the CPU defaults, which were sized for 5 minutes on 2 CPU cores). The fusion setting
# applied to the saved scores is the class default (chosen on validation, never on test).
# Needs: torch (CUDA), numpy, scipy, scikit-learn, numba, matplotlib, pyyaml, pillow; no faiss.
set -u
out=${1:?usage: run_detect3d_gpu.sh OUTDIR [DEVICE] [LONG_STEPS]}
device=${2:-cuda}
long=${3:-900}
py=${PYTHON:-python3}
read -r -a extra <<< "${BENCH_EXTRA:-}"  # e.g. smaller clouds for a smoke test
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONUNBUFFERED=1
fusion=$(cd "$here" && "$py" -c "import bench_detect3d as b; from defectforge.detect3d.pointnet import \
PointTransformerAD as P; print(b.detector_fusion_label(P()))")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
echo "start $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) fusion $fusion"
pids=()
for c in flange bracket spur_gear hex_bolt; do
  "$py" "$here/bench_detect3d.py" "${extra[@]}" --device "$device" --classes "$c" --train-ops full --out "" \
    --raw "$out/full_$c.pkl" --json "$out/full_$c.json" > "$out/full_$c.log" 2>&1 & pids+=($!)
  "$py" "$here/bench_detect3d.py" "${extra[@]}" --device "$device" --classes "$c" --train-ops unseen --detectors pointnet \
    --out "" --raw "$out/unseen_$c.pkl" > "$out/unseen_$c.log" 2>&1 & pids+=($!)
  "$py" "$here/bench_detect3d.py" "${extra[@]}" --device "$device" --classes "$c" --train-ops full --detectors pointnet \
    --steps "$long" --out "" --raw "$out/long_$c.pkl" > "$out/long_$c.log" 2>&1 & pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
echo "fits done $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) rc $rc"
grep -h "fit " "$out"/*.log
"$py" "$here/bench_detect3d.py" --rescore "$out"/full_*.pkl "$out"/unseen_*.pkl --fusion "$fusion" \
  --json "$out/test_defaults.json"
"$py" - "$out" "$fusion" "$long" <<'PY'
import pickle, sys
from pathlib import Path
out, fusion, long = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for c in ("flange", "bracket", "spur_gear", "hex_bolt"):  # the long runs under their own protocol name
    p = out / f"long_{c}.pkl"
    if p.exists():
        raw = pickle.loads(p.read_bytes())
        raw["args"]["train_ops"] = f"full, {long} steps"
        p.write_bytes(pickle.dumps(raw))
PY
"$py" "$here/bench_detect3d.py" --rescore "$out"/full_*.pkl "$out"/long_*.pkl --fusion "$fusion" \
  --json "$out/test_long.json"
echo "end $(date -u +%H:%M:%S) rc $rc"
