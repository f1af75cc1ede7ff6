// SmoothQuant (smooth_activations, quantize's smooth_alpha) and calibration data of named inputs
// (make_input_dataset, read_npz_dataset, feed_batch).
#include <cmath>

#include "test_util.h"

namespace lowbit {
namespace {

// x [N, 16] -> LayerNorm whose scale makes channel 0 an outlier (x30) -> Dense q [6, 16] and
// Dense k [5, 16]; outputs q and k. Weights and LayerNorm parameters random but fixed.
Graph norm_then_dense(uint64_t seed) {
  Rng rng(seed);
  auto random = [&](Shape shape, float lo, float hi) {
    Tensor t(DType::F32, std::move(shape));
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = rng.uniform(lo, hi);
    return t;
  };
  Graph g;
  g.inputs = {{"x", DType::F32, {-1, 16}}};
  Tensor scale = random({16}, 0.5f, 1.5f);
  scale.data<float>()[0] = 30.0f;
  g.initializers = {{"ln.scale", scale}, {"ln.bias", random({16}, -0.2f, 0.2f)}, {"q.weight", random({6, 16}, -0.5f, 0.5f)},
                    {"q.bias", random({6}, -0.1f, 0.1f)}, {"k.weight", random({5, 16}, -0.5f, 0.5f)}};
  g.add_node({"ln", "LayerNormalization", {"x", "ln.scale", "ln.bias"}, {"h"}, {{"axis", -1}}});
  g.add_node({"q", "Dense", {"h", "q.weight", "q.bias"}, {"q"}});
  g.add_node({"k", "Dense", {"h", "k.weight"}, {"k"}});
  g.outputs = {"q", "k"};
  g.validate();
  return g;
}

Dataset features(int64_t count, uint64_t seed) {
  Tensor x(DType::F32, {count, 16});
  testing::fill_uniform(x, seed, -2, 2);
  return make_dataset(x, std::vector<int32_t>(static_cast<size_t>(count), 0), 1);
}

std::map<std::string, Tensor> outputs(const Graph& g, const Dataset& data) {
  Executor run(g);
  run.input("x") = data.images;
  run.forward();
  std::map<std::string, Tensor> out;
  for (const auto& name : g.outputs) out[name] = run.value(name).clone();
  return out;
}

TEST(Smooth, KeepsTheFunctionAndFlattensTheOutlierChannel) {
  const Graph g = norm_then_dense(1);
  const Dataset data = features(128, 2);
  std::vector<std::string> smoothed;
  const Graph s = smooth_activations(g, data, {.alpha = 0.5}, &smoothed);
  EXPECT_EQ(smoothed, std::vector<std::string>{"ln"});
  EXPECT_EQ(g.initializers.at("ln.scale").data<float>()[0], 30.0f);  // the input graph is not modified
  const auto want = outputs(g, data), got = outputs(s, data);
  for (const auto& [name, t] : want)
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_NEAR(got.at(name).data<float>()[i], t.data<float>()[i], 1e-5 * (1 + std::fabs(t.data<float>()[i]))) << name << " " << i;
  // The outlier channel's scale shrank relative to the others (alpha 0.5: by about its square root).
  const float* before = g.initializers.at("ln.scale").data<float>();
  const float* after = s.initializers.at("ln.scale").data<float>();
  EXPECT_LT(after[0] / after[1], 0.5f * before[0] / before[1]);
  // When another reader needs the LayerNorm's own values (here: a graph output, as BERT's residual
  // stream), a Mul by 1 / s feeds the Dense layers instead; the LayerNorm is untouched.
  Graph post = g;
  post.outputs.push_back("h");
  const Graph m = smooth_activations(post, data, {.alpha = 0.5});
  EXPECT_EQ(m.initializers.at("ln.scale").data<float>()[0], 30.0f);
  ASSERT_EQ(m.nodes.size(), 4u);
  EXPECT_EQ(m.nodes[1].op, "Mul");
  EXPECT_EQ(m.nodes[2].inputs[0], "h.smooth");
  const auto want_post = outputs(post, data), got_post = outputs(m, data);
  for (const auto& [name, t] : want_post)
    for (int64_t i = 0; i < t.numel(); ++i)
      ASSERT_NEAR(got_post.at(name).data<float>()[i], t.data<float>()[i], 1e-5 * (1 + std::fabs(t.data<float>()[i]))) << name << " " << i;
  // alpha outside [0, 1] is refused.
  EXPECT_THROW(smooth_activations(g, data, {.alpha = 1.5}), Error);
}

double output_mse(const Graph& reference, const Graph& quantized, const Dataset& data) {
  const auto want = outputs(reference, data), got = outputs(quantized, data);
  double se = 0;
  int64_t n = 0;
  for (const auto& [name, t] : want)
    for (int64_t i = 0; i < t.numel(); ++i, ++n) se += std::pow(double(got.at(name).data<float>()[i]) - t.data<float>()[i], 2);
  return se / double(n);
}

TEST(Smooth, StaticInt8IsMoreAccurateWithSmoothing) {
  const Graph g = norm_then_dense(3);
  const Dataset calib = features(256, 4), test = features(256, 5);
  auto static_int8 = [&](std::optional<double> alpha) {
    QuantizeOptions o;
    o.calibration_data = &calib;
    o.smooth_alpha = alpha;
    return quantize(g, o).model;
  };
  const double plain = output_mse(g, static_int8(std::nullopt), test), smooth = output_mse(g, static_int8(0.5), test);
  std::printf("[   INFO   ] static int8 output MSE: %.3g plain, %.3g with --smooth 0.5\n", plain, smooth);
  EXPECT_LT(smooth, 0.5 * plain);
  QuantizeOptions dynamic;
  dynamic.mode = QuantMode::Dynamic;
  dynamic.smooth_alpha = 0.5;
  dynamic.calibration_data = &calib;
  EXPECT_LOWBIT_ERROR(quantize(g, dynamic), "for static quantization");
}

// A model of two named inputs calibrates on an .npz holding both (any order, extra arrays ignored).
TEST(NamedInputs, CalibrateFromAnNpz) {
  Graph g;
  g.inputs = {{"a", DType::F32, {-1, 3}}, {"b", DType::F32, {-1, 3}}};
  g.add_node({"sum", "Add", {"a", "b"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  Tensor a(DType::F32, {5, 3}), b(DType::F32, {5, 3});
  for (int64_t i = 0; i < 15; ++i) a.data<float>()[i] = float(i), b.data<float>()[i] = -2.0f * float(i);
  testing::TempDir dir;
  write_npz(dir.file("calib.npz"), {{"b", b}, {"a", a}});
  const Dataset data = read_npz_dataset(dir.file("calib.npz"));
  EXPECT_EQ(data.size(), 5);
  EXPECT_EQ(data.slice(1, 3).size(), 2);
  const Calibration c = calibrate(g, data, {});
  EXPECT_EQ(c.ranges.at("a").max, 14.0f);
  EXPECT_EQ(c.ranges.at("b").min, -28.0f);
  EXPECT_EQ(c.ranges.at("y").min, -14.0f);
  // What is missing or does not fit is named.
  write_npz(dir.file("only_a.npz"), {{"a", a}});
  EXPECT_LOWBIT_ERROR(calibrate(g, read_npz_dataset(dir.file("only_a.npz")), {}), "the data has no input 'b' (it has a)");
  write_npz(dir.file("wide.npz"), {{"a", Tensor(DType::F32, {5, 4})}, {"b", b}});
  EXPECT_LOWBIT_ERROR(calibrate(g, read_npz_dataset(dir.file("wide.npz")), {}), "the data's input 'a' is f32[5, 4]");
  write_npz(dir.file("uneven.npz"), {{"a", a}, {"b", Tensor(DType::F32, {4, 3})}});
  EXPECT_LOWBIT_ERROR(read_npz_dataset(dir.file("uneven.npz")), "uneven.npz': dataset: input 'b' has 4 samples, 'a' 5");
  EXPECT_LOWBIT_ERROR(evaluate(g, data), "it can calibrate a model, not train or evaluate one");
}

}  // namespace
}  // namespace lowbit
