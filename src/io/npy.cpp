// numpy's .npy and .npz files (include/lowbit/npy.h). The .npy format: the magic "\x93NUMPY",
// a version (1.0: 2-byte header length; 2.0 and 3.0: 4-byte), a Python dict literal
// {'descr': ..., 'fortran_order': ..., 'shape': (...)} padded with spaces and a newline, then the
// array's bytes in C order. The .npz zip container is read and written with libzip.
#include "lowbit/npy.h"

#include <zip.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <set>

#include "core/file_util.h"
#include "lowbit/error.h"

namespace lowbit {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
// An .npz entry larger than this is refused before it is read (an archive can claim, or deflate
// to, any size).
constexpr uint64_t kMaxEntryBytes = uint64_t{4} << 30;

struct NpyType {
  const char* descr;
  DType dtype;
};
// numpy's type strings: '<' little-endian, '|' byte-sized (no order).
constexpr NpyType kTypes[] = {{"<f4", DType::F32}, {"<f2", DType::F16}, {"<i8", DType::S64}, {"<i4", DType::S32},
                              {"|u1", DType::U8},  {"|i1", DType::S8},  {"|b1", DType::Bool}};

[[noreturn]] void bad(const std::string& where, const std::string& what) { throw Error(ErrorKind::Format, where + ": " + what); }

// The value of `key` in the header dict: the text after "'key':" up to the next top-level comma
// or closing brace (a shape tuple is kept whole).
std::string dict_value(const std::string& where, const std::string& header, const std::string& key) {
  const std::string quoted = "'" + key + "'";
  const size_t at = header.find(quoted);
  if (at == std::string::npos) bad(where, "the .npy header has no '" + key + "' (header: " + header + ")");
  size_t i = header.find(':', at + quoted.size());
  if (i == std::string::npos) bad(where, "the .npy header's '" + key + "' has no value");
  ++i;
  while (i < header.size() && header[i] == ' ') ++i;
  size_t end = i;
  if (end < header.size() && header[end] == '(') {
    end = header.find(')', end);
    if (end == std::string::npos) bad(where, "the .npy header's shape tuple is not closed");
    return header.substr(i, end - i + 1);
  }
  while (end < header.size() && header[end] != ',' && header[end] != '}') ++end;
  std::string v = header.substr(i, end - i);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

Shape parse_shape(const std::string& where, const std::string& tuple) {
  Shape shape;
  size_t i = 1;  // after '('
  while (i + 1 < tuple.size()) {
    while (i < tuple.size() && (tuple[i] == ' ' || tuple[i] == ',')) ++i;
    if (i + 1 >= tuple.size()) break;
    size_t end = i;
    int64_t d = 0;
    while (end < tuple.size() && tuple[end] >= '0' && tuple[end] <= '9') {
      if (d > (std::numeric_limits<int64_t>::max() - 9) / 10) bad(where, "a dimension of the shape " + tuple + " is too large");
      d = d * 10 + (tuple[end] - '0');
      ++end;
    }
    if (end == i) bad(where, "the shape " + tuple + " is not a tuple of non-negative integers");
    shape.push_back(d);
    i = end;
  }
  return shape;
}

// The array held by .npy bytes (`where` names the file, or the file and the archive entry).
Tensor parse_npy(const std::string& where, std::string_view bytes) {
  if (bytes.size() < 10 || bytes.substr(0, 6) != std::string_view(kMagic, 6))
    bad(where, "not an .npy array (it does not start with numpy's magic \\x93NUMPY)");
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<size_t>(static_cast<uint8_t>(bytes[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) bad(where, "the .npy header is truncated");
    for (int b = 0; b < 4; ++b) header_len |= static_cast<size_t>(static_cast<uint8_t>(bytes[8 + b])) << (8 * b);
    offset = 12;
  } else {
    throw Error(ErrorKind::Unsupported, where + ": .npy format version " + std::to_string(major) + " (1, 2 and 3 are supported)");
  }
  if (header_len > bytes.size() - offset) bad(where, "the .npy header claims " + std::to_string(header_len) + " bytes; the file is shorter");
  const std::string header(bytes.substr(offset, header_len));
  const std::string descr = dict_value(where, header, "descr");
  const NpyType* type = nullptr;
  for (const NpyType& t : kTypes)
    if (descr == std::string("'") + t.descr + "'") type = &t;
  if (!type) {
    throw Error(ErrorKind::Unsupported, where + ": dtype " + descr +
                                            " is not supported (float32 '<f4', float16 '<f2', int64 '<i8', int32 '<i4', uint8 '|u1', "
                                            "int8 '|i1' and bool '|b1' are: convert with astype)");
  }
  const std::string order = dict_value(where, header, "fortran_order");
  if (order == "True") throw Error(ErrorKind::Unsupported, where + ": Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  if (order != "False") bad(where, "'fortran_order' must be True or False, got " + order);
  const Shape shape = parse_shape(where, dict_value(where, header, "shape"));
  // Checked before allocating: the element count against the bytes present.
  const size_t data_bytes = bytes.size() - offset - header_len;
  const size_t item = storage_bytes(type->dtype, 1);  // every .npy dtype here is byte-addressable
  size_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > data_bytes / static_cast<size_t>(d)) bad(where, "the shape " + to_string(shape) + " needs more bytes than the file holds");
    count *= static_cast<size_t>(d);
  }
  if (count * item != data_bytes)
    bad(where, "the shape " + to_string(shape) + " of " + descr + " needs " + std::to_string(count * item) + " bytes of data, the file holds " +
                   std::to_string(data_bytes));
  Tensor t(type->dtype, shape);
  if (data_bytes) std::memcpy(t.raw(), bytes.data() + offset + header_len, data_bytes);
  if (type->dtype == DType::Bool)
    for (size_t i = 0; i < count; ++i)
      if (static_cast<const uint8_t*>(t.raw())[i] > 1) bad(where, "a bool array holds a byte other than 0 and 1");
  return t;
}

std::string npy_bytes(const std::string& where, const Tensor& t) {
  const NpyType* type = nullptr;
  for (const NpyType& k : kTypes)
    if (k.dtype == t.dtype()) type = &k;
  if (!type) throw Error(ErrorKind::Unsupported, where + ": " + name_of(t.dtype()) + " values have no .npy dtype here");
  std::string shape = "(";
  for (int64_t d : t.shape()) shape += std::to_string(d) + ", ";
  if (t.rank() > 1) shape.resize(shape.size() - 2);
  else if (t.rank() == 1) shape.pop_back();  // "(3,)"
  shape += ")";
  std::string header = std::string("{'descr': '") + type->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Version 1.0: magic (6) + version (2) + length (2) + header, a multiple of 64, ending in '\n'.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  if (header.size() > 65535) throw Error(ErrorKind::Unsupported, where + ": the array's shape is too long for an .npy header");
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};

std::string zip_message(zip_t* z) { return z ? zip_strerror(z) : "unknown error"; }

std::string stem(const std::string& path) { return std::filesystem::path(path).stem().string(); }

}  // namespace

Tensor read_npy(const std::string& path) { return parse_npy(path, files::read_file(path)); }

std::vector<NamedTensor> read_npz(const std::string& path) {
  if (!files::file_exists(path)) throw Error(ErrorKind::Io, path + ": cannot open (no such file)");
  int code = 0;
  std::unique_ptr<zip_t, ZipCloser> z(zip_open(path.c_str(), ZIP_RDONLY, &code));
  if (!z) {
    zip_error_t e;
    zip_error_init_with_code(&e, code);
    const std::string why = zip_error_strerror(&e);
    zip_error_fini(&e);
    throw Error(ErrorKind::Format, path + ": not an .npz archive (" + why + ")");
  }
  const zip_int64_t entries = zip_get_num_entries(z.get(), 0);
  std::vector<NamedTensor> arrays;
  std::set<std::string> names;
  for (zip_int64_t i = 0; i < entries; ++i) {
    zip_stat_t st;
    if (zip_stat_index(z.get(), static_cast<zip_uint64_t>(i), 0, &st) != 0 || !(st.valid & ZIP_STAT_NAME) || !(st.valid & ZIP_STAT_SIZE))
      bad(path, "entry " + std::to_string(i) + " cannot be read (" + zip_message(z.get()) + ")");
    std::string name = st.name;
    const std::string where = path + ", array '" + name + "'";
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".npy") == 0) name.resize(name.size() - 4);
    if (st.size > kMaxEntryBytes) bad(where, "the entry claims " + std::to_string(st.size) + " bytes (more than the 4 GiB limit)");
    std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> f(zip_fopen_index(z.get(), static_cast<zip_uint64_t>(i), 0), zip_fclose);
    if (!f) bad(where, "cannot be opened (" + zip_message(z.get()) + ")");
    // Read in chunks: memory follows the bytes actually there, never the claimed size.
    std::string bytes;
    char chunk[1 << 16];
    for (;;) {
      const zip_int64_t n = zip_fread(f.get(), chunk, sizeof chunk);
      if (n < 0) bad(where, "cannot be read (" + std::string(zip_file_strerror(f.get())) + ")");
      if (n == 0) break;
      if (bytes.size() + static_cast<size_t>(n) > st.size) bad(where, "holds more bytes than its entry claims");
      bytes.append(chunk, static_cast<size_t>(n));
    }
    if (bytes.size() != st.size) bad(where, "is truncated (" + std::to_string(bytes.size()) + " of " + std::to_string(st.size) + " bytes)");
    if (!names.insert(name).second) bad(where, "appears twice in the archive");
    arrays.push_back({name, parse_npy(where, bytes)});
  }
  return arrays;
}

std::vector<NamedTensor> read_arrays(const std::string& path) {
  const std::string bytes = files::read_file(path);
  if (bytes.size() >= 6 && bytes.compare(0, 6, std::string(kMagic, 6)) == 0) return {{stem(path), parse_npy(path, bytes)}};
  return read_npz(path);
}

Dataset read_npz_dataset(const std::string& path) {
  std::vector<std::pair<std::string, Tensor>> inputs;
  for (auto& a : read_arrays(path)) inputs.emplace_back(std::move(a.name), std::move(a.tensor));
  try {
    return make_input_dataset(std::move(inputs));
  } catch (const Error& e) {
    throw Error(ErrorKind::Format, "'" + path + "': " + e.what());
  }
}

void write_npy(const std::string& path, const Tensor& tensor) { files::write_file_atomically(path, npy_bytes(path, tensor)); }

void write_npz(const std::string& path, const std::vector<NamedTensor>& arrays) {
  std::set<std::string> names;
  std::vector<std::string> blobs;
  for (const auto& a : arrays) {
    if (a.name.empty() || !names.insert(a.name).second)
      throw Error(ErrorKind::InvalidArgument, path + ": array names must be unique and non-empty, got '" + a.name + "'");
    blobs.push_back(npy_bytes(path + ", array '" + a.name + "'", a.tensor));
  }
  // The archive is built in memory, then written atomically like every lowbit file.
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* buffer = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (!buffer) throw Error(ErrorKind::Internal, path + ": " + zip_error_strerror(&error));
  zip_source_keep(buffer);
  std::unique_ptr<zip_source_t, void (*)(zip_source_t*)> keep(buffer, zip_source_free);
  zip_t* z = zip_open_from_source(buffer, ZIP_TRUNCATE, &error);
  if (!z) throw Error(ErrorKind::Internal, path + ": " + zip_error_strerror(&error));
  for (size_t i = 0; i < arrays.size(); ++i) {
    zip_source_t* s = zip_source_buffer(z, blobs[i].data(), blobs[i].size(), 0);
    const std::string entry = arrays[i].name + ".npy";
    if (!s || zip_file_add(z, entry.c_str(), s, ZIP_FL_ENC_UTF_8) < 0) {
      if (s) zip_source_free(s);
      const std::string why = zip_message(z);
      zip_discard(z);
      throw Error(ErrorKind::Internal, path + ": cannot add '" + entry + "' (" + why + ")");
    }
    zip_set_file_compression(z, static_cast<zip_uint64_t>(i), ZIP_CM_STORE, 0);
  }
  if (zip_close(z) != 0) {
    const std::string why = zip_message(z);
    zip_discard(z);
    throw Error(ErrorKind::Internal, path + ": cannot build the archive (" + why + ")");
  }
  // The buffer source now holds the archive.
  zip_stat_t st;
  if (zip_source_stat(buffer, &st) != 0 || zip_source_open(buffer) != 0) throw Error(ErrorKind::Internal, path + ": cannot read the archive back");
  std::string bytes(static_cast<size_t>(st.size), '\0');
  const zip_int64_t n = zip_source_read(buffer, bytes.data(), st.size);
  zip_source_close(buffer);
  if (n < 0 || static_cast<zip_uint64_t>(n) != st.size) throw Error(ErrorKind::Internal, path + ": cannot read the archive back");
  files::write_file_atomically(path, bytes);
}

void write_arrays(const std::string& path, const std::vector<NamedTensor>& arrays) {
  if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".npy") == 0) {
    if (arrays.size() != 1)
      throw Error(ErrorKind::InvalidArgument, path + ": an .npy file holds one array, got " + std::to_string(arrays.size()) + " (write an .npz)");
    return write_npy(path, arrays[0].tensor);
  }
  write_npz(path, arrays);
}

}  // namespace lowbit
