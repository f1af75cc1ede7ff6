#!/usr/bin/env python3
"""Training time per epoch of a CNN or a vision transformer in lowbit and in PyTorch, same machine,
same script run.

The PyTorch model is built from the same JSON model description lowbit trains (layer types reshape,
conv2d, batchnorm, relu, maxpool2d, avgpool2d, globalavgpool, dropout, flatten, dense, softmax,
and the transformer's patches, position_embedding, layernorm, gelu, attention, transformer_block,
mean_pool; docs/model-description.md), with the same optimizer (Adam 1e-3, eps 1e-7), batch 32, shuffling and
data (IDX scaled to [0, 1]). Time per epoch is the training loop alone (data loading excluded);
the fastest epoch of each side is compared. Prints both, the ratio lowbit / PyTorch and both
test accuracies.

Run with Debian's PyTorch:
  /usr/bin/python3 bench/cnn_vs_pytorch.py --arch examples/models/reference-cnn.json --epochs 2
  /usr/bin/python3 bench/cnn_vs_pytorch.py --arch examples/models/vit-tiny.json --epochs 1
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbm import torch_splits  # noqa: E402


def run_lowbit(binary, arch, data_dir, seed, threads, epochs, train_samples):
    out = f"/tmp/lowbit-cnn-bench-seed{seed}.lbm"
    cmd = [binary, "train", "--data", data_dir, "--arch", arch, "--epochs", str(epochs), "--batch", "32", "--lr", "0.001",
           "--optimizer", "adam", "--seed", str(seed), "--threads", str(threads), "--out", out, "--json"]
    if train_samples:
        cmd += ["--train-samples", str(train_samples)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"lowbit train failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    os.remove(out)
    return json.loads(result.stdout.strip().splitlines()[-1])


def pair(v, default):
    if v is None:
        return (default, default)
    return (v, v) if isinstance(v, int) else tuple(v)


def transformer_modules():
    """PyTorch modules computing what lowbit's transformer layer types compute."""
    import math
    import torch
    from torch import nn

    class Patches(nn.Module):
        def __init__(self, ph, pw):
            super().__init__()
            self.ph, self.pw = ph, pw

        def forward(self, x):
            n, c, h, w = x.shape
            gh, gw = h // self.ph, w // self.pw
            x = x.reshape(n, c, gh, self.ph, gw, self.pw).permute(0, 2, 4, 1, 3, 5)
            return x.reshape(n, gh * gw, c * self.ph * self.pw)

    class PositionEmbedding(nn.Module):
        def __init__(self, tokens, width):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(tokens, width) * 0.02)

        def forward(self, x):
            return x + self.weight

    class Attention(nn.Module):
        def __init__(self, width, heads):
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v, self.out = (nn.Linear(width, width) for _ in range(4))
            for lin in (self.q, self.k, self.v, self.out):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)

        def forward(self, x):
            n, t, w = x.shape
            d = w // self.heads
            split = lambda y: y.view(n, t, self.heads, d).transpose(1, 2)  # noqa: E731
            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
            return self.out((p @ v).transpose(1, 2).reshape(n, t, w))

    class Block(nn.Module):
        def __init__(self, width, heads, hidden, eps, approximate):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(width, eps=eps), nn.LayerNorm(width, eps=eps)
            self.attention = Attention(width, heads)
            self.mlp1, self.mlp2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
            for lin in (self.mlp1, self.mlp2):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            self.gelu = nn.GELU(approximate=approximate)

        def forward(self, x):
            x = x + self.attention(self.norm1(x))
            return x + self.mlp2(self.gelu(self.mlp1(self.norm2(x))))

    class MeanPool(nn.Module):
        def forward(self, x):
            return x.mean(1)

    class Reshape(nn.Module):  # (nn.Unflatten does not export to ONNX in PyTorch 1.13)
        def __init__(self, shape):
            super().__init__()
            self.shape = list(shape)

        def forward(self, x):
            return x.reshape([x.shape[0]] + self.shape)

    return Patches, PositionEmbedding, Attention, Block, MeanPool, Reshape


def build_torch_model(description, sample_shape):
    import torch
    from torch import nn
    Patches, PositionEmbedding, Attention, Block, MeanPool, Reshape = transformer_modules()
    layers, shape = [], [1] + list(sample_shape)  # one sample, no batch dim in `shape`
    probe = torch.zeros([1] + list(sample_shape))
    for layer in description["layers"]:
        t = layer["type"]
        if t == "reshape":
            layers.append(Reshape(layer["shape"]))
        elif t == "conv2d":
            in_ch = probe.shape[1]
            k = pair(layer.get("kernel"), 1)
            pad = layer.get("padding", 0)
            padding = "same" if pad == "same" else (0 if pad == "valid" else pair(pad, 0))
            conv = nn.Conv2d(in_ch, layer["filters"], k, stride=pair(layer.get("stride"), 1), padding=padding,
                             dilation=pair(layer.get("dilation"), 1), groups=layer.get("groups", 1), bias=layer.get("bias", True))
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if layer.get("activation", "none") == "relu":
                layers.append(nn.ReLU())
        elif t == "batchnorm":
            ch = probe.shape[1]
            momentum = 1.0 - layer.get("momentum", 0.9)  # ONNX/lowbit momentum -> PyTorch momentum
            layers.append((nn.BatchNorm2d if probe.dim() == 4 else nn.BatchNorm1d)(ch, eps=layer.get("epsilon", 1e-5), momentum=momentum))
        elif t == "relu":
            layers.append(nn.ReLU())
        elif t == "maxpool2d":
            k = pair(layer.get("kernel"), 2)
            layers.append(nn.MaxPool2d(k, stride=pair(layer.get("stride"), k[0]), padding=pair(layer.get("padding"), 0)))
        elif t == "avgpool2d":
            k = pair(layer.get("kernel"), 2)
            layers.append(nn.AvgPool2d(k, stride=pair(layer.get("stride"), k[0]), padding=pair(layer.get("padding"), 0)))
        elif t == "globalavgpool":
            layers.append(nn.AdaptiveAvgPool2d(1))
        elif t == "dropout":
            layers.append(nn.Dropout(layer.get("rate", 0.5)))
        elif t == "flatten":
            layers.append(nn.Flatten())
        elif t == "dense":
            lin = nn.Linear(probe.shape[-1], layer["units"], bias=layer.get("bias", True))
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
            layers.append(lin)
            if layer.get("activation", "none") == "relu":
                layers.append(nn.ReLU())
        elif t == "softmax":
            continue  # trained on logits with CrossEntropyLoss, as lowbit trains
        elif t == "patches":
            layers.append(Patches(*pair(layer["size"], 1)))
        elif t == "position_embedding":
            layers.append(PositionEmbedding(probe.shape[1], probe.shape[2]))
        elif t == "layernorm":
            layers.append(nn.LayerNorm(probe.shape[-1], eps=layer.get("epsilon", 1e-5)))
        elif t == "gelu":
            layers.append(nn.GELU(approximate=layer.get("approximate", "none")))
        elif t == "attention":
            layers.append(Attention(probe.shape[-1], layer["heads"]))
        elif t == "transformer_block":
            width = probe.shape[-1]
            layers.append(Block(width, layer["heads"], layer.get("mlp", 4 * width), layer.get("epsilon", 1e-5),
                                layer.get("approximate", "none")))
        elif t == "mean_pool":
            layers.append(MeanPool())
        else:
            sys.exit(f"layer type {t} not supported by this benchmark")
        with torch.no_grad():
            probe = nn.Sequential(*layers).eval()(torch.zeros([1] + list(sample_shape)))
    return nn.Sequential(*layers)


def run_pytorch(arch, data_dir, seed, threads, epochs, train_samples):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = torch_splits(data_dir)
    if train_samples:
        x_train, y_train = x_train[:train_samples], y_train[:train_samples]
    with open(arch) as f:
        model = build_torch_model(json.load(f), x_train.shape[1:])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=32, shuffle=True)
    epoch_seconds = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        accuracy = sum((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum().item()
                       for i in range(0, len(x_test), 1000)) / len(x_test)
    return {"epoch_seconds": epoch_seconds, "test_accuracy": accuracy, "torch": torch.__version__}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--arch", default="examples/models/reference-cnn.json")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-samples", type=int, default=0, help="only the first N training samples, both sides (0: all)")
    args = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench/reference_vs_pytorch.py
    lb = run_lowbit(args.lowbit, args.arch, args.data, args.seed, args.threads, args.epochs, args.train_samples)
    pt = run_pytorch(args.arch, args.data, args.seed, args.threads, args.epochs, args.train_samples)
    lb_epoch = min(e["seconds"] for e in lb["history"])
    pt_epoch = min(pt["epoch_seconds"])
    samples = f"the first {args.train_samples} training samples" if args.train_samples else "all training samples"
    print(f"{os.path.basename(args.arch)}, {args.epochs} epoch(s) of {samples}, batch 32, {args.threads} threads, fastest epoch:")
    print(f"  lowbit           {lb_epoch:8.2f} s   test accuracy {lb['test_accuracy']:.4f}")
    print(f"  PyTorch {pt['torch']:<8} {pt_epoch:8.2f} s   test accuracy {pt['test_accuracy']:.4f}")
    print(f"  lowbit / PyTorch {lb_epoch / pt_epoch:8.2f}x  (PyTorch / lowbit {pt_epoch / lb_epoch:.2f}x)")


if __name__ == "__main__":
    main()
