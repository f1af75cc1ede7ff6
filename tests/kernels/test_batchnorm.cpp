// The batch normalization kernels (kernels/batchnorm_f32.h): the training forward against the
// statistics and the normalization evaluated in double, the running-statistics update, inference
// with the running statistics, the backward pass against its closed form in double, an empty
// batch, and the same bytes for 1 and 2 threads, on awkward shapes (1, 7, 17, 63 and 65 channels
// and plane sizes). tests/graph/test_norm.cpp checks the op (finite differences, shapes, errors).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/batchnorm_f32.h"
#include "test_util.h"

namespace lowbit {
namespace {

using kernels::NormGeometry;
using BatchNormKernelTest = testing::RuntimeSettingsTest;

std::vector<float> values(int64_t count, uint64_t seed, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(count));
  Rng rng(seed);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

const std::vector<NormGeometry>& shapes() {
  static const std::vector<NormGeometry> s = {
      {1, 1, 1}, {2, 7, 17}, {3, 17, 1}, {2, 63, 7}, {1, 65, 63}, {5, 1, 65}, {17, 3, 1},
  };
  return s;
}

struct Statistics {
  std::vector<double> mean, variance;
};
Statistics statistics(const NormGeometry& g, const std::vector<float>& x) {
  Statistics s{std::vector<double>(static_cast<size_t>(g.channels)), std::vector<double>(static_cast<size_t>(g.channels))};
  const double m = static_cast<double>(g.per_channel());
  for (int64_t c = 0; c < g.channels; ++c) {
    double sum = 0, squares = 0;
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t q = 0; q < g.spatial; ++q) sum += x[g.plane(n, c) + q];
    s.mean[c] = sum / m;
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t q = 0; q < g.spatial; ++q) squares += (x[g.plane(n, c) + q] - s.mean[c]) * (x[g.plane(n, c) + q] - s.mean[c]);
    s.variance[c] = squares / m;
  }
  return s;
}

TEST_F(BatchNormKernelTest, TrainingNormalizesWithTheBatchStatisticsAndUpdatesTheRunningOnes) {
  const float epsilon = 1e-5f, momentum = 0.9f;
  int index = 0;
  for (const NormGeometry& g : shapes()) {
    const int64_t count = g.batch * g.channels * g.spatial;
    const std::vector<float> x = values(count, 1 + index, -1.0f, 3.0f);
    const std::vector<float> scale = values(g.channels, 100 + index, 0.5f, 2.0f), bias = values(g.channels, 200 + index, -1.0f, 1.0f);
    std::vector<float> running_mean = values(g.channels, 300 + index, -0.5f, 0.5f);
    std::vector<float> running_var = values(g.channels, 400 + index, 0.5f, 1.5f);
    const std::vector<float> old_mean = running_mean, old_var = running_var;
    std::vector<float> y(static_cast<size_t>(count));
    kernels::batchnorm_training_f32(g, x.data(), scale.data(), bias.data(), running_mean.data(), running_var.data(), epsilon,
                                    momentum, y.data());
    const Statistics s = statistics(g, x);
    const double m = static_cast<double>(g.per_channel());
    for (int64_t c = 0; c < g.channels; ++c) {
      const double inv_std = 1.0 / std::sqrt(s.variance[c] + epsilon);
      for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t q = 0; q < g.spatial; ++q) {
          const int64_t i = g.plane(n, c) + q;
          ASSERT_NEAR(y[i], scale[c] * (x[i] - s.mean[c]) * inv_std + bias[c], 2e-4) << "shape " << index << ", channel " << c;
        }
      EXPECT_NEAR(running_mean[c], 0.9 * old_mean[c] + 0.1 * s.mean[c], 1e-5);
      EXPECT_NEAR(running_var[c], 0.9 * old_var[c] + 0.1 * s.variance[c] * (m > 1 ? m / (m - 1) : 1.0), 1e-5);
    }
    ++index;
  }
}

TEST_F(BatchNormKernelTest, InferenceUsesTheRunningStatistics) {
  for (const NormGeometry& g : shapes()) {
    const int64_t count = g.batch * g.channels * g.spatial;
    const std::vector<float> x = values(count, 5, -2.0f, 2.0f), scale = values(g.channels, 6, 0.5f, 2.0f);
    const std::vector<float> bias = values(g.channels, 7, -1.0f, 1.0f), mean = values(g.channels, 8, -0.5f, 0.5f);
    const std::vector<float> var = values(g.channels, 9, 0.1f, 2.0f);
    std::vector<float> y(static_cast<size_t>(count));
    kernels::batchnorm_inference_f32(g, x.data(), scale.data(), bias.data(), mean.data(), var.data(), 1e-3f, y.data());
    for (int64_t n = 0; n < g.batch; ++n)
      for (int64_t c = 0; c < g.channels; ++c) {
        // The kernel's own two roundings: a = scale / sqrt(var + eps) in double, then x * a + b in float.
        const float a = static_cast<float>(scale[c] / std::sqrt(static_cast<double>(var[c]) + 1e-3f));
        const float b = bias[c] - mean[c] * a;
        for (int64_t q = 0; q < g.spatial; ++q) ASSERT_EQ(y[g.plane(n, c) + q], x[g.plane(n, c) + q] * a + b);
      }
  }
}

TEST_F(BatchNormKernelTest, BackwardIsTheClosedFormOfTheTrainingForward) {
  const float epsilon = 1e-5f;
  int index = 0;
  for (const NormGeometry& g : shapes()) {
    const int64_t count = g.batch * g.channels * g.spatial;
    const std::vector<float> x = values(count, 11 + index, -1.0f, 1.0f), dy = values(count, 12 + index, -1.0f, 1.0f);
    const std::vector<float> scale = values(g.channels, 13 + index, 0.5f, 2.0f);
    std::vector<float> dx(static_cast<size_t>(count)), dscale(static_cast<size_t>(g.channels)), dbias(dscale.size());
    kernels::batchnorm_backward_f32(g, x.data(), scale.data(), dy.data(), epsilon, dx.data(), dscale.data(), dbias.data());
    const Statistics s = statistics(g, x);
    const double m = static_cast<double>(g.per_channel());
    for (int64_t c = 0; c < g.channels; ++c) {
      const double inv_std = 1.0 / std::sqrt(s.variance[c] + epsilon);
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t q = 0; q < g.spatial; ++q) {
          const int64_t i = g.plane(n, c) + q;
          sum_dy += dy[i];
          sum_dy_xhat += dy[i] * (x[i] - s.mean[c]) * inv_std;
        }
      EXPECT_NEAR(dbias[c], sum_dy, 1e-4) << "shape " << index;
      EXPECT_NEAR(dscale[c], sum_dy_xhat, 1e-3 * std::max(1.0, std::abs(sum_dy_xhat))) << "shape " << index;
      for (int64_t n = 0; n < g.batch; ++n)
        for (int64_t q = 0; q < g.spatial; ++q) {
          const int64_t i = g.plane(n, c) + q;
          const double xhat = (x[i] - s.mean[c]) * inv_std;
          const double expected = scale[c] * inv_std * (dy[i] - sum_dy / m - xhat * sum_dy_xhat / m);
          ASSERT_NEAR(dx[i], expected, 2e-3 * std::max(1.0, std::abs(expected))) << "shape " << index << ", channel " << c;
        }
    }
    ++index;
  }
}

TEST_F(BatchNormKernelTest, AnEmptyBatchUpdatesNothingAndHasZeroGradients) {
  const NormGeometry g{0, 3, 4};
  std::vector<float> scale(3, 1.0f), bias(3, 0.0f), mean(3, 0.25f), var(3, 2.0f), dscale(3, 7.0f), dbias(3, 7.0f);
  kernels::batchnorm_training_f32(g, nullptr, scale.data(), bias.data(), mean.data(), var.data(), 1e-5f, 0.9f, nullptr);
  EXPECT_EQ(mean, std::vector<float>(3, 0.25f));
  EXPECT_EQ(var, std::vector<float>(3, 2.0f));
  kernels::batchnorm_backward_f32(g, nullptr, scale.data(), nullptr, 1e-5f, nullptr, dscale.data(), dbias.data());
  EXPECT_EQ(dscale, std::vector<float>(3, 0.0f));
  EXPECT_EQ(dbias, std::vector<float>(3, 0.0f));
}

TEST_F(BatchNormKernelTest, ResultsDoNotDependOnTheThreadCount) {
  for (const NormGeometry& g : {NormGeometry{4, 65, 63}, NormGeometry{63, 17, 1}, NormGeometry{2, 7, 4096}}) {
    const int64_t count = g.batch * g.channels * g.spatial;
    const std::vector<float> x = values(count, 21, -1.0f, 2.0f), dy = values(count, 22, -1.0f, 1.0f);
    const std::vector<float> scale = values(g.channels, 23, 0.5f, 2.0f), bias = values(g.channels, 24, -1.0f, 1.0f);
    auto run = [&] {
      std::vector<float> mean(static_cast<size_t>(g.channels), 0.0f), var(mean.size(), 1.0f);
      std::vector<float> y(static_cast<size_t>(count)), dx(y.size()), dscale(mean.size()), dbias(mean.size());
      kernels::batchnorm_training_f32(g, x.data(), scale.data(), bias.data(), mean.data(), var.data(), 1e-5f, 0.9f, y.data());
      kernels::batchnorm_backward_f32(g, x.data(), scale.data(), dy.data(), 1e-5f, dx.data(), dscale.data(), dbias.data());
      std::vector<float> all = y;
      for (const auto* v : {&dx, &dscale, &dbias, &mean, &var}) all.insert(all.end(), v->begin(), v->end());
      return all;
    };
    set_num_threads(1);
    const std::vector<float> one = run();
    set_num_threads(2);
    EXPECT_EQ(run(), one) << g.batch << "x" << g.channels << "x" << g.spatial;
  }
}

}  // namespace
}  // namespace lowbit
