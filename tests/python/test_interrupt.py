"""Long calls release the GIL; Ctrl-C stops training within a second and writes nothing."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import lowbit

# The children answer Ctrl-C with KeyboardInterrupt even when started with SIGINT ignored (as
# everything a non-interactive shell runs in the background is): Python installs its handler only
# over the default disposition.
CHILD = textwrap.dedent("""
    import signal, sys, time, lowbit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    data = lowbit.Dataset(lowbit.default_dataset_dir())
    lowbit.set_num_threads(1)
    started = []
    def progress(p):
        if not started:
            started.append(1)
            print("training", flush=True)
    try:
        model = lowbit.train(data, "784-256-128-10", epochs=100, callback=progress)
        model.save(sys.argv[1])
    except KeyboardInterrupt:
        print("interrupted", time.monotonic(), flush=True)
        sys.exit(7)
""")


def test_ctrl_c_during_training_raises_keyboard_interrupt_within_a_second(tmp_path):
    out = tmp_path / "model.lbm"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "training"
        time.sleep(0.5)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert child.wait(timeout=30) == 7
    finally:
        child.kill()
    assert line[0] == "interrupted"
    assert float(line[1]) - sent < 1.0
    assert os.listdir(tmp_path) == []  # no model, no temporary file


def test_long_calls_release_the_gil(fashion, small_model):
    done = threading.Event()

    def work():
        for _ in range(3):
            lowbit.evaluate(small_model, fashion, split="train")
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    spins = 0
    while not done.is_set():
        spins += 1
    worker.join()
    assert spins > 10000  # the main thread kept running Python while lowbit computed


CHECKPOINTED = textwrap.dedent("""
    import signal, sys, time, lowbit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    data = lowbit.Dataset(lowbit.default_dataset_dir())
    lowbit.set_num_threads(1)
    args = dict(epochs=3, train_samples=6000, checkpoint_dir=sys.argv[1], checkpoint_every=20, resume=True, progress=False)
    started = []
    slow = len(sys.argv) > 3  # the run to interrupt: slowed down, so that the signal lands mid-run
    def progress(p):
        if not started:
            started.append(1)
            print("training", flush=True)
        if slow:
            time.sleep(0.005)
    try:
        model = lowbit.train(data, "784-64-10", callback=progress, **args)
    except lowbit.Interrupted as e:
        print("interrupted", str(e).replace(" ", "_"), flush=True)
        sys.exit(7)
    model.save(sys.argv[2])
    print("resumed_at", model.report.get("resumed_at_step", -1), flush=True)
""")


def test_ctrl_c_writes_a_checkpoint_and_resume_gives_the_same_model(tmp_path):
    first = subprocess.Popen([sys.executable, "-c", CHECKPOINTED, str(tmp_path / "ck"), str(tmp_path / "a.lbm"), "slow"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "training"
        time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        line = first.stdout.readline().split()
        assert first.wait(timeout=30) == 7
    finally:
        first.kill()
    assert line[0] == "interrupted" and "checkpoint_saved_to" in line[1]
    assert (tmp_path / "ck" / "checkpoint.lbm").exists() and not (tmp_path / "a.lbm").exists()
    resumed = subprocess.run([sys.executable, "-c", CHECKPOINTED, str(tmp_path / "ck"), str(tmp_path / "a.lbm")],
                             capture_output=True, text=True, check=True)
    assert int(resumed.stdout.split()[-1]) > 0
    uninterrupted = subprocess.run([sys.executable, "-c", CHECKPOINTED, str(tmp_path / "fresh"), str(tmp_path / "b.lbm")],
                                   capture_output=True, text=True, check=True)
    assert int(uninterrupted.stdout.split()[-1]) == -1
    assert (tmp_path / "a.lbm").read_bytes() == (tmp_path / "b.lbm").read_bytes()
