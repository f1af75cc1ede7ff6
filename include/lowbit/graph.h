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

#include <concepts>
#include <initializer_list>
#include <map>
#include <span>
#include <string>
#include <variant>
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

// A node attribute: ONNX's kinds (an integer, a float, a string, or a list of one of them).
// Assign the C++ value: `node.attributes["group"] = 2; node.attributes["pads"] = {1, 1, 1, 1};`
// (a braced list of integers is a list, also of one element; lists of floats or strings are
// written as vectors). The accessors throw Error(Format) naming the expected kind; an integer reads
// as a float too.
class Attribute {
 public:
  enum class Kind : uint8_t { Int, Float, String, Ints, Floats, Strings };
  Attribute() = default;  // the integer 0
  template <std::integral T>
  Attribute(T v) : value_(static_cast<int64_t>(v)) {}
  template <std::floating_point T>
  Attribute(T v) : value_(static_cast<double>(v)) {}
  Attribute(const char* v) : value_(std::string(v)) {}
  Attribute(std::string v) : value_(std::move(v)) {}
  Attribute(std::vector<int64_t> v) : value_(std::move(v)) {}
  Attribute(std::initializer_list<int64_t> v) : value_(std::vector<int64_t>(v)) {}
  Attribute(std::vector<double> v) : value_(std::move(v)) {}
  Attribute(std::vector<std::string> v) : value_(std::move(v)) {}

  Kind kind() const { return static_cast<Kind>(value_.index()); }
  bool is_int() const { return kind() == Kind::Int; }
  bool is_number() const { return kind() == Kind::Int || kind() == Kind::Float; }
  bool is_string() const { return kind() == Kind::String; }
  bool is_ints() const { return kind() == Kind::Ints; }
  int64_t as_int() const;
  double as_float() const;                       // an Int or a Float
  const std::string& as_string() const;
  const std::vector<int64_t>& as_ints() const;
  std::vector<double> as_floats() const;         // Ints or Floats
  const std::vector<std::string>& as_strings() const;
  std::string to_string() const;                 // as JSON writes it: 3, 0.5, "relu", [1, 2]
  bool operator==(const Attribute&) const = default;

 private:
  std::variant<int64_t, double, std::string, std::vector<int64_t>, std::vector<double>, std::vector<std::string>> value_;
};
const char* to_string(Attribute::Kind kind);  // "an integer", "a list of floats", ...

// Ordered by name, so that saving is deterministic.
using Attributes = std::map<std::string, Attribute>;

struct Node {
  std::string name;
  std::string op;  // a type registered in the op registry, e.g. "Dense"
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  Attributes attributes = {};

  // The attribute `key` of the expected kind, or `fallback` when the node has none; throws
  // Error(Format) naming the node and the attribute when it has another kind.
  int64_t attr_int(const std::string& key, int64_t fallback) const;
  double attr_float(const std::string& key, double fallback) const;
  std::string attr_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& key, std::vector<int64_t> fallback) const;
  // The attribute `key`, or Error(Format) naming the node when it is absent or of another kind.
  const Attribute& attr(const std::string& key) const;
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
