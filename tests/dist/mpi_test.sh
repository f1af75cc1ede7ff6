#!/usr/bin/env bash
# Data-parallel training under mpirun (Open MPI, localhost, --oversubscribe): with the same
# --shards, lowbit train, qat and distill write the same model bytes on 1, 2 and 4 ranks (with
# gradients and weights shared in memory, and with gradients sent by MPI); a rank killed
# mid-training makes the job end with an error within seconds (no hang), and --resume finishes
# the run with the bytes of an uninterrupted one.
# Usage: mpi_test.sh LOWBIT_BINARY MPIEXEC DATASET_DIR
set -uo pipefail
lowbit=$1 mpiexec=$2 data=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
failures=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then echo "ok: $name"; else echo "FAIL: $name"; failures=$((failures + 1)); fi
}
ranks() {  # ranks N ARGS...: lowbit on N ranks (1: no launcher)
  local n=$1; shift
  if (( n == 1 )); then "$lowbit" "$@"; else "$mpiexec" --oversubscribe -np "$n" "$lowbit" "$@"; fi
}

train=(train --data "$data" --arch 784-32-10 --train-samples 3000 --epochs 2 --validation-split 0.1 --threads 1 --shards 4)
for n in 1 2 4; do ranks "$n" "${train[@]}" --out "$work/train$n.lbm" >"$work/train$n.log" 2>&1 || cat "$work/train$n.log"; done
check "train: 2 ranks give 1 rank's bytes" cmp -s "$work/train1.lbm" "$work/train2.lbm"
check "train: 4 ranks give 1 rank's bytes" cmp -s "$work/train1.lbm" "$work/train4.lbm"
check "train: rank 0 alone prints" test "$(grep -c '^test accuracy' "$work/train2.log")" -eq 1
check "train: ranks on one machine share gradients and weights in memory" grep -q "shared in memory" "$work/train2.log"
# Gradients sent by MPI instead, in many small buckets while the backward pass runs: the same bytes.
ranks 2 "${train[@]}" --no-shared-memory --bucket-mb 0.001 --out "$work/train2b.lbm" >"$work/train2b.log" 2>&1 || cat "$work/train2b.log"
check "train: gradients sent in small buckets give the same bytes" cmp -s "$work/train1.lbm" "$work/train2b.lbm"
check "train: the buckets are reported" grep -q "gradient bucket(s) per step" "$work/train2b.log"

qat=(qat --model "$work/train1.lbm" --data "$data" --train-samples 2000 --epochs 1 --bits 4 --threads 1 --shards 2)
for n in 1 2; do ranks "$n" "${qat[@]}" --out "$work/qat$n.lbm" >"$work/qat$n.log" 2>&1 || cat "$work/qat$n.log"; done
check "qat: 2 ranks give 1 rank's bytes" cmp -s "$work/qat1.lbm" "$work/qat2.lbm"

distill=(distill --teacher "$work/train1.lbm" --student 784-16-10 --data "$data" --train-samples 2000 --epochs 1 --bits 4
         --qat-epochs 1 --teacher-cache none --threads 1 --shards 2)
for n in 1 2; do ranks "$n" "${distill[@]}" --out "$work/distill$n.lbm" >"$work/distill$n.log" 2>&1 || cat "$work/distill$n.log"; done
check "distill --bits: 2 ranks give 1 rank's bytes" cmp -s "$work/distill1.lbm" "$work/distill2.lbm"

# Calibration over ranks: each rank observes its share of the batches, the histograms are merged
# exactly, and the ranges file is the one process's, byte for byte.
for method in moving_average kl; do
  for n in 1 2 4; do
    ranks "$n" calibrate --model "$work/train1.lbm" --data "$data" --method "$method" --samples 1500 --threads 1 \
      --out "$work/ranges-$method-$n.json" >/dev/null 2>&1 || echo "calibrate on $n ranks failed"
  done
  check "calibrate --method $method: 2 ranks write 1 rank's file" cmp -s "$work/ranges-$method-1.json" "$work/ranges-$method-2.json"
  check "calibrate --method $method: 4 ranks write 1 rank's file" cmp -s "$work/ranges-$method-1.json" "$work/ranges-$method-4.json"
done

# A sweep over ranks: the variants dealt out, the same files and figures as one process's; a rank
# killed mid-sweep ends the job, and the same command finishes the rest.
sweep=(sweep --model "$work/train1.lbm" --data "$data" --bits 8,6,4,3,2 --modes full,dynamic --rounding nearest,gptq
       --no-speed --threads 1 --validation-samples 1000 --json)
"$lowbit" "${sweep[@]}" --out "$work/sweep1" 2>/dev/null | tail -1 >"$work/sweep1.json"
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${sweep[@]}" --out "$work/sweep2" --time-budget 0.1 2>/dev/null >"$work/sweep2-part.log"
check "sweep: a time budget leaves 2 ranks' sweep unfinished" grep -q "run the same command again" "$work/sweep2-part.log"
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${sweep[@]}" --out "$work/sweep2" 2>/dev/null | tail -1 >"$work/sweep2.json"
same_figures() {  # the sweeps' JSON lines, but for the folders' names and the seconds spent
  python3 - "$1" "$2" <<'PY'
import json, sys
def strip(x, folder):
    if isinstance(x, dict): return {k: strip(v, folder) for k, v in x.items() if k not in ("seconds", "reused")}
    if isinstance(x, list): return [strip(v, folder) for v in x]
    return x.replace(folder, "DIR") if isinstance(x, str) else x
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if strip(a, a["out"]) == strip(b, b["out"]) and a["complete"] and b["complete"] else 1)
PY
}
check "sweep: 2 ranks (resumed) give 1 rank's figures" same_figures "$work/sweep1.json" "$work/sweep2.json"
check "sweep: 2 ranks write 1 rank's variants" diff -q <(cd "$work/sweep1" && md5sum -- *.lbm) <(cd "$work/sweep2" && md5sum -- *.lbm)
check "sweep: rank 0 writes the report" test -s "$work/sweep2/report.html"
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${sweep[@]}" --out "$work/sweep3" >/dev/null 2>&1 &
job=$!
for _ in $(seq 300); do (( $(ls "$work/sweep3" 2>/dev/null | grep -c '\.lbm$') >= 2 )) && break; sleep 0.05; done
kill -9 "$(pgrep -n -f "$work/sweep3")"
for _ in $(seq 200); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then check "a killed rank ends the sweep within 20 s" false; kill -9 "$job"; else wait "$job"; fi
rc=$?
check "a killed rank ends the sweep with a non-zero exit (killed mid-sweep)" test "$rc" -ne 0
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${sweep[@]}" --out "$work/sweep3" 2>/dev/null | tail -1 >"$work/sweep3.json"
check "sweep: after a killed rank, the same command finishes with 1 rank's figures" same_figures "$work/sweep1.json" "$work/sweep3.json"
check "sweep: the finished sweep reused what the killed one had done and measured the rest" \
  python3 -c "import json,sys; v=json.load(open('$work/sweep3.json'))['variants']; sys.exit(0 if any(x['reused'] for x in v) and not all(x['reused'] for x in v) else 1)"

# A rank killed mid-training: the job ends, with an error, within seconds; --resume completes it.
long=(train --data "$data" --arch 784-32-10 --train-samples 20000 --epochs 6 --threads 1 --shards 2)
"$lowbit" "${long[@]}" --out "$work/long-reference.lbm" >/dev/null
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${long[@]}" --checkpoint-dir "$work/ck" --checkpoint-every 50 \
  --out "$work/long.lbm" >"$work/killed.log" 2>&1 &
job=$!
for _ in $(seq 300); do [[ -f "$work/ck/checkpoint.lbm" ]] && break; sleep 0.05; done
victim=$(pgrep -n -f "$work/long.lbm")
kill -9 "$victim"
killed_at=$(date +%s)
for _ in $(seq 200); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then
  check "the job ends within 20 s of a rank's death" false
  kill -9 "$job"; pkill -9 -f "$work/long.lbm"
else
  wait "$job"; rc=$?
  echo "the job ended $(( $(date +%s) - killed_at )) s after rank kill, exit $rc"
  check "a killed rank ends the job with a non-zero exit" test "$rc" -ne 0
fi
check "no model written by the killed job" test ! -e "$work/long.lbm"
"$mpiexec" --oversubscribe -np 2 "$lowbit" "${long[@]}" --checkpoint-dir "$work/ck" --checkpoint-every 50 --resume \
  --out "$work/long.lbm" >"$work/resumed.log" 2>&1 || cat "$work/resumed.log"
check "the resumed job says where it resumed" grep -q "resumed from step" "$work/resumed.log"
check "resuming gives the uninterrupted run's bytes" cmp -s "$work/long.lbm" "$work/long-reference.lbm"

# A rank that fails (its data is missing) ends the job at once with its error, not a hang.
start=$(date +%s)
"$mpiexec" --oversubscribe -np 1 "$lowbit" "${train[@]}" --out "$work/half.lbm" : \
  -np 1 "$lowbit" train --data "$work/no-such-data" --arch 784-32-10 --threads 1 --shards 4 --out "$work/half.lbm" \
  >"$work/half.log" 2>&1
rc=$?
check "a failing rank ends the job with a non-zero exit" test "$rc" -ne 0
check "a failing rank ends the job within 20 s" test $(( $(date +%s) - start )) -le 20
check "the failing rank's error names its rank and the missing data" grep -q "error (rank 1 of 2): dataset directory .*no-such-data" "$work/half.log"
check "no model written by the failed job" test ! -e "$work/half.lbm"

echo "$failures failed"
(( failures == 0 ))
