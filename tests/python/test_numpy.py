"""numpy in and out: shapes, dtypes, zero copy, and data that is not 28x28 images."""
import numpy as np
import pytest

import lowbit


def test_contiguous_arrays_are_shared_others_copied_once(blobs):
    x, y, xt, yt = blobs
    data = lowbit.Dataset(x, y, xt, yt)
    shared, labels = data.arrays("train")
    assert np.shares_memory(shared, x)  # zero copy
    assert labels.dtype == np.int32 and np.array_equal(labels, y)
    strided = np.asfortranarray(x)  # not C-contiguous: one copy, same values
    copied = lowbit.Dataset(strided, y, xt, yt).arrays("train")[0]
    assert not np.shares_memory(copied, strided) and np.array_equal(copied, x)
    model = lowbit.train(data, "6-8-3", epochs=1, progress=False)
    every_other = np.repeat(xt, 2, axis=0)[::2]  # a strided view of the same values
    assert np.array_equal(lowbit.predict(model, every_other)[0], lowbit.predict(model, xt)[0])


def test_predict_takes_the_models_shapes(fashion, small_model):
    x, _ = fashion.arrays("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    logits, classes = lowbit.predict(small_model, x[:7])
    assert logits.shape == (7, 10) and classes.shape == (7,)
    one = lowbit.predict(small_model, x[3:4])[0]
    assert np.array_equal(one[0], logits[3])
    # Logits do not depend on the batch they are computed in (batch_size splits the same rows).
    assert np.array_equal(lowbit.predict(small_model, x[:7], batch_size=3)[0], logits)
    cnn = lowbit.train(fashion, {"input": {"shape": [28, 28]}, "layers": [
        {"type": "reshape", "shape": [1, 28, 28]}, {"type": "conv2d", "filters": 4, "kernel": 3, "activation": "relu"},
        {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"}, {"type": "dense", "units": 10}]},
        epochs=1, train_samples=500, progress=False)
    assert lowbit.predict(cnn, x[:5])[0].shape == (5, 10)


def test_float_input_models_take_float32_values(blobs):
    x, y, xt, yt = blobs
    model = lowbit.train(lowbit.Dataset(x, y, xt, yt), "6-16-3", epochs=5, lr=1e-2, progress=False)
    logits, classes = lowbit.predict(model, xt)
    assert np.mean(classes == yt) > 0.9
    q = lowbit.quantize(model, lowbit.Dataset(x, y, xt, yt))
    assert np.mean(lowbit.predict(q, xt)[1] == classes) > 0.95


def test_scikit_learn_digits_mlp_and_int8():
    """8x8 digits (64 features, 1797 samples): an MLP reaches >= 94% after 30 epochs; int8 loses <= 0.6 points."""
    datasets = pytest.importorskip("sklearn.datasets")
    model_selection = pytest.importorskip("sklearn.model_selection")
    features, labels = datasets.load_digits(return_X_y=True)
    features = (features / 16.0).astype(np.float32)
    x, xt, y, yt = model_selection.train_test_split(features, labels, test_size=0.25, random_state=0, stratify=labels)
    data = lowbit.Dataset(x, y, xt, yt)
    assert data.sample_shape == [64] and data.num_classes == 10 and data.dtype == "float32"
    model = lowbit.train(data, "64-64-32-10", epochs=30, seed=0, progress=False)
    q = lowbit.quantize(model, data)
    float_accuracy = lowbit.evaluate(model, data)["accuracy"]
    int8_accuracy = lowbit.evaluate(q, data)["accuracy"]
    assert float_accuracy >= 0.94
    assert (float_accuracy - int8_accuracy) * 100 <= 0.6
