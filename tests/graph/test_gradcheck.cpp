// Finite-difference gradient check: every op with a backward must pass it (see lowbit/ops.h).
#include <cmath>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::fill_uniform;

// L = sum_k r_k * output_k with fixed random r; dL/d(input) from backward() must match central
// differences. Float32 with eps = 1e-2 on O(1) values: agreement to ~1e-3 relative is expected.
void check_gradients(const Node& node, std::vector<Tensor> inputs, double tolerance = 2e-3) {
  const Op& op = find_op(node.op);
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  std::vector<Tensor> outs(node.outputs.size(), Tensor(DType::F32, {1}));
  std::vector<Tensor*> out;
  for (auto& t : outs) out.push_back(&t);
  op.forward(node, in, out);

  std::vector<Tensor> weights;
  for (size_t i = 0; i < outs.size(); ++i) {
    weights.emplace_back(DType::F32, outs[i].shape());
    fill_uniform(weights.back(), 100 + i);
  }
  auto loss = [&]() {
    std::vector<Tensor> o(node.outputs.size(), Tensor(DType::F32, {1}));
    std::vector<Tensor*> op_out;
    for (auto& t : o) op_out.push_back(&t);
    op.forward(node, in, op_out);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i)
      for (int64_t k = 0; k < o[i].numel(); ++k) l += double(o[i].data<float>()[k]) * weights[i].data<float>()[k];
    return l;
  };
  std::vector<const Tensor*> out_c(out.begin(), out.end());
  std::vector<const Tensor*> grad_out;
  for (auto& w : weights) grad_out.push_back(&w);
  std::vector<Tensor> grads(inputs.size(), Tensor(DType::F32, {1}));
  std::vector<Tensor*> grad_in;
  for (size_t i = 0; i < inputs.size(); ++i)
    grad_in.push_back(inputs[i].dtype() == DType::F32 && op.differentiable_input(int(i)) ? &grads[i] : nullptr);
  op.backward(node, in, out_c, grad_out, grad_in);

  const float eps = 1e-2f;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!grad_in[i]) continue;
    ASSERT_EQ(grads[i].shape(), inputs[i].shape()) << node.op << " input " << i;
    float* x = inputs[i].data<float>();
    for (int64_t k = 0; k < inputs[i].numel(); ++k) {
      const float saved = x[k];
      x[k] = saved + eps;
      double plus = loss();
      x[k] = saved - eps;
      double minus = loss();
      x[k] = saved;
      double numeric = (plus - minus) / (2.0 * eps);
      double analytic = grads[i].data<float>()[k];
      EXPECT_NEAR(analytic, numeric, tolerance * std::max(1.0, std::fabs(numeric)))
          << node.op << " input " << i << " element " << k;
    }
  }
}

Tensor random(Shape shape, uint64_t seed, float lo = -1, float hi = 1) {
  Tensor t(DType::F32, std::move(shape));
  fill_uniform(t, seed, lo, hi);
  return t;
}

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
  nlohmann::json arch = parse_arch("12-6-5-4");
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

}  // namespace
}  // namespace lowbit
