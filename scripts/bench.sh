#!/usr/bin/env bash
# Every performance figure in the README, measured in one run on this machine,
# each next to its reference (faiss, PyTorch) measured in the same run.
# Usage: scripts/bench.sh [OUT_DIR]   (about 15-25 minutes on 2 cores, plus the
# CLIP memory build: for 12,288 images about 1 hour on both sides on the README's
# AVX-512 machine, 3.5 hours on its AVX2 one; set
# ECHO_BENCH_MEMORY_IMAGES to build a smaller memory)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_build_tools
OUT="${1:-target/bench}"
mkdir -p "$OUT"
# The Python references run in the project's own virtual environment, never the
# system interpreter (scripts/ref_venv.py; created on first use).
PY="$(python3 scripts/ref_venv.py)"
cargo build --release --locked
BIN=target/release/echo-workbench
DATA="$(mktemp -d)"
trap 'rm -rf "$DATA"' EXIT
{ echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"; uptime; } > "$OUT/machine.txt"

for kind in random clustered; do
    echo "== HNSW on 100,000 $kind unit vectors (dim 512), hnsw_rs vs faiss"
    "$BIN" bench hnsw --data "$kind" --n 100000 --dim 512 --queries 1000 \
        --m 16 --ef-construction 100 --ef-search 16,32,64,128,256 \
        --write-data "$DATA/$kind" > "$OUT/hnsw_$kind.json"
    "$PY" scripts/bench_faiss.py "$DATA/$kind" --dim 512 --m 16 \
        --ef-construction 100 --ef-search 16,32,64,128,256 > "$OUT/faiss_$kind.json"
    rm -rf "${DATA:?}/$kind"
done

echo "== memory build: 1,000 images of 1024 x 1024, weight-free descriptor"
"$BIN" bench memory-build --images 1000 --size 1024 > "$OUT/memory_build.json"

echo "== anomaly map: 1024 x 1024 query against 4 references, weight-free patch features"
"$BIN" bench anomaly --size 1024 --k 4 --runs 20 > "$OUT/anomaly.json"

echo "== a ViT-B/16 layer's dense products: gemm against the packed kernel (where the CPU has AVX2 + FMA)"
cargo build --release --locked --example dense_products
target/release/examples/dense_products > "$OUT/dense_products.txt"

echo "== CLIP ViT-B/16 (random weights), candle vs PyTorch"
"$PY" scripts/bench_clip_torch.py "$DATA/clip" > "$OUT/clip_torch.json"
"$BIN" bench clip --model "$DATA/clip" > "$OUT/clip_candle.json"

echo "== anomaly map: CLIP ViT-B/16 patch tokens (layers 6, 9), 1024 x 1024 query against 4 references, ours vs PyTorch"
"$BIN" bench anomaly --backbone "clip:$DATA/clip" --size 1024 --k 4 --runs 20 \
    --write-images "$DATA/anomaly" > "$OUT/anomaly_clip.json"
THREADS="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["threads"])' "$OUT/anomaly_clip.json")"
"$PY" scripts/bench_anomaly_clip_torch.py "$DATA/clip" --images "$DATA/anomaly" \
    --runs 20 --threads "$THREADS" > "$OUT/anomaly_clip_torch.json"

echo "== local Qwen3-VL (random weights of realistic width, 1.1 GB), two-image prompt: prefill and decode, ours vs transformers"
"$PY" scripts/bench_qwen3vl_local.py "$DATA/qwen" --threads "$THREADS" --tokens 16 \
    --binary "$BIN" > "$OUT/qwen_local.json"
rm -rf "${DATA:?}/qwen"

# Echo's memory: 12,288 images. 1,000 distinct 1024 x 1024 PNGs (about 2 GB) plus
# hard links to them; every file is still read and decoded on both sides.
MEMORY_IMAGES="${ECHO_BENCH_MEMORY_IMAGES:-12288}"
echo "== memory build: $MEMORY_IMAGES images of 1024 x 1024 PNG, CLIP ViT-B/16 + HNSW, ours vs PIL + transformers + faiss"
"$BIN" bench memory-build --images "$MEMORY_IMAGES" --distinct 1000 --size 1024 \
    --embedder "clip:$DATA/clip" --write-images "$DATA/memory" > "$OUT/memory_build_clip.json"
"$PY" scripts/bench_memory_build_torch.py "$DATA/memory" "$DATA/clip" \
    --images "$MEMORY_IMAGES" --threads "$THREADS" > "$OUT/memory_build_torch.json"
rm -rf "${DATA:?}/memory"

echo "== batch runner: mock server at 200 ms, 1024 x 1024 PNG questions, concurrency 8/32/128"
"$BIN" bench runner --latency-ms 200 --concurrency 8,32,128 > "$OUT/runner.json"

echo "== journals at scale: 40,000 questions with ~4 KB traces; resume memory, 50-run list, one trace"
"$BIN" bench journal --questions 40000 --record-bytes 4096 --runs 50 > "$OUT/journal.json"

"$PY" scripts/bench_report.py "$OUT"
