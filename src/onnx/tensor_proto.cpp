#include "onnx/tensor_proto.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "lowbit/error.h"

namespace lowbit::onnx_io {
namespace {

using TP = onnx::TensorProto;

[[noreturn]] void fail(const std::string& source, const std::string& tensor, const std::string& what) {
  throw Error(ErrorKind::Format, source + ": tensor '" + tensor + "': " + what);
}

// The bytes of an external-data tensor: `location` relative to `folder`, never leaving it.
std::string read_external(const TP& proto, const std::string& source, const std::string& folder, size_t expected) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : proto.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::exception&) {
      fail(source, proto.name(), "external_data '" + kv.key() + "' is not a number: '" + kv.value() + "'");
    }
  }
  if (location.empty()) fail(source, proto.name(), "external data without a 'location'");
  if (folder.empty()) fail(source, proto.name(), "external data '" + location + "' but the model was not read from a file");
  namespace fs = std::filesystem;
  const fs::path rel(location);
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory())
    fail(source, proto.name(), "external data location '" + location + "' must be relative to the model's folder");
  for (const auto& part : rel)
    if (part == "..") fail(source, proto.name(), "external data location '" + location + "' leaves the model's folder");
  std::error_code ec;
  const fs::path base = fs::weakly_canonical(fs::path(folder), ec);
  const fs::path full = fs::weakly_canonical(base / rel, ec);
  const std::string b = base.string(), f = full.string();
  if (ec || f.compare(0, b.size(), b) != 0)
    fail(source, proto.name(), "external data location '" + location + "' leaves the model's folder");
  if (offset < 0) fail(source, proto.name(), "external data offset " + std::to_string(offset) + " is negative");
  if (length >= 0 && static_cast<uint64_t>(length) != expected)
    fail(source, proto.name(), "external data length " + std::to_string(length) + " does not match its shape (" +
                                   std::to_string(expected) + " bytes)");
  std::ifstream in(full, std::ios::binary);
  if (!in) fail(source, proto.name(), "cannot open external data file '" + f + "'");
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  if (static_cast<uint64_t>(offset) > size || size - static_cast<uint64_t>(offset) < expected)
    fail(source, proto.name(), "external data file '" + location + "' holds " + std::to_string(size) + " bytes, the tensor needs " +
                                   std::to_string(expected) + " from offset " + std::to_string(offset));
  std::string bytes(expected, '\0');
  in.seekg(offset);
  in.read(bytes.data(), static_cast<std::streamsize>(expected));
  if (!in) fail(source, proto.name(), "cannot read external data file '" + location + "'");
  return bytes;
}

template <typename Field, typename T>
void copy_field(const Field& field, T* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<T>(field.Get(static_cast<int>(i)));
}

}  // namespace

const char* onnx_type_name(int32_t code) {
  if (TP::DataType_IsValid(code)) {
    static thread_local std::string name;
    name = TP::DataType_Name(static_cast<TP::DataType>(code));
    return name.c_str();
  }
  switch (code) {  // newer than the protobuf definitions this build has
    case 17: return "FLOAT8E4M3FN";
    case 18: return "FLOAT8E4M3FNUZ";
    case 19: return "FLOAT8E5M2";
    case 20: return "FLOAT8E5M2FNUZ";
    case 21: return "UINT4";
    case 22: return "INT4";
    default: return "an unknown type";
  }
}

DType dtype_from_onnx(int32_t code, const std::string& what) {
  switch (code) {
    case TP::FLOAT: return DType::F32;
    case TP::UINT8: return DType::U8;
    case TP::INT8: return DType::S8;
    case TP::INT32: return DType::S32;
    case TP::INT64: return DType::S64;
    case TP::BOOL: return DType::Bool;
    case TP::FLOAT16: return DType::F16;
    case TP::BFLOAT16: return DType::BF16;
    default:
      throw Error(ErrorKind::Unsupported, what + ": data type " + onnx_type_name(code) + " (" + std::to_string(code) +
                                              ") is not supported (float, float16, bfloat16, int8, uint8, int32, int64, bool are)");
  }
}

int32_t onnx_type_of(DType dtype) {
  switch (dtype) {
    case DType::F32: return TP::FLOAT;
    case DType::U8: return TP::UINT8;
    case DType::S8: return TP::INT8;
    case DType::S32: return TP::INT32;
    case DType::S64: return TP::INT64;
    case DType::Bool: return TP::BOOL;
    case DType::F16: return TP::FLOAT16;
    case DType::BF16: return TP::BFLOAT16;
    case DType::S4: return 22;
    case DType::U4: return 21;
    default: throw Error(ErrorKind::Unsupported, std::string("ONNX has no tensor type for ") + name_of(dtype));
  }
}

std::string unique_name(std::set<std::string>& used, const std::string& hint) {
  std::string name = hint;
  for (int k = 1; used.count(name); ++k) name = hint + "_" + std::to_string(k);
  used.insert(name);
  return name;
}

Tensor tensor_from_proto(const TP& proto, const std::string& source, const std::string& folder) {
  const std::string& name = proto.name();
  const DType dtype = dtype_from_onnx(proto.data_type(), source + ": tensor '" + name + "'");
  Shape shape;
  for (int64_t d : proto.dims()) {
    if (d < 0) fail(source, name, "dimension " + std::to_string(d) + " is negative");
    shape.push_back(d);
  }
  if (proto.has_segment()) fail(source, name, "segmented tensors are not supported");
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d != 0 && count > std::numeric_limits<int32_t>::max() / d)  // < 2^31 values: protobuf's own limit
      fail(source, name, "shape " + to_string(shape) + " has too many values");
    count *= d;
  }
  const size_t bytes = storage_bytes(dtype, count);
  auto make = [&]() { return Tensor(dtype, shape); };
  if (proto.data_location() == TP::EXTERNAL) {
    const std::string data = read_external(proto, source, folder, bytes);
    Tensor t = make();
    std::memcpy(t.raw(), data.data(), bytes);
    return t;
  }
  if (proto.has_raw_data()) {
    if (proto.raw_data().size() != bytes)
      fail(source, name, "raw_data holds " + std::to_string(proto.raw_data().size()) + " bytes, shape " + to_string(shape) +
                             " of " + name_of(dtype) + " needs " + std::to_string(bytes));
    Tensor t = make();
    if (bytes) std::memcpy(t.raw(), proto.raw_data().data(), bytes);
    return t;
  }
  auto check = [&](int64_t have, const char* field) {
    if (have != count)
      fail(source, name, std::string(field) + " holds " + std::to_string(have) + " values, shape " + to_string(shape) + " needs " +
                             std::to_string(count));
  };
  Tensor t = make();
  if (dtype == DType::F32) {
    check(proto.float_data_size(), "float_data");
    copy_field(proto.float_data(), t.data<float>(), count);
  } else if (dtype == DType::S64) {
    check(proto.int64_data_size(), "int64_data");
    copy_field(proto.int64_data(), t.data<int64_t>(), count);
  } else {  // every narrower type is one int32_data value per element (f16, bf16: the bit pattern)
    check(proto.int32_data_size(), "int32_data");
    auto* raw = static_cast<char*>(t.raw());
    const size_t size = storage_bytes(dtype, 1);
    for (int64_t i = 0; i < count; ++i) {
      int32_t v = proto.int32_data(static_cast<int>(i));
      if (dtype == DType::Bool) v = v != 0;
      std::memcpy(raw + i * size, &v, size);  // the low bytes, little-endian: the value narrowed
    }
  }
  return t;
}

void tensor_to_proto(const Tensor& tensor, const std::string& name, TP& proto) {
  proto.Clear();
  proto.set_name(name);
  proto.set_data_type(onnx_type_of(tensor.dtype()));
  for (int64_t d : tensor.shape()) proto.add_dims(d);
  proto.set_raw_data(tensor.raw(), tensor.nbytes());
}

}  // namespace lowbit::onnx_io
