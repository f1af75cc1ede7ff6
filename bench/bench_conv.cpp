// lowbit integer convolution (QConv2D) against lowbit's fp32 convolution (Conv2D) on the layer
// shapes of the reference CNN (examples/models/reference-cnn.json), same run, 1 and 2 threads.
//
// Each variant runs one graph node through the Executor, exactly as a quantized model does:
//   lowbit_f32  Conv2D, f32 NCHW in and out, bias and fused ReLU (BatchNorm folded, as inference runs it).
//   lowbit_s8   QConv2D, s8 NCHW in and out, s8 per-channel weights, int32 bias, fused ReLU,
//               fixed-point requantization (what `lowbit quantize` emits for these layers).
//   lowbit_s4   the same with packed 4-bit weights.
// Benchmark names: <variant>/<layer>/batch:<n>/threads:<t>; the GMACS counter is
// batch * OH * OW * OC * (C / group) * kh * kw multiply-accumulates per second / 1e9.
// bench/conv_ratios.py runs this binary and tabulates int8 / fp32 per layer and for the whole
// convolution stack.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "lowbit/executor.h"
#include "lowbit/graph.h"
#include "lowbit/quant_params.h"
#include "lowbit/runtime_config.h"

namespace {

using lowbit::DType;
using lowbit::Tensor;

struct Layer {
  const char* name;
  int64_t channels, size, filters, kernel, stride, pad, group;
  int64_t macs(int64_t batch) const {
    const int64_t out = (size + 2 * pad - kernel) / stride + 1;
    return batch * out * out * filters * (channels / group) * kernel * kernel;
  }
};

// The reference CNN's two convolutions, then a depthwise and a strided layer of the kind
// MobileNet-style CNNs add (grouped integer convolution).
const Layer kLayers[] = {
    {"conv1_1x28x28_to32", 1, 28, 32, 3, 1, 1, 1},
    {"conv2_32x14x14_to64", 32, 14, 64, 3, 1, 1, 1},
    {"dw3x3_64x14x14", 64, 14, 64, 3, 1, 1, 64},
    {"s2_32x28x28_to64", 32, 28, 64, 3, 2, 1, 1},
};

enum class Variant { F32, S8, S4 };

const char* name_of(Variant v) { return v == Variant::F32 ? "lowbit_f32" : v == Variant::S8 ? "lowbit_s8" : "lowbit_s4"; }

lowbit::Attributes window(const Layer& l) {
  return {{"kernel_shape", {l.kernel, l.kernel}}, {"strides", {l.stride, l.stride}}, {"pads", {l.pad, l.pad, l.pad, l.pad}},
          {"group", l.group}, {"activation", "relu"}};
}

Tensor scalar(DType dtype, double v) {
  Tensor t(dtype, {});
  if (dtype == DType::F32)
    t.data<float>()[0] = static_cast<float>(v);
  else
    t.data<int8_t>()[0] = static_cast<int8_t>(v);
  return t;
}

lowbit::Graph make_graph(const Layer& l, Variant v) {
  std::mt19937 rng(7);
  const int64_t k = l.channels / l.group * l.kernel * l.kernel;
  lowbit::Graph g;
  if (v == Variant::F32) {
    g.inputs.push_back({"x", DType::F32, {-1, l.channels, l.size, l.size}});
    Tensor w(DType::F32, {l.filters, l.channels / l.group, l.kernel, l.kernel}), b(DType::F32, {l.filters});
    std::uniform_real_distribution<float> u(-0.3f, 0.3f);
    for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = u(rng);
    for (int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = u(rng);
    g.initializers["w"] = w;
    g.initializers["b"] = b;
    g.add_node({"conv", "Conv2D", {"x", "w", "b"}, {"y"}, window(l)});
  } else {
    g.inputs.push_back({"x", DType::S8, {-1, l.channels, l.size, l.size}});
    const int hi = v == Variant::S8 ? 127 : 7;
    std::uniform_int_distribution<int> code(-hi, hi);
    std::vector<int32_t> codes(static_cast<size_t>(l.filters * k));
    for (auto& c : codes) c = code(rng);
    Tensor w = lowbit::pack_codes(codes, {l.filters, k}, v == Variant::S8 ? DType::S8 : DType::S4);
    w.reshape({l.filters, w.numel() / l.filters});  // rows padded to whole bytes
    Tensor scale(DType::F32, {l.filters}), zero(DType::S32, {l.filters}), bias(DType::S32, {l.filters});
    std::uniform_int_distribution<int> b(-2000, 2000);
    for (int64_t i = 0; i < l.filters; ++i) {
      scale.data<float>()[i] = 0.01f;
      bias.data<int32_t>()[i] = b(rng);
    }
    g.initializers["w"] = w;
    g.initializers["s"] = scale;
    g.initializers["z"] = zero;
    g.initializers["b"] = bias;
    g.initializers["xs"] = scalar(DType::F32, 0.02);
    g.initializers["xz"] = scalar(DType::S8, -3);
    g.initializers["ys"] = scalar(DType::F32, 0.05);
    g.initializers["yz"] = scalar(DType::S8, -128);
    lowbit::Attributes attrs = window(l);
    attrs["in_channels"] = l.channels;
    // Inputs in QConv2D's order (src/graph/ops/integer_inputs.h): s8 output, int32 bias.
    g.add_node({"conv", "QConv2D", {"x", "w", "s", "z", "xs", "xz", "ys", "yz", "b"}, {"y"}, attrs});
  }
  g.outputs = {"y"};
  g.validate();
  return g;
}

void run_conv(benchmark::State& state, Layer l, Variant v) {
  const int64_t batch = state.range(0);
  lowbit::set_num_threads(static_cast<int>(state.range(1)));
  const lowbit::Graph graph = make_graph(l, v);  // the executor refers to the graph's nodes
  lowbit::Executor run(graph);
  std::mt19937 rng(3);
  Tensor& x = run.input("x");
  if (v == Variant::F32) {
    x = Tensor(DType::F32, {batch, l.channels, l.size, l.size});
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = u(rng);
  } else {
    x = Tensor(DType::S8, {batch, l.channels, l.size, l.size});
    std::uniform_int_distribution<int> u(-128, 127);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<int8_t>()[i] = static_cast<int8_t>(u(rng));
  }
  run.forward();  // warm-up: prepares the weights and sizes every buffer
  for (auto _ : state) {
    run.forward();
    benchmark::DoNotOptimize(run.value("y").raw());
  }
  state.counters["GMACS"] = benchmark::Counter(static_cast<double>(l.macs(batch)), benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  for (const Layer& l : kLayers)
    for (Variant v : {Variant::F32, Variant::S8, Variant::S4})
      for (int64_t threads : {1, 2}) {
        const std::string name = std::string(name_of(v)) + "/" + l.name;
        benchmark::RegisterBenchmark(name.c_str(), run_conv, l, v)
            ->ArgNames({"batch", "threads"})
            ->Args({256, threads})
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
