#!/usr/bin/env python3
"""Writes the ONNX test models of tests/data/onnx and the outputs their producers computed.

Trains three small Fashion-MNIST classifiers with PyTorch (mlp, cnn, resnet_dw), exports each at
opset 13 and 17, quantizes the opset-13 mlp and cnn with ONNX Runtime's quantizer (static QDQ,
static QOperator, dynamic), and keeps, for every model, the classes it predicts on the 10000 test
images and the logits of the first 1000: golden numbers for lowbit's ONNX importer.

    PY=$(scripts/onnx-venv.sh build/onnx-venv | tail -1)
    $PY tests/onnx/make_models.py tests/data/onnx

Deterministic on one machine: fixed seed, one thread, a seeded data order.
"""
import argparse
import collections
import gzip
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

SEED = 0
EPOCHS = {"mlp": 3, "cnn": 2, "resnet_dw": 2}
BATCH = 64
LR = 1e-3
CALIBRATION_IMAGES = 512
LOGIT_IMAGES = 1000
OPSETS = (13, 17)
QUANTIZED = ("mlp", "cnn")
# ORT's own defaults differ: quantize_static's signature says QInt8 activations, its QuantConfig
# says QUInt8. We name the types: uint8 activations, int8 weights (U8S8), one scale per tensor.
ACTIVATION_TYPE, WEIGHT_TYPE = QuantType.QUInt8, QuantType.QInt8


def load_idx(path):
    """An IDX file (gzip) as a numpy array: magic (2 zero bytes, dtype 0x08, rank), sizes, data."""
    data = gzip.decompress(path.read_bytes())
    assert data[:3] == b"\0\0\x08", f"{path}: not an IDX file of uint8"
    rank = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


def load_split(data_dir, split):
    """Images as float32 [N, 1, 28, 28] in [0, 1] (byte / 255), labels as int64 [N]."""
    images = load_idx(data_dir / f"{split}-images-idx3-ubyte.gz")
    labels = load_idx(data_dir / f"{split}-labels-idx1-ubyte.gz")
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def conv_bn(cin, cout, kernel, stride=1, groups=1):
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class DepthwiseBlock(nn.Module):
    """MobileNet-style residual block: depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN, add, ReLU.
    With stride 2 or a change of width the shortcut is a strided 1x1 projection + BN."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cin, 3, stride, groups=cin), nn.ReLU(), *conv_bn(cin, cout, 1))
        identity = stride == 1 and cin == cout
        self.shortcut = nn.Identity() if identity else nn.Sequential(*conv_bn(cin, cout, 1, stride))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def make_model(name):
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                             nn.Linear(32, 10))
    if name == "cnn":  # the layers of examples/models/reference-cnn.json at half its widths
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    if name == "resnet_dw":  # 28x28x16 -> block -> 14x14x32 (strided, projection) -> block -> pool
        return nn.Sequential(*conv_bn(1, 16, 3), nn.ReLU(), DepthwiseBlock(16, 16), DepthwiseBlock(16, 32, stride=2),
                             DepthwiseBlock(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    raise ValueError(name)


def train(model, images, labels, epochs):
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    order = torch.Generator().manual_seed(SEED)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=order).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    model.eval()


def torch_logits(model, images):
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(b)) for b in np.array_split(images, 20)]).numpy()


def ort_logits(path, images, exact=False):
    """onnxruntime's logits; `exact`: with its graph optimizations off, so that a quantized model runs
    op by op as ONNX defines it (its fused u8 x s8 kernels saturate on CPUs without AVX-512 VNNI)."""
    options = ort.SessionOptions()
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"input": b})[0] for b in np.array_split(images, 20)])


class Calibration(CalibrationDataReader):
    """The first CALIBRATION_IMAGES training images, in file order, in batches of BATCH."""

    def __init__(self, images):
        self.batches = iter(np.split(images[:CALIBRATION_IMAGES], CALIBRATION_IMAGES // BATCH))

    def get_next(self):
        return next(({"input": b} for b in self.batches), None)


def gemm_to_matmul(model):
    """Gemm(x, W, b, transB=1) -> MatMul(x, W^T) + b. ORT's dynamic quantizer quantizes MatMul
    (MatMulInteger) but leaves Gemm, which torch exports for every Linear, in float."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or attributes != {"alpha": 1.0, "beta": 1.0, "transB": 1}:
            nodes.append(node)
            continue
        x, w, b = node.input
        transposed = onnx.numpy_helper.to_array(weights[w]).T.copy()
        weights[w].CopyFrom(onnx.numpy_helper.from_array(transposed, w))
        product = node.output[0] + "_matmul"
        nodes += [onnx.helper.make_node("MatMul", [x, w], [product], node.name + "_matmul"),
                  onnx.helper.make_node("Add", [product, b], node.output, node.name + "_add")]
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def cpu_vnni():
    """Whether this x86 CPU has VNNI, which decides how onnxruntime's uint8 x int8 kernels add up."""
    flags = Path("/proc/cpuinfo").read_text().split()
    return "avx512_vnni" in flags or "avx_vnni" in flags


def write_readme(out, accuracy, agreement, seconds):
    """OUT_DIR/README.md: how the files were made, and what each holds (read back from disk)."""
    rows = []
    for path in sorted(out.glob("*.onnx")):
        model = onnx.load(str(path))
        ops = collections.Counter(f"{n.domain}:{n.op_type}" if n.domain else n.op_type for n in model.graph.node)
        rows.append(f"| {path.name} | {path.stat().st_size} | {accuracy[path.name]:.4f} | "
                    + ", ".join(f"{op} {count}" for op, count in sorted(ops.items())) + " |")
    versions = (f"Python {platform.python_version()}, torch {torch.__version__}, onnx {onnx.__version__}, "
                f"onnxruntime {ort.__version__}, numpy {np.__version__}")
    epochs = ", ".join(f"{count} ({name})" for name, count in EPOCHS.items())
    same = ", ".join(f"{name} {count}" for name, count in agreement.items())
    cpu = ("The CPU that ran onnxruntime has VNNI." if cpu_vnni() else
           "The CPU that ran onnxruntime has no VNNI: there onnxruntime's AVX2 uint8 x int8 kernels\n"
           "(vpmaddubsw) saturate each sum of two adjacent products at int16, so a few quantized outputs\n"
           "are a step away from exact integer arithmetic (in the first layer, whose inputs reach 255).")
    (out / "README.md").write_text(f"""# ONNX test models

Written by `tests/onnx/make_models.py` in {seconds:.0f} s with {versions}:
```
PY=$(scripts/onnx-venv.sh build/onnx-venv | tail -1)
$PY tests/onnx/make_models.py tests/data/onnx --data /usr/share/datasets/fashion-mnist
```
Three Fashion-MNIST classifiers trained with torch.manual_seed({SEED}), one thread, a seeded shuffle,
Adam lr {LR}, batch {BATCH}, epochs {epochs}.
Input `input` float32 [batch, 1, 28, 28] = byte / 255, output `logits` float32 [batch, 10].
- `mlp`: 784-64-32-10, ReLU. `cnn`: conv 3x3 16, BN, ReLU, max pool, conv 3x3 32, BN, ReLU, max pool,
  dense 64, ReLU, dense 10. `resnet_dw`: stem conv 3x3 16 + BN + ReLU, three residual blocks
  (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN, add, ReLU; the second strided, 16 -> 32, with a
  1x1 projection shortcut), global average pool, dense 10.
- `<name>_op13.onnx`, `<name>_op17.onnx`: torch.onnx.export in eval mode, constant folding on
  (BatchNorm is folded into Conv; Flatten stays Flatten).
- `<name>_qdq.onnx`, `<name>_qop.onnx`: quantize_static of `<name>_op13.onnx`, QDQ or QOperator
  format, uint8 activations, int8 weights (ORT's QuantConfig default; quantize_static's own default
  is int8 activations), symmetric weights, one scale per tensor, MinMax calibration on the first
  {CALIBRATION_IMAGES} training images, after quant_pre_process (without its graph optimization, which
  here changed nothing but add opset imports of every domain ORT knows). ReLU disappears: its
  output range is the uint8 range with zero point 0.
- `<name>_dynamic.onnx`: quantize_dynamic, int8 weights, after rewriting each Gemm as MatMul + Add
  (ORT's dynamic quantizer leaves Gemm in float).

Outputs on the 10000 test images, from each file's producer: PyTorch for the float models (one set,
`<name>.*`, for both opsets), onnxruntime with one thread for the quantized files.
`<stem>.classes.npy`: uint8 [10000]; `<stem>.logits.npy`: float32 [1000, 10], the first 1000 images;
`<name>_op13.ort_classes.npy`: onnxruntime's classes for the float model; `<name>_qdq.exact_classes.npy`:
onnxruntime's classes with its graph optimizations off (the QDQ arithmetic op by op, exact; its
QOperator kernels saturate the same way with or without optimizations, so there is none for qop). `accuracy.json`: test
accuracy of the producer's classes. onnxruntime's classes for the float files equal PyTorch's on
this many of the 10000 images: {same}.

{cpu}

| file | bytes | accuracy | nodes |
| --- | --- | --- | --- |
""" + "\n".join(rows) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    train_images, train_labels = load_split(args.data, "train")
    test_images, test_labels = load_split(args.data, "t10k")
    accuracy, agreement = {}, {}
    start = time.time()

    def record(stem, logits, suffix="classes"):
        """Saves the classes (and the first logits) computed for a model; returns the classes."""
        classes = logits.argmax(1).astype(np.uint8)
        np.save(out / f"{stem}.{suffix}.npy", classes)
        if suffix == "classes":
            np.save(out / f"{stem}.logits.npy", logits[:LOGIT_IMAGES].astype(np.float32))
        print(f"  {stem}.{suffix}: test accuracy {(classes == test_labels).mean():.4f}")
        return classes

    def accuracy_of(path, classes):
        accuracy[path.name] = round(float((classes == test_labels).mean()), 4)

    for name in EPOCHS:
        torch.manual_seed(SEED)
        model = make_model(name)
        train(model, train_images, train_labels, EPOCHS[name])
        parameters = sum(p.numel() for p in model.parameters())
        print(f"{name}: {parameters} parameters, {EPOCHS[name]} epochs, {time.time() - start:.0f} s so far")
        classes = record(name, torch_logits(model, test_images))
        for opset in OPSETS:
            path = out / f"{name}_op{opset}.onnx"
            torch.onnx.export(model, torch.from_numpy(test_images[:1]), str(path), opset_version=opset,
                              do_constant_folding=True, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            accuracy_of(path, classes)
            logits = ort_logits(path, test_images)
            if opset == 13:
                record(path.stem, logits, "ort_classes")
            agreement[path.name] = int((logits.argmax(1) == classes).sum())
        if name not in QUANTIZED:
            continue

        with tempfile.TemporaryDirectory() as tmp:
            # ORT asks for this pre-processing (shape inference) before quantizing. Its graph
            # optimization is skipped: the export already folded BN and constants, and the optimizer
            # would only add an opset import of every domain ORT knows.
            float_model = Path(tmp) / "pre.onnx"
            quant_pre_process(str(out / f"{name}_op13.onnx"), str(float_model), skip_optimization=True)
            for fmt, suffix in ((QuantFormat.QDQ, "qdq"), (QuantFormat.QOperator, "qop")):
                path = out / f"{name}_{suffix}.onnx"
                quantize_static(str(float_model), str(path), Calibration(train_images), quant_format=fmt,
                                per_channel=False, activation_type=ACTIVATION_TYPE, weight_type=WEIGHT_TYPE)
                accuracy_of(path, record(path.stem, ort_logits(path, test_images)))
                if fmt == QuantFormat.QDQ:  # op by op, QDQ is float arithmetic on the grids: exact
                    record(path.stem, ort_logits(path, test_images, exact=True), "exact_classes")
            matmul_model = Path(tmp) / "matmul.onnx"
            onnx.save(gemm_to_matmul(onnx.load(str(float_model))), str(matmul_model))
            path = out / f"{name}_dynamic.onnx"
            quantize_dynamic(str(matmul_model), str(path), per_channel=False, weight_type=WEIGHT_TYPE)
            accuracy_of(path, record(path.stem, ort_logits(path, test_images)))

    for path in sorted(out.glob("*.onnx")):  # each one also ran in onnxruntime above
        onnx.checker.check_model(str(path), full_check=True)
    (out / "accuracy.json").write_text(json.dumps(accuracy, indent=1) + "\n")
    write_readme(out, accuracy, agreement, time.time() - start)
    print("onnxruntime's classes equal PyTorch's on (of 10000):", agreement)


if __name__ == "__main__":
    main()
