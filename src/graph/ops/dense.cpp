// Dense (fully connected): y = activation(x * W^T + b), W stored [out_features, in_features] as in
// PyTorch and ONNX Gemm(transB=1), so each output channel's weights are one contiguous row. The
// input may have any rank >= 2, as torch.nn.Linear: x [..., in] -> y [..., out], the leading
// dimensions flattened into the GEMM's rows (no copy).
#include <algorithm>
#include <cstring>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "kernels/implementation.h"
#include "kernels/gemm.h"

namespace lowbit::ops {
namespace {

class Dense final : public Op {
 public:
  Dense() { traits_ = {.onnx = "Gemm", .quantizable = OpTraits::Quantizable::MatrixWeights, .quantized_op = "QDense", .dynamic_op = "DynamicQDense", .block_op = "BlockQDense", .fuses_activation = true, .absorbs_batchnorm = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 3);
    activation_of(node);
    const Shape& x = in[0];
    const Shape& w = in[1];
    if (x.size() < 2) shape_error(node, "input must be [batch, ..., features], got " + to_string(x));
    if (w.size() != 2) shape_error(node, "weight must be [out, in], got " + to_string(w));
    if (x.back() >= 0 && w[1] != x.back())
      shape_error(node, "weight " + to_string(w) + " expects " + std::to_string(w[1]) + " input features, input has " +
                            std::to_string(x.back()));
    if (in.size() == 3 && (in[2].size() != 1 || in[2][0] != w[0]))
      shape_error(node, "bias must be [" + std::to_string(w[0]) + "], got " + to_string(in[2]));
    Shape y = x;
    y.back() = w[0];
    return {y};
  }

  std::string describe(const Node&, const OpState*) const override { return kernels::describe_gemm_f32(); }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Tensor& x = *in[0];
    const Tensor& w = *in[1];
    const int64_t batch = rows_of(node, x, w), features = w.dim(1), units = w.dim(0);
    Shape y = x.shape();
    y.back() = units;
    out[0]->resize(std::move(y));
    GemmEpilogue epilogue{in.size() == 3 ? in[2]->data<float>() : nullptr, activation_of(node)};
    gemm_f32(Transpose::No, Transpose::Yes, batch, units, features, 1.0f, x.data<float>(), features,
             w.data<float>(), features, 0.0f, out[0]->data<float>(), units, epilogue);
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    Workspace workspace;
    backward_prepared(node, nullptr, in, out, out_grad, in_grad, workspace);
  }
  void backward_prepared(const Node& node, const OpState*, std::span<const Tensor* const> in,
                         std::span<const Tensor* const> out, std::span<const Tensor* const> out_grad,
                         std::span<Tensor* const> in_grad, Workspace& workspace) const override {
    const Tensor& x = *in[0];
    const Tensor& w = *in[1];
    const int64_t batch = rows_of(node, x, w), features = w.dim(1), units = w.dim(0);
    const float* dy = out_grad[0]->data<float>();
    // Through the fused ReLU: the output is zero exactly where the pre-activation was clipped.
    if (activation_of(node) == Activation::Relu) {
      const float* y = out[0]->data<float>();
      float* masked = workspace.take<float>(static_cast<size_t>(batch * units));
      for (int64_t i = 0; i < batch * units; ++i) masked[i] = y[i] > 0.0f ? dy[i] : 0.0f;
      dy = masked;
    }
    if (in_grad.size() > 1 && in_grad[1]) {  // dW[units, features] = dY^T * X
      in_grad[1]->resize(w.shape());
      gemm_f32(Transpose::Yes, Transpose::No, units, features, batch, 1.0f, dy, units, x.data<float>(), features,
               0.0f, in_grad[1]->data<float>(), features);
    }
    if (in_grad.size() > 2 && in_grad[2]) {  // db = column sums of dY
      in_grad[2]->resize({units});
      float* db = in_grad[2]->data<float>();
      std::fill(db, db + units, 0.0f);
      for (int64_t i = 0; i < batch; ++i)
        for (int64_t j = 0; j < units; ++j) db[j] += dy[i * units + j];
    }
    if (in_grad[0]) {  // dX[batch, features] = dY * W
      in_grad[0]->resize(x.shape());
      gemm_f32(Transpose::No, Transpose::No, batch, features, units, 1.0f, dy, units, w.data<float>(), features,
               0.0f, in_grad[0]->data<float>(), features);
    }
  }

 private:
  // Rows of the GEMM: every dimension of x but the last, which must match the weight's.
  static int64_t rows_of(const Node& node, const Tensor& x, const Tensor& w) {
    if (x.rank() < 2 || x.dim(-1) != w.dim(1))
      shape_error(node, "input " + to_string(x.shape()) + " does not end in the weight's " + std::to_string(w.dim(1)) +
                            " input features");
    return leading_rows(x.shape());
  }
};

}  // namespace

void register_dense(const Registrar& add) { add("Dense", std::make_unique<Dense>()); }

}  // namespace lowbit::ops
