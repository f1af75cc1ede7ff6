// Attention (fused multi-head scaled dot-product attention): against the formula in double and
// against the unfused ops it replaces (Reshape, Transpose, MatMul, Mul, Add, Softmax), on awkward
// shapes (sequences 1, 7, 65; head widths 16, 24, 64; masks of all ones and padded batches),
// gradient checks, thread-count independence and shape errors.
#include <cmath>
#include <cstring>

#include "graph/gradcheck.h"
#include "lowbit/runtime_config.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::random;
using testing::run1;

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

}  // namespace
}  // namespace lowbit
