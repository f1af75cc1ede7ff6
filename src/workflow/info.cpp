// model_info(): the contents of `lowbit info` (include/lowbit/workflow.h).
#include "lowbit/workflow.h"

namespace lowbit {

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
    info.tensor_bytes += layer.bytes;
    info.layers.push_back(std::move(layer));
  }
  info.parameters = model.parameter_count();
  return info;
}

}  // namespace lowbit
