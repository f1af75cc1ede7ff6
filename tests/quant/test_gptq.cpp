// GPTQ (src/quant/gptq.cpp): against a plain dense implementation, against round-to-nearest, and
// through quantize().
#include <algorithm>
#include <cmath>
#include <numeric>

#include "test_util.h"

namespace lowbit {
namespace {

// Inputs with correlated features (as real activations are): X = Z A, Z standard normal.
Tensor correlated_inputs(int64_t rows, int64_t features, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> a(static_cast<size_t>(features * features));
  for (auto& v : a) v = rng.normal() * 0.5f;
  for (int64_t i = 0; i < features; ++i) a[i * features + i] += 1.0f;
  Tensor x(DType::F32, {rows, features});
  std::vector<float> z(static_cast<size_t>(features));
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : z) v = rng.normal();
    for (int64_t j = 0; j < features; ++j) {
      float s = 0;
      for (int64_t k = 0; k < features; ++k) s += z[k] * a[k * features + j];
      x.data<float>()[r * features + j] = s;
    }
  }
  return x;
}

Tensor gram(const Tensor& x) {
  const int64_t rows = x.dim(0), k = x.dim(1);
  Tensor h(DType::F32, {k, k});
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      double s = 0;
      for (int64_t r = 0; r < rows; ++r) s += double(x.data<float>()[r * k + i]) * x.data<float>()[r * k + j];
      h.data<float>()[i * k + j] = static_cast<float>(s);
    }
  return h;
}

Tensor random_weights(int64_t units, int64_t features, uint64_t seed) {
  Rng rng(seed);
  Tensor w(DType::F32, {units, features});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = rng.normal() * 0.3f;
  return w;
}

// GPTQ written the plain way (the OBQ form: an explicit inverse, no Cholesky, no lazy batches), in
// the column order `order` (empty: left to right): after rounding column q, the columns not
// rounded yet move by -(w_q - dequantized) / Hinv[q][q] * Hinv[q][j], and Hinv drops column q
// (Hinv -= Hinv[:, q] Hinv[q, :] / Hinv[q][q]). Block parameters are refitted as in gptq_codes: a
// block's grid when the first of its columns is reached, to the block's current weights.
std::vector<int32_t> plain_gptq(const Tensor& weight, const Tensor& hessian, QuantParams p, double damp_fraction,
                                std::vector<int64_t> order = {}) {
  const int64_t n = weight.dim(0), k = weight.dim(1);
  if (order.empty()) {
    order.resize(static_cast<size_t>(k));
    std::iota(order.begin(), order.end(), int64_t{0});
  }
  std::vector<double> h(hessian.data<float>(), hessian.data<float>() + hessian.numel());
  double mean = 0;
  for (int64_t i = 0; i < k; ++i) mean += h[i * k + i];
  mean /= static_cast<double>(k);
  for (int64_t i = 0; i < k; ++i) h[i * k + i] = (h[i * k + i] > 0 ? h[i * k + i] : 1.0) + damp_fraction * (mean > 0 ? mean : 1.0);
  // Gauss-Jordan inverse with partial pivoting.
  std::vector<double> inv(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) inv[i * k + i] = 1;
  for (int64_t c = 0; c < k; ++c) {
    int64_t pivot = c;
    for (int64_t r = c + 1; r < k; ++r)
      if (std::abs(h[r * k + c]) > std::abs(h[pivot * k + c])) pivot = r;
    for (int64_t j = 0; j < k; ++j) std::swap(h[c * k + j], h[pivot * k + j]), std::swap(inv[c * k + j], inv[pivot * k + j]);
    const double d = h[c * k + c];
    for (int64_t j = 0; j < k; ++j) h[c * k + j] /= d, inv[c * k + j] /= d;
    for (int64_t r = 0; r < k; ++r) {
      if (r == c) continue;
      const double f = h[r * k + c];
      for (int64_t j = 0; j < k; ++j) h[r * k + j] -= f * h[c * k + j], inv[r * k + j] -= f * inv[c * k + j];
    }
  }
  std::vector<double> w(weight.data<float>(), weight.data<float>() + weight.numel());
  std::vector<int32_t> codes(static_cast<size_t>(n * k));
  std::vector<bool> done(static_cast<size_t>(k), false);
  const int64_t block = p.block_size, blocks = block ? (k + block - 1) / block : 1;
  std::vector<bool> fitted(static_cast<size_t>(blocks), false);
  for (int64_t q : order) {
    const bool fit = block && !fitted[q / block];
    if (block) fitted[q / block] = true;
    for (int64_t r = 0; r < n; ++r) {
      const size_t ch = block ? static_cast<size_t>(r * blocks + q / block) : p.per_channel() ? static_cast<size_t>(r) : 0;
      if (fit) {
        double lo = 0, hi = 0;
        for (int64_t j = q / block * block; j < std::min((q / block + 1) * block, k); ++j)
          lo = std::min(lo, w[r * k + j]), hi = std::max(hi, w[r * k + j]);
        fit_block(p, ch, static_cast<float>(lo), static_cast<float>(hi));
      }
      const int32_t c = p.quantize(static_cast<float>(w[r * k + q]), ch);
      codes[r * k + q] = c;
      const double e = (w[r * k + q] - p.dequantize(c, ch)) / inv[q * k + q];
      for (int64_t j = 0; j < k; ++j)
        if (!done[j] && j != q) w[r * k + j] -= e * inv[q * k + j];
    }
    done[q] = true;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)
        if (!done[i] && !done[j]) inv[i * k + j] -= inv[i * k + q] * inv[q * k + j] / inv[q * k + q];
  }
  return codes;
}

// Columns by decreasing Hessian diagonal (after dampening, which adds the same to each), ties by index.
std::vector<int64_t> activation_order(const Tensor& h) {
  const int64_t k = h.dim(0);
  std::vector<int64_t> order(static_cast<size_t>(k));
  std::iota(order.begin(), order.end(), int64_t{0});
  auto diag = [&](int64_t i) { const float d = h.data<float>()[i * k + i]; return d > 0 ? double(d) : 1.0; };
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return diag(a) > diag(b); });
  return order;
}

// Squared error of the layer's outputs x w^T against those of the quantized weights.
double output_error(const Tensor& x, const Tensor& w, const std::vector<int32_t>& codes, const QuantParams& p) {
  const Tensor wq = dequantize_values(codes, w.shape(), p);
  const int64_t rows = x.dim(0), k = x.dim(1), n = w.dim(0);
  double e = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < n; ++o) {
      double d = 0;
      for (int64_t j = 0; j < k; ++j) d += double(x.data<float>()[r * k + j]) * (w.data<float>()[o * k + j] - wq.data<float>()[o * k + j]);
      e += d * d;
    }
  return e;
}

TEST(Gptq, MatchesAPlainDenseImplementationCodeForCode) {
  struct Case { int64_t units, features; int bits; QScheme scheme; bool per_channel; };
  for (const Case& c : {Case{1, 1, 4, QScheme::Symmetric, true}, Case{7, 17, 4, QScheme::Symmetric, true},
                        Case{5, 65, 3, QScheme::Affine, true}, Case{3, 33, 2, QScheme::Symmetric, false},
                        Case{4, 63, 8, QScheme::Affine, false}}) {
    const Tensor x = correlated_inputs(200, c.features, 1 + c.features);
    const Tensor w = random_weights(c.units, c.features, 7 + c.units);
    const Tensor h = gram(x);
    QuantParams p = choose_weight_params(w, QuantSpec{c.bits, c.scheme, c.per_channel, true, true});
    const std::vector<int32_t> codes = gptq_codes(w, h, p);
    EXPECT_EQ(codes, plain_gptq(w, h, p, 0.01)) << c.units << "x" << c.features << " " << c.bits << " bits";
    EXPECT_EQ(codes, gptq_codes(w, h, p));  // deterministic
  }
}

TEST(Gptq, BlockGridsMatchAPlainDenseImplementation) {
  for (int bits : {2, 3, 4})
    for (QScheme scheme : {QScheme::Symmetric, QScheme::Affine}) {
      const Tensor x = correlated_inputs(200, 70, 3 + bits);
      const Tensor w = random_weights(5, 70, 11 + bits);
      const Tensor h = gram(x);
      const QuantParams start = choose_block_weight_params(w, bits, scheme, 32);
      QuantParams p = start;
      const std::vector<int32_t> codes = gptq_codes(w, h, p);
      EXPECT_EQ(codes, plain_gptq(w, h, start, 0.01)) << bits << " bits " << name_of(scheme);
      EXPECT_EQ(p.scale[0], start.scale[0]);  // the first block sees the original weights
      // Every block's grid is an fp16 scale, and the codes lie on it.
      for (float d : p.scale) EXPECT_EQ(d, f16_to_f32(f32_to_f16(d)));
      const double nearest = output_error(x, w, quantize_values(w, start), start);
      EXPECT_LE(output_error(x, w, codes, p), nearest) << bits << " bits " << name_of(scheme);
    }
}

// Activation order: the plain algorithm in that order, code for code, per channel and in blocks
// (whose grids stay the storage's blocks, each fitted when its first column comes up).
TEST(Gptq, ActivationOrderMatchesThePlainAlgorithmInThatOrder) {
  for (int64_t block : {int64_t{0}, int64_t{32}})
    for (int bits : {3, 4}) {
      const Tensor x = correlated_inputs(200, 70, 5 + bits);
      const Tensor w = random_weights(6, 70, 13 + bits);
      const Tensor h = gram(x);
      const QuantParams start = block ? choose_block_weight_params(w, bits, QScheme::Affine, block)
                                      : choose_weight_params(w, QuantSpec{bits, QScheme::Symmetric, true, true, true});
      QuantParams p = start;
      const std::vector<int32_t> codes = gptq_codes(w, h, p, {.damp = 0.01, .act_order = true});
      EXPECT_EQ(codes, plain_gptq(w, h, start, 0.01, activation_order(h))) << bits << " bits, block " << block;
      QuantParams in_order = start;
      EXPECT_NE(codes, gptq_codes(w, h, in_order)) << "the order made no difference";
      const double nearest = output_error(x, w, quantize_values(w, start), start);
      EXPECT_LE(output_error(x, w, codes, p), nearest) << bits << " bits, block " << block;
    }
}

// Lazy batches change where the updates are applied, not the arithmetic: the same codes and grids
// for every batch size and thread count, with and without activation order.
TEST(Gptq, LazyBatchesAndThreadsDoNotChangeTheCodes) {
  const Tensor x = correlated_inputs(400, 300, 17);
  const Tensor w = random_weights(64, 300, 19);  // 64 rows: two chunks on two threads
  const Tensor h = gram(x);
  for (bool act_order : {false, true})
    for (int64_t block : {int64_t{0}, int64_t{64}}) {
      const QuantParams start = block ? choose_block_weight_params(w, 4, QScheme::Symmetric, block)
                                      : choose_weight_params(w, QuantSpec{4, QScheme::Affine, true, true, true});
      set_num_threads(1);
      QuantParams all = start;
      const std::vector<int32_t> codes = gptq_codes(w, h, all, {.damp = 0.01, .act_order = act_order, .batch = 0});
      for (int threads : {1, 2})
        for (int64_t batch : {1, 7, 64, 128, 1000}) {
          set_num_threads(threads);
          QuantParams p = start;
          EXPECT_EQ(gptq_codes(w, h, p, {.damp = 0.01, .act_order = act_order, .batch = batch}), codes)
              << "batch " << batch << ", " << threads << " threads, block " << block << (act_order ? ", act order" : "");
          EXPECT_EQ(p.scale, all.scale);
          EXPECT_EQ(p.zero_point, all.zero_point);
        }
    }
  set_num_threads(2);
  QuantParams p = choose_weight_params(w, QuantSpec{4, QScheme::Affine, true, true, true});
  EXPECT_LOWBIT_ERROR(gptq_codes(w, h, p, {.damp = 0.01, .act_order = false, .batch = -1}), "batch of columns");
}

TEST(Gptq, OutputErrorIsNeverAboveRoundToNearestOnRandomLayers) {
  for (uint64_t seed = 0; seed < 6; ++seed)
    for (int bits : {2, 3, 4, 8}) {
      const Tensor x = correlated_inputs(300, 24, seed);
      const Tensor w = random_weights(9, 24, 100 + seed);
      QuantParams p = choose_weight_params(w, QuantSpec{bits, QScheme::Symmetric, true, true, true});
      const double gptq = output_error(x, w, gptq_codes(w, gram(x), p), p);
      const double nearest = output_error(x, w, quantize_values(w, p), p);
      EXPECT_LE(gptq, nearest) << "seed " << seed << ", " << bits << " bits";
    }
}

// An MLP trained on the first `samples` Fashion-MNIST training images for `epochs`, 2 threads.
Graph trained_mlp(const DatasetSplits& data, const std::string& arch, int64_t samples, int epochs) {
  set_num_threads(2);
  const Dataset part = data.train.head(samples);
  Graph model = build_model(parse_arch(arch), part.sample_shape(), 10, 0);
  TrainOptions o;
  o.epochs = epochs;
  train(model, part, o);
  return model;
}

TEST(Gptq, OutputErrorIsNeverAboveRoundToNearestOnATrainedMlp) {
  const DatasetSplits data = load_dataset_dir(testing::test_dataset_dir());
  const Graph model = trained_mlp(data, "784-32-16-10", 3000, 2);
  const std::vector<std::string> layers = {"dense_1", "dense_2", "dense_3"};
  const auto hessians = layer_hessians(model, data.train, layers, 200);
  Executor run(model);
  std::vector<uint32_t> indices(200);
  std::iota(indices.begin(), indices.end(), 0u);
  gather_batch(data.train, indices, model, run.input(model.inputs[0].name));
  run.forward();
  for (const auto& layer : layers) {
    const Node& node = *std::find_if(model.nodes.begin(), model.nodes.end(), [&](const Node& n) { return n.name == layer; });
    const Tensor& w = model.initializers.at(node.inputs[1]);
    const Tensor& x = run.value(node.inputs[0]);
    // The Hessian is the inputs' x^T x (here on the same 200 samples).
    const Tensor expected = gram(x);
    const Tensor& h = hessians.at(layer);
    for (int64_t i = 0; i < h.numel(); i += 97)
      EXPECT_NEAR(h.data<float>()[i], expected.data<float>()[i], 1e-4 * (1 + std::abs(expected.data<float>()[i]))) << layer;
    for (int bits : {2, 3, 4}) {
      QuantParams p = choose_weight_params(w, QuantSpec{bits, QScheme::Symmetric, true, true, true});
      EXPECT_LE(output_error(x, w, gptq_codes(w, h, p), p), output_error(x, w, quantize_values(w, p), p)) << layer << " " << bits;
    }
  }
}

TEST(Gptq, QuantizeWithGptqRoundingKeepsMoreAccuracyAtLowBits) {
  const DatasetSplits data = load_dataset_dir(testing::test_dataset_dir());
  const Graph model = trained_mlp(data, "784-64-32-10", 6000, 3);
  const Dataset test = data.test.head(5000);
  QuantizeOptions q;
  q.weight_bits = 3;
  q.calibration_data = &data.train;
  const double nearest = evaluate(quantize(model, q).model, test).accuracy;
  q.rounding = "gptq";
  const QuantizeResult r = quantize(model, q);
  const double gptq = evaluate(r.model, test).accuracy;
  EXPECT_GT(gptq, nearest);
  EXPECT_EQ(r.plan.defaults.rounding, "gptq");
  EXPECT_NE(r.plan.to_json().find("\"rounding\":\"gptq\""), std::string::npos);
  // The same codes again: deterministic.
  EXPECT_EQ(serialize_model(quantize(model, q).model), serialize_model(r.model));
}

TEST(Gptq, ConvolutionsUseTheGramOfTheirInputPatches) {
  // A strided, padded 3x3 convolution of 2 channels: its rows are the patches, zeros on padding.
  const Graph model = build_model({R"({"input": {"shape": [2, 7, 7], "dtype": "f32"}, "layers": [
      {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1, "stride": 2}, {"type": "flatten"},
      {"type": "dense", "units": 2}]})"}, {2, 7, 7}, 2, 0, DType::F32);
  Tensor x = correlated_inputs(20, 2 * 7 * 7, 5);
  x.reshape({20, 2, 7, 7});
  const Dataset data = make_dataset(x, std::vector<int32_t>(20, 0), 2);
  const Tensor h = layer_hessians(model, data, {"conv2d_1"}, 20).at("conv2d_1");
  const int64_t k = 2 * 3 * 3, out = 4;  // (7 + 2 - 3) / 2 + 1
  Tensor patches(DType::F32, {20 * out * out, k});
  float* row = patches.data<float>();
  for (int64_t b = 0; b < 20; ++b)
    for (int64_t oy = 0; oy < out; ++oy)
      for (int64_t ox = 0; ox < out; ++ox)
        for (int64_t c = 0; c < 2; ++c)
          for (int64_t ky = 0; ky < 3; ++ky)
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
              *row++ = iy < 0 || iy >= 7 || ix < 0 || ix >= 7 ? 0.0f : x.data<float>()[((b * 2 + c) * 7 + iy) * 7 + ix];
            }
  const Tensor expected = gram(patches);
  ASSERT_EQ(h.shape(), expected.shape());
  for (int64_t i = 0; i < h.numel(); ++i)
    EXPECT_NEAR(h.data<float>()[i], expected.data<float>()[i], 1e-4 * (1 + std::abs(expected.data<float>()[i]))) << i;
  // GPTQ on the convolution's weights, [filters, 2 * 3 * 3], beats round-to-nearest on its patches.
  Tensor w = model.initializers.at("conv2d_1.weight").clone();
  w.reshape({3, k});
  QuantParams p = choose_weight_params(w, QuantSpec{3, QScheme::Symmetric, true, true, true});
  EXPECT_LE(output_error(patches, w, gptq_codes(w, h, p), p), output_error(patches, w, quantize_values(w, p), p));
  // quantize() rounds it with GPTQ too (the plan says so for every layer).
  QuantizeOptions q;
  q.weight_bits = 3;
  q.rounding = "gptq";
  q.calibration_data = &data;
  const Graph quantized = quantize(model, q).model;
  const std::vector<int32_t> codes = unpack_codes(quantized.initializers.at("conv2d_1.weight_codes"), {3, k});
  EXPECT_EQ(codes, gptq_codes(w, h, p));
}

TEST(Gptq, PlansAndOptionsNameTheRounding) {
  QuantPlan plan;
  EXPECT_EQ(plan.to_json().find("rounding"), std::string::npos);  // not written when nearest
  plan.defaults.rounding = "gptq";
  EXPECT_EQ(QuantPlan::from_json(plan.to_json(), "p").defaults.rounding, "gptq");
  EXPECT_TRUE(plan_uses_gptq(plan));
  std::string bad = plan.to_json();
  bad.replace(bad.find("\"gptq\""), 6, "\"best\"");
  EXPECT_LOWBIT_ERROR(QuantPlan::from_json(bad, "p.json"), "'rounding' must be \"nearest\" or \"gptq\"");
  EXPECT_EQ(plan.to_json().find("act_order"), std::string::npos);  // not written when off
  plan.defaults.act_order = true;
  EXPECT_TRUE(QuantPlan::from_json(plan.to_json(), "p").defaults.act_order);
  std::string bad_order = plan.to_json();
  bad_order.replace(bad_order.find("true", bad_order.find("act_order")), 4, "1");
  EXPECT_LOWBIT_ERROR(QuantPlan::from_json(bad_order, "p.json"), "'p.json': defaults: 'act_order' must be true or false");
  QuantizeOptions q;
  q.rounding = "gptq";
  q.mode = QuantMode::Dynamic;
  EXPECT_TRUE(quantize_needs_data(q));
  const Graph model = build_model(parse_arch("16-8-3"), {16}, 3, 0);
  EXPECT_LOWBIT_ERROR(quantize(model, q), "GPTQ rounding needs data");
  q.rounding = "best";
  EXPECT_LOWBIT_ERROR(quantize(model, q), "rounding must be \"nearest\" or \"gptq\"");
  const Tensor w = random_weights(2, 3, 1);
  QuantParams p = choose_weight_params(w, QuantSpec{4, QScheme::Symmetric, true, true, true});
  EXPECT_LOWBIT_ERROR(gptq_codes(w, Tensor(DType::F32, {4, 4}), p), "the Hessian must be f32 [3, 3]");
}

}  // namespace
}  // namespace lowbit
