// model_info(): the contents of `lowbit info` (include/lowbit/workflow.h).
#include <algorithm>

#include "lowbit/ops.h"
#include "lowbit/workflow.h"

namespace lowbit {

namespace {
// The inputs holding a layer's weights with their scales and zero points (kernels' order:
// docs/ops.md), and how many weights they encode; {} for other nodes.
std::pair<std::vector<size_t>, int64_t> weight_inputs(const Graph& model, const Node& node) {
  const OpTraits& traits = traits_of(node);
  const auto tensor = [&](size_t i) -> const Tensor* {
    auto it = i < node.inputs.size() ? model.initializers.find(node.inputs[i]) : model.initializers.end();
    return it == model.initializers.end() ? nullptr : &it->second;
  };
  const Tensor* codes = tensor(1);
  if (!codes || codes->rank() < 1) return {};
  if (traits.is_quantizable()) return {{1}, codes->numel()};
  if (!traits.is_integer_layer()) return {};
  int64_t features = node.attr_int("in_features", 0);
  if (node.attributes.count("kernel_shape")) {
    const std::vector<int64_t>& k = node.attr("kernel_shape").as_ints();
    features = node.attr_int("in_channels", 0) / std::max<int64_t>(1, node.attr_int("group", 1)) * k.at(0) * k.at(1);
  }
  const bool zero_points = traits.block_weights ? node.attr_string("scheme", "symmetric") == "affine" : !traits.dynamic;
  std::vector<size_t> inputs = {1, 2};
  if (zero_points) inputs.push_back(3);
  return {inputs, codes->dim(0) * features};
}
}  // namespace

ModelInfo model_info(const Graph& model) {
  ModelInfo info;
  info.name = model.name;
  info.inputs = model.inputs;
  const auto shapes = model.infer_shapes();
  for (const auto& out : model.outputs) info.outputs.push_back(shapes.at(out));
  for (const auto& node : model.nodes) {
    LayerInfo layer;
    layer.name = node.name;
    layer.op = node.op;
    layer.output_shape = shapes.at(node.outputs[0]).shape;
    for (const auto& in : node.inputs) {
      auto it = model.initializers.find(in);
      if (it == model.initializers.end()) continue;
      const Tensor& t = it->second;
      layer.parameters += t.numel();
      layer.bytes += static_cast<int64_t>(t.nbytes());
      layer.tensors.push_back({in, t.dtype(), t.shape(), bits_of(t.dtype()), static_cast<int64_t>(t.nbytes())});
    }
    const auto [inputs, weights] = weight_inputs(model, node);
    if (weights > 0) {
      int64_t bytes = 0;
      for (size_t i : inputs)
        if (model.initializers.count(node.inputs[i])) bytes += static_cast<int64_t>(model.initializers.at(node.inputs[i]).nbytes());
      layer.weights = weights;
      layer.bits_per_weight = 8.0 * static_cast<double>(bytes) / static_cast<double>(weights);
      info.weights += weights;
      info.bits_per_weight += 8.0 * static_cast<double>(bytes);
    }
    info.tensor_bytes += layer.bytes;
    info.layers.push_back(std::move(layer));
  }
  if (info.weights > 0) info.bits_per_weight /= static_cast<double>(info.weights);
  info.parameters = model.parameter_count();
  return info;
}

}  // namespace lowbit
