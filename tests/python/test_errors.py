"""Bad arguments raise clear Python exceptions (lowbit.Error subclasses with the CLI's messages, or
TypeError for an argument of the wrong Python type) and never crash the interpreter."""
import numpy as np
import pytest

import lowbit

U8 = np.zeros((4, 28, 28), np.uint8)
F32 = np.zeros((4, 6), np.float32)
LABELS = np.zeros(4, np.int64)


@pytest.fixture(scope="module")
def ctx(fashion, small_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "garbage.lbm").write_bytes(b"\x00not a model at all" * 10)
    (tmp / "garbage.onnx").write_bytes(b"\x08\x07\x12\xff\xff\xff")
    (tmp / "garbage.json").write_text("{ not json")
    small_model.save(str(tmp / "m.lbm"))
    (tmp / "truncated.lbm").write_bytes((tmp / "m.lbm").read_bytes()[:300])
    (tmp / "not-idx").mkdir()
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (tmp / "not-idx" / name).write_bytes(b"\x01\x02\x03")
    return {
        "tmp": tmp,
        "data": fashion,
        "model": small_model,
        "quantized": lowbit.quantize(small_model, fashion),
        "floats": lowbit.Dataset(F32, LABELS, F32, LABELS + 1),
        "bytes": lowbit.Dataset(F32.astype(np.uint8), LABELS, F32.astype(np.uint8), LABELS + 1),
    }


def x_test(c, n=4):
    return c["data"].arrays("test")[0][:n]


CASES = [
    # predict: the batch
    ("x float64", lambda c: lowbit.predict(c["model"], U8.astype(np.float64)), lowbit.ArgumentError, "got float64"),
    ("x int32", lambda c: lowbit.predict(c["model"], U8.astype(np.int32)), lowbit.ArgumentError, "got int32"),
    ("x bool", lambda c: lowbit.predict(c["model"], U8.astype(bool)), lowbit.ArgumentError, "got bool"),
    ("x complex", lambda c: lowbit.predict(c["model"], U8.astype(np.complex64)), lowbit.ArgumentError, "got complex64"),
    ("x float32 into a byte model", lambda c: lowbit.predict(c["model"], U8.astype(np.float32)), lowbit.ArgumentError,
     "expected u8 pixel values"),
    ("x wrong sample shape", lambda c: lowbit.predict(c["model"], np.zeros((4, 27, 28), np.uint8)), lowbit.ArgumentError,
     "takes a batch of shape [N, 28, 28], the batch has [4, 27, 28]"),
    ("x without a batch dimension", lambda c: lowbit.predict(c["model"], np.zeros((28, 28), np.uint8)), lowbit.ArgumentError,
     "the batch has [28, 28]"),
    ("x flat", lambda c: lowbit.predict(c["model"], np.zeros((4, 784), np.uint8)), lowbit.ArgumentError, "the batch has [4, 784]"),
    ("x scalar", lambda c: lowbit.predict(c["model"], np.uint8(3)), lowbit.ArgumentError, "the batch has []"),
    ("x None", lambda c: lowbit.predict(c["model"], None), lowbit.ArgumentError, "expected a numpy array, got None"),
    ("x a list", lambda c: lowbit.predict(c["model"], [[1, 2], [3, 4]]), lowbit.ArgumentError, "expected a numpy array, got a list"),
    ("x a string", lambda c: lowbit.predict(c["model"], "image.png"), lowbit.ArgumentError, "expected a numpy array, got a str"),
    ("predict model None", lambda c: lowbit.predict(None, U8), lowbit.ArgumentError, "model: expected a lowbit.Model, got None"),
    ("predict model a path", lambda c: lowbit.predict("m.lbm", U8), TypeError, "incompatible function arguments"),
    ("predict batch_size 0", lambda c: lowbit.predict(c["model"], U8, batch_size=0), lowbit.ArgumentError,
     "batch_size must be at least 1"),
    # Dataset from arrays
    ("labels float", lambda c: lowbit.Dataset(F32, LABELS.astype(np.float32), F32, LABELS), lowbit.ArgumentError,
     "y_train: expected integer class labels, got float32"),
    ("labels 2-D", lambda c: lowbit.Dataset(F32, np.zeros((4, 1), np.int64), F32, LABELS), lowbit.ArgumentError,
     "expected one label per sample (1 dimension), got 2"),
    ("labels negative", lambda c: lowbit.Dataset(F32, np.array([0, 1, -1, 0]), F32, LABELS), lowbit.ArgumentError,
     "label -1 (sample 2) is negative"),
    ("labels out of num_classes", lambda c: lowbit.Dataset(F32, np.array([0, 1, 5, 0]), F32, LABELS, num_classes=3),
     lowbit.ArgumentError, "label 5 (sample 2) is not below num_classes 3"),
    ("labels beyond int32", lambda c: lowbit.Dataset(F32, np.array([0, 1, 2**40, 0]), F32, LABELS), lowbit.ArgumentError,
     "does not fit int32"),
    ("fewer labels than samples", lambda c: lowbit.Dataset(F32, LABELS[:3], F32, LABELS), lowbit.ArgumentError,
     "4 samples but 3 labels"),
    ("x_train float64", lambda c: lowbit.Dataset(F32.astype(np.float64), LABELS, F32, LABELS), lowbit.ArgumentError,
     "x_train: expected float32 or uint8 values, got float64"),
    ("splits of different dtypes", lambda c: lowbit.Dataset(F32, LABELS, F32.astype(np.uint8), LABELS), lowbit.ArgumentError,
     "x_train is f32 but x_test is u8"),
    ("splits of different sample shapes", lambda c: lowbit.Dataset(F32, LABELS, np.zeros((4, 5), np.float32), LABELS),
     lowbit.ArgumentError, "x_train's samples have shape [6], x_test's [5]"),
    ("x_train 1-D", lambda c: lowbit.Dataset(np.zeros(4, np.float32), LABELS, F32, LABELS), lowbit.ArgumentError,
     "at least 2 dimensions"),
    ("no samples", lambda c: lowbit.Dataset(F32[:0], LABELS[:0], F32, LABELS), lowbit.ArgumentError, "no samples"),
    ("labels None", lambda c: lowbit.Dataset(F32, None, F32, LABELS), lowbit.ArgumentError, "y_train: expected a numpy array"),
    ("dataset folder missing", lambda c: lowbit.Dataset(str(c["tmp"] / "nowhere")), lowbit.IoError, "nowhere"),
    ("dataset folder of non-IDX files", lambda c: lowbit.Dataset(str(c["tmp"] / "not-idx")), lowbit.FormatError, "not-idx"),
    # model files
    ("load a missing file", lambda c: lowbit.load(str(c["tmp"] / "missing.lbm")), lowbit.IoError, "missing.lbm"),
    ("load a file that is not a model", lambda c: lowbit.load(str(c["tmp"] / "garbage.lbm")), lowbit.FormatError, "garbage.lbm"),
    ("load a truncated model", lambda c: lowbit.load(str(c["tmp"] / "truncated.lbm")), lowbit.FormatError, "truncated.lbm"),
    ("load a broken ONNX file", lambda c: lowbit.load(str(c["tmp"] / "garbage.onnx")), lowbit.FormatError, "garbage.onnx"),
    ("import_onnx a missing file", lambda c: lowbit.import_onnx(str(c["tmp"] / "missing.onnx")), lowbit.IoError, "missing.onnx"),
    ("model from garbage bytes", lambda c: lowbit.Model.from_bytes(b"garbage"), lowbit.FormatError, "bytes"),
    ("save into a missing folder", lambda c: c["model"].save(str(c["tmp"] / "no" / "m.lbm")), lowbit.IoError, "m.lbm"),
    ("load_calibration of a broken file", lambda c: lowbit.load_calibration(str(c["tmp"] / "garbage.json")), lowbit.FormatError,
     "garbage.json"),
    # train
    ("arch not layer sizes", lambda c: lowbit.train(c["data"], "big-model", progress=False), lowbit.Error, "big-model"),
    ("arch of the wrong input size", lambda c: lowbit.train(c["data"], "100-10", progress=False), lowbit.FormatError, "size 100"),
    ("arch of the wrong class count", lambda c: lowbit.train(c["data"], "784-16-5", progress=False), lowbit.FormatError, "classes"),
    ("arch dict without layers", lambda c: lowbit.train(c["data"], {"name": "x"}, progress=False), lowbit.FormatError, "layers"),
    ("arch a number", lambda c: lowbit.train(c["data"], 784, progress=False), lowbit.ArgumentError, "arch: expected layer sizes"),
    ("epochs 0", lambda c: lowbit.train(c["data"], epochs=0), lowbit.ArgumentError, "epochs must be at least 1"),
    ("batch_size 0", lambda c: lowbit.train(c["data"], batch_size=0), lowbit.ArgumentError, "batch_size must be at least 1"),
    ("negative learning rate", lambda c: lowbit.train(c["data"], lr=-0.1), lowbit.ArgumentError, "lr must be positive"),
    ("unknown optimizer", lambda c: lowbit.train(c["data"], optimizer="rmsprop"), lowbit.ArgumentError, "\"adam\" or \"sgd\""),
    ("unknown schedule", lambda c: lowbit.train(c["data"], lr_schedule="step"), lowbit.ArgumentError, "\"constant\" or \"cosine\""),
    ("validation split above 0.99", lambda c: lowbit.train(c["data"], validation_split=1.5), lowbit.ArgumentError,
     "validation_split must be in [0, 0.99]"),
    ("callback not callable", lambda c: lowbit.train(c["data"], callback=3), lowbit.ArgumentError, "callback: expected a callable"),
    ("train on data of another dtype", lambda c: lowbit.train(c["floats"], {"input": {"dtype": "u8"}, "layers": [
        {"type": "dense", "units": 2}]}, progress=False), lowbit.FormatError, "the data holds f32 values"),
    ("train data a path", lambda c: lowbit.train("/usr/share/datasets/fashion-mnist"), TypeError, "incompatible function arguments"),
    # evaluate, calibrate
    ("evaluate an unknown split", lambda c: lowbit.evaluate(c["model"], c["data"], split="validation"), lowbit.ArgumentError,
     "split must be \"train\" or \"test\""),
    ("evaluate on data of another shape", lambda c: lowbit.evaluate(c["model"], c["bytes"]), lowbit.ArgumentError,
     "expects samples of shape [28, 28], the data has [6]"),
    ("evaluate on float values", lambda c: lowbit.evaluate(c["model"], c["floats"]), lowbit.ArgumentError,
     "the data holds f32 values"),
    ("calibrate with an unknown method", lambda c: lowbit.calibrate(c["model"], c["data"], method="median"), lowbit.Error, "median"),
    ("calibrate 0 samples", lambda c: lowbit.calibrate(c["model"], c["data"], samples=0), lowbit.ArgumentError,
     "samples must be at least 1"),
    ("calibrate a quantized model", lambda c: lowbit.calibrate(c["quantized"], c["data"]), lowbit.ArgumentError, "already quantized"),
    # quantize, dequantize, compare
    ("quantize to 5 bits", lambda c: lowbit.quantize(c["model"], c["data"], bits=5), lowbit.ArgumentError,
     "bits must be 8, 6, 4, 3 or 2, got 5"),
    ("quantize in an unknown mode", lambda c: lowbit.quantize(c["model"], c["data"], mode="half"), lowbit.Error, "half"),
    ("quantize with an unknown scheme", lambda c: lowbit.quantize(c["model"], c["data"], scheme="asym"), lowbit.ArgumentError,
     "scheme must be \"symmetric\" or \"affine\""),
    ("quantize with an unknown granularity", lambda c: lowbit.quantize(c["model"], mode="dynamic", granularity="col"),
     lowbit.ArgumentError, "granularity must be \"row\" or \"tensor\""),
    ("quantize a quantized model", lambda c: lowbit.quantize(c["quantized"], c["data"]), lowbit.ArgumentError, "already quantized"),
    ("quantize statically without data", lambda c: lowbit.quantize(c["model"]), lowbit.ArgumentError, "pass a lowbit.Dataset"),
    ("quantize with ranges of the wrong type", lambda c: lowbit.quantize(c["model"], ranges=3), lowbit.ArgumentError,
     "ranges: expected a lowbit.Calibration"),
    ("quantize with a broken plan", lambda c: lowbit.quantize(c["model"], c["data"], plan="{ nope"), lowbit.FormatError, "plan"),
    ("quantize with an unknown rounding", lambda c: lowbit.quantize(c["model"], c["data"], rounding="best"), lowbit.ArgumentError,
     "rounding must be \"nearest\" or \"gptq\""),
    ("quantize with a bad group size", lambda c: lowbit.quantize(c["model"], mode="dynamic", bits=4, group_size=48),
     lowbit.ArgumentError, "group size must be 32, 64 or 128"),
    ("quantize 8-bit blocks", lambda c: lowbit.quantize(c["model"], mode="dynamic", group_size=32), lowbit.ArgumentError,
     "have 2, 3 or 4 bits"),
    ("quantize layers that do not exist", lambda c: lowbit.quantize(c["model"], c["data"], mode="partial", layers="conv_9"),
     lowbit.ArgumentError, "conv_9"),
    ("dequantize a float model", lambda c: lowbit.dequantize(c["model"]), lowbit.ArgumentError, "not quantized"),
    ("compare against None", lambda c: lowbit.compare(c["model"], None, c["data"]), lowbit.ArgumentError,
     "against: expected a lowbit.Model"),
    # qat, distill
    ("qat on a quantized model", lambda c: lowbit.qat(c["quantized"], c["data"]), lowbit.ArgumentError, "not a float model"),
    ("qat with alpha 2", lambda c: lowbit.qat(c["model"], c["data"], alpha=2.0), lowbit.ArgumentError, "alpha must be in [0, 1]"),
    ("distill a student of the wrong type", lambda c: lowbit.distill(c["model"], c["data"], student=3), lowbit.ArgumentError,
     "student: expected layer sizes"),
    ("distill a new student for 0 epochs", lambda c: lowbit.distill(c["model"], c["data"], epochs=0), lowbit.ArgumentError,
     "a new student needs training epochs"),
    # ONNX export, threads
    ("export an unknown profile", lambda c: lowbit.export_onnx(c["model"], str(c["tmp"] / "m.onnx"), profile="int8"),
     lowbit.ArgumentError, "int8"),
    ("export into a missing folder", lambda c: lowbit.export_onnx(c["model"], str(c["tmp"] / "no" / "m.onnx")), lowbit.IoError,
     "m.onnx"),
    ("zero threads", lambda c: lowbit.set_num_threads(0), lowbit.ArgumentError, "thread count must be at least 1"),
]


def test_there_are_at_least_fifty_kinds():
    assert len(CASES) >= 50
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,call,error,message", CASES, ids=[case[0] for case in CASES])
def test_bad_argument_raises_a_clear_exception(ctx, name, call, error, message):
    with pytest.raises(error) as raised:
        call(ctx)
    assert message in str(raised.value), str(raised.value)


def test_nothing_is_left_half_written(ctx):
    # A failed save leaves neither the file nor a temporary beside it.
    folder = ctx["tmp"] / "clean"
    folder.mkdir()
    with pytest.raises(lowbit.ArgumentError):
        lowbit.export_onnx(ctx["model"], str(folder / "m.onnx"), profile="int8")
    assert list(folder.iterdir()) == []
