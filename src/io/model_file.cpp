// The native model file; docs/format.md is the specification this code implements.
#include <zlib.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "io/model_file.h"
#include "lowbit/model_io.h"
#include "lowbit/ops.h"

namespace lowbit {
namespace {

constexpr char kMagic[8] = {'L', 'O', 'W', 'B', 'I', 'T', 'M', '\0'};
constexpr uint32_t kRequired = 1;  // section flag: a reader that does not know the tag must refuse

uint32_t tag_of(const char (&s)[5]) {
  return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 | uint32_t(uint8_t(s[3])) << 24;
}
std::string tag_name(uint32_t tag) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    char c = static_cast<char>((tag >> (8 * i)) & 0xff);
    s += (c >= 32 && c < 127) ? c : '?';
  }
  return s;
}

template <typename T> void put(std::string& out, T value) {
  static_assert(std::is_trivially_copyable_v<T>);
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (checked at build time below)
  out.append(bytes, sizeof(T));
}
static_assert(std::endian::native == std::endian::little, "the model file writer assumes a little-endian host");

uint32_t crc_of(std::string_view bytes) {
  return static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(bytes.size())));
}

void put_section(std::string& out, uint32_t tag, uint32_t flags, std::string_view payload) {
  put<uint32_t>(out, tag);
  put<uint32_t>(out, flags);
  put<uint64_t>(out, payload.size());
  put<uint32_t>(out, crc_of(payload));
  put<uint32_t>(out, 0);
  out.append(payload);
}

// A bounds-checked reader: every read names the file and what was being read.
class Reader {
 public:
  Reader(std::string_view bytes, std::string source, std::string what)
      : bytes_(bytes), source_(std::move(source)), what_(std::move(what)) {}
  template <typename T> T get(const char* field) {
    need(sizeof(T), field);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string_view take(uint64_t size, const char* field) {
    need(size, field);
    std::string_view s = bytes_.substr(pos_, size);
    pos_ += size;
    return s;
  }
  size_t remaining() const { return bytes_.size() - pos_; }
  [[noreturn]] void fail(const std::string& message) const {
    throw Error(ErrorKind::Format, "'" + source_ + "': " + what_ + ": " + message);
  }

 private:
  void need(uint64_t size, const char* field) const {
    if (size > remaining())
      fail(std::string("truncated: ") + field + " needs " + std::to_string(size) + " bytes, " + std::to_string(remaining()) +
           " remain");
  }
  std::string_view bytes_;
  size_t pos_ = 0;
  std::string source_, what_;
};

// Node attributes in the GRPH section: a JSON object whose values are numbers, strings or lists.
nlohmann::ordered_json attributes_json(const Attributes& attributes) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& [key, a] : attributes) switch (a.kind()) {
      case Attribute::Kind::Int: j[key] = a.as_int(); break;
      case Attribute::Kind::Float: j[key] = a.as_float(); break;
      case Attribute::Kind::String: j[key] = a.as_string(); break;
      case Attribute::Kind::Ints: j[key] = a.as_ints(); break;
      case Attribute::Kind::Floats: j[key] = a.as_floats(); break;
      case Attribute::Kind::Strings: j[key] = a.as_strings(); break;
    }
  return j;
}

Attribute attribute_from_json(const nlohmann::json& v, const std::string& where) {
  auto fail = [&]() -> Attribute {
    throw Error(ErrorKind::Format, where + " must be a number, a string or a list of one of them, got " + v.dump());
  };
  if (v.is_boolean()) return static_cast<int64_t>(v.get<bool>());
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return fail();
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) return v.get<double>();
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) return fail();
  bool ints = true, numbers = true, strings = true;
  for (const auto& e : v) {
    ints &= e.is_number_integer() && !(e.is_number_unsigned() && e.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX));
    numbers &= e.is_number();
    strings &= e.is_string();
  }
  if (ints) return v.get<std::vector<int64_t>>();  // [] too
  if (numbers) return v.get<std::vector<double>>();
  if (strings) return v.get<std::vector<std::string>>();
  return fail();
}

Attributes attributes_from_json(const nlohmann::json& j, const std::string& node) {
  if (!j.is_object()) throw Error(ErrorKind::Format, "node '" + node + "': attributes must be an object, got " + j.dump());
  Attributes attributes;
  for (const auto& [key, v] : j.items())
    attributes[key] = attribute_from_json(v, "node '" + node + "': attribute '" + key + "'");
  return attributes;
}

std::string graph_json(const Graph& g) {
  nlohmann::ordered_json j;
  j["name"] = g.name;
  j["inputs"] = nlohmann::ordered_json::array();
  for (const auto& in : g.inputs) {
    nlohmann::ordered_json v = {{"name", in.name}, {"dtype", name_of(in.dtype)}, {"shape", in.shape}};
    if (!in.symbols.empty()) v["symbols"] = in.symbols;
    j["inputs"].push_back(std::move(v));
  }
  j["outputs"] = g.outputs;
  j["nodes"] = nlohmann::ordered_json::array();
  for (const auto& n : g.nodes)
    j["nodes"].push_back({{"name", n.name}, {"op", n.op}, {"version", traits_of(n).version}, {"inputs", n.inputs},
                          {"outputs", n.outputs}, {"attributes", attributes_json(n.attributes)}});
  j["metadata"] = g.metadata;
  return j.dump();
}

std::string tensors_payload(const std::map<std::string, Tensor>& tensors) {
  std::string out;
  put<uint32_t>(out, static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out.append(name);
    put<uint32_t>(out, static_cast<uint32_t>(t.dtype()));
    put<uint32_t>(out, static_cast<uint32_t>(t.rank()));
    for (int64_t d : t.shape()) put<int64_t>(out, d);
    put<uint64_t>(out, t.nbytes());
    out.append(static_cast<const char*>(t.raw()), t.nbytes());
  }
  return out;
}

// Brings a node written for op version `version` to the op's current version (Op::upgrade).
void upgrade_node(Node& node, int64_t version, const std::string& source, Graph& g) {
  if (!has_op(node.op)) return;  // validate() names the unknown op
  const Op& op = find_op(node.op);
  const int current = op.traits().version;
  if (version < 1)
    throw Error(ErrorKind::Format, "node '" + node.name + "' has op version " + std::to_string(version) +
                                       " (versions start at 1)");
  if (version > current)
    throw Error(ErrorKind::Unsupported, "'" + source + "': node '" + node.name + "' (" + node.op + ") is op version " +
                                            std::to_string(version) + "; this build of lowbit knows " + node.op +
                                            " up to version " + std::to_string(current) + " (written by a newer lowbit?)");
  if (version < current) op.upgrade(node, static_cast<int>(version), g);
}

void parse_graph(std::string_view payload, const std::string& source, uint32_t format_version, Graph& g) {
  auto fail = [&](const std::string& m) { throw Error(ErrorKind::Format, "'" + source + "': section GRPH: " + m); };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(payload);
    g.name = j.value("name", "");
    for (const auto& in : j.at("inputs"))
      g.inputs.push_back({in.at("name").get<std::string>(), dtype_from_name(in.at("dtype").get<std::string>()),
                          in.at("shape").get<Shape>(), in.value("symbols", std::vector<std::string>{})});
    g.outputs = j.at("outputs").get<std::vector<std::string>>();
    for (const auto& n : j.at("nodes")) {
      const std::string name = n.at("name").get<std::string>();
      Node node{name, n.at("op").get<std::string>(), n.at("inputs").get<std::vector<std::string>>(),
                n.at("outputs").get<std::vector<std::string>>(),
                attributes_from_json(n.value("attributes", nlohmann::json::object()), name)};
      // Version 1 files predate op versions: every node is at version 1 of its op.
      const int64_t version = format_version >= 2 ? n.at("version").get<int64_t>() : 1;
      upgrade_node(node, version, source, g);
      g.nodes.push_back(std::move(node));
    }
    if (j.contains("metadata")) g.metadata = j.at("metadata").get<std::map<std::string, std::string>>();
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("malformed graph description (") + e.what() + ")");
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Unsupported) throw;  // already names the file: a newer op version
    fail(e.what());
  }
}

void parse_tensors(std::string_view payload, const std::string& source, const std::string& section,
                   std::map<std::string, Tensor>& tensors) {
  Reader r(payload, source, "section " + section);
  const uint32_t count = r.get<uint32_t>("tensor count");
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t name_size = r.get<uint32_t>("tensor name length");
    std::string name(r.take(name_size, "tensor name"));
    DType dtype;
    try {
      dtype = dtype_from_code(r.get<uint32_t>("dtype"));
    } catch (const Error& e) {
      r.fail("tensor '" + name + "': " + e.what());
    }
    const uint32_t rank = r.get<uint32_t>("rank");
    if (rank > 8) r.fail("tensor '" + name + "' has rank " + std::to_string(rank) + " (at most 8 supported)");
    Shape shape;
    for (uint32_t d = 0; d < rank; ++d) {
      int64_t dim = r.get<int64_t>("dimension");
      if (dim < 0 || dim > (int64_t{1} << 40)) r.fail("tensor '" + name + "' has invalid dimension " + std::to_string(dim));
      shape.push_back(dim);
    }
    const uint64_t nbytes = r.get<uint64_t>("data size");
    int64_t count_elements = 0;
    try {
      count_elements = element_count(shape);
    } catch (const Error&) {
      r.fail("tensor '" + name + "' shape " + to_string(shape) + " is too large");
    }
    if (nbytes != storage_bytes(dtype, count_elements))
      r.fail("tensor '" + name + "' " + name_of(dtype) + to_string(shape) + " should hold " +
             std::to_string(storage_bytes(dtype, count_elements)) + " bytes, the file says " + std::to_string(nbytes));
    std::string_view data = r.take(nbytes, "tensor data");
    Tensor t(dtype, shape);
    std::memcpy(t.raw(), data.data(), data.size());
    if (!tensors.emplace(name, std::move(t)).second) r.fail("tensor '" + name + "' appears twice");
  }
  if (r.remaining() != 0) r.fail(std::to_string(r.remaining()) + " unexpected bytes after the last tensor");
}

}  // namespace

std::string serialize_model(const Graph& model) { return model_file::serialize(model, {}); }

Graph deserialize_model(std::string_view bytes, const std::string& source) { return model_file::deserialize(bytes, source, nullptr); }

namespace model_file {

std::string graph_json(const Graph& g) { return lowbit::graph_json(g); }
std::string serialize_tensors(const std::map<std::string, Tensor>& tensors) { return tensors_payload(tensors); }
std::map<std::string, Tensor> deserialize_tensors(std::string_view payload, const std::string& source, const std::string& section) {
  std::map<std::string, Tensor> tensors;
  parse_tensors(payload, source, section, tensors);
  return tensors;
}

std::string serialize(const Graph& model, const std::vector<Section>& extra) {
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, kModelFormatVersion);
  put<uint32_t>(out, static_cast<uint32_t>(2 + extra.size()));  // section count
  put_section(out, tag_of("GRPH"), kRequired, lowbit::graph_json(model));
  put_section(out, tag_of("TNSR"), kRequired, tensors_payload(model.initializers));
  for (const auto& section : extra) {
    LOWBIT_CHECK(section.tag.size() == 4 && section.tag != "GRPH" && section.tag != "TNSR", "extra section tag '" + section.tag + "'");
    char tag[5] = {section.tag[0], section.tag[1], section.tag[2], section.tag[3], 0};
    put_section(out, tag_of(tag), 0, section.payload);  // optional: plain readers skip it
  }
  return out;
}

Graph deserialize(std::string_view bytes, const std::string& source, std::vector<Section>* extra) {
  Reader r(bytes, source, "header");
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    throw Error(ErrorKind::Format, "'" + source + "' is not a lowbit model file (its first bytes are not \"LOWBITM\")");
  r.take(sizeof(kMagic), "magic");
  const uint32_t version = r.get<uint32_t>("format version");
  if (version == 0 || version > kModelFormatVersion)
    throw Error(ErrorKind::Unsupported, "'" + source + "' has format version " + std::to_string(version) +
                                            "; this build of lowbit reads versions 1 to " + std::to_string(kModelFormatVersion) +
                                            " (was it written by a newer lowbit?)");
  const uint32_t sections = r.get<uint32_t>("section count");
  Graph g;
  bool have_graph = false, have_tensors = false;
  for (uint32_t s = 0; s < sections; ++s) {
    const uint32_t tag = r.get<uint32_t>("section tag");
    const uint32_t flags = r.get<uint32_t>("section flags");
    const uint64_t size = r.get<uint64_t>("section size");
    const uint32_t crc = r.get<uint32_t>("section checksum");
    r.get<uint32_t>("section reserved word");
    std::string_view payload = r.take(size, ("section " + tag_name(tag) + " payload").c_str());
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION  // the fuzzer (tests/fuzz) explores what lies behind the checksums
    if (crc_of(payload) != crc)
      throw Error(ErrorKind::Format, "'" + source + "': section " + tag_name(tag) +
                                         " fails its CRC-32 check: the file is corrupted");
#else
    (void)crc;
#endif
    if (tag == tag_of("GRPH")) {
      if (have_graph) throw Error(ErrorKind::Format, "'" + source + "': section GRPH appears twice");
      parse_graph(payload, source, version, g);
      have_graph = true;
    } else if (tag == tag_of("TNSR")) {
      if (have_tensors) throw Error(ErrorKind::Format, "'" + source + "': section TNSR appears twice");
      parse_tensors(payload, source, "TNSR", g.initializers);
      have_tensors = true;
    } else if (flags & kRequired) {
      throw Error(ErrorKind::Unsupported, "'" + source + "': required section " + tag_name(tag) +
                                              " is unknown to this build of lowbit (written by a newer version?)");
    } else if (extra) {
      extra->push_back({tag_name(tag), std::string(payload)});
    }  // other optional sections are skipped
  }
  if (r.remaining() != 0)
    throw Error(ErrorKind::Format, "'" + source + "': " + std::to_string(r.remaining()) + " unexpected bytes after the last section");
  if (!have_graph || !have_tensors)
    throw Error(ErrorKind::Format, "'" + source + "': missing required section " + (have_graph ? "TNSR" : "GRPH"));
  try {
    g.validate();
  } catch (const Error& e) {
    throw Error(ErrorKind::Format, "'" + source + "': invalid graph: " + e.what());
  }
  return g;
}

}  // namespace model_file

void save_model(const Graph& model, const std::string& path) { files::write_file_atomically(path, serialize_model(model)); }

Graph load_model(const std::string& path) { return deserialize_model(files::read_file(path), path); }

uint32_t model_file_version(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open '" + path + "'");
  char header[sizeof(kMagic) + 4] = {};
  in.read(header, sizeof(header));
  if (in.gcount() != sizeof(header) || std::memcmp(header, kMagic, sizeof(kMagic)) != 0)
    throw Error(ErrorKind::Format, "'" + path + "' is not a lowbit model file (its first bytes are not \"LOWBITM\")");
  uint32_t version;
  std::memcpy(&version, header + sizeof(kMagic), 4);
  return version;
}

}  // namespace lowbit
