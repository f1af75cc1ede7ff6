#!/usr/bin/env python3
"""Fails when a library file includes a header of a higher layer (src/README.md has the order).

Each folder of src/ is a layer; each public header of include/lowbit/ belongs to one. A file may
include headers of its own layer and of the layers below it, never above. Usage:
check_layers.py SOURCE_DIR (prints every offending include and exits 1 if there is one).
"""
import pathlib
import re
import sys

# Lowest first: a layer may use the ones before it.
LAYERS = ["core", "kernels", "graph", "runtime", "train", "quant", "io", "onnx", "learn", "workflow", "dist"]
# The layer of each public header.
PUBLIC = {
    "error.h": "core", "tensor.h": "core", "random.h": "core", "runtime_config.h": "core", "dataset.h": "core",
    "workspace.h": "core",
    "quant_params.h": "kernels",
    "graph.h": "graph", "ops.h": "graph",
    "executor.h": "runtime",
    "train.h": "train",
    "quantize.h": "quant", "calibration.h": "quant", "quant_search.h": "quant",
    "model_io.h": "io", "idx.h": "io", "npy.h": "io", "checkpoint.h": "io",
    "onnx.h": "onnx",
    "qat.h": "learn", "distill.h": "learn",
    "workflow.h": "workflow",
    "sweep.h": "workflow",
    "mpi.h": "dist",
    "lowbit.h": None,  # everything: for users, not for the library itself
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of_include(path):
    parts = path.split("/")
    if parts[0] == "lowbit":
        if parts[-1] not in PUBLIC:
            raise SystemExit(f"check_layers.py: public header {path} has no layer: add it to PUBLIC")
        return PUBLIC[parts[-1]], True
    return (parts[0] if parts[0] in LAYERS else None), False


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    problems = []
    files = [(p, p.relative_to(root / "src").parts[0]) for p in (root / "src").rglob("*") if p.suffix in (".cpp", ".h")]
    files += [(p, PUBLIC.get(p.name, "?")) for p in (root / "include" / "lowbit").glob("*.h")]
    for path, layer in files:
        if layer is None:
            continue
        if layer not in LAYERS:
            problems.append(f"{path}: not in a known layer")
            continue
        for target in INCLUDE.findall(path.read_text()):
            other, public = layer_of_include(target)
            if other is None and public:
                problems.append(f"{path}: includes {target}, which is for users only")
            elif other is not None and LAYERS.index(other) > LAYERS.index(layer):
                problems.append(f"{path} ({layer}) includes {target} ({other}): a higher layer")
    for p in problems:
        print(p)
    print(f"check_layers: {len(files)} files, {len(problems)} includes against the layer order {' < '.join(LAYERS)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
