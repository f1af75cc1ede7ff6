// Internal: the model file's pieces for other files of the library (train checkpoints).
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/graph.h"

namespace lowbit::model_file {

// An optional section beside GRPH and TNSR (docs/format.md): readers that do not know its tag
// skip it, so a file with extras is still a model file.
struct Section {
  std::string tag;  // four ASCII characters
  std::string payload;
};

std::string serialize(const Graph& model, const std::vector<Section>& extra);
// deserialize_model that also returns the optional sections it does not know (when `extra` is set).
Graph deserialize(std::string_view bytes, const std::string& source, std::vector<Section>* extra);

// The GRPH payload of a graph (JSON: inputs, outputs, nodes with attributes, metadata).
std::string graph_json(const Graph& g);
// Named tensors in the TNSR payload format; deserialize_tensors checks it as the model reader
// does, naming `source` and `section` in its errors.
std::string serialize_tensors(const std::map<std::string, Tensor>& tensors);
std::map<std::string, Tensor> deserialize_tensors(std::string_view payload, const std::string& source, const std::string& section);

}  // namespace lowbit::model_file
