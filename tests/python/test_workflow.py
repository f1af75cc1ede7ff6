"""The CLI's steps from Python, checked against the CLI itself where it matters (same bytes, same
predictions) and on real data (Fashion-MNIST)."""
import csv
import json
import subprocess

import numpy as np
import pytest

import lowbit
from conftest import REPO


def run_cli(cli, *args):
    return subprocess.run([cli, *args, "--threads", "2"], check=True, capture_output=True, text=True).stdout


def test_training_gives_the_clis_model_bytes(fashion, cli, tmp_path):
    run_cli(cli, "train", "--arch", "784-32-10", "--epochs", "1", "--train-samples", "3000", "--seed", "1", "--out",
            str(tmp_path / "cli.lbm"))
    model = lowbit.train(fashion, "784-32-10", epochs=1, train_samples=3000, seed=1, progress=False)
    model.save(str(tmp_path / "py.lbm"))
    assert (tmp_path / "py.lbm").read_bytes() == (tmp_path / "cli.lbm").read_bytes()
    assert model.to_bytes() == (tmp_path / "cli.lbm").read_bytes()
    assert len(model.report["history"]) == 1 and 0.7 < model.report["test_accuracy"] < 1


def test_quantizing_gives_the_clis_model_and_predictions(fashion, small_model, cli, tmp_path):
    small_model.save(str(tmp_path / "float.lbm"))
    run_cli(cli, "quantize", "--model", str(tmp_path / "float.lbm"), "--bits", "4", "--calib-data", lowbit.default_dataset_dir(),
            "--out", str(tmp_path / "cli-q.lbm"))
    q = lowbit.quantize(small_model, fashion, bits=4)
    assert q.to_bytes() == (tmp_path / "cli-q.lbm").read_bytes()
    run_cli(cli, "predict", "--model", str(tmp_path / "cli-q.lbm"), "--out", str(tmp_path / "classes.csv"))
    with open(tmp_path / "classes.csv") as f:
        cli_classes = [int(row["class"]) for row in csv.DictReader(f)]
    x, y = fashion.arrays("test")
    logits, classes = lowbit.predict(q, x)
    assert classes.tolist() == cli_classes
    assert logits.shape == (10000, 10) and logits.dtype == np.float32
    assert np.array_equal(classes, logits.argmax(axis=1))
    evaluated = lowbit.evaluate(q, fashion)
    assert evaluated["accuracy"] == pytest.approx(np.mean(classes == y), abs=1e-12)
    assert q.report["test_accuracy"] == evaluated["accuracy"]


def test_the_steps_one_call_each(fashion, small_model, tmp_path):
    ranges = lowbit.calibrate(small_model, fashion, method="percentile", samples=500)
    assert ranges.method == "percentile" and ranges.samples == 500 and len(ranges.ranges) >= 2
    ranges.save(str(tmp_path / "ranges.json"))
    again = lowbit.load_calibration(str(tmp_path / "ranges.json"))
    assert again.ranges == ranges.ranges

    q = lowbit.quantize(small_model, fashion, ranges=str(tmp_path / "ranges.json"))
    info = q.info()
    assert info["quantized"] and any(layer["op"] == "QDense" for layer in info["layers"])
    assert lowbit.evaluate(q, fashion)["accuracy"] > 0.7

    dynamic = lowbit.quantize(small_model, mode="dynamic")
    assert any(layer["op"] == "DynamicQDense" for layer in dynamic.info()["layers"])
    gptq = lowbit.quantize(small_model, fashion, bits=3, rounding="gptq")
    assert gptq.report["plan"]["defaults"]["rounding"] == "gptq"
    ordered = lowbit.quantize(small_model, fashion, bits=4, rounding="gptq", act_order=True)
    assert ordered.report["plan"]["defaults"]["act_order"] is True
    assert "act_order" not in gptq.report["plan"]["defaults"]
    # SmoothQuant is for static modes (an MLP has no LayerNorm to smooth: the same accuracy).
    smoothed = lowbit.quantize(small_model, fashion, smooth=0.5)
    assert smoothed.report["test_accuracy"] == lowbit.quantize(small_model, fashion).report["test_accuracy"]
    with pytest.raises(lowbit.ArgumentError, match="for static quantization"):
        lowbit.quantize(small_model, fashion, mode="dynamic", smooth=0.5)
    # Left out, the grid and the rounding follow the bit width (gptq needs data; affine at 3 bits).
    chosen = lowbit.quantize(small_model, fashion, bits=3).report["plan"]["defaults"]
    assert chosen["rounding"] == "gptq" and chosen["weight_scheme"] == "affine"
    without_data = lowbit.quantize(small_model, mode="dynamic", bits=3).report["plan"]["defaults"]
    assert "rounding" not in without_data and without_data["weight_scheme"] == "symmetric"  # (dynamic layers are symmetric)
    blocks = lowbit.quantize(small_model, mode="dynamic", bits=4, group_size=32)
    layers = blocks.info()["layers"]
    assert all(layer["op"] == "BlockQDense" for layer in layers if layer["name"].startswith("dense_"))
    assert 4.5 <= layers[[l["name"] for l in layers].index("dense_1")]["bits_per_weight"] < 4.7
    assert lowbit.evaluate(blocks, fashion)["accuracy"] > 0.7
    partial = lowbit.quantize(small_model, fashion, mode="partial", layers="dense_1")
    assert partial.report["plan"]["mode"] == "partial"

    back = lowbit.dequantize(q)
    assert not back.quantized
    c = lowbit.compare(q, small_model, fashion, speed=False)
    assert c["samples"] == 10000 and c["agreement"] > 0.95 and len(c["layers"]) >= 2
    assert {"layer", "sqnr_db", "cosine"} <= set(c["layers"][0])

    lowbit.save(q, str(tmp_path / "q.lbm"))
    loaded = lowbit.load(str(tmp_path / "q.lbm"))
    assert loaded.to_bytes() == q.to_bytes() and loaded.source.endswith("q.lbm")


def test_models_pickle_and_copy(fashion, small_model):
    import copy
    import pickle

    q = lowbit.quantize(small_model, fashion)
    again = pickle.loads(pickle.dumps(q))
    assert again.to_bytes() == q.to_bytes() and again.report["plan"] == q.report["plan"]
    x, _ = fashion.arrays("test")
    assert np.array_equal(lowbit.predict(again, x[:50])[0], lowbit.predict(q, x[:50])[0])
    assert copy.deepcopy(small_model).to_bytes() == small_model.to_bytes()


def test_search_within_a_drop_reports_its_plan(fashion, small_model):
    lines = []
    q = lowbit.quantize(small_model, fashion, max_drop=1.0, validation_samples=2000, time_budget=30, log=lines.append)
    assert q.report["search"]["evaluations"] >= 1
    assert "defaults" in q.report["plan"]
    assert lines


def test_plan_as_a_dict(fashion, small_model):
    plan = lowbit.quantize(small_model, fashion, bits=4).report["plan"]
    again = lowbit.quantize(small_model, fashion, plan=plan)
    assert again.report["plan"] == plan
    assert again.report["plan"]["defaults"]["weight_bits"] == 4


def test_qat_and_distill(fashion, small_model):
    steps = []
    q = lowbit.qat(small_model, fashion, epochs=1, train_samples=1000, bits=4, callback=steps.append)
    assert q.quantized and q.report["test_accuracy"] > 0.6
    assert not q.report["fake_quantized"].quantized
    assert steps[-1].epoch_done and steps[-1].step == steps[-1].steps
    student = lowbit.distill(small_model, fashion, student="784-16-10", epochs=2, train_samples=3000, progress=False)
    assert student.parameters < small_model.parameters and student.report["float_test_accuracy"] > 0.5
    quantized_student = lowbit.distill(small_model, fashion, student=student, epochs=0, bits=8, qat_epochs=1, train_samples=1000,
                                       progress=False)
    assert quantized_student.quantized


def test_arch_as_a_dict_and_a_progress_callback(blobs):
    data = lowbit.Dataset(*blobs)
    seen = []
    description = {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 3}]}
    model = lowbit.train(data, description, epochs=3, lr=1e-2, callback=lambda p: seen.append((p.epoch, p.step, p.loss)))
    assert model.inputs[0]["dtype"] == "f32" and model.inputs[0]["shape"] == [-1, 6]
    assert seen[0][:2] == (1, 1) and seen[-1][0] == 3
    assert model.report["test_accuracy"] > 0.9


def test_progress_bar_without_a_callback(blobs, capfd):
    lowbit.train(lowbit.Dataset(*blobs), "6-8-3", epochs=2)
    err = capfd.readouterr().err
    assert "epoch" in err or "train 2/2" in err


def test_a_callbacks_exception_stops_training(blobs):
    def fail(p):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        lowbit.train(lowbit.Dataset(*blobs), "6-8-3", epochs=2, callback=fail)


def test_onnx_out_and_in(small_model, fashion, tmp_path):
    notes = lowbit.export_onnx(small_model, str(tmp_path / "m.onnx"))
    assert isinstance(notes, list)
    back = lowbit.import_onnx(str(tmp_path / "m.onnx"))
    x, _ = fashion.arrays("test")
    a = lowbit.predict(small_model, x[:500])[1]
    b = lowbit.predict(back, x[:500])[1]
    assert np.mean(a == b) > 0.99
    q = lowbit.quantize(small_model, fashion)
    lowbit.export_onnx(q, str(tmp_path / "q.onnx"), profile="qdq")
    assert lowbit.load(str(tmp_path / "q.onnx")).quantized


def test_pytorchs_onnx_cnn_takes_images_as_one_channel(fashion):
    """tests/data/onnx/cnn_op13.onnx: PyTorch's CNN, input [N, 1, 28, 28] float; the bytes [N, 28, 28] feed it."""
    cnn = lowbit.import_onnx(str(REPO / "tests/data/onnx/cnn_op13.onnx"))
    x, _ = fashion.arrays("test")
    classes = lowbit.predict(cnn, x[:2000])[1]
    torch_classes = np.load(REPO / "tests/data/onnx/cnn.classes.npy")[:2000]
    assert np.mean(classes == torch_classes) >= 0.999
    as_floats = (x[:100].astype(np.float32) / 255).reshape(100, 1, 28, 28)
    assert np.mean(lowbit.predict(cnn, as_floats)[1] == torch_classes[:100]) >= 0.99


def test_onnx_runtime_runs_the_export(small_model, fashion, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    q = lowbit.quantize(small_model, fashion)
    lowbit.export_onnx(q, str(tmp_path / "q.onnx"), profile="qdq")
    session = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    x, _ = fashion.arrays("test")
    feed = session.get_inputs()[0]
    ours = lowbit.predict(q, x[:1000])[1]
    theirs = session.run(None, {feed.name: x[:1000].reshape([1000] + [d for d in q.inputs[0]["shape"][1:]])})[0].argmax(axis=1)
    assert np.mean(ours == theirs) >= 0.995


def test_a_bert_calibrates_on_named_inputs():
    # A BERT from PyTorch (three int64 inputs) quantizes statically, with SmoothQuant, on an .npz of its inputs.
    data = lowbit.Dataset.from_npz(str(REPO / "tests/data/onnx/bert_tiny.inputs0.npz"))
    assert data.input_names == ["input_ids", "attention_mask", "token_type_ids"] and data.train_size == 2
    assert "unlabelled samples of inputs input_ids" in repr(data)
    bert = lowbit.import_onnx(str(REPO / "tests/data/onnx/bert_tiny.onnx"))
    q = lowbit.quantize(bert, data, smooth=0.5)
    layers = q.info()["layers"]
    assert sum(layer["op"] == "QDense" for layer in layers) >= 12
    assert sum(layer["name"].endswith(".smooth") for layer in layers) == 4
    assert sum(layer["op"] == "QAttention" for layer in layers) == 2  # its attention on int8 codes too
    assert "test_accuracy" not in q.report
    # float_layers keeps chosen layers float (here the fused attention nodes, by pattern).
    kept = lowbit.quantize(bert, data, float_layers="*/self/Reshape_3")
    ops = [layer["op"] for layer in kept.info()["layers"]]
    assert "QAttention" not in ops and ops.count("Attention") == 2
    with pytest.raises(lowbit.ArgumentError, match="matches no quantizable layer"):
        lowbit.quantize(bert, data, float_layers="no_such_layer")
    with pytest.raises(lowbit.ArgumentError, match="named inputs"):
        data.arrays()


def test_sweep_writes_the_variants_and_the_report(fashion, small_model, tmp_path):
    out = tmp_path / "sweep"
    figures = lowbit.sweep(small_model, fashion, str(out), bits=[8, 4], modes=["dynamic"], rounding=["nearest"],
                           calib_samples=300, validation_samples=1000, speed=False)
    names = [v["name"] for v in figures["variants"]]
    assert names == ["dynamic-w8-nearest-per-channel", "dynamic-w4-nearest-per-channel"]
    assert all(v["measured"] and not v["reused"] for v in figures["variants"])
    for v in figures["variants"]:
        q = lowbit.load(v["model_file"])
        assert lowbit.evaluate(q, fashion)["accuracy"] == v["test_accuracy"]
    assert figures["variants"][1]["file_bytes"] < figures["variants"][0]["file_bytes"]
    assert set(figures["pareto_front"]) <= set(names) and figures["pareto_front"]
    html = (out / "report.html").read_text()
    assert html.count('<circle class="point') == 2 and "<script" not in html
    again = lowbit.sweep(small_model, fashion, str(out), bits=[8, 4], modes=["dynamic"], rounding=["nearest"],
                         calib_samples=300, validation_samples=1000, speed=False)
    assert all(v["reused"] for v in again["variants"])
    with pytest.raises(lowbit.ArgumentError, match="bits must be"):
        lowbit.sweep(small_model, fashion, str(tmp_path / "bad"), bits=[5])
