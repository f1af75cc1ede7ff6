#include "lowbit/tensor.h"

#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>

namespace lowbit {

int bits_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: case DType::S32: return 32;
    case DType::S8: case DType::U8: return 8;
    case DType::S4: case DType::U4: return 4;
    case DType::S2: case DType::U2: return 2;
  }
  return 0;
}

const char* name_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::F32: return "f32";
    case DType::S8: return "s8";
    case DType::U8: return "u8";
    case DType::S32: return "s32";
    case DType::S4: return "s4";
    case DType::U4: return "u4";
    case DType::S2: return "s2";
    case DType::U2: return "u2";
  }
  return "?";
}

DType dtype_from_code(uint32_t code) {
  if (code >= 1 && code <= 8) return static_cast<DType>(code);
  throw Error(ErrorKind::Format, "unknown dtype code " + std::to_string(code) + " (this build knows 1..8)");
}

DType dtype_from_name(const std::string& name) {
  for (uint32_t code = 1; code <= 8; ++code) {
    if (name == name_of(static_cast<DType>(code))) return static_cast<DType>(code);
  }
  throw Error(ErrorKind::Format, "unknown dtype '" + name + "' (expected f32, s8, u8, s32, s4, u4, s2 or u2)");
}

int64_t element_count(const Shape& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorKind::InvalidArgument, "negative dimension in shape " + to_string(shape));
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d)
      throw Error(ErrorKind::InvalidArgument, "shape " + to_string(shape) + " has too many elements");
    count *= d;
  }
  return count;
}

std::string to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += shape[i] < 0 ? std::string("N") : std::to_string(shape[i]);
  }
  return s + "]";
}

size_t storage_bytes(DType dtype, int64_t count) noexcept {
  return static_cast<size_t>((count * bits_of(dtype) + 7) / 8);
}

namespace {
std::shared_ptr<std::byte> allocate(size_t bytes) {
  // Round up so that vector kernels may read a whole register past the last element.
  size_t rounded = (bytes + Tensor::kAlignment - 1) / Tensor::kAlignment * Tensor::kAlignment;
  if (rounded == 0) rounded = Tensor::kAlignment;
  void* p = std::aligned_alloc(Tensor::kAlignment, rounded);
  if (!p) throw Error(ErrorKind::InvalidArgument, "out of memory allocating " + std::to_string(bytes) + " bytes");
  std::memset(p, 0, rounded);
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}
}  // namespace

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = element_count(shape_);
  capacity_ = storage_bytes(dtype_, numel_);
  storage_ = allocate(capacity_);
}

Tensor Tensor::wrap(DType dtype, Shape shape, void* data, std::shared_ptr<const void> keep_alive) {
  const int64_t count = element_count(shape);
  if (count == 0) return Tensor(dtype, std::move(shape));
  const size_t align = bits_of(dtype) >= 32 ? 4 : 1;
  if (!data) throw Error(ErrorKind::InvalidArgument, "Tensor::wrap: null data for a " + to_string(shape) + " tensor");
  if (reinterpret_cast<uintptr_t>(data) % align)
    throw Error(ErrorKind::InvalidArgument, std::string("Tensor::wrap: ") + name_of(dtype) + " data must be aligned to " +
                                                std::to_string(align) + " bytes");
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = count;
  t.shape_ = std::move(shape);
  t.capacity_ = storage_bytes(dtype, count);
  // Aliasing: the tensor points at `data` and shares ownership of `keep_alive` (nothing if null).
  t.storage_ = std::shared_ptr<std::byte>(std::const_pointer_cast<void>(std::move(keep_alive)), static_cast<std::byte*>(data));
  return t;
}

Tensor Tensor::from_vector(Shape shape, std::span<const float> values) {
  Tensor t(DType::F32, std::move(shape));
  if (static_cast<int64_t>(values.size()) != t.numel())
    throw Error(ErrorKind::InvalidArgument, "from_vector: " + std::to_string(values.size()) +
                                                " values for shape " + to_string(t.shape()));
  std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

int64_t Tensor::dim(int axis) const {
  int r = rank();
  int a = axis < 0 ? axis + r : axis;
  if (a < 0 || a >= r)
    throw Error(ErrorKind::InvalidArgument, "axis " + std::to_string(axis) + " out of range for shape " + to_string(shape_));
  return shape_[a];
}

void Tensor::reshape(Shape shape) {
  if (element_count(shape) != numel_)
    throw Error(ErrorKind::InvalidArgument, "cannot reshape " + to_string(shape_) + " to " + to_string(shape));
  shape_ = std::move(shape);
}

void Tensor::resize(Shape shape) {
  int64_t count = element_count(shape);
  size_t bytes = storage_bytes(dtype_, count);
  if (!storage_ || bytes > capacity_) {
    storage_ = allocate(bytes);
    capacity_ = bytes;
  }
  shape_ = std::move(shape);
  numel_ = count;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (numel_) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::zero() noexcept {
  if (storage_) std::memset(storage_.get(), 0, capacity_);
}

void Tensor::check_dtype(DType expected) const {
  if (expected != dtype_)
    throw Error(ErrorKind::InvalidArgument, std::string("tensor holds ") + name_of(dtype_) + ", accessed as " + name_of(expected));
}

}  // namespace lowbit
