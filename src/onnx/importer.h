// Internal: the state of one ONNX import, and the interface the op converters (import_ops.cpp)
// use to read an ONNX node and emit lowbit nodes.
#pragma once

#include <onnx/onnx_pb.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lowbit/graph.h"
#include "lowbit/onnx.h"

namespace lowbit::onnx_io {

// One element of an int64 vector whose value may be known only at run time: a constant, or the
// size of a dimension that has a name (ONNX's dim_param, or one the importer gave it), or
// unknown. Exporters compute reshape targets from Shape(x); following these lets the importer turn
// them into static Reshape attributes (0: copy that dimension) instead of run-time arithmetic.
struct SymDim {
  int64_t value = 0;
  std::string symbol;  // "" for a constant; "?" for unknown
  bool known() const { return symbol.empty(); }
};
using SymVector = std::vector<SymDim>;

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string source, std::string folder, const OnnxImportOptions& options);
  Graph run();

  // ---- for converters: the current ONNX node ----
  const onnx::NodeProto& node() const { return *node_; }
  int opset() const { return opset_; }
  int inputs() const { return node_->input_size(); }
  bool has_input(int i) const { return i < node_->input_size() && !node_->input(i).empty(); }
  std::string input(int i) const;             // the lowbit value name of input i
  const Tensor* constant(int i) const;        // input i's value if it is constant, else null
  const Tensor& require_constant(int i, const std::string& what) const;  // Unsupported if not
  const ValueInfo& info(int i) const;         // dtype and shape of input i
  const ValueInfo& info_of(const std::string& value) const;
  std::optional<SymVector> symbolic(int i) const;  // a 1-D or scalar int64 input, as known
  int outputs() const { return node_->output_size(); }
  bool has_output(int i) const { return i < node_->output_size() && !node_->output(i).empty(); }
  std::string output(int i) const;  // Error(Format) when the node has no output i

  bool has_attr(const std::string& key) const;
  int64_t attr_int(const std::string& key, int64_t fallback) const;
  float attr_float(const std::string& key, float fallback) const;
  std::string attr_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> attr_ints(const std::string& key, std::vector<int64_t> fallback) const;
  const onnx::AttributeProto* attr(const std::string& key) const;
  // Attributes the converter did not read are reported as unsupported (so that a meaning the
  // converter ignores never passes silently); mark the ones that are harmless to ignore.
  void ignore_attr(const std::string& key) const { read_attrs_.insert(key); }

  [[noreturn]] void unsupported(const std::string& what) const;

  // Emits a lowbit node; when every input is constant it is computed now instead (folded) and its
  // outputs become constants. Returns the node's name.
  std::string emit(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                   Attributes attributes = {}, const std::string& suffix = "");
  void alias(const std::string& onnx_output, const std::string& value);  // the output *is* value
  void set_constant(const std::string& value, Tensor tensor);
  void set_symbolic(const std::string& value, SymVector v) { symbolic_[value] = std::move(v); }
  std::string constant_value(Tensor tensor, const std::string& hint);  // a new constant, named

  // Values whose lowbit s8 codes are ONNX uint8 codes minus 128: an activation grid on uint8 (ONNX
  // Runtime's default) is the same real values on int8, which lowbit's integer kernels take, with
  // the zero point moved by 128 too. Only ops that read codes through their zero point (and
  // layout ops and max-pooling, which commute with the shift) may read them.
  bool shifted(const std::string& value) const { return shifted_.count(value) > 0; }
  void mark_shifted(const std::string& value) { shifted_.insert(value); }
  // An int8 zero point for input `i` (a constant, u8 or s8; absent: ONNX's default u8 0), and
  // whether it moved by 128. Returns the name of the s8 scalar or per-axis constant.
  std::string s8_zero_point(int i, bool& moved, const std::string& hint);
  // Float constants that are a DequantizeLinear of integer codes (the weights and biases of QDQ
  // models): the codes, kept so that the QDQ fusion can hand them to the integer kernels.
  struct QuantOrigin {
    Tensor codes, scale, zero_point;  // zero_point undefined: 0
    int64_t axis = -1;                // -1: per tensor
  };
  std::map<std::string, QuantOrigin> origins;
  std::string fresh(const std::string& hint);                          // a new unique value name

 private:
  void read_opsets();
  void read_inputs_and_initializers();
  std::vector<int> topological_order();
  void convert(const onnx::NodeProto& node);
  void fuse_and_prune();
  void fuse_qdq();
  void fuse_dynamic();
  void fuse_layer_norm();
  void fuse_gelu();
  void fuse_attention();
  void drop_unread();
  // The first node of type `op` with `inputs` inputs that reads `value` as its first input, or null.
  Node* reader_of(const std::string& value, const std::string& op, size_t inputs);
  Node* producer_of(const std::string& value);  // the node computing `value`, or null
  // How many node inputs read each value; graph outputs count 1000 more (never fused away).
  std::map<std::string, int> readers() const;
  std::optional<float> scalar_f32(const std::string& value) const;  // a one-value f32 constant's value
  void propagate_symbols(const Node& node, const std::vector<ValueInfo>& outputs);

  const onnx::ModelProto& model_;
  std::string source_, folder_;
  OnnxImportOptions options_;
  int opset_ = 0;
  int ms_opset_ = 0;
  const onnx::NodeProto* node_ = nullptr;
  std::string node_name_;
  mutable std::set<std::string> read_attrs_;

  Graph graph_;
  std::map<std::string, std::string> rename_;  // ONNX value -> lowbit value (aliases)
  std::map<std::string, Tensor> constants_;
  std::map<std::string, ValueInfo> infos_;
  std::map<std::string, SymVector> symbolic_;
  std::set<std::string> shifted_;
  std::set<std::string> names_;       // every value name in use
  std::set<std::string> node_names_;  // every node name in use
  std::string fresh_node(const std::string& hint);
  int symbol_counter_ = 0;
};

using Converter = std::function<void(Importer&)>;
// The converter of each supported ONNX op of the default domain, and of the com.microsoft domain
// (the ops ONNX Runtime's quantizer writes) (import_ops.cpp).
const std::map<std::string, Converter>& converters();
const std::map<std::string, Converter>& microsoft_converters();

}  // namespace lowbit::onnx_io
