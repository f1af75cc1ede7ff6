// MatMul: the matrix product of ONNX MatMul / numpy.matmul. a [..., M, K] times b [..., K, N] gives
// [..., M, N]; the leading (batch) dimensions broadcast (broadcast.h); a 1-D a is a row [1, K] and
// a 1-D b a column [K, 1], their unit dimension removed from the result. Attention's Q K^T and
// scores x V, and x [..., K] times a weight matrix [K, N] as exporters write Linear layers.
// When b has no batch dimensions, every batch of a goes through one GEMM (a viewed as rows);
// otherwise one GEMM per output batch. Gradients: da = dy b^T and db = a^T dy, added up over the
// batches an input was broadcast along, in batch order (independent of the thread count).
#include <algorithm>

#include "graph/ops/broadcast.h"
#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

struct Product {
  Shape a, b;          // as matrices: 1-D inputs promoted to [1, K] and [K, 1]
  Shape out;           // the result's shape (promoted unit dimensions removed)
  int64_t m = 0, k = 0, n = 0;
  Broadcast batch;     // over the batch dimensions
  bool b_is_matrix = false;  // b has no batch dimensions: one GEMM over all of a's rows
};

Shape batch_of(const Shape& s) { return Shape(s.begin(), s.end() - 2); }

Shape promoted(const Node& node, const Shape& s, bool left) {
  if (s.empty()) shape_error(node, "inputs must have at least one dimension (a scalar is not a matrix)");
  if (s.size() > 1) return s;
  return left ? Shape{1, s[0]} : Shape{s[0], 1};
}

Shape result_shape(const Shape& in_a, const Shape& in_b, const Shape& batch, int64_t m, int64_t n) {
  Shape out = batch;
  if (in_a.size() > 1) out.push_back(m);
  if (in_b.size() > 1) out.push_back(n);
  return out;
}

Product plan(const Node& node, const Shape& in_a, const Shape& in_b) {
  Product p;
  p.a = promoted(node, in_a, true);
  p.b = promoted(node, in_b, false);
  p.m = p.a[p.a.size() - 2];
  p.k = p.a.back();
  p.n = p.b.back();
  if (p.b[p.b.size() - 2] != p.k)
    shape_error(node, "inner dimensions differ: " + to_string(in_a) + " times " + to_string(in_b));
  p.batch = plan_broadcast(node, batch_of(p.a), batch_of(p.b));
  p.b_is_matrix = p.b.size() == 2;
  p.out = result_shape(in_a, in_b, p.batch.out, p.m, p.n);
  return p;
}

class MatMul final : public Op {
 public:
  MatMul() { traits_ = {.onnx = "MatMul"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 2);
    const Shape a = promoted(node, in[0], true), b = promoted(node, in[1], false);
    const int64_t k_a = a.back(), k_b = b[b.size() - 2];
    if (k_a >= 0 && k_b >= 0 && k_a != k_b)
      shape_error(node, "inner dimensions differ: " + to_string(in[0]) + " times " + to_string(in[1]));
    return {result_shape(in[0], in[1], broadcast_shape(node, batch_of(a), batch_of(b)), a[a.size() - 2], b.back())};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Product p = plan(node, in[0]->shape(), in[1]->shape());
    out[0]->resize(p.out);
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    float* y = out[0]->data<float>();
    if (p.b_is_matrix) {
      gemm_f32(Transpose::No, Transpose::No, p.batch.numel() * p.m, p.n, p.k, 1.0f, a, p.k, b, p.n, 0.0f, y, p.n);
      return;
    }
    for_each_broadcast(p.batch, 0, p.batch.numel(), [&](int64_t i, int64_t ia, int64_t ib) {
      gemm_f32(Transpose::No, Transpose::No, p.m, p.n, p.k, 1.0f, a + ia * p.m * p.k, p.k, b + ib * p.k * p.n, p.n, 0.0f,
               y + i * p.m * p.n, p.n);
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Product p = plan(node, in[0]->shape(), in[1]->shape());
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    Tensor* da = in_grad[0];
    Tensor* db = in_grad.size() > 1 ? in_grad[1] : nullptr;
    if (da) {
      da->resize(in[0]->shape());
      da->zero();
    }
    if (db) {
      db->resize(in[1]->shape());
      db->zero();
    }
    if (p.b_is_matrix) {
      const int64_t rows = p.batch.numel() * p.m;
      if (da) gemm_f32(Transpose::No, Transpose::Yes, rows, p.k, p.n, 1.0f, dy, p.n, b, p.n, 0.0f, da->data<float>(), p.k);
      if (db) gemm_f32(Transpose::Yes, Transpose::No, p.k, p.n, rows, 1.0f, a, p.k, dy, p.n, 0.0f, db->data<float>(), p.n);
      return;
    }
    // Batch by batch, adding into the gradient of the input batch each output batch read.
    for_each_broadcast(p.batch, 0, p.batch.numel(), [&](int64_t i, int64_t ia, int64_t ib) {
      const float* dyi = dy + i * p.m * p.n;
      if (da)
        gemm_f32(Transpose::No, Transpose::Yes, p.m, p.k, p.n, 1.0f, dyi, p.n, b + ib * p.k * p.n, p.n, 1.0f,
                 da->data<float>() + ia * p.m * p.k, p.k);
      if (db)
        gemm_f32(Transpose::Yes, Transpose::No, p.k, p.n, p.m, 1.0f, a + ia * p.m * p.k, p.k, dyi, p.n, 1.0f,
                 db->data<float>() + ib * p.k * p.n, p.n);
    });
  }
};

}  // namespace

void register_matmul(const Registrar& add) { add("MatMul", std::make_unique<MatMul>()); }

}  // namespace lowbit::ops
