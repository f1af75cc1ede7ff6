#!/usr/bin/env python3
"""Training survives being killed: `lowbit train` with checkpoints, killed with SIGKILL at 20
random moments (seeded, printed), never leaves a damaged or half-written model or checkpoint, and
resuming after each kill ends with the same model bytes as a run never stopped. Then SIGINT and
SIGTERM: training stops at a step boundary within a second, writes a checkpoint, says where, exits
130 / 143, and --resume finishes the run with the same bytes; the same for `lowbit qat` and for
both phases of `lowbit distill --bits`.

    kill_resume_test.py LOWBIT_BINARY DATASET_DIR [SEED]
"""
import filecmp
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

lowbit, data = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time()) % 100000
rng = random.Random(seed)
print(f"seed {seed} (rerun with: kill_resume_test.py LOWBIT DATA {seed})")
work = tempfile.mkdtemp(prefix="lowbit-kill-")
failures = 0
TRAIN = ["train", "--data", data, "--train-samples", "12000", "--epochs", "4", "--threads", "2", "--validation-split", "0.1"]


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"ok: {name}")
    else:
        failures += 1
        print(f"FAIL: {name} {detail}")


def run(args, ok_codes=(0,)):
    p = subprocess.run([lowbit, *args], capture_output=True, text=True)
    if p.returncode not in ok_codes:
        print(p.stdout, p.stderr)
        raise SystemExit(f"FAIL: lowbit {' '.join(args)} exited {p.returncode}")
    return p


def loads(path):
    """The file is a whole model file (every section's CRC checked), and a checkpoint's training
    state parses: lowbit info reads both."""
    p = subprocess.run([lowbit, "info", "--model", path], capture_output=True, text=True)
    is_checkpoint = os.path.basename(path).startswith("checkpoint")
    return p.returncode == 0 and (("training checkpoint:" in p.stdout) == is_checkpoint)


def files_intact(directory, out):
    """Every model or checkpoint file present loads; temporaries of killed saves are hidden names."""
    bad = [f for f in [out] + [os.path.join(directory, n) for n in os.listdir(directory) if not n.startswith(".")]
           if os.path.exists(f) and not loads(f)]
    return bad


reference = os.path.join(work, "reference.lbm")
start = time.monotonic()
run(TRAIN + ["--out", reference])
full = time.monotonic() - start
print(f"an uninterrupted run takes {full:.2f} s")

def wait_for_new(path, since, process, timeout=60.0):
    """Waits until `path` exists with a modification time after `since` (or the process ends)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        try:
            if os.stat(path).st_mtime_ns > since:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    return False


def mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


# 20 kills at random moments of a run with a checkpoint every 23 steps; each kill continues the
# previous run (--resume), and a copy of its checkpoint directory is resumed to the end. Even kills
# come at a random time after the start (loading data, resuming, training, saving), odd ones a
# random 0-20 ms after the run wrote a new checkpoint (so that they land inside training however
# slow the machine is).
chain = os.path.join(work, "chain")
out = os.path.join(work, "chain.lbm")
checkpoint = os.path.join(chain, "checkpoint.lbm")
landed = {"before the first checkpoint": 0, "during training": 0, "after the run ended": 0}
for i in range(20):
    before = mtime(checkpoint)
    p = subprocess.Popen([lowbit, *TRAIN, "--out", out, "--checkpoint-dir", chain, "--checkpoint-every", "23", "--resume"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if i % 2 == 0:
        moment = f"{rng.uniform(0.0, full * 0.8):.3f} s after the start"
        time.sleep(float(moment.split()[0]))
    else:
        wait_for_new(checkpoint, before, p)
        delay = rng.uniform(0.0, 0.02)
        moment = f"{delay * 1000:.1f} ms after a checkpoint"
        time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    code = p.wait()
    if code == 0:
        landed["after the run ended"] += 1
    elif not os.path.exists(checkpoint):
        landed["before the first checkpoint"] += 1
    else:
        landed["during training"] += 1
    bad = files_intact(chain, out) if os.path.isdir(chain) else []
    check(f"kill {i + 1} ({moment}) leaves every file whole", not bad, str(bad))
    if code != 0:  # killed: no model, or (killed after saving it) the whole, final one
        check(f"kill {i + 1}: no model, or the final one", not os.path.exists(out) or filecmp.cmp(out, reference, shallow=False))
    copy = os.path.join(work, f"copy{i}")
    if os.path.isdir(chain):
        shutil.copytree(chain, copy)
    finished = os.path.join(work, f"finished{i}.lbm")
    run(TRAIN + ["--out", finished, "--checkpoint-dir", copy, "--checkpoint-every", "23", "--resume"])
    check(f"kill {i + 1}: resuming gives the uninterrupted run's bytes", filecmp.cmp(finished, reference, shallow=False))
    shutil.rmtree(copy, ignore_errors=True)
    os.remove(finished)
    if os.path.exists(out):  # the chain finished: start it again
        shutil.rmtree(chain)
        os.remove(out)
print("kills landed:", ", ".join(f"{n} {k}" for k, n in landed.items()))
check("at least 8 kills landed during training", landed["during training"] >= 8, str(landed))


def interrupt(args, out, directory, sig, wait_for):
    """Runs `args` with checkpoints, sends `sig` once the checkpoint `wait_for` appears, checks the
    stop; returns the exit code."""
    p = subprocess.Popen([lowbit, *args, "--out", out, "--checkpoint-dir", directory, "--checkpoint-every", "40", "--resume"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_new(os.path.join(directory, wait_for), 0, p)
    time.sleep(rng.uniform(0.0, 0.02))
    sent = time.monotonic()
    p.send_signal(sig)
    stdout, stderr = p.communicate()
    took = time.monotonic() - sent
    if p.returncode == 0:
        return 0
    name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
    check(f"{args[0]} stopped by {name} exits {128 + sig}", p.returncode == 128 + sig, f"{p.returncode}: {stderr}")
    print(f"{args[0]} stopped {took * 1000:.0f} ms after {name}")
    check(f"{args[0]} stopped by {name} without hanging", took < 5.0, f"{took:.2f} s")
    check(f"{args[0]} says where its checkpoint is", "checkpoint saved to" in stderr and "--resume" in stderr, stderr)
    check(f"{args[0]}: no model written by the stopped run", not os.path.exists(out))
    return p.returncode


def stop_and_resume(args, reference, sig, wait_for, label):
    directory, out = os.path.join(work, label), os.path.join(work, label + ".lbm")
    code = interrupt(args, out, directory, sig, wait_for)
    check(f"{label}: the signal landed during training", code != 0)
    run(args + ["--out", out, "--checkpoint-dir", directory, "--checkpoint-every", "40", "--resume"])
    check(f"{label}: resumed run gives the uninterrupted run's bytes", filecmp.cmp(out, reference, shallow=False))


stop_and_resume(TRAIN, reference, signal.SIGINT, "checkpoint.lbm", "train-sigint")
stop_and_resume(TRAIN, reference, signal.SIGTERM, "checkpoint.lbm", "train-sigterm")

QAT = ["qat", "--model", reference, "--data", data, "--train-samples", "8000", "--epochs", "3", "--bits", "4",
       "--threads", "2"]
qat_reference = os.path.join(work, "qat-reference.lbm")
run(QAT + ["--out", qat_reference])
stop_and_resume(QAT, qat_reference, signal.SIGINT, "checkpoint.lbm", "qat")

DISTILL = ["distill", "--teacher", reference, "--student", "784-32-10", "--data", data, "--train-samples", "8000",
           "--epochs", "3", "--bits", "4", "--qat-epochs", "3", "--threads", "2", "--teacher-cache", "none"]
distill_reference = os.path.join(work, "distill-reference.lbm")
run(DISTILL + ["--out", distill_reference])
for wait_for, label in (("checkpoint.lbm", "distill-float-phase"), ("checkpoint-qat.lbm", "distill-qat-phase")):
    stop_and_resume(DISTILL, distill_reference, signal.SIGTERM, wait_for, label)

shutil.rmtree(work, ignore_errors=True)
print("all passed" if failures == 0 else f"{failures} failed")
sys.exit(1 if failures else 0)
