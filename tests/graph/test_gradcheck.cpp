// Finite-difference gradient check: every op with a backward must pass it (see lowbit/ops.h).
#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "graph/gradcheck.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::fill_uniform;
using testing::random;

// Values away from ReLU's kink, where the function is not differentiable.
Tensor away_from_zero(Shape shape, uint64_t seed) {
  Tensor t = random(std::move(shape), seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    float& v = t.data<float>()[i];
    v = v < 0 ? v - 0.1f : v + 0.1f;
  }
  return t;
}

TEST(GradCheck, Dense) {
  Node node{"fc", "Dense", {"x", "w", "b"}, {"y"}};
  check_gradients(node, {random({5, 7}, 1), random({3, 7}, 2), random({3}, 3)});
}

TEST(GradCheck, DenseWithoutBias) {
  Node node{"fc", "Dense", {"x", "w"}, {"y"}};
  check_gradients(node, {random({4, 17}, 4), random({6, 17}, 5)});
}

TEST(GradCheck, DenseWithFusedRelu) {
  Node node{"fc", "Dense", {"x", "w", "b"}, {"y"}, {{"activation", "relu"}}};
  // Pick inputs whose pre-activations are not within eps of zero.
  Tensor x = random({6, 5}, 6), w = random({4, 5}, 7), b = random({4}, 8);
  Tensor y(DType::F32, {6, 4});
  for (int attempt = 0; attempt < 50; ++attempt) {
    bool ok = true;
    for (int i = 0; i < 6; ++i)
      for (int j = 0; j < 4; ++j) {
        float z = b.data<float>()[j];
        for (int k = 0; k < 5; ++k) z += x.data<float>()[i * 5 + k] * w.data<float>()[j * 5 + k];
        ok &= std::fabs(z) > 0.1f;
      }
    if (ok) break;
    fill_uniform(b, 100 + attempt);
  }
  check_gradients(node, {x, w, b});
}

TEST(GradCheck, Relu) {
  check_gradients(Node{"r", "Relu", {"x"}, {"y"}}, {away_from_zero({3, 9}, 9)});
}

TEST(GradCheck, Softmax) {
  check_gradients(Node{"s", "Softmax", {"x"}, {"y"}}, {random({4, 10}, 10, -3, 3)});
}

TEST(GradCheck, Flatten) {
  check_gradients(Node{"f", "Flatten", {"x"}, {"y"}}, {random({2, 3, 4}, 11)});
}

TEST(GradCheck, SoftmaxCrossEntropy) {
  Tensor labels(DType::S32, {5});
  for (int i = 0; i < 5; ++i) labels.data<int32_t>()[i] = (3 * i + 1) % 7;
  check_gradients(Node{"l", "SoftmaxCrossEntropy", {"logits", "labels"}, {"loss"}}, {random({5, 7}, 12, -4, 4), labels});
}

TEST(Loss, SoftmaxCrossEntropyMatchesHandComputedValue) {
  // logits [0, ln 3] -> softmax [1/4, 3/4]; label 1 -> loss -ln(3/4)
  Tensor logits = Tensor::from_vector({1, 2}, std::vector<float>{0.0f, std::log(3.0f)});
  Tensor labels(DType::S32, {1});
  labels.data<int32_t>()[0] = 1;
  Tensor loss(DType::F32, {1});
  std::vector<const Tensor*> in = {&logits, &labels};
  std::vector<Tensor*> out = {&loss};
  Node node{"l", "SoftmaxCrossEntropy", {"a", "b"}, {"c"}};
  find_op("SoftmaxCrossEntropy").forward(node, in, out);
  EXPECT_NEAR(loss.data<float>()[0], -std::log(0.75), 1e-6);
}

// The executor's backward pass through a whole training graph, checked the same way: the gradient
// of every parameter of a small MLP against finite differences of the loss.
TEST(GradCheck, ExecutorThroughMlp) {
  // "12-6-5-4" with a float input, so that the input values span [-1, 1].
  ModelDescription arch = parse_arch(R"({"input": {"dtype": "f32"}, "layers": [{"type": "flatten"},
      {"type": "dense", "units": 6, "activation": "relu"}, {"type": "dense", "units": 5, "activation": "relu"},
      {"type": "dense", "units": 4}, {"type": "softmax"}]})");
  Graph model = build_model(arch, {3, 4}, 4, 7);
  Graph g = model;
  g.nodes.pop_back();  // train on logits
  g.inputs.push_back({"labels", DType::S32, {-1}});
  g.add_node({"loss", "SoftmaxCrossEntropy", {"dense_3", "labels"}, {"loss"}});
  g.outputs = {"loss"};
  g.validate();
  for (auto& [name, t] : g.initializers) fill_uniform(t, std::hash<std::string>{}(name), -0.8f, 0.8f);
  Executor run(g, true);
  run.input("image") = random({5, 3, 4}, 20);
  Tensor& labels = run.input("labels");
  labels = Tensor(DType::S32, {5});
  for (int i = 0; i < 5; ++i) labels.data<int32_t>()[i] = i % 4;
  run.forward();
  run.backward("loss");
  ASSERT_EQ(run.parameters().size(), 6u);
  for (auto& p : run.parameters()) {
    Tensor analytic = p.grad->clone();
    float* w = p.value.data<float>();
    for (int64_t k = 0; k < p.value.numel(); k += 3) {
      const float saved = w[k], eps = 1e-2f;
      w[k] = saved + eps;
      run.forward();
      double plus = run.value("loss").data<float>()[0];
      w[k] = saved - eps;
      run.forward();
      double minus = run.value("loss").data<float>()[0];
      w[k] = saved;
      EXPECT_NEAR(analytic.data<float>()[k], (plus - minus) / (2 * eps), 2e-3) << p.name << "[" << k << "]";
    }
  }
}

// The element-wise math of exported transformer graphs, on their domains (positive inputs where
// the function needs them, away from |x|'s kink).
TEST(GradCheck, Sqrt) { check_gradients(Node{"s", "Sqrt", {"x"}, {"y"}}, {random({3, 5}, 40, 0.5f, 3.0f)}); }
TEST(GradCheck, Reciprocal) { check_gradients(Node{"r", "Reciprocal", {"x"}, {"y"}}, {random({3, 5}, 41, 0.5f, 3.0f)}); }
TEST(GradCheck, Neg) { check_gradients(Node{"n", "Neg", {"x"}, {"y"}}, {random({3, 5}, 42)}); }
TEST(GradCheck, Erf) { check_gradients(Node{"e", "Erf", {"x"}, {"y"}}, {random({3, 5}, 43, -2.0f, 2.0f)}); }
TEST(GradCheck, Exp) { check_gradients(Node{"e", "Exp", {"x"}, {"y"}}, {random({3, 5}, 44, -2.0f, 2.0f)}); }
TEST(GradCheck, Log) { check_gradients(Node{"l", "Log", {"x"}, {"y"}}, {random({3, 5}, 45, 0.5f, 3.0f)}); }
TEST(GradCheck, Abs) { check_gradients(Node{"a", "Abs", {"x"}, {"y"}}, {away_from_zero({3, 5}, 46)}); }

TEST(GradCheck, PowBothOperandsAndBroadcast) {
  check_gradients(Node{"p", "Pow", {"a", "b"}, {"y"}}, {random({3, 4}, 47, 0.5f, 2.0f), random({3, 4}, 48, -1.5f, 2.0f)});
  check_gradients(Node{"p", "Pow", {"a", "b"}, {"y"}}, {random({3, 4}, 49, 0.5f, 2.0f), random({1}, 50, 1.5f, 2.5f)});
}

TEST(GradCheck, GeluExact) {
  check_gradients(Node{"g", "Gelu", {"x"}, {"y"}}, {random({3, 7}, 20, -3, 3)});
}

TEST(GradCheck, GeluTanh) {
  check_gradients(Node{"g", "Gelu", {"x"}, {"y"}, {{"approximate", "tanh"}}}, {random({3, 7}, 21, -3, 3)});
}

TEST(GradCheck, MulSameShape) {
  check_gradients(Node{"m", "Mul", {"a", "b"}, {"y"}}, {random({4, 5}, 22), random({4, 5}, 23)});
}

TEST(GradCheck, MulBroadcastBothWays) {
  check_gradients(Node{"m", "Mul", {"a", "b"}, {"y"}}, {random({2, 3, 1}, 24), random({4}, 25)});
  check_gradients(Node{"m", "Mul", {"a", "b"}, {"y"}}, {random({1}, 26), random({2, 1, 3}, 27)});
}

TEST(GradCheck, AddSubDivBroadcast) {
  for (const char* op : {"Add", "Sub", "Div"}) {
    check_gradients(Node{"o", op, {"a", "b"}, {"y"}}, {random({4, 5}, 30), random({4, 5}, 31, 0.5f, 2.0f)});
    check_gradients(Node{"o", op, {"a", "b"}, {"y"}}, {random({2, 3, 1}, 32), random({4}, 33, 0.5f, 2.0f)});
  }
}
TEST(GradCheck, Add) { check_gradients(Node{"o", "Add", {"a", "b"}, {"y"}}, {random({3, 1, 2}, 34), random({1, 4, 1}, 35)}); }
TEST(GradCheck, Sub) { check_gradients(Node{"o", "Sub", {"a", "b"}, {"y"}}, {random({1}, 36), random({3, 2}, 37)}); }
TEST(GradCheck, Div) { check_gradients(Node{"o", "Div", {"a", "b"}, {"y"}}, {random({3, 2}, 38), random({2}, 39, 0.5f, 2.0f)}); }

TEST(GradCheck, SoftmaxOnAnInnerAxis) {
  check_gradients(Node{"s", "Softmax", {"x"}, {"y"}, {{"axis", 1}}}, {random({2, 5, 3}, 40, -3, 3)});
}

TEST(GradCheck, DenseOnThreeDimensionalInput) {
  check_gradients(Node{"d", "Dense", {"x", "w", "b"}, {"y"}},
                  {random({2, 3, 5}, 41), random({4, 5}, 42), random({4}, 43)});
}

TEST(GradCheck, MatMulBatchedAndBroadcast) {
  const Node mm{"mm", "MatMul", {"a", "b"}, {"y"}};
  check_gradients(mm, {random({3, 4}, 44), random({4, 2}, 45)});
  check_gradients(mm, {random({2, 3, 4}, 46), random({4, 5}, 47)});          // one GEMM over a's rows
  check_gradients(mm, {random({2, 1, 3, 4}, 48), random({3, 4, 2}, 49)});    // both broadcast
  check_gradients(mm, {random({4}, 50), random({2, 4, 3}, 51)});             // a vector
}

TEST(GradCheck, CastBetweenFloats) {
  check_gradients(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "f32"}}}, {random({3, 4}, 52)});
}

// Values 0.1 apart in a scrambled order, so that a finite-difference step never changes which
// element is the maximum or minimum.
Tensor spread_values(Shape shape) {
  Tensor t(DType::F32, std::move(shape));
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = static_cast<float>((i * 7) % n) * 0.1f - 1.0f;
  return t;
}

TEST(ReduceGradCheck, ReduceSumAndMeanOverAnyAxes) {
  for (const char* op : {"ReduceSum", "ReduceMean"}) {
    check_gradients(Node{"r", op, {"x"}, {"y"}, {{"axes", {0, 2}}}}, {random({3, 4, 2}, 60)});
    check_gradients(Node{"r", op, {"x"}, {"y"}, {{"axes", {-1}}, {"keepdims", 0}}}, {random({2, 5}, 61)});
    check_gradients(Node{"r", op, {"x"}, {"y"}}, {random({2, 3}, 62)});  // every axis
  }
}
TEST(ReduceGradCheck, ReduceSum) { check_gradients(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"axes", {1}}}}, {random({2, 3, 2}, 63)}); }
TEST(ReduceGradCheck, ReduceMean) { check_gradients(Node{"r", "ReduceMean", {"x"}, {"y"}, {{"axes", {1}}}}, {random({2, 3, 2}, 64)}); }
TEST(ReduceGradCheck, ReduceMax) {
  check_gradients(Node{"r", "ReduceMax", {"x"}, {"y"}, {{"axes", {1}}}}, {spread_values({2, 5, 3})});
  check_gradients(Node{"r", "ReduceMax", {"x"}, {"y"}, {{"keepdims", 0}}}, {spread_values({4, 3})});
}
TEST(ReduceGradCheck, ReduceMin) {
  check_gradients(Node{"r", "ReduceMin", {"x"}, {"y"}, {{"axes", {0, -1}}}}, {spread_values({3, 2, 4})});
}

// ---- The ops with ONNX semantics for imported models (tests/graph/test_onnx_semantics_ops.cpp) ----

TEST(GradCheck, Sigmoid) { check_gradients(Node{"s", "Sigmoid", {"x"}, {"y"}}, {random({3, 7}, 70, -4, 4)}); }
TEST(GradCheck, Identity) { check_gradients(Node{"i", "Identity", {"x"}, {"y"}}, {random({2, 7}, 74, -2, 2)}); }
TEST(GradCheck, Tanh) { check_gradients(Node{"t", "Tanh", {"x"}, {"y"}}, {random({2, 9}, 71, -2, 2)}); }
TEST(GradCheck, LeakyRelu) {
  check_gradients(Node{"l", "LeakyRelu", {"x"}, {"y"}}, {away_from_zero({4, 5}, 72)});
  check_gradients(Node{"l", "LeakyRelu", {"x"}, {"y"}, {{"alpha", 0.3}}}, {away_from_zero({1, 17}, 73)});
}
TEST(GradCheck, ClipAwayFromItsBounds) {
  // spread_values are multiples of 0.1 minus 1: 0.05 away from the bounds, more than eps.
  check_gradients(Node{"c", "Clip", {"x"}, {"y"}, {{"min", -0.45}, {"max", 0.55}}}, {spread_values({3, 7})});
  check_gradients(Node{"c", "Clip", {"x"}, {"y"}, {{"min", -0.35}}}, {spread_values({17})});
  check_gradients(Node{"c", "Clip", {"x"}, {"y"}, {{"min", 0.25}, {"max", -0.25}}}, {spread_values({2, 5})});  // all max
}
TEST(GradCheck, LogSoftmax) {
  check_gradients(Node{"s", "LogSoftmax", {"x"}, {"y"}}, {random({4, 10}, 74, -3, 3)});
  check_gradients(Node{"s", "LogSoftmax", {"x"}, {"y"}, {{"axis", 1}}}, {random({2, 5, 3}, 75, -3, 3)});
  check_gradients(Node{"s", "LogSoftmax", {"x"}, {"y"}, {{"axis", -3}}}, {random({7, 1, 2}, 76, -3, 3)});
}

TEST(TransformGradCheck, Transpose) {
  check_gradients(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {1, 2, 0}}}}, {random({2, 3, 4}, 80)});
  check_gradients(Node{"t", "Transpose", {"x"}, {"y"}}, {random({3, 1, 2}, 81)});  // reversed axes
}
TEST(TransformGradCheck, Concat) {
  const Node concat{"c", "Concat", {"a", "b", "c"}, {"y"}, {{"axis", 1}}};
  check_gradients(concat, {random({2, 1, 3}, 82), random({2, 4, 3}, 83), random({2, 2, 3}, 84)});
  check_gradients(Node{"c", "Concat", {"a", "b"}, {"y"}, {{"axis", -1}}}, {random({3, 2}, 85), random({3, 5}, 86)});
}
TEST(TransformGradCheck, Squeeze) {
  check_gradients(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {1, -1}}}}, {random({3, 1, 4, 1}, 87)});
}
TEST(TransformGradCheck, Unsqueeze) {
  check_gradients(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {0, -1}}}}, {random({3, 4}, 88)});
}
TEST(TransformGradCheck, SliceWithStepsBothWays) {
  check_gradients(Node{"s", "Slice", {"x"}, {"y"}, {{"starts", {1, -1}}, {"ends", {4, -8}}, {"axes", {0, 1}}, {"steps", {2, -2}}}},
                  {random({5, 7}, 89)});
  check_gradients(Node{"s", "Slice", {"x"}, {"y"}, {{"starts", {1}}, {"ends", {100}}, {"axes", {-1}}}}, {random({2, 3, 4}, 90)});
}
TEST(TransformGradCheck, GatherWithRepeatedAndNegativeIndices) {
  Tensor indices(DType::S64, {2, 2});
  const int64_t picked[] = {0, -1, 0, 2};  // row 0 twice: its gradient is the sum
  std::copy(picked, picked + 4, indices.data<int64_t>());
  check_gradients(Node{"g", "Gather", {"x", "i"}, {"y"}}, {random({5, 3}, 91), indices});
  Tensor columns(DType::S32, {3});
  const int32_t c[] = {1, 1, -4};
  std::copy(c, c + 3, columns.data<int32_t>());
  check_gradients(Node{"g", "Gather", {"x", "i"}, {"y"}, {{"axis", 1}}}, {random({2, 4, 3}, 92), columns});
}
TEST(ReshapeGradCheck, ReshapeWithOnnxDims) {
  check_gradients(Node{"r", "Reshape", {"x"}, {"y"}, {{"dims", {0, -1, 2}}}}, {random({3, 2, 4}, 93)});
}

// Every registered op with a backward pass has a gradient check: a test named
// <Suite>GradCheck.<OpType>... (or the one named below). Integer inference ops have no backward;
// their bit-exact tests are tests/quant/test_qconv.cpp and tests/quant/test_quantize_model.cpp.
TEST(GradCheck, EveryTrainableOpIsChecked) {
  const std::map<std::string, std::string> named = {
      {"FakeQuantize", "FakeQuantize.SteGradientMatchesFiniteDifferences"},
      {"LsqFakeQuantize", "FakeQuantize.LsqGradientMatchesFiniteDifferences"},
      {"DistillationLoss", "Distillation.GradientMatchesFiniteDifferences"},
      {"Constant", "Constant.ValuesDtypesShapesAndErrors"},   // no inputs: nothing to differentiate
      {"Shape", "Shape.ReturnsTheDimensionsWithStartAndEnd"},  // sizes, not values: nothing to differentiate
      {"Equal", "Equal.BroadcastsAndComparesLikeOnnx"},       // a bool output: nothing to differentiate
      // integer codes in and out (ONNX's integer ops): nothing to differentiate
      {"DynamicQuantizeLinear", "DynamicQuantizeLinear.FollowsOnnxsFormula"},
      {"MatMulInteger", "MatMulInteger.PerRowAndPerColumnZeroPointsAndBroadcastBatches"},
      {"ConvInteger", "ConvInteger.MatchesFloatConvolutionOfTheZeroPointFreeValues"}};
  std::vector<std::string> tests;
  const auto* unit = ::testing::UnitTest::GetInstance();
  for (int i = 0; i < unit->total_test_suite_count(); ++i) {
    const auto* suite = unit->GetTestSuite(i);
    for (int j = 0; j < suite->total_test_count(); ++j)
      tests.push_back(std::string(suite->name()) + "." + suite->GetTestInfo(j)->name());
  }
  auto has_test = [&](const std::string& type) {
    auto it = named.find(type);
    if (it != named.end()) return std::find(tests.begin(), tests.end(), it->second) != tests.end();
    for (const auto& t : tests) {
      const size_t dot = t.find('.');
      if (dot >= 9 && t.compare(dot - 9, 9, "GradCheck") == 0 && t.compare(dot + 1, type.size(), type) == 0) return true;
    }
    return false;
  };
  int checked = 0;
  for (const auto& type : registered_ops()) {
    const OpTraits& t = find_op(type).traits();
    if (t.is_integer_layer() || t.boundary != OpTraits::Boundary::None) continue;  // inference only
    EXPECT_TRUE(has_test(type)) << "op " << type << " is registered but has no gradient check";
    ++checked;
  }
  EXPECT_GE(checked, 18);
}

}  // namespace
}  // namespace lowbit
