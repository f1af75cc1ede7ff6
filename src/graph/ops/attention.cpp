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
//
// QAttention: its integer form, what static quantization makes of it (quant/quantize_model.cpp).
//   inputs: q, k, v as s8 codes with their scales and zero points, optional s8 output grid, optional
//           mask (graph/ops/integer_inputs.h, AttentionInputs); attributes as Attention's.
//   scores  = (q_scale k_scale scale) sum_d (q - q_zp)(k - k_zp) + mask   (exact int32 sums, then f32)
//   p       = softmax(scores), in f32, then codes on the fixed grid of [0, 1]: scale 1/255, zero
//             point -128 (kernels' quantize_s8: round half to even)
//   y       = (1/255 v_scale) sum_j (p - (-128))(v - v_zp), in f32, or requantized to the s8 grid of
//             y (a fixed-point multiplier, as QDense's output)
// Both products run on the integer GEMM kernels (kernels/qgemm.h) with k and v as the "weights",
// packed per (batch, head) (QWeights::assign_s8): their codes -128 are read as -127 (the kernels' narrow weight range;
// one step at the very bottom of the calibrated range). The integer sums are exact on every path;
// the f32 softmax between them is kernels/activation.h's, so outputs agree across ISA levels to
// that kernel's bound, and do not depend on the thread count.
#include <cmath>
#include <string>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/integer_layer.h"
#include "kernels/activation.h"
#include "kernels/qgemm.h"
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

// Shape checks shared by shape inference (sizes may be -1: known at run time) and execution, for
// Attention and QAttention: q, k, v and the optional mask (null: none).
Shape output_shape(const Node& node, const Shape& q, const Shape& k, const Shape& v, const Shape* mask) {
  const int64_t h = heads_of(node);
  const Shape* qkv[3] = {&q, &k, &v};
  for (int i = 0; i < 3; ++i)
    if (qkv[i]->size() != 3) shape_error(node, std::string("input ") + "qkv"[i] + " must be [batch, sequence, heads * width], got " + to_string(*qkv[i]));
  auto same = [](int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; };
  if (!same(q[0], k[0]) || !same(q[0], v[0]) || !same(k[1], v[1]) || !same(q[2], k[2]))
    shape_error(node, "q " + to_string(q) + ", k " + to_string(k) + " and v " + to_string(v) +
                          " must share the batch, k and v the sequence, q and k the width");
  for (const Shape* s : {&q, &v})
    if ((*s)[2] >= 0 && (*s)[2] % h != 0)
      shape_error(node, std::string(s == &q ? "q" : "v") + "'s last dimension " + std::to_string((*s)[2]) +
                            " is not a multiple of num_heads " + std::to_string(h));
  if (mask && mask->size() > 4) shape_error(node, "the mask must have at most 4 dimensions, got " + to_string(*mask));
  return {q[0] >= 0 ? q[0] : k[0], q[1], v[2]};
}

Geometry geometry(const Node& node, const Shape& q, const Shape& k, const Shape& v, const Shape* mask) {
  output_shape(node, q, k, v, mask);
  Geometry g;
  g.heads = heads_of(node);
  g.batch = q[0];
  g.sq = q[1];
  g.sk = k[1];
  g.d = q[2] / g.heads;
  g.dv = v[2] / g.heads;
  g.scale = node.attr_float("scale", g.d > 0 ? 1.0f / std::sqrt(static_cast<float>(g.d)) : 1.0f);
  if (mask) {
    const Shape& m = *mask;
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
Geometry geometry(const Node& node, std::span<const Tensor* const> in) {
  return geometry(node, in[0]->shape(), in[1]->shape(), in[2]->shape(), in.size() > 3 ? &in[3]->shape() : nullptr);
}

// The mask's values added to scores p [rows, Sk] of queries [i0, i0 + rows) of head (b, h).
void add_mask(const Geometry& g, const float* mask, int64_t b, int64_t h, int64_t i0, int64_t rows, float* p) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* m = mask + b * g.mask_stride[0] + h * g.mask_stride[1] + (i0 + r) * g.mask_stride[2];
    float* row = p + r * g.sk;
    const int64_t step = g.mask_stride[3];
    for (int64_t j = 0; j < g.sk; ++j) row[j] += m[j * step];
  }
}

// Scores of queries [i0, i0 + rows) of head (b, h) -> probabilities in p [rows, Sk].
void probabilities(const Geometry& g, const float* q, const float* k, const float* mask, int64_t b, int64_t h, int64_t i0,
                   int64_t rows, float* p) {
  const float* qb = q + (b * g.sq + i0) * g.ldq() + h * g.d;
  const float* kb = k + b * g.sk * g.ldq() + h * g.d;
  gemm_f32(Transpose::No, Transpose::Yes, rows, g.sk, g.d, g.scale, qb, g.ldq(), kb, g.ldq(), 0.0f, p, g.sk);
  if (g.has_mask) add_mask(g, mask, b, h, i0, rows, p);
  softmax_rows_f32(rows, g.sk, p, g.sk, p, g.sk);
}

class Attention final : public Op {
 public:
  Attention() { traits_ = {.onnx = "", .quantizable = OpTraits::Quantizable::Activations, .quantized_op = "QAttention"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 4);
    return {output_shape(node, in[0], in[1], in[2], in.size() > 3 ? &in[3] : nullptr)};
  }
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

constexpr float kProbabilityScale = 1.0f / 255.0f;
constexpr int32_t kProbabilityZeroPoint = -128;

class QAttention final : public InferenceOp {
 public:
  QAttention() { traits_ = {.float_op = "Attention"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, AttentionInputs::min_count, AttentionInputs::max_count);
    const AttentionInputs l = AttentionInputs::of(in.size());
    for (size_t i = AttentionInputs::q_scale; i <= AttentionInputs::v_zero_point + (l.s8_output() ? 2 : 0); ++i)
      if (!(in[i].empty() || in[i] == Shape{1})) shape_error(node, "input " + std::to_string(i) + " (a scale or zero point) must be one value, got " + to_string(in[i]));
    return {output_shape(node, in[0], in[1], in[2], l.has_mask() ? &in[l.mask] : nullptr)};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    const AttentionInputs l = AttentionInputs::of(in.size());
    for (size_t i : {AttentionInputs::q, AttentionInputs::k, AttentionInputs::v}) expect_dtype(node, in[i], DType::S8, "q, k and v");
    for (size_t i : {AttentionInputs::q_scale, AttentionInputs::k_scale, AttentionInputs::v_scale}) expect_dtype(node, in[i], DType::F32, "a scale");
    for (size_t i : {AttentionInputs::q_zero_point, AttentionInputs::k_zero_point, AttentionInputs::v_zero_point})
      expect_dtype(node, in[i], DType::S8, "a zero point");
    if (l.s8_output()) {
      expect_dtype(node, in[l.y_scale], DType::F32, "y_scale");
      expect_dtype(node, in[l.y_zero_point], DType::S8, "y_zero_point");
    }
    if (l.has_mask()) expect_dtype(node, in[l.mask], DType::F32, "the mask");
    return {l.s8_output() ? DType::S8 : DType::F32};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    using L = AttentionInputs;
    const L l = L::of(in.size());
    const Geometry g = geometry(node, in[L::q]->shape(), in[L::k]->shape(), in[L::v]->shape(), l.has_mask() ? &in[l.mask]->shape() : nullptr);
    const QuantParams pq = activation_params(node, *in[L::q_scale], *in[L::q_zero_point], "q's grid");
    const QuantParams pk = activation_params(node, *in[L::k_scale], *in[L::k_zero_point], "k's grid");
    const QuantParams pv = activation_params(node, *in[L::v_scale], *in[L::v_zero_point], "v's grid");
    const int32_t zq = pq.zero_point[0], zk = pk.zero_point[0], zv = pv.zero_point[0];
    const float score_scale = pq.scale[0] * pk.scale[0] * g.scale, value_scale = kProbabilityScale * pv.scale[0];
    FixedPointMultiplier requantize;
    int32_t zy = 0;
    if (l.s8_output()) {
      const QuantParams py = activation_params(node, *in[l.y_scale], *in[l.y_zero_point], "y's grid");
      requantize = FixedPointMultiplier::from(static_cast<double>(value_scale) / py.scale[0]);
      zy = py.zero_point[0];
    }
    const Shape y_shape = {g.batch, g.sq, g.ldv()};
    prepare_output(*out[0], l.s8_output() ? DType::S8 : DType::F32, y_shape);
    const int8_t* q = in[L::q]->data<int8_t>();
    const int8_t* k = in[L::k]->data<int8_t>();
    const int8_t* v = in[L::v]->data<int8_t>();
    const float* mask = l.has_mask() ? in[l.mask]->data<float>() : nullptr;
    const int64_t block = std::min(g.sq, kQueryBlock);
    // One task per (batch, head): its keys and values are packed once for all its query blocks.
    parallel_for(g.batch * g.heads, 1, [&](int64_t begin, int64_t end) {
      ScopedRunSettings one_thread({.threads = 1});
      std::vector<float> scores(static_cast<size_t>(block * g.sk));
      std::vector<int8_t> p(scores.size());
      std::vector<int32_t> row_sums(static_cast<size_t>(block)), key_offset(static_cast<size_t>(g.sk)), value_offset(static_cast<size_t>(g.dv));
      const std::vector<int32_t> key_zero(static_cast<size_t>(g.sk), zk), value_zero(static_cast<size_t>(g.dv), zv);
      const std::vector<float> key_scale(static_cast<size_t>(g.sk), score_scale), out_scale(static_cast<size_t>(g.dv), value_scale);
      const std::vector<FixedPointMultiplier> multiplier(static_cast<size_t>(g.dv), requantize);
      QWeights keys, values;  // one head's k [Sk, D] and v transposed [Dv, Sk], as GEMM weights
      for (int64_t t = begin; t < end; ++t) {
        const int64_t b = t / g.heads, h = t % g.heads;
        keys.assign_s8(k + b * g.sk * g.ldq() + h * g.d, g.ldq(), 1, g.sk, g.d);
        values.assign_s8(v + b * g.sk * g.ldv() + h * g.dv, 1, g.ldv(), g.dv, g.sk);
        // acc = sum (a - za)(w - zw) = raw - za sum(w) + K za zw - zw sum(a): the stage's column
        // offset holds the first two terms, its weight zero point and row sums the last.
        for (int64_t j = 0; j < g.sk; ++j) key_offset[j] = -zq * keys.row_sums()[j] + static_cast<int32_t>(g.d) * zq * zk;
        for (int64_t c = 0; c < g.dv; ++c)
          value_offset[c] = -kProbabilityZeroPoint * values.row_sums()[c] + static_cast<int32_t>(g.sk) * kProbabilityZeroPoint * zv;
        for (int64_t i0 = 0; i0 < g.sq; i0 += kQueryBlock) {
          const int64_t rows = std::min(kQueryBlock, g.sq - i0);
          const int8_t* qb = q + (b * g.sq + i0) * g.ldq() + h * g.d;
          QOutputStage s1;
          s1.column_offset = key_offset.data();
          if (zk != 0) {
            row_sums_s8(rows, g.d, qb, g.ldq(), row_sums.data());
            s1.weight_zero_point = key_zero.data();
            s1.row_offset = row_sums.data();
          }
          s1.column_scale = key_scale.data();
          qgemm_s8_f32(rows, qb, g.ldq(), keys, s1, scores.data(), g.sk);
          if (mask) add_mask(g, mask, b, h, i0, rows, scores.data());
          softmax_rows_f32(rows, g.sk, scores.data(), g.sk, scores.data(), g.sk);
          quantize_s8(rows * g.sk, scores.data(), kProbabilityScale, kProbabilityZeroPoint, p.data());
          QOutputStage s2;
          s2.column_offset = value_offset.data();
          if (zv != 0) {
            row_sums_s8(rows, g.sk, p.data(), g.sk, row_sums.data());
            s2.weight_zero_point = value_zero.data();
            s2.row_offset = row_sums.data();
          }
          const int64_t y_at = (b * g.sq + i0) * g.ldv() + h * g.dv;
          if (l.s8_output()) {
            s2.multiplier = multiplier.data();
            s2.output_zero_point = zy;
            qgemm_s8(rows, p.data(), g.sk, values, s2, out[0]->data<int8_t>() + y_at, g.ldv());
          } else {
            s2.column_scale = out_scale.data();
            qgemm_s8_f32(rows, p.data(), g.sk, values, s2, out[0]->data<float>() + y_at, g.ldv());
          }
        }
      }
    });
  }
};

}  // namespace

void register_attention(const Registrar& add) {
  add("Attention", std::make_unique<Attention>());
  add("QAttention", std::make_unique<QAttention>());
}

}  // namespace lowbit::ops
