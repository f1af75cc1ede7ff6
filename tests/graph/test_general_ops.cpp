// The general IR's ops: Add/Sub/Div with broadcasting, Softmax over any axis, Dense on N-D input,
// MatMul with batch broadcasting, Cast; values against plain loops, shapes with run-time
// dimensions, and the executor's check of input shapes (named dynamic dimensions). Their gradient
// checks are in test_gradcheck.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "graph/gradcheck.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::infer;
using testing::random;
using testing::run1;


// The reductions against loops over a [2, 3, 4] tensor, every subset of axes, with and without
// keepdims; negative axes; the empty-axes rules; errors.
TEST(Reduce, EveryAxisSubsetMatchesLoops) {
  const Tensor x = random({2, 3, 4}, 70);
  const float* v = x.data<float>();
  for (int mask = 0; mask < 8; ++mask)
    for (int keep : {0, 1})
      for (const char* op : {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"}) {
        std::vector<int64_t> axes;
        for (int d = 0; d < 3; ++d)
          if (mask & (1 << d)) axes.push_back(d - (d == 2 ? 3 : 0));  // axis 2 written as -1
        Node node{"r", op, {"x"}, {"y"}, {{"keepdims", keep}}};
        if (!axes.empty()) node.attributes["axes"] = axes;
        const bool all = axes.empty();
        auto reduced = [&](int d) { return all || (mask & (1 << d)); };
        const Tensor y = run1(node, {x});
        Shape expected_shape;
        for (int d = 0; d < 3; ++d)
          if (!reduced(d)) expected_shape.push_back(x.dim(d));
          else if (keep) expected_shape.push_back(1);
        ASSERT_EQ(y.shape(), expected_shape) << op << " mask " << mask;
        ASSERT_EQ(infer(node, {{-1, 3, 4}})[0].size(), expected_shape.size());
        // Output element of (i, j, k): the coordinates of the kept axes, row-major.
        std::map<int64_t, std::vector<float>> groups;
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 3; ++j)
            for (int k = 0; k < 4; ++k) {
              int64_t o = 0;
              const int idx[3] = {i, j, k};
              for (int d = 0; d < 3; ++d)
                if (!reduced(d)) o = o * x.dim(d) + idx[d];
              groups[o].push_back(v[(i * 3 + j) * 4 + k]);
            }
        ASSERT_EQ(static_cast<int64_t>(groups.size()), y.numel());
        for (const auto& [o, g] : groups) {
          double sum = 0;
          for (float f : g) sum += f;
          const std::string name = op;
          const float want = name == "ReduceSum"    ? static_cast<float>(sum)
                             : name == "ReduceMean" ? static_cast<float>(sum / static_cast<double>(g.size()))
                             : name == "ReduceMax"  ? *std::max_element(g.begin(), g.end())
                                                    : *std::min_element(g.begin(), g.end());
          EXPECT_EQ(y.data<float>()[o], want) << op << " mask " << mask << " keep " << keep << " at " << o;
        }
      }
}

TEST(Reduce, EmptyAxesNaNsAndErrors) {
  const Tensor x = Tensor::from_vector({2, 2}, std::vector<float>{1, NAN, 3, 4});
  EXPECT_TRUE(std::isnan(run1(Node{"r", "ReduceMax", {"x"}, {"y"}, {{"axes", {1}}}}, {x}).data<float>()[0]));
  EXPECT_EQ(run1(Node{"r", "ReduceMax", {"x"}, {"y"}, {{"axes", {1}}}}, {x}).data<float>()[1], 4.0f);
  EXPECT_TRUE(std::isnan(run1(Node{"r", "ReduceMin", {"x"}, {"y"}, {{"axes", {0}}}}, {x}).data<float>()[1]));
  const Tensor same = run1(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"noop_with_empty_axes", 1}}}, {x});
  EXPECT_EQ(same.shape(), (Shape{2, 2}));
  EXPECT_EQ(same.data<float>()[3], 4.0f);
  const Tensor empty(DType::F32, {2, 0});
  const Tensor sum = run1(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"axes", {1}}}}, {empty});
  EXPECT_EQ(sum.shape(), (Shape{2, 1}));
  EXPECT_EQ(sum.data<float>()[0], 0.0f);
  EXPECT_TRUE(std::isnan(run1(Node{"r", "ReduceMean", {"x"}, {"y"}, {{"axes", {1}}}}, {empty}).data<float>()[0]));
  EXPECT_EQ(run1(Node{"r", "ReduceMax", {"x"}, {"y"}, {{"axes", {1}}}}, {empty}).data<float>()[1], -INFINITY);
  EXPECT_EQ(infer(Node{"r", "ReduceMean", {"x"}, {"y"}, {{"axes", {-1}}, {"keepdims", 0}}}, {{-1, -1, 8}})[0], (Shape{-1, -1}));
  EXPECT_LOWBIT_ERROR(infer(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"axes", {2}}}}, {{3, 4}}),
                      "node 'r' (ReduceSum): axis 2 is out of range for input [3, 4]");
  EXPECT_LOWBIT_ERROR(infer(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"axes", {1, -1}}}}, {{3, 4}}), "names axis 1 twice");
  EXPECT_LOWBIT_ERROR(infer(Node{"r", "ReduceSum", {"x"}, {"y"}, {{"axes", 1}}}, {{3, 4}}), "attribute 'axes' is an integer");
  const DType s32[] = {DType::S32};
  EXPECT_LOWBIT_ERROR(find_op("ReduceMax").infer_dtypes(Node{"r", "ReduceMax", {"x"}, {"y"}}, s32), "input must be f32, got s32");
}

TEST(Constant, ValuesDtypesShapesAndErrors) {
  auto run0 = [](Attributes a) { return run1(Node{"c", "Constant", {}, {"y"}, std::move(a)}, {}); };
  const Tensor f = run0({{"value_float", 0.25}});
  EXPECT_EQ(f.dtype(), DType::F32);
  EXPECT_EQ(f.shape(), Shape{});
  EXPECT_EQ(f.data<float>()[0], 0.25f);
  const Tensor fs = run0({{"value_floats", std::vector<double>{1.5, -2}}});
  EXPECT_EQ(fs.shape(), (Shape{2}));
  EXPECT_EQ(fs.data<float>()[1], -2.0f);
  const Tensor is = run0({{"value_ints", {3, -1, 7}}});
  EXPECT_EQ(is.dtype(), DType::S64);
  EXPECT_EQ(is.data<int64_t>()[2], 7);
  EXPECT_EQ(run0({{"value_int", 9}}).data<int64_t>()[0], 9);
  const Node n{"c", "Constant", {}, {"y"}, {{"value_ints", {1, 2}}}};
  EXPECT_EQ(find_op("Constant").infer_shapes(n, {})[0], (Shape{2}));
  EXPECT_EQ(find_op("Constant").infer_dtypes(n, {})[0], DType::S64);
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Constant", {}, {"y"}}, {}), "node 'c' (Constant): needs one of the attributes");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Constant", {}, {"y"}, {{"value_int", 1}, {"value_float", 1.0}}}, {}), "give one value attribute");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Constant", {}, {"y"}, {{"value_int", 1.5}}}, {}), "attribute 'value_int' is a float");
  EXPECT_LOWBIT_ERROR(infer(Node{"c", "Constant", {"x"}, {"y"}, {{"value_int", 1}}}, {{2}}), "expects 0 inputs, got 1");
}

// A model's preprocessing as ordinary nodes: u8 image -> Cast to f32 -> Mul by a Constant scale.
// The executor gives float(pixel) * scale exactly, as the trainer's batch gathering computes it,
// and training does not touch the scale (a Constant's output is not a parameter).
TEST(Constant, PreprocessingNodesScaleImageBytesExactly) {
  Graph g;
  g.inputs.push_back({"image", DType::U8, {-1, 3, 5}});
  g.add_node({"to_float", "Cast", {"image"}, {"pixels"}, {{"to", "f32"}}});
  g.add_node({"scale", "Constant", {}, {"input_scale"}, {{"value_float", 1.0 / 255.0}}});
  g.add_node({"rescale", "Mul", {"pixels", "input_scale"}, {"x"}});
  g.outputs = {"x"};
  g.validate();
  EXPECT_EQ(g.infer_shapes().at("x").shape, (Shape{-1, 3, 5}));
  Tensor image(DType::U8, {2, 3, 5});
  for (int64_t i = 0; i < image.numel(); ++i) image.data<uint8_t>()[i] = static_cast<uint8_t>(i * 17);
  Executor run(g, true);
  EXPECT_TRUE(run.parameters().empty());
  run.input("image") = image;
  run.forward();
  const Tensor& x = run.value("x");
  const float scale = static_cast<float>(1.0 / 255.0);
  for (int64_t i = 0; i < x.numel(); ++i) ASSERT_EQ(x.data<float>()[i], static_cast<float>(image.data<uint8_t>()[i]) * scale) << i;
  // Cast's byte paths give lowbit::cast's values; a scalar on either side of Mul, Sub or Div gives
  // the broadcasting loop's.
  const Tensor bytes = run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "f32"}}}, {image});
  const Tensor reference = cast(image, DType::F32);
  EXPECT_EQ(std::memcmp(bytes.raw(), reference.raw(), reference.nbytes()), 0);
  const Tensor a = random({4, 6}, 80), s = Tensor::from_vector({1}, std::vector<float>{0.75f});
  for (const char* op : {"Mul", "Sub", "Div"}) {
    const Tensor right = run1(Node{"o", op, {"a", "s"}, {"y"}}, {a, s}), left = run1(Node{"o", op, {"s", "a"}, {"y"}}, {s, a});
    for (int64_t i = 0; i < a.numel(); ++i) {
      const float v = a.data<float>()[i];
      const std::string o = op;
      EXPECT_EQ(right.data<float>()[i], o == "Mul" ? v * 0.75f : o == "Sub" ? v - 0.75f : v / 0.75f);
      EXPECT_EQ(left.data<float>()[i], o == "Mul" ? 0.75f * v : o == "Sub" ? 0.75f - v : 0.75f / v);
    }
  }
}

TEST(Arithmetic, AddSubDivBroadcastLikeNumpy) {
  Tensor a = random({2, 3, 4}, 1), b = random({3, 1}, 2, 0.5f, 2.0f);
  for (const char* op : {"Add", "Sub", "Div"}) {
    const Tensor y = run1(Node{"o", op, {"a", "b"}, {"y"}}, {a, b});
    ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) {
          const float x = a.data<float>()[(i * 3 + j) * 4 + k], w = b.data<float>()[j];
          const float expected = std::string(op) == "Add" ? x + w : std::string(op) == "Sub" ? x - w : x / w;
          EXPECT_EQ(y.data<float>()[(i * 3 + j) * 4 + k], expected) << op;
        }
  }
  // The residual connection: same shapes, element by element.
  Tensor c = random({5, 7}, 3);
  const Tensor sum = run1(Node{"o", "Add", {"a", "c"}, {"y"}}, {c, c});
  for (int i = 0; i < 35; ++i) EXPECT_EQ(sum.data<float>()[i], c.data<float>()[i] + c.data<float>()[i]);
  EXPECT_LOWBIT_ERROR(run1(Node{"o", "Sub", {"a", "b"}, {"y"}}, {random({2, 3}, 4), random({4}, 5)}), "do not broadcast");
}

TEST(Softmax, AnyAxisMatchesTheLastAxisOfTheTransposedTensor) {
  // x [2, 3, 4] over axis 1: for each (i, k), the 3 values x[i, :, k] sum to 1 and follow exp.
  const Tensor x = random({2, 3, 4}, 6, -3, 3);
  for (int64_t axis : {1, -2}) {
    const Tensor y = run1(Node{"s", "Softmax", {"x"}, {"y"}, {{"axis", axis}}}, {x});
    for (int i = 0; i < 2; ++i)
      for (int k = 0; k < 4; ++k) {
        double total = 0, denom = 0;
        for (int j = 0; j < 3; ++j) denom += std::exp(double(x.data<float>()[(i * 3 + j) * 4 + k]));
        for (int j = 0; j < 3; ++j) {
          const float v = y.data<float>()[(i * 3 + j) * 4 + k];
          EXPECT_NEAR(v, std::exp(double(x.data<float>()[(i * 3 + j) * 4 + k])) / denom, 1e-6);
          total += v;
        }
        EXPECT_NEAR(total, 1.0, 1e-6);
      }
  }
  // Axis 0 of a 1-D tensor is its last axis; out of range is an error naming the node.
  EXPECT_EQ(infer(Node{"s", "Softmax", {"x"}, {"y"}, {{"axis", 0}}}, {{5}}), (std::vector<Shape>{{5}}));
  EXPECT_LOWBIT_ERROR(infer(Node{"s", "Softmax", {"x"}, {"y"}, {{"axis", 3}}}, {{2, 3, 4}}),
                      "node 's' (Softmax): axis 3 is out of range for input [2, 3, 4]");
}

TEST(Dense, TakesInputsOfAnyRankLikeTorchLinear) {
  // [2, 3, 5] x W[4, 5]^T + b: every leading index is one row of the GEMM.
  Tensor x = random({2, 3, 5}, 7), w = random({4, 5}, 8), b = random({4}, 9);
  const Tensor y = run1(Node{"d", "Dense", {"x", "w", "b"}, {"y"}}, {x, w, b});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 4}));
  for (int r = 0; r < 6; ++r)
    for (int u = 0; u < 4; ++u) {
      double acc = b.data<float>()[u];
      for (int k = 0; k < 5; ++k) acc += double(x.data<float>()[r * 5 + k]) * w.data<float>()[u * 5 + k];
      EXPECT_NEAR(y.data<float>()[r * 4 + u], acc, 1e-5);
    }
  EXPECT_EQ(infer(Node{"d", "Dense", {"x", "w"}, {"y"}}, {{-1, -1, 5}, {4, 5}}), (std::vector<Shape>{{-1, -1, 4}}));
  EXPECT_LOWBIT_ERROR(infer(Node{"d", "Dense", {"x", "w"}, {"y"}}, {{-1, 6}, {4, 5}}), "expects 5 input features, input has 6");
  EXPECT_LOWBIT_ERROR(run1(Node{"d", "Dense", {"x", "w"}, {"y"}}, {random({2, 6}, 1), w}),
                      "input [2, 6] does not end in the weight's 5 input features");
}

// matmul of one [m, k] and one [k, n] matrix in double, as the reference.
std::vector<double> product(const float* a, const float* b, int m, int k, int n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j)
      for (int p = 0; p < k; ++p) c[i * n + j] += double(a[i * k + p]) * b[p * n + j];
  return c;
}

TEST(MatMul, BatchedWithBroadcastingAndVectors) {
  const Node mm{"mm", "MatMul", {"a", "b"}, {"y"}};
  // a [2, 1, 3, 4] times b [5, 4, 2]: batches broadcast to [2, 5].
  Tensor a = random({2, 1, 3, 4}, 10), b = random({5, 4, 2}, 11);
  Tensor y = run1(mm, {a, b});
  ASSERT_EQ(y.shape(), (Shape{2, 5, 3, 2}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 5; ++j) {
      const auto c = product(a.data<float>() + i * 12, b.data<float>() + j * 8, 3, 4, 2);
      for (int e = 0; e < 6; ++e) EXPECT_NEAR(y.data<float>()[(i * 5 + j) * 6 + e], c[e], 1e-5);
    }
  // b a plain matrix (a Linear layer as exported): all of a's rows in one GEMM.
  Tensor w = random({4, 6}, 12);
  y = run1(mm, {a, w});
  ASSERT_EQ(y.shape(), (Shape{2, 1, 3, 6}));
  const auto c = product(a.data<float>(), w.data<float>(), 6, 4, 6);
  for (int e = 0; e < 36; ++e) EXPECT_NEAR(y.data<float>()[e], c[e], 1e-5);
  // Vectors: [4] x [4, 6] -> [6]; [2, 3, 4] x [4] -> [2, 3]; [4] x [4] -> [].
  Tensor v = random({4}, 13);
  EXPECT_EQ(run1(mm, {v, w}).shape(), (Shape{6}));
  EXPECT_EQ(run1(mm, {random({2, 3, 4}, 14), v}).shape(), (Shape{2, 3}));
  EXPECT_EQ(run1(mm, {v, v}).shape(), (Shape{}));
  EXPECT_EQ(infer(mm, {{-1, 8, -1, 16}, {-1, 8, 16, -1}}), (std::vector<Shape>{{-1, 8, -1, -1}}));
  EXPECT_LOWBIT_ERROR(infer(mm, {{3, 4}, {5, 2}}), "node 'mm' (MatMul): inner dimensions differ: [3, 4] times [5, 2]");
  EXPECT_LOWBIT_ERROR(run1(mm, {random({2, 3, 4}, 1), random({3, 4, 2}, 2)}), "do not broadcast");
}

TEST(Cast, ConvertsLikeOnnx) {
  Tensor x = Tensor::from_vector({6}, std::vector<float>{-1.7f, 2.9f, 0.0f, 300.0f, -300.0f, std::nanf("")});
  Tensor s8 = run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "s8"}}}, {x});
  ASSERT_EQ(s8.dtype(), DType::S8);
  const int8_t expected_s8[] = {-1, 2, 0, 127, -128, 0};  // toward zero, saturating
  for (int i = 0; i < 6; ++i) EXPECT_EQ(s8.data<int8_t>()[i], expected_s8[i]);
  Tensor flags = run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "bool"}}}, {x});
  EXPECT_EQ(flags.dtype(), DType::Bool);
  EXPECT_EQ(static_cast<const uint8_t*>(flags.raw())[2], 0);
  EXPECT_EQ(static_cast<const uint8_t*>(flags.raw())[0], 1);
  Tensor ids(DType::S64, {2});
  ids.data<int64_t>()[0] = 7, ids.data<int64_t>()[1] = -(int64_t{1} << 40);
  Tensor as_f32 = run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "f32"}}}, {ids});
  EXPECT_EQ(as_f32.data<float>()[0], 7.0f);
  EXPECT_EQ(as_f32.data<float>()[1], -1099511627776.0f);
  EXPECT_LOWBIT_ERROR(run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "f64"}}}, {x}), "node 'c' (Cast): attribute 'to': unknown dtype 'f64'");
  EXPECT_LOWBIT_ERROR(run1(Node{"c", "Cast", {"x"}, {"y"}, {{"to", "s4"}}}, {x}), "cannot cast to packed s4");
}

TEST(Tensor, HalfPrecisionConversionsRoundToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);                 // halfway past the largest: infinity
  EXPECT_EQ(f32_to_f16(1.0f + 0x1p-11f), 0x3c00);          // a tie rounds to even
  EXPECT_EQ(f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);      // a tie rounds to even (up)
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);                 // the smallest subnormal
  EXPECT_EQ(f32_to_f16(0x1p-26f), 0x0000);                 // below half of it: zero
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::nanf("")))));
  // Every f16 value survives f16 -> f32 -> f16.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), h) << h;
  }
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_f32(0x3f80), 1.0f);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie to even (down)
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie to even (up)
  Tensor x = Tensor::from_vector({3}, std::vector<float>{0.1f, -3.5f, 1e5f});
  Tensor back = cast(cast(x, DType::F16), DType::F32);
  EXPECT_NEAR(back.data<float>()[0], 0.1f, 1e-4);
  EXPECT_EQ(back.data<float>()[1], -3.5f);
  EXPECT_TRUE(std::isinf(back.data<float>()[2]));
}

TEST(Executor, ChecksInputsAgainstTheirDeclaredShapesAndNamedDimensions) {
  // Two inputs sharing the named dimensions "batch" and "tokens", and a static feature size.
  Graph g;
  g.inputs.push_back({"a", DType::F32, {-1, -1, 4}, {"batch", "tokens", ""}});
  g.inputs.push_back({"b", DType::F32, {-1, -1, 4}, {"batch", "tokens", ""}});
  g.add_node({"sum", "Add", {"a", "b"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  Executor run(g);
  run.input("a") = random({2, 3, 4}, 1);
  run.input("b") = random({2, 3, 4}, 2);
  run.forward();
  EXPECT_EQ(run.value("y").shape(), (Shape{2, 3, 4}));
  run.input("b") = random({2, 5, 4}, 2);
  EXPECT_LOWBIT_ERROR(run.forward(), "input 'b' dimension 1 ('tokens') is 5 but input 'a' dimension 1 ('tokens') is 3");
  run.input("b") = random({2, 3, 5}, 2);
  EXPECT_LOWBIT_ERROR(run.forward(), "input 'b' has shape [2, 3, 5], the model expects f32[N, N, 4] (dimension 2)");
  run.input("b") = Tensor(DType::U8, {2, 3, 4});
  EXPECT_LOWBIT_ERROR(run.forward(), "input 'b' is u8, the model expects f32[N, N, 4]");
  g.inputs[1].symbols = {"batch"};
  EXPECT_LOWBIT_ERROR(g.validate(), "graph input 'b' names 1 dimensions of 3");
}

}  // namespace
}  // namespace lowbit
