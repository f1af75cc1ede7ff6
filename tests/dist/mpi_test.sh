#!/usr/bin/env bash
# Data-parallel training under mpirun (Open MPI, localhost, --oversubscribe): with the same
# --shards, lowbit train, qat and distill write the same model bytes on 1, 2 and 4 ranks; a rank
# killed mid-training makes the job end with an error within seconds (no hang), and --resume
# finishes the run with the bytes of an uninterrupted one.
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

qat=(qat --model "$work/train1.lbm" --data "$data" --train-samples 2000 --epochs 1 --bits 4 --threads 1 --shards 2)
for n in 1 2; do ranks "$n" "${qat[@]}" --out "$work/qat$n.lbm" >"$work/qat$n.log" 2>&1 || cat "$work/qat$n.log"; done
check "qat: 2 ranks give 1 rank's bytes" cmp -s "$work/qat1.lbm" "$work/qat2.lbm"

distill=(distill --teacher "$work/train1.lbm" --student 784-16-10 --data "$data" --train-samples 2000 --epochs 1 --bits 4
         --qat-epochs 1 --teacher-cache none --threads 1 --shards 2)
for n in 1 2; do ranks "$n" "${distill[@]}" --out "$work/distill$n.lbm" >"$work/distill$n.log" 2>&1 || cat "$work/distill$n.log"; done
check "distill --bits: 2 ranks give 1 rank's bytes" cmp -s "$work/distill1.lbm" "$work/distill2.lbm"

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

echo "$failures failed"
(( failures == 0 ))
