// compare() and measure_speed(): the steps of `lowbit compare` (include/lowbit/workflow.h).
#include <algorithm>
#include <chrono>
#include <numeric>

#include "lowbit/executor.h"
#include "lowbit/ops.h"
#include "lowbit/train.h"
#include "lowbit/workflow.h"

namespace lowbit {

Speed measure_speed(const Graph& model, const Dataset& data) {
  using Clock = std::chrono::steady_clock;
  Executor run(model);
  Tensor& input = run.input(model.inputs.at(0).name);
  Speed t;
  std::vector<uint32_t> one = {0};
  gather_batch(data, one, model, input);
  std::vector<double> samples;
  for (int i = 0; i < 300; ++i) {
    auto s = Clock::now();
    run.forward();
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
  }
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  t.batch1_latency_us = samples[samples.size() / 2];
  std::vector<uint32_t> batch(static_cast<size_t>(std::min<int64_t>(256, data.size())));
  std::iota(batch.begin(), batch.end(), 0u);
  gather_batch(data, batch, model, input);
  run.forward();
  double best = 1e30;  // best of 15 x 20 batches: a short stall from elsewhere on the machine does not count
  for (int rep = 0; rep < 15; ++rep) {
    auto s = Clock::now();
    for (int i = 0; i < 20; ++i) run.forward();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - s).count() / 20);
  }
  t.batch256_images_per_second = static_cast<double>(batch.size()) / best;
  return t;
}

CompareResult compare(const Graph& a, const Graph& b, const Dataset& test, const CompareOptions& options) {
  CompareResult r;
  // Predictions of both on the whole test set, batch by batch.
  Executor ra(a), rb(b);
  const std::string la = logits_value(a), lb = logits_value(b);
  int64_t agree = 0, correct_a = 0, correct_b = 0;
  std::vector<uint32_t> idx;
  for (int64_t begin = 0; begin < test.size(); begin += 256) {
    idx.resize(static_cast<size_t>(std::min<int64_t>(256, test.size() - begin)));
    std::iota(idx.begin(), idx.end(), static_cast<uint32_t>(begin));
    gather_batch(test, idx, a, ra.input(a.inputs.at(0).name));
    gather_batch(test, idx, b, rb.input(b.inputs.at(0).name));
    ra.forward();
    rb.forward();
    const Tensor &xa = ra.value(la), &xb = rb.value(lb);
    const int64_t ca = xa.dim(1), cb = xb.dim(1);
    for (size_t i = 0; i < idx.size(); ++i) {
      const int64_t pa = std::max_element(xa.data<float>() + i * ca, xa.data<float>() + (i + 1) * ca) - (xa.data<float>() + i * ca);
      const int64_t pb = std::max_element(xb.data<float>() + i * cb, xb.data<float>() + (i + 1) * cb) - (xb.data<float>() + i * cb);
      r.model_classes.push_back(static_cast<int32_t>(pa));
      r.against_classes.push_back(static_cast<int32_t>(pb));
      agree += pa == pb;
      correct_a += pa == test.labels[begin + i];
      correct_b += pb == test.labels[begin + i];
    }
  }
  const double n = static_cast<double>(test.size());
  r.samples = test.size();
  r.model_accuracy = static_cast<double>(correct_a) / n;
  r.against_accuracy = static_cast<double>(correct_b) / n;
  r.agreement = static_cast<double>(agree) / n;
  // Per-layer error on the first samples, for values both models compute.
  idx.resize(static_cast<size_t>(std::min<int64_t>(options.layer_samples, test.size())));
  std::iota(idx.begin(), idx.end(), 0u);
  gather_batch(test, idx, a, ra.input(a.inputs.at(0).name));
  gather_batch(test, idx, b, rb.input(b.inputs.at(0).name));
  ra.forward();
  rb.forward();
  // Layers: not the nodes that only relabel values, cast them between representations (the input
  // scaling, QuantizeLinear / DequantizeLinear) or hold constants.
  for (const auto& node : a.nodes) {
    const int pb = b.producer(node.outputs[0]);
    const OpTraits& t = traits_of(node);
    if (pb < 0 || t.layout_only || t.boundary != OpTraits::Boundary::None || node.inputs.empty()) continue;
    r.layers.push_back({node.name, node.op, b.nodes[pb].op,
                        compare_tensors(value_as_float(a, ra, node.outputs[0]), value_as_float(b, rb, node.outputs[0]))});
  }
  if (options.measure_speed) {
    r.model_speed = measure_speed(a, test);
    r.against_speed = measure_speed(b, test);
  }
  return r;
}

}  // namespace lowbit
