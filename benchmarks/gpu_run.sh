#!/usr/bin/env bash
# The GPU rows of benchmarks/README.md, in one call on a lent H100 (see the device tool): training
# throughput against sentence-transformers on a MiniLM-shaped model, then a from-scratch MiniLM-shaped
# pretraining run (crop + MoCo, Wikipedia sample) sized to ~6 minutes, evaluated on SciFact before and
# after. Expects .devcarry/{tokenizer,data/scifact,data/enwiki} and .whl/ (faiss-cpu, pytrec_eval wheels).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT" runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:src
C="python3 -m contriever.cli.main"
SCI=.devcarry/data/scifact
TOK=.devcarry/tokenizer
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
log() { echo "[$(date +%H:%M:%S)] $*"; }

log "prepare"
$C prepare --input .devcarry/data/enwiki/part-0*.jsonl.gz --model $TOK --output data/enwiki --workers 16 2>/dev/null

log "MiniLM-shaped random model for the throughput benchmark"
python3 -c "
from contriever.model.encoder import Encoder
Encoder.from_scratch('$TOK', hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, seed=0).save('/tmp/minilm-shape')"
python3 benchmarks/train_throughput.py --data $SCI --model /tmp/minilm-shape --batch-size 128 --max-length 256 \
  --steps 20 --output "$OUT/train_throughput_gpu.json"

SETS=(--set "model.path=\"$TOK\"" --set "eval.data=\"$SCI\"")
log "before: the random initialisation (one update at learning rate 0)"
$C pretrain --config configs/gpu-minilm.toml "${SETS[@]}" --set train.steps=1 --set optim.lr=0.0 \
  --set train.eval_every=0 --output runs/gpu-init 2>/dev/null
$C evaluate --data $SCI --model runs/gpu-init/model --output runs/gpu-init/test | tee "$OUT/before.txt"

log "speed probe: 60 updates"
$C pretrain --config configs/gpu-minilm.toml "${SETS[@]}" --set train.steps=60 --set train.eval_every=0 \
  --output runs/gpu-probe 2>/dev/null
rate=$(python3 -c "import json; r=[json.loads(l) for l in open('runs/gpu-probe/metrics.jsonl')]; print(r[-1]['pairs_per_s'])")
steps=$(python3 -c "print(int($rate * ${SECONDS_BUDGET:-330} / 512 // 100 * 100))")
log "probe: $rate pairs/s -> $steps updates"

$C pretrain --config configs/gpu-minilm.toml "${SETS[@]}" --set train.steps=$steps --set train.max_minutes=7 \
  --output runs/gpu-minilm 2>"$OUT/pretrain_stderr.txt" || { tail -30 "$OUT/pretrain_stderr.txt"; exit 1; }
$C evaluate --data $SCI --model runs/gpu-minilm/model --output runs/gpu-minilm/test | tee "$OUT/after.txt"
cp runs/gpu-minilm/metrics.jsonl runs/gpu-minilm/summary.json runs/gpu-minilm/training.png "$OUT/"
cp runs/gpu-minilm/test/metrics.json "$OUT/after_metrics.json"; cp runs/gpu-init/test/metrics.json "$OUT/before_metrics.json"
log "done"
