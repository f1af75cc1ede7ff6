#include "lowbit/tensor.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <limits>

namespace lowbit {

int bits_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::S64: return 64;
    case DType::F32: case DType::S32: return 32;
    case DType::F16: case DType::BF16: return 16;
    case DType::S8: case DType::U8: case DType::Bool: return 8;
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
    case DType::S64: return "s64";
    case DType::Bool: return "bool";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
  }
  return "?";
}

namespace {
constexpr uint32_t kLastDType = 12;
}  // namespace

bool is_byte_addressable(DType dtype) noexcept { return bits_of(dtype) >= 8; }

DType dtype_from_code(uint32_t code) {
  if (code >= 1 && code <= kLastDType) return static_cast<DType>(code);
  throw Error(ErrorKind::Format, "unknown dtype code " + std::to_string(code) + " (this build knows 1.." +
                                     std::to_string(kLastDType) + ")");
}

DType dtype_from_name(const std::string& name) {
  std::string known;
  for (uint32_t code = 1; code <= kLastDType; ++code) {
    if (name == name_of(static_cast<DType>(code))) return static_cast<DType>(code);
    known += std::string(code > 1 ? ", " : "") + name_of(static_cast<DType>(code));
  }
  throw Error(ErrorKind::Format, "unknown dtype '" + name + "' (expected one of " + known + ")");
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
  const size_t align = bits_of(dtype) >= 32 ? static_cast<size_t>(bits_of(dtype) / 8) : 1;
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

float f16_to_f32(uint16_t h) noexcept {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN (payload kept)
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);  // normal: rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // signed zero
  } else {  // subnormal: mantissa * 2^-24, exact in f32
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -value : value;
  }
  return std::bit_cast<float>(bits);
}

uint16_t f32_to_f16(float f) noexcept {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u)  // infinity, or NaN kept quiet
    return static_cast<uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u | ((magnitude >> 13) & 0x3ffu) : 0u));
  if (magnitude >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: infinity
  if (magnitude < 0x38800000u) {  // below the smallest normal (2^-14): a subnormal or zero
    // value / 2^-24 rounded to nearest even, computed exactly in f32 (the product is exact).
    const float scaled = std::bit_cast<float>(magnitude) * 0x1p24f;
    return static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(scaled)));
  }
  // Normal: drop 13 mantissa bits with round to nearest even; a carry into the exponent is right.
  const uint32_t rebiased = magnitude - (112u << 23);
  const uint32_t rounded = rebiased + 0xfffu + ((rebiased >> 13) & 1u);
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

float bf16_to_f32(uint16_t h) noexcept { return std::bit_cast<float>(uint32_t(h) << 16); }

uint16_t f32_to_bf16(float f) noexcept {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

namespace {

// One element of any byte-addressable dtype as double (exact for every value but s64 beyond
// 2^53, which ONNX's Cast does not promise either), and back.
double load_element(DType d, const std::byte* p, int64_t i) {
  switch (d) {
    case DType::F32: return reinterpret_cast<const float*>(p)[i];
    case DType::S8: return reinterpret_cast<const int8_t*>(p)[i];
    case DType::U8: case DType::Bool: return reinterpret_cast<const uint8_t*>(p)[i];
    case DType::S32: return reinterpret_cast<const int32_t*>(p)[i];
    case DType::S64: return static_cast<double>(reinterpret_cast<const int64_t*>(p)[i]);
    case DType::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    default: return 0;
  }
}

template <typename T> T to_integer(double v) {
  if (std::isnan(v)) return 0;
  const double t = std::trunc(v);
  if (t <= static_cast<double>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
  if (t >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
  return static_cast<T>(t);
}

void store_element(DType d, std::byte* p, int64_t i, double v) {
  switch (d) {
    case DType::F32: reinterpret_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::S8: reinterpret_cast<int8_t*>(p)[i] = to_integer<int8_t>(v); break;
    case DType::U8: reinterpret_cast<uint8_t*>(p)[i] = to_integer<uint8_t>(v); break;
    case DType::Bool: reinterpret_cast<uint8_t*>(p)[i] = v != 0.0 ? 1 : 0; break;
    case DType::S32: reinterpret_cast<int32_t*>(p)[i] = to_integer<int32_t>(v); break;
    case DType::S64: reinterpret_cast<int64_t*>(p)[i] = to_integer<int64_t>(v); break;
    case DType::F16: reinterpret_cast<uint16_t*>(p)[i] = f32_to_f16(static_cast<float>(v)); break;
    case DType::BF16: reinterpret_cast<uint16_t*>(p)[i] = f32_to_bf16(static_cast<float>(v)); break;
    default: break;
  }
}

}  // namespace

Tensor cast(const Tensor& x, DType to) {
  if (!is_byte_addressable(x.dtype()) || !is_byte_addressable(to))
    throw Error(ErrorKind::InvalidArgument, std::string("cast from ") + name_of(x.dtype()) + " to " + name_of(to) +
                                                ": packed low-bit tensors are not cast (unpack them)");
  if (x.dtype() == to) return x.clone();
  Tensor y(to, x.shape());
  const auto* src = static_cast<const std::byte*>(x.raw());
  auto* dst = static_cast<std::byte*>(y.raw());
  if (x.dtype() == DType::S64 && to == DType::S32) {  // exact integer path, no detour through double
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t v = reinterpret_cast<const int64_t*>(src)[i];
      reinterpret_cast<int32_t*>(dst)[i] = static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
    }
    return y;
  }
  for (int64_t i = 0; i < x.numel(); ++i) store_element(to, dst, i, load_element(x.dtype(), src, i));
  return y;
}

void Tensor::check_dtype(DType expected) const {
  if (expected != dtype_)
    throw Error(ErrorKind::InvalidArgument, std::string("tensor holds ") + name_of(dtype_) + ", accessed as " + name_of(expected));
}

}  // namespace lowbit
