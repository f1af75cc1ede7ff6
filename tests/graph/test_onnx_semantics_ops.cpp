// The ops with ONNX semantics that imported models use: Sigmoid, Tanh, LeakyRelu, Clip,
// LogSoftmax (activations.cpp), Transpose, Concat, Squeeze, Unsqueeze, Slice, Gather, Shape
// (transform_ops.cpp) and Reshape's ONNX form `dims` (conv.cpp). Values against plain index loops
// and hand-computed expectations on awkward shapes (1, 7, 17), several dtypes, run-time dimensions
// in shape inference, and bad attributes and inputs (errors naming the node, never a crash). Their
// gradient checks are in test_gradcheck.cpp.
#include <cmath>
#include <cstring>
#include <limits>

#include "graph/gradcheck.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::infer;
using testing::random;
using testing::run1;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kMin = std::numeric_limits<int64_t>::min();

DType infer_dtype(const Node& node, std::vector<DType> dtypes) { return find_op(node.op).infer_dtypes(node, dtypes)[0]; }

template <typename T>
Tensor tensor_of(Shape shape, std::vector<T> values) {
  Tensor t(dtype_of<T>(), std::move(shape));
  EXPECT_EQ(static_cast<size_t>(t.numel()), values.size());
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

// 0, 1, 2, ... as s64: every element tells where it came from.
Tensor iota_s64(Shape shape) {
  Tensor t(DType::S64, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = i;
  return t;
}

// ---- Element-wise and LogSoftmax ---------------------------------------------------------------

TEST(OnnxActivations, SigmoidTanhLeakyReluClipMatchTheFormulas) {
  const std::vector<float> v = {-1e4f, -100.0f, -17.0f, -1.5f, -0.0f, 0.0f, 0.25f, 7.0f, 100.0f, 1e4f, -INFINITY, INFINITY};
  const Tensor x = tensor_of<float>({1, 12}, v);
  const Tensor sigmoid = run1(Node{"s", "Sigmoid", {"x"}, {"y"}}, {x});
  const Tensor tanh = run1(Node{"t", "Tanh", {"x"}, {"y"}}, {x});
  const Tensor leaky = run1(Node{"l", "LeakyRelu", {"x"}, {"y"}}, {x});
  const Tensor leaky3 = run1(Node{"l", "LeakyRelu", {"x"}, {"y"}, {{"alpha", 0.3}}}, {x});
  ASSERT_EQ(sigmoid.shape(), (Shape{1, 12}));
  for (size_t i = 0; i < v.size(); ++i) {
    const double s = 1.0 / (1.0 + std::exp(-double(v[i])));  // in double: no overflow to NaN
    EXPECT_NEAR(sigmoid.data<float>()[i], s, 5e-7 * s + 1e-30) << v[i];
    EXPECT_FALSE(std::isnan(sigmoid.data<float>()[i])) << v[i];
    EXPECT_EQ(tanh.data<float>()[i], std::tanh(v[i]));
    EXPECT_EQ(leaky.data<float>()[i], v[i] < 0 ? 0.01f * v[i] : v[i]);
    EXPECT_EQ(leaky3.data<float>()[i], v[i] < 0 ? 0.3f * v[i] : v[i]);
  }
  EXPECT_EQ(sigmoid.data<float>()[0], 0.0f);
  EXPECT_EQ(sigmoid.data<float>()[9], 1.0f);
  EXPECT_EQ(sigmoid.data<float>()[4], 0.5f);

  // Clip: both bounds, one bound, none; min > max gives max everywhere; NaN stays NaN.
  const Tensor c = tensor_of<float>({7}, {-3.0f, -1.0f, -0.5f, 0.0f, 0.5f, 2.0f, NAN});
  auto clip = [&](Attributes a) { return values_of<float>(run1(Node{"c", "Clip", {"x"}, {"y"}, std::move(a)}, {c})); };
  const std::vector<float> both = clip({{"min", -1.0}, {"max", 0.5}});
  const std::vector<float> expected_both = {-1.0f, -1.0f, -0.5f, 0.0f, 0.5f, 0.5f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(both[i], expected_both[i]) << i;
  EXPECT_TRUE(std::isnan(both[6]));
  EXPECT_EQ(clip({{"max", 0}})[5], 0.0f);
  EXPECT_EQ(clip({{"max", 0}})[0], -3.0f);
  EXPECT_EQ(clip({{"min", 0}})[0], 0.0f);
  EXPECT_EQ(clip({})[0], -3.0f);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(clip({{"min", 1.0}, {"max", -1.0}})[i], -1.0f) << i;

  // Errors name the node; dtypes other than f32 are refused.
  EXPECT_LOWBIT_ERROR(run1(Node{"c", "Clip", {"x"}, {"y"}, {{"min", NAN}}}, {c}), "node 'c' (Clip): attributes 'min' and 'max' must not be NaN");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Clip", {"x"}, {"y"}, {{"max", "1"}}}, {{3}}), "attribute 'max'");
  EXPECT_LOWBIT_ERROR(infer(Node{"l", "LeakyRelu", {"x"}, {"y"}, {{"alpha", INFINITY}}}, {{3}}),
                      "node 'l' (LeakyRelu): attribute 'alpha' must be finite");
  EXPECT_LOWBIT_ERROR(infer_dtype(Node{"s", "Sigmoid", {"x"}, {"y"}}, {DType::S64}), "node 's' (Sigmoid): input must be f32, got s64");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Tanh", {"x", "z"}, {"y"}}, {{3}, {3}}), "expects 1 inputs, got 2");
  EXPECT_EQ(infer(Node{"t", "Tanh", {"x"}, {"y"}}, {{-1, 17}}), (std::vector<Shape>{{-1, 17}}));
}

TEST(LogSoftmax, StableOverAnyAxis) {
  // [2, 7, 3] with offsets of 1000: a naive exp overflows.
  Tensor x = random({2, 7, 3}, 1, -5, 5);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += (i % 2 ? 1000.0f : -1000.0f) * (i < 21);
  for (int64_t axis : {1, -2, 2, 0}) {
    const Tensor y = run1(Node{"l", "LogSoftmax", {"x"}, {"y"}, {{"axis", axis}}}, {x});
    ASSERT_EQ(y.shape(), x.shape());
    const int64_t a = axis < 0 ? axis + 3 : axis;
    const Shape& s = x.shape();
    const int64_t stride = a == 0 ? 21 : a == 1 ? 3 : 1;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const int64_t index = (i / stride) % s[a];
      if (index != 0) continue;  // i is the first element of its line
      double peak = -INFINITY, sum = 0;
      for (int64_t c = 0; c < s[a]; ++c) peak = std::max(peak, double(x.data<float>()[i + c * stride]));
      for (int64_t c = 0; c < s[a]; ++c) sum += std::exp(double(x.data<float>()[i + c * stride]) - peak);
      for (int64_t c = 0; c < s[a]; ++c) {
        const double want = double(x.data<float>()[i + c * stride]) - peak - std::log(sum);
        EXPECT_NEAR(y.data<float>()[i + c * stride], want, 1e-4 * std::max(1.0, std::fabs(want))) << "axis " << axis;
      }
    }
  }
  const Tensor y = run1(Node{"l", "LogSoftmax", {"x"}, {"y"}}, {tensor_of<float>({1}, {123.0f})});
  EXPECT_EQ(y.data<float>()[0], 0.0f);  // one element: log(1)
  EXPECT_LOWBIT_ERROR(infer(Node{"l", "LogSoftmax", {"x"}, {"y"}, {{"axis", -4}}}, {{2, 3, 4}}),
                      "node 'l' (LogSoftmax): axis -4 is out of range for input [2, 3, 4]");
  EXPECT_LOWBIT_ERROR(infer(Node{"l", "LogSoftmax", {"x"}, {"y"}}, {{}}), "input must have at least one dimension");
  EXPECT_LOWBIT_ERROR(run1(Node{"l", "LogSoftmax", {"x"}, {"y"}}, {Tensor(DType::F32, {})}), "at least one dimension");
}

// ---- Transpose ---------------------------------------------------------------------------------

TEST(Transpose, MatchesIndexLoopsForAnyDtype) {
  // f32 [2, 3, 4], perm [1, 2, 0]: y[j, k, i] = x[i, j, k].
  const Tensor x = random({2, 3, 4}, 2);
  const Tensor y = run1(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {1, 2, 0}}}}, {x});
  ASSERT_EQ(y.shape(), (Shape{3, 4, 2}));
  ASSERT_EQ(y.dtype(), DType::F32);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(y.data<float>()[(j * 4 + k) * 2 + i], x.data<float>()[(i * 3 + j) * 4 + k]);
  // s64 [1, 7, 17], default perm (reversed): y[c, b, a] = x[a, b, c].
  const Tensor ids = iota_s64({1, 7, 17});
  const Tensor r = run1(Node{"t", "Transpose", {"x"}, {"y"}}, {ids});
  ASSERT_EQ(r.shape(), (Shape{17, 7, 1}));
  ASSERT_EQ(r.dtype(), DType::S64);
  for (int b = 0; b < 7; ++b)
    for (int c = 0; c < 17; ++c) EXPECT_EQ(r.data<int64_t>()[c * 7 + b], b * 17 + c);
  // u8 [17, 1, 3], perm [2, 0, 1]; f16 bits move unchanged.
  Tensor bytes(DType::U8, {17, 1, 3});
  for (int64_t i = 0; i < bytes.numel(); ++i) bytes.data<uint8_t>()[i] = static_cast<uint8_t>(i * 5);
  const Tensor u = run1(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {2, 0, 1}}}}, {bytes});
  ASSERT_EQ(u.shape(), (Shape{3, 17, 1}));
  for (int a = 0; a < 17; ++a)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(u.data<uint8_t>()[c * 17 + a], static_cast<uint8_t>((a * 3 + c) * 5));
  const Tensor half = cast(random({7, 2}, 3), DType::F16);
  const Tensor h = run1(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {1, 0}}}}, {half});
  ASSERT_EQ(h.dtype(), DType::F16);
  for (int i = 0; i < 7; ++i)
    for (int j = 0; j < 2; ++j)
      EXPECT_EQ(static_cast<const uint16_t*>(h.raw())[j * 7 + i], static_cast<const uint16_t*>(half.raw())[i * 2 + j]);
  // A scalar: perm [].
  EXPECT_EQ(run1(Node{"t", "Transpose", {"x"}, {"y"}}, {tensor_of<float>({}, {4.5f})}).data<float>()[0], 4.5f);

  const Node t{"t", "Transpose", {"x"}, {"y"}, {{"perm", {2, 0, 1}}}};
  EXPECT_EQ(infer(t, {{-1, 3, 5}}), (std::vector<Shape>{{5, -1, 3}}));
  EXPECT_EQ(infer_dtype(t, {DType::S64}), DType::S64);
  EXPECT_LOWBIT_ERROR(infer_dtype(t, {DType::S4}), "node 't' (Transpose): packed s4 values");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {0, 0, 1}}}}, {{2, 3, 4}}),
                      "node 't' (Transpose): attribute 'perm' [0, 0, 1] is not a permutation of the 3 axes of input [2, 3, 4]");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {1, 0}}}}, {{2, 3, 4}}), "is not a permutation");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {0, 1, 3}}}}, {{2, 3, 4}}), "is not a permutation");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", {-1, 0, 1}}}}, {{2, 3, 4}}), "is not a permutation");
  EXPECT_LOWBIT_ERROR(infer(Node{"t", "Transpose", {"x"}, {"y"}, {{"perm", 1}}}, {{2}}), "attribute 'perm'");
}

// ---- Concat ------------------------------------------------------------------------------------

TEST(Concat, JoinsAlongAnyAxisIncludingS64Vectors) {
  // The shape vectors exported graphs build: s64 [2] + [1] + [3].
  const Tensor joined = run1(Node{"c", "Concat", {"a", "b", "c"}, {"y"}, {{"axis", 0}}},
                             {tensor_of<int64_t>({2}, {-1, 7}), tensor_of<int64_t>({1}, {17}), tensor_of<int64_t>({3}, {1, 0, 3})});
  ASSERT_EQ(joined.dtype(), DType::S64);
  EXPECT_EQ(values_of<int64_t>(joined), (std::vector<int64_t>{-1, 7, 17, 1, 0, 3}));
  // f32 [2, 3, 4] and [2, 1, 4] along axis -2, and a zero-sized input.
  const Tensor a = random({2, 3, 4}, 4), b = random({2, 1, 4}, 5), empty(DType::F32, {2, 0, 4});
  const Tensor y = run1(Node{"c", "Concat", {"a", "e", "b"}, {"y"}, {{"axis", -2}}}, {a, empty, b});
  ASSERT_EQ(y.shape(), (Shape{2, 4, 4}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 4; ++k)
        EXPECT_EQ(y.data<float>()[(i * 4 + j) * 4 + k], j < 3 ? a.data<float>()[(i * 3 + j) * 4 + k] : b.data<float>()[i * 4 + k]);
  EXPECT_EQ(values_of<float>(run1(Node{"c", "Concat", {"a"}, {"y"}, {{"axis", 2}}}, {a})), values_of<float>(a));

  // A run-time dimension (-1) matches any size outside the axis and makes the axis unknown.
  const Node c0{"c", "Concat", {"a", "b"}, {"y"}, {{"axis", 0}}}, c1{"c", "Concat", {"a", "b"}, {"y"}, {{"axis", 1}}};
  EXPECT_EQ(infer(c0, {{-1, 3}, {2, -1}}), (std::vector<Shape>{{-1, 3}}));
  EXPECT_EQ(infer(c0, {{1, 3}, {7, 3}}), (std::vector<Shape>{{8, 3}}));
  EXPECT_EQ(infer(c1, {{-1, 4}, {-1, 4}}), (std::vector<Shape>{{-1, 8}}));
  EXPECT_EQ(infer(c1, {{-1, 4}, {17, -1}}), (std::vector<Shape>{{17, -1}}));
  EXPECT_EQ(infer_dtype(c0, {DType::S64, DType::S64}), DType::S64);
  EXPECT_LOWBIT_ERROR(infer_dtype(c0, {DType::S64, DType::S32}), "node 'c' (Concat): input 1 is s32, input 0 s64");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Concat", {"a", "b"}, {"y"}}, {{2}, {3}}), "node 'c' (Concat): attribute 'axis' is required");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Concat", {"a", "b"}, {"y"}, {{"axis", 2}}}, {{2, 3}, {2, 3}}), "axis 2 is out of range for rank 2");
  EXPECT_LOWBIT_ERROR(infer(c0, {{2, 3}, {2, 3, 1}}), "input 1 [2, 3, 1] has rank 3, input 0 [2, 3] rank 2");
  EXPECT_LOWBIT_ERROR(infer(c0, {{2, 3}, {2, 4}}), "node 'c' (Concat): input 1 [2, 4] has size 4 in dimension 1, the inputs before it 3 (only axis 0 may differ)");
  EXPECT_EQ(infer(c0, {{2, -1}, {2, 4}, {1, 4}}), (std::vector<Shape>{{5, 4}}));
  EXPECT_LOWBIT_ERROR(infer(c0, {{2, -1}, {2, 4}, {1, 5}}), "input 2 [1, 5] has size 5 in dimension 1, the inputs before it 4");
  EXPECT_LOWBIT_ERROR(infer(c0, {{}, {}}), "scalars do not concatenate");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Concat", {}, {"y"}, {{"axis", 0}}}, {}), "expects at least one input");
  EXPECT_LOWBIT_ERROR(run1(c1, {random({2, 3}, 1), random({3, 3}, 2)}), "the inputs before it");
  EXPECT_LOWBIT_ERROR(run1(c0, {random({2}, 1), iota_s64({2})}), "input 1 is s64, input 0 f32");
}

// ---- Squeeze, Unsqueeze, Reshape (dims) --------------------------------------------------------

TEST(SqueezeUnsqueeze, NegativeAxesShareTheBuffer) {
  const Tensor x = iota_s64({1, 7, 1, 17});
  const Tensor s = run1(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {-2, 0}}}}, {x});
  EXPECT_EQ(s.shape(), (Shape{7, 17}));
  EXPECT_EQ(s.dtype(), DType::S64);
  EXPECT_EQ(s.raw(), x.raw());  // no copy
  EXPECT_EQ(run1(Node{"s", "Squeeze", {"x"}, {"y"}}, {x}).shape(), (Shape{7, 17}));
  EXPECT_EQ(run1(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {2}}}}, {x}).shape(), (Shape{1, 7, 17}));
  EXPECT_EQ(run1(Node{"s", "Squeeze", {"x"}, {"y"}}, {tensor_of<float>({1, 1}, {2.0f})}).shape(), Shape{});
  // Shape inference: without axes only the dimensions known to be 1 go; a run-time dimension named
  // in axes is accepted, and checked when the node runs.
  EXPECT_EQ(infer(Node{"s", "Squeeze", {"x"}, {"y"}}, {{-1, 1, 3, 1}}), (std::vector<Shape>{{-1, 3}}));
  EXPECT_EQ(infer(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {0}}}}, {{-1, 3}}), (std::vector<Shape>{{3}}));
  EXPECT_LOWBIT_ERROR(run1(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {0}}}}, {random({2, 3}, 1)}),
                      "node 's' (Squeeze): cannot squeeze axis 0 of input [2, 3]: its size is 2, not 1");
  EXPECT_LOWBIT_ERROR(infer(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {-3}}}}, {{1, 3}}), "axis -3 is out of range for input [1, 3]");
  EXPECT_LOWBIT_ERROR(infer(Node{"s", "Squeeze", {"x"}, {"y"}, {{"axes", {0, -2}}}}, {{1, 3}}), "names axis 0 twice");

  const Tensor t = random({7, 17}, 2);
  const Tensor u = run1(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {-1, 0}}}}, {t});
  EXPECT_EQ(u.shape(), (Shape{1, 7, 17, 1}));
  EXPECT_EQ(u.raw(), t.raw());
  EXPECT_EQ(run1(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {2, 0}}}}, {t}).shape(), (Shape{1, 7, 1, 17}));
  EXPECT_EQ(run1(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {-2}}}}, {t}).shape(), (Shape{7, 1, 17}));
  EXPECT_EQ(run1(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {0}}}}, {tensor_of<int64_t>({}, {5})}).shape(), (Shape{1}));
  EXPECT_EQ(infer(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {1}}}}, {{-1, 3}}), (std::vector<Shape>{{-1, 1, 3}}));
  EXPECT_EQ(infer_dtype(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {1}}}}, {DType::S8}), DType::S8);
  EXPECT_LOWBIT_ERROR(infer(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {-5}}}}, {{7, 17, 3}}),
                      "node 'u' (Unsqueeze): axis -5 is out of range for the output's rank 4");
  EXPECT_LOWBIT_ERROR(infer(Node{"u", "Unsqueeze", {"x"}, {"y"}, {{"axes", {1, -2}}}}, {{7}}), "names axis 1 twice");
  EXPECT_LOWBIT_ERROR(infer(Node{"u", "Unsqueeze", {"x"}, {"y"}}, {{7}}), "node 'u' (Unsqueeze): attribute 'axes' is required");
  EXPECT_TRUE(find_op("Squeeze").traits().layout_only && find_op("Unsqueeze").traits().passes_quantized);
}

TEST(Reshape, OnnxDimsCopyZerosAndInferMinusOne) {
  auto reshape = [](Attributes a) { return Node{"r", "Reshape", {"x"}, {"y"}, std::move(a)}; };
  const Tensor x = iota_s64({2, 3, 4});
  const Tensor y = run1(reshape({{"dims", {0, -1}}}), {x});
  EXPECT_EQ(y.shape(), (Shape{2, 12}));
  EXPECT_EQ(y.raw(), x.raw());  // no copy
  EXPECT_EQ(run1(reshape({{"dims", {-1}}}), {x}).shape(), (Shape{24}));
  EXPECT_EQ(run1(reshape({{"dims", {4, 0, 2}}}), {x}).shape(), (Shape{4, 3, 2}));  // the 0 copies dimension 1
  EXPECT_EQ(run1(reshape({{"dims", {0, 0, -1, 1}}}), {x}).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ(run1(reshape({{"dims", {0, 5}}, {"allowzero", 1}}), {Tensor(DType::F32, {0, 3})}).shape(), (Shape{0, 5}));
  EXPECT_EQ(run1(reshape({{"dims", {1}}}), {tensor_of<float>({}, {2.0f})}).shape(), (Shape{1}));
  // Run-time dimensions: a 0 copies -1; an inferred -1 is known when every run-time dimension is copied.
  EXPECT_EQ(infer(reshape({{"dims", {0, -1}}}), {{-1, 3, 4}}), (std::vector<Shape>{{-1, 12}}));
  EXPECT_EQ(infer(reshape({{"dims", {-1, 4}}}), {{-1, 3, 4}}), (std::vector<Shape>{{-1, 4}}));
  EXPECT_EQ(infer(reshape({{"dims", {0, 0}}}), {{2, -1}}), (std::vector<Shape>{{2, -1}}));
  EXPECT_EQ(infer(reshape({{"dims", {0, -1}}}), {{2, -1, 4}}), (std::vector<Shape>{{2, -1}}));
  EXPECT_EQ(infer(reshape({{"dims", {0, 2, 3}}}), {{-1, 6}}), (std::vector<Shape>{{-1, 2, 3}}));
  EXPECT_EQ(infer(reshape({{"dims", {3, -1}}}), {{-1, -1}}), (std::vector<Shape>{{3, -1}}));
  // The "shape" form is unchanged: the batch stays, "shape" is one sample's.
  EXPECT_EQ(infer(reshape({{"shape", {-1, 7}}}), {{5, 28, 28}}), (std::vector<Shape>{{5, 112, 7}}));
  // Errors.
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {0, 4}}}), {{-1, 6}}),
                      "node 'r' (Reshape): cannot reshape [N, 6] (N x 6 values) to [0, 4] (N x 4 values)");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {4, 2}}}), {{2, 3}}), "cannot reshape [2, 3] (6 values) to [4, 2] (8 values)");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {-1, 4}}}), {{2, 3}}), "cannot reshape [2, 3] (6 values) to [-1, 4]");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {-1, -1}}}), {{2, 3}}), "attribute 'dims' [-1, -1]: only one dimension may be -1");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {-2, 3}}}), {{2, 3}}), "dimensions must be >= 0 (or one -1)");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {3, 0, 0}}}), {{6, 1}}), "the 0 at index 2 copies an input dimension, but the input [6, 1] has rank 2");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {0, -1}}, {"allowzero", 1}}), {{0, 3}}), "with allowzero = 1");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {0, -1}}}), {{0, 3}}), "the -1 is ambiguous");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {6}}, {"allowzero", 2}}), {{2, 3}}), "attribute 'allowzero' must be 0 or 1, got 2");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", "6"}}), {{2, 3}}), "attribute 'dims' must be a list of integers");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"dims", {6}}, {"shape", {6}}}), {{2, 3}}), "give one of the attributes 'shape'");
  EXPECT_LOWBIT_ERROR(infer(reshape({}), {{2, 3}}), "attribute 'shape' (the shape of one sample) or 'dims'");
  EXPECT_LOWBIT_ERROR(run1(reshape({{"dims", {0, 4}}}), {random({3, 6}, 1)}), "cannot reshape [3, 6] (18 values) to [0, 4] (12 values)");
}

// ---- Shape -------------------------------------------------------------------------------------

TEST(Shape, ReturnsTheDimensionsWithStartAndEnd) {
  const Tensor x(DType::U8, {2, 3, 5, 7});
  auto shape = [&](Attributes a) { return values_of<int64_t>(run1(Node{"s", "Shape", {"x"}, {"y"}, std::move(a)}, {x})); };
  const Tensor all = run1(Node{"s", "Shape", {"x"}, {"y"}}, {x});
  EXPECT_EQ(all.dtype(), DType::S64);
  EXPECT_EQ(all.shape(), (Shape{4}));
  EXPECT_EQ(values_of<int64_t>(all), (std::vector<int64_t>{2, 3, 5, 7}));
  EXPECT_EQ(shape({{"start", 1}}), (std::vector<int64_t>{3, 5, 7}));
  EXPECT_EQ(shape({{"end", -1}}), (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(shape({{"start", -2}, {"end", 100}}), (std::vector<int64_t>{5, 7}));  // clamped to the rank
  EXPECT_EQ(shape({{"start", -100}, {"end", 1}}), (std::vector<int64_t>{2}));
  EXPECT_EQ(shape({{"start", 3}, {"end", 1}}), std::vector<int64_t>{});
  EXPECT_EQ(values_of<int64_t>(run1(Node{"s", "Shape", {"x"}, {"y"}}, {tensor_of<float>({}, {1.0f})})), std::vector<int64_t>{});
  const Node n{"s", "Shape", {"x"}, {"y"}, {{"start", 1}}};
  EXPECT_EQ(infer(n, {{-1, 3, 4}}), (std::vector<Shape>{{2}}));
  EXPECT_EQ(infer_dtype(n, {DType::F16}), DType::S64);
  EXPECT_FALSE(find_op("Shape").differentiable_input(0));
  EXPECT_LOWBIT_ERROR(infer_dtype(n, {DType::U4}), "node 's' (Shape): input must not be packed, got u4");
  EXPECT_LOWBIT_ERROR(infer(Node{"s", "Shape", {"x"}, {"y"}, {{"start", 0.5}}}, {{2}}), "attribute 'start'");
}

// ---- Slice -------------------------------------------------------------------------------------

// The elements of a dimension of size n that ONNX's Slice takes, written out from the spec.
std::vector<int64_t> reference_slice(int64_t n, int64_t start, int64_t end, int64_t step) {
  if (start < 0) start += n;
  if (end < 0) end += n;
  std::vector<int64_t> taken;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, n), end = std::clamp<int64_t>(end, 0, n);
    for (int64_t i = start; i < end; i += step) taken.push_back(i);
  } else if (n > 0) {
    start = std::clamp<int64_t>(start, 0, n - 1), end = std::clamp<int64_t>(end, -1, n - 1);
    for (int64_t i = start; i > end; i += step) taken.push_back(i);
  }
  return taken;
}

// Ends given at run time (a second input) replace the attribute: x[:, :seq] with seq a value of
// the run; the sliced size is unknown until then.
TEST(Slice, RunTimeEndsReplaceTheAttribute) {
  const Tensor x = iota_s64({2, 6});
  Tensor ends(DType::S64, {1});
  ends.data<int64_t>()[0] = 4;
  const Node node{"s", "Slice", {"x", "e"}, {"y"}, {{"starts", {int64_t{1}}}, {"ends", {int64_t{0}}}, {"axes", {int64_t{1}}}}};
  const Tensor y = run1(node, {x, ends});
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  EXPECT_EQ(values_of<int64_t>(y), (std::vector<int64_t>{1, 2, 3, 7, 8, 9}));
  EXPECT_EQ(infer(node, {{2, 6}, {1}})[0], (Shape{2, -1}));
  EXPECT_LOWBIT_ERROR(infer(node, {{2, 6}, {2}}), "run-time ends must be one value per sliced axis (1), got [2]");
}

TEST(Slice, NegativeStepsAndClampingMatchTheSpec) {
  auto slice1 = [](const Tensor& x, int64_t start, int64_t end, int64_t step) {
    return values_of<int64_t>(run1(Node{"s", "Slice", {"x"}, {"y"}, {{"starts", {start}}, {"ends", {end}}, {"steps", {step}}}}, {x}));
  };
  const Tensor v = iota_s64({7});
  EXPECT_EQ(slice1(v, -1, kMin, -1), (std::vector<int64_t>{6, 5, 4, 3, 2, 1, 0}));  // reversed
  EXPECT_EQ(slice1(v, kMax, kMin, -1), (std::vector<int64_t>{6, 5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(slice1(v, 5, 1, -2), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(slice1(v, 0, kMax, 3), (std::vector<int64_t>{0, 3, 6}));
  EXPECT_EQ(slice1(v, -100, 100, 1), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(slice1(v, -3, -1, 1), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(slice1(v, 10, 20, 1), std::vector<int64_t>{});
  EXPECT_EQ(slice1(v, 2, 2, 1), std::vector<int64_t>{});
  EXPECT_EQ(slice1(v, 1, 5, kMax), (std::vector<int64_t>{1}));
  EXPECT_EQ(slice1(v, 5, 1, kMin), (std::vector<int64_t>{5}));
  // Every start, end and step in a range around dimensions of 0, 1 and 7, against the spec.
  for (int64_t n : {0, 1, 7}) {
    const Tensor x = iota_s64({n});
    for (int64_t start = -9; start <= 9; ++start)
      for (int64_t end = -9; end <= 9; ++end)
        for (int64_t step : {-3, -1, 1, 2}) {
          const std::vector<int64_t> want = reference_slice(n, start, end, step);
          ASSERT_EQ(slice1(x, start, end, step), want) << n << " " << start << ":" << end << ":" << step;
          const Node node{"s", "Slice", {"x"}, {"y"}, {{"starts", {start}}, {"ends", {end}}, {"steps", {step}}}};
          ASSERT_EQ(infer(node, {{n}})[0], (Shape{static_cast<int64_t>(want.size())}));
          const int64_t dynamic = infer(node, {{-1}})[0][0];  // 0 only when empty for every size
          if (dynamic != -1) {
            ASSERT_EQ(dynamic, static_cast<int64_t>(want.size())) << start << ":" << end << ":" << step;
          }
        }
  }
  // Two axes of f32 [5, 17], given in reverse order with negative axes.
  const Tensor x = random({5, 17}, 3);
  const Tensor y = run1(Node{"s", "Slice", {"x"}, {"y"}, {{"starts", {-2, 4}}, {"ends", {0, kMax}}, {"axes", {-1, -2}}, {"steps", {-5, 1}}}}, {x});
  const std::vector<int64_t> rows = reference_slice(5, 4, kMax, 1), columns = reference_slice(17, -2, 0, -5);
  ASSERT_EQ(y.shape(), (Shape{static_cast<int64_t>(rows.size()), static_cast<int64_t>(columns.size())}));
  EXPECT_EQ(y.shape(), (Shape{1, 3}));
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < columns.size(); ++c) EXPECT_EQ(y.data<float>()[r * columns.size() + c], x.data<float>()[rows[r] * 17 + columns[c]]);
  // Shape inference: unsliced and static dimensions exact, sliced run-time ones unknown.
  const Node s{"s", "Slice", {"x"}, {"y"}, {{"starts", {0, 1}}, {"ends", {3, kMax}}, {"axes", {2, 0}}}};
  EXPECT_EQ(infer(s, {{-1, -1, 5}}), (std::vector<Shape>{{-1, -1, 3}}));
  EXPECT_EQ(infer(s, {{7, -1, -1}}), (std::vector<Shape>{{6, -1, -1}}));
  EXPECT_EQ(infer_dtype(s, {DType::Bool}), DType::Bool);
  auto bad = [](Attributes a) { return Node{"s", "Slice", {"x"}, {"y"}, std::move(a)}; };
  EXPECT_LOWBIT_ERROR(infer(bad({{"starts", {0}}, {"ends", {1}}, {"steps", {0}}}), {{3}}), "node 's' (Slice): attribute 'steps' [0]: a step must not be 0");
  EXPECT_LOWBIT_ERROR(infer(bad({{"starts", {0, 0}}, {"ends", {1}}}), {{3, 3}}), "must have one entry per sliced axis");
  EXPECT_LOWBIT_ERROR(infer(bad({{"starts", {0, 0}}, {"ends", {1, 1}}, {"axes", {0, -2}}}), {{3, 3}}), "names axis 0 twice");
  EXPECT_LOWBIT_ERROR(infer(bad({{"starts", {0}}, {"ends", {1}}, {"axes", {2}}}), {{3, 3}}), "axis 2 is out of range for input [3, 3]");
  EXPECT_LOWBIT_ERROR(infer(bad({{"starts", {0}}}), {{3}}), "node 's' (Slice): attribute 'ends' is required");
  EXPECT_LOWBIT_ERROR(infer_dtype(bad({{"starts", {0}}, {"ends", {1}}}), {DType::S2}), "packed s2 values");
}

// ---- Gather ------------------------------------------------------------------------------------

TEST(Gather, NegativeAndS32IndicesOfAnyRank) {
  // f32 data [7, 3], s64 indices [2, 2] with negative and repeated entries: y[i, j, :] = x[idx, :].
  const Tensor x = random({7, 3}, 4);
  const Tensor idx = tensor_of<int64_t>({2, 2}, {0, -1, -7, 6});
  const Tensor y = run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {x, idx});
  ASSERT_EQ(y.shape(), (Shape{2, 2, 3}));
  const int64_t rows[] = {0, 6, 0, 6};
  for (int k = 0; k < 4; ++k)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(y.data<float>()[k * 3 + c], x.data<float>()[rows[k] * 3 + c]);
  // s32 indices along axis 1 (given as -2) of s64 data [2, 17, 1]; a scalar index drops the axis.
  const Tensor data = iota_s64({2, 17, 1});
  const Tensor columns = run1(Node{"g", "Gather", {"x", "i"}, {"y"}, {{"axis", -2}}}, {data, tensor_of<int32_t>({3}, {16, -17, 3})});
  ASSERT_EQ(columns.shape(), (Shape{2, 3, 1}));
  EXPECT_EQ(values_of<int64_t>(columns), (std::vector<int64_t>{16, 0, 3, 33, 17, 20}));
  const Tensor one = run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {tensor_of<int64_t>({3}, {5, 7, 9}), tensor_of<int64_t>({}, {-1})});
  EXPECT_EQ(one.shape(), Shape{});
  EXPECT_EQ(one.data<int64_t>()[0], 9);
  EXPECT_EQ(run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {x, Tensor(DType::S64, {0})}).shape(), (Shape{0, 3}));

  const Node g{"g", "Gather", {"x", "i"}, {"y"}, {{"axis", 1}}};
  EXPECT_EQ(infer(g, {{-1, 5, 3}, {4}}), (std::vector<Shape>{{-1, 4, 3}}));
  EXPECT_EQ(infer(g, {{-1, 5, 3}, {}}), (std::vector<Shape>{{-1, 3}}));
  EXPECT_EQ(infer(g, {{2, 5}, {-1, 2}}), (std::vector<Shape>{{2, -1, 2}}));
  EXPECT_EQ(infer_dtype(g, {DType::S64, DType::S32}), DType::S64);
  EXPECT_FALSE(find_op("Gather").differentiable_input(1));
  EXPECT_LOWBIT_ERROR(infer_dtype(g, {DType::F32, DType::F32}), "node 'g' (Gather): indices must be s64 or s32, got f32");
  EXPECT_LOWBIT_ERROR(run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {x, tensor_of<int64_t>({2}, {1, 7})}),
                      "node 'g' (Gather): index 7 (indices element 1) is out of range for an axis of size 7");
  EXPECT_LOWBIT_ERROR(run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {x, tensor_of<int32_t>({1}, {-8})}), "index -8");
  EXPECT_LOWBIT_ERROR(run1(Node{"g", "Gather", {"x", "i"}, {"y"}}, {x, random({1}, 5)}), "indices must be s64 or s32");
  EXPECT_LOWBIT_ERROR(infer(Node{"g", "Gather", {"x", "i"}, {"y"}, {{"axis", 2}}}, {{7, 3}, {1}}), "axis 2 is out of range for data [7, 3]");
  EXPECT_LOWBIT_ERROR(infer(Node{"g", "Gather", {"x", "i"}, {"y"}}, {{}, {1}}), "data must have at least one dimension");
}

// ---- In a graph --------------------------------------------------------------------------------

// The shape arithmetic exporters emit around a flatten, run by the executor: Shape -> Gather ->
// Unsqueeze -> Concat with a Constant, next to a Reshape (dims) and a Transpose; declared dtypes
// and shapes from Graph::infer_shapes, values for a batch of 2.
TEST(OnnxSemantics, ShapeArithmeticRunsInAGraph) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 3, 4}});
  g.add_node({"shape", "Shape", {"x"}, {"dims"}});
  g.add_node({"zero", "Constant", {}, {"index"}, {{"value_int", 0}}});
  g.add_node({"batch", "Gather", {"dims", "index"}, {"n"}});
  g.add_node({"unsqueeze", "Unsqueeze", {"n"}, {"n1"}, {{"axes", {0}}}});
  g.add_node({"rest", "Constant", {}, {"minus_one"}, {{"value_ints", {-1}}}});
  g.add_node({"concat", "Concat", {"n1", "minus_one"}, {"target"}, {{"axis", 0}}});
  g.add_node({"flatten", "Reshape", {"x"}, {"flat"}, {{"dims", {0, -1}}}});
  g.add_node({"transpose", "Transpose", {"flat"}, {"columns"}});
  g.add_node({"sigmoid", "Sigmoid", {"columns"}, {"y"}});
  g.outputs = {"target", "y"};
  g.validate();
  const auto info = g.infer_shapes();
  EXPECT_EQ(info.at("dims").dtype, DType::S64);
  EXPECT_EQ(info.at("dims").shape, (Shape{3}));
  EXPECT_EQ(info.at("n").shape, Shape{});
  EXPECT_EQ(info.at("target").shape, (Shape{2}));
  EXPECT_EQ(info.at("target").dtype, DType::S64);
  EXPECT_EQ(info.at("flat").shape, (Shape{-1, 12}));
  EXPECT_EQ(info.at("y").shape, (Shape{12, -1}));
  Executor run(g);
  run.input("x") = random({2, 3, 4}, 6);
  run.forward();
  EXPECT_EQ(values_of<int64_t>(run.value("target")), (std::vector<int64_t>{2, -1}));
  const Tensor& y = run.value("y");
  ASSERT_EQ(y.shape(), (Shape{12, 2}));
  const float* x = run.input("x").data<float>();
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 12; ++j) EXPECT_FLOAT_EQ(y.data<float>()[j * 2 + i], 1.0f / (1.0f + std::exp(-x[i * 12 + j])));
}

}  // namespace
}  // namespace lowbit
