// BatchNormalization, Dropout, AveragePool2D, GlobalAveragePool and Add: finite-difference
// gradient checks of the training-mode forward, running statistics against hand-computed values,
// Dropout's masks, Add(x, x) through the executor, shape errors, reproducible training of a small
// CNN with BatchNorm and Dropout, and the reference CNN built from its model description.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <nlohmann/json.hpp>

#include "graph/gradcheck.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::fill_uniform;
using testing::random;
using testing::run_train;
using testing::training_context;

Tensor filled(Shape shape, float value) {
  Tensor t(DType::F32, std::move(shape));
  std::fill_n(t.data<float>(), t.numel(), value);
  return t;
}

// Runs `node` forward in inference mode; returns its first output.
Tensor run_infer(const Node& node, const std::vector<Tensor>& inputs) {
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  std::vector<Tensor> outs(node.outputs.size(), Tensor(DType::F32, {1}));
  std::vector<Tensor*> out;
  for (auto& t : outs) out.push_back(&t);
  find_op(node.op).forward(node, in, out);
  return outs[0];
}

Node batch_norm(Attributes attributes = {}) {
  return Node{"bn", "BatchNormalization", {"x", "scale", "B", "mean", "var"}, {"y"}, std::move(attributes)};
}

// x, scale, B, running mean, running variance for C channels.
std::vector<Tensor> batch_norm_inputs(Shape x_shape, uint64_t seed) {
  const int64_t c = x_shape[1];
  return {random(std::move(x_shape), seed), random({c}, seed + 1, 0.5f, 1.5f), random({c}, seed + 2),
          random({c}, seed + 3), random({c}, seed + 4, 0.5f, 2.0f)};
}

Node dropout(float ratio, std::string name = "drop") {
  return Node{std::move(name), "Dropout", {"x"}, {"y", "mask"}, {{"ratio", ratio}}};
}

Node average_pool(Attributes attributes) {
  return Node{"pool", "AveragePool2D", {"x"}, {"y"}, std::move(attributes)};
}

// ---- Gradient checks ---------------------------------------------------------------------------

TEST(NormGradCheck, BatchNormalization4D) { check_gradients(batch_norm(), batch_norm_inputs({3, 2, 3, 2}, 1)); }

TEST(NormGradCheck, BatchNormalization2D) { check_gradients(batch_norm(), batch_norm_inputs({6, 3}, 10)); }

TEST(NormGradCheck, BatchNormalizationRunningStatisticsAreNotDifferentiated) {
  const Op& op = find_op("BatchNormalization");
  EXPECT_TRUE(op.differentiable_input(0) && op.differentiable_input(1) && op.differentiable_input(2));
  EXPECT_FALSE(op.differentiable_input(3) || op.differentiable_input(4));
}

TEST(NormGradCheck, AveragePool2D) {
  check_gradients(average_pool({{"kernel_shape", {2, 2}}, {"strides", {2, 2}}}), {random({2, 2, 4, 4}, 20)});
}

TEST(NormGradCheck, AveragePool2DOverlappingPaddedOdd) {
  check_gradients(average_pool({{"kernel_shape", {3, 2}}, {"strides", {2, 1}}, {"pads", {1, 1, 1, 0}}}),
                  {random({1, 2, 5, 4}, 21)});
  check_gradients(average_pool({{"kernel_shape", {3, 3}}, {"strides", {2, 2}}, {"pads", {1, 1, 1, 1}}, {"count_include_pad", 1}}),
                  {random({1, 1, 5, 5}, 22)});
}

TEST(NormGradCheck, GlobalAveragePool) {
  check_gradients(Node{"gap", "GlobalAveragePool", {"x"}, {"y"}}, {random({2, 3, 3, 4}, 30)});
}

TEST(NormGradCheck, Add) {
  check_gradients(Node{"add", "Add", {"a", "b"}, {"y"}}, {random({2, 3, 2, 2}, 40), random({2, 3, 2, 2}, 41)});
}

TEST(NormGradCheck, DropoutWithAFixedMask) {
  check_gradients(dropout(0.4f), {random({3, 5, 4}, 50)}, training_context(7, 3));
}

// ---- BatchNormalization ------------------------------------------------------------------------

TEST(BatchNorm, TrainingNormalizesWithBatchStatisticsAndUpdatesRunningOnes) {
  // One channel, x = 1, 2, 3, 6: mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5, unbiased 14/3.
  std::vector<Tensor> in = {Tensor::from_vector({4, 1}, std::vector<float>{1, 2, 3, 6}), filled({1}, 2.0f),
                            filled({1}, 1.0f), filled({1}, 0.5f), filled({1}, 2.0f)};
  Tensor y = run_train(batch_norm({{"momentum", 0.9}}), in, training_context())[0];
  const float expected[] = {1, 2, 3, 6};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(y.data<float>()[i], 2.0 * (expected[i] - 3.0) / std::sqrt(3.5 + 1e-5) + 1.0, 1e-5) << i;
  // running = 0.9 * running + 0.1 * batch (ONNX momentum), the variance unbiased.
  EXPECT_NEAR(in[3].data<float>()[0], 0.9 * 0.5 + 0.1 * 3.0, 1e-6);
  EXPECT_NEAR(in[4].data<float>()[0], 0.9 * 2.0 + 0.1 * 14.0 / 3.0, 1e-6);
  // The inputs x, scale and B are untouched.
  EXPECT_EQ(in[0].data<float>()[3], 6.0f);
  EXPECT_EQ(in[1].data<float>()[0], 2.0f);
}

TEST(BatchNorm, TrainingStatisticsOf4DInputArePerChannel) {
  std::vector<Tensor> in = batch_norm_inputs({3, 2, 2, 3}, 60);
  const std::vector<float> mean0(in[3].data<float>(), in[3].data<float>() + 2);
  const std::vector<float> var0(in[4].data<float>(), in[4].data<float>() + 2);
  Tensor x = in[0].clone();
  Tensor y = run_train(batch_norm({{"momentum", 0.8}, {"epsilon", 1e-3}}), in, training_context())[0];
  for (int c = 0; c < 2; ++c) {
    double sum = 0, squares = 0;
    std::vector<double> values;
    for (int n = 0; n < 3; ++n)
      for (int s = 0; s < 6; ++s) values.push_back(x.data<float>()[(n * 2 + c) * 6 + s]);
    for (double v : values) sum += v;
    const double mean = sum / 18;
    for (double v : values) squares += (v - mean) * (v - mean);
    const double var = squares / 18;
    EXPECT_NEAR(in[3].data<float>()[c], 0.8 * mean0[c] + 0.2 * mean, 1e-6);
    EXPECT_NEAR(in[4].data<float>()[c], 0.8 * var0[c] + 0.2 * squares / 17, 1e-6);
    for (int n = 0; n < 3; ++n)
      for (int s = 0; s < 6; ++s) {
        const int64_t i = (n * 2 + c) * 6 + s;
        const double expected = in[1].data<float>()[c] * (x.data<float>()[i] - mean) / std::sqrt(var + 1e-3) + in[2].data<float>()[c];
        EXPECT_NEAR(y.data<float>()[i], expected, 1e-5) << i;
      }
  }
}

TEST(BatchNorm, InferenceUsesRunningStatistics) {
  std::vector<Tensor> in = batch_norm_inputs({2, 3, 2, 2}, 70);
  const Tensor mean = in[3].clone(), var = in[4].clone();
  Tensor y = run_infer(batch_norm(), in);
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int64_t c = i / 4 % 3;
    const double expected = in[1].data<float>()[c] * (in[0].data<float>()[i] - in[3].data<float>()[c]) /
                                std::sqrt(in[4].data<float>()[c] + 1e-5) + in[2].data<float>()[c];
    EXPECT_NEAR(y.data<float>()[i], expected, 1e-5) << i;
  }
  EXPECT_EQ(std::vector<float>(in[3].data<float>(), in[3].data<float>() + 3),
            std::vector<float>(mean.data<float>(), mean.data<float>() + 3));
  EXPECT_EQ(std::vector<float>(in[4].data<float>(), in[4].data<float>() + 3),
            std::vector<float>(var.data<float>(), var.data<float>() + 3));
}

TEST(BatchNorm, ResultsDoNotDependOnTheThreadCount) {
  const int threads = num_threads();
  std::vector<std::vector<float>> results;
  for (int t : {1, 2}) {
    set_num_threads(t);
    std::vector<Tensor> in = batch_norm_inputs({8, 16, 12, 12}, 80);
    Tensor y = run_train(batch_norm(), in, training_context())[0];
    Tensor dy = random(y.shape(), 81);
    std::vector<Tensor> grads(3, Tensor(DType::F32, {1}));
    std::vector<const Tensor*> inputs = {&in[0], &in[1], &in[2], &in[3], &in[4]}, outs = {&y}, out_grad = {&dy};
    std::vector<Tensor*> in_grad = {&grads[0], &grads[1], &grads[2], nullptr, nullptr};
    find_op("BatchNormalization").backward(batch_norm(), inputs, outs, out_grad, in_grad);
    std::vector<float> all(y.data<float>(), y.data<float>() + y.numel());
    for (auto& g : grads) all.insert(all.end(), g.data<float>(), g.data<float>() + g.numel());
    for (int i : {3, 4}) all.insert(all.end(), in[i].data<float>(), in[i].data<float>() + in[i].numel());
    results.push_back(all);
  }
  set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
}

// ---- Dropout -----------------------------------------------------------------------------------

TEST(Dropout, InferenceIsTheIdentity) {
  std::vector<Tensor> in = {random({4, 100}, 90)};
  std::vector<const Tensor*> inputs = {&in[0]};
  Tensor y(DType::F32, {1}), mask(DType::F32, {1});
  std::vector<Tensor*> out = {&y, &mask};
  find_op("Dropout").forward(dropout(0.5f), inputs, out);
  EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + y.numel()),
            std::vector<float>(in[0].data<float>(), in[0].data<float>() + in[0].numel()));
  ASSERT_EQ(mask.dtype(), DType::U8);
  EXPECT_EQ(std::count(mask.data<uint8_t>(), mask.data<uint8_t>() + mask.numel(), uint8_t{1}), 400);
}

TEST(Dropout, TrainingKeepsAboutOneMinusRatioScaledUp) {
  std::vector<Tensor> in = {random({10, 10000}, 91, 0.5f, 1.0f)};
  auto outs = run_train(dropout(0.3f), in, training_context(1, 0));
  const uint8_t* mask = outs[1].data<uint8_t>();
  const int64_t kept = std::count(mask, mask + outs[1].numel(), uint8_t{1});
  // 100k Bernoulli(0.7) draws: standard deviation 145.
  EXPECT_NEAR(static_cast<double>(kept), 70000.0, 1000.0);
  for (int64_t i = 0; i < in[0].numel(); ++i) {
    const float expected = mask[i] ? in[0].data<float>()[i] * (1.0f / 0.7f) : 0.0f;
    ASSERT_EQ(outs[0].data<float>()[i], expected) << i;
  }
}

TEST(Dropout, MaskIsAFunctionOfSeedStepAndNodeName) {
  std::vector<Tensor> in = {random({3, 5000}, 92)};
  auto mask_of = [&](const Node& node, uint64_t seed, int64_t step) {
    auto outs = run_train(node, in, training_context(seed, step));
    return std::vector<uint8_t>(outs[1].data<uint8_t>(), outs[1].data<uint8_t>() + outs[1].numel());
  };
  const auto reference = mask_of(dropout(0.5f), 3, 10);
  EXPECT_EQ(mask_of(dropout(0.5f), 3, 10), reference);
  EXPECT_NE(mask_of(dropout(0.5f), 3, 11), reference);
  EXPECT_NE(mask_of(dropout(0.5f), 4, 10), reference);
  EXPECT_NE(mask_of(dropout(0.5f, "other"), 3, 10), reference);
  const int threads = num_threads();
  set_num_threads(1);
  EXPECT_EQ(mask_of(dropout(0.5f), 3, 10), reference);
  set_num_threads(threads);
  // Ratio 0 keeps everything.
  const auto all = mask_of(dropout(0.0f), 3, 10);
  EXPECT_EQ(std::count(all.begin(), all.end(), uint8_t{1}), 15000);
}

TEST(Dropout, TrainingNeedsTheMaskOutput) {
  std::vector<Tensor> in = {random({2, 3}, 93)};
  EXPECT_LOWBIT_ERROR(run_train(Node{"d", "Dropout", {"x"}, {"y"}, {{"ratio", 0.5}}}, in, training_context()),
                      "node 'd' (Dropout): training needs the second output (the mask)");
}

// ---- AveragePool2D and GlobalAveragePool -------------------------------------------------------

TEST(Pool, AveragePool2DMatchesHandComputedValues) {
  // x = 1..9 in a 3x3 plane; kernel 2, stride 2, one row and column of padding at the end.
  std::vector<float> values(9);
  std::iota(values.begin(), values.end(), 1.0f);
  Tensor x = Tensor::from_vector({1, 1, 3, 3}, values);
  Tensor y = run_infer(average_pool({{"kernel_shape", {2, 2}}, {"strides", {2, 2}}, {"pads", {0, 0, 1, 1}}}), {x});
  ASSERT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  // Windows {1,2,4,5}, {3,6}, {7,8}, {9}: padding not counted.
  EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + 4), (std::vector<float>{3.0f, 4.5f, 7.5f, 9.0f}));
  y = run_infer(average_pool({{"kernel_shape", {2, 2}}, {"strides", {2, 2}}, {"pads", {0, 0, 1, 1}}, {"count_include_pad", 1}}), {x});
  EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + 4), (std::vector<float>{3.0f, 2.25f, 3.75f, 2.25f}));
}

TEST(Pool, GlobalAveragePoolMeansEveryPlane) {
  Tensor x = random({2, 3, 5, 7}, 95);
  Tensor y = run_infer(Node{"gap", "GlobalAveragePool", {"x"}, {"y"}}, {x});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 1, 1}));
  for (int p = 0; p < 6; ++p) {
    double sum = 0;
    for (int i = 0; i < 35; ++i) sum += x.data<float>()[p * 35 + i];
    EXPECT_NEAR(y.data<float>()[p], sum / 35, 1e-6);
  }
}

// ---- Shape inference ---------------------------------------------------------------------------

using testing::infer;

TEST(Norm, ShapeInferenceAndErrorsNameTheNode) {
  EXPECT_EQ(infer(batch_norm(), {{-1, 4, 5, 5}, {4}, {4}, {4}, {4}}), (std::vector<Shape>{{-1, 4, 5, 5}}));
  EXPECT_EQ(infer(batch_norm(), {{-1, 8}, {8}, {8}, {8}, {8}}), (std::vector<Shape>{{-1, 8}}));
  EXPECT_LOWBIT_ERROR(infer(batch_norm(), {{-1, 4, 5}, {4}, {4}, {4}, {4}}),
                      "node 'bn' (BatchNormalization): input must be [batch, channels] or NCHW");
  EXPECT_LOWBIT_ERROR(infer(batch_norm(), {{-1, 4, 5, 5}, {4}, {4}, {3}, {4}}), "input_mean must be [4]");
  EXPECT_LOWBIT_ERROR(infer(batch_norm(), {{-1, 4}, {4}, {4}, {4}}), "expects 5 inputs, got 4");
  EXPECT_LOWBIT_ERROR(infer(batch_norm({{"momentum", 1.5}}), {{-1, 4}, {4}, {4}, {4}, {4}}), "'momentum' must be in [0, 1]");
  EXPECT_LOWBIT_ERROR(infer(batch_norm({{"epsilon", 0}}), {{-1, 4}, {4}, {4}, {4}, {4}}), "'epsilon' must be positive");

  EXPECT_EQ(infer(dropout(0.5f), {{-1, 10}}), (std::vector<Shape>{{-1, 10}, {-1, 10}}));
  EXPECT_LOWBIT_ERROR(infer(dropout(1.0f), {{-1, 10}}), "node 'drop' (Dropout): attribute 'ratio' must be in [0, 1)");

  EXPECT_EQ(infer(average_pool({{"kernel_shape", {2, 2}}, {"strides", {2, 2}}}), {{-1, 3, 7, 8}}),
            (std::vector<Shape>{{-1, 3, 3, 4}}));
  EXPECT_EQ(infer(average_pool({{"kernel_shape", {3, 3}}}), {{1, 1, 5, 5}}), (std::vector<Shape>{{1, 1, 3, 3}}));  // stride 1
  EXPECT_LOWBIT_ERROR(infer(average_pool({}), {{-1, 1, 8, 8}}), "node 'pool' (AveragePool2D): attribute 'kernel_shape'");
  EXPECT_LOWBIT_ERROR(infer(average_pool({{"kernel_shape", {2, 2}}}), {{-1, 8, 8}}), "input must be NCHW");
  EXPECT_LOWBIT_ERROR(infer(average_pool({{"kernel_shape", {2, 2}}, {"pads", {0, 2, 0, 0}}}), {{-1, 1, 8, 8}}),
                      "'pads' must be smaller than the kernel 2x2");
  EXPECT_LOWBIT_ERROR(infer(average_pool({{"kernel_shape", {9, 2}}}), {{-1, 1, 8, 8}}), "the kernel spans 9 rows");
  EXPECT_LOWBIT_ERROR(infer(average_pool({{"kernel_shape", {2, 2}}, {"count_include_pad", 2}}), {{-1, 1, 8, 8}}),
                      "'count_include_pad' must be 0 or 1");

  const Node gap{"gap", "GlobalAveragePool", {"x"}, {"y"}};
  EXPECT_EQ(infer(gap, {{-1, 64, 7, 7}}), (std::vector<Shape>{{-1, 64, 1, 1}}));
  EXPECT_LOWBIT_ERROR(infer(gap, {{-1, 64}}), "node 'gap' (GlobalAveragePool): input must be NCHW");

  const Node add{"add", "Add", {"a", "b"}, {"y"}};
  EXPECT_EQ(infer(add, {{-1, 4, 3, 3}, {-1, 4, 3, 3}}), (std::vector<Shape>{{-1, 4, 3, 3}}));
  EXPECT_LOWBIT_ERROR(infer(add, {{-1, 4, 3, 3}, {-1, 4, 3, 2}}),
                      "node 'add' (Add): inputs [N, 4, 3, 3] and [N, 4, 3, 2] do not broadcast (dimension 3 of the result: 3 against 2)");
  EXPECT_EQ(infer(add, {{-1, 4, 3, 3}, {4, 1, 1}}), (std::vector<Shape>{{-1, 4, 3, 3}}));  // a per-channel bias
  EXPECT_EQ(infer(add, {{3}, {-1, 1}}), (std::vector<Shape>{{-1, 3}}));
  EXPECT_LOWBIT_ERROR(infer(add, {{-1, 4}}), "expects 2 inputs, got 1");
}

// ---- Through the executor ----------------------------------------------------------------------

// The gradient of every float initializer of `g` after one forward and backward in training mode.
std::map<std::string, std::vector<float>> gradients(const Graph& g) {
  Executor run(g, true);
  Tensor& labels = run.input("labels");
  labels = Tensor(DType::S32, {2});
  labels.data<int32_t>()[0] = 1, labels.data<int32_t>()[1] = 2;
  run.forward();
  run.backward("loss");
  std::map<std::string, std::vector<float>> result;
  for (auto& p : run.parameters()) result[p.name] = std::vector<float>(p.grad->data<float>(), p.grad->data<float>() + p.grad->numel());
  return result;
}

Graph loss_graph(std::vector<Node> nodes, const std::string& logits, std::map<std::string, Tensor> initializers) {
  Graph g;
  g.inputs.push_back({"labels", DType::S32, {-1}});
  g.initializers = std::move(initializers);
  for (auto& n : nodes) g.add_node(std::move(n));
  g.add_node({"loss", "SoftmaxCrossEntropy", {logits, "labels"}, {"loss"}});
  g.outputs = {"loss"};
  g.validate();
  return g;
}

TEST(Add, ReadingOneValueTwiceSumsBothGradients) {
  const Tensor w = random({2, 4}, 100);
  // d(loss)/d(logits) at logits = 2w and 3w, from graphs where the logits are the parameter.
  auto direct = [&](float times) {
    Tensor t = w.clone();
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] *= times;
    Graph g = loss_graph({{"id", "Add", {"t", "zero"}, {"logits"}}}, "logits", {{"t", t}, {"zero", Tensor(DType::F32, {2, 4})}});
    return gradients(g).at("t");
  };
  // Add(w, w): w's first gradient slot is written in place, the second added from scratch.
  auto twice = gradients(loss_graph({{"double", "Add", {"w", "w"}, {"logits"}}}, "logits", {{"w", w.clone()}})).at("w");
  auto expected = direct(2.0f);
  for (size_t i = 0; i < twice.size(); ++i) EXPECT_NEAR(twice[i], 2.0f * expected[i], 1e-6) << i;
  // Add(Add(w, w), w): w already has a gradient when Add(w, w) runs backward, so both of its
  // slots go through scratch (the executor used to reject this).
  auto thrice = gradients(loss_graph({{"double", "Add", {"w", "w"}, {"s"}}, {"triple", "Add", {"s", "w"}, {"logits"}}},
                                     "logits", {{"w", w.clone()}}))
                    .at("w");
  expected = direct(3.0f);
  for (size_t i = 0; i < thrice.size(); ++i) EXPECT_NEAR(thrice[i], 3.0f * expected[i], 1e-6) << i;
}

TEST(BatchNorm, RunningStatisticsAreStateNotParameters) {
  Graph g = loss_graph({{"bn", "BatchNormalization", {"x", "scale", "B", "mean", "var"}, {"logits"}}}, "logits",
                       {{"x", random({2, 3}, 110)}, {"scale", filled({3}, 1.0f)}, {"B", filled({3}, 0.0f)},
                        {"mean", filled({3}, 0.0f)}, {"var", filled({3}, 1.0f)}});
  const Tensor mean = g.initializers.at("mean");  // shares storage with the graph
  auto grads = gradients(g);
  EXPECT_EQ(grads.size(), 3u);
  EXPECT_TRUE(grads.count("x") && grads.count("scale") && grads.count("B"));
  // The training forward updated the graph's running mean in place: 0.1 * the batch mean.
  const float* x = g.initializers.at("x").data<float>();
  EXPECT_NEAR(mean.data<float>()[0], 0.1f * (x[0] + x[3]) / 2, 1e-6);
  // An inference executor leaves it alone.
  const float before = mean.data<float>()[0];
  Executor infer(g);
  infer.input("labels") = Tensor(DType::S32, {2});
  infer.forward();
  EXPECT_EQ(mean.data<float>()[0], before);
}

TEST(Executor, TrainingExecutorCountsStepsAndTakesASeed) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 1000}});
  g.add_node(dropout(0.5f));
  g.nodes.back().inputs = {"x"};
  g.outputs = {"y"};
  g.validate();
  Executor run(g, true);
  run.set_seed(5);
  run.input("x") = filled({1, 1000}, 1.0f);
  EXPECT_TRUE(run.context().training);
  EXPECT_EQ(run.context().step, 0);
  run.forward();
  const Tensor& y = run.value("y");
  std::vector<float> first(y.data<float>(), y.data<float>() + 1000);
  run.forward();
  EXPECT_EQ(run.context().step, 2);
  EXPECT_NE(std::vector<float>(y.data<float>(), y.data<float>() + 1000), first);
  // Same seed, same step: same mask as a standalone forward_train.
  std::vector<Tensor> in = {filled({1, 1000}, 1.0f)};
  auto outs = run_train(dropout(0.5f), in, training_context(5, 0));
  EXPECT_EQ(std::vector<float>(outs[0].data<float>(), outs[0].data<float>() + 1000), first);
  // Inference executors do not drop anything.
  Executor infer(g);
  infer.input("x") = filled({1, 1000}, 1.0f);
  infer.forward();
  EXPECT_FALSE(infer.context().training);
  EXPECT_EQ(std::count(infer.value("y").data<float>(), infer.value("y").data<float>() + 1000, 1.0f), 1000);
}

// ---- Training a small CNN with BatchNorm and Dropout -------------------------------------------

Dataset blobs(int count) {
  Dataset d;
  d.images = Tensor(DType::U8, {count, 8, 8});
  d.num_classes = 4;
  Rng rng(1);
  uint8_t* px = d.images.data<uint8_t>();
  for (int i = 0; i < count; ++i) {
    const int label = static_cast<int>(rng.below(4));
    d.labels.push_back(static_cast<int32_t>(label));
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 8; ++x)
        px[i * 64 + y * 8 + x] = static_cast<uint8_t>((y / 4) * 2 + (x / 4) == label ? 128 + rng.below(128) : rng.below(100));
  }
  return d;
}

const nlohmann::json kSmallCnn = {
    {"layers",
     {{{"type", "reshape"}, {"shape", {1, 8, 8}}},
      {{"type", "conv2d"}, {"filters", 4}, {"kernel", 3}, {"padding", "same"}, {"bias", false}},
      {{"type", "batchnorm"}},
      {{"type", "relu"}},
      {{"type", "avgpool2d"}, {"kernel", 2}},
      {{"type", "dropout"}, {"rate", 0.25}},
      {{"type", "flatten"}},
      {{"type", "dense"}, {"units", 8}},
      {{"type", "batchnorm"}, {"momentum", 0.8}},
      {{"type", "relu"}},
      {{"type", "dense"}, {"units", 4}},
      {{"type", "softmax"}}}}};

std::string train_cnn_bytes(int threads, uint64_t seed, Graph* trained = nullptr) {
  const int saved = num_threads();
  set_num_threads(threads);
  Dataset data = blobs(200);
  Graph model = build_model({kSmallCnn.dump()}, data.sample_shape(), 4, seed);
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 16;
  o.seed = seed;
  train(model, data, o);
  set_num_threads(saved);
  if (trained) *trained = model;
  return serialize_model(model);
}

TEST(Training, CnnWithBatchNormAndDropoutIsReproducible) {
  Graph model;
  const std::string bytes = train_cnn_bytes(2, 3, &model);
  EXPECT_EQ(train_cnn_bytes(2, 3), bytes);
  EXPECT_EQ(train_cnn_bytes(1, 3), bytes);  // nothing splits a reduction across threads
  EXPECT_NE(train_cnn_bytes(2, 4), bytes);
  // Training moved the running statistics away from their initial 0 and 1, and the model learns
  // the problem (evaluated with them).
  const Tensor& mean = model.initializers.at("batchnorm_1.running_mean");
  EXPECT_NE(mean.data<float>()[0], 0.0f);
  EXPECT_NE(model.initializers.at("batchnorm_2.running_var").data<float>()[0], 1.0f);
  EXPECT_GT(evaluate(model, blobs(200)).accuracy, 0.6);
  // The saved model loads and evaluates the same.
  Graph loaded = deserialize_model(bytes, "memory");
  EXPECT_EQ(evaluate(loaded, blobs(200)).accuracy, evaluate(model, blobs(200)).accuracy);
}

// ---- Model descriptions ------------------------------------------------------------------------

// The distillation teacher of scripts/reference.sh: the reference CNN with two dropout layers.
TEST(Norm, DropoutTeacherIsTheReferenceCnnWithDropout) {
  const Graph teacher = build_model(parse_arch(LOWBIT_SOURCE_DIR "/examples/models/cnn-teacher-dropout.json"), {28, 28}, 10, 0);
  const Graph cnn = build_model(parse_arch(LOWBIT_SOURCE_DIR "/examples/models/reference-cnn.json"), {28, 28}, 10, 0);
  EXPECT_EQ(teacher.parameter_count(), cnn.parameter_count());
  int dropouts = 0;
  for (const auto& node : teacher.nodes) dropouts += node.op == "Dropout";
  EXPECT_EQ(dropouts, 2);
  EXPECT_EQ(teacher.nodes.size(), cnn.nodes.size() + 2);
  EXPECT_EQ(teacher.infer_shapes().at("dense_2").shape, (Shape{-1, 10}));
}

TEST(Norm, ReferenceCnnBuilds) {
  Graph model = build_model(parse_arch(LOWBIT_SOURCE_DIR "/examples/models/reference-cnn.json"), {28, 28}, 10, 0);
  const auto shapes = model.infer_shapes();
  EXPECT_EQ(shapes.at("conv2d_1").shape, (Shape{-1, 32, 28, 28}));
  EXPECT_EQ(shapes.at("batchnorm_1").shape, (Shape{-1, 32, 28, 28}));
  EXPECT_EQ(shapes.at("maxpool2d_1").shape, (Shape{-1, 32, 14, 14}));
  EXPECT_EQ(shapes.at("batchnorm_2").shape, (Shape{-1, 64, 14, 14}));
  EXPECT_EQ(shapes.at("flatten_1").shape, (Shape{-1, 3136}));
  EXPECT_EQ(model.nodes[model.producer("conv2d_1")].inputs.size(), 2u);  // no conv bias: BatchNorm shifts
  const Node& bn = model.nodes[model.producer("batchnorm_1")];
  EXPECT_EQ(bn.op, "BatchNormalization");
  EXPECT_EQ(bn.inputs, (std::vector<std::string>{"conv2d_1", "batchnorm_1.scale", "batchnorm_1.bias",
                                                 "batchnorm_1.running_mean", "batchnorm_1.running_var"}));
  EXPECT_EQ(model.initializers.at("batchnorm_2.scale").data<float>()[63], 1.0f);
  EXPECT_EQ(model.initializers.at("batchnorm_2.running_var").data<float>()[0], 1.0f);
  EXPECT_EQ(model.initializers.at("batchnorm_2.running_mean").data<float>()[0], 0.0f);
  // conv 288, BN 4*32, conv 18432, BN 4*64, dense 401408 + 128, dense 1280 + 10 (running
  // statistics included: they are initializers).
  EXPECT_EQ(model.parameter_count(), 288 + 128 + 18432 + 256 + 401536 + 1290);
  // Trainable: everything but the running statistics.
  Graph g = model;
  g.nodes.pop_back();
  g.inputs.push_back({"labels", DType::S32, {-1}});
  g.add_node({"loss", "SoftmaxCrossEntropy", {"dense_2", "labels"}, {"loss"}});
  g.outputs = {"loss"};
  g.validate();
  Executor run(g, true);
  EXPECT_EQ(run.parameters().size(), 10u);  // 2 conv weights, 2 x BN scale and B, 2 x dense weight and bias
}

TEST(Norm, ModelDescriptionLayers) {
  auto build = [](nlohmann::json layers) { return build_model({nlohmann::json{{"layers", std::move(layers)}}.dump()}, {8, 8}, 3, 0); };
  nlohmann::json head = {{{"type", "reshape"}, {"shape", {2, 4, 8}}}};
  auto with = [&](std::vector<nlohmann::json> middle) {
    nlohmann::json layers = head;
    for (auto& l : middle) layers.push_back(l);
    layers.push_back({{"type", "flatten"}});
    layers.push_back({{"type", "dense"}, {"units", 3}});
    return layers;
  };
  Graph g = build(with({{{"type", "batchnorm"}, {"name", "bn"}, {"momentum", 0.5}, {"epsilon", 1e-3}},
                        {{"type", "avgpool2d"}, {"name", "p"}, {"kernel", 2}},
                        {{"type", "dropout"}, {"name", "d"}, {"rate", 0.1}},
                        {{"type", "add"}, {"name", "sum"}, {"inputs", {"p", "d"}}},
                        {{"type", "globalavgpool"}, {"name", "gap"}}}));
  EXPECT_EQ(g.initializers.at("bn.scale").shape(), (Shape{2}));
  EXPECT_EQ(g.nodes[g.producer("bn")].attributes.at("momentum"), 0.5);
  EXPECT_EQ(g.nodes[g.producer("p")].op, "AveragePool2D");
  EXPECT_EQ(g.nodes[g.producer("p")].attributes.at("strides"), Attribute({2, 2}));
  EXPECT_EQ(g.nodes[g.producer("d")].outputs, (std::vector<std::string>{"d", "d.mask"}));
  EXPECT_EQ(g.nodes[g.producer("d")].attributes.at("ratio"), 0.1);
  EXPECT_EQ(g.nodes[g.producer("sum")].inputs, (std::vector<std::string>{"p", "d"}));
  EXPECT_EQ(g.infer_shapes().at("sum").shape, (Shape{-1, 2, 2, 4}));
  EXPECT_EQ(g.infer_shapes().at("gap").shape, (Shape{-1, 2, 1, 1}));
  // BatchNorm after a dense layer ([N, C]).
  g = build({{{"type", "flatten"}}, {{"type", "dense"}, {"units", 5}}, {{"type", "batchnorm"}}, {{"type", "dense"}, {"units", 3}}});
  EXPECT_EQ(g.initializers.at("batchnorm_1.running_var").shape(), (Shape{5}));

  EXPECT_LOWBIT_ERROR(build(with({{{"type", "batchnorm"}, {"rate", 0.1}}})), "layers[1] (batchnorm): unknown field 'rate'");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "batchnorm"}, {"momentum", 2}}})), "field 'momentum' must be in [0, 1]");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "dropout"}, {"rate", 1.0}}})), "layers[1] (dropout): field 'rate' must be in [0, 1)");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "add"}}})), "layers[1] (add): field 'inputs' must name the two layers to add");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "avgpool2d"}}})), "layers[1] (avgpool2d): field 'kernel'");
  EXPECT_LOWBIT_ERROR(build({{{"type", "globalavgpool"}}, {{"type", "flatten"}}, {{"type", "dense"}, {"units", 3}}}),
                      "add a reshape layer");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "maxpool2d"}, {"name", "m"}, {"kernel", 2}},
                                  {{"type", "add"}, {"inputs", {"m", "reshape_1"}}}})),
                      "do not broadcast");
}

}  // namespace
}  // namespace lowbit
