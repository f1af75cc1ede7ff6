#!/usr/bin/env python3
"""Writes a tiny BERT encoder exported from PyTorch, with PyTorch's outputs, for the importer's
transformer test (tests/onnx/test_onnx_import.cpp, OnnxImport.TinyBertMatchesPyTorch):

    python3 -m venv --system-site-packages /tmp/hfvenv           # Debian's python3-torch
    /tmp/hfvenv/bin/pip install "transformers==4.36.2"            # (no download of weights)
    /tmp/hfvenv/bin/python tests/onnx/make_bert.py tests/data/onnx

HF transformers' BertModel from a small random BertConfig (seeded), eval mode, exported by
torch.onnx.export at opset 14 with dynamic batch and sequence axes; inputs input_ids,
attention_mask, token_type_ids (int64), outputs last_hidden_state and pooler_output. Two input sets
(batch 2 x 12 tokens with the second sequence padded after 7, and batch 1 x 5) in
bert_tiny.inputs<K>.npz, PyTorch's outputs in bert_tiny.outputs<K>.npz.
"""
import os
import sys

import numpy as np
import torch
from transformers import BertConfig, BertModel


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/onnx"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, type_vocab_size=2)
    model = BertModel(config).eval()
    sets = []
    for batch, seq, pad in [(2, 12, 7), (1, 5, None)]:
        ids = torch.randint(0, 100, (batch, seq))
        mask = torch.ones(batch, seq, dtype=torch.long)
        if pad is not None:
            mask[1, pad:] = 0
        types = torch.zeros(batch, seq, dtype=torch.long)
        types[:, seq // 2:] = 1
        sets.append((ids, mask, types))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(model, sets[0], os.path.join(out, "bert_tiny.onnx"), opset_version=14, input_names=names,
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    for k, inputs in enumerate(sets):
        with torch.no_grad():
            result = model(*inputs)
        np.savez(os.path.join(out, f"bert_tiny.inputs{k}.npz"), **{n: t.numpy() for n, t in zip(names, inputs)})
        np.savez(os.path.join(out, f"bert_tiny.outputs{k}.npz"), last_hidden_state=result.last_hidden_state.numpy(),
                 pooler_output=result.pooler_output.numpy())
    print("wrote bert_tiny.onnx and", len(sets), "input / output sets to", out)


if __name__ == "__main__":
    main()
