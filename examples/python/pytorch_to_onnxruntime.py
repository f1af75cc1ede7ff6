"""A PyTorch nn.Module -> ONNX -> lowbit (int8, integer-only) -> ONNX (QDQ) -> ONNX Runtime.

Needs torch (Debian's python3-torch), onnx and onnxruntime (PyPI). Trains a small MLP on
scikit-learn's 8x8 digits in PyTorch, then lets lowbit quantize what torch.onnx.export wrote and
hands the result to ONNX Runtime, checking that the three agree.
"""
import sys
import tempfile

import numpy as np
import onnxruntime
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lowbit

x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split((x / 16).astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)

# 1. PyTorch: an ordinary nn.Module, trained as usual.
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
features, labels = torch.from_numpy(x_train), torch.from_numpy(y_train)
for epoch in range(30):
    for batch in torch.randperm(len(features)).split(32):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(features[batch]), labels[batch]).backward()
        optimizer.step()
net.eval()
with torch.no_grad():
    torch_classes = net(torch.from_numpy(x_test)).argmax(1).numpy()

with tempfile.TemporaryDirectory() as folder:
    # 2. ONNX out of PyTorch, into lowbit; quantize to int8 with calibration on the training arrays.
    torch.onnx.export(net, torch.zeros(1, 64), f"{folder}/mlp.onnx", input_names=["features"], output_names=["logits"],
                      dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}}, opset_version=13)
    model = lowbit.import_onnx(f"{folder}/mlp.onnx")
    data = lowbit.Dataset(x_train, y_train, x_test, y_test)
    q = lowbit.quantize(model, data)
    lowbit_classes = lowbit.predict(q, x_test)[1]

    # 3. Back to ONNX (QuantizeLinear/DequantizeLinear around the float ops) for ONNX Runtime.
    lowbit.export_onnx(q, f"{folder}/mlp_int8.onnx", profile="qdq")
    # ONNX Runtime as deployed (its fused int8 kernels), and op by op (graph optimizations off: the
    # QDQ arithmetic exactly as ONNX defines it). On CPUs without AVX-512 VNNI its fused u8 x s8
    # kernels saturate 16-bit pair sums, so they may differ from the exact result on a few samples.
    runs = {}
    for name, level in [("onnxruntime int8", onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL),
                        ("onnxruntime int8 op by op", onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)]:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = level
        session = onnxruntime.InferenceSession(f"{folder}/mlp_int8.onnx", options, providers=["CPUExecutionProvider"])
        runs[name] = session.run(None, {session.get_inputs()[0].name: x_test})[0].argmax(1)

accuracy = {"pytorch float": torch_classes, "lowbit int8": lowbit_classes, **runs}
print(", ".join(f"{name} {np.mean(classes == y_test):.4f}" for name, classes in accuracy.items()))
exact = float(np.mean(runs["onnxruntime int8 op by op"] == lowbit_classes))
fused = float(np.mean(runs["onnxruntime int8"] == lowbit_classes))
print(f"lowbit's predictions agree with ONNX Runtime's on {fused:.4f} of the test samples ({exact:.4f} op by op)")
sys.exit(0 if exact >= 0.995 and np.mean(lowbit_classes == y_test) >= np.mean(torch_classes == y_test) - 0.01 else 1)
