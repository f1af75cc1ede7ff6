// numpy arrays <-> lowbit tensors (arrays.h).
#include "arrays.h"

#include <nanobind/stl/string.h>

// numpy's C API makes the output arrays (a third of what nanobind's generic export costs, which
// matters for a single image's predict).
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL lowbit_numpy_api
#include <numpy/arrayobject.h>

#include <limits>

namespace lowbit::python {

using namespace nb::literals;

namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::InvalidArgument, message); }

std::string py_type_name(nb::handle h) { return nb::cast<std::string>(h.type().attr("__name__")); }

std::string dtype_name(nb::handle array) {
  if (nb::hasattr(array, "dtype") && nb::hasattr(array.attr("dtype"), "name"))
    return nb::cast<std::string>(array.attr("dtype").attr("name"));
  return "an unknown dtype";
}

// The handle as an ndarray of any dtype, or an Error naming the argument.
nb::ndarray<nb::ro, nb::device::cpu> as_ndarray(nb::handle h, const std::string& what) {
  nb::ndarray<nb::ro, nb::device::cpu> a;
  if (!nb::try_cast(h, a, false))
    fail(what + ": expected a numpy array, got " + (h.is_none() ? std::string("None") : "a " + py_type_name(h)));
  return a;
}

bool c_contiguous(const nb::ndarray<nb::ro, nb::device::cpu>& a) {
  int64_t expected = 1;
  for (size_t i = a.ndim(); i-- > 0;) {
    if (a.shape(i) != 1 && a.stride(i) != expected) return false;
    expected *= static_cast<int64_t>(a.shape(i));
  }
  return true;
}

}  // namespace

Tensor tensor_from_array(nb::handle array, const std::string& what) {
  auto a = as_ndarray(array, what);
  DType dtype;
  if (a.dtype() == nb::dtype<float>()) {
    dtype = DType::F32;
  } else if (a.dtype() == nb::dtype<uint8_t>()) {
    dtype = DType::U8;
  } else {
    fail(what + ": expected float32 or uint8 values, got " + dtype_name(array) +
         " (convert explicitly, e.g. x.astype(numpy.float32))");
  }
  Shape shape;
  for (size_t i = 0; i < a.ndim(); ++i) shape.push_back(static_cast<int64_t>(a.shape(i)));
  const size_t item = dtype == DType::F32 ? 4 : 1;
  nb::object owner = nb::borrow(array);
  if (!c_contiguous(a) || reinterpret_cast<uintptr_t>(a.data()) % item != 0) {
    // One copy, C-contiguous and aligned (numpy allocates aligned).
    owner = nb::module_::import_("numpy").attr("array")(array, "copy"_a = true, "order"_a = "C");
    a = as_ndarray(owner, what);
  }
  PyObject* keep = owner.release().ptr();  // the reference the tensor holds
  std::shared_ptr<const void> keep_alive(keep, [](const void* p) {
    nb::gil_scoped_acquire gil;
    Py_DECREF(static_cast<PyObject*>(const_cast<void*>(p)));
  });
  if (a.size() == 0) {  // no memory to share: an empty tensor of that shape
    return Tensor(dtype, shape);
  }
  return Tensor::wrap(dtype, shape, const_cast<void*>(a.data()), std::move(keep_alive));
}

std::vector<int32_t> labels_from_array(nb::handle array, const std::string& what) {
  auto np = nb::module_::import_("numpy");
  auto a = as_ndarray(array, what);
  const auto code = a.dtype().code;
  if (code != static_cast<uint8_t>(nb::dlpack::dtype_code::Int) && code != static_cast<uint8_t>(nb::dlpack::dtype_code::UInt))
    fail(what + ": expected integer class labels, got " + dtype_name(array));
  if (a.ndim() != 1) fail(what + ": expected one label per sample (1 dimension), got " + std::to_string(a.ndim()) + " dimensions");
  nb::object wide = np.attr("asarray")(array, "dtype"_a = np.attr("int64"));
  auto w = nb::cast<nb::ndarray<const int64_t, nb::ndim<1>, nb::device::cpu>>(wide);
  std::vector<int32_t> labels(w.shape(0));
  for (size_t i = 0; i < labels.size(); ++i) {
    const int64_t v = w(i);
    if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
      fail(what + ": label " + std::to_string(v) + " (sample " + std::to_string(i) + ") does not fit int32");
    labels[i] = static_cast<int32_t>(v);
  }
  return labels;
}

void init_numpy() {
  if (_import_array() < 0) throw nb::python_error();
}

namespace {
// A numpy array over `data`, which `owner` (a capsule; its reference is taken) keeps alive.
nb::object numpy_array(void* data, const Shape& shape, int type, nb::capsule owner) {
  npy_intp dims[NPY_MAXDIMS];
  if (shape.size() > NPY_MAXDIMS) fail("a tensor of " + std::to_string(shape.size()) + " dimensions has no numpy array");
  for (size_t i = 0; i < shape.size(); ++i) dims[i] = static_cast<npy_intp>(shape[i]);
  PyObject* array = PyArray_SimpleNewFromData(static_cast<int>(shape.size()), dims, type, data);
  if (!array) throw nb::python_error();
  if (PyArray_SetBaseObject(reinterpret_cast<PyArrayObject*>(array), owner.release().ptr()) < 0) {
    Py_DECREF(array);
    throw nb::python_error();
  }
  return nb::steal(array);
}
}  // namespace

nb::object array_from_tensor(const Tensor& tensor) {
  int type;
  switch (tensor.dtype()) {
    case DType::F32: type = NPY_FLOAT32; break;
    case DType::U8: type = NPY_UINT8; break;
    case DType::S8: type = NPY_INT8; break;
    case DType::S32: type = NPY_INT32; break;
    case DType::S64: type = NPY_INT64; break;
    default: fail(std::string("no numpy dtype for a ") + name_of(tensor.dtype()) + " tensor");
  }
  auto* held = new Tensor(tensor);  // shares the buffer
  nb::capsule owner(held, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  return numpy_array(held->raw(), tensor.shape(), type, std::move(owner));
}

nb::object array_from_vector(std::vector<int32_t> values) {
  auto* held = new std::vector<int32_t>(std::move(values));
  nb::capsule owner(held, [](void* p) noexcept { delete static_cast<std::vector<int32_t>*>(p); });
  return numpy_array(held->data(), {static_cast<int64_t>(held->size())}, NPY_INT32, std::move(owner));
}

}  // namespace lowbit::python
