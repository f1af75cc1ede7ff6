// Internal: ONNX TensorProto <-> lowbit Tensor, and the ONNX data type codes.
#pragma once

#include <onnx/onnx_pb.h>

#include <set>
#include <string>

#include "lowbit/tensor.h"

namespace lowbit::onnx_io {

// The lowbit dtype of an ONNX TensorProto.DataType code; throws Error(Unsupported) naming `what`
// and the ONNX type for types lowbit does not hold (double, strings, complex, ...).
DType dtype_from_onnx(int32_t code, const std::string& what);
int32_t onnx_type_of(DType dtype);

// `hint`, or `hint_1`, `hint_2`, ... : the first not in `used`, which then holds it. Value and node
// names of imported and exported graphs.
std::string unique_name(std::set<std::string>& used, const std::string& hint);
const char* onnx_type_name(int32_t code);  // "FLOAT", "DOUBLE", ...

// The tensor a TensorProto holds. Data comes from raw_data, the typed fields or, for
// data_location EXTERNAL, a file under `folder` (a path that leaves the folder, a missing file
// or too few bytes are Error(Format)). Every count is checked against the shape before anything
// is allocated. `source` (the model file) and the tensor's name appear in errors.
Tensor tensor_from_proto(const onnx::TensorProto& proto, const std::string& source, const std::string& folder);
// The TensorProto of `tensor` (raw_data, little-endian), named `name`.
void tensor_to_proto(const Tensor& tensor, const std::string& name, onnx::TensorProto& proto);

}  // namespace lowbit::onnx_io
