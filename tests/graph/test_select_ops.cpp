// Equal, Where and Expand (the attention-mask ops): values with broadcasting, NaN and integer
// inputs, gradients of Where and Expand against finite differences, shape and dtype errors.
#include <cmath>

#include "graph/gradcheck.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::random;

Tensor run(const Node& node, std::vector<Tensor> inputs) { return testing::run1(node, std::move(inputs)); }

Tensor bools(Shape shape, std::vector<uint8_t> v) {
  Tensor t(DType::Bool, std::move(shape));
  std::copy(v.begin(), v.end(), static_cast<uint8_t*>(t.raw()));
  return t;
}

TEST(Equal, BroadcastsAndComparesLikeOnnx) {
  Tensor a = Tensor::from_vector({2, 3}, std::vector<float>{1, 2, NAN, 4, 5, 6});
  Tensor b = Tensor::from_vector({3}, std::vector<float>{1, 5, NAN});
  const Tensor y = run(Node{"e", "Equal", {"a", "b"}, {"y"}}, {a, b});
  ASSERT_EQ(y.dtype(), DType::Bool);
  ASSERT_EQ(y.shape(), (Shape{2, 3}));
  const uint8_t* v = static_cast<const uint8_t*>(y.raw());
  EXPECT_EQ(std::vector<uint8_t>(v, v + 6), (std::vector<uint8_t>{1, 0, 0, 0, 1, 0}));  // NaN equals nothing
  Tensor mask(DType::S64, {4});
  for (int i = 0; i < 4; ++i) mask.data<int64_t>()[i] = i % 2;
  Tensor zero(DType::S64, {});
  zero.data<int64_t>()[0] = 0;
  const Tensor m = run(Node{"e", "Equal", {"a", "b"}, {"y"}}, {mask, zero});
  const uint8_t* mv = static_cast<const uint8_t*>(m.raw());
  EXPECT_EQ(std::vector<uint8_t>(mv, mv + 4), (std::vector<uint8_t>{1, 0, 1, 0}));
  EXPECT_LOWBIT_ERROR(find_op("Equal").infer_dtypes(Node{"e", "Equal"}, std::vector<DType>{DType::F32, DType::S64}),
                      "inputs must have one dtype, got f32 and s64");
}

TEST(Where, SelectsWithThreeWayBroadcasting) {
  // An attention mask [2, 1, 3] selecting between scores [2, 2, 3] and a scalar.
  const Tensor c = bools({2, 1, 3}, {1, 0, 1, 0, 0, 1});
  const Tensor x = random({2, 2, 3}, 3);
  const Tensor y = Tensor::from_vector({}, std::vector<float>{-1e4f});
  const Tensor z = run(Node{"w", "Where", {"c", "x", "y"}, {"z"}}, {c, x, y});
  ASSERT_EQ(z.shape(), (Shape{2, 2, 3}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t s = 0; s < 3; ++s) {
        const int64_t i = (b * 2 + h) * 3 + s;
        const bool keep = static_cast<const uint8_t*>(c.raw())[b * 3 + s] != 0;
        EXPECT_EQ(z.data<float>()[i], keep ? x.data<float>()[i] : -1e4f) << i;
      }
  EXPECT_LOWBIT_ERROR(find_op("Where").infer_dtypes(Node{"w", "Where"}, std::vector<DType>{DType::F32, DType::F32, DType::F32}),
                      "condition must be bool, got f32");
  EXPECT_LOWBIT_ERROR(find_op("Where").infer_shapes(Node{"w", "Where"}, std::vector<Shape>{{2}, {3}, {1}}), "broadcast");
}

TEST(Expand, BroadcastsAgainstTheTargetShape) {
  const Tensor x = Tensor::from_vector({3, 1}, std::vector<float>{1, 2, 3});
  const Tensor y = run(Node{"x", "Expand", {"x"}, {"y"}, {{"shape", std::vector<int64_t>{2, 1, 4}}}}, {x});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_EQ(y.data<float>()[i], float((i / 4) % 3 + 1)) << i;
  // A 1 in the shape keeps the input's size (ONNX's bidirectional rule).
  EXPECT_EQ(find_op("Expand").infer_shapes(Node{"x", "Expand", {"x"}, {"y"}, {{"shape", std::vector<int64_t>{1, 1}}}}, std::vector<Shape>{{-1, 5}}),
            (std::vector<Shape>{{-1, 5}}));
  EXPECT_LOWBIT_ERROR(find_op("Expand").infer_shapes(Node{"x", "Expand", {"x"}, {"y"}, {{"shape", std::vector<int64_t>{0}}}}, std::vector<Shape>{{3}}),
                      "attribute 'shape' must hold sizes >= 1, got 0");
}

TEST(GradCheck, Where) {
  check_gradients(Node{"w", "Where", {"c", "x", "y"}, {"z"}}, {bools({2, 1, 3}, {1, 0, 1, 0, 0, 1}), random({2, 2, 3}, 4), random({1, 3}, 5)});
}

TEST(GradCheck, Expand) {
  check_gradients(Node{"x", "Expand", {"x"}, {"y"}, {{"shape", std::vector<int64_t>{2, 3, 4}}}}, {random({3, 1}, 6)});
}

}  // namespace
}  // namespace lowbit
