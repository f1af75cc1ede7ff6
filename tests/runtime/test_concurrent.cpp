// The library's thread-safety rules (include/lowbit/executor.h): one loaded
// model and one inference executor serve 8 threads at once (Executor::run), and 8 threads each
// planning their own executor of one shared model, with the same bytes as serial runs. Float,
// static int8, dynamic int8 and 4-bit block layers, an MLP and a CNN. The test command also runs
// these under ThreadSanitizer (build/tsan), with one kernel thread per call: libgomp is not
// instrumented for TSan, so OpenMP teams would only add its false reports.
#include <thread>

#include "test_util.h"

namespace lowbit {
namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 3;

Dataset random_images(int count, uint64_t seed) {
  Dataset d;
  d.images = testing::random_bytes({count, 28, 28}, seed);
  d.num_classes = 10;
  for (int i = 0; i < count; ++i) d.labels.push_back(i % 10);
  return d;
}

// The models: float, then each quantized.
std::vector<std::pair<std::string, Graph>> models() {
  const Dataset calib = random_images(64, 1);
  const std::string cnn = R"({"layers": [
      {"type": "reshape", "shape": [1, 28, 28]},
      {"type": "conv2d", "filters": 4, "kernel": 3, "padding": "same"}, {"type": "relu"}, {"type": "maxpool2d", "kernel": 2},
      {"type": "flatten"}, {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "units": 10},
      {"type": "softmax"}]})";
  std::vector<std::pair<std::string, Graph>> out;
  for (const auto& [name, arch] : {std::pair<std::string, std::string>{"mlp", "784-32-16-10"}, {"cnn", cnn}}) {
    const Graph model = build_model(parse_arch(arch), {28, 28}, 10, 3);
    CalibrationOptions c;
    c.samples = 64;
    const Calibration ranges = calibrate(model, calib, c);
    out.emplace_back(name + " float", model);
    QuantPlan full;
    out.emplace_back(name + " static int8", quantize_model(model, full, {{ranges.method, ranges}}));
    QuantPlan dynamic;
    dynamic.mode = QuantMode::Dynamic;
    out.emplace_back(name + " dynamic int8", quantize_model(model, dynamic, {}));
    QuantPlan block;  // Dense layers in 4-bit blocks of 32 (convolutions keep whole rows, 8 bits)
    block.defaults.weight_bits = 4;
    block.defaults.group_size = 32;
    for (const auto& layer : quantizable_layers(model))
      if (layer.rfind("conv", 0) == 0) block.layers[layer] = LayerRule{};
    out.emplace_back(name + " 4-bit blocks", quantize_model(model, block, {{ranges.method, ranges}}));
  }
  return out;
}

std::string bytes_of(const std::vector<Tensor>& tensors) {
  std::vector<uint8_t> bytes;
  for (const auto& t : tensors) testing::append_bytes(t, bytes);
  return std::string(bytes.begin(), bytes.end());
}

// Batch i of each thread: its own images, of its own size (1 to 9 rows).
Tensor batch(int thread, int round) {
  return testing::random_bytes({1 + (thread + round) % 9, 28, 28}, static_cast<uint64_t>(100 + thread * kRounds + round));
}

TEST(Concurrency, OneExecutorServesEightThreadsWithSerialResults) {
  RunSettings one_thread_per_call;
  one_thread_per_call.threads = 1;
  for (const auto& [name, model] : models()) {
    SCOPED_TRACE(name);
    const Executor shared(model, /*training=*/false, one_thread_per_call);
    const std::string input = model.inputs.at(0).name;
    std::vector<std::string> serial;
    for (int t = 0; t < kThreads; ++t)
      for (int r = 0; r < kRounds; ++r) serial.push_back(bytes_of(shared.run({{input, batch(t, r)}})));
    std::vector<std::string> concurrent(serial.size());
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int r = 0; r < kRounds; ++r) concurrent[t * kRounds + r] = bytes_of(shared.run({{input, batch(t, r)}}));
      });
    for (auto& th : threads) th.join();
    for (size_t i = 0; i < serial.size(); ++i) ASSERT_EQ(concurrent[i], serial[i]) << "call " << i;
    // And the single-thread API gives the same bytes.
    Executor single(model, false, one_thread_per_call);
    single.input(input) = batch(0, 0);
    single.forward();
    EXPECT_EQ(bytes_of({single.value(model.outputs.at(0))}), serial[0]);
  }
}

TEST(Concurrency, EightThreadsPlanTheirOwnExecutorsOfOneModel) {
  RunSettings one_thread_per_call;
  one_thread_per_call.threads = 1;
  for (const auto& [name, model] : models()) {
    SCOPED_TRACE(name);
    const std::string input = model.inputs.at(0).name;
    std::vector<std::string> serial;
    {
      Executor run(model, false, one_thread_per_call);
      for (int t = 0; t < kThreads; ++t) {
        run.input(input) = batch(t, 0);
        run.forward();
        serial.push_back(bytes_of({run.value(model.outputs.at(0))}));
      }
    }
    std::vector<std::string> concurrent(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        Executor own(model, false, one_thread_per_call);  // the model is shared, read-only
        own.input(input) = batch(t, 0);
        own.forward();
        concurrent[t] = bytes_of({own.value(model.outputs.at(0))});
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(concurrent, serial);
  }
}

TEST(Concurrency, RunRefusesTrainingExecutorsAndUnknownInputs) {
  const Graph model = build_model(parse_arch("784-8-10"), {28, 28}, 10, 0);
  const Executor inference(model);
  EXPECT_THROW(inference.run({}), Error);
  EXPECT_THROW(inference.run({{"image", batch(0, 0)}, {"other", batch(0, 0)}}), Error);
  const Executor training(model, true);
  EXPECT_THROW(training.run({{"image", batch(0, 0)}}), Error);
}

}  // namespace
}  // namespace lowbit
