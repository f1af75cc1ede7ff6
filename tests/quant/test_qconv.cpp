// Integer convolution (QConv2D: its im2row + qgemm path and its direct VNNI kernel against the
// scalar reference), s8 max
// pooling, BatchNorm folding and the quantization transform on a small CNN.
#include <gmock/gmock.h>

#include <cmath>
#include <iostream>
#include <numeric>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace lowbit {
namespace {

struct QConvCase {
  int64_t n, c, h, w, oc, kh, kw, sh, sw;
  std::vector<int64_t> pads;  // top, left, bottom, right
  int64_t dh = 1, dw = 1, group = 1;
};

Tensor random_s8(const Shape& shape, uint64_t seed, int lo, int hi) {
  Tensor t(DType::S8, shape);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int8_t>()[i] = static_cast<int8_t>(lo + static_cast<int>(rng.below(hi - lo + 1)));
  return t;
}

// A one-node graph: QConv2D with random codes (`bits`-bit, symmetric unless `affine`).
Graph qconv_graph(const QConvCase& k, int bits, bool affine, bool bias, bool relu, bool f32_out, uint64_t seed) {
  Graph g;
  g.inputs.push_back({"x", DType::S8, {-1, k.c, k.h, k.w}});
  const int64_t kk = k.c / k.group * k.kh * k.kw;
  const int qmax = (1 << (bits - 1)) - 1;
  std::vector<int32_t> codes(static_cast<size_t>(k.oc * kk));
  Rng rng(seed);
  for (auto& v : codes) v = -qmax + static_cast<int32_t>(rng.below(2 * qmax + 1));
  const DType storage = bits == 8 ? DType::S8 : bits == 4 ? DType::S4 : DType::S2;
  Tensor packed = pack_codes(codes, {k.oc, kk}, storage);
  packed.reshape({k.oc, packed.numel() / k.oc});
  g.initializers["w"] = packed;
  Tensor scale(DType::F32, {k.oc}), zero(DType::S32, {k.oc}), b(DType::S32, {k.oc});
  for (int64_t o = 0; o < k.oc; ++o) {
    scale.data<float>()[o] = 0.01f * (1.0f + rng.uniform());
    zero.data<int32_t>()[o] = affine ? static_cast<int32_t>(rng.below(2 * qmax + 1)) - qmax : 0;
    b.data<int32_t>()[o] = static_cast<int32_t>(rng.below(4001)) - 2000;
  }
  g.initializers["s"] = scale;
  g.initializers["z"] = zero;
  g.initializers["b"] = b;
  g.initializers["xs"] = testing::scalar_f32(0.02f);
  g.initializers["xz"] = testing::scalar_s8(-7);
  g.initializers["ys"] = testing::scalar_f32(0.05f);
  g.initializers["yz"] = testing::scalar_s8(3);
  Node n{"y", "QConv2D", {"x", "w", "s", "z", "xs", "xz"}, {"y"},
         {{"in_channels", k.c}, {"kernel_shape", Shape{k.kh, k.kw}}, {"strides", Shape{k.sh, k.sw}}, {"pads", k.pads},
          {"dilations", Shape{k.dh, k.dw}}, {"group", k.group}, {"activation", relu ? "relu" : "none"}}};
  if (!f32_out) n.inputs.insert(n.inputs.end(), {"ys", "yz"});
  if (bias) n.inputs.push_back("b");
  g.add_node(std::move(n));
  g.outputs = {"y"};
  g.validate();
  return g;
}

// DynamicQConv2D over the same codes (symmetric), f32 bias, per-image or per-batch input ranges.
Graph dynamic_qconv_graph(const QConvCase& k, int bits, bool relu, bool per_image, uint64_t seed) {
  Graph g = qconv_graph(k, bits, false, false, relu, true, seed);
  Node& n = g.nodes[0];
  n.op = "DynamicQConv2D";
  n.inputs = {"x", "w", "s", "bf"};
  n.attributes["granularity"] = per_image ? "row" : "tensor";
  Tensor bias(DType::F32, {k.oc});
  Rng rng(seed + 1);
  for (int64_t o = 0; o < k.oc; ++o) bias.data<float>()[o] = rng.uniform(-1.0f, 1.0f);
  g.initializers["bf"] = bias;
  for (const char* unused : {"z", "b", "xs", "xz", "ys", "yz"}) g.initializers.erase(unused);
  g.inputs[0].dtype = DType::F32;
  g.validate();
  return g;
}

std::vector<uint8_t> run_bytes(const Graph& g, const Tensor& x) {
  Executor run(g);
  run.input("x") = x;
  run.forward();
  std::vector<uint8_t> bytes;
  testing::append_bytes(run.value("y"), bytes);
  return bytes;
}

// Every fast path against the reference, at each ISA level the CPU has (AVX2, AVX-512 VNNI):
// shapes with stride_w 1 and K = C/group*kh*kw <= 32 take the direct kernel of that level (the
// widths 1, 7, 17 and 33 leave partial 16-pixel vectors), the others im2row + its qgemm.
TEST(QConv, FastPathsAreBitIdenticalWithTheReferenceOnAwkwardShapes) {
  if (active_isa() == Isa::Reference) GTEST_SKIP() << "no fast path on this CPU (or LOWBIT_ISA=reference)";
  const std::vector<QConvCase> cases = {
      {2, 1, 1, 1, 3, 1, 1, 1, 1, {0, 0, 0, 0}},           // 1x1 image, 1 channel
      {3, 1, 1, 1, 5, 3, 3, 1, 1, {1, 1, 1, 1}},           // 1x1 image, 3x3 kernel: all padding but the centre
      {2, 3, 9, 7, 17, 3, 3, 2, 2, {1, 1, 1, 1}},          // stride 2, odd sizes
      {1, 2, 11, 5, 4, 3, 2, 2, 1, {0, 1, 2, 0}},          // asymmetric pads, rectangular kernel, stride_h 2 only
      {2, 5, 8, 8, 33, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2},    // dilation 2
      {4, 32, 14, 14, 64, 3, 3, 1, 1, {1, 1, 1, 1}},       // the reference CNN's second layer
      {3, 1, 28, 28, 32, 3, 3, 1, 1, {1, 1, 1, 1}},        // the reference CNN's first layer (K = 9)
      {2, 1, 7, 17, 7, 3, 3, 1, 1, {1, 1, 1, 1}},          // width 17: one full and one 1-pixel vector
      {1, 1, 5, 33, 2, 5, 5, 1, 1, {2, 2, 2, 2}},          // width 33, K = 25
      {2, 3, 9, 16, 9, 3, 3, 1, 1, {1, 1, 1, 1}},          // RGB-like, K = 27 (odd: a half pair)
      {1, 2, 6, 9, 3, 4, 4, 1, 1, {0, 0, 0, 0}},           // K = 32, the direct kernel's longest
      {1, 3, 6, 9, 3, 3, 4, 1, 1, {1, 1, 1, 2}},           // K = 36: im2row
      {2, 4, 7, 7, 6, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 2},  // 2 groups
      {2, 5, 9, 11, 5, 3, 3, 1, 1, {1, 1, 1, 1}, 1, 1, 5}, // depthwise
      {1, 3, 8, 8, 6, 3, 3, 1, 1, {2, 2, 2, 2}, 2, 2, 3},  // depthwise, multiplier 2, dilation 2
      {2, 6, 9, 9, 6, 3, 3, 2, 2, {1, 1, 1, 1}, 1, 1, 6},  // depthwise, stride 2 (im2row per group)
      {1, 8, 5, 5, 4, 1, 1, 1, 1, {0, 0, 0, 0}, 1, 1, 4},  // grouped 1x1
  };
  const std::vector<Isa> fast = testing::isa_levels({Isa::Avx2, Isa::Avx512Vnni});
  int index = 0;
  for (const auto& k : cases) {
    const Tensor x = random_s8({k.n, k.c, k.h, k.w}, 100 + index, -128, 127);
    for (int bits : {8, 4})
      for (bool affine : {false, true})
        for (bool f32_out : {false, true}) {
          const bool relu = (index + bits) % 2 == 0, bias = !affine || f32_out;
          const Graph g = qconv_graph(k, bits, affine, bias, relu, f32_out, 7 * index + bits);
          set_max_isa(Isa::Reference);
          const auto reference = run_bytes(g, x);
          for (Isa isa : fast) {
            set_max_isa(isa);
            EXPECT_EQ(run_bytes(g, x), reference) << "case " << index << ", " << name_of(isa) << ", " << bits
                                                  << "-bit, affine " << affine << ", f32 " << f32_out;
          }
        }
    // Dynamic quantization of a float input, images with different ranges.
    Tensor xf(DType::F32, {k.n, k.c, k.h, k.w});
    Rng rng(200 + index);
    const int64_t image = k.c * k.h * k.w;
    for (int64_t i = 0; i < xf.numel(); ++i) xf.data<float>()[i] = rng.uniform(-1.0f, 2.0f) * static_cast<float>(1 + i / image);
    for (bool per_image : {true, false}) {
      const Graph g = dynamic_qconv_graph(k, index % 2 ? 4 : 8, index % 3 == 0, per_image, 11 * index);
      set_max_isa(Isa::Reference);
      const auto reference = run_bytes(g, xf);
      for (Isa isa : fast) {
        set_max_isa(isa);
        EXPECT_EQ(run_bytes(g, xf), reference) << "dynamic, case " << index << ", " << name_of(isa) << ", per image " << per_image;
      }
    }
    ++index;
  }
  set_max_isa(Isa::Avx512Vnni);
}

// The implementation each node takes (what LOWBIT_VERBOSE=1 prints): chosen from the ordered list
// when the node is prepared, with the reasons of those that declined.
TEST(QConv, ChoosesItsImplementationFromTheOrderedListAndSaysWhy) {
  const QConvCase first{1, 1, 28, 28, 32, 3, 3, 1, 1, {1, 1, 1, 1}};    // K = 9: direct
  const QConvCase second{1, 32, 14, 14, 64, 3, 3, 1, 1, {1, 1, 1, 1}};  // K = 288: im2row
  const QConvCase strided{1, 1, 9, 9, 4, 3, 3, 2, 2, {1, 1, 1, 1}};     // K = 9, stride 2: im2row
  auto describe = [](const QConvCase& k) {
    const Graph g = qconv_graph(k, 8, false, true, false, false, 1);
    const Node& node = g.nodes.back();
    std::vector<const Tensor*> constants;
    for (const auto& in : node.inputs) constants.push_back(g.initializers.count(in) ? &g.initializers.at(in) : nullptr);
    const Op& op = find_op(node.op);
    return op.describe(node, op.prepare(node, constants).get());
  };
  const Isa best = active_isa();
  set_max_isa(Isa::Reference);
  EXPECT_THAT(describe(first), ::testing::StartsWith("qconv2d_ref (declined: qconv_direct_s8__avx512vnni: "));
  if (best >= Isa::Avx2) {
    set_max_isa(Isa::Avx2);
    EXPECT_THAT(describe(first), ::testing::StartsWith("qconv_direct_s8__avx2 (declined: qconv_direct_s8__avx512vnni: "));
    EXPECT_THAT(describe(second), ::testing::HasSubstr("qconv_direct_s8__avx2: K = C/group*kh*kw is above 32"));
    EXPECT_THAT(describe(second), ::testing::StartsWith("qconv_im2row_qgemm"));
    EXPECT_THAT(describe(strided), ::testing::HasSubstr("qconv_direct_s8__avx2: stride_w is not 1"));
  } else {
    std::cout << "[ SKIPPED ] AVX2 choices: the CPU lacks AVX2\n";
  }
  if (best >= Isa::Avx512Vnni) {
    set_max_isa(Isa::Avx512Vnni);
    EXPECT_EQ(describe(first), "qconv_direct_s8__avx512vnni");
  } else {
    std::cout << "[ SKIPPED ] AVX-512 VNNI choices: the CPU lacks AVX-512 VNNI\n";
  }
  set_max_isa(Isa::Avx512Vnni);
}

TEST(QConv, MatchesTheFloatConvolutionOfTheDequantizedValues) {
  // Direct check of the arithmetic: f32 output = input_scale * weight_scale * sum (x - zx)(w - zw) + bias.
  const QConvCase k{1, 2, 4, 3, 3, 3, 3, 1, 1, {1, 1, 1, 1}};
  const Graph g = qconv_graph(k, 8, true, true, false, true, 3);
  const Tensor x = random_s8({1, 2, 4, 3}, 5, -128, 127);
  Executor run(g);
  run.input("x") = x;
  run.forward();
  const Tensor& y = run.value("y");
  const std::vector<int32_t> w = unpack_codes(g.initializers.at("w"), {3, 18});
  for (int64_t m = 0; m < 3; ++m)
    for (int64_t oy = 0; oy < 4; ++oy)
      for (int64_t ox = 0; ox < 3; ++ox) {
        double acc = g.initializers.at("b").data<int32_t>()[m];
        for (int64_t c = 0; c < 2; ++c)
          for (int64_t i = 0; i < 3; ++i)
            for (int64_t j = 0; j < 3; ++j) {
              const int64_t iy = oy - 1 + i, ix = ox - 1 + j;
              if (iy < 0 || iy >= 4 || ix < 0 || ix >= 3) continue;
              acc += (x.data<int8_t>()[(c * 4 + iy) * 3 + ix] + 7.0) *
                     (w[m * 18 + (c * 3 + i) * 3 + j] - g.initializers.at("z").data<int32_t>()[m]);
            }
        const double expected = acc * 0.02 * g.initializers.at("s").data<float>()[m];
        EXPECT_NEAR(y.data<float>()[(m * 4 + oy) * 3 + ox], expected, 1e-5 * std::max(1.0, std::abs(expected)));
      }
}

TEST(QConv, RejectsBadGroupsAndInputs) {
  QConvCase k{1, 2, 4, 4, 2, 3, 3, 1, 1, {1, 1, 1, 1}};
  Graph g = qconv_graph(k, 8, false, true, false, false, 1);
  g.nodes[0].attributes["group"] = 3;
  EXPECT_LOWBIT_ERROR(g.infer_shapes(), "group 3 must divide in_channels (2)");
  g.nodes[0].attributes["group"] = 0;
  EXPECT_LOWBIT_ERROR(g.infer_shapes(), "attribute 'group' must be positive");
  g = qconv_graph(k, 8, false, true, false, false, 1);
  g.inputs[0].shape = {-1, 3, 4, 4};
  EXPECT_LOWBIT_ERROR(g.infer_shapes(), "must have 2 channels");
}

TEST(QConv, MaxPoolOnS8IsTheMaxOfTheCodes) {
  Graph g;
  g.inputs.push_back({"x", DType::S8, {-1, 2, 5, 5}});
  g.add_node({"y", "MaxPool2D", {"x"}, {"y"}, {{"kernel_shape", Shape{2, 2}}, {"strides", Shape{2, 2}}, {"pads", Shape{0, 0, 1, 1}}}});
  g.outputs = {"y"};
  g.validate();
  EXPECT_EQ(g.infer_shapes().at("y").dtype, DType::S8);
  const Tensor x = random_s8({3, 2, 5, 5}, 9, -128, 127);
  Executor run(g);
  run.input("x") = x;
  run.forward();
  const Tensor& y = run.value("y");
  ASSERT_EQ(y.shape(), (Shape{3, 2, 3, 3}));
  for (int64_t p = 0; p < 6; ++p)
    for (int64_t oy = 0; oy < 3; ++oy)
      for (int64_t ox = 0; ox < 3; ++ox) {
        int best = -129;
        for (int64_t iy = 2 * oy; iy < std::min<int64_t>(2 * oy + 2, 5); ++iy)
          for (int64_t ix = 2 * ox; ix < std::min<int64_t>(2 * ox + 2, 5); ++ix)
            best = std::max<int>(best, x.data<int8_t>()[p * 25 + iy * 5 + ix]);
        EXPECT_EQ(y.data<int8_t>()[(p * 3 + oy) * 3 + ox], best);
      }
}

// A small CNN in the reference CNN's pattern (its second convolution grouped), trained briefly on real data.
struct TrainedCnn {
  DatasetSplits data;
  Graph model;
  Dataset test;
  std::map<std::string, Calibration> ranges;
  double float_accuracy = 0;
};
const TrainedCnn& trained_cnn() {
  static const TrainedCnn t = [] {
    TrainedCnn t;
    t.data = load_dataset_dir(testing::test_dataset_dir());
    const nlohmann::json arch = nlohmann::json::parse(R"({"layers": [
      {"type": "reshape", "shape": [1, 28, 28]},
      {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "bias": false},
      {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
      {"type": "conv2d", "filters": 8, "kernel": 3, "stride": 2, "padding": "same", "groups": 4},
      {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
      {"type": "flatten"}, {"type": "dense", "units": 32, "activation": "relu"}, {"type": "dense", "units": 10},
      {"type": "softmax"}]})");
    t.model = build_model({arch.dump()}, {28, 28}, 10, 0);
    TrainOptions o;
    o.epochs = 1;
    set_num_threads(2);
    lowbit::train(t.model, t.data.train.head(4000), o);
    t.test = t.data.test.head(2000);
    CalibrationOptions c;
    c.samples = 500;
    t.ranges["minmax"] = calibrate(t.model, t.data.train, c);
    t.float_accuracy = evaluate(t.model, t.test).accuracy;
    return t;
  }();
  return t;
}

// Logits of `model` (its last node is the softmax: evaluated on the value before it).
Tensor logits(const Graph& model, const Dataset& data, const std::string& value) {
  Executor run(model);
  std::vector<uint32_t> idx(static_cast<size_t>(data.size()));
  std::iota(idx.begin(), idx.end(), 0u);
  gather_batch(data, idx, model, run.input("image"));
  run.forward();
  return run.value(value).clone();
}

// The bytes of `values` after running `model` on the first `count` images of `data`.
std::vector<uint8_t> value_bytes(const Graph& model, const Dataset& data, uint32_t count, std::initializer_list<const char*> values) {
  Executor run(model);
  std::vector<uint32_t> idx(count);
  std::iota(idx.begin(), idx.end(), 0u);
  gather_batch(data, idx, model, run.input("image"));
  run.forward();
  std::vector<uint8_t> bytes;
  for (const char* value : values) testing::append_bytes(run.value(value), bytes);
  return bytes;
}

TEST(FoldBatchNorm, PreservesTheOutputs) {
  const TrainedCnn& t = trained_cnn();
  // Non-trivial statistics after one epoch; make them more so.
  Graph model = t.model;
  for (auto& [name, tensor] : model.initializers) model.initializers[name] = tensor.clone();
  Rng rng(4);
  for (float& v : std::span(model.initializers.at("batchnorm_2.running_mean").data<float>(), 8)) v += rng.uniform(-0.5f, 0.5f);
  for (float& v : std::span(model.initializers.at("batchnorm_2.scale").data<float>(), 8)) v *= rng.uniform(0.5f, 2.0f);
  const Graph folded = fold_batchnorm(model);
  int bn = 0;
  for (const auto& node : folded.nodes) bn += node.op == "BatchNormalization";
  EXPECT_EQ(bn, 0);
  EXPECT_EQ(folded.nodes.size(), model.nodes.size() - 2);
  EXPECT_EQ(folded.initializers.count("conv2d_1.bias"), 1u);  // created: the conv had none
  EXPECT_EQ(folded.initializers.count("batchnorm_1.scale"), 0u);
  const Dataset data = t.data.test.head(500);
  const Tensor a = logits(model, data, "dense_2"), b = logits(folded, data, "dense_2");
  float lo = 0, hi = 0, diff = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    lo = std::min(lo, a.data<float>()[i]);
    hi = std::max(hi, a.data<float>()[i]);
    diff = std::max(diff, std::abs(a.data<float>()[i] - b.data<float>()[i]));
  }
  // The stated bound: max |logit difference| <= 1e-4 of the logit range (float rounding only).
  EXPECT_LE(diff, 1e-4f * (hi - lo)) << "range " << hi - lo;
  // The model itself is unchanged.
  EXPECT_EQ(model.nodes.size(), t.model.nodes.size());
}

TEST(QuantizeCnn, FullInt8IsIntegerOnlyBitExactAndAccurate) {
  const TrainedCnn& t = trained_cnn();
  const auto layers = quantizable_layers(t.model);
  EXPECT_EQ(layers, (std::vector<std::string>{"conv2d_1", "conv2d_2", "dense_1", "dense_2"}));
  for (int bits : {8, 4}) {
    QuantPlan plan;
    plan.defaults.weight_bits = bits;
    Graph q = quantize_model(t.model, plan, t.ranges);
    int qconv = 0, quantize = 0, requantize = 0, dequantize = 0;
    for (const auto& node : q.nodes) {
      EXPECT_NE(node.op, "Conv2D");
      EXPECT_NE(node.op, "BatchNormalization");
      EXPECT_NE(node.op, "Relu");
      qconv += node.op == "QConv2D";
      quantize += node.op == "QuantizeLinear";
      requantize += node.op == "Requantize";
      dequantize += node.op == "DequantizeLinear" && q.producer(node.inputs[0]) >= 0;  // not the input scaling
    }
    EXPECT_EQ(qconv, 2);
    EXPECT_EQ(quantize, 0);
    EXPECT_EQ(requantize, 1);  // the image bytes straight to the first convolution's grid
    EXPECT_EQ(dequantize, 0);
    const auto info = q.infer_shapes();
    EXPECT_EQ(info.at("maxpool2d_1").dtype, DType::S8);
    EXPECT_EQ(info.at("flatten_1").dtype, DType::S8);
    const double accuracy = evaluate(q, t.test).accuracy;
    EXPECT_NEAR(accuracy, t.float_accuracy, bits == 8 ? 0.01 : 0.03) << bits << "-bit";
    // Reference and fast integer paths agree byte for byte on every value.
    std::vector<std::vector<uint8_t>> outputs;
    const std::vector<Isa> levels = testing::isa_levels();
    for (Isa isa : levels) {
      set_max_isa(isa);
      outputs.push_back(value_bytes(q, t.test, 300, {"relu_1", "maxpool2d_1", "relu_2", "dense_1", "dense_2"}));
    }
    set_max_isa(Isa::Avx512Vnni);
    for (size_t i = 1; i < outputs.size(); ++i) EXPECT_EQ(outputs[0], outputs[i]) << bits << "-bit, " << name_of(levels[i]);
    // Saves, loads, and dequantizes to a float CNN with the same predictions (nearly).
    testing::TempDir dir;
    save_model(q, dir.file("q.lbm"));
    EXPECT_EQ(evaluate(load_model(dir.file("q.lbm")), t.test).accuracy, accuracy);
    const Graph back = dequantize_model(q);
    EXPECT_FALSE(is_quantized(back));
    EXPECT_NEAR(evaluate(back, t.test).accuracy, accuracy, 0.01);
  }
}

TEST(QuantizeCnn, PartialBlockWeightsBySensitivityKeepConvolutionsInRows) {
  // Partial mode chosen by sensitivity with 4-bit blocks of 32 (the sweep found it refused): each
  // convolution is measured and quantized with whole rows, as full and dynamic modes do; the
  // dense layers get blocks.
  const TrainedCnn& t = trained_cnn();
  QuantizeOptions o;
  o.mode = QuantMode::Partial;
  o.weight_bits = 4;
  o.group_size = 32;
  o.ranges = t.ranges;
  o.calibration_data = &t.data.train;
  o.validation_samples = 1000;
  const QuantizeResult r = quantize(t.model, o);
  ASSERT_EQ(r.sensitivity.size(), 4u);  // two convolutions, two dense layers
  std::map<std::string, std::string> op;
  for (const auto& node : r.model.nodes) op[node.name] = node.op;
  int blocks = 0, float_layers = 0;
  for (const char* layer : {"conv2d_1", "conv2d_2", "dense_1", "dense_2"}) {
    blocks += op.at(layer) == "BlockQDense";
    float_layers += op.at(layer) == "Conv2D" || op.at(layer) == "Dense";
    EXPECT_NE(op.at(layer), "BlockQConv2D") << layer;
  }
  EXPECT_EQ(float_layers, 1);  // keep_float = 1: the most sensitive stays float
  EXPECT_GE(blocks, 1);
}

TEST(QuantizeCnn, PartialAndDynamicModes) {
  const TrainedCnn& t = trained_cnn();
  QuantPlan partial;
  partial.mode = QuantMode::Partial;
  partial.layers["conv2d_2"] = LayerRule{};
  Graph q = quantize_model(t.model, partial, t.ranges);
  std::map<std::string, std::string> op;
  for (const auto& node : q.nodes) op[node.name] = node.op;
  EXPECT_EQ(op.at("conv2d_1"), "Conv2D");
  EXPECT_EQ(op.at("conv2d_2"), "QConv2D");
  EXPECT_EQ(op.at("dense_1"), "Dense");
  EXPECT_EQ(q.infer_shapes().at("maxpool2d_1").dtype, DType::F32);  // float before the integer conv
  EXPECT_EQ(q.infer_shapes().at("relu_2").dtype, DType::F32);       // no integer consumer: f32 output
  EXPECT_NEAR(evaluate(q, t.test).accuracy, t.float_accuracy, 0.01);
  // Dynamic: every convolution and dense layer quantizes its input at run time (per image or per
  // batch), except the first convolution, which takes the image bytes as exact s8 codes (an
  // integer QConv2D with f32 output); reference and fast paths agree bit for bit, and the model
  // dequantizes back to float.
  for (const char* granularity : {"row", "tensor"}) {
    QuantPlan dynamic;
    dynamic.mode = QuantMode::Dynamic;
    dynamic.dynamic_granularity = granularity;
    q = quantize_model(t.model, dynamic, {});
    int dynamic_convs = 0;
    for (const auto& node : q.nodes) {
      EXPECT_NE(node.op, "Conv2D");
      EXPECT_EQ(node.op == "QConv2D", node.name == "conv2d_1") << node.name;
      dynamic_convs += node.op == "DynamicQConv2D";
    }
    EXPECT_EQ(dynamic_convs, 1);
    for (const auto& node : q.nodes) {
      if (node.name == "conv2d_1") {
        EXPECT_EQ(q.infer_shapes().at(node.outputs[0]).dtype, DType::F32);  // f32 output
      }
    }
    EXPECT_NEAR(evaluate(q, t.test).accuracy, t.float_accuracy, 0.01) << granularity;
    std::vector<std::vector<uint8_t>> outputs;
    for (Isa isa : testing::isa_levels()) {
      set_max_isa(isa);
      outputs.push_back(value_bytes(q, t.test, 70, {"dense_2"}));
    }
    set_max_isa(Isa::Avx512Vnni);
    for (size_t i = 1; i < outputs.size(); ++i) EXPECT_EQ(outputs[i], outputs[0]) << granularity << ", path " << i;
    const Graph back = dequantize_model(q);
    EXPECT_FALSE(is_quantized(back));
    EXPECT_NEAR(evaluate(back, t.test).accuracy, evaluate(q, t.test).accuracy, 0.01);
  }
}

}  // namespace
}  // namespace lowbit
