#!/usr/bin/env bash
# Every real CPU run behind benchmarks/README.md, in order; a step whose output exists is skipped,
# so the suite can be stopped and started again. Run from the repository root after `make setup`:
#   bash benchmarks/cpu_suite.sh [step ...]      (steps: eval bench fewshot scratch ablations adapt)
set -euo pipefail
export PATH="$PWD/.venv/bin:$PATH"
DATA=${DATA:-../shared/data/scifact}
WIKI=${WIKI:-../shared/data/enwiki-2015-sample}
R=runs
mkdir -p "$R" outputs
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(eval bench fewshot scratch ablations adapt)
log() { echo "[$(date +%H:%M:%S)] $*"; }
evaluate() {  # evaluate MODEL OUTPUT: SciFact test, the same command for every row
  [ -f "$2/metrics.json" ] || contriever evaluate --data "$DATA" --model "$1" --output "$2"
}

for step in "${steps[@]}"; do case $step in
eval)  # zero-shot: BM25, the default model, hybrid
  log "evaluate BM25, default, hybrid"
  [ -f outputs/scifact/bm25/metrics.json ] || \
    contriever evaluate --data "$DATA" --model bm25 --model default --model hybrid:default --output outputs/scifact
  ;;
bench)  # speed: the machine's matmul ceiling; encoding and a training step against sentence-transformers
  log "matmul peak"; python benchmarks/matmul_peak.py
  log "dropout step"; python benchmarks/dropout_step.py --batch-size 32 --length 256 --repeats 3
  log "encode throughput"; python benchmarks/encode_throughput.py --n 1000 --batch-size 64
  log "train throughput"; python benchmarks/train_throughput.py --batch-size 32 --max-length 128 --steps 5
  ;;
fewshot)  # few-shot fine-tuning of the default model on SciFact train (dev held out): AdamW, then
  # ASAM in the same 30 minutes (its update costs two forward-backward passes, so half the updates)
  for variant in "adamw:" "asam:optim.name=asam train.steps=36 train.eval_every=12 train.save_every=12"; do
    name=${variant%%:*}; out=$R/fewshot-$name; sets=()
    for kv in ${variant#*:}; do sets+=(--set "$kv"); done
    [ -f $out/summary.json ] || contriever finetune --config configs/fewshot-scifact.toml --rounds 1 \
      "${sets[@]}" --output $out
    evaluate $out/best $out/test
  done
  # the paper's second round, on its own: hard negatives mined with the AdamW model, then one extra
  # negative per query, a mined one 10% of the time, else random; 44 dearer updates in the same budget
  mined=$R/fewshot-round2-negatives.jsonl
  [ -f $mined ] || contriever mine --data "$DATA" --model $R/fewshot-adamw/best --output $mined
  [ -f $R/fewshot-round2/summary.json ] || contriever finetune --config configs/fewshot-scifact.toml --rounds 1 \
    --set finetune.train=$mined --set finetune.corpus="$DATA" --set finetune.n_negatives=1 \
    --set finetune.hard_negative_prob=0.1 --set train.steps=44 --set train.eval_every=22 \
    --set train.save_every=22 --output $R/fewshot-round2
  evaluate $R/fewshot-round2/best $R/fewshot-round2/test
  ;;
scratch)  # from scratch: a random 4-layer BERT, crop + MoCo on Wikipedia, 20 minutes
  [ -f data/enwiki/meta.json ] || contriever prepare --input $WIKI/part-00.jsonl.gz $WIKI/part-01.jsonl.gz --output data/enwiki
  # "before": the same random initialisation (seed 0) saved by one update at learning rate 0
  [ -f $R/scratch-init/summary.json ] || contriever pretrain --config configs/cpu-small.toml \
    --set train.steps=1 --set optim.lr=0.0 --set train.max_minutes=0 --output $R/scratch-init
  evaluate $R/scratch-init/model $R/scratch-init/test
  [ -f $R/cpu-small/summary.json ] || contriever pretrain --config configs/cpu-small.toml --output $R/cpu-small
  evaluate $R/cpu-small/model $R/cpu-small/test
  ;;
ablations)  # the same 1,200 updates each: crop vs ICT, MoCo vs in-batch, deletion vs none
  for variant in "crop-moco-delete:" "ict:data.method=ict" "inbatch:loss.kind=inbatch" "no-delete:data.augmentation=none"; do
    name=${variant%%:*}; set_arg=${variant#*:}; out=$R/ablation-$name
    extra=(--set train.steps=1200 --set train.max_minutes=0)
    [ -n "$set_arg" ] && extra+=(--set "$set_arg")
    [ -f $out/summary.json ] || contriever pretrain --config configs/cpu-small.toml "${extra[@]}" --output $out
    evaluate $out/model $out/test
  done
  ;;
adapt)  # domain adaptation: the default model, crop + MoCo on the SciFact corpus alone (no queries)
  [ -f data/scifact-corpus/meta.json ] || contriever prepare --input $DATA/corpus.jsonl* --include-title --output data/scifact-corpus
  [ -f $R/scifact-adapt/summary.json ] || contriever pretrain --config configs/scifact-adapt.toml --output $R/scifact-adapt
  evaluate $R/scifact-adapt/model $R/scifact-adapt/test
  ;;
*) echo "unknown step $step" >&2; exit 2 ;;
esac; done
log "done"
