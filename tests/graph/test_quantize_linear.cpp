// QuantizeLinear / DequantizeLinear in ONNX's form (version 2): scale and zero point as tensor
// inputs, per tensor, per axis and per block, against the formula q = clamp(round_half_even(x /
// scale) + zero_point, -128, 127) and x = scale * (q - zero_point); parameters that are graph
// values rather than constants; shape and value errors.
#include <cmath>
#include <cstring>

#include "graph/gradcheck.h"
#include "lowbit/executor.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::random;

// Runs `op` on x with the given scale / zero point through an executor, so that constant
// parameters are read once when prepared (`constant` false: they are graph inputs instead).
Tensor run_cast(const char* op, const Tensor& x, const Tensor& scale, const Tensor& zero_point, Attributes attributes,
                bool constant = true) {
  Graph g;
  g.inputs.push_back({"x", x.dtype(), x.shape()});
  if (constant) {
    g.initializers["s"] = scale;
    g.initializers["z"] = zero_point;
  } else {
    g.inputs.push_back({"s", DType::F32, scale.shape()});
    g.inputs.push_back({"z", zero_point.dtype(), zero_point.shape()});
  }
  g.add_node({"q", op, {"x", "s", "z"}, {"y"}, std::move(attributes)});
  g.outputs = {"y"};
  g.validate();
  Executor run(g);
  run.input("x") = x;
  if (!constant) {
    run.input("s") = scale;
    run.input("z") = zero_point;
  }
  run.forward();
  return run.value("y").clone();
}

int8_t expected_code(float x, float scale, int zero_point) {
  return static_cast<int8_t>(std::clamp(std::nearbyint(x / scale) + zero_point, -128.0f, 127.0f));
}

// Scales and zero points with one entry per parameter slot (positive scales, varied zero points).
void fill_params(Tensor& scale, Tensor& zero_point, uint64_t seed) {
  Rng rng(seed);
  for (int64_t i = 0; i < scale.numel(); ++i) {
    scale.data<float>()[i] = 0.005f + 0.02f * rng.uniform();
    zero_point.data<int8_t>()[i] = static_cast<int8_t>(static_cast<int>(rng.below(41)) - 20);
  }
}

// x [2, 5, 3] (awkward sizes) quantized per tensor, per axis (each axis, negative too) and per
// block along axis 1 (blocks of 2: the last block is short), then dequantized back.
TEST(QuantizeLinear, PerTensorPerAxisAndPerBlockMatchTheFormula) {
  const Tensor x = random({2, 5, 3}, 31, -2.0f, 2.0f);
  struct Case {
    Shape scale;
    Attributes attributes;
    // The parameter slot of element (a, b, c).
    int64_t (*slot)(int64_t a, int64_t b, int64_t c);
  };
  const std::vector<Case> cases = {
      {{}, {}, [](int64_t, int64_t, int64_t) -> int64_t { return 0; }},
      {{1}, {}, [](int64_t, int64_t, int64_t) -> int64_t { return 0; }},
      {{5}, {}, [](int64_t, int64_t b, int64_t) { return b; }},  // axis defaults to 1
      {{2}, {{"axis", 0}}, [](int64_t a, int64_t, int64_t) { return a; }},
      {{3}, {{"axis", -1}}, [](int64_t, int64_t, int64_t c) { return c; }},
      {{2, 3, 3}, {{"axis", 1}, {"block_size", 2}}, [](int64_t a, int64_t b, int64_t c) { return (a * 3 + b / 2) * 3 + c; }},
  };
  for (const auto& k : cases) {
    Tensor scale(DType::F32, k.scale), zero_point(DType::S8, k.scale);
    fill_params(scale, zero_point, 7 + k.scale.size());
    for (bool constant : {true, false}) {
      const Tensor q = run_cast("QuantizeLinear", x, scale, zero_point, k.attributes, constant);
      const Tensor y = run_cast("DequantizeLinear", q, scale, zero_point, k.attributes, constant);
      ASSERT_EQ(q.dtype(), DType::S8);
      ASSERT_EQ(y.shape(), x.shape());
      for (int64_t a = 0; a < 2; ++a)
        for (int64_t b = 0; b < 5; ++b)
          for (int64_t c = 0; c < 3; ++c) {
            const int64_t i = (a * 5 + b) * 3 + c, p = k.slot(a, b, c);
            const float s = scale.data<float>()[p];
            const int z = zero_point.data<int8_t>()[p];
            ASSERT_EQ(q.data<int8_t>()[i], expected_code(x.data<float>()[i], s, z)) << "scale " << to_string(k.scale) << " element " << i;
            ASSERT_EQ(y.data<float>()[i], s * static_cast<float>(q.data<int8_t>()[i] - z));
          }
    }
  }
}

TEST(QuantizeLinear, SaturatesAndRoundsHalfToEven) {
  Tensor x(DType::F32, {6});
  const float v[] = {0.5f, 1.5f, 2.5f, -0.5f, 1000.0f, -1000.0f};
  std::copy(v, v + 6, x.data<float>());
  const Tensor q = run_cast("QuantizeLinear", x, testing::scalar_f32(1.0f), testing::scalar_s8(0), {});
  const int8_t expected[] = {0, 2, 2, 0, 127, -128};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(q.data<int8_t>()[i], expected[i]) << i;
}

TEST(QuantizeLinear, DequantizeWithoutZeroPointMeansZero) {
  Tensor q(DType::S8, {3});
  q.data<int8_t>()[0] = -3, q.data<int8_t>()[1] = 0, q.data<int8_t>()[2] = 5;
  Graph g;
  g.inputs.push_back({"q", DType::S8, {3}});
  g.initializers["s"] = testing::scalar_f32(0.5f);
  g.add_node({"dq", "DequantizeLinear", {"q", "s"}, {"y"}});
  g.outputs = {"y"};
  Executor run(g);
  run.input("q") = q;
  run.forward();
  EXPECT_EQ(run.value("y").data<float>()[0], -1.5f);
  EXPECT_EQ(run.value("y").data<float>()[2], 2.5f);
}

// u8 codes (image bytes): x = scale * (q - zero_point) with a u8 zero point, per axis too; the
// zero point's type must be the codes'.
TEST(QuantizeLinear, DequantizesU8Codes) {
  const Tensor q = testing::random_bytes({2, 3, 5}, 8);
  Tensor scale(DType::F32, {3}), zero_point(DType::U8, {3});
  for (int c = 0; c < 3; ++c) {
    scale.data<float>()[c] = 0.01f * static_cast<float>(c + 1);
    zero_point.data<uint8_t>()[c] = static_cast<uint8_t>(100 + 50 * c);  // above 127: read as unsigned
  }
  const Tensor y = run_cast("DequantizeLinear", q, scale, zero_point, {});
  for (int64_t i = 0; i < q.numel(); ++i) {
    const int64_t c = (i / 5) % 3;
    ASSERT_EQ(y.data<float>()[i], scale.data<float>()[c] * static_cast<float>(q.data<uint8_t>()[i] - zero_point.data<uint8_t>()[c])) << i;
  }
  EXPECT_LOWBIT_ERROR(find_op("DequantizeLinear").infer_dtypes(Node{"dq", "DequantizeLinear"}, std::vector<DType>{DType::U8, DType::F32, DType::S8}),
                      "zero_point must be u8, got s8");
  EXPECT_LOWBIT_ERROR(find_op("DequantizeLinear").infer_dtypes(Node{"dq", "DequantizeLinear"}, std::vector<DType>{DType::S32, DType::F32}),
                      "input must be s8, got s32");
}

// Requantize is DequantizeLinear then QuantizeLinear, bit for bit: every byte value and s8 code,
// awkward sizes, one and two threads; on grids that differ by a whole number of codes (its integer
// path), on grids that do not, and on equal scales where the codes clamp (not a pure offset).
TEST(Requantize, IsDequantizeThenQuantize) {
  struct Grids {
    float ys;
    int8_t yz;
    uint8_t xz_u8;
    int8_t xz_s8;
    bool offset;  // the integer path is expected
  };
  const Grids cases[] = {{0.0041f, -120, 3, -5, false}, {1.0f / 255.0f, -128, 0, 0, true},
                         {1.0f / 255.0f, -120, 3, -5, false}, {1.0f / 255.0f, 0, 128, 0, true}};
  for (const Grids& grids : cases)
  for (DType from : {DType::U8, DType::S8})
    for (int64_t n : {1, 7, 256, 513, 70001}) {
      Tensor x(from, {n});
      for (int64_t i = 0; i < n; ++i) static_cast<uint8_t*>(x.raw())[i] = static_cast<uint8_t>((i * 7 + n) % 256);
      const Tensor xs = testing::scalar_f32(1.0f / 255.0f), ys = testing::scalar_f32(grids.ys), yz = testing::scalar_s8(grids.yz);
      Tensor xz(from, {});
      static_cast<uint8_t*>(xz.raw())[0] = from == DType::U8 ? grids.xz_u8 : static_cast<uint8_t>(grids.xz_s8);
      if (from == DType::U8) {
        const Node node{"r", "Requantize", {"x", "xs", "ys", "yz", "xz"}, {"y"}};
        const Tensor* constants[] = {nullptr, &xs, &ys, &yz, &xz};
        const Op& op = find_op("Requantize");
        const std::string text = op.describe(node, op.prepare(node, constants).get());
        EXPECT_EQ(text.rfind("requantize_offset", 0) == 0, grids.offset) << text;
      }
      const Tensor scaled = run_cast("DequantizeLinear", x, xs, xz, {});
      const Tensor expected = run_cast("QuantizeLinear", scaled, ys, yz, {});
      for (int threads : {1, 2}) {
        Graph g;
        g.inputs.push_back({"x", from, {n}});
        g.initializers = {{"xs", xs}, {"xz", xz}, {"ys", ys}, {"yz", yz}};
        g.add_node({"r", "Requantize", {"x", "xs", "ys", "yz", "xz"}, {"y"}});
        g.outputs = {"y"};
        Executor run(g, false, RunSettings{.threads = threads});
        run.input("x") = x;
        run.forward();
        ASSERT_EQ(std::memcmp(run.value("y").raw(), expected.raw(), expected.nbytes()), 0) << name_of(from) << " n " << n;
      }
    }
  const auto infer = [](std::vector<DType> d) { return find_op("Requantize").infer_dtypes(Node{"r", "Requantize"}, d); };
  EXPECT_LOWBIT_ERROR(infer({DType::F32, DType::F32, DType::F32, DType::S8}), "input must be u8 or s8, got f32");
  EXPECT_LOWBIT_ERROR(infer({DType::U8, DType::F32, DType::F32, DType::S8, DType::S8}), "x_zero_point must be u8, got s8");
}

TEST(QuantizeLinear, RejectsMisshapenOrInvalidParameters) {
  auto infer = [](Node node, std::vector<Shape> shapes) { return find_op(node.op).infer_shapes(node, shapes); };
  const Node q{"q", "QuantizeLinear", {"x", "s", "z"}, {"y"}};
  EXPECT_LOWBIT_ERROR(infer(q, {{2, 5}, {4}, {4}}), "scale must be a scalar (per tensor) or [5] (per axis 1), got [4]");
  EXPECT_LOWBIT_ERROR(infer(q, {{2, 5}, {5}, {}}), "zero_point [] must have the shape of scale [5]");
  Node axis = q;
  axis.attributes["axis"] = 2;
  EXPECT_LOWBIT_ERROR(infer(axis, {{2, 5}, {5}, {5}}), "attribute 'axis' 2 is outside input [2, 5]");
  Node block = q;
  block.attributes["block_size"] = 4;
  EXPECT_LOWBIT_ERROR(infer(block, {{2, 5}, {2, 1}, {2, 1}}), "scale must be [2, 2] (blocks of 4 along axis 1), got [2, 1]");
  EXPECT_LOWBIT_ERROR(infer(q, {{2, 5}, {}}), "expects 3 inputs, got 2");  // the zero point sets the output type
  EXPECT_LOWBIT_ERROR(find_op("QuantizeLinear").infer_dtypes(q, std::vector<DType>{DType::F32, DType::F32, DType::S32}),
                      "zero_point must be s8, got s32");
  const Tensor x = random({4}, 3);
  EXPECT_LOWBIT_ERROR(run_cast("QuantizeLinear", x, testing::scalar_f32(0.0f), testing::scalar_s8(0), {}),
                      "scale[0] must be positive and finite");
  EXPECT_LOWBIT_ERROR(run_cast("QuantizeLinear", x, testing::scalar_f32(NAN), testing::scalar_s8(0), {}, false),
                      "scale[0] must be positive and finite");
}

}  // namespace
}  // namespace lowbit
