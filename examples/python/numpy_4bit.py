"""Train on numpy arrays, quantize to 4 bits, compare: scikit-learn's 8x8 digits (64 features)."""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import lowbit

x, y = load_digits(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split((x / 16).astype(np.float32), y, test_size=0.25, random_state=0, stratify=y)
data = lowbit.Dataset(x_train, y_train, x_test, y_test)
model = lowbit.train(data, "64-64-32-10", epochs=30, progress=False)
q4 = lowbit.quantize(model, data, bits=4)
report = lowbit.compare(q4, model, data)
print(f"float {report['against_accuracy']:.4f}, 4-bit {report['model_accuracy']:.4f}, agreement {report['agreement']:.4f}, "
      f"{q4.info()['tensor_bytes']} bytes of tensors instead of {model.info()['tensor_bytes']}")
