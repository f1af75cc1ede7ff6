// SoftmaxCrossEntropy: mean over the batch of -log softmax(logits)[label], computed from the logits
// in one pass (log-sum-exp with the row maximum subtracted), so it never takes the log of a
// rounded-to-zero probability. Its gradient is (softmax(logits) - onehot(label)) / batch.
#include <algorithm>
#include <cmath>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

class SoftmaxCrossEntropy final : public Op {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 2);
    if (in[0].size() != 2) shape_error(node, "logits must be [batch, classes], got " + to_string(in[0]));
    if (in[1].size() != 1 || (in[1][0] != in[0][0] && in[1][0] >= 0 && in[0][0] >= 0))
      shape_error(node, "labels must be [batch] matching logits " + to_string(in[0]) + ", got " + to_string(in[1]));
    return {{1}};
  }
  bool differentiable_input(int index) const override { return index == 0; }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const int64_t batch = in[0]->dim(0), classes = in[0]->dim(1);
    const float* logits = in[0]->data<float>();
    const int32_t* labels = in[1]->data<int32_t>();
    double total = 0.0;
    for (int64_t r = 0; r < batch; ++r) {
      const float* row = logits + r * classes;
      int32_t label = labels[r];
      if (label < 0 || label >= classes)
        shape_error(node, "label " + std::to_string(label) + " is outside [0, " + std::to_string(classes) + ")");
      total += log_sum_exp(row, classes) - row[label];
    }
    out[0]->resize({1});
    out[0]->data<float>()[0] = static_cast<float>(total / static_cast<double>(batch));
  }

  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const int64_t batch = in[0]->dim(0), classes = in[0]->dim(1);
    in_grad[0]->resize(in[0]->shape());
    const float* logits = in[0]->data<float>();
    const int32_t* labels = in[1]->data<int32_t>();
    const float scale = out_grad[0]->data<float>()[0] / static_cast<float>(batch);
    float* dx = in_grad[0]->data<float>();
    for (int64_t r = 0; r < batch; ++r) {
      const float* row = logits + r * classes;
      float* drow = dx + r * classes;
      softmax_row(row, drow, classes);
      for (int64_t c = 0; c < classes; ++c) drow[c] *= scale;
      drow[labels[r]] -= scale;
    }
  }
};

}  // namespace

void register_losses(const Registrar& add) { add("SoftmaxCrossEntropy", std::make_unique<SoftmaxCrossEntropy>()); }

}  // namespace lowbit::ops
