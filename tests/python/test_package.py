"""The package itself: version, types, docstrings, stubs."""
import pathlib
import re

import lowbit
from conftest import REPO


def test_version_is_the_cmake_projects():
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert lowbit.__version__ == re.search(r"project\(lowbit VERSION ([0-9.]+)", cmake).group(1)


def test_errors_form_one_hierarchy():
    for name in ["ArgumentError", "IoError", "FormatError", "UnsupportedError", "InternalError"]:
        assert issubclass(getattr(lowbit, name), lowbit.Error)
    assert issubclass(lowbit.ArgumentError, ValueError)
    assert issubclass(lowbit.IoError, OSError)


def test_every_call_is_documented_and_stubbed():
    stub = (pathlib.Path(lowbit.__file__).parent / "_lowbit.pyi").read_text()
    for name in ["load", "save", "train", "evaluate", "predict", "calibrate", "quantize", "dequantize", "compare", "qat",
                 "distill", "import_onnx", "export_onnx"]:
        doc = getattr(lowbit, name).__doc__
        assert doc and len(doc) > 100, name
        assert f"def {name}(" in stub, name
    assert "class Model" in stub and "class Dataset" in stub
    assert (pathlib.Path(lowbit.__file__).parent / "py.typed").exists()
