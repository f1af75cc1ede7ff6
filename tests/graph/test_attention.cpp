// Attention (fused multi-head scaled dot-product attention): against the formula in double and
// against the unfused ops it replaces (Reshape, Transpose, MatMul, Mul, Add, Softmax), on awkward
// shapes (sequences 1, 7, 65; head widths 16, 24, 64; masks of all ones and padded batches),
// gradient checks, thread-count independence and shape errors. QAttention (its integer form):
// against its definition step by step (bit-exact under the reference kernels, within a code's
// contribution on the fast ones), against the float attention of the dequantized values, and
// thread-count independence.
#include <cmath>
#include <cstring>

#include "graph/gradcheck.h"
#include "kernels/activation.h"
#include "kernels/qgemm.h"
#include "lowbit/quant_params.h"
#include "lowbit/runtime_config.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::random;
using testing::infer;
using testing::isa_levels;
using testing::run1;
using testing::RuntimeSettingsTest;
using testing::scalar_f32;
using testing::scalar_s8;

Node attention(int64_t heads, bool mask, Attributes extra = {}) {
  Attributes a = {{"num_heads", heads}};
  for (auto& [k, v] : extra) a[k] = v;
  std::vector<std::string> in = {"q", "k", "v"};
  if (mask) in.push_back("mask");
  return Node{"attention", "Attention", in, {"y"}, a};
}

// The definition, in double: y[b, i, h*Dv + c] = sum_j softmax_j(scale q.k + mask) v[b, j, h*Dv + c].
std::vector<double> by_hand(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* mask, int64_t heads, double scale) {
  const int64_t batch = q.shape()[0], sq = q.shape()[1], sk = k.shape()[1], d = q.shape()[2] / heads, dv = v.shape()[2] / heads;
  std::vector<double> y(static_cast<size_t>(batch * sq * heads * dv));
  // The mask's value for (b, h, i, j) under numpy broadcasting to [B, H, Sq, Sk].
  auto mask_at = [&](int64_t b, int64_t h, int64_t i, int64_t j) -> double {
    if (!mask) return 0;
    const Shape& m = mask->shape();
    const int64_t idx[4] = {b, h, i, j};
    int64_t offset = 0, stride = 1;
    for (size_t dd = 4; dd-- > 4 - m.size();) {
      const int64_t size = m[dd - (4 - m.size())];
      offset += (size == 1 ? 0 : idx[dd]) * stride;
      stride *= size;
    }
    return mask->data<float>()[offset];
  };
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < sq; ++i) {
        std::vector<double> s(static_cast<size_t>(sk));
        double peak = -INFINITY;
        for (int64_t j = 0; j < sk; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c)
            dot += double(q.data<float>()[(b * sq + i) * heads * d + h * d + c]) * k.data<float>()[(b * sk + j) * heads * d + h * d + c];
          s[j] = scale * dot + mask_at(b, h, i, j);
          peak = std::max(peak, s[j]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - peak));
        for (int64_t c = 0; c < dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j < sk; ++j) acc += s[j] / sum * v.data<float>()[(b * sk + j) * heads * dv + h * dv + c];
          y[static_cast<size_t>((b * sq + i) * heads * dv + h * dv + c)] = acc;
        }
      }
  return y;
}

// An additive padding mask [B, 1, 1, Sk]: batch b attends to its first Sk - b keys (at least one).
Tensor padding_mask(int64_t batch, int64_t sk) {
  Tensor m(DType::F32, {batch, 1, 1, sk});
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < sk; ++j) m.data<float>()[b * sk + j] = j < std::max<int64_t>(1, sk - b) ? 0.0f : -10000.0f;
  return m;
}

TEST(Attention, MatchesTheFormulaOnAwkwardShapes) {
  for (int64_t width : {16, 24, 64})
    for (int64_t seq : {1, 7, 65})
      for (int mask_kind = 0; mask_kind < 4; ++mask_kind) {
        const int64_t batch = 3, heads = width == 64 ? 2 : 3, sk = mask_kind == 3 ? seq + 4 : seq;  // 3: cross-attention
        const Tensor q = random({batch, seq, heads * width}, 1, -2, 2), k = random({batch, sk, heads * width}, 2, -2, 2),
                     v = random({batch, sk, heads * width}, 3);
        Tensor mask;
        if (mask_kind == 1) mask = Tensor(DType::F32, {batch, 1, 1, sk}), mask.zero();  // attention_mask of all ones
        if (mask_kind == 2) mask = padding_mask(batch, sk);
        if (mask_kind == 3) mask = random({heads, seq, sk}, 4, -3, 1);  // broadcast over the batch only
        std::vector<Tensor> in = {q, k, v};
        if (mask_kind) in.push_back(mask);
        const Tensor y = run1(attention(heads, mask_kind != 0), in);
        const std::vector<double> want = by_hand(q, k, v, mask_kind ? &mask : nullptr, heads, 1.0 / std::sqrt(double(width)));
        ASSERT_EQ(y.shape(), (Shape{batch, seq, heads * width}));
        for (int64_t i = 0; i < y.numel(); ++i)
          ASSERT_NEAR(y.data<float>()[i], want[static_cast<size_t>(i)], 2e-6 * (1 + std::fabs(want[static_cast<size_t>(i)])))
              << "width " << width << " seq " << seq << " mask " << mask_kind << " at " << i;
      }
}

// The ops the importer fuses, run one by one: Reshape [B, S, H, D], Transpose, MatMul, Mul(scale),
// Add(mask), Softmax, MatMul, Transpose, Reshape back.
Tensor unfused(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask, int64_t heads, float scale) {
  auto split = [&](const Tensor& x, Shape perm) {
    const Tensor r = run1(Node{"r", "Reshape", {"x"}, {"y"}, {{"dims", Shape{0, 0, heads, -1}}}}, {x});
    return run1(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", perm}}}, {r});
  };
  const Tensor qh = split(q, {0, 2, 1, 3}), kt = split(k, {0, 2, 3, 1}), vh = split(v, {0, 2, 1, 3});
  Tensor s = run1(Node{"mm", "MatMul", {"a", "b"}, {"y"}}, {qh, kt});
  Tensor c(DType::F32, {});
  c.data<float>()[0] = scale;
  s = run1(Node{"mul", "Mul", {"a", "b"}, {"y"}}, {s, c});
  s = run1(Node{"add", "Add", {"a", "b"}, {"y"}}, {s, mask});
  const Tensor p = run1(Node{"sm", "Softmax", {"x"}, {"y"}, {{"axis", -1}}}, {s});
  const Tensor o = run1(Node{"mm2", "MatMul", {"a", "b"}, {"y"}}, {p, vh});
  const Tensor ot = run1(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", Shape{0, 2, 1, 3}}}}, {o});
  return run1(Node{"r", "Reshape", {"x"}, {"y"}, {{"dims", Shape{0, 0, -1}}}}, {ot});
}

TEST(Attention, MatchesTheUnfusedOps) {
  for (int64_t seq : {1, 7, 65, 130}) {  // 130: three blocks of queries
    const int64_t batch = 2, heads = 4, d = 16;
    const Tensor q = random({batch, seq, heads * d}, 5, -2, 2), k = random({batch, seq, heads * d}, 6, -2, 2),
                 v = random({batch, seq, heads * d}, 7), mask = padding_mask(batch, seq);
    const Tensor fused = run1(attention(heads, true, {{"scale", 0.3}}), {q, k, v, mask});
    const Tensor plain = unfused(q, k, v, mask, heads, 0.3f);
    ASSERT_EQ(fused.shape(), plain.shape());
    for (int64_t i = 0; i < fused.numel(); ++i)
      ASSERT_NEAR(fused.data<float>()[i], plain.data<float>()[i], 1e-6 * (1 + std::fabs(plain.data<float>()[i]))) << seq << " at " << i;
  }
}

TEST(GradCheck, AttentionQueriesKeysAndValues) {
  check_gradients(attention(2, true), {random({2, 3, 6}, 11), random({2, 4, 6}, 12), random({2, 4, 4}, 13), padding_mask(2, 4)});
  check_gradients(attention(1, false, {{"scale", 0.7}}), {random({1, 5, 3}, 14), random({1, 5, 3}, 15), random({1, 5, 2}, 16)});
  // More queries than a block: the key and value gradients add up over blocks.
  check_gradients(attention(1, false), {random({1, 70, 2}, 17), random({1, 3, 2}, 18), random({1, 3, 1}, 19)});
}

TEST(Attention, ResultDoesNotDependOnTheThreadCount) {
  const Tensor q = random({3, 65, 96}, 21), k = random({3, 65, 96}, 22), v = random({3, 65, 96}, 23), mask = padding_mask(3, 65);
  Tensor one, two;
  {
    ScopedRunSettings s({.threads = 1});
    one = run1(attention(4, true), {q, k, v, mask});
  }
  {
    ScopedRunSettings s({.threads = 2});
    two = run1(attention(4, true), {q, k, v, mask});
  }
  EXPECT_EQ(std::memcmp(one.data<float>(), two.data<float>(), static_cast<size_t>(one.numel()) * sizeof(float)), 0);
}

TEST(Attention, RefusesShapesThatDoNotFit) {
  const Tensor q = random({2, 5, 12}, 1), k = random({2, 6, 12}, 2), v = random({2, 6, 8}, 3);
  EXPECT_THROW(run1(attention(5, false), {q, k, v}), Error);                       // 12 is not a multiple of 5
  EXPECT_THROW(run1(attention(0, false), {q, k, v}), Error);                       // no heads
  EXPECT_THROW(run1(attention(2, false), {q, random({2, 7, 12}, 4), v}), Error);  // k and v differ in length
  EXPECT_THROW(run1(attention(2, true), {q, k, v, random({2, 1, 5, 5}, 5)}), Error);  // mask keys 5 != 6
  const Tensor y = run1(attention(2, false), {q, k, v});
  EXPECT_EQ(y.shape(), (Shape{2, 5, 8}));
}

// ---- QAttention ----------------------------------------------------------------------------

struct Grid {
  float scale;
  int zero;
};

Tensor codes_of(const Tensor& x, Grid g) {
  Tensor q(DType::S8, x.shape());
  quantize_s8(x.numel(), x.data<float>(), g.scale, g.zero, q.data<int8_t>());
  return q;
}

Node q_attention(int64_t heads, bool s8_output, bool mask, float scale = 0) {
  std::vector<std::string> in = {"q", "k", "v", "qs", "qz", "ks", "kz", "vs", "vz"};
  if (s8_output) in.push_back("ys"), in.push_back("yz");
  if (mask) in.push_back("mask");
  Attributes a = {{"num_heads", heads}};
  if (scale > 0) a["scale"] = double(scale);
  return Node{"qattention", "QAttention", in, {"y"}, a};
}

std::vector<Tensor> q_inputs(const Tensor& q, const Tensor& k, const Tensor& v, Grid gq, Grid gk, Grid gv, const Grid* gy,
                             const Tensor* mask) {
  std::vector<Tensor> in = {codes_of(q, gq), codes_of(k, gk), codes_of(v, gv), scalar_f32(gq.scale), scalar_s8(gq.zero),
                            scalar_f32(gk.scale), scalar_s8(gk.zero), scalar_f32(gv.scale), scalar_s8(gv.zero)};
  if (gy) in.push_back(scalar_f32(gy->scale)), in.push_back(scalar_s8(gy->zero));
  if (mask) in.push_back(*mask);
  return in;
}

// QAttention's definition in plain loops, with the same float operations as the op: exact int32
// sums, (float(acc) * scale), + mask, the softmax kernel, codes of p on 1/255 (zero point -128),
// exact sums against v, then f32 or requantized. k and v codes -128 count as -127.
Tensor q_by_hand(const std::vector<Tensor>& in, int64_t heads, float attention_scale, bool s8_output, bool mask) {
  const Tensor &q = in[0], &k = in[1], &v = in[2];
  const int64_t batch = q.shape()[0], sq = q.shape()[1], sk = k.shape()[1], d = q.shape()[2] / heads, dv = v.shape()[2] / heads;
  const float sq_ = in[3].data<float>()[0], sk_ = in[5].data<float>()[0], sv = in[7].data<float>()[0];
  const int zq = in[4].data<int8_t>()[0], zk = in[6].data<int8_t>()[0], zv = in[8].data<int8_t>()[0];
  const float score_scale = sq_ * sk_ * attention_scale, value_scale = (1.0f / 255.0f) * sv;
  const Tensor* m = mask ? &in.back() : nullptr;
  Tensor y(s8_output ? DType::S8 : DType::F32, {batch, sq, heads * dv});
  FixedPointMultiplier mult;
  int zy = 0;
  if (s8_output) mult = FixedPointMultiplier::from(double(value_scale) / in[9].data<float>()[0]), zy = in[10].data<int8_t>()[0];
  auto narrow = [](int8_t c) { return c == -128 ? -127 : int(c); };
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < sq; ++i) {
        std::vector<float> s(static_cast<size_t>(sk));
        for (int64_t j = 0; j < sk; ++j) {
          int32_t acc = 0;
          for (int64_t c = 0; c < d; ++c)
            acc += (q.data<int8_t>()[(b * sq + i) * heads * d + h * d + c] - zq) * (narrow(k.data<int8_t>()[(b * sk + j) * heads * d + h * d + c]) - zk);
          s[j] = static_cast<float>(acc) * score_scale;
          if (m) {  // [B, 1, 1, Sk]
            s[j] += m->data<float>()[b * sk + j];
          }
        }
        softmax_rows_f32(1, sk, s.data(), sk, s.data(), sk);
        std::vector<int8_t> p(static_cast<size_t>(sk));
        quantize_s8(sk, s.data(), 1.0f / 255.0f, -128, p.data());
        for (int64_t c = 0; c < dv; ++c) {
          int32_t acc = 0;
          for (int64_t j = 0; j < sk; ++j) acc += (p[j] + 128) * (narrow(v.data<int8_t>()[(b * sk + j) * heads * dv + h * dv + c]) - zv);
          const int64_t at = (b * sq + i) * heads * dv + h * dv + c;
          if (s8_output) y.data<int8_t>()[at] = static_cast<int8_t>(std::clamp(zy + mult.apply(acc), -128, 127));
          else y.data<float>()[at] = static_cast<float>(acc) * value_scale;
        }
      }
  return y;
}

class QAttentionTest : public RuntimeSettingsTest {};

TEST_F(QAttentionTest, MatchesItsDefinitionOnAwkwardShapes) {
  for (int64_t width : {16, 24, 64})
    for (int64_t seq : {1, 7, 65})
      for (int variant = 0; variant < 4; ++variant) {  // mask: none, all ones, padded; zero points 0 (variant 3) or not
        const int64_t batch = 2, heads = width == 64 ? 2 : 3;
        const bool mask = variant == 1 || variant == 2, s8_output = seq != 7;
        const Tensor q = random({batch, seq, heads * width}, 31, -2, 2), k = random({batch, seq, heads * width}, 32, -2, 2),
                     v = random({batch, seq, heads * width}, 33);
        Tensor m;
        if (variant == 1) m = Tensor(DType::F32, {batch, 1, 1, seq}), m.zero();
        if (variant == 2) m = padding_mask(batch, seq);
        const bool zero = variant == 3;
        const Grid gq{2.2f / 255, zero ? 0 : -3}, gk{2.1f / 255, zero ? 0 : 5}, gv{1.9f / 255, zero ? 0 : -7}, gy{1.2f / 255, zero ? 0 : 2};
        const std::vector<Tensor> in = q_inputs(q, k, v, gq, gk, gv, s8_output ? &gy : nullptr, mask ? &m : nullptr);
        const float scale = 1.0f / std::sqrt(static_cast<float>(width));
        for (Isa isa : isa_levels()) {
          set_max_isa(isa);
          const Tensor want = q_by_hand(in, heads, scale, s8_output, mask);
          const Tensor y = run1(q_attention(heads, s8_output, mask), in);
          ASSERT_EQ(y.shape(), want.shape());
          ASSERT_EQ(y.dtype(), s8_output ? DType::S8 : DType::F32);
          // The by-hand loops run the same kernels for the softmax and the codes of p: the same
          // floats on every path, so the result is identical.
          if (s8_output) {
            ASSERT_EQ(std::memcmp(y.raw(), want.raw(), static_cast<size_t>(y.numel())), 0) << name_of(isa) << " width " << width << " seq " << seq << " variant " << variant;
          } else {
            for (int64_t i = 0; i < y.numel(); ++i)
              ASSERT_EQ(y.data<float>()[i], want.data<float>()[i]) << name_of(isa) << " width " << width << " seq " << seq << " variant " << variant << " at " << i;
          }
        }
      }
}

TEST_F(QAttentionTest, IsTheFloatAttentionOfItsGridsWithinTheirSteps) {
  // QAttention's f32 output against Attention run on the dequantized q, k, v. The grids are a
  // little wider than the values (no code -128: k and v are exactly their codes), so the only
  // difference is the probabilities' grid: each is within 1/510 of its float value, and so
  // |y - y_float| <= sum_j |v_j| / 510 per output (plus f32 rounding).
  const int64_t batch = 2, seq = 33, heads = 4, width = 16;
  const Tensor q = random({batch, seq, heads * width}, 41, -4, 4), k = random({batch, seq, heads * width}, 42, -4, 4),
               v = random({batch, seq, heads * width}, 43), mask = padding_mask(batch, seq);
  const Grid gq{8.1f / 255, 0}, gk{8.1f / 255, 0}, gv{2.05f / 255, 0};
  const std::vector<Tensor> in = q_inputs(q, k, v, gq, gk, gv, nullptr, &mask);
  const Tensor y = run1(q_attention(heads, false, true), in);
  auto dequantized = [](const Tensor& c, Grid g) {
    Tensor x(DType::F32, c.shape());
    dequantize_s8(c.numel(), c.data<int8_t>(), g.scale, g.zero, x.data<float>());
    return x;
  };
  const Tensor vf = dequantized(in[2], gv);
  const Tensor f = run1(attention(heads, true), {dequantized(in[0], gq), dequantized(in[1], gk), vf, mask});
  double err = 0, norm = 0, noise = 0;  // noise: the expected squared error of rounding each p to 1/255, (1/255)^2/12 sum_j v_j^2
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < seq; ++i)
      for (int64_t c = 0; c < heads * width; ++c) {
        const int64_t at = (b * seq + i) * heads * width + c;
        double bound = 1e-5;
        for (int64_t j = 0; j < seq; ++j) {
          const double vj = vf.data<float>()[(b * seq + j) * heads * width + c];
          bound += std::fabs(vj) / 510.0;
          noise += vj * vj / (255.0 * 255.0 * 12.0);
        }
        const double e = y.data<float>()[at] - f.data<float>()[at];
        ASSERT_LE(std::fabs(e), bound) << "at " << at;
        err += e * e, norm += double(f.data<float>()[at]) * f.data<float>()[at];
      }
  std::printf("[   INFO   ] QAttention against the float attention of its grids: relative RMS error %.4f, %.2f of the 1/255 "
              "rounding noise\n", std::sqrt(err / norm), std::sqrt(err / noise));
  EXPECT_LT(std::sqrt(err / norm), 0.02);  // 34 dB
  EXPECT_GT(std::sqrt(err / norm), 0.0);   // (it is quantized)
  // Below uniform rounding noise on the 1/255 grid: most probabilities of a sharp softmax lie under
  // half a step and round to 0 with an error of their own size (0.52 of it here; a 1/127 grid
  // gives 0.99).
  EXPECT_LT(std::sqrt(err / noise), 0.75);
}

TEST_F(QAttentionTest, ResultDoesNotDependOnTheThreadCount) {
  const Tensor q = random({3, 65, 96}, 51), k = random({3, 65, 96}, 52), v = random({3, 65, 96}, 53), mask = padding_mask(3, 65);
  const Grid g{2.0f / 255, 1}, gy{0.5f / 255, -1};
  const std::vector<Tensor> in = q_inputs(q, k, v, g, g, g, &gy, &mask);
  set_num_threads(1);
  const Tensor one = run1(q_attention(4, true, true), in);
  set_num_threads(2);
  const Tensor two = run1(q_attention(4, true, true), in);
  EXPECT_EQ(std::memcmp(one.raw(), two.raw(), static_cast<size_t>(one.numel())), 0);
}

TEST_F(QAttentionTest, RefusesInputsThatDoNotFit) {
  const Tensor q = random({1, 5, 8}, 1), k = random({1, 5, 8}, 2), v = random({1, 5, 8}, 3);
  const Grid g{1.0f / 127, 0};
  EXPECT_EQ(infer(q_attention(2, false, false), {{1, 5, 8}, {1, 5, 8}, {1, 5, 8}, {}, {}, {}, {}, {}, {}})[0], (Shape{1, 5, 8}));
  const std::vector<DType> f32_q = {DType::F32, DType::S8, DType::S8, DType::F32, DType::S8, DType::F32, DType::S8, DType::F32, DType::S8};
  EXPECT_THROW(find_op("QAttention").infer_dtypes(q_attention(2, false, false), f32_q), Error);  // q f32 instead of codes
  std::vector<Tensor> in = q_inputs(q, k, v, g, g, g, nullptr, nullptr);
  in[3] = scalar_f32(-1.0f);  // a negative scale
  EXPECT_THROW(run1(q_attention(2, false, false), in), Error);
  EXPECT_THROW(infer(q_attention(2, false, false), {{1, 5, 8}, {1, 5, 8}, {1, 5, 8}, {2}, {}, {}, {}, {}, {}}), Error);  // scale of 2 values
  EXPECT_THROW(infer(Node{"a", "QAttention", {"q", "k", "v"}, {"y"}, {{"num_heads", int64_t{2}}}}, {{1, 5, 8}, {1, 5, 8}, {1, 5, 8}}), Error);
}

}  // namespace
}  // namespace lowbit
