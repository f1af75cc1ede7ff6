#include <map>
#include <mutex>

#include "graph/ops/builtin_ops.h"
#include "lowbit/ops.h"

namespace lowbit {

std::vector<DType> Op::infer_dtypes(const Node& node, std::span<const DType>) const {
  return std::vector<DType>(node.outputs.size(), DType::F32);
}

void Op::upgrade(Node& node, int from_version, Graph&) const {
  throw Error(ErrorKind::Unsupported, "node '" + node.name + "' (" + node.op + ") was written for version " +
                                          std::to_string(from_version) + " of the op; this build knows version " +
                                          std::to_string(traits_.version) + " and cannot convert it");
}

namespace {
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::unique_ptr<Op>> ops;
};
Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: ops may be used during static destruction
    ops::register_builtin_ops([reg](const std::string& type, std::unique_ptr<Op> op) { reg->ops[type] = std::move(op); });
    return reg;
  }();
  return *r;
}
}  // namespace

const Op& find_op(const std::string& type) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto it = r.ops.find(type);
  if (it == r.ops.end()) {
    std::string known;
    for (const auto& [name, op] : r.ops) known += (known.empty() ? "" : ", ") + name;
    throw Error(ErrorKind::Format, "unknown op type '" + type + "' (known: " + known + ")");
  }
  return *it->second;
}

const OpTraits& traits_of(const Node& node) { return find_op(node.op).traits(); }

bool has_op(const std::string& type) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  return r.ops.count(type) != 0;
}

void register_op(const std::string& type, std::unique_ptr<Op> op) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.ops[type] = std::move(op);
}

std::vector<std::string> registered_ops() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, op] : r.ops) names.push_back(name);
  return names;
}

}  // namespace lowbit
