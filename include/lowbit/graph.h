// lowbit/graph.h - the model: a DAG of named nodes over named values, ONNX style.
//
// A Graph holds graph inputs (data fed at run time), initializers (named tensors: weights and
// biases), and nodes. Each node applies a registered op (see ops.h) to named input values and
// produces named output values. Weights are ordinary node inputs, as in ONNX, so one mechanism
// carries data and parameters, and gradients flow to both.
//
//   lowbit::Graph g;
//   g.inputs.push_back({"image", lowbit::DType::F32, {-1, 28, 28}});   // -1: known at run time
//   g.initializers["fc1.weight"] = lowbit::Tensor::zeros({64, 784});
//   g.initializers["fc1.bias"] = lowbit::Tensor::zeros({64});
//   g.add_node({"flatten", "Flatten", {"image"}, {"x"}});
//   g.add_node({"fc1", "Dense", {"x", "fc1.weight", "fc1.bias"}, {"h1"}, {{"activation", "relu"}}});
//   g.outputs = {"h1"};
//   g.validate();                       // ops known, every value defined once, shapes agree, no cycle
//   auto shapes = g.infer_shapes();     // "h1" -> [N, 64]
#pragma once

#include <map>
#include <span>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lowbit/tensor.h"

namespace lowbit {

// A value's declared dtype and shape. A dimension of -1 is dynamic: any size, known at run time
// (the batch, a sequence length). Dynamic dimensions may be named (ONNX's dim_param): `symbols`
// is empty or has one entry per dimension ("" for unnamed), and dimensions of the graph inputs
// that share a name must have the same size in every run, e.g. {"ids", S64, {-1, -1}, {"batch",
// "sequence"}} and {"mask", Bool, {-1, -1}, {"batch", "sequence"}}.
struct ValueInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<std::string> symbols = {};
};

struct Node {
  std::string name;
  std::string op;  // a type registered in the op registry, e.g. "Dense"
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  nlohmann::json attributes = nlohmann::json::object();

  int64_t attr_int(const std::string& key, int64_t fallback) const;
  double attr_float(const std::string& key, double fallback) const;
  std::string attr_string(const std::string& key, const std::string& fallback) const;
};

class Graph {
 public:
  std::string name;
  std::vector<ValueInfo> inputs;
  std::vector<std::string> outputs;
  std::vector<Node> nodes;                    // topological order after validate()
  std::map<std::string, Tensor> initializers;  // ordered by name: saving is deterministic
  std::map<std::string, std::string> metadata;  // free-form, e.g. "input_scale", "dataset"

  Node& add_node(Node node);
  // Index of the node producing `value`, or -1 for graph inputs, initializers and unknown names.
  int producer(const std::string& value) const;
  // Checks the graph and sorts nodes topologically. Throws Error(Format) naming the node and the
  // problem: unknown op, undefined or doubly defined value, cycle, shape mismatch.
  void validate();
  // Shapes and dtypes of every value (inputs, initializers, node outputs).
  std::map<std::string, ValueInfo> infer_shapes() const;
  // Throws Error(InvalidArgument) naming the input, the dimension and what was expected unless
  // `tensors` (one per graph input, in order) match the inputs' declared dtypes and shapes:
  // same rank, static dimensions equal, named dynamic dimensions equal wherever they appear.
  void check_inputs(std::span<const Tensor* const> tensors) const;
  // Number of parameters (elements of all initializers).
  int64_t parameter_count() const;
};

}  // namespace lowbit
