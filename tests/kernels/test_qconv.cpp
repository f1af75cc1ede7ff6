// The integer convolution's kernels (kernels/qconv.h) called directly: im2row + qgemm (at every
// ISA level of the GEMM under it) and the direct kernels (AVX2, AVX-512 VNNI) against the
// reference, bit for bit, on awkward shapes (1, 7, 17, 63 and 65 channels, widths and heights;
// groups, depthwise, strides, dilation, asymmetric padding), s8 and 4-bit weights, with and
// without weight zero points, s8 and f32 output, and dynamic (per-image) input grids.
// tests/quant/test_qconv.cpp checks the same through the QConv2D op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/qconv.h"
#include "kernels/qconv_direct.h"
#include "lowbit/quant_params.h"
#include "test_util.h"

namespace lowbit {
namespace {

using kernels::ConvGeometry;
using QConvKernelTest = testing::RuntimeSettingsTest;

struct Case {
  int64_t n, c, h, w, oc, kh, kw, sh, sw;
  std::vector<int64_t> pads;  // top, left, bottom, right
  int64_t dh = 1, dw = 1, groups = 1;
};

ConvGeometry geometry(const Case& k) {
  ConvGeometry g;
  g.batch = k.n, g.in_channels = k.c, g.in_h = k.h, g.in_w = k.w;
  g.out_channels = k.oc, g.groups = k.groups, g.kernel_h = k.kh, g.kernel_w = k.kw;
  g.stride_h = k.sh, g.stride_w = k.sw, g.dilation_h = k.dh, g.dilation_w = k.dw;
  g.pad_top = k.pads[0], g.pad_left = k.pads[1], g.pad_bottom = k.pads[2], g.pad_right = k.pads[3];
  g.out_h = (k.h + g.pad_top + g.pad_bottom - (k.dh * (k.kh - 1) + 1)) / k.sh + 1;
  g.out_w = (k.w + g.pad_left + g.pad_right - (k.dw * (k.kw - 1) + 1)) / k.sw + 1;
  return g;
}

int32_t random_int(Rng& rng, int32_t lo, int32_t hi) { return lo + static_cast<int32_t>(rng.below(static_cast<uint32_t>(hi - lo + 1))); }

// One layer, prepared as QConv2D / DynamicQConv2D prepare theirs (graph/ops/qconv.cpp and
// prepare_output_stage in graph/ops/quantized.cpp), for every implementation at once.
struct Layer {
  ConvGeometry g;
  bool f32_output = false, dynamic = false;
  std::vector<int32_t> codes, weight_zero_point, bias, column_offset, row_sums, direct_pairs;
  std::vector<FixedPointMultiplier> multiplier;
  std::vector<float> column_scale, bias_f32;
  std::vector<QWeights> group_weights;
  QOutputStage stage;
  kernels::QConvWeights weights;
  // The input: codes and their grid (one zero point, or per image with scales).
  std::vector<int8_t> x;
  std::vector<int32_t> image_zero_point;
  std::vector<float> image_scale;
  kernels::QConvInputGrid grid;
};

// storage: S8 (codes in [-127, 127]) or U4 with zero points / S4 without; affine: weight zero
// points; dynamic: DynamicQConv2D's form (symmetric weights, f32 output, per-image input grid).
Layer make_layer(const Case& k, DType storage, bool affine, bool f32_output, bool relu, bool dynamic, uint64_t seed) {
  Layer l;
  l.g = geometry(k);
  l.f32_output = f32_output || dynamic;
  l.dynamic = dynamic;
  const int64_t oc = k.oc, kk = l.g.patch();
  Rng rng(seed);
  int32_t lo = -127, hi = 127;
  if (storage == DType::S4) lo = -8, hi = 7;
  if (storage == DType::U4) lo = 0, hi = 15;
  l.codes.resize(static_cast<size_t>(oc * kk));
  for (auto& v : l.codes) v = random_int(rng, lo, hi);
  l.weight_zero_point.assign(static_cast<size_t>(oc), 0);
  if (affine && !dynamic)
    for (auto& z : l.weight_zero_point) z = storage == DType::U4 ? random_int(rng, 0, 15) : random_int(rng, -20, 20);
  l.row_sums = kernels::qconv_weight_sums(l.codes.data(), oc, kk);
  l.group_weights = kernels::qconv_im2row_weights(l.codes.data(), oc, k.groups, kk, k.kh * k.kw, storage);
  l.direct_pairs = kernels::direct_conv_weight_pairs(l.codes.data(), oc, kk);

  // The input codes and grid.
  l.x.resize(static_cast<size_t>(k.n * k.c * k.h * k.w));
  for (auto& v : l.x) v = static_cast<int8_t>(random_int(rng, -128, 127));
  const int32_t input_zero_point = random_int(rng, -10, 10);
  l.grid.zero_point = input_zero_point;
  if (dynamic) {
    for (int64_t i = 0; i < k.n; ++i) {
      l.image_zero_point.push_back(random_int(rng, -128, 127));
      l.image_scale.push_back(rng.uniform(0.001f, 0.1f));
    }
    l.grid.image_zero_point = l.image_zero_point.data();
    l.grid.image_scale = l.image_scale.data();
  }

  // The output stage, as prepare_output_stage (static) or DynamicQConv2D::prepare builds it.
  const float input_scale = 0.02f, output_scale = 0.05f;
  const int32_t output_zero_point = random_int(rng, -5, 5);
  const double spread = 1.0 / std::sqrt(static_cast<double>(kk));
  for (int64_t m = 0; m < oc; ++m) {
    const float weight_scale = static_cast<float>(spread * 0.02 * (0.5 + rng.uniform()));
    const int32_t b = random_int(rng, -3000, 3000);
    if (dynamic) {
      l.column_offset.push_back(0);
      l.column_scale.push_back(weight_scale);
      l.bias_f32.push_back(rng.uniform(-1.0f, 1.0f));
      continue;
    }
    l.bias.push_back(b);
    const int64_t za = input_zero_point;
    const int64_t offset = b - za * l.row_sums[m] + kk * za * l.weight_zero_point[m];
    l.column_offset.push_back(static_cast<int32_t>(std::clamp<int64_t>(offset, INT32_MIN, INT32_MAX)));
    const double real_scale = static_cast<double>(input_scale) * weight_scale;
    if (l.f32_output)
      l.column_scale.push_back(static_cast<float>(real_scale));
    else
      // Every third channel with a multiplier of 2^30 - 1 (its products overflow int32; the
      // outputs saturate): the kernels clamp those in 64-bit lanes, the others (multipliers at
      // most 1) in 32-bit ones.
      l.multiplier.push_back(FixedPointMultiplier::from(m % 3 == 2 ? 1073741823.0 : real_scale / output_scale));
  }
  QOutputStage& s = l.stage;
  s.column_offset = l.column_offset.data();
  const bool has_weight_zero_point =
      std::any_of(l.weight_zero_point.begin(), l.weight_zero_point.end(), [](int32_t z) { return z != 0; });
  if (dynamic)
    s.weight_zero_point = l.row_sums.data();
  else if (has_weight_zero_point)
    s.weight_zero_point = l.weight_zero_point.data();
  if (l.f32_output) {
    s.column_scale = l.column_scale.data();
    s.bias = l.bias_f32.empty() ? nullptr : l.bias_f32.data();
    s.relu = relu;
  } else {
    s.multiplier = l.multiplier.data();
    s.output_zero_point = output_zero_point;
    s.clamp_min = relu ? std::max(output_zero_point, -128) : -128;
  }
  kernels::QConvWeights& w = l.weights;
  w.codes = l.codes.data();
  w.weight_zero_point = l.weight_zero_point.data();
  w.bias = l.bias.empty() ? nullptr : l.bias.data();
  w.group_weights = l.group_weights.data();
  w.direct_pairs = l.direct_pairs.data();
  return l;
}

int64_t output_bytes(const Layer& l) {
  return l.g.batch * l.g.out_channels * l.g.out_spatial() * static_cast<int64_t>(l.f32_output ? sizeof(float) : 1);
}

enum class Path { Reference, Im2row, Direct };

// The bytes of y from one path (0xAB where nothing was written). `why`: the direct kernel's reason
// for not running, if it did not.
std::vector<uint8_t> run(const Layer& l, Path path, Isa isa = Isa::Avx2, const char** why = nullptr) {
  std::vector<uint8_t> y(static_cast<size_t>(output_bytes(l)), 0xAB);
  float* y32 = reinterpret_cast<float*>(y.data());
  int8_t* y8 = reinterpret_cast<int8_t*>(y.data());
  const char* reason = nullptr;
  // The fast paths' scratch comes from a workspace whose memory holds garbage from before, as an
  // executor's does: a result that depended on zeroed scratch would show.
  static Workspace workspace;
  workspace.reset();
  const size_t poison = std::max<size_t>(workspace.capacity(), 1 << 20);
  std::memset(workspace.take<uint8_t>(poison), 0xA5, poison);
  workspace.reset();
  switch (path) {
    case Path::Reference:
      if (l.f32_output)
        kernels::qconv2d_s8_f32_ref(l.g, l.weights, l.x.data(), l.grid, l.stage, y32);
      else
        kernels::qconv2d_s8_ref(l.g, l.weights, l.x.data(), l.grid, l.stage, y8);
      break;
    case Path::Im2row:
      if (l.f32_output)
        kernels::qconv2d_s8_f32_im2row(l.g, l.weights, l.x.data(), l.grid, l.stage, y32, workspace);
      else
        kernels::qconv2d_s8_im2row(l.g, l.weights, l.x.data(), l.grid, l.stage, y8, workspace);
      break;
    case Path::Direct:
      reason = l.f32_output ? kernels::qconv2d_s8_f32_direct(isa, l.g, l.weights, l.x.data(), l.grid, l.stage, y32, workspace)
                            : kernels::qconv2d_s8_direct(isa, l.g, l.weights, l.x.data(), l.grid, l.stage, y8, workspace);
      break;
  }
  if (why) *why = reason;
  return y;
}

const std::vector<Case>& awkward_cases() {
  static const std::vector<Case> cases = {
      {2, 1, 1, 1, 1, 1, 1, 1, 1, {0, 0, 0, 0}},                // one of everything
      {2, 1, 7, 65, 7, 3, 3, 1, 1, {1, 1, 1, 1}},               // K = 9, width 65: 4 full 16-pixel vectors + 1
      {1, 7, 17, 17, 17, 2, 2, 1, 1, {0, 1, 1, 0}},             // K = 28, asymmetric pads
      {2, 17, 7, 7, 63, 1, 1, 1, 1, {0, 0, 0, 0}},              // K = 17, 1x1, 63 outputs (8x8 edge)
      {1, 63, 7, 7, 65, 3, 3, 1, 1, {1, 1, 1, 1}},              // K = 567: im2row only
      {2, 65, 5, 9, 1, 3, 3, 2, 2, {1, 1, 1, 1}},               // one output channel, stride 2
      {1, 63, 9, 17, 63, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 63},   // depthwise, width 17
      {2, 65, 7, 7, 65, 3, 3, 2, 1, {1, 1, 1, 1}, 1, 1, 65},    // depthwise, stride_h 2 only
      {1, 65, 7, 7, 65, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 65},    // depthwise, stride 2: im2row per group
      {1, 7, 17, 17, 7, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2, 7},     // depthwise, dilation 2
      {1, 17, 7, 1, 7, 3, 1, 1, 1, {1, 0, 1, 0}},               // width 1, K = 51
      {3, 7, 1, 63, 17, 1, 3, 1, 1, {0, 1, 0, 1}},              // height 1, width 63, K = 21
      {1, 63, 5, 5, 21, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 3},     // 3 groups of 21 channels, K = 21
      {2, 2, 6, 9, 3, 4, 4, 1, 1, {0, 0, 0, 0}},                // K = 32, the direct kernels' longest
      {1, 7, 9, 17, 65, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 2},        // K = 63, dilation_w 2
  };
  return cases;
}

struct Variant {
  DType storage;
  bool affine, f32_output, dynamic;
};
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {DType::S8, false, false, false}, {DType::S8, true, false, false}, {DType::S8, false, true, false},
      {DType::U4, true, true, false},   {DType::S4, false, false, false}, {DType::S8, false, true, true},
      {DType::S4, false, true, true},
  };
  return v;
}

std::string describe(int index, const Variant& v) {
  return "case " + std::to_string(index) + ", " + name_of(v.storage) + (v.affine ? ", affine" : "") +
         (v.f32_output ? ", f32 output" : ", s8 output") + (v.dynamic ? ", dynamic" : "");
}

TEST_F(QConvKernelTest, Im2rowMatchesTheReferenceBitForBitOnAwkwardShapes) {
  const std::vector<Isa> levels = testing::isa_levels();  // the GEMM under im2row, each level the CPU has
  int index = 0;
  for (const Case& k : awkward_cases()) {
    int v_index = 0;
    for (const Variant& v : variants()) {
      const Layer l = make_layer(k, v.storage, v.affine, v.f32_output, (index + v_index) % 2 == 0, v.dynamic,
                                 1000 * index + v_index);
      const auto reference = run(l, Path::Reference);
      for (Isa isa : levels) {
        set_max_isa(isa);
        EXPECT_EQ(run(l, Path::Im2row), reference) << describe(index, v) << ", GEMM at " << name_of(isa);
      }
      set_max_isa(Isa::Avx512Vnni);
      ++v_index;
    }
    ++index;
  }
}

TEST_F(QConvKernelTest, DirectKernelsMatchTheReferenceBitForBitOnAwkwardShapes) {
  const std::vector<Isa> levels = testing::isa_levels({Isa::Avx2, Isa::Avx512Vnni});
  if (levels.empty()) GTEST_SKIP() << "no direct kernel on this CPU (or LOWBIT_ISA=reference)";
  int index = 0, ran = 0;
  for (const Case& k : awkward_cases()) {
    if (k.sw != 1) {  // the direct kernels assume stride_w 1 (QConv2D's list checks it)
      ++index;
      continue;
    }
    const bool takes = k.c / k.groups * k.kh * k.kw <= kernels::kDirectConvMaxK;
    int v_index = 0;
    for (const Variant& v : variants()) {
      const Layer l = make_layer(k, v.storage, v.affine, v.f32_output, (index + v_index) % 2 == 0, v.dynamic,
                                 1000 * index + v_index);
      const auto reference = takes ? run(l, Path::Reference) : std::vector<uint8_t>{};
      for (Isa isa : levels) {
        const char* why = nullptr;
        const auto y = run(l, Path::Direct, isa, &why);
        if (!takes) {  // K above the direct kernels' longest: they decline, writing nothing
          EXPECT_NE(why, nullptr) << describe(index, v);
          EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](uint8_t b) { return b == 0xAB; })) << describe(index, v);
          continue;
        }
        ASSERT_EQ(why, nullptr) << describe(index, v) << ", " << name_of(isa);
        EXPECT_EQ(y, reference) << describe(index, v) << ", direct " << name_of(isa);
        ++ran;
      }
      ++v_index;
    }
    ++index;
  }
  EXPECT_GT(ran, 0);
}

// The split over threads (parallel_for grains in the padding, im2row and transpose) changes
// nothing: 1 and 2 threads give the same bytes on both fast paths.
TEST_F(QConvKernelTest, ResultsDoNotDependOnTheThreadCount) {
  const Case k{3, 7, 17, 65, 17, 3, 3, 1, 1, {1, 1, 1, 1}};
  const Layer l = make_layer(k, DType::S8, true, false, true, false, 7);
  set_num_threads(1);
  const auto im2row = run(l, Path::Im2row);
  const bool direct = active_isa() >= Isa::Avx2;
  const auto direct_bytes = direct ? run(l, Path::Direct, active_isa()) : std::vector<uint8_t>{};
  set_num_threads(2);
  EXPECT_EQ(run(l, Path::Im2row), im2row);
  if (direct) {
    EXPECT_EQ(run(l, Path::Direct, active_isa()), direct_bytes);
  }
  EXPECT_EQ(run(l, Path::Reference), im2row);
}

// The reference against the formula evaluated here in the plainest way (one output of a small
// layer): acc = bias + sum (x - z_x)(w - z_w) over the taps inside the input, then the output
// stage's f32 form.
// The run-time quantization of the dynamic layers: per image, and per batch (the batch's range
// taken over chunks of 2^14 values in parallel: one chunk for 3 images, ten for 40) equal to one
// range over all values (NaNs ignored), the same bytes for 1 and 2 threads.
TEST_F(QConvKernelTest, RunTimeQuantizationTakesOneRangePerImageOrPerBatch) {
  for (const int64_t images : {int64_t{3}, int64_t{40}}) {
    const int64_t size = 4099, n = images * size;
    std::vector<float> x(static_cast<size_t>(n));
    Rng rng(static_cast<uint64_t>(images));
    for (auto& v : x) v = rng.uniform(-3.0f, 5.0f);
    x[7] = NAN;
    x[static_cast<size_t>(n - 1)] = 11.5f;  // the maximum in the last chunk
    for (bool per_image : {false, true}) {
      std::vector<int8_t> codes[2];
      for (int threads : {1, 2}) {
        set_num_threads(threads);
        std::vector<int8_t>& c = codes[threads - 1];
        c.resize(static_cast<size_t>(n));
        std::vector<int32_t> zero(static_cast<size_t>(images));
        std::vector<float> scale(static_cast<size_t>(images));
        kernels::quantize_images_s8(x.data(), images, size, per_image, c.data(), zero.data(), scale.data());
        for (int64_t i = 0; i < images; ++i) {
          const int64_t first = per_image ? i * size : 0, count = per_image ? size : n;
          float lo = 0.0f, hi = 0.0f;
          minmax_f32(count, x.data() + first, &lo, &hi);
          const QuantParams p = choose_params(lo, hi, {8, QScheme::Affine});
          ASSERT_EQ(scale[static_cast<size_t>(i)], p.scale[0]) << "image " << i;
          ASSERT_EQ(zero[static_cast<size_t>(i)], p.zero_point[0]) << "image " << i;
          std::vector<int8_t> want(static_cast<size_t>(size));
          quantize_s8(size, x.data() + i * size, p.scale[0], p.zero_point[0], want.data());
          ASSERT_EQ(std::memcmp(want.data(), c.data() + i * size, want.size()), 0) << "image " << i;
        }
      }
      EXPECT_EQ(codes[0], codes[1]);
    }
  }
}

TEST_F(QConvKernelTest, ReferenceIsTheFormula) {
  const Case k{1, 2, 3, 3, 2, 3, 3, 1, 1, {1, 1, 1, 1}};
  const Layer l = make_layer(k, DType::S8, true, true, false, false, 3);
  const auto bytes = run(l, Path::Reference);
  std::vector<float> y(bytes.size() / sizeof(float));
  std::memcpy(y.data(), bytes.data(), bytes.size());
  const int64_t m = 1, oy = 0, ox = 0;  // the top-left output of channel 1: padding on two sides
  int64_t acc = l.bias[m];
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t ki = 0; ki < 3; ++ki)
      for (int64_t kj = 0; kj < 3; ++kj) {
        const int64_t iy = oy - 1 + ki, ix = ox - 1 + kj;
        if (iy < 0 || ix < 0) continue;
        acc += (l.x[(c * 3 + iy) * 3 + ix] - l.grid.zero_point) *
               int64_t{l.codes[(m * 2 + c) * 9 + ki * 3 + kj] - l.weight_zero_point[m]};
      }
  EXPECT_EQ(y[m * 9], static_cast<float>(acc) * l.column_scale[m]);
}

}  // namespace
}  // namespace lowbit
