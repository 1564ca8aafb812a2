#!/usr/bin/env bash
# Why did the from-scratch GPU run lose SciFact quality as training went on? Short runs (1,000 updates,
# batch 512) of configs/gpu-minilm.toml, each evaluated at 128 and 256 tokens. Same set-up as gpu_run.sh.
set -euo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT" runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:src
C="python3 -m contriever.cli.main"; SCI=.devcarry/data/scifact; TOK=.devcarry/tokenizer
$C prepare --input .devcarry/data/enwiki/part-0*.jsonl.gz --model $TOK --output data/enwiki --workers 16 2>/dev/null
for variant in "base:" "lr1e-4:optim.lr=1e-4" "ratio-max-1:data.ratio_max=1.0" "normalize:model.normalize=true"; do
  name=${variant%%:*}; set_arg=${variant#*:}
  extra=(--set "model.path=\"$TOK\"" --set "eval.data=\"$SCI\"" --set train.steps=1000 --set train.eval_every=500
         --set optim.warmup_steps=200 --set eval.max_length=128)
  [ -n "$set_arg" ] && extra+=(--set "$set_arg")
  $C pretrain --config configs/gpu-minilm.toml "${extra[@]}" --output runs/diag-$name 2>runs/diag-$name.err | grep step || tail -5 runs/diag-$name.err
  for len in 128 256; do
    echo "== $name at $len tokens"
    $C evaluate --data $SCI --model runs/diag-$name/model --max-length $len 2>/dev/null | tail -1
  done
  tail -1 runs/diag-$name/metrics.jsonl | cut -c1-300
done | tee "$OUT/diagnose.txt"
