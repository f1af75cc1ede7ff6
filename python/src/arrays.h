// numpy arrays <-> lowbit tensors for the Python module: zero-copy where the layout allows.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/tensor.h"

namespace lowbit::python {

namespace nb = nanobind;

// A tensor over the memory of `array` (a numpy array or anything with the buffer protocol or
// DLPack), which it keeps alive: no copy when the array is C-contiguous and aligned, one copy
// otherwise. Only float32 and uint8 are taken (never converted, never reinterpreted); `what`
// names the argument in the Error(InvalidArgument) thrown for anything else.
Tensor tensor_from_array(nb::handle array, const std::string& what);

// One label per sample: a 1-D array of integers (any integer dtype) that fit int32.
std::vector<int32_t> labels_from_array(nb::handle array, const std::string& what);

// Loads numpy's C API; the module calls it once, before anything below.
void init_numpy();

// numpy arrays sharing the tensor's / vector's storage (no copy).
nb::object array_from_tensor(const Tensor& tensor);
nb::object array_from_vector(std::vector<int32_t> values);

}  // namespace lowbit::python
