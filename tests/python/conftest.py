"""Fixtures of the Python package's tests (pytest; scripts/test.sh runs them on an installed lowbit)."""
import os
import pathlib

import numpy as np
import pytest

import lowbit

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def two_threads():
    lowbit.set_num_threads(2)


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST from its IDX folder (Debian's dataset-fashion-mnist, or LOWBIT_DATA)."""
    return lowbit.Dataset(lowbit.default_dataset_dir())


@pytest.fixture(scope="session")
def small_model(fashion):
    """A float MLP trained for one epoch on 3000 Fashion-MNIST samples."""
    return lowbit.train(fashion, "784-32-10", epochs=1, train_samples=3000, seed=1, progress=False)


@pytest.fixture(scope="session")
def cli():
    """The lowbit CLI of the same build (LOWBIT_CLI), for the tests that compare against it."""
    path = os.environ.get("LOWBIT_CLI", "")
    if not path or not os.access(path, os.X_OK):
        pytest.skip("LOWBIT_CLI is not set to the lowbit CLI (scripts/test.sh sets it)")
    return path


@pytest.fixture(scope="session")
def blobs():
    """Float features: three Gaussian clusters in 6 dimensions, train and test."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 3, n)
        x = rng.normal(size=(n, 6)).astype(np.float32)
        x[np.arange(n), y] += 3.0
        x[np.arange(n), y + 3] += 3.0
        return x, y

    return make(600) + make(300)
