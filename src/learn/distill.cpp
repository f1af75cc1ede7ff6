// The teacher-logit cache. File layout (little-endian):
//   8 bytes  "LBTLOGIT"
//   u32      length of the JSON header
//   JSON     {"format": "lowbit-teacher-logits", "version": 1, "key": ..., "samples": N,
//             "classes": C, "crc32": crc of the data}
//   N*C f32  the logits, row-major
#include "lowbit/distill.h"

#include <zlib.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "lowbit/model_io.h"
#include "lowbit/train.h"

namespace lowbit {
namespace {

constexpr char kMagic[8] = {'L', 'B', 'T', 'L', 'O', 'G', 'I', 'T'};

// 64 bits from two independent checksums over the same bytes, fed in 1 GiB pieces.
struct Fingerprint {
  uLong crc = crc32(0L, Z_NULL, 0), adler = adler32(0L, Z_NULL, 0);
  void add(const void* data, size_t size) {
    const auto* p = static_cast<const Bytef*>(data);
    while (size > 0) {
      const uInt piece = static_cast<uInt>(std::min<size_t>(size, size_t{1} << 30));
      crc = crc32(crc, p, piece);
      adler = adler32(adler, p, piece);
      p += piece, size -= piece;
    }
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%08lx%08lx", crc & 0xffffffffUL, adler & 0xffffffffUL);
    return buf;
  }
};

uint32_t data_crc(const Tensor& logits) {
  return static_cast<uint32_t>(crc32(0L, static_cast<const Bytef*>(logits.raw()), static_cast<uInt>(logits.nbytes())));
}

// The cached logits if the file matches `key`, else an empty tensor and the reason in `why`.
Tensor read_cache(const std::string& path, const std::string& key, int64_t samples, std::string& why) {
  if (!files::file_exists(path)) {
    why = "no cache yet at '" + path + "'";
    return {};
  }
  std::string bytes;
  try {
    bytes = files::read_file(path);
  } catch (const Error& e) {
    why = e.what();
    return {};
  }
  uint32_t header_size = 0;
  if (bytes.size() < 12 || std::memcmp(bytes.data(), kMagic, 8) != 0) {
    why = "'" + path + "' is not a teacher-logit cache";
    return {};
  }
  std::memcpy(&header_size, bytes.data() + 8, 4);
  if (bytes.size() < 12 + size_t{header_size}) {
    why = "'" + path + "' is truncated";
    return {};
  }
  nlohmann::json h = nlohmann::json::parse(bytes.substr(12, header_size), nullptr, /*allow_exceptions=*/false);
  const auto is = [&](const char* field, nlohmann::json::value_t type) { return h.contains(field) && h[field].type() == type; };
  using T = nlohmann::json::value_t;
  if (!h.is_object() || !is("format", T::string) || h["format"] != "lowbit-teacher-logits" || !is("version", T::number_unsigned) ||
      h["version"] != 1 || !is("key", T::string) || !is("samples", T::number_unsigned) || !is("classes", T::number_unsigned) ||
      !is("crc32", T::number_unsigned)) {
    why = "'" + path + "' has an unknown header";
    return {};
  }
  if (h["key"] != key) {
    why = "'" + path + "' was made for another teacher or other data (key " + h["key"].get<std::string>() + ", now " + key + ")";
    return {};
  }
  const int64_t n = h["samples"].get<int64_t>(), c = h["classes"].get<int64_t>();
  if (n != samples || c <= 0 || bytes.size() != 12 + size_t{header_size} + static_cast<size_t>(n * c) * 4) {
    why = "'" + path + "' has the wrong size";
    return {};
  }
  Tensor logits(DType::F32, {n, c});
  std::memcpy(logits.raw(), bytes.data() + 12 + header_size, logits.nbytes());
  if (h["crc32"].get<uint32_t>() != data_crc(logits)) {
    why = "'" + path + "' is damaged (checksum mismatch)";
    return {};
  }
  return logits;
}

void write_cache(const std::string& path, const std::string& key, const Tensor& logits) {
  const nlohmann::ordered_json h = {{"format", "lowbit-teacher-logits"}, {"version", 1},   {"key", key},
                                    {"samples", logits.dim(0)},           {"classes", logits.dim(1)},
                                    {"crc32", data_crc(logits)}};
  const std::string header = h.dump();
  const uint32_t header_size = static_cast<uint32_t>(header.size());
  std::string bytes(kMagic, 8);
  bytes.append(reinterpret_cast<const char*>(&header_size), 4);
  bytes += header;
  bytes.append(static_cast<const char*>(logits.raw()), logits.nbytes());
  files::write_file_atomically(path, bytes);
}

}  // namespace

std::string teacher_logits_key(const Graph& teacher, const Dataset& data) {
  Fingerprint t, d;
  const std::string model = serialize_model(teacher);
  t.add(model.data(), model.size());
  const Shape shape = data.images.shape();
  d.add(shape.data(), shape.size() * sizeof(int64_t));
  if (data.images.dtype() != DType::U8) d.add(name_of(data.images.dtype()), 3);  // (u8 keys as they always were)
  d.add(data.images.raw(), data.images.nbytes());
  d.add(data.labels.data(), data.labels.size() * sizeof(int32_t));
  return t.hex() + "-" + d.hex();
}

TeacherLogits teacher_logits(const Graph& teacher, const Dataset& data, const std::string& cache_path) {
  TeacherLogits result;
  result.key = teacher_logits_key(teacher, data);
  if (!cache_path.empty()) {
    std::string why;
    result.logits = read_cache(cache_path, result.key, data.size(), why);
    if (result.logits.defined()) {
      result.from_cache = true;
      return result;
    }
    result.note = why + "; computed the teacher's logits and wrote the cache";
  }
  result.logits = compute_logits(teacher, data);
  if (!cache_path.empty()) write_cache(cache_path, result.key, result.logits);
  return result;
}

}  // namespace lowbit
