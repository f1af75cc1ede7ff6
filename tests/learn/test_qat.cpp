// Quantization-aware training: the fake-quantization ops' gradients (STE and LSQ) against finite
// differences of their surrogate, the forward pass against QuantParams, the QAT model against the
// integer model it converts to on real data, and the training behaviour (observers, LSQ, bits).
#include <cmath>
#include <nlohmann/json.hpp>

#include "kernels/elementwise.h"
#include "test_util.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {

// The scratch memory the ops run with here (FakeQuantize needs none; the executor passes its own).
Workspace workspace;

using testing::fill_uniform;

struct FakeQuantCase {
  Tensor x, scale, zero_point;
  Node node;
};

// x on a grid of `channels` rows; values sit at k + u steps (|u| <= 0.4) with k covering the grid
// and 3 steps beyond each end, never exactly at qmin or qmax (where the clamp has its kink).
FakeQuantCase make_case(bool lsq, int64_t rows, int64_t cols, bool per_channel, int32_t qmin, int32_t qmax, bool affine,
                        uint64_t seed) {
  FakeQuantCase c;
  const int64_t channels = per_channel ? rows : 1;
  c.scale = Tensor(DType::F32, {channels});
  c.zero_point = Tensor(DType::S32, {channels});
  Rng rng(seed);
  for (int64_t i = 0; i < channels; ++i) {
    c.scale.data<float>()[i] = rng.uniform(0.05f, 0.2f);
    c.zero_point.data<int32_t>()[i] = affine ? static_cast<int32_t>(rng.uniform(qmin + 1.0f, qmax - 1.0f)) : 0;
  }
  c.x = Tensor(DType::F32, {rows, cols});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const int64_t ch = per_channel ? r : 0;
      int32_t q;
      do q = static_cast<int32_t>(std::floor(rng.uniform(qmin - 3.0f, qmax + 4.0f)));
      while (q == qmin || q == qmax);
      const float steps = static_cast<float>(q - c.zero_point.data<int32_t>()[ch]) + rng.uniform(-0.4f, 0.4f);
      c.x.data<float>()[r * cols + k] = steps * c.scale.data<float>()[ch];
    }
  c.node = Node{"fq", lsq ? "LsqFakeQuantize" : "FakeQuantize", {"x", "s", "z"}, {"y"},
                {{"qmin", qmin}, {"qmax", qmax}, {"axis", per_channel ? 0 : -1}}};
  return c;
}

TEST(FakeQuantize, ForwardIsQuantizeThenDequantize) {
  FakeQuantCase c = make_case(false, 5, 33, true, -7, 7, false, 1);
  Tensor y;
  std::vector<const Tensor*> in = {&c.x, &c.scale, &c.zero_point};
  std::vector<Tensor*> out = {&y};
  find_op("FakeQuantize").forward(c.node, in, out);
  QuantParams p{4, true, QScheme::Symmetric, true, 0, {}, {}};
  p.scale.assign(c.scale.data<float>(), c.scale.data<float>() + 5);
  p.zero_point.assign(5, 0);
  const std::vector<int32_t> codes = quantize_values(c.x, p);
  for (int64_t i = 0; i < c.x.numel(); ++i)
    ASSERT_EQ(y.data<float>()[i], p.dequantize(codes[i], static_cast<size_t>(i / 33))) << i;
}

// The observers of the training forward pass (forward_train), against choose_weight_params /
// choose_params and the moving-average rule, with the grid written in place.
TEST(FakeQuantize, ObserversFitTheGridInTheTrainingForwardPass) {
  const Op& op = find_op("FakeQuantize");
  for (bool per_channel : {true, false})
    for (bool affine : {false, true}) {
      FakeQuantCase c = make_case(false, 6, 17, per_channel, affine ? -127 : -7, affine ? 127 : 7, false, 3);
      c.node.attributes["observer"] = "minmax";
      c.node.attributes["bits"] = affine ? 8 : 4;
      c.node.attributes["scheme"] = affine ? "affine" : "symmetric";
      Tensor y;
      std::vector<Tensor*> in = {&c.x, &c.scale, &c.zero_point}, out = {&y};
      op.forward_train(c.node, nullptr, RunContext{true, 0, 5}, in, out, workspace);
      const QuantParams p = choose_weight_params(c.x, {affine ? 8 : 4, affine ? QScheme::Affine : QScheme::Symmetric, per_channel, true, true});
      ASSERT_EQ(c.scale.numel(), static_cast<int64_t>(p.channels()));
      for (size_t ch = 0; ch < p.channels(); ++ch) {
        EXPECT_EQ(c.scale.data<float>()[ch], p.scale[ch]) << per_channel << affine << ch;
        EXPECT_EQ(c.zero_point.data<int32_t>()[ch], p.zero_point[ch]);
      }
      const Tensor expected = fake_quantize(c.x, p);
      for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data<float>()[i], expected.data<float>()[i]) << i;
      c.x.data<float>()[4] = INFINITY;  // (NaNs are ignored, as by choose_weight_params)
      EXPECT_LOWBIT_ERROR(op.forward_train(c.node, nullptr, RunContext{true, 0, 6}, in, out, workspace), "not finite");
    }
  // Moving average: quantize with the current grid, then move the range by `averaging` and refit.
  FakeQuantCase c = make_case(false, 4, 9, false, -128, 127, true, 5);
  Tensor range(DType::F32, {2});
  range.data<float>()[0] = -1.0f;
  range.data<float>()[1] = 2.0f;
  c.node.inputs.push_back("range");
  c.node.attributes["observer"] = "moving_average";
  c.node.attributes["averaging"] = 0.25;
  c.node.attributes["observer_steps"] = 3;
  Tensor y, plain;
  std::vector<Tensor*> in = {&c.x, &c.scale, &c.zero_point, &range}, out = {&y}, plain_out = {&plain};
  const std::vector<const Tensor*> plain_in = {&c.x, &c.scale, &c.zero_point, &range};
  op.forward(c.node, plain_in, plain_out);
  op.forward_train(c.node, nullptr, RunContext{true, 0, 2}, in, out, workspace);
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(y.data<float>()[i], plain.data<float>()[i]) << "old grid";
  float lo = c.x.data<float>()[0], hi = lo;
  for (int64_t i = 0; i < c.x.numel(); ++i) lo = std::min(lo, c.x.data<float>()[i]), hi = std::max(hi, c.x.data<float>()[i]);
  const float min = -1.0f + 0.25f * (lo - -1.0f), max = 2.0f + 0.25f * (hi - 2.0f);
  EXPECT_EQ(range.data<float>()[0], min);
  EXPECT_EQ(range.data<float>()[1], max);
  const QuantParams p = choose_params(min, max, {8, QScheme::Affine});
  EXPECT_EQ(c.scale.data<float>()[0], p.scale[0]);
  EXPECT_EQ(c.zero_point.data<int32_t>()[0], p.zero_point[0]);
  op.forward_train(c.node, nullptr, RunContext{true, 0, 3}, in, out, workspace);  // frozen from step 3
  EXPECT_EQ(range.data<float>()[0], min);
  EXPECT_EQ(c.scale.data<float>()[0], p.scale[0]);
}

// With a min-max observer the weights' grid is fitted to the very values it quantizes, so for a
// symmetric grid every value is inside and the backward pass hands dy through untouched (without
// computing the mask); for an affine grid it computes the mask. Either way dx is the reference
// kernel's mask applied to dy, bit for bit.
TEST(FakeQuantize, MinMaxObservedGridsGiveTheReferenceMask) {
  const Op& op = find_op("FakeQuantize");
  struct Grid { int32_t qmin, qmax; int bits; bool affine; };
  for (const Grid& g : {Grid{-7, 7, 4, false}, Grid{-127, 127, 8, false}, Grid{-31, 31, 6, false}, Grid{-1, 1, 2, false},
                        Grid{-128, 127, 8, true}, Grid{-8, 7, 4, true}})
    for (bool per_channel : {true, false}) {
      FakeQuantCase c = make_case(false, 7, 65, per_channel, g.qmin, g.qmax, false, 11);
      Rng rng(static_cast<uint64_t>(g.qmax) * 7 + per_channel);
      for (int64_t i = 0; i < c.x.numel(); ++i) c.x.data<float>()[i] = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, static_cast<int>(rng.below(20)) - 10);
      c.node.attributes["observer"] = "minmax";
      c.node.attributes["bits"] = g.bits;
      c.node.attributes["scheme"] = g.affine ? "affine" : "symmetric";
      Tensor y, dx, dy(DType::F32, c.x.shape());
      fill_uniform(dy, 5);
      std::vector<Tensor*> in = {&c.x, &c.scale, &c.zero_point}, out = {&y};
      op.forward_train(c.node, nullptr, RunContext{true, 0, 0}, in, out, workspace);
      std::vector<const Tensor*> cin = {&c.x, &c.scale, &c.zero_point}, outs = {&y}, grads_out = {&dy};
      std::vector<Tensor*> grads_in = {&dx, nullptr, nullptr};
      op.backward(c.node, cin, outs, grads_out, grads_in);
      const int64_t rows = per_channel ? 7 : 1, cols = c.x.numel() / rows;
      std::vector<float> expected(static_cast<size_t>(c.x.numel()));
      for (int64_t r = 0; r < rows; ++r)
        kernels::fake_quantize_backward_f32_ref(cols, c.x.data<float>() + r * cols, dy.data<float>() + r * cols,
                                                {c.scale.data<float>()[r], c.zero_point.data<int32_t>()[r], g.qmin, g.qmax},
                                                expected.data() + r * cols, false);
      ASSERT_EQ(dx.numel(), c.x.numel());
      for (int64_t i = 0; i < c.x.numel(); ++i) ASSERT_EQ(dx.data<float>()[i], expected[i]) << g.qmax << " " << g.affine << " " << i;
      if (!g.affine) {
        for (int64_t i = 0; i < c.x.numel(); ++i) ASSERT_EQ(dx.data<float>()[i], dy.data<float>()[i]) << i;
      }
      // The executor's path: the attributes prepared once, the same gradient.
      const std::shared_ptr<const OpState> state = op.prepare(c.node, {});
      Tensor dx_prepared;
      std::vector<Tensor*> prepared_in = {&dx_prepared, nullptr, nullptr};
      op.backward_prepared(c.node, state.get(), cin, outs, grads_out, prepared_in, workspace);
      ASSERT_EQ(dx_prepared.numel(), c.x.numel());
      for (int64_t i = 0; i < c.x.numel(); ++i) ASSERT_EQ(dx_prepared.data<float>()[i], expected[i]) << i;
    }
}

// The straight-through estimator differentiates the surrogate in which rounding is the identity
// plus a constant (its residual at the evaluation point): y~(x, s) = s * (clamp(x / s + r + zp) - zp),
// r = nearbyint(x0 / s0) - x0 / s0. Its finite differences must match backward() exactly where the
// clamp is smooth, for x (STE) and, with LSQ's gradient scale g, for s.
void check_surrogate_gradients(FakeQuantCase c, bool lsq) {
  const Op& op = find_op(c.node.op);
  const int64_t rows = c.x.dim(0), cols = c.x.dim(1), channels = c.scale.numel();
  const int32_t qmin = static_cast<int32_t>(c.node.attr_int("qmin", 0)), qmax = static_cast<int32_t>(c.node.attr_int("qmax", 0));
  auto ch = [&](int64_t i) { return channels == 1 ? 0 : i / cols; };
  std::vector<float> residual(static_cast<size_t>(c.x.numel()));
  for (int64_t i = 0; i < c.x.numel(); ++i) {
    const float t = c.x.data<float>()[i] / c.scale.data<float>()[ch(i)];
    residual[i] = std::nearbyint(t) - t;
  }
  Tensor weights(DType::F32, c.x.shape());
  fill_uniform(weights, 9);
  auto surrogate = [&](const Tensor& x, const Tensor& scale) {
    double l = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double s = scale.data<float>()[ch(i)], zp = c.zero_point.data<int32_t>()[ch(i)];
      const double q = std::clamp(x.data<float>()[i] / s + residual[i] + zp, double(qmin), double(qmax));
      l += weights.data<float>()[i] * s * (q - zp);
    }
    return l;
  };
  Tensor y, dx, ds;
  std::vector<const Tensor*> in = {&c.x, &c.scale, &c.zero_point};
  std::vector<Tensor*> out = {&y};
  op.forward(c.node, in, out);
  // The surrogate passes through the real forward values.
  for (int64_t i = 0; i < y.numel(); ++i) {
    const double s = c.scale.data<float>()[ch(i)], zp = c.zero_point.data<int32_t>()[ch(i)];
    const double q = std::clamp(c.x.data<float>()[i] / s + residual[i] + zp, double(qmin), double(qmax));
    ASSERT_NEAR(y.data<float>()[i], s * (q - zp), 1e-5);
  }
  std::vector<const Tensor*> outs = {&y}, grads_out = {&weights};
  std::vector<Tensor*> grads_in = {&dx, lsq ? &ds : nullptr, nullptr};
  op.backward(c.node, in, outs, grads_out, grads_in);
  const double eps = 1e-3;
  for (int64_t i = 0; i < c.x.numel(); ++i) {
    Tensor xp = c.x.clone(), xm = c.x.clone();
    xp.data<float>()[i] += static_cast<float>(eps * c.scale.data<float>()[ch(i)]);
    xm.data<float>()[i] -= static_cast<float>(eps * c.scale.data<float>()[ch(i)]);
    const double numeric = (surrogate(xp, c.scale) - surrogate(xm, c.scale)) /
                           (double(xp.data<float>()[i]) - double(xm.data<float>()[i]));
    ASSERT_NEAR(dx.data<float>()[i], numeric, 2e-3 * std::max(1.0, std::fabs(numeric))) << "dx " << i;
  }
  if (!lsq) return;
  ASSERT_EQ(ds.shape(), c.scale.shape());
  for (int64_t k = 0; k < channels; ++k) {
    const int64_t per = channels == 1 ? cols : cols;  // values per sample sharing the scale
    const double levels = qmax - c.zero_point.data<int32_t>()[k];
    const double g = 1.0 / std::sqrt(static_cast<double>(per) * levels);
    Tensor sp = c.scale.clone(), sm = c.scale.clone();
    const float h = c.scale.data<float>()[k] * 1e-3f;
    sp.data<float>()[k] += h;
    sm.data<float>()[k] -= h;
    const double numeric = g * (surrogate(c.x, sp) - surrogate(c.x, sm)) / (double(sp.data<float>()[k]) - double(sm.data<float>()[k]));
    EXPECT_NEAR(ds.data<float>()[k], numeric, 2e-3 * std::max(1.0, std::fabs(numeric))) << "ds " << k;
  }
  (void)rows;
}

TEST(FakeQuantize, SteGradientMatchesFiniteDifferences) {
  check_surrogate_gradients(make_case(false, 4, 17, true, -7, 7, false, 2), false);    // 4-bit weights per channel
  check_surrogate_gradients(make_case(false, 3, 65, false, -128, 127, true, 3), false);  // 8-bit affine activations
  check_surrogate_gradients(make_case(false, 7, 9, true, -1, 1, false, 4), false);     // 2-bit (ternary)
}

TEST(FakeQuantize, LsqGradientMatchesFiniteDifferences) {
  check_surrogate_gradients(make_case(true, 4, 17, true, -7, 7, false, 5), true);
  check_surrogate_gradients(make_case(true, 3, 63, false, -128, 127, true, 6), true);
  check_surrogate_gradients(make_case(true, 5, 7, true, -1, 1, false, 7), true);
}

TEST(FakeQuantize, RejectsBadParameters) {
  Graph g;
  g.inputs = {{"x", DType::F32, {-1, 4}}};
  g.initializers["s"] = Tensor::from_vector({2}, std::vector<float>{0.1f, 0.1f});
  g.initializers["z"] = Tensor(DType::S32, {2});
  g.add_node({"fq", "FakeQuantize", {"x", "s", "z"}, {"y"}, {{"qmin", -8}, {"qmax", 7}}});
  g.outputs = {"y"};
  EXPECT_LOWBIT_ERROR(g.validate(), "scale and zero_point must be [1]");
  g.nodes[0].attributes["qmin"] = 7;
  EXPECT_LOWBIT_ERROR(g.validate(), "'qmin' must be below 'qmax'");
}

class QatData : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DatasetSplits all = load_dataset_dir(testing::test_dataset_dir());
    // Small enough for the sanitizer build (every ctest process repeats this set-up).
    data_ = new DatasetSplits{all.train.head(2500), all.test.head(1000)};
    model_ = new Graph(build_model(parse_arch("784-32-16-10"), {28, 28}, 10, 1));
    TrainOptions o;
    o.epochs = 3;
    train(*model_, data_->train, o);
    CalibrationOptions c;
    c.samples = 300;
    ranges_ = new Calibration(calibrate(*model_, data_->train, c));
  }
  static void TearDownTestSuite() {
    delete data_;
    delete model_;
    delete ranges_;
  }
  static QatOptions options(int bits, bool lsq) {
    QatOptions q;
    q.plan.defaults.weight_bits = bits;
    q.lsq = lsq;
    return q;
  }
  // A QAT fine-tune of a copy of the float model.
  static Graph fine_tune(const QatOptions& q, int epochs, float lr = 1e-4f) {
    Graph fq = prepare_qat(*model_, q, *ranges_);  // a copy: model_ stays as it is
    TrainOptions o;
    o.epochs = epochs;
    o.optimizer.learning_rate = lr;
    train_qat(fq, data_->train, o, q);
    return fq;
  }
  static DatasetSplits* data_;
  static Graph* model_;
  static Calibration* ranges_;
};
DatasetSplits* QatData::data_ = nullptr;
Graph* QatData::model_ = nullptr;
Calibration* QatData::ranges_ = nullptr;

// The bound docs/qat.md states: predictions agree on >= 99.5% of the images, and each logit differs
// by at most 0.05 on average and by a few output steps at most (the only differences are float vs
// integer accumulation order, the int32 bias and the resulting 1-LSB flips of an activation code).
void expect_agreement(const Graph& fq, const Graph& q, const Dataset& data) {
  const Tensor a = compute_logits(fq, data), b = compute_logits(q, data);
  ASSERT_EQ(a.shape(), b.shape());
  int64_t agree = 0;
  double sum = 0, worst = 0;
  const int64_t classes = a.dim(1);
  for (int64_t i = 0; i < a.dim(0); ++i) {
    const float* ra = a.data<float>() + i * classes;
    const float* rb = b.data<float>() + i * classes;
    agree += std::max_element(ra, ra + classes) - ra == std::max_element(rb, rb + classes) - rb;
    for (int64_t k = 0; k < classes; ++k) {
      sum += std::fabs(ra[k] - rb[k]);
      worst = std::max(worst, double(std::fabs(ra[k] - rb[k])));
    }
  }
  EXPECT_GE(double(agree) / a.dim(0), 0.995);
  EXPECT_LE(sum / a.numel(), 0.05);
  EXPECT_LE(worst, 1.0);
}

TEST_F(QatData, FakeQuantizedModelAgreesWithItsIntegerModel) {
  for (int bits : {8, 4, 2})
    for (bool lsq : {false, true}) {
      SCOPED_TRACE(::testing::Message() << bits << "-bit, lsq " << lsq);
      const QatOptions q = options(bits, lsq);
      Graph fq = fine_tune(q, 1);
      Graph integer = convert_qat(fq);
      EXPECT_TRUE(is_quantized(integer));
      EXPECT_FALSE(is_qat_model(integer));
      expect_agreement(fq, integer, data_->test);
      // Saved and loaded, the QAT model is the same model.
      EXPECT_TRUE(serialize_model(deserialize_model(serialize_model(fq), "mem")) == serialize_model(fq));
    }
}

TEST_F(QatData, WithoutTrainingConversionEqualsPostTrainingQuantization) {
  // prepare_qat's initial grids are the engine's: min-max per-channel weights, calibrated ranges.
  const QatOptions q = options(4, false);
  Graph fq = prepare_qat(*model_, q, *ranges_);
  QuantPlan plan;
  plan.defaults.weight_bits = 4;
  Graph converted = convert_qat(fq), ptq = quantize_model(*model_, plan, {{"minmax", *ranges_}});
  converted.metadata.erase("quantization");  // the plans are written differently (per layer vs defaults)
  ptq.metadata.erase("quantization");
  EXPECT_TRUE(serialize_model(converted) == serialize_model(ptq));
}

TEST_F(QatData, QatRecoversTwoBitAccuracyThatPostTrainingQuantizationLoses) {
  QuantPlan plan;
  plan.defaults.weight_bits = 2;
  const double float_acc = evaluate(*model_, data_->test).accuracy;
  const double ptq = evaluate(quantize_model(*model_, plan, {{"minmax", *ranges_}}), data_->test).accuracy;
  const double qat = evaluate(convert_qat(fine_tune(options(2, true), 2, 1e-3f)), data_->test).accuracy;
  EXPECT_GT(qat, ptq + 0.05) << "float " << float_acc << " PTQ " << ptq << " QAT " << qat;
  EXPECT_GT(qat, float_acc - 0.05);
}

TEST_F(QatData, ObserversFreezeAndLsqScalesLearn) {
  QatOptions q = options(4, false);
  q.observer_steps = 10;
  Graph fq = prepare_qat(*model_, q, *ranges_);
  const std::string act = "dense_1.fq.scale";
  ASSERT_TRUE(fq.initializers.count(act)) << "activation grid of dense_1's input";
  const float initial = fq.initializers.at(act).data<float>()[0];
  TrainOptions o;
  o.epochs = 1;
  o.optimizer.learning_rate = 1e-4f;
  float after_freeze = 0;
  o.on_progress = [&](const TrainProgress& p) {
    if (p.batch == 11) after_freeze = fq.initializers.at(act).data<float>()[0];
  };
  train_qat(fq, data_->train, o, q);
  EXPECT_NE(after_freeze, initial);                                      // observed for 10 steps
  EXPECT_EQ(fq.initializers.at(act).data<float>()[0], after_freeze);    // then frozen

  QatOptions l = options(4, true);
  Graph lsq = prepare_qat(*model_, l, *ranges_);
  const Tensor before = lsq.initializers.at("dense_1.weight_fq.scale").clone();
  train_qat(lsq, data_->train, o, l);
  const Tensor& after = lsq.initializers.at("dense_1.weight_fq.scale");
  int changed = 0;
  for (int64_t i = 0; i < after.numel(); ++i) {
    changed += after.data<float>()[i] != before.data<float>()[i];
    EXPECT_GT(after.data<float>()[i], 0.0f);
  }
  EXPECT_GT(changed, after.numel() / 2);
}

TEST_F(QatData, PerLayerPlansAndErrors) {
  QatOptions q;
  q.plan.mode = QuantMode::Partial;
  q.plan.layers["dense_2"] = {true, 3, true, QScheme::Symmetric, "minmax"};
  Graph fq = prepare_qat(*model_, q, *ranges_);
  QatParameters p = qat_parameters(fq);
  EXPECT_EQ(p.plan.layers.size(), 1u);
  EXPECT_EQ(p.plan.rule_for("dense_2").weight_bits, 3);
  EXPECT_FALSE(p.plan.rule_for("dense_1").quantize);
  Graph integer = convert_qat(fq);
  expect_agreement(fq, integer, data_->test);

  EXPECT_LOWBIT_ERROR(prepare_qat(fq, q, *ranges_), "already has fake quantization");
  EXPECT_LOWBIT_ERROR(prepare_qat(integer, q, *ranges_), "already quantized");
  QatOptions bad = q;
  bad.activation_bits = 4;
  EXPECT_LOWBIT_ERROR(prepare_qat(*model_, bad, *ranges_), "activation bits must be 8");
  bad = q;
  bad.plan.layers["nope"] = {};
  EXPECT_LOWBIT_ERROR(prepare_qat(*model_, bad, *ranges_), "'nope'");
  EXPECT_LOWBIT_ERROR(convert_qat(*model_), "no fake quantization");
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// QAT of a CNN: BatchNorm folded and ReLU fused before the fake quantizers go in (as the engine
// quantizes), grids on the convolutions' outputs before max-pooling, and a converted model that is
// integer end to end and agrees with the QAT model.
TEST(QatCnn, ConvolutionsTrainAndConvertToIntegerConvolutions) {
  DatasetSplits all = load_dataset_dir(testing::test_dataset_dir());
  const Dataset train_data = all.train.head(2000), test_data = all.test.head(1000);
  const nlohmann::json arch = {
      {"name", "tiny-cnn"},
      {"input", {{"shape", {28, 28}}}},
      {"layers",
       {{{"type", "reshape"}, {"shape", {1, 28, 28}}},
        {{"type", "conv2d"}, {"filters", 4}, {"kernel", 3}, {"padding", "same"}, {"bias", false}},
        {{"type", "batchnorm"}},
        {{"type", "relu"}},
        {{"type", "maxpool2d"}, {"kernel", 2}},
        {{"type", "conv2d"}, {"filters", 6}, {"kernel", 3}, {"activation", "relu"}},
        {{"type", "maxpool2d"}, {"kernel", 2}},
        {{"type", "flatten"}},
        {{"type", "dense"}, {"units", 10}},
        {{"type", "softmax"}}}}};
  Graph model = build_model({arch.dump()}, {28, 28}, 10, 3);
  TrainOptions o;
  o.epochs = 2;
  train(model, train_data, o);
  CalibrationOptions c;
  c.samples = 200;
  QatOptions q;
  q.plan.defaults.weight_bits = 4;
  Graph fq = prepare_qat(model, q, calibrate(model, train_data, c));
  int fake_quantizers = 0;
  for (const auto& node : fq.nodes) {
    EXPECT_NE(node.op, "BatchNormalization") << "folded before QAT";
    fake_quantizers += node.op == "FakeQuantize";
  }
  EXPECT_EQ(fake_quantizers, 3 + 3);  // three weights; the input, conv 1's and conv 2's outputs
  o.optimizer.learning_rate = 1e-4f;
  train_qat(fq, train_data, o, q);
  const Graph integer = convert_qat(fq);
  int qconv = 0;
  for (const auto& node : integer.nodes) {
    qconv += node.op == "QConv2D";
    // Integer end to end: the only DequantizeLinear is the input scaling of the image bytes.
    EXPECT_FALSE(node.op == "DequantizeLinear" && integer.producer(node.inputs[0]) >= 0) << node.name;
  }
  EXPECT_EQ(qconv, 2);
  expect_agreement(fq, integer, test_data);
}

}  // namespace
}  // namespace lowbit
