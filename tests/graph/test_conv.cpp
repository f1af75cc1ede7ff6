// Conv2D, MaxPool2D and Reshape: finite-difference gradient checks, the im2col + GEMM forward
// against the direct reference convolution on awkward shapes, shape-inference errors, and the
// example CNN built from its model description and trained for a step.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <nlohmann/json.hpp>

#include "graph/gradcheck.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::fill_uniform;
using testing::random;

// Runs `node`'s op forward on `inputs`; returns the first output.
Tensor run_forward(const Node& node, const std::vector<Tensor>& inputs) {
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  Tensor y(DType::F32, {1});
  std::vector<Tensor*> out = {&y};
  find_op(node.op).forward(node, in, out);
  return y;
}

Node conv(Attributes attributes, bool bias = true) {
  Node node{"conv", "Conv2D", {"x", "w"}, {"y"}, std::move(attributes)};
  if (bias) node.inputs.push_back("b");
  return node;
}

// ---- Gradient checks ---------------------------------------------------------------------------

TEST(ConvGradCheck, Conv2DPadded) {
  check_gradients(conv({{"pads", Shape{1, 1, 1, 1}}}), {random({2, 3, 5, 5}, 1), random({4, 3, 3, 3}, 2), random({4}, 3)});
}

TEST(ConvGradCheck, Conv2DWithoutBias) {
  check_gradients(conv(Attributes{}, false), {random({2, 2, 4, 5}, 4), random({3, 2, 2, 3}, 5)});
}

TEST(ConvGradCheck, Conv2DStride2OddSizesAsymmetricPads) {
  check_gradients(conv({{"strides", Shape{2, 2}}, {"pads", Shape{1, 0, 0, 1}}}),
                  {random({2, 2, 7, 6}, 6), random({3, 2, 3, 2}, 7), random({3}, 8)});
}

TEST(ConvGradCheck, Conv2DDilation2) {
  check_gradients(conv({{"dilations", Shape{2, 2}}, {"pads", Shape{2, 1, 2, 1}}}),
                  {random({1, 2, 7, 6}, 9), random({2, 2, 3, 3}, 10), random({2}, 11)});
}

TEST(ConvGradCheck, Conv2DGroups) {
  check_gradients(conv({{"group", 2}, {"pads", Shape{1, 1, 1, 1}}, {"strides", Shape{1, 2}}}),
                  {random({2, 4, 5, 5}, 12), random({6, 2, 3, 3}, 13), random({6}, 14)});
}

TEST(ConvGradCheck, Conv2DDepthwise) {
  check_gradients(conv({{"group", 3}, {"pads", Shape{1, 1, 1, 1}}}),
                  {random({1, 3, 4, 5}, 15), random({3, 1, 3, 3}, 16), random({3}, 17)});
}

TEST(ConvGradCheck, Conv2DWithFusedRelu) {
  // Inputs whose pre-activations are all at least 0.1 away from ReLU's kink (a perturbation of
  // 1e-2 in one input moves a pre-activation by at most 1e-2).
  Node linear = conv({{"pads", Shape{1, 0, 1, 0}}});
  Tensor x = random({1, 2, 4, 4}, 18), w = random({2, 2, 3, 3}, 19), b = random({2}, 20);
  bool found = false;
  for (uint64_t attempt = 0; attempt < 200 && !found; ++attempt) {
    fill_uniform(b, 300 + attempt);
    Tensor z = run_forward(linear, {x, w, b});
    found = true;
    for (int64_t i = 0; i < z.numel(); ++i) found &= std::fabs(z.data<float>()[i]) > 0.1f;
  }
  ASSERT_TRUE(found);
  Node fused = conv({{"pads", Shape{1, 0, 1, 0}}, {"activation", "relu"}});
  Tensor y = run_forward(fused, {x, w, b});
  EXPECT_GT(std::count(y.data<float>(), y.data<float>() + y.numel(), 0.0f), 0) << "the ReLU should clip something";
  check_gradients(fused, {x, w, b});
}

// Values 0.05 apart in a shuffled order: no two elements of a window are within 2 * eps, so the
// finite differences never move the argmax.
Tensor distinct_values(Shape shape, uint64_t seed) {
  Tensor t(DType::F32, std::move(shape));
  std::vector<int> order(static_cast<size_t>(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  Rng rng(seed);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(static_cast<uint32_t>(i))]);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = 0.05f * static_cast<float>(order[i]) - 2.0f;
  return t;
}

TEST(PoolGradCheck, MaxPool2DKernel2) {
  check_gradients(Node{"pool", "MaxPool2D", {"x"}, {"y"}, {{"kernel_shape", Shape{2, 2}}, {"strides", Shape{2, 2}}}},
                  {distinct_values({2, 3, 4, 6}, 21)});
}

TEST(PoolGradCheck, MaxPool2DOverlappingPaddedOdd) {
  check_gradients(Node{"pool", "MaxPool2D", {"x"}, {"y"}, {{"kernel_shape", Shape{3, 3}}, {"strides", Shape{2, 2}}, {"pads", Shape{1, 1, 1, 1}}}},
                  {distinct_values({1, 2, 5, 7}, 22)});
}

TEST(PoolGradCheck, MaxPool2DRectangular) {
  check_gradients(Node{"pool", "MaxPool2D", {"x"}, {"y"}, {{"kernel_shape", Shape{2, 3}}, {"strides", Shape{1, 2}}}},
                  {distinct_values({2, 1, 3, 7}, 23)});
}

TEST(ReshapeGradCheck, Reshape) {
  check_gradients(Node{"r", "Reshape", {"x"}, {"y"}, {{"shape", Shape{2, -1, 3}}}}, {random({2, 4, 6}, 24)});
}

// ---- Forward values ----------------------------------------------------------------------------

TEST(Pool, MaxPool2DTiesGoToTheFirstMaximum) {
  Node node{"pool", "MaxPool2D", {"x"}, {"y"}, {{"kernel_shape", Shape{2, 2}}}};
  Tensor x = Tensor::from_vector({1, 1, 2, 2}, std::vector<float>{1, 3, 3, 2});
  Tensor y = run_forward(node, {x});
  ASSERT_EQ(y.shape(), (Shape{1, 1, 1, 1}));
  EXPECT_EQ(y.data<float>()[0], 3.0f);
  Tensor dy = Tensor::from_vector({1, 1, 1, 1}, std::vector<float>{5});
  Tensor dx(DType::F32, {1});
  std::vector<const Tensor*> in = {&x}, out = {&y}, out_grad = {&dy};
  std::vector<Tensor*> in_grad = {&dx};
  find_op("MaxPool2D").backward(node, in, out, out_grad, in_grad);
  EXPECT_EQ(std::vector<float>(dx.data<float>(), dx.data<float>() + 4), (std::vector<float>{0, 5, 0, 0}));
}

TEST(Conv, Conv2DMatchesHandComputedValues) {
  // 1x1x3x3 input 1..9, 2x2 kernel of ones, bias 0.5, stride 1, no padding: window sums + 0.5.
  Tensor x = Tensor::from_vector({1, 1, 3, 3}, std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8, 9});
  Tensor w = Tensor::from_vector({1, 1, 2, 2}, std::vector<float>{1, 1, 1, 1});
  Tensor b = Tensor::from_vector({1}, std::vector<float>{0.5f});
  Tensor y = run_forward(conv(Attributes{}), {x, w, b});
  ASSERT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(std::vector<float>(y.data<float>(), y.data<float>() + 4), (std::vector<float>{12.5f, 16.5f, 24.5f, 28.5f}));
}

struct ConvCase {
  const char* what;
  Shape x, w;
  Attributes attributes;
};

// The im2col + GEMM path against the direct convolution (Isa::Reference selects it). Both add the
// same products in the same order up to the GEMM's blocking, so they agree within the GEMM bound
// of kernels/gemm.h, |fast - ref| <= 1e-5 * K * max|x| * max|w|, K = in_channels/group * kh * kw,
// plus a few ulp of the bias (all values here lie in [-1, 1]).
TEST(Conv, Conv2DIm2colMatchesReferenceOnAwkwardShapes) {
  const std::vector<ConvCase> cases = {
      {"1x1 image, 1x1 kernel", {3, 2, 1, 1}, {4, 2, 1, 1}, Attributes{}},
      {"1x1 image, 3x3 kernel, padding 1", {2, 3, 1, 1}, {2, 3, 3, 3}, {{"pads", Shape{1, 1, 1, 1}}}},
      {"1 channel", {2, 1, 6, 5}, {3, 1, 3, 3}, Attributes{}},
      {"stride 2, odd sizes", {2, 3, 7, 9}, {5, 3, 3, 3}, {{"strides", Shape{2, 2}}}},
      {"stride 2, odd sizes, padding", {2, 3, 7, 9}, {5, 3, 3, 3}, {{"strides", Shape{2, 2}}, {"pads", Shape{1, 1, 1, 1}}}},
      {"asymmetric stride and padding", {1, 2, 8, 5}, {3, 2, 2, 3}, {{"strides", Shape{3, 1}}, {"pads", Shape{0, 2, 1, 0}}}},
      {"dilation 2", {2, 2, 9, 8}, {4, 2, 3, 3}, {{"dilations", Shape{2, 2}}}},
      {"dilation 2, padding 2", {2, 2, 9, 8}, {4, 2, 3, 3}, {{"dilations", Shape{2, 2}}, {"pads", Shape{2, 2, 2, 2}}}},
      {"dilation and stride", {1, 3, 11, 10}, {2, 3, 3, 2}, {{"dilations", Shape{2, 3}}, {"strides", Shape{2, 2}}, {"pads", Shape{1, 2, 0, 1}}}},
      {"padding wider than the kernel reach", {1, 1, 2, 2}, {1, 1, 2, 2}, {{"pads", Shape{3, 3, 3, 3}}}},
      {"groups 2", {2, 4, 6, 6}, {6, 2, 3, 3}, {{"group", 2}, {"pads", Shape{1, 1, 1, 1}}}},
      {"depthwise", {2, 5, 7, 6}, {5, 1, 3, 3}, {{"group", 5}, {"pads", Shape{1, 1, 1, 1}}}},
      {"depthwise multiplier 2, stride 2", {1, 3, 8, 9}, {6, 1, 3, 3}, {{"group", 3}, {"strides", Shape{2, 2}}, {"pads", Shape{1, 1, 1, 1}}}},
      {"cnn-teacher conv2 shape", {3, 32, 14, 14}, {64, 32, 3, 3}, {{"pads", Shape{1, 1, 1, 1}}}},
      {"several im2col chunks", {5, 64, 48, 48}, {4, 64, 3, 3}, {{"pads", Shape{1, 1, 1, 1}}}},
  };
  if (active_isa() == Isa::Reference) GTEST_SKIP() << "no fast path on this CPU (or LOWBIT_ISA=reference)";
  uint64_t seed = 1000;
  for (const auto& c : cases) {
    for (const char* activation : {"none", "relu"}) {
      for (bool bias : {true, false}) {
        Attributes attributes = c.attributes;
        attributes["activation"] = activation;
        Node node = conv(attributes, bias);
        std::vector<Tensor> inputs = {random(c.x, ++seed), random(c.w, ++seed)};
        if (bias) inputs.push_back(random({c.w[0]}, ++seed));
        set_max_isa(Isa::Reference);
        Tensor ref = run_forward(node, inputs);
        set_max_isa(Isa::Avx512Vnni);
        Tensor fast = run_forward(node, inputs);
        ASSERT_EQ(fast.shape(), ref.shape()) << c.what;
        const int64_t k = c.w[1] * c.w[2] * c.w[3];
        const double bound = 1e-5 * static_cast<double>(k) + 1e-6;
        double worst = 0;
        for (int64_t i = 0; i < ref.numel(); ++i)
          worst = std::max(worst, std::fabs(double(fast.data<float>()[i]) - ref.data<float>()[i]));
        EXPECT_LE(worst, bound) << c.what << ", activation " << activation << ", bias " << bias;
      }
    }
  }
}

TEST(Conv, Conv2DResultsDoNotDependOnTheThreadCount) {
  const int threads = num_threads();
  Node node = conv({{"pads", Shape{1, 1, 1, 1}}, {"activation", "relu"}});
  std::vector<Tensor> inputs = {random({4, 8, 13, 11}, 40), random({16, 8, 3, 3}, 41), random({16}, 42)};
  Tensor dy = random({4, 16, 13, 11}, 43);
  std::vector<std::vector<float>> results;
  for (int t : {1, 2}) {
    set_num_threads(t);
    Tensor y = run_forward(node, inputs);
    std::vector<Tensor> grads(3, Tensor(DType::F32, {1}));
    std::vector<const Tensor*> in = {&inputs[0], &inputs[1], &inputs[2]}, out = {&y}, out_grad = {&dy};
    std::vector<Tensor*> in_grad = {&grads[0], &grads[1], &grads[2]};
    find_op("Conv2D").backward(node, in, out, out_grad, in_grad);
    std::vector<float> all(y.data<float>(), y.data<float>() + y.numel());
    for (auto& g : grads) all.insert(all.end(), g.data<float>(), g.data<float>() + g.numel());
    results.push_back(all);
  }
  set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
}

// A batch that im2col splits into several chunks gets the same gradients as its images one by one
// (dW and db summed over the images).
TEST(Conv, Conv2DBackwardAcrossChunksMatchesPerImage) {
  Node node = conv({{"pads", Shape{1, 1, 1, 1}}});
  const Shape xs = {5, 64, 48, 48}, ws = {4, 64, 3, 3};
  Tensor x = random(xs, 50), w = random(ws, 51), b = random({4}, 52);
  Tensor dy = random({5, 4, 48, 48}, 53);
  auto grads_of = [&](const Tensor& xi, const Tensor& dyi) {
    Tensor y = run_forward(node, {xi, w, b});
    std::vector<Tensor> g(3, Tensor(DType::F32, {1}));
    std::vector<const Tensor*> in = {&xi, &w, &b}, out = {&y}, out_grad = {&dyi};
    std::vector<Tensor*> in_grad = {&g[0], &g[1], &g[2]};
    find_op("Conv2D").backward(node, in, out, out_grad, in_grad);
    return g;
  };
  std::vector<Tensor> whole = grads_of(x, dy);
  std::vector<double> dw(static_cast<size_t>(w.numel()), 0.0), db(4, 0.0);
  const int64_t image = 64 * 48 * 48, out_image = 4 * 48 * 48;
  for (int64_t n = 0; n < 5; ++n) {
    Tensor xi = Tensor::from_vector({1, 64, 48, 48}, std::span<const float>(x.data<float>() + n * image, image));
    Tensor dyi = Tensor::from_vector({1, 4, 48, 48}, std::span<const float>(dy.data<float>() + n * out_image, out_image));
    std::vector<Tensor> g = grads_of(xi, dyi);
    double worst = 0;
    for (int64_t i = 0; i < image; ++i)
      worst = std::max(worst, std::fabs(double(g[0].data<float>()[i]) - whole[0].data<float>()[n * image + i]));
    EXPECT_LE(worst, 1e-5) << "dX of image " << n;
    for (int64_t i = 0; i < w.numel(); ++i) dw[i] += g[1].data<float>()[i];
    for (int64_t i = 0; i < 4; ++i) db[i] += g[2].data<float>()[i];
  }
  // dW sums 5 * 48 * 48 products of values in [-1, 1] per entry.
  for (int64_t i = 0; i < w.numel(); ++i) EXPECT_NEAR(whole[1].data<float>()[i], dw[i], 2e-3) << "dW " << i;
  for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(whole[2].data<float>()[i], db[i], 2e-3) << "db " << i;
}

TEST(Reshape, KeepsTheBatchAndSharesTheBuffer) {
  Node node{"r", "Reshape", {"x"}, {"y"}, {{"shape", Shape{1, 28, 28}}}};
  const Shape in[] = {{-1, 28, 28}};
  EXPECT_EQ(find_op("Reshape").infer_shapes(node, in), (std::vector<Shape>{{-1, 1, 28, 28}}));
  Tensor x = random({3, 28, 28}, 60);
  Tensor y = run_forward(node, {x});
  EXPECT_EQ(y.shape(), (Shape{3, 1, 28, 28}));
  EXPECT_EQ(y.raw(), x.raw());
}

// ---- Shape-inference errors --------------------------------------------------------------------

using testing::infer;

TEST(Conv, Conv2DShapeInference) {
  EXPECT_EQ(infer(conv({{"pads", Shape{1, 1, 1, 1}}}), {{-1, 1, 28, 28}, {32, 1, 3, 3}, {32}}),
            (std::vector<Shape>{{-1, 32, 28, 28}}));
  EXPECT_EQ(infer(conv({{"strides", Shape{2, 2}}, {"dilations", Shape{2, 2}}}, false), {{-1, 4, 11, 10}, {8, 4, 3, 3}}),
            (std::vector<Shape>{{-1, 8, 4, 3}}));  // (11 - 5) / 2 + 1, (10 - 5) / 2 + 1
  EXPECT_EQ(infer(conv({{"group", 4}}, false), {{2, 4, 3, 3}, {8, 1, 3, 3}}), (std::vector<Shape>{{2, 8, 1, 1}}));
}

TEST(Conv, Conv2DShapeErrorsNameTheNode) {
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 28, 28}, {32, 1, 3, 3}, {32}}), "node 'conv' (Conv2D): input must be NCHW");
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 3, 28, 28}, {32, 1, 3, 3}, {32}}), "expects 1 input channels per group");
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 3, 28, 28}}), "expects 2 to 3 inputs, got 1");
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 1, 28, 28}, {32, 1, 3, 3}, {16}}), "bias must be [32]");
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 1, 28, 28}, {32, 3, 3}}), "weight must be [out_channels");
  EXPECT_LOWBIT_ERROR(infer(conv({{"group", 2}}), {{-1, 3, 8, 8}, {4, 1, 3, 3}, {4}}), "group 2 must divide");
  EXPECT_LOWBIT_ERROR(infer(conv({}), {{-1, 1, 2, 8}, {4, 1, 3, 3}, {4}}), "the kernel spans 3 rows");
  EXPECT_LOWBIT_ERROR(infer(conv({{"dilations", Shape{1, 4}}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}), "the kernel spans 9 columns");
  EXPECT_LOWBIT_ERROR(infer(conv({{"strides", Shape{2}}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}),
                      "attribute 'strides' must be a list of 2 integers");
  EXPECT_LOWBIT_ERROR(infer(conv({{"strides", Shape{0, 1}}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}), "'strides' must be positive");
  EXPECT_LOWBIT_ERROR(infer(conv({{"pads", Shape{1, 1, -1, 1}}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}), "must not be negative");
  EXPECT_LOWBIT_ERROR(infer(conv({{"activation", "tanh"}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}), "'activation'");
  EXPECT_LOWBIT_ERROR(infer(conv({{"kernel_shape", Shape{5, 5}}}), {{-1, 1, 8, 8}, {4, 1, 3, 3}, {4}}), "'kernel_shape' 5x5");
}

TEST(Pool, MaxPool2DShapeInferenceAndErrors) {
  auto pool = [](Attributes attributes) { return Node{"pool", "MaxPool2D", {"x"}, {"y"}, std::move(attributes)}; };
  EXPECT_EQ(infer(pool({{"kernel_shape", Shape{2, 2}}, {"strides", Shape{2, 2}}}), {{-1, 32, 28, 28}}),
            (std::vector<Shape>{{-1, 32, 14, 14}}));
  EXPECT_EQ(infer(pool({{"kernel_shape", Shape{3, 3}}, {"strides", Shape{2, 2}}, {"pads", Shape{1, 1, 1, 1}}}), {{1, 2, 7, 8}}),
            (std::vector<Shape>{{1, 2, 4, 4}}));
  EXPECT_LOWBIT_ERROR(infer(pool({}), {{-1, 1, 8, 8}}), "node 'pool' (MaxPool2D): attribute 'kernel_shape' [kh, kw] is required");
  EXPECT_LOWBIT_ERROR(infer(pool({{"kernel_shape", Shape{2, 2}}}), {{-1, 8, 8}}), "input must be NCHW");
  EXPECT_LOWBIT_ERROR(infer(pool({{"kernel_shape", Shape{2, 2}}, {"pads", Shape{2, 0, 0, 0}}}), {{-1, 1, 8, 8}}),
                      "'pads' must be smaller than the kernel");
  EXPECT_LOWBIT_ERROR(infer(pool({{"kernel_shape", Shape{9, 2}}}), {{-1, 1, 8, 8}}), "the kernel spans 9 rows");
  EXPECT_LOWBIT_ERROR(infer(pool({{"kernel_shape", Shape{2, 2}}, {"ceil_mode", 1}}), {{-1, 1, 8, 8}}), "'ceil_mode'");
}

TEST(Reshape, ShapeErrorsNameTheNode) {
  auto reshape = [](Attributes attributes) { return Node{"r", "Reshape", {"x"}, {"y"}, std::move(attributes)}; };
  EXPECT_EQ(infer(reshape({{"shape", Shape{-1, 7}}}), {{5, 28, 28}}), (std::vector<Shape>{{5, 112, 7}}));
  EXPECT_LOWBIT_ERROR(infer(reshape({}), {{-1, 784}}), "node 'r' (Reshape): attribute 'shape'");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"shape", Shape{2, 28, 28}}}), {{-1, 28, 28}}),
                      "cannot reshape samples of [28, 28] (784 values) to [2, 28, 28] (1568 values)");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"shape", Shape{-1, 5}}}), {{-1, 28, 28}}), "cannot reshape samples of [28, 28] to [-1, 5]");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"shape", Shape{-1, -1}}}), {{-1, 28, 28}}), "dimensions must be positive");
  EXPECT_LOWBIT_ERROR(infer(reshape({{"shape", "1x28x28"}}), {{-1, 28, 28}}), "must be a list of integers");
}

// ---- The example CNN ---------------------------------------------------------------------------

TEST(Conv, CnnTeacherBuildsAndTrains) {
  Graph model = build_model(parse_arch(LOWBIT_SOURCE_DIR "/examples/models/cnn-teacher.json"), {28, 28}, 10, 0);
  const auto shapes = model.infer_shapes();
  EXPECT_EQ(shapes.at("reshape_1").shape, (Shape{-1, 1, 28, 28}));
  EXPECT_EQ(shapes.at("conv2d_1").shape, (Shape{-1, 32, 28, 28}));
  EXPECT_EQ(shapes.at("maxpool2d_1").shape, (Shape{-1, 32, 14, 14}));
  EXPECT_EQ(shapes.at("conv2d_2").shape, (Shape{-1, 64, 14, 14}));
  EXPECT_EQ(shapes.at("maxpool2d_2").shape, (Shape{-1, 64, 7, 7}));
  EXPECT_EQ(shapes.at("flatten_1").shape, (Shape{-1, 3136}));
  // conv 32*9 + 32, conv 64*32*9 + 64, dense 3136*128 + 128, dense 128*10 + 10
  EXPECT_EQ(model.parameter_count(), 320 + 18496 + 401536 + 1290);
  // He uniform with fan_in = in_channels * 3 * 3: |w| <= sqrt(6 / 288) for the second conv.
  const Tensor& w2 = model.initializers.at("conv2d_2.weight");
  const float limit = std::sqrt(6.0f / 288.0f);
  EXPECT_LE(*std::max_element(w2.data<float>(), w2.data<float>() + w2.numel()), limit);
  EXPECT_GT(*std::max_element(w2.data<float>(), w2.data<float>() + w2.numel()), 0.9f * limit);

  // A few SGD steps on one batch of 8 random images lower its loss.
  Graph g = model;
  g.nodes.pop_back();  // train on the logits
  g.inputs.push_back({"labels", DType::S32, {-1}});
  g.add_node({"loss", "SoftmaxCrossEntropy", {"dense_2", "labels"}, {"loss"}});
  g.outputs = {"loss"};
  g.validate();
  Executor run(g, true);
  run.input("image") = testing::random_bytes({8, 28, 28}, 70);
  Tensor& labels = run.input("labels");
  labels = Tensor(DType::S32, {8});
  for (int i = 0; i < 8; ++i) labels.data<int32_t>()[i] = i % 10;
  ASSERT_EQ(run.parameters().size(), 8u);
  run.forward();
  const float first = run.value("loss").data<float>()[0];
  for (int step = 0; step < 3; ++step) {
    run.backward("loss");
    for (auto& p : run.parameters()) {
      float* v = p.value.data<float>();
      for (int64_t i = 0; i < p.value.numel(); ++i) v[i] -= 0.05f * p.grad->data<float>()[i];
    }
    run.forward();
  }
  const float last = run.value("loss").data<float>()[0];
  EXPECT_TRUE(std::isfinite(first));
  EXPECT_LT(last, first);

  // And the training loop runs it end to end on a tiny data set.
  Dataset data;
  data.images = Tensor(DType::U8, {40, 28, 28});
  for (int64_t i = 0; i < data.images.numel(); ++i) data.images.data<uint8_t>()[i] = static_cast<uint8_t>(i * 37 % 251);
  for (int i = 0; i < 40; ++i) data.labels.push_back(static_cast<int32_t>(i % 10));
  data.num_classes = 10;
  TrainOptions options;
  options.epochs = 1;
  options.batch_size = 16;
  TrainReport report = train(model, data, options);
  ASSERT_EQ(report.epochs.size(), 1u);
  EXPECT_TRUE(std::isfinite(report.epochs[0].loss));
  EXPECT_EQ(evaluate(model, data).count, 40);
}

TEST(Conv, ModelDescriptionLayers) {
  auto build = [](nlohmann::json layers) {
    return build_model({nlohmann::json{{"layers", std::move(layers)}}.dump()}, {12, 12}, 3, 0);
  };
  nlohmann::json head = {{{"type", "reshape"}, {"shape", Shape{1, 12, 12}}}};
  auto with = [&](std::vector<nlohmann::json> middle) {
    nlohmann::json layers = head;
    for (auto& l : middle) layers.push_back(l);
    layers.push_back({{"type", "flatten"}});
    layers.push_back({{"type", "dense"}, {"units", 3}});
    return layers;
  };
  // "same" padding with stride 2: output ceil(12 / 2) = 6, total padding 1, the extra at the end.
  Graph g = build(with({{{"type", "conv2d"}, {"name", "c"}, {"filters", 4}, {"kernel", 3}, {"stride", 2}, {"padding", "same"}, {"bias", false}},
                        {{"type", "maxpool2d"}, {"name", "p"}, {"kernel", {2, 3}}}}));
  const Node& c = g.nodes[g.producer("c")];
  EXPECT_EQ(c.op, "Conv2D");
  EXPECT_EQ(c.inputs.size(), 2u);
  EXPECT_EQ(c.attributes.at("pads"), Attribute({0, 0, 1, 1}));
  EXPECT_EQ(c.attributes.at("strides"), Attribute({2, 2}));
  EXPECT_EQ(g.infer_shapes().at("c").shape, (Shape{-1, 4, 6, 6}));
  EXPECT_EQ(g.nodes[g.producer("p")].attributes.at("strides"), Attribute({2, 3}));  // stride defaults to the kernel
  EXPECT_EQ(g.infer_shapes().at("p").shape, (Shape{-1, 4, 3, 2}));
  // Depthwise with dilation and explicit [ph, pw] padding.
  g = build(with({{{"type", "conv2d"}, {"filters", 2}, {"kernel", 3}, {"padding", {2, 1}}, {"dilation", {2, 1}}},
                  {{"type", "conv2d"}, {"name", "dw"}, {"filters", 4}, {"kernel", {3, 1}}, {"groups", 2}}}));
  EXPECT_EQ(g.initializers.at("dw.weight").shape(), (Shape{4, 1, 3, 1}));
  EXPECT_EQ(g.infer_shapes().at("dw").shape, (Shape{-1, 4, 10, 12}));

  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 4}, {"kernel", 3}, {"strides", 2}}})),
                      "layers[1] (conv2d): unknown field 'strides'");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"kernel", 3}}})), "field 'filters' must be a positive integer");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 4}}})), "field 'kernel'");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 4}, {"kernel", {3, 3, 3}}}})),
                      "field 'kernel' must be an integer or a list of two integers");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 4}, {"kernel", 3}, {"padding", "full"}}})), "field 'padding'");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 3}, {"kernel", 3}, {"groups", 2}}})), "field 'groups' (2)");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "maxpool2d"}, {"kernel", 2}, {"pad", 1}}})), "unknown field 'pad'");
  EXPECT_LOWBIT_ERROR(build({{{"type", "conv2d"}, {"filters", 4}, {"kernel", 3}}, {{"type", "flatten"}}, {{"type", "dense"}, {"units", 3}}}),
                      "add a reshape layer");
  EXPECT_LOWBIT_ERROR(build({{{"type", "reshape"}}, {{"type", "flatten"}}, {{"type", "dense"}, {"units", 3}}}), "field 'shape'");
  EXPECT_LOWBIT_ERROR(build(with({{{"type", "conv2d"}, {"filters", 4}, {"kernel", 13}}})), "the kernel spans 13 rows");
}

}  // namespace
}  // namespace lowbit
