// lowbit/model_io.h - the native model file (.lbm) and the JSON model description.
//
// The native file (specified in docs/format.md) holds the whole graph: nodes, attributes,
// metadata and every named tensor, in versioned sections with a CRC-32 each. Saving is atomic.
//
//   lowbit::save_model(model, "model.lbm");
//   lowbit::Graph again = lowbit::load_model("model.lbm");   // Error(Format) if damaged
//
// A model description (docs/model-description.md) says which layers to build; build_model turns
// it into a graph with freshly initialized weights:
//
//   lowbit::ModelDescription arch = lowbit::parse_arch("784-64-32-10");  // or a .json path, or JSON text
//   lowbit::Graph model = lowbit::build_model(arch, {28, 28}, 10, /*seed=*/0);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lowbit/graph.h"

namespace lowbit {

// Version 2 records each node's op version and named dynamic dimensions; files of version 1
// (nodes at op version 1) still load.
constexpr uint32_t kModelFormatVersion = 2;

std::string serialize_model(const Graph& model);
// `source` names the origin (a path) in error messages.
Graph deserialize_model(std::string_view bytes, const std::string& source);
void save_model(const Graph& model, const std::string& path);
Graph load_model(const std::string& path);
// The format version in a model file's header (1 or 2 for files this build reads); throws
// Error(Format) naming the file when it is not a lowbit model file.
uint32_t model_file_version(const std::string& path);

// A model description: a JSON object (docs/model-description.md) and where it came from.
struct ModelDescription {
  std::string json;
  std::string source;  // the file, or "" (named in error messages)
};
// "784-64-32-10" (an MLP: input size, hidden sizes, classes), the path of a JSON description, or
// the JSON text itself (starting with '{'). Throws Error(Format) for a file that is not JSON.
ModelDescription parse_arch(const std::string& arch);
// Builds and validates the graph. `sample_shape` is one input sample's shape (e.g. [28, 28]);
// `num_classes` must match the last layer. `sample_dtype` is the data's (Dataset::images): f32
// samples make the input f32 unless the description says otherwise. Throws Error(Format) naming
// the layer and field.
Graph build_model(const ModelDescription& description, const Shape& sample_shape, int num_classes, uint64_t seed,
                  DType sample_dtype = DType::U8);

}  // namespace lowbit
