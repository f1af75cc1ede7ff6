// lowbit/onnx.h - ONNX models in: a .onnx file becomes an ordinary lowbit Graph.
//
// The importer reads the ModelProto (with tensor data in side files, "external data", resolved
// inside the model's folder), turns every ONNX node into the lowbit ops of the same meaning, folds
// what is constant (initializers, Constant nodes and the shape arithmetic exporters emit), and
// joins what the runtime fuses (MatMul + Add into Dense, a layer and its Relu). The result is a
// Graph like any other: evaluate, quantize, train or save it.
//
//   lowbit::Graph model = lowbit::import_onnx("mlp.onnx");
//   lowbit::save_model(model, "mlp.lbm");
//
//   // A model whose shape inputs are fed at run time (ONNX's node tests) binds them as constants:
//   lowbit::OnnxImportOptions options;
//   options.constant_inputs["shape"] = lowbit::Tensor(lowbit::DType::S64, {2});
//   // lowbit::import_onnx("reshape.onnx", options);
//
// A model that uses ops, attributes or dtypes lowbit does not support is refused with one
// Error(Unsupported) that lists every such node (name, op type and what is at fault), not only
// the first. Malformed files give Error(Format) naming the file and the field.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/graph.h"

namespace lowbit {

struct OnnxImportOptions {
  // Graph inputs replaced by these values: they become constants and fold like initializers.
  std::map<std::string, Tensor> constant_inputs;
};

// ONNX opsets of the default domain that the importer reads.
constexpr int kOnnxMinOpset = 1;
constexpr int kOnnxMaxOpset = 21;

// Reads `path` (a .onnx file); external data files are looked up beside it.
Graph import_onnx(const std::string& path, const OnnxImportOptions& options = {});
// The same from the file's bytes: `source` names it in errors, `folder` is where external data
// lives ("" refuses external data).
Graph import_onnx_bytes(std::string_view bytes, const std::string& source, const std::string& folder,
                        const OnnxImportOptions& options = {});

// ONNX out. Profiles: Float (an integer model is dequantized first), Qdq (QuantizeLinear /
// DequantizeLinear around float ops, as ONNX Runtime's quantizer writes them) and QOperator
// (QLinearConv, MatMulInteger, ConvInteger: integer arithmetic in the graph). `symmetric` gives
// every activation grid zero point 0 (TensorRT's requirement). The default opset is 13; packed
// 4-bit and 2-bit weights need opset 21 to stay 4-bit (int4), else they are int8 codes (a note
// says so). Files are written atomically.
//
//   lowbit::OnnxExportOptions out;
//   out.profile = lowbit::OnnxProfile::Qdq;
//   // lowbit::OnnxExport r = lowbit::export_onnx(quantized, "model.onnx", out);   // r.notes
enum class OnnxProfile { Float, Qdq, QOperator };
struct OnnxExportOptions {
  OnnxProfile profile = OnnxProfile::Float;
  bool symmetric = false;
  int opset = 0;  // 0: 13
};
struct OnnxExport {
  std::string bytes;               // the serialized ModelProto
  std::vector<std::string> notes;  // what the export changed or approximated, for the user
  int opset = 0;
};
OnnxExport export_onnx_bytes(const Graph& model, const OnnxExportOptions& options);
OnnxExport export_onnx(const Graph& model, const std::string& path, const OnnxExportOptions& options);
// "float", "qdq" or "qoperator"; Error(InvalidArgument) otherwise.
OnnxProfile onnx_profile_from_name(const std::string& name);

// Reads one serialized ONNX TensorProto (e.g. test_data_set_0/input_0.pb of ONNX's node tests).
// Sets `name` to the tensor's name when given.
Tensor read_onnx_tensor(const std::string& path, std::string* name = nullptr);

}  // namespace lowbit
