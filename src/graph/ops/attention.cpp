// Attention: multi-head scaled dot-product attention on packed heads, the fused form of what
// exporters write as Reshape/Transpose, MatMul(Q, K^T), Div or Mul by a scale, Add(mask),
// Softmax, MatMul(., V), Transpose/Reshape (the importer forms it, onnx/importer.cpp).
//   inputs:  q [B, Sq, H*D], k [B, Sk, H*D], v [B, Sk, H*Dv], optional mask (f32, additive,
//            broadcasting numpy-style to [B, H, Sq, Sk]: e.g. [B, 1, 1, Sk] for padding)
//   attributes: num_heads H (>= 1), scale (default 1 / sqrt(D))
//   output:  y [B, Sq, H*Dv] with, for each batch b and head h (columns h*D.. of q and k, h*Dv.. of v, y):
//            y_bh = softmax(scale * q_bh k_bh^T + mask_bh) v_bh     (softmax along Sk)
// Heads are read and written in place through row strides: no transposed copies. Work is split
// over (batch, head, block of 64 queries); each task runs the GEMM kernels on one thread and the
// softmax kernel (kernels/activation.h), so the result does not depend on the thread count.
// The backward pass recomputes the probabilities block by block (nothing of size Sq x Sk is kept
// between passes) and gives the gradients of q, k and v; the mask carries none.
#include <cmath>
#include <string>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "kernels/activation.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

constexpr int64_t kQueryBlock = 64;

struct Geometry {
  int64_t batch = 0, sq = 0, sk = 0, heads = 0, d = 0, dv = 0;
  float scale = 1.0f;
  // The mask's element strides along [B, H, Sq, Sk] (0 where it broadcasts); no mask: has_mask false.
  bool has_mask = false;
  int64_t mask_stride[4] = {0, 0, 0, 0};
  int64_t ldq() const { return heads * d; }
  int64_t ldv() const { return heads * dv; }
};

int64_t heads_of(const Node& node) {
  const int64_t h = node.attr_int("num_heads", 0);
  if (h < 1) shape_error(node, "attribute 'num_heads' must be >= 1, got " + std::to_string(h));
  return h;
}

// Shape checks shared by shape inference (sizes may be -1: known at run time) and execution.
Shape output_shape(const Node& node, std::span<const Shape> in) {
  expect_input_count(node, in, 3, 4);
  const int64_t h = heads_of(node);
  for (int i = 0; i < 3; ++i)
    if (in[i].size() != 3) shape_error(node, std::string("input ") + "qkv"[i] + " must be [batch, sequence, heads * width], got " + to_string(in[i]));
  auto same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
  if (!same(in[0][0], in[1][0]) || !same(in[0][0], in[2][0]) || !same(in[1][1], in[2][1]) || !same(in[0][2], in[1][2]))
    shape_error(node, "q " + to_string(in[0]) + ", k " + to_string(in[1]) + " and v " + to_string(in[2]) +
                          " must share the batch, k and v the sequence, q and k the width");
  for (int i : {0, 2})
    if (in[i][2] >= 0 && in[i][2] % h != 0)
      shape_error(node, std::string(i == 0 ? "q" : "v") + "'s last dimension " + std::to_string(in[i][2]) +
                            " is not a multiple of num_heads " + std::to_string(h));
  if (in.size() > 3 && in[3].size() > 4) shape_error(node, "the mask must have at most 4 dimensions, got " + to_string(in[3]));
  return {in[0][0] >= 0 ? in[0][0] : in[1][0], in[0][1], in[2][2]};
}

Geometry geometry(const Node& node, std::span<const Tensor* const> in) {
  std::vector<Shape> shapes;
  for (const Tensor* t : in) shapes.push_back(t->shape());
  output_shape(node, shapes);
  Geometry g;
  g.heads = heads_of(node);
  g.batch = shapes[0][0];
  g.sq = shapes[0][1];
  g.sk = shapes[1][1];
  g.d = shapes[0][2] / g.heads;
  g.dv = shapes[2][2] / g.heads;
  g.scale = node.attr_float("scale", g.d > 0 ? 1.0f / std::sqrt(static_cast<float>(g.d)) : 1.0f);
  if (in.size() > 3) {
    const Shape& m = shapes[3];
    const int64_t full[4] = {g.batch, g.heads, g.sq, g.sk};
    const size_t offset = 4 - m.size();
    int64_t stride = 1;
    for (size_t d = 4; d-- > 0;) {
      if (d < offset) continue;
      const int64_t size = m[d - offset];
      if (size != 1 && size != full[d])
        shape_error(node, "the mask " + to_string(m) + " does not broadcast to [batch, heads, queries, keys] = [" +
                              std::to_string(g.batch) + ", " + std::to_string(g.heads) + ", " + std::to_string(g.sq) + ", " +
                              std::to_string(g.sk) + "]");
      g.mask_stride[d] = size == 1 ? 0 : stride;
      stride *= size;
    }
    g.has_mask = true;
  }
  return g;
}

// Scores of queries [i0, i0 + rows) of head (b, h) -> probabilities in p [rows, Sk].
void probabilities(const Geometry& g, const float* q, const float* k, const float* mask, int64_t b, int64_t h, int64_t i0,
                   int64_t rows, float* p) {
  const float* qb = q + (b * g.sq + i0) * g.ldq() + h * g.d;
  const float* kb = k + b * g.sk * g.ldq() + h * g.d;
  gemm_f32(Transpose::No, Transpose::Yes, rows, g.sk, g.d, g.scale, qb, g.ldq(), kb, g.ldq(), 0.0f, p, g.sk);
  if (g.has_mask)
    for (int64_t r = 0; r < rows; ++r) {
      const float* m = mask + b * g.mask_stride[0] + h * g.mask_stride[1] + (i0 + r) * g.mask_stride[2];
      float* row = p + r * g.sk;
      const int64_t step = g.mask_stride[3];
      for (int64_t j = 0; j < g.sk; ++j) row[j] += m[j * step];
    }
  softmax_rows_f32(rows, g.sk, p, g.sk, p, g.sk);
}

class Attention final : public Op {
 public:
  Attention() { traits_ = {.onnx = ""}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override { return {output_shape(node, in)}; }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i] != DType::F32) shape_error(node, "input " + std::to_string(i) + " must be f32, got " + name_of(in[i]));
    return {DType::F32};
  }
  bool differentiable_input(int index) const override { return index < 3; }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Geometry g = geometry(node, in);
    out[0]->resize({g.batch, g.sq, g.ldv()});
    const float* q = in[0]->data<float>();
    const float* k = in[1]->data<float>();
    const float* v = in[2]->data<float>();
    const float* mask = g.has_mask ? in[3]->data<float>() : nullptr;
    float* y = out[0]->data<float>();
    const int64_t blocks = (g.sq + kQueryBlock - 1) / kQueryBlock, tasks = g.batch * g.heads * blocks;
    parallel_for(tasks, 1, [&](int64_t begin, int64_t end) {
      ScopedRunSettings one_thread({.threads = 1});
      std::vector<float> p(static_cast<size_t>(std::min(g.sq, kQueryBlock) * g.sk));
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / (g.heads * blocks), h = t / blocks % g.heads, i0 = t % blocks * kQueryBlock;
        const int64_t rows = std::min(kQueryBlock, g.sq - i0);
        probabilities(g, q, k, mask, b, h, i0, rows, p.data());
        gemm_f32(Transpose::No, Transpose::No, rows, g.dv, g.sk, 1.0f, p.data(), g.sk, v + b * g.sk * g.ldv() + h * g.dv, g.ldv(),
                 0.0f, y + (b * g.sq + i0) * g.ldv() + h * g.dv, g.ldv());
      }
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Geometry g = geometry(node, in);
    const float* q = in[0]->data<float>();
    const float* k = in[1]->data<float>();
    const float* v = in[2]->data<float>();
    const float* mask = g.has_mask ? in[3]->data<float>() : nullptr;
    const float* dy = out_grad[0]->data<float>();
    // Gradients not asked for go to scratch buffers (dq of every block feeds nothing else).
    float* grads[3];
    std::vector<float> scratch[3];
    for (int i = 0; i < 3; ++i) {
      if (in_grad[static_cast<size_t>(i)]) {
        in_grad[static_cast<size_t>(i)]->resize(in[static_cast<size_t>(i)]->shape());
        in_grad[static_cast<size_t>(i)]->zero();
        grads[i] = in_grad[static_cast<size_t>(i)]->data<float>();
      } else {
        scratch[i].assign(static_cast<size_t>(in[static_cast<size_t>(i)]->numel()), 0.0f);
        grads[i] = scratch[i].data();
      }
    }
    float *dq = grads[0], *dk = grads[1], *dv = grads[2];
    // One task per (batch, head): dk and dv of a head add up over its query blocks, in order.
    parallel_for(g.batch * g.heads, 1, [&](int64_t begin, int64_t end) {
      ScopedRunSettings one_thread({.threads = 1});
      const int64_t block = std::min(g.sq, kQueryBlock);
      std::vector<float> p(static_cast<size_t>(block * g.sk)), dp(p.size());
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / g.heads, h = t % g.heads;
        const float* kb = k + b * g.sk * g.ldq() + h * g.d;
        const float* vb = v + b * g.sk * g.ldv() + h * g.dv;
        float* dkb = dk + b * g.sk * g.ldq() + h * g.d;
        float* dvb = dv + b * g.sk * g.ldv() + h * g.dv;
        for (int64_t i0 = 0; i0 < g.sq; i0 += kQueryBlock) {
          const int64_t rows = std::min(kQueryBlock, g.sq - i0);
          probabilities(g, q, k, mask, b, h, i0, rows, p.data());
          const float* dyb = dy + (b * g.sq + i0) * g.ldv() + h * g.dv;
          // dv += p^T dy;  dp = dy v^T;  ds = p * (dp - <dp, p>) per row
          gemm_f32(Transpose::Yes, Transpose::No, g.sk, g.dv, rows, 1.0f, p.data(), g.sk, dyb, g.ldv(), 1.0f, dvb, g.ldv());
          gemm_f32(Transpose::No, Transpose::Yes, rows, g.sk, g.dv, 1.0f, dyb, g.ldv(), vb, g.ldv(), 0.0f, dp.data(), g.sk);
          for (int64_t r = 0; r < rows; ++r) {
            float* dpr = dp.data() + r * g.sk;
            const float* pr = p.data() + r * g.sk;
            float dot = 0.0f;
            for (int64_t j = 0; j < g.sk; ++j) dot += dpr[j] * pr[j];
            for (int64_t j = 0; j < g.sk; ++j) dpr[j] = pr[j] * (dpr[j] - dot);
          }
          // dq = scale ds k;  dk += scale ds^T q
          const float* qb = q + (b * g.sq + i0) * g.ldq() + h * g.d;
          gemm_f32(Transpose::No, Transpose::No, rows, g.d, g.sk, g.scale, dp.data(), g.sk, kb, g.ldq(), 0.0f,
                   dq + (b * g.sq + i0) * g.ldq() + h * g.d, g.ldq());
          gemm_f32(Transpose::Yes, Transpose::No, g.sk, g.d, rows, g.scale, dp.data(), g.sk, qb, g.ldq(), 1.0f, dkb, g.ldq());
        }
      }
    });
  }
};

}  // namespace

void register_attention(const Registrar& add) { add("Attention", std::make_unique<Attention>()); }

}  // namespace lowbit::ops
