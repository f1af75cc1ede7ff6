"""Helpers for the benchmark scripts: IDX datasets and a minimal reader of lowbit's model file (docs/format.md)."""
import gzip
import json
import os
import struct
import zlib

import numpy as np

_DTYPES = {1: np.float32, 2: np.int8, 3: np.uint8, 4: np.int32, 9: np.int64, 10: np.bool_, 11: np.float16}


def read_lbm(path):
    """Returns (graph dict, {name: numpy array}); packed low-bit tensors come back as raw bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"LOWBITM\0":
        raise ValueError(f"{path}: not a lowbit model file")
    version, sections = struct.unpack_from("<II", data, 8)
    if version not in (1, 2):  # docs/format.md: version 2 adds op versions inside GRPH
        raise ValueError(f"{path}: format version {version} is not supported")
    pos, graph, tensors = 16, None, {}
    for _ in range(sections):
        tag, flags, size, crc, _ = struct.unpack_from("<4sIQII", data, pos)
        pos += 24
        payload = data[pos:pos + size]
        pos += size
        if zlib.crc32(payload) != crc:
            raise ValueError(f"{path}: section {tag} is corrupted")
        if tag == b"GRPH":
            graph = json.loads(payload)
        elif tag == b"TNSR":
            (count,), p = struct.unpack_from("<I", payload, 0), 4
            for _ in range(count):
                (n,) = struct.unpack_from("<I", payload, p)
                name = payload[p + 4:p + 4 + n].decode()
                p += 4 + n
                dtype, rank = struct.unpack_from("<II", payload, p)
                dims = struct.unpack_from(f"<{rank}q", payload, p + 8)
                (nbytes,) = struct.unpack_from("<Q", payload, p + 8 + 8 * rank)
                p += 16 + 8 * rank
                raw = payload[p:p + nbytes]
                p += nbytes
                tensors[name] = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(dims) if dtype in _DTYPES else raw
    return graph, tensors


def read_idx(path):
    """An IDX file (plain or .gz) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def dataset_file(data_dir, name):
    """The path of `name` or `name.gz` in a dataset directory."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(data_dir, candidate)
        if os.path.exists(path):
            return path
    raise SystemExit(f"{data_dir}: no {name}[.gz]")


def torch_splits(data_dir):
    """The four IDX files as PyTorch tensors: images scaled to [0, 1] (float32), labels int64."""
    import torch
    def images(name):
        return torch.from_numpy(read_idx(dataset_file(data_dir, name)).astype(np.float32) / 255.0)

    def labels(name):
        return torch.from_numpy(read_idx(dataset_file(data_dir, name)).astype(np.int64))
    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))
