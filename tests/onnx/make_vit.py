#!/usr/bin/env python3
"""Writes a small vision transformer exported from PyTorch, with PyTorch's outputs, for the
importer's transformer test (tests/onnx/test_onnx_import.cpp, OnnxImport.TinyVitMatchesPyTorch):

    build/onnx-venv/bin/python tests/onnx/make_vit.py tests/data/onnx     # Debian's python3-torch

The PyTorch model is built from a lowbit model description (the layer types of
examples/models/vit-tiny.json at width 32 and two blocks, so the file stays small) by the same
builder bench/cnn_vs_pytorch.py uses: 7x7 patches of a 28x28 image, dense patch embedding,
position embedding, pre-norm blocks (multi-head attention written as HF transformers writes it,
exact GELU), LayerNorm, mean pooling, dense 10 (logits). Seeded, eval mode, exported by
torch.onnx.export at opset 14 with a dynamic batch axis; input "image" f32 [N, 28, 28] in [0, 1],
output "logits". Inputs and PyTorch's outputs: vit_tiny.inputs0.npz, vit_tiny.outputs0.npz.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from cnn_vs_pytorch import build_torch_model  # noqa: E402

DESCRIPTION = {
    "layers": [
        {"type": "reshape", "shape": [1, 28, 28]},
        {"type": "patches", "size": 7},
        {"type": "dense", "units": 32},
        {"type": "position_embedding"},
        {"type": "transformer_block", "heads": 4, "mlp": 64},
        {"type": "transformer_block", "heads": 4, "mlp": 64},
        {"type": "layernorm"},
        {"type": "mean_pool"},
        {"type": "dense", "units": 10},
    ]
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/onnx"
    torch.manual_seed(0)
    model = build_torch_model(json.loads(json.dumps(DESCRIPTION)), (28, 28)).eval()
    # Away from their initial values (zero biases, unit LayerNorm scales), so that every parameter matters.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    image = torch.rand(3, 28, 28)
    torch.onnx.export(model, (image,), os.path.join(out, "vit_tiny.onnx"), opset_version=14, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad():
        logits = model(image)
    np.savez(os.path.join(out, "vit_tiny.inputs0.npz"), image=image.numpy())
    np.savez(os.path.join(out, "vit_tiny.outputs0.npz"), logits=logits.numpy())
    print("wrote vit_tiny.onnx and its inputs / outputs to", out)


if __name__ == "__main__":
    main()
