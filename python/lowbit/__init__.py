"""lowbit: train, quantize and run neural networks fast on the CPU, from numpy.

Every call is the C++ library's (the CLI's steps, one call each); this package adds no logic of
its own. A dozen lines from data to a 4-bit model::

    import numpy as np, lowbit
    data = lowbit.Dataset(x_train, y_train, x_test, y_test)     # float32 or uint8 arrays
    model = lowbit.train(data, "64-32-10", epochs=30)
    q = lowbit.quantize(model, data, bits=4)
    print(lowbit.compare(q, model, data)["agreement"])
    logits, classes = lowbit.predict(q, x_test)

Errors are lowbit.Error subclasses: ArgumentError (also ValueError), IoError (also OSError),
FormatError, UnsupportedError, InternalError, with the CLI's messages; Ctrl-C during training raises
Interrupted (also a KeyboardInterrupt) at the next batch, after writing a checkpoint if asked to.
"""
from ._lowbit import (  # noqa: F401
    ArgumentError,
    Calibration,
    Dataset,
    Error,
    FormatError,
    InternalError,
    Interrupted,
    IoError,
    Model,
    Progress,
    UnsupportedError,
    __version__,
    calibrate,
    compare,
    default_dataset_dir,
    dequantize,
    distill,
    evaluate,
    export_onnx,
    import_onnx,
    load,
    load_calibration,
    num_threads,
    predict,
    qat,
    quantize,
    save,
    set_num_threads,
    sweep,
    train,
)

__all__ = [name for name in dir() if not name.startswith("_")] + ["__version__"]
