// Runs ONNX's backend test cases (Debian's libonnx-testdata: one folder per case with model.onnx
// and test_data_set_N/{input,output}_K.pb) through the importer and the executor, and compares
// every output with ONNX's tolerances (|got - expected| <= 1e-7 + 1e-3 |expected|; integers and
// booleans exactly). Prints one line per case: PASS, SKIP with the reason (an op, attribute or
// dtype lowbit does not support), or FAIL with what differed; then the number passed per op.
// Exit status 1 if any case fails. Integer graph inputs are bound as constants (they are shape
// parameters in these cases: Reshape's shape, Slice's starts, ...).
//
//   lowbit_onnx_node_tests DIR...      (e.g. /usr/share/libonnx-testdata/data/node)
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/file_util.h"
#include "lowbit/error.h"
#include "lowbit/executor.h"
#include "lowbit/onnx.h"

namespace fs = std::filesystem;
using namespace lowbit;

namespace {

struct Outcome {
  enum Kind { Pass, Skip, Fail } kind;
  std::string detail;
};

double value_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::S64: return static_cast<double>(t.data<int64_t>()[i]);
    case DType::S32: return t.data<int32_t>()[i];
    case DType::S8: return t.data<int8_t>()[i];
    case DType::U8: return t.data<uint8_t>()[i];
    case DType::Bool: return static_cast<const uint8_t*>(t.raw())[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(t.raw())[i]);
    default: return NAN;
  }
}

std::string compare(const Tensor& got, const Tensor& want, const std::string& name) {
  if (got.dtype() != want.dtype())
    return "output '" + name + "' is " + name_of(got.dtype()) + ", expected " + name_of(want.dtype());
  if (got.shape() != want.shape()) return "output '" + name + "' has shape " + to_string(got.shape()) + ", expected " + to_string(want.shape());
  const bool exact = !(want.dtype() == DType::F32 || want.dtype() == DType::F16 || want.dtype() == DType::BF16);
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double g = value_at(got, i), w = value_at(want, i);
    if (std::isnan(w) && std::isnan(g)) continue;
    if (std::isinf(w) && g == w) continue;
    const bool ok = exact ? g == w : std::fabs(g - w) <= 1e-7 + 1e-3 * std::fabs(w);
    if (!ok) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "output '%s' element %lld is %.9g, expected %.9g", name.c_str(), static_cast<long long>(i), g, w);
      return buf;
    }
  }
  return "";
}

std::vector<fs::path> sorted_files(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) files.push_back(e.path());
  std::sort(files.begin(), files.end(), [&](const fs::path& a, const fs::path& b) {
    auto index = [&](const fs::path& p) { return std::stoi(p.stem().string().substr(prefix.size())); };
    return index(a) < index(b);
  });
  return files;
}

Outcome run_case(const fs::path& dir, std::set<std::string>& ops) {
  const fs::path model_path = dir / "model.onnx";
  onnx::ModelProto model;
  if (!model.ParseFromString(files::read_file(model_path.string()))) return {Outcome::Fail, "model.onnx does not parse"};
  for (const auto& n : model.graph().node()) ops.insert(n.op_type());
  std::set<std::string> initializers;
  for (const auto& i : model.graph().initializer()) initializers.insert(i.name());
  std::vector<std::string> input_names, output_names;
  for (const auto& i : model.graph().input()) {
    if (initializers.count(i.name())) continue;
    if (!i.type().has_tensor_type()) return {Outcome::Skip, "input '" + i.name() + "' is not a tensor (sequences, maps, optionals)"};
    input_names.push_back(i.name());
  }
  for (const auto& o : model.graph().output()) {
    if (!o.type().has_tensor_type()) return {Outcome::Skip, "output '" + o.name() + "' is not a tensor (sequences, maps, optionals)"};
    output_names.push_back(o.name());
  }
  std::vector<fs::path> sets;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_directory() && e.path().filename().string().rfind("test_data_set_", 0) == 0) sets.push_back(e.path());
  std::sort(sets.begin(), sets.end());
  if (sets.empty()) return {Outcome::Skip, "no test data sets"};
  try {
    for (const auto& set : sets) {
      const auto inputs = sorted_files(set, "input_");
      const auto outputs = sorted_files(set, "output_");
      if (inputs.size() > input_names.size() || outputs.size() != output_names.size())
        return {Outcome::Fail, set.filename().string() + ": input/output files do not match the graph"};
      OnnxImportOptions options;
      std::map<std::string, Tensor> feeds;
      for (size_t k = 0; k < inputs.size(); ++k) {
        std::string name;
        Tensor t = read_onnx_tensor(inputs[k].string(), &name);
        if (name.empty()) name = input_names[k];
        if (t.dtype() == DType::S64 || t.dtype() == DType::S32) options.constant_inputs[name] = t;
        else feeds[name] = t;
      }
      std::vector<Tensor> expected;
      for (const auto& o : outputs) expected.push_back(read_onnx_tensor(o.string()));
      // An input the importer needs as a constant (Clip's bounds, Dropout's ratio) is bound to its
      // test value: in a deployed model it is an initializer.
      Graph g;
      for (;;) {
        try {
          g = import_onnx(model_path.string(), options);
          break;
        } catch (const Error& e) {
          const std::string what = e.what();
          const size_t end = what.find("') must be a constant");
          const size_t start = end == std::string::npos ? end : what.rfind(", '", end);
          if (start == std::string::npos) throw;
          const std::string name = what.substr(start + 3, end - start - 3);
          auto it = feeds.find(name);
          if (it == feeds.end()) throw;
          options.constant_inputs[name] = it->second;
          feeds.erase(it);
        }
      }
      Executor run(g);
      for (const auto& [name, t] : feeds) run.input(name) = t;
      run.forward();
      for (size_t k = 0; k < output_names.size(); ++k) {
        const std::string diff = compare(run.value(output_names[k]), expected[k], output_names[k]);
        if (!diff.empty()) return {Outcome::Fail, set.filename().string() + ": " + diff};
      }
    }
  } catch (const Error& e) {
    std::string what = e.what();
    const size_t colon = what.find(": ");  // drop the path prefix: the case name says it
    if (what.rfind(model_path.string(), 0) == 0 && colon != std::string::npos) what = what.substr(colon + 2);
    std::replace(what.begin(), what.end(), '\n', ' ');
    return {e.kind() == ErrorKind::Unsupported ? Outcome::Skip : Outcome::Fail, what};
  }
  return {Outcome::Pass, ""};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s DIR... (folders of ONNX backend test cases)\n", argv[0]);
    return 2;
  }
  int passed = 0, skipped = 0, failed = 0;
  std::map<std::string, std::array<int, 3>> per_op;
  for (int a = 1; a < argc; ++a) {
    if (!fs::is_directory(argv[a])) {
      std::fprintf(stderr, "lowbit_onnx_node_tests: '%s' is not a folder (install Debian's libonnx-testdata)\n", argv[a]);
      return 2;
    }
    std::vector<fs::path> cases;
    for (const auto& e : fs::directory_iterator(argv[a]))
      if (fs::exists(e.path() / "model.onnx")) cases.push_back(e.path());
    std::sort(cases.begin(), cases.end());
    for (const auto& c : cases) {
      std::set<std::string> ops;
      const Outcome o = run_case(c, ops);
      const char* tag[] = {"PASS", "SKIP", "FAIL"};
      std::string op_list;
      for (const auto& op : ops) op_list += (op_list.empty() ? "" : ",") + op;
      std::printf("%s %s [%s]%s%s\n", tag[o.kind], c.filename().string().c_str(), op_list.c_str(), o.detail.empty() ? "" : ": ",
                  o.detail.c_str());
      (o.kind == Outcome::Pass ? passed : o.kind == Outcome::Skip ? skipped : failed)++;
      if (ops.size() == 1) per_op[*ops.begin()][o.kind]++;
    }
  }
  std::printf("\nper op (cases with one op type): passed / skipped / failed\n");
  for (const auto& [op, n] : per_op)
    if (n[0] || n[2]) std::printf("  %-20s %3d / %3d / %3d\n", op.c_str(), n[0], n[1], n[2]);
  std::printf("\n%d passed, %d skipped, %d failed\n", passed, skipped, failed);
  return failed ? 1 : 0;
}
