// lowbit/quant_params.h - quantization parameters as a value type, and the arithmetic on them.
//
// A quantized value q stands for the real number  real = scale * (q - zero_point).
// QuantParams holds the scale(s), zero point(s), bit width, signedness and, for per-channel
// parameters, the channel axis. docs/design/quantization.md derives every formula used here.
//
//   // 8-bit affine parameters for activations observed in [-0.3, 5.2]:
//   lowbit::QuantParams p = lowbit::choose_params(-0.3f, 5.2f, {8, lowbit::QScheme::Affine});
//   int32_t q = p.quantize(1.0f);           // round-half-to-even, then saturate
//   float back = p.dequantize(q);           // within scale/2 of 1.0
//   // Per-channel symmetric 4-bit weights of a Dense layer [out, in]:
//   lowbit::QuantParams w = lowbit::choose_weight_params(weight, {4, lowbit::QScheme::Symmetric, true});
//   // Requantization by a fixed-point multiplier, integer only:
//   lowbit::FixedPointMultiplier m = lowbit::FixedPointMultiplier::from(0.0123);
//   int32_t r = m.apply(acc);               // round(acc * 0.0123), exactly as the kernels do
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lowbit/random.h"
#include "lowbit/tensor.h"

namespace lowbit {

enum class QScheme : uint8_t {
  Symmetric,  // zero_point = 0, range [-qmax, qmax] (narrow: -2^(b-1) unused, so negation is exact)
  Affine,     // zero_point chosen so that [min, max] (extended to include 0) fills the whole range
};
const char* name_of(QScheme scheme) noexcept;

struct QuantSpec {
  int bits = 8;                      // 2..8 (16 allowed for activations that need it)
  QScheme scheme = QScheme::Affine;
  bool per_channel = false;          // weights: one scale per output channel (axis 0)
  bool is_signed = true;             // storage s8/s4/s2 (else u8/u4/u2)
  bool narrow_range = false;         // signed codes in [-(2^(b-1)-1), 2^(b-1)-1]: always for weights
};

struct QuantParams {
  int bits = 8;
  bool is_signed = true;
  QScheme scheme = QScheme::Affine;
  bool narrow_range = false;         // implied by Symmetric
  int axis = -1;                     // -1: per-tensor; else the channel axis
  std::vector<float> scale;          // one per channel (or one)
  std::vector<int32_t> zero_point;   // same length as scale
  // Block (group) parameters: > 0 cuts each channel (axis 0) of a [channels, K] tensor into blocks
  // of block_size values along K, each with its own scale and zero point, at index
  // channel * blocks + k / block_size (blocks = ceil(K / block_size)). 0: one per channel.
  int64_t block_size = 0;

  int32_t qmin() const noexcept;     // -128 for s8 affine, -127 for s8 symmetric or narrow, 0 for u8
  int32_t qmax() const noexcept;
  size_t channels() const noexcept { return scale.size(); }
  bool per_channel() const noexcept { return axis >= 0; }
  // Storage dtype: s8/u8 for 5..8 (and 16 -> s32) bits, s4/u4 for 3..4 bits, s2/u2 for 2 bits.
  DType storage_dtype() const;

  int32_t quantize(float real, size_t channel = 0) const noexcept {
    float v = std::nearbyint(real / scale[channel]) + static_cast<float>(zero_point[channel]);
    return static_cast<int32_t>(std::fmin(std::fmax(v, static_cast<float>(qmin())), static_cast<float>(qmax())));
  }
  float dequantize(int32_t q, size_t channel = 0) const noexcept {
    return scale[channel] * static_cast<float>(q - zero_point[channel]);
  }
  // Throws Error(InvalidArgument) naming `what` if a scale is not positive and finite, a zero point
  // is outside [qmin, qmax], or the bit width is unsupported.
  void validate(const std::string& what) const;
};

// Parameters covering [min, max]. For Affine the range is first extended to include 0 so that
// real 0 is exactly representable (zero padding, ReLU's zero); for Symmetric max(|min|, |max|).
// A degenerate range (min == max == 0) gets scale 1.
QuantParams choose_params(float min, float max, const QuantSpec& spec);
// The scale and zero point that choose_params gives channel `channel` of `p` (whose bits, scheme
// and range are set) for values in [min, max], both finite; the range is widened to include 0.
// Never throws and never allocates (quantization-aware training calls it every step).
void fit_channel(QuantParams& p, size_t channel, float min, float max) noexcept;
// Weight parameters from a [out, in, ...] tensor: per output channel (axis 0) if spec.per_channel.
QuantParams choose_weight_params(const Tensor& weight, const QuantSpec& spec);

// Block weight parameters of a [units, K] tensor: blocks of `block` values along K (32, 64 or
// 128), 2..4 bits, symmetric or affine, each block fitted to its own range (fit_block). The
// scales are fp16 values (the storage of block weights), so the codes chosen here are the codes
// stored.
QuantParams choose_block_weight_params(const Tensor& weight, int bits, QScheme scheme, int64_t block);
// Fits parameter `index` of block parameters `p` to [min, max] (both finite): as fit_channel,
// with the scale rounded to the nearest fp16 value (at least the smallest positive one) and the
// affine zero point chosen for that scale. Throws Error(InvalidArgument) when the scale exceeds
// fp16's range.
void fit_block(QuantParams& p, size_t index, float min, float max);

// Round-to-nearest-even quantization of a whole tensor to int32 codes ([channels, rest] layout
// for per-channel params), and back. Stochastic rounding rounds up with probability equal to the
// fractional part (unbiased in expectation), drawing from `rng`.
enum class Rounding : uint8_t { NearestEven, Stochastic };
std::vector<int32_t> quantize_values(const Tensor& real, const QuantParams& p, Rounding rounding = Rounding::NearestEven,
                                     Rng* rng = nullptr);
Tensor dequantize_values(std::span<const int32_t> q, const Shape& shape, const QuantParams& p);
// Quantize then dequantize ("fake quantization"): what the tensor looks like to integer kernels.
Tensor fake_quantize(const Tensor& real, const QuantParams& p);

// Packs int32 codes (already in [qmin, qmax]) into the storage dtype: s8/u8 one per byte; s4/u4
// two per byte, low nibble first; s2/u2 four per byte, lowest bits first. Rows of the last
// dimension are padded to whole bytes so that each row starts on a byte. unpack is the inverse.
Tensor pack_codes(std::span<const int32_t> q, const Shape& shape, DType storage);
std::vector<int32_t> unpack_codes(const Tensor& packed, const Shape& shape);
int64_t packed_row_bytes(DType storage, int64_t row_length) noexcept;

// Error between a reference tensor and an approximation of it.
struct ErrorMetrics {
  double mse = 0;            // mean squared error
  double sqnr_db = 0;        // 10 log10(signal power / noise power); +inf when exact
  double max_abs = 0;        // largest absolute error
  double cosine = 1;         // cosine similarity of the two as vectors
};
ErrorMetrics compare_tensors(const Tensor& reference, const Tensor& approximation);

// A real multiplier as m * 2^-shift with m in [2^30, 2^31): requantization without floats.
// apply(x) = (x * m + 2^(shift-1)) >> shift in 64-bit arithmetic (round half up of x * multiplier),
// saturated to int32.
struct FixedPointMultiplier {
  int32_t multiplier = 0;
  int32_t shift = 0;  // right shift, 1..62
  static FixedPointMultiplier from(double real_multiplier);  // real_multiplier in (0, 2^30)
  int32_t apply(int32_t x) const noexcept {
    const int64_t rounding = int64_t{1} << (shift - 1);
    const int64_t r = (static_cast<int64_t>(x) * multiplier + rounding) >> shift;
    return static_cast<int32_t>(r < INT32_MIN ? INT32_MIN : r > INT32_MAX ? INT32_MAX : r);
  }
  double real() const noexcept { return std::ldexp(static_cast<double>(multiplier), -shift); }
};

}  // namespace lowbit
