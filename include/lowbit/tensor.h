// lowbit/tensor.h - dense n-dimensional arrays with a dtype and 64-byte aligned storage.
//
// A Tensor is a shape, a dtype and a shared, 64-byte aligned buffer. Copying a Tensor shares the
// buffer (like torch.Tensor or Ort::Value); clone() makes an independent copy.
//
//   lowbit::Tensor x(lowbit::DType::F32, {32, 784});   // zero-filled
//   float* p = x.data<float>();
//   x.reshape({32, 28, 28});                           // same buffer, new shape
//   lowbit::Tensor y = x.clone();
//
// DType values are stored in model files: the enum is append-only. Packed low-bit types (S4, U4,
// S2, U2) hold several values per byte; their packing layout is defined where they are produced.
// S64 and Bool hold shapes, indices and masks (ONNX int64 / bool); F16 and BF16 are storage types
// (initializers as exporters write them), converted to f32 for compute with cast():
//   lowbit::Tensor half = lowbit::cast(x, lowbit::DType::F16);   // round to nearest even
//   lowbit::Tensor back = lowbit::cast(half, lowbit::DType::F32);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/error.h"

namespace lowbit {

enum class DType : uint8_t {
  F32 = 1,
  S8 = 2,
  U8 = 3,
  S32 = 4,
  S4 = 5,  // packed, two per byte
  U4 = 6,  // packed, two per byte
  S2 = 7,  // packed, four per byte
  U2 = 8,  // packed, four per byte
  S64 = 9,
  Bool = 10,  // one byte per value, 0 or 1
  F16 = 11,   // IEEE 754 binary16
  BF16 = 12,  // bfloat16: the upper half of an f32
};

int bits_of(DType dtype) noexcept;
const char* name_of(DType dtype) noexcept;
// Throws Error(Format) for a value or name this build does not know.
DType dtype_from_code(uint32_t code);
DType dtype_from_name(const std::string& name);

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<int8_t>() { return DType::S8; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::U8; }
template <> constexpr DType dtype_of<int32_t>() { return DType::S32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::S64; }
template <> constexpr DType dtype_of<bool>() { return DType::Bool; }

// Scalar conversions of the 16-bit float storage types (round to nearest even; NaN stays NaN).
float f16_to_f32(uint16_t h) noexcept;
uint16_t f32_to_f16(float f) noexcept;
float bf16_to_f32(uint16_t h) noexcept;
uint16_t f32_to_bf16(float f) noexcept;
// True for the types that hold one value per whole number of bytes (not the packed low-bit ones).
bool is_byte_addressable(DType dtype) noexcept;

using Shape = std::vector<int64_t>;

// Product of the dimensions; throws Error(InvalidArgument) for a negative dimension or overflow.
int64_t element_count(const Shape& shape);
std::string to_string(const Shape& shape);  // "[32, 784]"

// Bytes needed for `count` values of `dtype` (packed types round up to whole bytes).
size_t storage_bytes(DType dtype, int64_t count) noexcept;

class Tensor {
 public:
  static constexpr size_t kAlignment = 64;

  Tensor() = default;
  Tensor(DType dtype, Shape shape);  // zero-filled

  static Tensor zeros(Shape shape) { return Tensor(DType::F32, std::move(shape)); }
  static Tensor from_vector(Shape shape, std::span<const float> values);
  // A tensor over memory the caller owns, without a copy (a numpy array, a memory-mapped file):
  // `data` must hold shape's values of dtype, aligned to the element size (4 bytes for f32 and
  // s32; the kernels need no more), and stay valid as long as any tensor shares it. `keep_alive`
  // (may be null when the caller guarantees that) is held until the last such tensor is gone.
  // resize() to a larger shape reallocates, detaching the tensor from `data`. Throws
  // Error(InvalidArgument) for a null or misaligned pointer.
  //   std::vector<float> pixels(32 * 784);
  //   lowbit::Tensor x = lowbit::Tensor::wrap(lowbit::DType::F32, {32, 784}, pixels.data(), nullptr);
  static Tensor wrap(DType dtype, Shape shape, void* data, std::shared_ptr<const void> keep_alive);

  bool defined() const noexcept { return storage_ != nullptr; }
  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const;  // negative axes count from the end
  int64_t numel() const noexcept { return numel_; }
  size_t nbytes() const noexcept { return storage_bytes(dtype_, numel_); }

  template <typename T> T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(raw());
  }
  template <typename T> const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(raw());
  }
  void* raw() noexcept { return storage_.get(); }
  const void* raw() const noexcept { return storage_.get(); }

  // Same buffer, new shape with the same element count.
  void reshape(Shape shape);
  // Makes this tensor hold `shape`, reallocating only when the buffer is too small. Contents are
  // unspecified afterwards. Used for activations whose batch size changes between calls.
  void resize(Shape shape);
  Tensor clone() const;
  // Fills with zeros (every dtype).
  void zero() noexcept;

 private:
  void check_dtype(DType expected) const;

  DType dtype_ = DType::F32;
  Shape shape_;
  int64_t numel_ = 0;
  size_t capacity_ = 0;
  std::shared_ptr<std::byte> storage_;
};

// A new tensor of `to` holding x's values converted as ONNX Cast does: floats to integers round
// toward zero (NaN and out-of-range values saturate; ONNX leaves them undefined), anything to
// Bool is `value != 0`, f32 to f16/bf16 rounds to nearest even. Packed low-bit types are refused
// (Error(InvalidArgument)); casting to the same dtype returns a copy.
Tensor cast(const Tensor& x, DType to);

}  // namespace lowbit
