// The finite-difference gradient check every op with a backward must pass (see lowbit/ops.h),
// shared by the op tests of tests/graph.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "test_util.h"

namespace lowbit::testing {

inline Tensor random(Shape shape, uint64_t seed, float lo = -1, float hi = 1) {
  Tensor t(DType::F32, std::move(shape));
  fill_uniform(t, seed, lo, hi);
  return t;
}

inline RunContext training_context(uint64_t seed = 0, int64_t step = 0) { return RunContext{true, seed, step}; }

// Runs `node` forward in training mode (Op::forward_train with `context`; ops whose forward does
// not depend on the mode just run their forward); returns its outputs.
inline std::vector<Tensor> run_train(const Node& node, std::vector<Tensor>& inputs, const RunContext& context) {
  std::vector<Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  std::vector<Tensor> outs(node.outputs.size(), Tensor(DType::F32, {1}));
  std::vector<Tensor*> out;
  for (auto& t : outs) out.push_back(&t);
  Workspace workspace;
  find_op(node.op).forward_train(node, nullptr, context, in, out, workspace);
  return outs;
}

// L = sum_k r_k * y_k over the first output, with fixed random r; dL/d(input) from backward() must
// match central differences for every f32 input the op differentiates. Float32 with eps = 1e-2 on
// O(1) values: agreement to ~1e-3 relative is expected. Every forward uses the same context, so
// Dropout's mask stays fixed; BatchNormalization's running statistics change but do not affect the
// training output.
inline void check_gradients(const Node& node, std::vector<Tensor> inputs, const RunContext& context = training_context(),
                            double tolerance = 2e-3) {
  const Op& op = find_op(node.op);
  std::vector<Tensor> outs = run_train(node, inputs, context);
  Tensor weights(DType::F32, outs[0].shape());
  fill_uniform(weights, 100);
  auto loss = [&]() {
    std::vector<Tensor> o = run_train(node, inputs, context);
    double l = 0;
    for (int64_t k = 0; k < o[0].numel(); ++k) l += double(o[0].data<float>()[k]) * weights.data<float>()[k];
    return l;
  };
  std::vector<const Tensor*> in, out_c, grad_out;
  for (auto& t : inputs) in.push_back(&t);
  for (auto& t : outs) out_c.push_back(&t);
  Tensor unused;
  grad_out.push_back(&weights);
  for (size_t i = 1; i < outs.size(); ++i) grad_out.push_back(&unused);
  std::vector<Tensor> grads;  // one buffer each (copies of one Tensor would share it)
  for (size_t i = 0; i < inputs.size(); ++i) grads.emplace_back(DType::F32, Shape{1});
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
      const double plus = loss();
      x[k] = saved - eps;
      const double minus = loss();
      x[k] = saved;
      const double numeric = (plus - minus) / (2.0 * eps);
      EXPECT_NEAR(grads[i].data<float>()[k], numeric, tolerance * std::max(1.0, std::fabs(numeric)))
          << node.op << " input " << i << " element " << k;
    }
  }
}

}  // namespace lowbit::testing
