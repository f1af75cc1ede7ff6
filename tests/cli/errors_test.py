#!/usr/bin/env python3
"""Every row of docs/errors.md, run: the command in its last column (bash, with $LOWBIT, $DATA and
$WORK set, after the fixtures below are made in $WORK) must exit with the row's code and print one
line on stderr that contains the row's message excerpt (with $WORK expanded), and write no file
it was asked to write. The exit codes table of docs/errors.md must be the one tools/lowbit/main.cpp
implements.

    errors_test.py LOWBIT_BINARY DATASET_DIR DOCS_ERRORS_MD
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

lowbit, data, doc = sys.argv[1], sys.argv[2], sys.argv[3]
work = tempfile.mkdtemp(prefix="lowbit-errors-")
env = dict(os.environ, LOWBIT=lowbit, DATA=data, WORK=work)
failures = 0


def sh(command):
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)


def must(command):
    p = sh(command)
    if p.returncode != 0:
        print(p.stdout, p.stderr)
        raise SystemExit(f"FAIL: fixture command failed: {command}")


def model_file(sections, version=2):
    """A model file from (tag, flags, payload) sections (docs/format.md)."""
    out = b"LOWBITM\0" + struct.pack("<II", version, len(sections))
    for tag, flags, payload in sections:
        out += struct.pack("<4sIQII", tag, flags, len(payload), zlib.crc32(payload), 0) + payload
    return out


def sections_of(blob):
    version, count = struct.unpack_from("<II", blob, 8)
    pos, result = 16, []
    for _ in range(count):
        tag, flags, size, _, _ = struct.unpack_from("<4sIQII", blob, pos)
        result.append((tag, flags, blob[pos + 24:pos + 24 + size]))
        pos += 24 + size
    return result


def idx(path, magic_type, dims, payload):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload)


# ---- Fixtures --------------------------------------------------------------------------------
must('"$LOWBIT" train --data "$DATA" --arch 784-16-10 --train-samples 300 --epochs 1 --out "$WORK/m.lbm"')
good = open(f"{work}/m.lbm", "rb").read()
open(f"{work}/truncated.lbm", "wb").write(good[:300])
open(f"{work}/foreign.lbm", "wb").write(b"hello, not a model")
flipped = bytearray(good)
flipped[-5] ^= 0x10
open(f"{work}/flipped.lbm", "wb").write(bytes(flipped))
open(f"{work}/newer.lbm", "wb").write(model_file(sections_of(good), version=99))
open(f"{work}/future.lbm", "wb").write(model_file(sections_of(good) + [(b"XTRA", 1, b"{}")]))
must('"$LOWBIT" train --data "$DATA" --arch 784-16-10 --train-samples 300 --epochs 1 --out "$WORK/c.lbm" --checkpoint-dir "$WORK/ck"')
os.makedirs(f"{work}/notck")
shutil.copy(f"{work}/m.lbm", f"{work}/notck/checkpoint.lbm")
# Datasets: 14x14 images; an image file that claims more images than it holds; a wrong magic.
for name, images in (("small", None), ("short", None), ("magic", None)):
    os.makedirs(f"{work}/{name}")
for split in ("train", "t10k"):
    idx(f"{work}/small/{split}-images-idx3-ubyte", 8, [2, 14, 14], bytes(392))
    idx(f"{work}/small/{split}-labels-idx1-ubyte", 8, [2], bytes(2))
    idx(f"{work}/short/{split}-images-idx3-ubyte", 8, [1000000, 28, 28], bytes(784 * 2))
    idx(f"{work}/short/{split}-labels-idx1-ubyte", 8, [1000000], bytes(2))
    idx(f"{work}/magic/{split}-images-idx3-ubyte", 0x0D, [2, 28, 28], bytes(784 * 2 * 4))
    idx(f"{work}/magic/{split}-labels-idx1-ubyte", 8, [2], bytes(2))
open(f"{work}/badlayer.json", "w").write('{"layers": [{"type": "flatten"}, {"type": "dense2", "units": 10}]}')
open(f"{work}/floatunits.json", "w").write('{"layers": [{"type": "flatten"}, {"type": "dense", "units": 1e300}]}')
open(f"{work}/bad-ranges.json", "w").write('{"format": "lowbit-calibration", "version": 1, "ranges": {"image": {"min": 1}}}')
open(f"{work}/bad-plan.json", "w").write(
    '{"format": "lowbit-quantization-plan", "version": 1, "layers": {"dense_9": {}}}')
open(f"{work}/bits-plan.json", "w").write(
    '{"format": "lowbit-quantization-plan", "version": 1, "layers": {"dense_1": {"weight_bits": 12}}}')
must('"$LOWBIT" calibrate --model "$WORK/m.lbm" --data "$DATA" --samples 100 --out "$WORK/ranges.json"')
must('"$LOWBIT" quantize --model "$WORK/m.lbm" --ranges "$WORK/ranges.json" --out "$WORK/q.lbm"')
open(f"{work}/truncated.onnx", "wb").write(b"\x08\x07\x12\x04lowb" + b"\x3a\xff\xff\x03")
# .npy arrays of float32 (the model takes u8 images) and of float64 (which lowbit does not read).
for name, descr, size in (("f32", "<f4", 4), ("f64", "<f8", 8)):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (1, 28, 28), }" % descr
    header += " " * (63 - len(header)) + "\n"
    open(f"{work}/{name}.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(size * 784))
os.makedirs(f"{work}/adir.lbm")
has_onnx = "import" in sh('"$LOWBIT" --help').stdout

# ---- The rows --------------------------------------------------------------------------------
text = open(doc).read()
rows = []
for line in text.splitlines():
    m = re.match(r"^\| (\w+) \| (.+?) \| (\d+) \| (.+?) \| `(.+)` \|$", line)
    if m:
        rows.append(m.groups())
if len(rows) < 20:
    raise SystemExit(f"FAIL: only {len(rows)} rows parsed from {doc}")
ids = [r[0] for r in rows]
if len(set(ids)) != len(ids):
    raise SystemExit("FAIL: duplicate row ids in " + doc)


def check(name, ok, detail=""):
    global failures
    if ok:
        print(f"ok: {name}")
    else:
        failures += 1
        print(f"FAIL: {name}\n  {detail}")


for row_id, when, code, excerpt, command in rows:
    if not has_onnx and ("import" in command.split() or "export" in command.split()):
        print(f"skipped: {row_id} (this lowbit has no ONNX)")
        continue
    excerpt = excerpt.strip().strip("`").replace("\\|", "|").replace("$WORK", work)
    before = set(os.listdir(work))
    p = sh(command)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    detail = f"exit {p.returncode}, stderr: {p.stderr.strip()}"
    check(f"{row_id} ({when}): exits {code}", p.returncode == int(code), detail)
    check(f"{row_id}: one line on stderr, with '{excerpt}'", len(lines) == 1 and excerpt in lines[0], detail)
    new = {f for f in set(os.listdir(work)) - before if f.startswith("x")}
    check(f"{row_id}: nothing written", not new, str(new))

# The exit codes table is main.cpp's.
table = dict(re.findall(r"^\| (\d+) \| `?(\w+)`? \|", text, re.M))
main = open(os.path.join(os.path.dirname(doc), "..", "tools", "lowbit", "main.cpp")).read()
for name, value in re.findall(r"constexpr int (kExit\w+) = (\d+);", main):
    check(f"docs/errors.md lists exit code {value} ({name})", value in table, str(table))

shutil.rmtree(work, ignore_errors=True)
print(f"{len(rows)} rows; " + ("all passed" if failures == 0 else f"{failures} failed"))
sys.exit(1 if failures else 0)
