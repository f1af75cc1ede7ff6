// Losses. SoftmaxCrossEntropy: mean over the batch of -log softmax(logits)[label], computed from the
// logits in one pass (log-sum-exp with the row maximum subtracted), so it never takes the log of a
// rounded-to-zero probability. Its gradient is (softmax(logits) - onehot(label)) / batch.
//
// DistillationLoss (Hinton et al. 2015), inputs student logits s, teacher logits t, labels y:
//   alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(softmax(s), y),
// both terms averaged over the batch (PyTorch's KLDivLoss "batchmean"). The T^2 keeps the soft
// term's gradient on the scale of the hard term's as T changes. Gradient with respect to s:
//   (alpha * T * (softmax(s / T) - softmax(t / T)) + (1 - alpha) * (softmax(s) - onehot(y))) / batch.
// The teacher's logits are not differentiated.
#include <algorithm>
#include <cmath>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

class SoftmaxCrossEntropy final : public Op {
 public:
  SoftmaxCrossEntropy() { traits_ = {.onnx = "SoftmaxCrossEntropyLoss"}; }
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

class DistillationLoss final : public Op {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 3);
    if (in[0].size() != 2) shape_error(node, "student logits must be [batch, classes], got " + to_string(in[0]));
    if (in[1].size() != 2 || in[1][1] != in[0][1])
      shape_error(node, "teacher logits must be [batch, " + std::to_string(in[0][1]) + "] like the student's, got " + to_string(in[1]));
    if (in[2].size() != 1) shape_error(node, "labels must be [batch], got " + to_string(in[2]));
    params(node);
    return {{1}};
  }
  bool differentiable_input(int index) const override { return index == 0; }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const auto [temperature, alpha] = params(node);
    const int64_t batch = check_batch(node, in), classes = in[0]->dim(1);
    std::vector<float> s(classes), t(classes), pt(classes);
    double soft = 0.0, hard = 0.0;
    for (int64_t r = 0; r < batch; ++r) {
      const float* sr = in[0]->data<float>() + r * classes;
      const float* tr = in[1]->data<float>() + r * classes;
      const int32_t label = in[2]->data<int32_t>()[r];
      if (label < 0 || label >= classes)
        shape_error(node, "label " + std::to_string(label) + " is outside [0, " + std::to_string(classes) + ")");
      for (int64_t c = 0; c < classes; ++c) s[c] = sr[c] / temperature, t[c] = tr[c] / temperature;
      // KL(p_t || p_s) = sum p_t (log p_t - log p_s), with log p = x - log_sum_exp(x).
      const float ls = log_sum_exp(s.data(), classes), lt = log_sum_exp(t.data(), classes);
      softmax_row(t.data(), pt.data(), classes);
      double kl = 0.0;
      for (int64_t c = 0; c < classes; ++c)
        if (pt[c] > 0.0f) kl += static_cast<double>(pt[c]) * ((t[c] - lt) - (s[c] - ls));
      soft += kl;
      hard += log_sum_exp(sr, classes) - sr[label];
    }
    const double loss = (alpha * temperature * temperature * soft + (1.0 - alpha) * hard) / static_cast<double>(batch);
    out[0]->resize({1});
    out[0]->data<float>()[0] = static_cast<float>(loss);
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const auto [temperature, alpha] = params(node);
    const int64_t batch = check_batch(node, in), classes = in[0]->dim(1);
    in_grad[0]->resize(in[0]->shape());
    const float scale = out_grad[0]->data<float>()[0] / static_cast<float>(batch);
    const float soft_weight = alpha * temperature * scale, hard_weight = (1.0f - alpha) * scale;
    std::vector<float> s(classes), t(classes), ps(classes), pt(classes), p(classes);
    for (int64_t r = 0; r < batch; ++r) {
      const float* sr = in[0]->data<float>() + r * classes;
      const float* tr = in[1]->data<float>() + r * classes;
      float* dr = in_grad[0]->data<float>() + r * classes;
      for (int64_t c = 0; c < classes; ++c) s[c] = sr[c] / temperature, t[c] = tr[c] / temperature;
      softmax_row(s.data(), ps.data(), classes);
      softmax_row(t.data(), pt.data(), classes);
      softmax_row(sr, p.data(), classes);
      for (int64_t c = 0; c < classes; ++c) dr[c] = soft_weight * (ps[c] - pt[c]) + hard_weight * p[c];
      dr[in[2]->data<int32_t>()[r]] -= hard_weight;
    }
  }

 private:
  struct Params {
    float temperature, alpha;
  };
  static Params params(const Node& node) {
    const Params p{static_cast<float>(node.attr_float("temperature", 1.0)), static_cast<float>(node.attr_float("alpha", 0.5))};
    if (!(p.temperature > 0.0f) || !std::isfinite(p.temperature))
      shape_error(node, "attribute 'temperature' must be positive, got " + std::to_string(p.temperature));
    if (!(p.alpha >= 0.0f && p.alpha <= 1.0f)) shape_error(node, "attribute 'alpha' must be in [0, 1], got " + std::to_string(p.alpha));
    return p;
  }
  static int64_t check_batch(const Node& node, std::span<const Tensor* const> in) {
    const int64_t batch = in[0]->dim(0);
    if (in[1]->dim(0) != batch || in[2]->dim(0) != batch)
      shape_error(node, "student logits, teacher logits and labels must have the same batch size");
    return batch;
  }
};

}  // namespace

void register_losses(const Registrar& add) {
  add("SoftmaxCrossEntropy", std::make_unique<SoftmaxCrossEntropy>());
  add("DistillationLoss", std::make_unique<DistillationLoss>());
}

}  // namespace lowbit::ops
