// Training checkpoints (include/lowbit/checkpoint.h): a model file with the training state in two
// optional sections, TRST (JSON) and TRTN (tensors); docs/format.md specifies both.
#include "lowbit/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/model_file.h"
#include "lowbit/model_io.h"

namespace lowbit {
namespace {

using json = nlohmann::ordered_json;
constexpr int kStateFormat = 1;

[[noreturn]] void fail(const std::string& source, const std::string& message) {
  throw Error(ErrorKind::Format, "'" + source + "': checkpoint section TRST: " + message);
}

// Fields read with their JSON type checked (a float where an integer belongs is refused, never
// converted) and integers within [low, high].
int64_t get_int(const json& j, const char* key, int64_t low, int64_t high, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end()) fail(source, std::string("missing field '") + key + "'");
  if (!it->is_number_integer()) fail(source, std::string("field '") + key + "' must be an integer");
  if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(high))
    fail(source, std::string("field '") + key + "' is out of range");
  const int64_t v = it->get<int64_t>();
  if (v < low || v > high)
    fail(source, std::string("field '") + key + "' is " + std::to_string(v) + ", expected " + std::to_string(low) + " to " +
                     std::to_string(high));
  return v;
}
double get_number(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) fail(source, std::string("field '") + key + "' must be a number");
  return it->get<double>();
}

std::string state_json(const TrainState& s) {
  json j;
  j["format"] = kStateFormat;
  j["epoch"] = s.epoch;
  j["batch"] = s.batch;
  j["rng"] = s.rng;
  j["loss_sum"] = s.loss_sum;
  j["correct"] = s.correct;
  j["seen"] = s.seen;
  j["seconds"] = s.seconds;
  j["history"] = json::array();
  for (const auto& e : s.history)
    j["history"].push_back({{"epoch", e.epoch}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"val_loss", e.val_loss},
                            {"val_accuracy", e.val_accuracy}, {"seconds", e.seconds}});
  j["learning_rate_scales"] = json::object();
  for (const auto& [name, scale] : s.learning_rate_scales) j["learning_rate_scales"][name] = scale;
  j["settings"] = s.settings;
  return j.dump(1);
}

TrainState parse_state(std::string_view text, const std::string& source) {
  TrainState s;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, std::string("malformed JSON (") + e.what() + ")");
  }
  if (!j.is_object()) fail(source, "expected a JSON object");
  const int64_t format = get_int(j, "format", 0, 1 << 30, source);
  if (format != kStateFormat)
    throw Error(ErrorKind::Unsupported, "'" + source + "': checkpoint state format " + std::to_string(format) +
                                            "; this build of lowbit reads format " + std::to_string(kStateFormat));
  constexpr int64_t kMax = int64_t{1} << 40;
  s.epoch = static_cast<int>(get_int(j, "epoch", 1, 1 << 30, source));
  s.batch = get_int(j, "batch", 0, kMax, source);
  auto rng = j.find("rng");
  if (rng == j.end() || !rng->is_number_unsigned()) fail(source, "field 'rng' must be an unsigned integer");
  s.rng = rng->get<uint64_t>();
  s.loss_sum = get_number(j, "loss_sum", source);
  s.correct = get_int(j, "correct", 0, kMax, source);
  s.seen = get_int(j, "seen", 0, kMax, source);
  s.seconds = get_number(j, "seconds", source);
  auto history = j.find("history");
  if (history == j.end() || !history->is_array()) fail(source, "field 'history' must be an array");
  for (const auto& h : *history) {
    if (!h.is_object()) fail(source, "every entry of 'history' must be an object");
    EpochReport e;
    e.epoch = static_cast<int>(get_int(h, "epoch", 1, 1 << 30, source));
    e.loss = get_number(h, "loss", source);
    e.accuracy = get_number(h, "accuracy", source);
    e.val_loss = get_number(h, "val_loss", source);
    e.val_accuracy = get_number(h, "val_accuracy", source);
    e.seconds = get_number(h, "seconds", source);
    s.history.push_back(e);
  }
  auto scales = j.find("learning_rate_scales");
  if (scales == j.end() || !scales->is_object()) fail(source, "field 'learning_rate_scales' must be an object");
  for (const auto& [name, v] : scales->items()) {
    if (!v.is_number()) fail(source, "learning rate scale of '" + name + "' must be a number");
    s.learning_rate_scales[name] = v.get<float>();
  }
  auto settings = j.find("settings");
  if (settings == j.end() || !settings->is_string()) fail(source, "field 'settings' must be a string");
  s.settings = settings->get<std::string>();
  return s;
}

std::optional<TrainState> state_of(const std::vector<model_file::Section>& extra, const std::string& source) {
  const model_file::Section *state = nullptr, *tensors = nullptr;
  for (const auto& section : extra) {
    if (section.tag != "TRST" && section.tag != "TRTN") continue;
    const model_file::Section*& slot = section.tag == "TRST" ? state : tensors;
    if (slot) throw Error(ErrorKind::Format, "'" + source + "': section " + section.tag + " appears twice");
    slot = &section;
  }
  if (!state && !tensors) return std::nullopt;
  if (!state || !tensors)
    throw Error(ErrorKind::Format, "'" + source + "': a checkpoint needs sections TRST and TRTN; it has only " +
                                       (state ? "TRST" : "TRTN"));
  TrainState s = parse_state(state->payload, source);
  std::map<std::string, Tensor> named = model_file::deserialize_tensors(tensors->payload, source, "TRTN");
  auto order = named.find("order");
  if (order == named.end() || order->second.dtype() != DType::S32 || order->second.rank() != 1)
    throw Error(ErrorKind::Format, "'" + source + "': section TRTN: tensor 'order' (s32, one index per sample) is missing or malformed");
  const int32_t* o = order->second.data<int32_t>();
  for (int64_t i = 0; i < order->second.numel(); ++i) {
    if (o[i] < 0) throw Error(ErrorKind::Format, "'" + source + "': section TRTN: tensor 'order' holds a negative index");
    s.order.push_back(static_cast<uint32_t>(o[i]));
  }
  named.erase(order);
  for (auto& [name, t] : named) {
    if (name.rfind("optimizer/", 0) != 0)
      throw Error(ErrorKind::Format, "'" + source + "': section TRTN: unexpected tensor '" + name + "'");
    s.optimizer.emplace(name.substr(10), std::move(t));
  }
  return s;
}

// The temporary files that a save killed before its rename leaves beside `path`.
void remove_stale_temporaries(const std::string& path) {
  const std::filesystem::path target(path);
  const std::string prefix = "." + target.filename().string() + ".tmp.";
  std::error_code ec;
  const std::filesystem::path dir = target.has_parent_path() ? target.parent_path() : ".";
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    if (it->path().filename().string().rfind(prefix, 0) == 0) std::filesystem::remove(it->path(), ec);
}

// The graph without its metadata (which training runs may add to), for comparing structures.
std::string structure_of(const Graph& g) {
  Graph bare = g;
  bare.metadata.clear();
  bare.initializers.clear();
  return model_file::graph_json(bare);
}

}  // namespace

std::optional<TrainState> parse_train_state(std::string_view bytes, const std::string& source) {
  std::vector<model_file::Section> extra;
  model_file::deserialize(bytes, source, &extra);
  return state_of(extra, source);
}

std::optional<TrainState> CheckpointFile::load(Graph& model) {
  remove_stale_temporaries(path_);
  if (!best_path_.empty()) remove_stale_temporaries(best_path_);
  if (!files::file_exists(path_)) return std::nullopt;
  std::vector<model_file::Section> extra;
  const Graph saved = model_file::deserialize(files::read_file(path_), path_, &extra);
  std::optional<TrainState> state = state_of(extra, path_);
  if (!state)
    throw Error(ErrorKind::Format, "'" + path_ + "' is a model file but not a checkpoint (it has no TRST and TRTN sections)");
  if (structure_of(saved) != structure_of(model)) {
    std::string difference = "its graph differs";
    if (saved.nodes.size() != model.nodes.size())
      difference = "it has " + std::to_string(saved.nodes.size()) + " nodes, this run's model " + std::to_string(model.nodes.size());
    else
      for (size_t i = 0; i < saved.nodes.size(); ++i)
        if (saved.nodes[i].name != model.nodes[i].name || saved.nodes[i].op != model.nodes[i].op) {
          difference = "its node " + std::to_string(i) + " is '" + saved.nodes[i].name + "' (" + saved.nodes[i].op +
                       "), this run's '" + model.nodes[i].name + "' (" + model.nodes[i].op + ")";
          break;
        }
    throw Error(ErrorKind::InvalidArgument, "checkpoint '" + path_ + "' holds another model than this run trains (" + difference +
                                                "): resume with the same model and settings, or start afresh");
  }
  for (const auto& [name, t] : model.initializers) {
    auto it = saved.initializers.find(name);
    if (it == saved.initializers.end() || it->second.dtype() != t.dtype() || it->second.shape() != t.shape())
      throw Error(ErrorKind::InvalidArgument, "checkpoint '" + path_ + "' holds another model than this run trains (tensor '" + name +
                                                  "' is " + (it == saved.initializers.end() ? std::string("missing")
                                                                                            : name_of(it->second.dtype()) + to_string(it->second.shape())) +
                                                  ", expected " + name_of(t.dtype()) + to_string(t.shape()) + ")");
  }
  if (saved.initializers.size() != model.initializers.size())
    throw Error(ErrorKind::InvalidArgument, "checkpoint '" + path_ + "' holds tensors this run's model does not have");
  // Copied into the model's own storage: executors and hooks share it.
  for (auto& [name, t] : model.initializers) std::memcpy(t.raw(), saved.initializers.at(name).raw(), t.nbytes());
  return state;
}

void CheckpointFile::save(const Graph& model, const TrainState& state) {
  std::map<std::string, Tensor> tensors;
  Tensor order(DType::S32, {static_cast<int64_t>(state.order.size())});
  for (size_t i = 0; i < state.order.size(); ++i) order.data<int32_t>()[i] = static_cast<int32_t>(state.order[i]);
  tensors.emplace("order", std::move(order));
  for (const auto& [name, t] : state.optimizer) tensors.emplace("optimizer/" + name, t);
  const std::string bytes =
      model_file::serialize(model, {{"TRST", state_json(state)}, {"TRTN", model_file::serialize_tensors(tensors)}});
  files::write_file_atomically(path_, bytes);
}

CheckpointFile CheckpointFile::in_directory(const std::string& dir, const std::string& phase) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create checkpoint directory '" + dir + "': " + ec.message());
  const std::string suffix = phase.empty() ? ".lbm" : "-" + phase + ".lbm";
  const std::filesystem::path d(dir);
  return CheckpointFile((d / ("checkpoint" + suffix)).string(), (d / ("best" + suffix)).string());
}

void CheckpointFile::save_best(const Graph& model, const TrainState&) {
  if (!best_path_.empty()) save_model(model, best_path_);
}

}  // namespace lowbit
