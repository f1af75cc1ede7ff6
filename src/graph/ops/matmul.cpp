// MatMul: the matrix product of ONNX MatMul / numpy.matmul. a [..., M, K] times b [..., K, N] gives
// [..., M, N]; the leading (batch) dimensions broadcast (broadcast.h); a 1-D a is a row [1, K] and
// a 1-D b a column [K, 1], their unit dimension removed from the result. Attention's Q K^T and
// scores x V, and x [..., K] times a weight matrix [K, N] as exporters write Linear layers.
// When b has no batch dimensions, every batch of a goes through one GEMM (a viewed as rows);
// otherwise one GEMM per output batch. Gradients: da = dy b^T and db = a^T dy, added up over the
// batches an input was broadcast along, in batch order (independent of the thread count).
// MatMulInteger: the same product of 8-bit codes minus their zero points, in int32 (plain loops).
#include <algorithm>

#include "graph/ops/broadcast.h"
#include "graph/ops/builtin_ops.h"
#include "graph/ops/integer_layer.h"

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

// The shape of a times b (1-D inputs promoted, batch dimensions broadcast), the inner dimensions
// checked where both are known.
Shape product_shape(const Node& node, const Shape& in_a, const Shape& in_b) {
  const Shape a = promoted(node, in_a, true), b = promoted(node, in_b, false);
  const int64_t k_a = a.back(), k_b = b[b.size() - 2];
  if (k_a >= 0 && k_b >= 0 && k_a != k_b)
    shape_error(node, "inner dimensions differ: " + to_string(in_a) + " times " + to_string(in_b));
  return result_shape(in_a, in_b, broadcast_shape(node, batch_of(a), batch_of(b)), a[a.size() - 2], b.back());
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
    return {product_shape(node, in[0], in[1])};
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

// MatMulInteger: a (u8|s8) [..., M, K] times b (u8|s8) [..., K, N] as MatMul's shapes, with
// optional zero points (a_zero_point: one value or one per row [M]; b_zero_point: one value or
// one per column [N], each of its input's dtype) -> s32: sum_k (a - za[m])(b[k, n] - zb[n]),
// wrapping as int32. Plain loops (ONNX's definition; the importer fuses the dynamic-quantization
// pattern into DynamicQDense, which runs on the integer GEMM).
class MatMulInteger final : public Op {
 public:
  MatMulInteger() { traits_ = {.onnx = "MatMulInteger"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 4);
    const Shape out = product_shape(node, in[0], in[1]);
    const Shape a = promoted(node, in[0], true), b = promoted(node, in[1], false);
    for (size_t i = 2; i < in.size(); ++i) {
      const int64_t per = i == 2 ? a[a.size() - 2] : b.back();
      if (!(in[i].empty() || in[i] == Shape{1} || (in[i].size() == 1 && (in[i][0] == per || per < 0))))
        shape_error(node, std::string(i == 2 ? "a_zero_point must be one value or one per row of a"
                                             : "b_zero_point must be one value or one per column of b") +
                              ", got " + to_string(in[i]));
    }
    return {out};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    expect_codes(node, in[0], "a");
    expect_codes(node, in[1], "b");
    if (in.size() > 2 && in[2] != in[0]) shape_error(node, std::string("a_zero_point must be ") + name_of(in[0]) + ", got " + name_of(in[2]));
    if (in.size() > 3 && in[3] != in[1]) shape_error(node, std::string("b_zero_point must be ") + name_of(in[1]) + ", got " + name_of(in[3]));
    return {DType::S32};
  }
  bool differentiable_input(int) const override { return false; }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Product p = plan(node, in[0]->shape(), in[1]->shape());
    prepare_output(*out[0], DType::S32, p.out);
    // The codes and zero points as int32 (lowbit::cast); an absent zero point is one 0.
    const Tensor a32 = cast(*in[0], DType::S32), b32 = cast(*in[1], DType::S32);
    const Tensor za = in.size() > 2 ? cast(*in[2], DType::S32) : Tensor(DType::S32, {});
    const Tensor zb = in.size() > 3 ? cast(*in[3], DType::S32) : Tensor(DType::S32, {});
    if ((za.numel() != 1 && za.numel() != p.m) || (zb.numel() != 1 && zb.numel() != p.n))
      shape_error(node, "zero points must have one value, or one per row of a / column of b");
    const int32_t* a = a32.data<int32_t>();
    const int32_t* b = b32.data<int32_t>();
    int32_t* y = out[0]->data<int32_t>();
    for_each_broadcast(p.batch, 0, p.batch.numel(), [&](int64_t i, int64_t ia, int64_t ib) {
      for (int64_t r = 0; r < p.m; ++r) {
        const int32_t zr = za.data<int32_t>()[za.numel() == 1 ? 0 : r];
        for (int64_t c = 0; c < p.n; ++c) {
          const int32_t zc = zb.data<int32_t>()[zb.numel() == 1 ? 0 : c];
          uint32_t acc = 0;  // wraps like int32
          for (int64_t k = 0; k < p.k; ++k)
            acc += static_cast<uint32_t>((a[(ia * p.m + r) * p.k + k] - zr) * (b[(ib * p.k + k) * p.n + c] - zc));
          y[(i * p.m + r) * p.n + c] = static_cast<int32_t>(acc);
        }
      }
    });
  }
  void backward(const Node& node, std::span<const Tensor* const>, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<Tensor* const>) const override {
    shape_error(node, "integer products carry no gradient");
  }
};

}  // namespace

void register_matmul(const Registrar& add) {
  add("MatMul", std::make_unique<MatMul>());
  add("MatMulInteger", std::make_unique<MatMulInteger>());
}

}  // namespace lowbit::ops
