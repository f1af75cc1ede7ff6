// `lowbit import`: an ONNX model in, a native model out.
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lowbit/lowbit.h"
#include "lowbit/onnx.h"

namespace lowbit::cli {

using json = nlohmann::json;

Command add_import(CLI::App& app) {
  auto* cmd = app.add_subcommand("import", "Import an ONNX model (from PyTorch, ONNX Runtime's quantizer, ...) as a lowbit model");
  struct Options {
    std::string model, out;
    bool json = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("model", o->model, "The .onnx file (external data files are read from its folder)")->required();
  cmd->add_option("--out", o->out, "Native model to write (.lbm)")->required();
  cmd->add_flag("--json", o->json, "End with one JSON line describing the model");
  return [o] {
    const Graph model = import_onnx(o->model);
    save_model(model, o->out);
    std::map<std::string, int> ops;
    for (const auto& n : model.nodes) ++ops[n.op];
    std::string op_list;
    for (const auto& [op, count] : ops) op_list += fmt::format("{}{} x{}", op_list.empty() ? "" : ", ", op, count);
    fmt::print("imported {} (opset {}{}): {} nodes ({}), {} parameters\n", o->model, model.metadata.at("onnx_opset"),
               model.metadata.count("onnx_producer") ? ", from " + model.metadata.at("onnx_producer") : "", model.nodes.size(),
               op_list, model.parameter_count());
    json inputs = json::array(), outputs = json::array();
    for (const auto& in : model.inputs) {
      fmt::print("  input  {} {} {}\n", in.name, name_of(in.dtype), to_string(in.shape));
      inputs.push_back({{"name", in.name}, {"dtype", name_of(in.dtype)}, {"shape", in.shape}});
    }
    const auto shapes = model.infer_shapes();
    for (const auto& out : model.outputs) {
      const ValueInfo& vi = shapes.at(out);
      fmt::print("  output {} {} {}\n", out, name_of(vi.dtype), to_string(vi.shape));
      outputs.push_back({{"name", out}, {"dtype", name_of(vi.dtype)}, {"shape", vi.shape}});
    }
    fmt::print("wrote {}\n", o->out);
    if (o->json) {
      json j = {{"command", "import"}, {"model", o->model}, {"out", o->out}, {"nodes", model.nodes.size()}, {"ops", ops},
                {"parameters", model.parameter_count()}, {"opset", std::stoi(model.metadata.at("onnx_opset"))},
                {"inputs", inputs}, {"outputs", outputs}};
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

Command add_export(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Export a model to ONNX: float, QDQ or QOperator (for ONNX Runtime, TensorRT, ...)");
  struct Options {
    std::string model, out, format = "float";
    bool symmetric = false, json = false;
    int opset = 0;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--model", o->model, "Model to export (.lbm, or .onnx)")->required();
  cmd->add_option("--out", o->out, "ONNX file to write")->required();
  cmd->add_option("--format", o->format, "float, qdq (QuantizeLinear/DequantizeLinear around float ops) or qoperator (integer ops)")
      ->capture_default_str()->check(CLI::IsMember({"float", "qdq", "qoperator"}));
  cmd->add_flag("--symmetric", o->symmetric, "Every activation zero point 0 (as TensorRT requires)");
  cmd->add_option("--opset", o->opset, "ONNX opset (default 13; 21 keeps 4-bit weights as int4)")->check(CLI::Range(13, kOnnxMaxOpset));
  cmd->add_flag("--json", o->json, "End with one JSON line of results");
  return [o] {
    const Graph model = open_model(o->model);
    OnnxExportOptions options{.profile = onnx_profile_from_name(o->format), .symmetric = o->symmetric, .opset = o->opset};
    const OnnxExport r = export_onnx(model, o->out, options);
    for (const auto& note : r.notes) fmt::print("note: {}\n", note);
    fmt::print("wrote {} ({} format{}, opset {}, {} bytes)\n", o->out, o->format, o->symmetric ? ", symmetric" : "", r.opset, r.bytes.size());
    if (o->json) {
      json j = {{"command", "export"}, {"model", o->model}, {"out", o->out}, {"format", o->format}, {"symmetric", o->symmetric},
                {"opset", r.opset}, {"bytes", r.bytes.size()}, {"notes", r.notes}};
      std::puts(j.dump().c_str());
    }
    return 0;
  };
}

}  // namespace lowbit::cli
