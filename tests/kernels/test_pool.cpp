// The pooling kernels (kernels/pool.h) against their definitions written out here in the plainest
// form (same summation order, so bit for bit), on awkward shapes (1, 7, 17, 63 and 65 channels
// and sizes; overlapping, padded, strided windows); the forward max pooling at every ISA level
// (portable and AVX2 builds); s8 max pooling against f32 on the same values;
// and the same bytes for 1 and 2 threads. tests/graph checks the ops (gradients, shapes, errors).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/pool.h"
#include "kernels/sum_run.h"
#include "test_util.h"

namespace lowbit {
namespace {

using kernels::PoolGeometry;
using PoolKernelTest = testing::RuntimeSettingsTest;

struct Case {
  int64_t n, c, h, w, kh, kw, sh, sw;
  std::vector<int64_t> pads;  // top, left, bottom, right; each smaller than the kernel
};

PoolGeometry geometry(const Case& k) {
  PoolGeometry g;
  g.batch = k.n, g.channels = k.c, g.in_h = k.h, g.in_w = k.w;
  g.kernel_h = k.kh, g.kernel_w = k.kw, g.stride_h = k.sh, g.stride_w = k.sw;
  g.pad_top = k.pads[0], g.pad_left = k.pads[1], g.pad_bottom = k.pads[2], g.pad_right = k.pads[3];
  g.out_h = (k.h + g.pad_top + g.pad_bottom - k.kh) / k.sh + 1;
  g.out_w = (k.w + g.pad_left + g.pad_right - k.kw) / k.sw + 1;
  return g;
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {1, 1, 1, 1, 1, 1, 1, 1, {0, 0, 0, 0}},    // one element
      {2, 7, 17, 17, 2, 2, 2, 2, {0, 0, 0, 0}},  // the usual 2x2 stride 2, odd size
      {1, 17, 7, 65, 3, 3, 1, 1, {1, 1, 1, 1}},  // overlapping, padded, width 65
      {3, 63, 7, 7, 3, 2, 2, 1, {2, 0, 1, 1}},   // asymmetric pads, rectangular kernel
      {2, 65, 5, 1, 3, 1, 2, 1, {1, 0, 1, 0}},   // width 1
      {1, 1, 63, 17, 7, 5, 3, 4, {3, 2, 0, 4}},  // large windows
  };
  return c;
}

std::vector<float> values(int64_t count, uint64_t seed, bool integers) {
  std::vector<float> v(static_cast<size_t>(count));
  Rng rng(seed);
  for (auto& x : v) x = integers ? static_cast<float>(static_cast<int>(rng.below(256)) - 128) : rng.uniform(-2.0f, 2.0f);
  return v;
}

int64_t in_size(const PoolGeometry& g) { return g.batch * g.channels * g.in_h * g.in_w; }
int64_t out_size(const PoolGeometry& g) { return g.batch * g.channels * g.out_h * g.out_w; }

// The window of output (oy, ox) clipped to the input: rows [y0, y1), columns [x0, x1).
struct Clipped {
  int64_t y0, y1, x0, x1;
};
Clipped window(const PoolGeometry& g, int64_t oy, int64_t ox) {
  const int64_t y = oy * g.stride_h - g.pad_top, x = ox * g.stride_w - g.pad_left;
  return {std::max<int64_t>(y, 0), std::min(y + g.kernel_h, g.in_h), std::max<int64_t>(x, 0), std::min(x + g.kernel_w, g.in_w)};
}

// Plain definitions: the first maximum in row-major order (and its index), the float sum in
// row-major order times 1 / divisor.
void max_definition(const PoolGeometry& g, const float* x, std::vector<float>& y, std::vector<int64_t>& arg) {
  y.assign(static_cast<size_t>(out_size(g)), 0.0f);
  arg.assign(y.size(), -1);
  for (int64_t p = 0; p < g.batch * g.channels; ++p)
    for (int64_t oy = 0; oy < g.out_h; ++oy)
      for (int64_t ox = 0; ox < g.out_w; ++ox) {
        const Clipped w = window(g, oy, ox);
        const int64_t o = (p * g.out_h + oy) * g.out_w + ox;
        for (int64_t iy = w.y0; iy < w.y1; ++iy)
          for (int64_t ix = w.x0; ix < w.x1; ++ix) {
            const int64_t i = (p * g.in_h + iy) * g.in_w + ix;
            if (arg[o] < 0 || x[i] > y[o]) y[o] = x[i], arg[o] = i;
          }
      }
}

float inverse_divisor(const PoolGeometry& g, const Clipped& w, bool count_include_pad) {
  return 1.0f / static_cast<float>(count_include_pad ? g.kernel_h * g.kernel_w : (w.y1 - w.y0) * (w.x1 - w.x0));
}

TEST_F(PoolKernelTest, MaxPoolIsTheFirstMaximumOfEveryWindowAndS8PassesThrough) {
  // The forward pass has a portable build and an AVX2 build (2x2 stride-2 rows vectorized by
  // hand: widths 28, 31, 34 and 66 cover whole vectors and tails).
  std::vector<Case> all = cases();
  all.push_back({2, 3, 28, 28, 2, 2, 2, 2, {0, 0, 0, 0}});
  all.push_back({1, 5, 6, 34, 2, 2, 2, 2, {0, 0, 0, 0}});
  all.push_back({1, 2, 4, 66, 3, 2, 1, 2, {1, 0, 1, 0}});
  all.push_back({1, 3, 5, 66, 2, 2, 2, 2, {0, 0, 0, 0}});  // 33 outputs per row: 2 x 16 + 1, 4 x 8 + 1
  all.push_back({2, 2, 6, 31, 2, 2, 2, 2, {0, 0, 0, 0}});  // odd width: the last column is in no window
  for (Isa isa : testing::isa_levels({Isa::Reference, Isa::Avx2})) {
    set_max_isa(isa);
    SCOPED_TRACE(name_of(isa));
    int index = 0;
    for (const Case& k : all) {
      const PoolGeometry g = geometry(k);
      for (bool integers : {false, true}) {
        const std::vector<float> x = values(in_size(g), 10 + index, integers);
        std::vector<float> expected, y(static_cast<size_t>(out_size(g)));
        std::vector<int64_t> arg;
        max_definition(g, x.data(), expected, arg);
        kernels::maxpool2d_f32(g, x.data(), y.data());
        EXPECT_EQ(y, expected) << "case " << index;
        if (!integers) continue;
        std::vector<int8_t> x8(x.size()), y8(y.size());
        std::transform(x.begin(), x.end(), x8.begin(), [](float v) { return static_cast<int8_t>(v); });
        kernels::maxpool2d_s8(g, x8.data(), y8.data());
        for (size_t o = 0; o < y8.size(); ++o) ASSERT_EQ(y8[o], static_cast<int8_t>(expected[o])) << "case " << index << ", output " << o;
      }
      ++index;
    }
  }
}

TEST_F(PoolKernelTest, MaxPoolBackwardSendsEachGradientToTheMaximum) {
  int index = 0;
  for (const Case& k : cases()) {
    const PoolGeometry g = geometry(k);
    const std::vector<float> x = values(in_size(g), 20 + index, true);  // ties: the first maximum takes it
    const std::vector<float> dy = values(out_size(g), 30 + index, false);
    std::vector<float> y, expected(static_cast<size_t>(in_size(g)), 0.0f), dx(expected.size(), 7.0f);
    std::vector<int64_t> arg;
    max_definition(g, x.data(), y, arg);
    for (size_t o = 0; o < dy.size(); ++o) expected[static_cast<size_t>(arg[o])] += dy[o];  // output order
    kernels::maxpool2d_backward_f32(g, x.data(), dy.data(), dx.data());
    EXPECT_EQ(dx, expected) << "case " << index;
    ++index;
  }
}

TEST_F(PoolKernelTest, AveragePoolForwardAndBackwardMatchTheirDefinitions) {
  int index = 0;
  for (const Case& k : cases()) {
    const PoolGeometry g = geometry(k);
    const std::vector<float> x = values(in_size(g), 40 + index, false), dy = values(out_size(g), 50 + index, false);
    for (bool include_pad : {false, true}) {
      std::vector<float> expected(static_cast<size_t>(out_size(g))), expected_dx(static_cast<size_t>(in_size(g)), 0.0f);
      for (int64_t p = 0; p < g.batch * g.channels; ++p)
        for (int64_t oy = 0; oy < g.out_h; ++oy)
          for (int64_t ox = 0; ox < g.out_w; ++ox) {
            const Clipped w = window(g, oy, ox);
            const int64_t o = (p * g.out_h + oy) * g.out_w + ox;
            const float inv = inverse_divisor(g, w, include_pad);
            float sum = 0.0f;
            for (int64_t iy = w.y0; iy < w.y1; ++iy)
              for (int64_t ix = w.x0; ix < w.x1; ++ix) sum += x[(p * g.in_h + iy) * g.in_w + ix];
            expected[o] = sum * inv;
            const float share = dy[o] * inv;
            for (int64_t iy = w.y0; iy < w.y1; ++iy)
              for (int64_t ix = w.x0; ix < w.x1; ++ix) expected_dx[(p * g.in_h + iy) * g.in_w + ix] += share;
          }
      std::vector<float> y(expected.size()), dx(expected_dx.size(), 7.0f);
      kernels::avgpool2d_f32(g, include_pad, x.data(), y.data());
      kernels::avgpool2d_backward_f32(g, include_pad, dy.data(), dx.data());
      EXPECT_EQ(y, expected) << "case " << index << ", count_include_pad " << include_pad;
      EXPECT_EQ(dx, expected_dx) << "case " << index << ", count_include_pad " << include_pad;
    }
    ++index;
  }
}

TEST_F(PoolKernelTest, GlobalAveragePoolIsTheSumRunMeanOfEveryPlane) {
  for (int64_t planes : {1, 7, 65})
    for (int64_t plane : {1, 7, 17, 63, 65}) {
      const std::vector<float> x = values(planes * plane, planes * 100 + plane, false), dy = values(planes, plane, false);
      std::vector<float> y(static_cast<size_t>(planes)), dx(static_cast<size_t>(planes * plane), 7.0f);
      kernels::global_avgpool_f32(planes, plane, x.data(), y.data());
      kernels::global_avgpool_backward_f32(planes, plane, dy.data(), dx.data());
      for (int64_t p = 0; p < planes; ++p) {
        double exact = 0;
        for (int64_t q = 0; q < plane; ++q) exact += x[p * plane + q];
        EXPECT_EQ(y[p], static_cast<float>(kernels::sum_run(x.data() + p * plane, plane) / static_cast<double>(plane)));
        EXPECT_NEAR(y[p], exact / static_cast<double>(plane), 1e-6);
        for (int64_t q = 0; q < plane; ++q) ASSERT_EQ(dx[p * plane + q], dy[p] * (1.0f / static_cast<float>(plane)));
      }
    }
}

TEST_F(PoolKernelTest, ResultsDoNotDependOnTheThreadCount) {
  const PoolGeometry g = geometry({4, 65, 63, 17, 3, 3, 2, 1, {1, 1, 1, 1}});
  const std::vector<float> x = values(in_size(g), 60, true), dy = values(out_size(g), 61, false);
  auto run_all = [&] {
    std::vector<float> out(static_cast<size_t>(4 * out_size(g) + 2 * in_size(g)));
    float* p = out.data();
    kernels::maxpool2d_f32(g, x.data(), p);
    kernels::avgpool2d_f32(g, false, x.data(), p + out_size(g));
    kernels::avgpool2d_f32(g, true, x.data(), p + 2 * out_size(g));
    kernels::global_avgpool_f32(g.batch * g.channels, g.in_h * g.in_w, x.data(), p + 3 * out_size(g));
    kernels::maxpool2d_backward_f32(g, x.data(), dy.data(), p + 4 * out_size(g));
    kernels::avgpool2d_backward_f32(g, false, dy.data(), p + 4 * out_size(g) + in_size(g));
    return out;
  };
  set_num_threads(1);
  const std::vector<float> one = run_all();
  set_num_threads(2);
  EXPECT_EQ(run_all(), one);
}

}  // namespace
}  // namespace lowbit
