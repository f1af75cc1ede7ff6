// BatchNorm folding: see fold_batchnorm in include/lowbit/quantize.h.
#include <algorithm>
#include <cmath>

#include "lowbit/quantize.h"
#include "lowbit/ops.h"

namespace lowbit {
namespace {

int consumers(const Graph& g, const std::string& value) {
  int count = 0;
  for (const auto& node : g.nodes) count += static_cast<int>(std::count(node.inputs.begin(), node.inputs.end(), value));
  return count;
}

bool is_output(const Graph& g, const std::string& value) {
  return std::find(g.outputs.begin(), g.outputs.end(), value) != g.outputs.end();
}

}  // namespace

Graph fold_batchnorm(const Graph& model) {
  Graph g = model;
  for (const auto& [name, t] : model.initializers) g.initializers[name] = t.clone();  // `model` stays as it is
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node bn = g.nodes[i];
    if (!traits_of(bn).folds_into_layer || bn.inputs.size() != 5) continue;
    // The producer of its input: a Conv2D or Dense without fused activation, feeding only this node.
    auto producer = std::find_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) {
      return std::find(n.outputs.begin(), n.outputs.end(), bn.inputs[0]) != n.outputs.end();
    });
    if (producer == g.nodes.end() || !traits_of(*producer).absorbs_batchnorm) continue;
    Node& layer = *producer;
    if (layer.attr_string("activation", "none") != "none" || layer.outputs.size() != 1 ||
        consumers(g, bn.inputs[0]) != 1 || is_output(g, bn.inputs[0]))
      continue;
    bool constant = true;
    for (size_t k = 1; k < 5; ++k) constant &= g.initializers.count(bn.inputs[k]) > 0;
    if (!constant || layer.inputs.size() < 2 || !g.initializers.count(layer.inputs[1]) ||
        consumers(g, layer.inputs[1]) != 1)
      continue;
    const bool has_bias = layer.inputs.size() > 2;
    if (has_bias && (!g.initializers.count(layer.inputs[2]) || consumers(g, layer.inputs[2]) != 1)) continue;
    Tensor& w = g.initializers[layer.inputs[1]];
    const int64_t channels = w.dim(0), per_channel = w.numel() / std::max<int64_t>(channels, 1);
    if (g.initializers[bn.inputs[1]].numel() != channels) continue;
    const float* scale = g.initializers[bn.inputs[1]].data<float>();
    const float* shift = g.initializers[bn.inputs[2]].data<float>();
    const float* mean = g.initializers[bn.inputs[3]].data<float>();
    const float* var = g.initializers[bn.inputs[4]].data<float>();
    const double epsilon = static_cast<float>(bn.attr_float("epsilon", 1e-5));
    std::string bias_name = has_bias ? layer.inputs[2] : layer.name + ".bias";
    if (!has_bias) {
      while (g.initializers.count(bias_name)) bias_name += "_folded";
      g.initializers[bias_name] = Tensor(DType::F32, {channels});
      layer.inputs.push_back(bias_name);
    }
    float* b = g.initializers[bias_name].data<float>();
    float* wv = w.data<float>();
    for (int64_t c = 0; c < channels; ++c) {
      const double a = static_cast<double>(scale[c]) / std::sqrt(static_cast<double>(var[c]) + epsilon);
      for (int64_t j = 0; j < per_channel; ++j) wv[c * per_channel + j] = static_cast<float>(wv[c * per_channel + j] * a);
      b[c] = static_cast<float>((static_cast<double>(b[c]) - mean[c]) * a + shift[c]);
    }
    // The layer now produces the normalization's output value; the BatchNormalization goes.
    layer.outputs[0] = bn.outputs[0];
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    for (size_t k = 1; k < 5; ++k)
      if (consumers(g, bn.inputs[k]) == 0) g.initializers.erase(bn.inputs[k]);
  }
  g.validate();
  return g;
}

}  // namespace lowbit
