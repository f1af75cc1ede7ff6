"""The examples in examples/python run and do what they say."""
import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO


def run(name):
    return subprocess.run([sys.executable, str(REPO / "examples/python" / name)], capture_output=True, text=True, timeout=600)


def test_numpy_4bit():
    pytest.importorskip("sklearn")
    result = run("numpy_4bit.py")
    assert result.returncode == 0, result.stderr
    float_accuracy, four_bit = (float(part.split()[1]) for part in result.stdout.split(",")[:2])
    assert float_accuracy >= 0.94 and four_bit >= float_accuracy - 0.02


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ["torch", "onnxruntime", "sklearn"]),
                    reason="needs torch (python3-torch), onnxruntime and scikit-learn")
def test_pytorch_to_onnxruntime():
    result = run("pytorch_to_onnxruntime.py")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1.0000 op by op" in result.stdout
