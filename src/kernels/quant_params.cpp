// Quantization parameters and tensor quantization; docs/design/quantization.md derives the maths.
#include "kernels/elementwise.h"
#include "lowbit/quant_params.h"
#include "lowbit/runtime_config.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace lowbit {

const char* name_of(QScheme scheme) noexcept { return scheme == QScheme::Symmetric ? "symmetric" : "affine"; }

int32_t QuantParams::qmin() const noexcept {
  if (!is_signed) return 0;
  const int32_t half = int32_t{1} << (bits - 1);
  return (scheme == QScheme::Symmetric || narrow_range) ? -(half - 1) : -half;
}

int32_t QuantParams::qmax() const noexcept {
  return is_signed ? (int32_t{1} << (bits - 1)) - 1 : (int32_t{1} << bits) - 1;
}

DType QuantParams::storage_dtype() const {
  if (bits == 16) return DType::S32;
  if (bits >= 5 && bits <= 8) return is_signed ? DType::S8 : DType::U8;
  if (bits >= 3 && bits <= 4) return is_signed ? DType::S4 : DType::U4;
  if (bits == 2) return is_signed ? DType::S2 : DType::U2;
  throw Error(ErrorKind::InvalidArgument, "unsupported bit width " + std::to_string(bits) + " (expected 2..8 or 16)");
}

void QuantParams::validate(const std::string& what) const {
  if (!((bits >= 2 && bits <= 8) || bits == 16))
    throw Error(ErrorKind::InvalidArgument, what + ": unsupported bit width " + std::to_string(bits) + " (expected 2..8 or 16)");
  if (scale.empty() || scale.size() != zero_point.size())
    throw Error(ErrorKind::InvalidArgument, what + ": needs as many zero points as scales (and at least one)");
  if (scheme == QScheme::Symmetric && bits == 2 && is_signed == false)
    throw Error(ErrorKind::InvalidArgument, what + ": symmetric parameters must be signed");
  for (size_t c = 0; c < scale.size(); ++c) {
    if (!(scale[c] > 0.0f) || !std::isfinite(scale[c]))
      throw Error(ErrorKind::InvalidArgument, what + ": scale " + std::to_string(scale[c]) + " of channel " +
                                                  std::to_string(c) + " must be positive and finite");
    if (zero_point[c] < qmin() || zero_point[c] > qmax())
      throw Error(ErrorKind::InvalidArgument, what + ": zero point " + std::to_string(zero_point[c]) + " is outside [" +
                                                  std::to_string(qmin()) + ", " + std::to_string(qmax()) + "]");
    if (scheme == QScheme::Symmetric && zero_point[c] != 0)
      throw Error(ErrorKind::InvalidArgument, what + ": symmetric parameters need zero point 0");
  }
}

namespace {
void check_spec(const QuantSpec& spec) {
  if (!((spec.bits >= 2 && spec.bits <= 8) || spec.bits == 16))
    throw Error(ErrorKind::InvalidArgument, "unsupported bit width " + std::to_string(spec.bits) + " (expected 2..8 or 16)");
  if (spec.scheme == QScheme::Symmetric && !spec.is_signed)
    throw Error(ErrorKind::InvalidArgument, "symmetric quantization needs a signed storage type");
}

void fill_channel(QuantParams& p, size_t c, float min, float max) {
  if (!std::isfinite(min) || !std::isfinite(max))
    throw Error(ErrorKind::InvalidArgument, "cannot quantize a range that is not finite [" + std::to_string(min) + ", " +
                                                std::to_string(max) + "]");
  fit_channel(p, c, min, max);
}
}  // namespace

void fit_channel(QuantParams& p, size_t c, float min, float max) noexcept {
  min = std::min(min, 0.0f);
  max = std::max(max, 0.0f);
  const double qmin = p.qmin(), qmax = p.qmax();
  if (p.scheme == QScheme::Symmetric) {
    double bound = std::max(-static_cast<double>(min), static_cast<double>(max));
    p.scale[c] = bound > 0 ? static_cast<float>(bound / qmax) : 1.0f;
    p.zero_point[c] = 0;
    return;
  }
  if (max == min) {
    p.scale[c] = 1.0f;
    p.zero_point[c] = static_cast<int32_t>(std::clamp(0.0, qmin, qmax));
    return;
  }
  const double scale = (static_cast<double>(max) - min) / (qmax - qmin);
  p.scale[c] = static_cast<float>(scale);
  // zero_point = qmin - min / scale, rounded: real 0 maps exactly onto an integer code.
  const double zp = std::nearbyint(qmin - static_cast<double>(min) / p.scale[c]);
  p.zero_point[c] = static_cast<int32_t>(std::clamp(zp, qmin, qmax));
}

QuantParams choose_params(float min, float max, const QuantSpec& spec) {
  check_spec(spec);
  if (min > max) throw Error(ErrorKind::InvalidArgument, "range minimum " + std::to_string(min) + " exceeds maximum " + std::to_string(max));
  QuantParams p{spec.bits, spec.is_signed, spec.scheme, spec.narrow_range, -1, {0.0f}, {0}};
  fill_channel(p, 0, min, max);
  return p;
}

QuantParams choose_weight_params(const Tensor& weight, const QuantSpec& spec) {
  check_spec(spec);
  const float* w = weight.data<float>();
  const int64_t channels = spec.per_channel && weight.rank() >= 1 ? weight.dim(0) : 1;
  const int64_t per = channels ? weight.numel() / channels : 0;
  QuantParams p{spec.bits, spec.is_signed, spec.scheme, spec.narrow_range, spec.per_channel ? 0 : -1,
                std::vector<float>(channels, 1.0f), std::vector<int32_t>(channels, 0)};
  // Each channel's extremes, widened to include 0 (NaNs ignored); vectorized and threaded over
  // channels, as quantization-aware training recomputes these for every step. Channels are
  // independent, so the result does not depend on the thread count.
  // (fill_channel may throw, so it runs after the parallel part.)
  std::vector<float> lo(static_cast<size_t>(channels), 0.0f), hi(static_cast<size_t>(channels), 0.0f);
  parallel_for(channels, std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, per)), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      if (per > 0) {
        minmax_f32(per, w + c * per, &lo[c], &hi[c]);
        lo[c] = std::min(0.0f, lo[c]), hi[c] = std::max(0.0f, hi[c]);  // std::min(0, NaN) is 0
      }
  });
  for (int64_t c = 0; c < channels; ++c) fill_channel(p, static_cast<size_t>(c), lo[c], hi[c]);
  return p;
}

void fit_block(QuantParams& p, size_t index, float min, float max) {
  fill_channel(p, index, min, max);
  const float scale = f16_to_f32(f32_to_f16(p.scale[index]));
  if (!std::isfinite(scale))
    throw Error(ErrorKind::InvalidArgument, "block scale " + std::to_string(p.scale[index]) +
                                                " is beyond fp16's range (weights up to about 65504 * 2^(bits-1)); use per-channel weights");
  p.scale[index] = scale > 0.0f ? scale : f16_to_f32(1);  // the smallest positive fp16 (a block of zeros)
  if (p.scheme == QScheme::Affine && max > min) {
    const double zp = std::nearbyint(p.qmin() - static_cast<double>(std::min(min, 0.0f)) / p.scale[index]);
    p.zero_point[index] = static_cast<int32_t>(std::clamp(zp, static_cast<double>(p.qmin()), static_cast<double>(p.qmax())));
  }
}

QuantParams choose_block_weight_params(const Tensor& weight, int bits, QScheme scheme, int64_t block) {
  if (bits < 2 || bits > 4) throw Error(ErrorKind::InvalidArgument, "block weights have 2, 3 or 4 bits, got " + std::to_string(bits));
  if (block != 32 && block != 64 && block != 128)
    throw Error(ErrorKind::InvalidArgument, "the block size must be 32, 64 or 128, got " + std::to_string(block));
  if (weight.dtype() != DType::F32 || weight.rank() != 2)
    throw Error(ErrorKind::InvalidArgument, "block weights must be f32 [units, K], got " + to_string(weight.shape()));
  const int64_t units = weight.dim(0), k = weight.dim(1), blocks = (k + block - 1) / block;
  QuantParams p{bits, true, scheme, true, 0, std::vector<float>(static_cast<size_t>(units * blocks), 1.0f),
                std::vector<int32_t>(static_cast<size_t>(units * blocks), 0), block};
  for (int64_t u = 0; u < units; ++u)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* w = weight.data<float>() + u * k + b * block;
      float lo = 0.0f, hi = 0.0f;
      minmax_f32(std::min(block, k - b * block), w, &lo, &hi);
      fit_block(p, static_cast<size_t>(u * blocks + b), std::min(0.0f, lo), std::max(0.0f, hi));
    }
  return p;
}

namespace {
// Parameter index of flat element i for params over a [channels, rest] view (per channel on axis
// 0, or per block of each channel).
struct ChannelOf {
  int64_t per = 0, block = 0, blocks = 0;
  size_t operator()(int64_t i) const {
    if (!per) return 0;
    if (!block) return static_cast<size_t>(i / per);
    return static_cast<size_t>((i / per) * blocks + (i % per) / block);
  }
};
ChannelOf channel_of(const QuantParams& p, const Shape& shape) {
  if (!p.per_channel()) return {};
  const int64_t rows = shape.empty() ? 0 : shape[0], per = rows ? element_count(shape) / rows : 0;
  const int64_t blocks = p.block_size > 0 ? (per + p.block_size - 1) / p.block_size : 1;
  if (p.axis != 0 || shape.empty() || rows * blocks != static_cast<int64_t>(p.channels()))
    throw Error(ErrorKind::InvalidArgument, "per-channel parameters with " + std::to_string(p.channels()) + " scales on axis " +
                                                std::to_string(p.axis) +
                                                (p.block_size > 0 ? " in blocks of " + std::to_string(p.block_size) : std::string()) +
                                                " do not fit shape " + to_string(shape));
  return {per, p.block_size, blocks};
}
}  // namespace

std::vector<int32_t> quantize_values(const Tensor& real, const QuantParams& p, Rounding rounding, Rng* rng) {
  if (rounding == Rounding::Stochastic && !rng)
    throw Error(ErrorKind::InvalidArgument, "stochastic rounding needs a random number generator");
  const ChannelOf channel = channel_of(p, real.shape());
  const float* x = real.data<float>();
  std::vector<int32_t> q(static_cast<size_t>(real.numel()));
  for (int64_t i = 0; i < real.numel(); ++i) {
    const size_t c = channel(i);
    if (rounding == Rounding::NearestEven) {
      q[i] = p.quantize(x[i], c);
      continue;
    }
    const float v = x[i] / p.scale[c];
    const float floor = std::floor(v);
    const float up = rng->uniform() < (v - floor) ? 1.0f : 0.0f;
    const float code = floor + up + static_cast<float>(p.zero_point[c]);
    q[i] = static_cast<int32_t>(std::clamp(code, static_cast<float>(p.qmin()), static_cast<float>(p.qmax())));
  }
  return q;
}

Tensor dequantize_values(std::span<const int32_t> q, const Shape& shape, const QuantParams& p) {
  const ChannelOf channel = channel_of(p, shape);
  Tensor out(DType::F32, shape);
  if (static_cast<int64_t>(q.size()) != out.numel())
    throw Error(ErrorKind::InvalidArgument, "dequantize: " + std::to_string(q.size()) + " codes for shape " + to_string(shape));
  float* y = out.data<float>();
  for (int64_t i = 0; i < out.numel(); ++i) y[i] = p.dequantize(q[i], channel(i));
  return out;
}

Tensor fake_quantize(const Tensor& real, const QuantParams& p) {
  return dequantize_values(quantize_values(real, p), real.shape(), p);
}

int64_t packed_row_bytes(DType storage, int64_t row_length) noexcept {
  return static_cast<int64_t>(storage_bytes(storage, row_length));
}

Tensor pack_codes(std::span<const int32_t> q, const Shape& shape, DType storage) {
  const int bits = bits_of(storage);
  if (bits != 8 && bits != 4 && bits != 2)
    throw Error(ErrorKind::InvalidArgument, std::string("cannot pack codes into ") + name_of(storage));
  const int64_t cols = shape.empty() ? 1 : shape.back();
  const int64_t rows = cols ? element_count(shape) / cols : 0;
  const int64_t row_bytes = packed_row_bytes(storage, cols);
  if (static_cast<int64_t>(q.size()) != rows * cols)
    throw Error(ErrorKind::InvalidArgument, "pack: " + std::to_string(q.size()) + " codes for shape " + to_string(shape));
  // The tensor's element count is chosen so that nbytes() == rows * row_bytes.
  Tensor out(storage, {rows * row_bytes * (8 / bits)});
  uint8_t* dst = static_cast<uint8_t*>(out.raw());
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t code = static_cast<uint32_t>(q[r * cols + c]) & mask;
      const int64_t bit = c * bits;
      dst[r * row_bytes + bit / 8] |= static_cast<uint8_t>(code << (bit % 8));
    }
  return out;
}

std::vector<int32_t> unpack_codes(const Tensor& packed, const Shape& shape) {
  const DType storage = packed.dtype();
  const int bits = bits_of(storage);
  const bool is_signed = storage == DType::S8 || storage == DType::S4 || storage == DType::S2;
  const int64_t cols = shape.empty() ? 1 : shape.back();
  const int64_t rows = cols ? element_count(shape) / cols : 0;
  const int64_t row_bytes = packed_row_bytes(storage, cols);
  if (static_cast<int64_t>(packed.nbytes()) < rows * row_bytes)
    throw Error(ErrorKind::Format, "packed tensor of " + std::to_string(packed.nbytes()) + " bytes is too small for " +
                                       name_of(storage) + to_string(shape));
  const uint8_t* src = static_cast<const uint8_t*>(packed.raw());
  std::vector<int32_t> q(static_cast<size_t>(rows * cols));
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t bit = c * bits;
      int32_t code = static_cast<int32_t>((src[r * row_bytes + bit / 8] >> (bit % 8)) & mask);
      if (is_signed && code >= (1 << (bits - 1))) code -= 1 << bits;  // sign-extend
      q[r * cols + c] = code;
    }
  return q;
}

ErrorMetrics compare_tensors(const Tensor& reference, const Tensor& approximation) {
  if (reference.shape() != approximation.shape())
    throw Error(ErrorKind::InvalidArgument, "compare: shapes differ, " + to_string(reference.shape()) + " vs " +
                                                to_string(approximation.shape()));
  const float* a = reference.data<float>();
  const float* b = approximation.data<float>();
  double signal = 0, noise = 0, dot = 0, norm_b = 0, max_abs = 0;
  for (int64_t i = 0; i < reference.numel(); ++i) {
    const double e = double(a[i]) - b[i];
    signal += double(a[i]) * a[i];
    noise += e * e;
    dot += double(a[i]) * b[i];
    norm_b += double(b[i]) * b[i];
    max_abs = std::max(max_abs, std::fabs(e));
  }
  ErrorMetrics m;
  const double n = std::max<int64_t>(reference.numel(), 1);
  m.mse = noise / n;
  m.sqnr_db = noise > 0 ? 10.0 * std::log10(signal / noise) : std::numeric_limits<double>::infinity();
  m.max_abs = max_abs;
  m.cosine = (signal > 0 && norm_b > 0) ? dot / std::sqrt(signal * norm_b) : (signal == norm_b ? 1.0 : 0.0);
  return m;
}

FixedPointMultiplier FixedPointMultiplier::from(double real) {
  if (!(real > 0.0) || !(real < 1073741824.0))
    throw Error(ErrorKind::InvalidArgument, "requantization multiplier " + std::to_string(real) + " is outside (0, 2^30)");
  int exponent = 0;
  const double fraction = std::frexp(real, &exponent);  // real = fraction * 2^exponent, fraction in [0.5, 1)
  int64_t m = static_cast<int64_t>(std::nearbyint(std::ldexp(fraction, 31)));
  if (m == (int64_t{1} << 31)) {  // rounding reached 1.0: renormalise
    m /= 2;
    ++exponent;
  }
  FixedPointMultiplier f;
  f.shift = 31 - exponent;
  f.multiplier = static_cast<int32_t>(m);
  if (f.shift > 62) {  // too small to matter: the product rounds to 0 for every int32 input
    f.multiplier = 0;
    f.shift = 62;
  }
  return f;
}

}  // namespace lowbit
