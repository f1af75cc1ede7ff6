// IDX files: a big-endian header (two zero bytes, a type byte, the number of dimensions, then one
// 32-bit size per dimension) followed by the data. lowbit reads unsigned-byte IDX (type 0x08),
// plain or gzip-compressed; zlib's gzread handles both transparently.
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "core/file_util.h"
#include "lowbit/idx.h"

namespace lowbit {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(ErrorKind::Format, "'" + path + "': " + what);
}

struct GzFile {
  gzFile handle;
  ~GzFile() { if (handle) gzclose(handle); }
};

// Reads exactly `size` bytes; returns how many were read before the end of the data.
size_t read_some(gzFile f, const std::string& path, void* dst, size_t size) {
  size_t done = 0;
  while (done < size) {
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(size - done, 1u << 30));
    int n = gzread(f, static_cast<char*>(dst) + done, chunk);
    if (n < 0) {
      int code = 0;
      const char* message = gzerror(f, &code);
      fail(path, std::string("corrupt compressed data (") + message + ")");
    }
    if (n == 0) {
      int code = 0;
      const char* message = gzerror(f, &code);
      if (code != Z_OK && code != Z_STREAM_END) fail(path, std::string("corrupt compressed data (") + message + ")");
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

std::string hex_byte(unsigned value) {
  const char* digits = "0123456789abcdef";
  return {digits[(value >> 4) & 15], digits[value & 15]};
}

uint32_t big_endian(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

std::string find_file(const std::string& dir, const std::string& name) {
  for (const std::string& candidate : {dir + "/" + name, dir + "/" + name + ".gz"})
    if (files::file_exists(candidate)) return candidate;
  throw Error(ErrorKind::Io, "dataset directory '" + dir + "' has no " + name + " (nor " + name + ".gz)");
}

}  // namespace

const char* default_dataset_dir() { return "/usr/share/datasets/fashion-mnist"; }

Tensor read_idx(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(ErrorKind::Io, "cannot read '" + path + "': it is a directory");
  GzFile file{gzopen(path.c_str(), "rb")};
  if (!file.handle) throw Error(ErrorKind::Io, "cannot open '" + path + "': " + std::strerror(errno));
  gzbuffer(file.handle, 1 << 17);
  unsigned char magic[4];
  if (read_some(file.handle, path, magic, 4) != 4) fail(path, "truncated: the file ends inside the IDX header");
  if (magic[0] != 0 || magic[1] != 0)
    fail(path, "not an IDX file (magic bytes " + std::to_string(magic[0]) + " " + std::to_string(magic[1]) +
                   ", expected 0 0)");
  if (magic[2] != 0x08)
    fail(path, "IDX data type 0x" + hex_byte(magic[2]) + " is not supported (expected 0x08, unsigned bytes)");
  const int rank = magic[3];
  if (rank < 1 || rank > 4) fail(path, "IDX header declares " + std::to_string(rank) + " dimensions (expected 1 to 4)");
  unsigned char dims[16];
  if (read_some(file.handle, path, dims, 4 * rank) != static_cast<size_t>(4 * rank))
    fail(path, "truncated: the file ends inside the IDX header");
  Shape shape;
  for (int i = 0; i < rank; ++i) shape.push_back(big_endian(dims + 4 * i));
  int64_t count = 1;
  for (int64_t d : shape) count = d != 0 && count > (int64_t{1} << 34) / d ? (int64_t{1} << 34) + 1 : count * d;  // no overflow
  if (count > (int64_t{1} << 34)) fail(path, "IDX header declares " + to_string(shape) + ", implausibly large");
  const auto truncated = [&](int64_t found) {
    fail(path, "truncated: header declares " + to_string(shape) + " = " + std::to_string(count) + " bytes of data, found " +
                   std::to_string(found));
  };
  const auto extra_data = [&] {
    fail(path, "has data after the " + std::to_string(count) + " bytes its header " + to_string(shape) + " declares");
  };
  // Nothing is allocated for more data than the file can hold. A plain file states its size: the
  // claim must be what it holds. A gzip stream does not, but deflate expands at most 1032-fold, so
  // a claim beyond that of the file's size is refused before anything is read (a file of 100 bytes
  // can make the reader allocate about 100 KiB at most: fuzz_idx replays small inputs with
  // -malloc_limit_mb=4). The claim is then read in place.
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail(path, "cannot tell its size: " + ec.message());
  if (gzdirect(file.handle)) {
    const int64_t data_bytes = static_cast<int64_t>(size) - 4 - 4 * rank;
    if (data_bytes < count) truncated(data_bytes);
    if (data_bytes > count) extra_data();
  } else if (count > static_cast<int64_t>(size) * 1032 + 4096) {
    fail(path, "truncated: header declares " + to_string(shape) + " = " + std::to_string(count) +
                   " bytes of data, more than a gzip file of " + std::to_string(size) +
                   " bytes can hold (deflate expands at most 1032-fold)");
  }
  Tensor tensor(DType::U8, shape);
  const size_t got = read_some(file.handle, path, tensor.raw(), static_cast<size_t>(count));
  if (got != static_cast<size_t>(count)) truncated(static_cast<int64_t>(got));
  unsigned char extra;
  if (read_some(file.handle, path, &extra, 1) != 0) extra_data();
  return tensor;
}

void write_idx(const std::string& path, const Tensor& tensor, bool gzip) {
  if (tensor.dtype() != DType::U8) throw Error(ErrorKind::InvalidArgument, "write_idx: only u8 tensors are supported");
  if (tensor.rank() < 1 || tensor.rank() > 4) throw Error(ErrorKind::InvalidArgument, "write_idx: rank must be 1 to 4");
  std::string bytes = {0, 0, 0x08, static_cast<char>(tensor.rank())};
  for (int64_t d : tensor.shape())
    for (int shift = 24; shift >= 0; shift -= 8) bytes.push_back(static_cast<char>((d >> shift) & 0xff));
  bytes.append(static_cast<const char*>(tensor.raw()), tensor.nbytes());
  if (gzip) {
    z_stream z{};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
      throw Error(ErrorKind::Io, "cannot write '" + path + "': zlib initialisation failed");
    std::string out(deflateBound(&z, bytes.size()), '\0');
    z.next_in = reinterpret_cast<Bytef*>(bytes.data());
    z.avail_in = static_cast<uInt>(bytes.size());
    z.next_out = reinterpret_cast<Bytef*>(out.data());
    z.avail_out = static_cast<uInt>(out.size());
    int rc = deflate(&z, Z_FINISH);
    out.resize(z.total_out);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) throw Error(ErrorKind::Io, "cannot write '" + path + "': compression failed");
    bytes.swap(out);
  }
  files::write_file_atomically(path, bytes);
}

Dataset load_dataset(const std::string& images_path, const std::string& labels_path) {
  Dataset data;
  data.images = read_idx(images_path);
  Tensor labels = read_idx(labels_path);
  if (data.images.rank() != 3)
    fail(images_path, "expected images [count, rows, cols], found dimensions " + to_string(data.images.shape()));
  if (labels.rank() != 1) fail(labels_path, "expected labels [count], found dimensions " + to_string(labels.shape()));
  if (labels.dim(0) != data.images.dim(0))
    fail(labels_path, "holds " + std::to_string(labels.dim(0)) + " labels but '" + images_path + "' holds " +
                          std::to_string(data.images.dim(0)) + " images");
  if (labels.dtype() != DType::U8 && labels.dtype() != DType::S8 && labels.dtype() != DType::S32)
    fail(labels_path, std::string("expected integer labels (u8, s8 or s32), found ") + name_of(labels.dtype()));
  const Tensor wide = cast(labels, DType::S32);
  const int32_t* l = wide.data<int32_t>();
  data.labels.assign(l, l + wide.numel());
  for (int64_t i = 0; i < wide.numel(); ++i)
    if (l[i] < 0) fail(labels_path, "label " + std::to_string(i) + " is negative (" + std::to_string(l[i]) + ")");
  data.num_classes = data.labels.empty() ? 0 : 1 + *std::max_element(data.labels.begin(), data.labels.end());
  return data;
}

DatasetSplits load_dataset_dir(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(ErrorKind::Io, "dataset directory '" + dir + "' does not exist or is not a directory");
  DatasetSplits splits;
  // Looked up in this order so that the first missing file is the one reported.
  const std::string train_images = find_file(dir, "train-images-idx3-ubyte");
  const std::string train_labels = find_file(dir, "train-labels-idx1-ubyte");
  const std::string test_images = find_file(dir, "t10k-images-idx3-ubyte");
  const std::string test_labels = find_file(dir, "t10k-labels-idx1-ubyte");
  splits.train = load_dataset(train_images, train_labels);
  splits.test = load_dataset(test_images, test_labels);
  if (splits.train.sample_shape() != splits.test.sample_shape())
    throw Error(ErrorKind::Format, "dataset '" + dir + "': train images are " + to_string(splits.train.sample_shape()) +
                                       " but test images are " + to_string(splits.test.sample_shape()));
  int classes = std::max(splits.train.num_classes, splits.test.num_classes);
  splits.train.num_classes = splits.test.num_classes = classes;
  return splits;
}

}  // namespace lowbit
