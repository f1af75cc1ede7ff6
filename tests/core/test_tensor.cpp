#include "test_util.h"

namespace lowbit {
namespace {

TEST(Tensor, AllocatesAlignedZeroedStorage) {
  Tensor t(DType::F32, {3, 5});
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % Tensor::kAlignment, 0u);
  for (int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

TEST(Workspace, BuffersAreAlignedDisjointAndReusedAfterReset) {
  Workspace ws;
  EXPECT_EQ(ws.capacity(), 0u);
  float* a = ws.take<float>(10);
  int8_t* b = ws.take<int8_t>(3);
  double* c = ws.take<double>(0);  // an empty request still gets a distinct pointer
  for (const void* p : {static_cast<const void*>(a), static_cast<const void*>(b), static_cast<const void*>(c)})
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 64, 0u);
  // Disjoint, in whichever order the heap placed the blocks (here each request opens a new block).
  auto disjoint = [](const void* p, size_t p_bytes, const void* q, size_t q_bytes) {
    const auto *x = static_cast<const std::byte*>(p), *y = static_cast<const std::byte*>(q);
    return x + p_bytes <= y || y + q_bytes <= x;
  };
  EXPECT_TRUE(disjoint(a, 10 * sizeof(float), b, 3));
  EXPECT_TRUE(disjoint(b, 3, c, 1));
  EXPECT_TRUE(disjoint(a, 10 * sizeof(float), c, 1));
  // More than the block holds: a second block, and the first block's buffers stay valid.
  std::fill_n(a, 10, 1.5f);
  int32_t* big = ws.take<int32_t>(100000);
  big[99999] = 7;
  EXPECT_EQ(a[9], 1.5f);
  // After reset the blocks merge into one that meets the same need without a new allocation.
  ws.reset();
  const size_t held = ws.capacity();
  EXPECT_GE(held, 100000 * sizeof(int32_t) + 10 * sizeof(float));
  ws.take<float>(10);
  ws.take<int8_t>(3);
  ws.take<double>(0);
  ws.take<int32_t>(100000);
  EXPECT_EQ(ws.capacity(), held);  // no second block this time
  ws.reset();
  EXPECT_EQ(ws.capacity(), held);
}

TEST(Tensor, CopiesShareAndCloneCopies) {
  Tensor a = Tensor::from_vector({2}, std::vector<float>{1, 2});
  Tensor shared = a;
  Tensor copy = a.clone();
  a.data<float>()[0] = 7;
  EXPECT_EQ(shared.data<float>()[0], 7);
  EXPECT_EQ(copy.data<float>()[0], 1);
}

TEST(Tensor, PackedTypesRoundUpToBytes) {
  EXPECT_EQ(Tensor(DType::S4, {3}).nbytes(), 2u);
  EXPECT_EQ(Tensor(DType::U2, {5}).nbytes(), 2u);
  EXPECT_EQ(bits_of(DType::S2), 2);
}

TEST(Tensor, ReshapeChecksCountAndDtypeIsChecked) {
  Tensor t(DType::F32, {4, 6});
  t.reshape({2, 12});
  EXPECT_EQ(t.dim(-1), 12);
  EXPECT_LOWBIT_ERROR(t.reshape({5, 5}), "cannot reshape");
  EXPECT_LOWBIT_ERROR(t.data<int8_t>(), "accessed as s8");
  EXPECT_LOWBIT_ERROR(Tensor(DType::F32, {-2}), "negative dimension");
}

TEST(Tensor, ResizeKeepsBufferWhenLargeEnough) {
  Tensor t(DType::F32, {32, 10});
  const void* before = t.raw();
  t.resize({16, 10});
  EXPECT_EQ(t.raw(), before);
  t.resize({64, 10});
  EXPECT_EQ(t.numel(), 640);
}

TEST(DType, CodesAndNamesRoundTrip) {
  for (uint32_t code = 1; code <= 8; ++code) {
    DType d = dtype_from_code(code);
    EXPECT_EQ(dtype_from_name(name_of(d)), d);
  }
  EXPECT_LOWBIT_ERROR(dtype_from_code(99), "unknown dtype code 99");
}

TEST(Rng, IsDeterministicAndInRange) {
  Rng a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    float u = a.uniform();
    EXPECT_EQ(u, b.uniform());
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
  }
  EXPECT_NE(Rng(42).next_u64(), c.next_u64());
  Rng r(1);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(r.below(7), 7u);
}

TEST(Rng, NormalHasUnitMoments) {
  Rng r(3);
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    double x = r.normal();
    sum += x, sq += x * x;
  }
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sq / n, 1.0, 0.01);
}

TEST(Rng, ShuffleIsAPermutation) {
  std::vector<uint32_t> v(1000);
  for (uint32_t i = 0; i < v.size(); ++i) v[i] = i;
  Rng(5).shuffle(v);
  std::vector<uint32_t> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < v.size(); ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_NE(v[0] + v[1] * 1000, 1000u);  // not the identity at the start
}

TEST(RuntimeConfig, ThreadsAreValidated) {
  int before = num_threads();
  EXPECT_LOWBIT_ERROR(set_num_threads(0), "at least 1");
  set_num_threads(2);
  EXPECT_EQ(num_threads(), 2);
  set_num_threads(before);
}

TEST(RuntimeConfig, ParallelForCoversEveryIndexOnce) {
  set_num_threads(2);
  std::vector<int> hits(1001, 0);
  parallel_for(1001, 10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[i]++;
  });
  for (int h : hits) EXPECT_EQ(h, 1);
}

}  // namespace
}  // namespace lowbit
