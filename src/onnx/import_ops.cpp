// The converters: one function per supported ONNX op, mapping its inputs and attributes onto
// lowbit ops (docs/onnx.md lists them). Shape arithmetic on int64 vectors is followed
// symbolically (Importer::symbolic), so that Reshape targets computed from Shape(x) become static.
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "lowbit/error.h"
#include "onnx/importer.h"
#include "onnx/tensor_proto.h"

namespace lowbit::onnx_io {
namespace {

using I = Importer;

int64_t normalize_axis(const I& im, int64_t axis, int64_t rank, const char* what) {
  if (axis < -rank || axis >= rank)
    im.unsupported(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

void require_dtype(const I& im, int i, std::initializer_list<DType> allowed) {
  const DType d = im.info(i).dtype;
  std::string names;
  for (DType a : allowed) {
    if (a == d) return;
    names += std::string(names.empty() ? "" : ", ") + name_of(a);
  }
  im.unsupported("input " + std::to_string(i) + " has dtype " + name_of(d) + " (supported: " + names + ")");
}
void require_f32(const I& im, int i) { require_dtype(im, i, {DType::F32}); }

std::vector<int64_t> ints_of(const Tensor& t) {
  const Tensor v = cast(t, DType::S64);
  return {v.data<int64_t>(), v.data<int64_t>() + v.numel()};
}

float scalar_of(const I& im, const Tensor& t, const std::string& what) {
  if (t.numel() != 1) im.unsupported(what + " must hold one value, has " + std::to_string(t.numel()));
  return cast(t, DType::F32).data<float>()[0];
}

// An int64 vector given as attribute (older opsets) or as a constant input (newer ones).
std::optional<std::vector<int64_t>> ints_from(I& im, const std::string& attr, int input, const std::string& what) {
  if (im.has_attr(attr)) return im.attr_ints(attr, {});
  if (im.has_input(input)) return ints_of(im.require_constant(input, what));
  return std::nullopt;
}

void unary(I& im, const char* op, Attributes attrs = {}) {
  require_f32(im, 0);
  im.emit(op, {im.input(0)}, {im.output(0)}, std::move(attrs));
}

// ---- int64 shape arithmetic ------------------------------------------------------------------

bool all_known(const SymVector& v) {
  for (const auto& d : v)
    if (!d.known()) return false;
  return true;
}
Tensor tensor_of(const SymVector& v, bool scalar) {
  Tensor t(DType::S64, scalar ? Shape{} : Shape{static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.data<int64_t>()[i] = v[i].value;
  return t;
}
// Records `v` as the output's symbolic value, a constant when fully known. Returns true when the
// run-time node is still needed (the output is not constant).
bool set_sym(I& im, const std::string& out, const SymVector& v, bool scalar) {
  if (all_known(v)) {
    im.set_constant(out, tensor_of(v, scalar));
    return false;
  }
  im.set_symbolic(out, v);
  return true;
}
bool is_int(DType d) { return d == DType::S64 || d == DType::S32; }

void binary(I& im, const char* op) {
  im.ignore_attr("broadcast");  // before opset 7, with no 'axis': trailing broadcasting, numpy's rule
  const DType a = im.info(0).dtype, b = im.info(1).dtype;
  if (is_int(a) && is_int(b)) {  // shape arithmetic: constant or followed symbolically
    auto x = im.symbolic(0), y = im.symbolic(1);
    if (!x || !y || (x->size() != y->size() && x->size() != 1 && y->size() != 1))
      im.unsupported(std::string("integer ") + op + " of run-time values (only shape arithmetic that folds is supported)");
    const size_t n = std::max(x->size(), y->size());
    SymVector r(n);
    for (size_t i = 0; i < n; ++i) {
      const SymDim& p = (*x)[x->size() == 1 ? 0 : i];
      const SymDim& q = (*y)[y->size() == 1 ? 0 : i];
      if (!p.known() || !q.known()) {
        r[i] = {0, "?"};
        continue;
      }
      const std::string o = op;
      if (o == "Div" && q.value == 0) im.unsupported("integer division by zero");
      r[i] = {o == "Add" ? p.value + q.value : o == "Sub" ? p.value - q.value : o == "Mul" ? p.value * q.value : p.value / q.value, ""};
    }
    const bool scalar = im.info(0).shape.empty() && im.info(1).shape.empty();
    if (set_sym(im, im.output(0), r, scalar))
      im.unsupported(std::string("integer ") + op + " of run-time shape values is only followed where a Reshape uses it");
    return;
  }
  require_f32(im, 0);
  require_f32(im, 1);
  im.emit(op, {im.input(0), im.input(1)}, {im.output(0)});
}

// ---- converters ------------------------------------------------------------------------------

void softmax_like(I& im, const char* op) {
  require_f32(im, 0);
  const Shape& shape = im.info(0).shape;
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t axis = normalize_axis(im, im.attr_int("axis", im.opset() >= 13 ? -1 : 1), rank, "axis");
  if (im.opset() >= 13 || axis == rank - 1) {
    im.emit(op, {im.input(0)}, {im.output(0)}, {{"axis", im.opset() >= 13 ? axis : int64_t{-1}}});
    return;
  }
  // Before opset 13: the input is seen as a matrix [d0*..*d(axis-1), rest], normalized by rows.
  int dynamic = 0;
  for (int64_t d : shape) dynamic += d < 0;
  if (dynamic > 1) im.unsupported("axis " + std::to_string(axis) + " before opset 13 needs at most one dynamic dimension");
  const std::string flat = im.fresh(im.output(0) + "_2d"), rows = im.fresh(im.output(0) + "_rows");
  im.emit("Flatten", {im.input(0)}, {flat}, {{"axis", axis}}, "_flatten");
  im.emit(op, {flat}, {rows}, {{"axis", int64_t{-1}}});
  im.emit("Reshape", {rows}, {im.output(0)}, {{"dims", std::vector<int64_t>(shape)}}, "_reshape");
}

void clip(I& im) {
  require_f32(im, 0);
  Attributes attrs;
  if (im.opset() < 11) {
    if (im.has_attr("min")) attrs["min"] = static_cast<double>(im.attr_float("min", 0));
    if (im.has_attr("max")) attrs["max"] = static_cast<double>(im.attr_float("max", 0));
  } else {
    if (im.has_input(1)) attrs["min"] = static_cast<double>(scalar_of(im, im.require_constant(1, "min"), "min"));
    if (im.has_input(2)) attrs["max"] = static_cast<double>(scalar_of(im, im.require_constant(2, "max"), "max"));
  }
  im.emit("Clip", {im.input(0)}, {im.output(0)}, std::move(attrs));
}

// Transposes a constant matrix (for weights that arrive [K, N] and Dense stores [N, K]).
Tensor transposed(const Tensor& w) {
  const int64_t r = w.shape()[0], c = w.shape()[1];
  Tensor t(DType::F32, {c, r});
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) t.data<float>()[j * r + i] = w.data<float>()[i * c + j];
  return t;
}

void matmul(I& im) {
  require_f32(im, 0);
  require_f32(im, 1);
  const Tensor* b = im.constant(1);
  if (b && b->rank() == 2 && im.info(0).shape.size() >= 2 && !im.constant(0)) {
    const std::string t = im.constant_value(transposed(*b), im.input(1) + "_t");
    // DequantizeLinear'd int8 weights (QDQ models): the codes move with them, per column -> per row.
    auto o = im.origins.find(im.input(1));
    if (o != im.origins.end() && o->second.codes.dtype() == DType::S8 && o->second.axis != 0) {
      const Tensor& c = o->second.codes;
      const int64_t r = c.shape()[0], n = c.shape()[1];
      Tensor ct(DType::S8, {n, r});
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < n; ++j) ct.data<int8_t>()[j * r + i] = c.data<int8_t>()[i * n + j];
      im.origins[t] = {std::move(ct), o->second.scale, o->second.zero_point, o->second.axis == 1 ? 0 : -1};
    }
    im.emit("Dense", {im.input(0), t}, {im.output(0)});
    return;
  }
  im.emit("MatMul", {im.input(0), im.input(1)}, {im.output(0)});
}

void gemm(I& im) {
  require_f32(im, 0);
  require_f32(im, 1);
  im.ignore_attr("broadcast");  // before opset 7: C broadcasts (a case of numpy broadcasting)
  const float alpha = im.attr_float("alpha", 1.0f), beta = im.attr_float("beta", 1.0f);
  const bool trans_a = im.attr_int("transA", 0) != 0, trans_b = im.attr_int("transB", 0) != 0;
  if (im.info(0).shape.size() != 2 || im.info(1).shape.size() != 2) im.unsupported("A and B must be matrices");
  const Tensor* b = im.constant(1);
  const Tensor* c = im.has_input(2) ? im.constant(2) : nullptr;
  if (im.has_input(2)) require_f32(im, 2);
  const std::string out = im.output(0);
  if (b && !trans_a && !im.constant(0)) {
    // Dense: weights [N, K] scaled by alpha; a bias that broadcasts along rows is beta * C.
    Tensor w = trans_b ? b->clone() : transposed(*b);
    if (alpha != 1.0f)
      for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] *= alpha;
    const int64_t n = w.shape()[0];
    const std::string weights = trans_b && alpha == 1.0f ? im.input(1) : im.constant_value(std::move(w), im.input(1) + "_gemm");
    std::vector<std::string> inputs = {im.input(0), weights};
    bool bias_done = !im.has_input(2);
    if (c && (c->numel() == n || c->numel() == 1) && (c->rank() <= 1 || (c->rank() == 2 && c->shape()[0] == 1))) {
      if (beta == 1.0f && c->rank() == 1 && c->numel() == n) {
        inputs.push_back(im.input(2));
      } else {
        Tensor bias(DType::F32, {n});
        for (int64_t i = 0; i < n; ++i) bias.data<float>()[i] = beta * c->data<float>()[c->numel() == 1 ? 0 : i];
        inputs.push_back(im.constant_value(std::move(bias), im.input(2) + "_gemm"));
      }
      bias_done = true;
    }
    if (bias_done) {
      im.emit("Dense", std::move(inputs), {out});
      return;
    }
    const std::string y = im.fresh(out + "_ab");
    im.emit("Dense", std::move(inputs), {y});
    std::string cc = im.input(2);
    if (beta != 1.0f) {
      cc = im.fresh(out + "_beta_c");
      im.emit("Mul", {im.input(2), im.constant_value(Tensor::from_vector({}, std::vector<float>{beta}), out + "_beta")}, {cc}, {}, "_beta");
    }
    im.emit("Add", {y, cc}, {out}, {}, "_add");
    return;
  }
  std::string a = im.input(0), bb = im.input(1);
  if (trans_a) {
    a = im.fresh(out + "_at");
    im.emit("Transpose", {im.input(0)}, {a}, {{"perm", {1, 0}}}, "_transpose_a");
  }
  if (trans_b) {
    bb = im.fresh(out + "_bt");
    im.emit("Transpose", {im.input(1)}, {bb}, {{"perm", {1, 0}}}, "_transpose_b");
  }
  std::string y = (alpha == 1.0f && !im.has_input(2)) ? out : im.fresh(out + "_ab");
  im.emit("MatMul", {a, bb}, {y});
  if (alpha != 1.0f) {
    const std::string scaled = im.has_input(2) ? im.fresh(out + "_alpha_ab") : out;
    im.emit("Mul", {y, im.constant_value(Tensor::from_vector({}, std::vector<float>{alpha}), out + "_alpha")}, {scaled}, {}, "_alpha");
    y = scaled;
  }
  if (im.has_input(2)) {
    std::string cc = im.input(2);
    if (beta != 1.0f) {
      cc = im.fresh(out + "_beta_c");
      im.emit("Mul", {im.input(2), im.constant_value(Tensor::from_vector({}, std::vector<float>{beta}), out + "_beta")}, {cc}, {}, "_beta");
    }
    im.emit("Add", {y, cc}, {out}, {}, "_add");
  }
}

void reshape(I& im) {
  auto target = im.symbolic(1);
  if (!target) im.unsupported("the target shape must be a constant or computed from Shape()");
  const bool allowzero = im.attr_int("allowzero", 0) != 0;
  const ValueInfo& x = im.info(0);
  std::vector<int64_t> dims;
  int inferred = 0;
  for (size_t i = 0; i < target->size(); ++i) {
    const SymDim& d = (*target)[i];
    if (d.known()) {
      dims.push_back(d.value);
      inferred += d.value == -1;
      continue;
    }
    // A dimension of x copied at the same place is ONNX's 0; any other unknown is inferred (-1).
    if (!allowzero && i < x.shape.size() && x.shape[i] < 0 && i < x.symbols.size() && x.symbols[i] == d.symbol) {
      dims.push_back(0);
    } else {
      dims.push_back(-1);
      ++inferred;
    }
  }
  if (inferred > 1) im.unsupported("the target shape has more than one dimension known only at run time");
  Attributes attrs{{"dims", dims}};
  if (allowzero) attrs["allowzero"] = int64_t{1};
  im.emit("Reshape", {im.input(0)}, {im.output(0)}, std::move(attrs));
}

void shape(I& im) {
  const ValueInfo& x = im.info(0);
  const int64_t rank = static_cast<int64_t>(x.shape.size());
  auto clampi = [&](int64_t v) { return std::clamp(v < 0 ? v + rank : v, int64_t{0}, rank); };
  const int64_t start = clampi(im.attr_int("start", 0)), end = clampi(im.attr_int("end", rank));
  SymVector v;
  for (int64_t d = start; d < end; ++d)
    v.push_back(x.shape[d] >= 0 ? SymDim{x.shape[d], ""} : SymDim{0, d < static_cast<int64_t>(x.symbols.size()) ? x.symbols[d] : "?"});
  Attributes attrs;
  if (start != 0) attrs["start"] = start;
  if (end != rank) attrs["end"] = end;
  if (set_sym(im, im.output(0), v, false)) im.emit("Shape", {im.input(0)}, {im.output(0)}, std::move(attrs));
}

// Size: the element count as an int64 scalar, folded to a constant (the shape must be known).
void size(I& im) {
  const ValueInfo& x = im.info(0);
  int64_t count = 1;
  for (int64_t d : x.shape) {
    if (d < 0) im.unsupported("the size of a tensor with a dynamic dimension (" + to_string(x.shape) + ") is not supported");
    count *= d;
  }
  Tensor t(DType::S64, {});
  t.data<int64_t>()[0] = count;
  im.set_constant(im.output(0), std::move(t));
}

// Runs the op at run time unless its int64 result can be followed symbolically from a symbolic
// input (then the node is emitted too when its inputs exist at run time; unused, it is dropped).
void gather(I& im) {
  const int64_t axis = im.attr_int("axis", 0);
  auto data = im.symbolic(0);
  const Tensor* idx = im.constant(1);
  if (data && idx && !im.constant(0) && im.info(0).shape.size() == 1 && idx->rank() <= 1) {
    SymVector r;
    for (int64_t k : ints_of(*idx)) {
      const int64_t n = static_cast<int64_t>(data->size());
      if (k < -n || k >= n) im.unsupported("index " + std::to_string(k) + " is out of range for " + std::to_string(n) + " values");
      r.push_back((*data)[k < 0 ? k + n : k]);
    }
    if (!set_sym(im, im.output(0), r, idx->rank() == 0)) return;
  }
  require_dtype(im, 1, {DType::S64, DType::S32});
  im.emit("Gather", {im.input(0), im.input(1)}, {im.output(0)}, {{"axis", axis}});
}

void unsqueeze(I& im) {
  auto axes = ints_from(im, "axes", 1, "axes");
  if (!axes) im.unsupported("axes are required");
  if (auto v = im.symbolic(0); v && !im.constant(0) && im.info(0).shape.empty() && axes->size() == 1)
    if (!set_sym(im, im.output(0), *v, false)) return;
  im.emit("Unsqueeze", {im.input(0)}, {im.output(0)}, {{"axes", *axes}});
}

void squeeze(I& im) {
  auto axes = ints_from(im, "axes", 1, "axes");
  if (auto v = im.symbolic(0); v && !im.constant(0) && im.info(0).shape.size() == 1 && v->size() == 1)
    if (!set_sym(im, im.output(0), *v, true)) return;
  Attributes attrs;
  if (axes) attrs["axes"] = *axes;
  im.emit("Squeeze", {im.input(0)}, {im.output(0)}, std::move(attrs));
}

void concat(I& im) {
  const int64_t axis = im.attr_int("axis", 0);
  std::vector<std::string> inputs;
  SymVector all;
  bool symbolic = true;
  for (int i = 0; i < im.inputs(); ++i) {
    if (!im.has_input(i)) continue;
    inputs.push_back(im.input(i));
    auto v = im.symbolic(i);
    if (!v || im.info(i).shape.size() != 1) symbolic = false;
    else all.insert(all.end(), v->begin(), v->end());
  }
  if (symbolic && !set_sym(im, im.output(0), all, false)) return;
  im.emit("Concat", std::move(inputs), {im.output(0)}, {{"axis", axis}});
}

void slice(I& im) {
  std::optional<std::vector<int64_t>> starts, ends, axes, steps;
  if (im.opset() < 10) {
    starts = im.attr_ints("starts", {});
    ends = im.attr_ints("ends", {});
    if (im.has_attr("axes")) axes = im.attr_ints("axes", {});
  } else {
    starts = ints_of(im.require_constant(1, "starts"));
    if (im.has_input(3)) axes = ints_of(im.require_constant(3, "axes"));
    if (im.has_input(4)) steps = ints_of(im.require_constant(4, "steps"));
    if (!im.constant(2) && im.info(0).shape.size() != 1 && im.symbolic(2)) {
      // Ends known only at run time (x[:, :seq], seq another input's length): the Slice reads them
      // then; the attribute holds placeholders of the right count.
      Attributes attrs{{"starts", *starts}, {"ends", std::vector<int64_t>(starts->size(), 0)}};
      if (axes) attrs["axes"] = *axes;
      if (steps) attrs["steps"] = *steps;
      require_dtype(im, 2, {DType::S64, DType::S32});
      im.emit("Slice", {im.input(0), im.input(2)}, {im.output(0)}, std::move(attrs));
      return;
    }
    ends = ints_of(im.require_constant(2, "ends"));
  }
  Attributes attrs{{"starts", *starts}, {"ends", *ends}};
  if (axes) attrs["axes"] = *axes;
  if (steps) attrs["steps"] = *steps;
  if (auto v = im.symbolic(0); v && !im.constant(0) && im.info(0).shape.size() == 1 && starts->size() == 1 &&
                              (!axes || (*axes)[0] == 0 || (*axes)[0] == -1) && (!steps || (*steps)[0] == 1)) {
    const int64_t n = static_cast<int64_t>(v->size());
    auto clampi = [&](int64_t x) { return std::clamp(x < 0 ? x + n : x, int64_t{0}, n); };
    const int64_t s = clampi((*starts)[0]), e = clampi((*ends)[0]);
    SymVector r(v->begin() + s, v->begin() + std::max(s, e));
    if (!set_sym(im, im.output(0), r, false)) return;
  }
  im.emit("Slice", {im.input(0)}, {im.output(0)}, std::move(attrs));
}

void cast_op(I& im) {
  const int64_t to = im.attr_int("to", 0);
  im.ignore_attr("saturate");
  const DType d = dtype_from_onnx(static_cast<int32_t>(to), "attribute 'to'");
  static const std::map<DType, const char*> names = {{DType::F32, "f32"}, {DType::S32, "s32"}, {DType::S64, "s64"},
                                                     {DType::U8, "u8"},   {DType::S8, "s8"},   {DType::Bool, "bool"},
                                                     {DType::F16, "f16"}, {DType::BF16, "bf16"}};
  if (auto v = im.symbolic(0); v && !im.constant(0) && is_int(d) && im.info(0).shape.size() <= 1)
    if (!set_sym(im, im.output(0), *v, im.info(0).shape.empty())) return;
  im.emit("Cast", {im.input(0)}, {im.output(0)}, {{"to", names.at(d)}});
}

void constant(I& im) {
  const auto& node = im.node();
  if (node.attribute_size() != 1) im.unsupported("needs exactly one value attribute");
  const auto& a = node.attribute(0);
  im.ignore_attr(a.name());
  Tensor t;
  if (a.name() == "value") {
    t = tensor_from_proto(a.t(), "Constant", "");
  } else if (a.name() == "value_float") {
    t = Tensor::from_vector({}, std::vector<float>{a.f()});
  } else if (a.name() == "value_floats") {
    t = Tensor::from_vector({a.floats_size()}, std::vector<float>(a.floats().begin(), a.floats().end()));
  } else if (a.name() == "value_int" || a.name() == "value_ints") {
    const bool one = a.name() == "value_int";
    t = Tensor(DType::S64, one ? Shape{} : Shape{a.ints_size()});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = one ? a.i() : a.ints(static_cast<int>(i));
  } else {
    im.unsupported("attribute '" + a.name() + "' is not supported (tensor, float and integer values are)");
  }
  im.set_constant(im.output(0), std::move(t));
}

void constant_of_shape(I& im) {
  auto shape = im.symbolic(0);
  if (!shape || !all_known(*shape)) im.unsupported("the shape must be constant");
  Shape dims;
  for (const auto& d : *shape) dims.push_back(d.value);
  Tensor fill = Tensor::from_vector({1}, std::vector<float>{0.0f});
  if (const auto* a = im.attr("value")) fill = tensor_from_proto(a->t(), "ConstantOfShape value", "");
  if (fill.numel() != 1) im.unsupported("attribute 'value' must hold one value");
  element_count(dims);
  Tensor t(fill.dtype(), dims);
  const size_t size = storage_bytes(fill.dtype(), 1);
  for (int64_t i = 0; i < t.numel(); ++i) std::memcpy(static_cast<char*>(t.raw()) + i * size, fill.raw(), size);
  im.set_constant(im.output(0), std::move(t));
}

void dropout(I& im) {
  require_f32(im, 0);
  float ratio = im.attr_float("ratio", 0.5f);
  im.ignore_attr("seed");
  im.ignore_attr("is_test");
  if (im.has_input(1)) ratio = scalar_of(im, im.require_constant(1, "ratio"), "ratio");
  if (im.has_input(2) && scalar_of(im, im.require_constant(2, "training_mode"), "training_mode") != 0.0f)
    im.unsupported("training_mode = true is not supported (the executor decides the mode)");
  if (!im.has_output(1)) {
    im.emit("Dropout", {im.input(0)}, {im.output(0)}, {{"ratio", static_cast<double>(ratio)}});
    return;
  }
  // lowbit's mask is u8; ONNX's is bool (opset 10 on) or the input's type (before).
  const std::string mask = im.fresh(im.output(1) + "_u8");
  im.emit("Dropout", {im.input(0)}, {im.output(0), mask}, {{"ratio", static_cast<double>(ratio)}});
  im.emit("Cast", {mask}, {im.output(1)}, {{"to", im.opset() >= 10 ? "bool" : "f32"}}, "_mask");
}

// The window of a convolution or pooling over 1 or 2 spatial dimensions, as lowbit's 2-D ops take
// it: a 1-D window [k] over [N, C, L] is the 2-D window [1, k] over [N, C, 1, L]. Pads are
// [top, left, bottom, right], from ONNX's pads or auto_pad (which needs static spatial sizes).
struct Window {
  size_t dims = 2;  // ONNX's spatial dimensions: 1 or 2
  Shape x;          // the input as 4-D
  std::vector<int64_t> kernel, strides, dilations, pads;
};

Window window_of(I& im, const char* what, std::vector<int64_t> kernel_default) {
  Window w;
  const Shape& x = im.info(0).shape;
  if (x.size() != 3 && x.size() != 4)
    im.unsupported(std::string("only 1-D and 2-D ") + what + " (a 3-D or 4-D input) is supported, input is " + to_string(x));
  w.dims = x.size() - 2;
  const size_t n = w.dims;
  w.kernel = im.attr_ints("kernel_shape", std::move(kernel_default));
  w.strides = im.attr_ints("strides", std::vector<int64_t>(n, 1));
  w.dilations = im.attr_ints("dilations", std::vector<int64_t>(n, 1));
  w.pads = im.attr_ints("pads", std::vector<int64_t>(2 * n, 0));
  if (w.kernel.size() != n || w.strides.size() != n || w.dilations.size() != n || w.pads.size() != 2 * n)
    im.unsupported("kernel_shape, strides and dilations need " + std::to_string(n) + " values and pads " + std::to_string(2 * n));
  // (before any arithmetic divides by a stride or sizes a window)
  for (size_t d = 0; d < n; ++d)
    if (w.kernel[d] < 1 || w.strides[d] < 1 || w.dilations[d] < 1)
      im.unsupported("kernel_shape, strides and dilations must be at least 1, got kernel_shape " + to_string(Shape(w.kernel)) +
                     ", strides " + to_string(Shape(w.strides)) + ", dilations " + to_string(Shape(w.dilations)));
  for (int64_t p : w.pads)
    if (p < 0) im.unsupported("pads must not be negative, got " + to_string(Shape(w.pads)));
  const std::string auto_pad = im.attr_string("auto_pad", "NOTSET");
  if (auto_pad == "VALID") {
    std::fill(w.pads.begin(), w.pads.end(), 0);
  } else if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t d = 0; d < n; ++d) {
      const int64_t in = x[2 + d];
      if (in < 0) im.unsupported("auto_pad " + auto_pad + " needs static spatial dimensions");
      const int64_t out = (in + w.strides[d] - 1) / w.strides[d];
      const int64_t total = std::max<int64_t>((out - 1) * w.strides[d] + (w.kernel[d] - 1) * w.dilations[d] + 1 - in, 0);
      const int64_t small = total / 2, large = total - small;
      w.pads[d] = auto_pad == "SAME_UPPER" ? small : large;
      w.pads[d + n] = auto_pad == "SAME_UPPER" ? large : small;
    }
  } else if (auto_pad != "NOTSET") {
    im.unsupported("auto_pad '" + auto_pad + "' is not supported");
  }
  w.x = x;
  if (n == 1) {
    w.x.insert(w.x.begin() + 2, 1);
    w.kernel.insert(w.kernel.begin(), 1);
    w.strides.insert(w.strides.begin(), 1);
    w.dilations.insert(w.dilations.begin(), 1);
    w.pads = {0, w.pads[0], 0, w.pads[1]};
  }
  return w;
}

// Runs `emit_2d(input4d, output4d)` on the 4-D form of a 1-D window op: Unsqueeze before, Squeeze after.
template <typename Emit>
void on_4d(I& im, const Window& w, Emit emit_2d) {
  if (w.dims == 2) {
    emit_2d(im.input(0), im.output(0));
    return;
  }
  const std::string x4 = im.fresh(im.output(0) + "_x4d"), y4 = im.fresh(im.output(0) + "_4d");
  im.emit("Unsqueeze", {im.input(0)}, {x4}, {{"axes", {2}}}, "_unsqueeze");
  emit_2d(x4, y4);
  im.emit("Squeeze", {y4}, {im.output(0)}, {{"axes", {2}}}, "_squeeze");
}

void conv(I& im) {
  require_f32(im, 0);
  require_f32(im, 1);
  const Shape& ws = im.info(1).shape;
  if (ws.size() != im.info(0).shape.size() || ws.size() < 3) im.unsupported("weights must have the input's rank");
  const Window w = window_of(im, "convolution", std::vector<int64_t>(ws.begin() + 2, ws.end()));
  std::string weights = im.input(1);
  if (w.dims == 1) {  // [M, C/g, k] -> [M, C/g, 1, k]
    weights = im.fresh(im.input(1) + "_4d");
    im.emit("Unsqueeze", {im.input(1)}, {weights}, {{"axes", {2}}}, "_weights");
  }
  on_4d(im, w, [&](const std::string& x, const std::string& y) {
    std::vector<std::string> inputs = {x, weights};
    if (im.has_input(2)) inputs.push_back(im.input(2));
    im.emit("Conv2D", std::move(inputs), {y},
            {{"kernel_shape", w.kernel}, {"strides", w.strides}, {"dilations", w.dilations}, {"pads", w.pads}, {"group", im.attr_int("group", 1)}});
  });
}

std::string shifted_codes(I& im, const std::string& value);

void pool(I& im, const char* op) {
  // The maximum of codes: their grid stays (uint8 as lowbit's shifted int8: it commutes with the shift).
  if (std::string(op) == "MaxPool2D") require_dtype(im, 0, {DType::F32, DType::S8, DType::U8});
  else require_f32(im, 0);
  if (im.has_output(1)) im.unsupported("the Indices output is not supported");
  Window w = window_of(im, "pooling", {});
  if (std::any_of(w.dilations.begin(), w.dilations.end(), [](int64_t d) { return d != 1; }))
    im.unsupported("dilations other than 1 are not supported");
  if (im.attr_int("storage_order", 0) != 0) im.unsupported("storage_order 1 is not supported");
  const bool avg = std::string(op) == "AveragePool2D";
  const int64_t include_pad = avg ? im.attr_int("count_include_pad", 0) : 0;
  if (im.attr_int("ceil_mode", 0)) {
    // Ceil mode: more bottom/right padding gives the extra windows (ignored by max, and by an average
    // that excludes padding); a window must still start inside the input or the leading padding.
    for (int d = 0; d < 2; ++d) {
      const int64_t in = w.x[2 + d];
      if (in < 0) im.unsupported("ceil_mode needs static spatial dimensions");
      const int64_t span = in + w.pads[d] + w.pads[d + 2] - w.kernel[d];
      int64_t out = (span + w.strides[d] - 1) / w.strides[d] + 1;
      if ((out - 1) * w.strides[d] >= in + w.pads[d]) --out;
      const int64_t extra = (out - 1) * w.strides[d] + w.kernel[d] - (in + w.pads[d] + w.pads[d + 2]);
      if (extra > 0) {
        if (include_pad) im.unsupported("ceil_mode with count_include_pad = 1 is not supported");
        w.pads[d + 2] += extra;
      }
    }
  }
  Attributes attrs{{"kernel_shape", w.kernel}, {"strides", w.strides}, {"pads", w.pads}};
  if (avg) attrs["count_include_pad"] = include_pad;
  if (im.info(0).dtype == DType::U8) {
    if (w.dims != 2) im.unsupported("uint8 max pooling is supported in 2-D");
    im.emit(op, {shifted_codes(im, im.input(0))}, {im.output(0)}, attrs);
    im.mark_shifted(im.output(0));
    return;
  }
  on_4d(im, w, [&](const std::string& x, const std::string& y) { im.emit(op, {x}, {y}, attrs); });
}

void require_4d(const I& im, const char* what) {
  if (im.info(0).shape.size() != 4)
    im.unsupported(std::string("only 2-D ") + what + " (a 4-D input [N, C, H, W]) is supported, input is " + to_string(im.info(0).shape));
}

void batchnorm(I& im) {
  require_f32(im, 0);
  const size_t rank = im.info(0).shape.size();
  if (rank != 2 && rank != 4) im.unsupported("only [N, C] and [N, C, H, W] inputs are supported, input is " + to_string(im.info(0).shape));
  if (im.attr_int("training_mode", 0)) im.unsupported("training_mode = 1 is not supported (the executor decides the mode)");
  if (im.attr_int("spatial", 1) != 1) im.unsupported("spatial = 0 is not supported");
  im.ignore_attr("is_test");
  for (int i = 1; i < im.outputs(); ++i)
    if (im.has_output(i)) im.unsupported("the training outputs (running mean and variance) are not supported");
  std::vector<std::string> inputs;
  for (int i = 0; i < 5; ++i) inputs.push_back(im.input(i));
  im.emit("BatchNormalization", std::move(inputs), {im.output(0)},
          {{"epsilon", static_cast<double>(im.attr_float("epsilon", 1e-5f))}, {"momentum", static_cast<double>(im.attr_float("momentum", 0.9f))}});
}

// ReduceSum / ReduceMean / ReduceMax / ReduceMin: axes as an attribute (older opsets) or a
// constant input (ReduceSum from opset 13, the others from 18), keepdims, noop_with_empty_axes.
void reduce(I& im, const char* op) {
  require_f32(im, 0);
  Attributes attrs = {{"keepdims", im.attr_int("keepdims", 1)}, {"noop_with_empty_axes", im.attr_int("noop_with_empty_axes", 0)}};
  if (auto axes = ints_from(im, "axes", 1, "axes")) attrs["axes"] = *axes;
  im.emit(op, {im.input(0)}, {im.output(0)}, std::move(attrs));
}

// Expand: the target shape constant or followed from Shape(); a dimension known only at run time
// must be x's own (same symbol, aligned from the end), which Expand keeps by a 1 in `shape`.
void expand(I& im) {
  auto target = im.symbolic(1);
  if (!target) im.unsupported("the target shape must be a constant or computed from Shape()");
  const ValueInfo& x = im.info(0);
  std::vector<int64_t> dims;
  for (size_t i = 0; i < target->size(); ++i) {
    const SymDim& d = (*target)[i];
    if (d.known()) {
      dims.push_back(d.value);
      continue;
    }
    const int64_t xi = static_cast<int64_t>(i) - static_cast<int64_t>(target->size()) + static_cast<int64_t>(x.shape.size());
    if (xi < 0 || x.shape[static_cast<size_t>(xi)] >= 0 || static_cast<size_t>(xi) >= x.symbols.size() ||
        x.symbols[static_cast<size_t>(xi)] != d.symbol)
      im.unsupported("dimension " + std::to_string(i) + " of the target shape is known only at run time and is not the input's own");
    dims.push_back(1);
  }
  im.emit("Expand", {im.input(0)}, {im.output(0)}, {{"shape", dims}});
}

// LayerNormalization (opset 17): the same op; statistics in f32 or better (stash_type 1).
void layer_norm(I& im) {
  require_f32(im, 0);
  if (im.attr_int("stash_type", 1) != 1) im.unsupported("stash_type other than 1 (float) is not supported");
  std::vector<std::string> inputs = {im.input(0), im.input(1)};
  if (im.has_input(2)) inputs.push_back(im.input(2));
  std::vector<std::string> outputs = {im.output(0)};
  const int last = im.has_output(2) ? 2 : im.has_output(1) ? 1 : 0;
  for (int i = 1; i <= last; ++i) outputs.push_back(im.has_output(i) ? im.output(i) : im.fresh(im.output(0) + "_stat"));
  im.emit("LayerNormalization", std::move(inputs), std::move(outputs),
          {{"axis", im.attr_int("axis", -1)}, {"epsilon", static_cast<double>(im.attr_float("epsilon", 1e-5f))}});
}

// ---- quantization ------------------------------------------------------------------------------

// DequantizeLinear of a constant (weights, int32 biases) is computed here: any integer type, per
// tensor or per axis. Of a run-time value: lowbit's DequantizeLinear (u8 or s8).
void dequantize_linear(I& im) {
  const int64_t axis = im.attr_int("axis", 1);
  const int64_t block = im.attr_int("block_size", 0);
  const Tensor& scale = im.require_constant(1, "the scale");
  if (im.has_input(2)) im.require_constant(2, "the zero point");
  if (const Tensor* x = im.constant(0); x && block == 0) {
    const Tensor q = cast(*x, DType::S64);
    const Tensor z = im.has_input(2) ? cast(*im.constant(2), DType::S64) : Tensor();
    const int64_t rank = x->rank();
    int64_t inner = 1, channels = 1;
    if (scale.numel() > 1) {
      const int64_t a = normalize_axis(im, axis, rank, "axis");
      channels = x->shape()[a];
      if (scale.numel() != channels) im.unsupported("scale has " + std::to_string(scale.numel()) + " values for " + std::to_string(channels) + " channels");
      for (int64_t d = a + 1; d < rank; ++d) inner *= x->shape()[d];
    }
    const Tensor sf = cast(scale, DType::F32);
    Tensor y(DType::F32, x->shape());
    for (int64_t i = 0; i < x->numel(); ++i) {
      const int64_t c = channels > 1 ? (i / inner) % channels : 0;
      const int64_t zp = z.defined() ? z.data<int64_t>()[z.numel() > 1 ? c : 0] : 0;
      y.data<float>()[i] = static_cast<float>(q.data<int64_t>()[i] - zp) * sf.data<float>()[c];
    }
    im.set_constant(im.output(0), std::move(y));
    if (x->dtype() == DType::S8 || x->dtype() == DType::S32)  // weights and biases: keep their codes for the QDQ fusion
      im.origins[im.output(0)] = {x->clone(), scale.clone(), im.has_input(2) ? im.constant(2)->clone() : Tensor(),
                                  scale.numel() > 1 ? normalize_axis(im, axis, x->rank(), "axis") : -1};
    return;
  }
  require_dtype(im, 0, {DType::S8, DType::U8});
  std::vector<std::string> inputs = {im.input(0), im.input(1)};
  if (im.shifted(im.input(0))) {
    bool moved = false;
    inputs.push_back(im.s8_zero_point(2, moved, im.output(0) + "_zero_point"));
  } else if (im.has_input(2)) {
    inputs.push_back(im.input(2));
  }
  Attributes attrs{{"axis", axis}};
  if (block) attrs["block_size"] = block;
  im.emit("DequantizeLinear", std::move(inputs), {im.output(0)}, std::move(attrs));
}

// QuantizeLinear to int8, or to uint8 held as int8 (codes and zero point minus 128: the same real
// values; the output is marked shifted).
void quantize_linear(I& im) {
  require_f32(im, 0);
  im.ignore_attr("saturate");
  im.require_constant(1, "the scale");
  bool moved = false;
  const std::string zero_point = im.s8_zero_point(2, moved, im.output(0) + "_zero_point");
  const int64_t block = im.attr_int("block_size", 0);
  Attributes attrs{{"axis", im.attr_int("axis", 1)}};
  if (block) attrs["block_size"] = block;
  im.emit("QuantizeLinear", {im.input(0), im.input(1), zero_point}, {im.output(0)}, std::move(attrs));
  if (moved) im.mark_shifted(im.output(0));
}

// ---- ONNX's integer operators, onto lowbit's integer layers --------------------------------------

// The int8 weights of an integer operator as lowbit's rows [units, k] with one scale and zero point
// per row: from a constant of `shape` whose rows are the output channels (`rows_first`) or its
// columns ([k, units], as MatMul's B).
struct IntegerWeights {
  std::string codes, scale, zero_point;
  int64_t units = 0, k = 0;
};
IntegerWeights integer_weights(I& im, int codes_input, int scale_input, int zero_input, bool rows_first, const std::string& name) {
  const Tensor& w = im.require_constant(codes_input, "the weights");
  if (w.dtype() != DType::S8) im.unsupported("weights of type " + std::string(name_of(w.dtype())) + " (int8 weights are supported)");
  if (w.rank() < 2) im.unsupported("weights must have at least 2 dimensions");
  const Tensor scale = cast(im.require_constant(scale_input, "the weight scale"), DType::F32);
  const Tensor* zp = im.has_input(zero_input) ? &im.require_constant(zero_input, "the weight zero point") : nullptr;
  IntegerWeights r;
  r.units = rows_first ? w.shape()[0] : w.shape()[1];
  r.k = w.numel() / r.units;
  if (scale.numel() != 1 && scale.numel() != r.units) im.unsupported("the weight scale must be per tensor or per output channel");
  if (zp && zp->dtype() != DType::S8) im.unsupported("the weight zero point must be int8");
  Tensor codes(DType::S8, {r.units, r.k}), s(DType::F32, {r.units}), z(DType::S32, {r.units});
  const int8_t* src = w.data<int8_t>();
  for (int64_t u = 0; u < r.units; ++u) {
    for (int64_t j = 0; j < r.k; ++j) {
      const int8_t c = rows_first ? src[u * r.k + j] : src[j * r.units + u];
      if (c == -128) im.unsupported("weight code -128 (lowbit's integer kernels take [-127, 127])");
      codes.data<int8_t>()[u * r.k + j] = c;
    }
    s.data<float>()[u] = scale.data<float>()[scale.numel() == 1 ? 0 : u];
    z.data<int32_t>()[u] = zp ? zp->data<int8_t>()[zp->numel() == 1 ? 0 : u] : 0;
  }
  r.codes = im.constant_value(std::move(codes), name + ".weight_codes");
  r.scale = im.constant_value(std::move(s), name + ".weight_scale");
  r.zero_point = im.constant_value(std::move(z), name + ".weight_zero_point");
  return r;
}

std::string int32_bias(I& im, int input, int64_t units, const std::string& name) {
  Tensor b = cast(im.require_constant(input, "the bias"), DType::S32);
  if (b.numel() != units) im.unsupported("the bias must have one value per output channel");
  b.reshape({units});
  return im.constant_value(std::move(b), name + ".bias_q");
}

// uint8 codes of a graph input as lowbit's int8 (minus 128): Requantize with both scales 1.
std::string shifted_codes(I& im, const std::string& value) {
  const std::string out = im.fresh(value + "_s8");
  Tensor zero_u8(DType::U8, {}), zero_s8(DType::S8, {});
  zero_s8.data<int8_t>()[0] = -128;
  const std::string one = im.constant_value(Tensor::from_vector({}, std::vector<float>{1.0f}), value + "_unit_scale");
  im.emit("Requantize", {value, one, one, im.constant_value(zero_s8, value + "_s8_zero_point"), im.constant_value(zero_u8, value + "_u8_zero_point")},
          {out}, {}, "_to_s8");
  im.mark_shifted(out);
  return out;
}

// [x, x_scale, x_zero_point] of an integer operator: x int8 or uint8 (held shifted), per tensor.
std::vector<std::string> integer_input(I& im, int x, int scale, int zero, const std::string& name) {
  require_dtype(im, x, {DType::S8, DType::U8});
  std::string codes = im.input(x);
  if (im.info(x).dtype == DType::U8) codes = shifted_codes(im, codes);
  if (im.require_constant(scale, "the input scale").numel() != 1) im.unsupported("the input scale must be per tensor");
  bool moved = false;
  const std::string z = im.s8_zero_point(zero, moved, name + ".x_zero_point");
  if (moved != im.shifted(codes)) im.unsupported("the input's zero point type does not match its codes");
  return {codes, im.input(scale), z};
}

// y_scale, y_zero_point of an integer operator with int8 (or shifted uint8) output.
void integer_output(I& im, int scale, int zero, std::vector<std::string>& inputs, bool& moved, const std::string& name) {
  if (im.require_constant(scale, "the output scale").numel() != 1) im.unsupported("the output scale must be per tensor");
  inputs.push_back(im.input(scale));
  inputs.push_back(im.s8_zero_point(zero, moved, name + ".y_zero_point"));
}

// Whether lowbit's integer layers take input `i` as weights: constant int8 codes without -128
// (their kernels' range is [-127, 127]).
bool integer_layer_weights(I& im, int i) {
  const Tensor* w = im.constant(i);
  if (!w || w->dtype() != DType::S8) return false;
  const int8_t* c = w->data<int8_t>();
  return std::none_of(c, c + w->numel(), [](int8_t v) { return v == -128; });
}

// The codes of input `x` and the zero point of input `zero` in one representation: lowbit's
// shifted int8 for a uint8 value it holds that way, else the codes' own dtype (absent: 0).
std::pair<std::string, std::string> codes_and_zero(I& im, int x, int zero, const std::string& hint) {
  require_dtype(im, x, {DType::S8, DType::U8});
  const std::string codes = im.input(x);
  if (im.shifted(codes)) {
    bool moved = false;
    std::string z = im.s8_zero_point(zero, moved, hint);
    if (!moved) im.unsupported("the zero point's type does not match its uint8 codes");
    return {codes, z};
  }
  if (!im.has_input(zero)) return {codes, im.constant_value(Tensor(im.info(x).dtype, {}), hint)};
  if (im.info(zero).dtype != im.info(x).dtype) im.unsupported("a zero point's type differs from its codes'");
  return {codes, im.input(zero)};
}

// x_scale * w_scale / y_scale in f32 (ONNX's order): one value, or one per output channel laid
// along axis `axis` of a rank-`rank` result.
std::string rescale(I& im, int x_scale, int w_scale, int y_scale, int64_t axis, size_t rank, const std::string& hint) {
  const Tensor sx = cast(im.require_constant(x_scale, "the input scale"), DType::F32);
  const Tensor sw = cast(im.require_constant(w_scale, "the weight scale"), DType::F32);
  const Tensor sy = cast(im.require_constant(y_scale, "the output scale"), DType::F32);
  if (sx.numel() != 1 || sy.numel() != 1) im.unsupported("the input and output scales must be per tensor");
  Shape shape(rank - static_cast<size_t>(axis), 1);
  shape[0] = sw.numel();
  Tensor m(DType::F32, sw.numel() == 1 ? Shape{} : shape);
  for (int64_t i = 0; i < sw.numel(); ++i) m.data<float>()[i] = sx.data<float>()[0] * sw.data<float>()[i] / sy.data<float>()[0];
  return im.constant_value(std::move(m), hint);
}

// QLinearMatMul / QLinearConv whose weights the integer layers cannot take (uint8, the code -128,
// or not constant): ONNX's definition on the generic ops, the int32 sums of MatMulInteger /
// ConvInteger (+ the int32 bias) times x_scale * w_scale / y_scale, then QuantizeLinear (scale 1)
// onto y's zero point (exact while the sums stay below 2^24, f32's integers).
void qlinear_generic(I& im, bool conv) {
  const std::string name = im.node().name().empty() ? im.output(0) : im.node().name();
  auto [x, zx] = codes_and_zero(im, 0, 2, name + ".x_zero_point");
  auto [w, zw] = codes_and_zero(im, 3, 5, name + ".w_zero_point");
  const size_t rank = conv ? 4 : std::max<size_t>(im.info(0).shape.size(), im.info(3).shape.size());
  const std::string acc = im.fresh(name + "_int32"), sums = im.fresh(name + "_sums"), scaled = im.fresh(name + "_scaled");
  if (conv) {
    const Shape& w4 = im.info(3).shape;
    if (im.info(0).shape.size() != 4 || w4.size() != 4) im.unsupported("only 2-D convolution (4-D input and weights) is supported");
    const Window win = window_of(im, "convolution", {w4[2], w4[3]});
    im.emit("ConvInteger", {x, w, zx, zw}, {acc},
            {{"kernel_shape", win.kernel}, {"strides", win.strides}, {"dilations", win.dilations}, {"pads", win.pads},
             {"group", im.attr_int("group", 1)}},
            "_integer");
  } else {
    if (im.info(0).shape.size() < 2 || im.info(3).shape.size() < 2) im.unsupported("both inputs must have at least 2 dimensions");
    im.emit("MatMulInteger", {x, w, zx, zw}, {acc}, {}, "_integer");
  }
  im.emit("Cast", {acc}, {sums}, {{"to", "f32"}}, "_cast");
  std::string total = sums;
  if (conv && im.has_input(8)) {  // the int32 bias, added before the rescale
    Tensor b = cast(im.require_constant(8, "the bias"), DType::F32);
    b.reshape({b.numel(), 1, 1});
    total = im.fresh(name + "_biased");
    im.emit("Add", {sums, im.constant_value(std::move(b), name + ".bias")}, {total}, {}, "_bias");
  }
  im.emit("Mul", {total, rescale(im, 1, 4, 6, conv ? 1 : static_cast<int64_t>(rank) - 1, rank, name + ".rescale")}, {scaled}, {},
          "_rescale");
  bool moved = false;
  const std::string zy = im.s8_zero_point(7, moved, name + ".y_zero_point");
  const Shape& zy_shape = im.info_of(zy).shape;
  if (std::any_of(zy_shape.begin(), zy_shape.end(), [](int64_t d) { return d != 1; }))
    im.unsupported("the output zero point must be per tensor");
  Tensor unit(DType::F32, zy_shape);
  unit.data<float>()[0] = 1.0f;
  im.emit("QuantizeLinear", {scaled, im.constant_value(std::move(unit), name + ".unit_scale"), zy}, {im.output(0)}, {}, "_quantize");
  if (moved) im.mark_shifted(im.output(0));
}

void qlinear_conv(I& im) {
  if (!integer_layer_weights(im, 3)) return qlinear_generic(im, true);
  if (im.info(0).shape.size() != 4) im.unsupported("only 2-D convolution (a 4-D input) is supported");
  const std::string name = im.node().name().empty() ? im.output(0) : im.node().name();
  const Shape& w4 = im.info(3).shape;
  if (w4.size() != 4) im.unsupported("weights must be 4-D");
  const int64_t group = im.attr_int("group", 1);
  auto x = integer_input(im, 0, 1, 2, name);
  const IntegerWeights w = integer_weights(im, 3, 4, 5, true, name);
  std::vector<std::string> inputs = {x[0], w.codes, w.scale, w.zero_point, x[1], x[2]};
  bool moved = false;
  integer_output(im, 6, 7, inputs, moved, name);
  if (im.has_input(8)) inputs.push_back(int32_bias(im, 8, w.units, name));
  const Window win = window_of(im, "convolution", {w4[2], w4[3]});  // Conv's window: pads, auto_pad
  im.emit("QConv2D", std::move(inputs), {im.output(0)},
          {{"in_channels", w4[1] * group}, {"kernel_shape", win.kernel}, {"strides", win.strides}, {"pads", win.pads},
           {"dilations", win.dilations}, {"group", group}, {"activation", "none"}});
  if (moved) im.mark_shifted(im.output(0));
}

// QLinearMatMul (ONNX) and QGemm (com.microsoft, as ONNX Runtime's quantizer writes Gemm):
// [a, a_scale, a_zp, b, b_scale, b_zp, (C int32,) (y_scale, y_zp)] onto QDense.
void qlinear_matmul(I& im, bool gemm) {
  if (!gemm && !integer_layer_weights(im, 3)) return qlinear_generic(im, false);
  const std::string name = im.node().name().empty() ? im.output(0) : im.node().name();
  if (gemm) {
    if (im.attr_int("transA", 0)) im.unsupported("transA = 1 is not supported");
    if (im.attr_float("alpha", 1.0f) != 1.0f) im.unsupported("alpha other than 1 is not supported");
  }
  if (im.info(0).shape.size() < 2) im.unsupported("the input must have at least 2 dimensions");
  auto x = integer_input(im, 0, 1, 2, name);
  const bool trans_b = gemm && im.attr_int("transB", 0) != 0;
  const IntegerWeights w = integer_weights(im, 3, 4, 5, trans_b, name);
  std::vector<std::string> inputs = {x[0], w.codes, w.scale, w.zero_point, x[1], x[2]};
  bool moved = false;
  const int y_scale = gemm ? 7 : 6, y_zero = gemm ? 8 : 7;
  const bool s8_output = im.has_input(y_scale);
  if (s8_output) integer_output(im, y_scale, y_zero, inputs, moved, name);
  if (gemm && im.has_input(6)) inputs.push_back(int32_bias(im, 6, w.units, name));
  im.emit("QDense", std::move(inputs), {im.output(0)}, {{"in_features", w.k}, {"activation", "none"}});
  if (moved) im.mark_shifted(im.output(0));
}

// DynamicQuantizeLinear: f32 -> uint8 codes, scale, zero point (all three outputs always named).
void dynamic_quantize_linear(I& im) {
  require_f32(im, 0);
  std::vector<std::string> outputs;
  for (int i = 0; i < 3; ++i) outputs.push_back(im.has_output(i) ? im.output(i) : im.fresh(im.output(0) + "_unused" + std::to_string(i)));
  im.emit("DynamicQuantizeLinear", {im.input(0)}, std::move(outputs));
}

// MatMulInteger / ConvInteger operands: a, b, and both zero points (a zero of the codes' type
// where absent; uint8 values lowbit holds shifted keep their shifted zero points).
std::vector<std::string> integer_operands(I& im) {
  const auto [a, za] = codes_and_zero(im, 0, 2, im.output(0) + "_a_zero_point");
  const auto [b, zb] = codes_and_zero(im, 1, 3, im.output(0) + "_b_zero_point");
  return {a, b, za, zb};
}

void conv_integer(I& im) {
  const Shape& ws = im.info(1).shape;
  if (ws.size() != im.info(0).shape.size() || ws.size() < 3) im.unsupported("weights must have the input's rank");
  const Window w = window_of(im, "convolution", std::vector<int64_t>(ws.begin() + 2, ws.end()));
  std::vector<std::string> in = integer_operands(im);
  if (w.dims == 1) {  // [M, C/g, k] -> [M, C/g, 1, k]
    const std::string weights = im.fresh(im.input(1) + "_4d");
    im.emit("Unsqueeze", {in[1]}, {weights}, {{"axes", {2}}}, "_weights");
    in[1] = weights;
  }
  on_4d(im, w, [&](const std::string& x, const std::string& y) {
    in[0] = x;
    im.emit("ConvInteger", in, {y},
            {{"kernel_shape", w.kernel}, {"strides", w.strides}, {"dilations", w.dilations}, {"pads", w.pads}, {"group", im.attr_int("group", 1)}});
  });
}

}  // namespace

const std::map<std::string, Converter>& converters() {
  static const std::map<std::string, Converter> table = {
      {"Relu", [](I& im) { unary(im, "Relu"); }},
      {"Sigmoid", [](I& im) { unary(im, "Sigmoid"); }},
      {"Tanh", [](I& im) { unary(im, "Tanh"); }},
      {"Sqrt", [](I& im) { unary(im, "Sqrt"); }},
      {"Reciprocal", [](I& im) { unary(im, "Reciprocal"); }},
      {"Neg",
       [](I& im) {
         // An int64 constant (shape arithmetic, e.g. -rank in LayerNorm's expanded form) is folded here.
         const Tensor* c = im.constant(0);
         if (c && (c->dtype() == DType::S64 || c->dtype() == DType::S32)) {
           Tensor t = cast(*c, DType::S64);
           for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = -t.data<int64_t>()[i];
           im.set_constant(im.output(0), cast(t, c->dtype()));
           return;
         }
         unary(im, "Neg");
       }},
      {"Erf", [](I& im) { unary(im, "Erf"); }},
      {"Exp", [](I& im) { unary(im, "Exp"); }},
      {"Log", [](I& im) { unary(im, "Log"); }},
      {"Abs", [](I& im) { unary(im, "Abs"); }},
      {"LeakyRelu", [](I& im) { unary(im, "LeakyRelu", {{"alpha", static_cast<double>(im.attr_float("alpha", 0.01f))}}); }},
      {"Clip", clip},
      {"Softmax", [](I& im) { softmax_like(im, "Softmax"); }},
      {"LogSoftmax", [](I& im) { softmax_like(im, "LogSoftmax"); }},
      {"Add", [](I& im) { binary(im, "Add"); }},
      {"Sub", [](I& im) { binary(im, "Sub"); }},
      {"Mul", [](I& im) { binary(im, "Mul"); }},
      {"Div", [](I& im) { binary(im, "Div"); }},
      {"Pow",
       [](I& im) {
         // f32 base; the exponent f32, or a constant of another type (x^2 as exporters write it) taken as f32.
         require_f32(im, 0);
         const Tensor* e = im.constant(1);
         if (im.info(1).dtype != DType::F32 && e) {
           im.emit("Pow", {im.input(0), im.constant_value(cast(*e, DType::F32), im.output(0) + "_exponent")}, {im.output(0)});
           return;
         }
         binary(im, "Pow");
       }},
      {"MatMul", matmul},
      {"Gemm", gemm},
      {"Flatten", [](I& im) { im.emit("Flatten", {im.input(0)}, {im.output(0)}, {{"axis", im.attr_int("axis", 1)}}); }},
      {"Reshape", reshape},
      {"Transpose",
       [](I& im) {
         Attributes attrs;
         if (im.has_attr("perm")) attrs["perm"] = im.attr_ints("perm", {});
         im.emit("Transpose", {im.input(0)}, {im.output(0)}, std::move(attrs));
       }},
      {"Squeeze", squeeze},
      {"Unsqueeze", unsqueeze},
      {"Concat", concat},
      {"Identity", [](I& im) { im.alias(im.output(0), im.input(0)); }},
      {"Dropout", dropout},
      {"Cast", cast_op},
      {"Constant", constant},
      {"ConstantOfShape", constant_of_shape},
      {"Shape", shape},
      {"Size", size},
      {"Expand", expand},
      {"Equal", [](I& im) { im.emit("Equal", {im.input(0), im.input(1)}, {im.output(0)}); }},
      {"Where", [](I& im) { im.emit("Where", {im.input(0), im.input(1), im.input(2)}, {im.output(0)}); }},
      {"Gather", gather},
      {"Slice", slice},
      {"Conv", conv},
      {"MaxPool", [](I& im) { pool(im, "MaxPool2D"); }},
      {"AveragePool", [](I& im) { pool(im, "AveragePool2D"); }},
      {"GlobalAveragePool",
       [](I& im) {
         require_4d(im, "pooling");
         require_f32(im, 0);
         im.emit("GlobalAveragePool", {im.input(0)}, {im.output(0)});
       }},
      {"BatchNormalization", batchnorm},
      {"LayerNormalization", layer_norm},
      {"ReduceSum", [](I& im) { reduce(im, "ReduceSum"); }},
      {"ReduceMean", [](I& im) { reduce(im, "ReduceMean"); }},
      {"ReduceMax", [](I& im) { reduce(im, "ReduceMax"); }},
      {"ReduceMin", [](I& im) { reduce(im, "ReduceMin"); }},
      {"DequantizeLinear", dequantize_linear},
      {"QuantizeLinear", quantize_linear},
      {"QLinearConv", qlinear_conv},
      {"QLinearMatMul", [](I& im) { qlinear_matmul(im, false); }},
      {"DynamicQuantizeLinear", dynamic_quantize_linear},
      {"MatMulInteger", [](I& im) { im.emit("MatMulInteger", integer_operands(im), {im.output(0)}); }},
      {"ConvInteger", conv_integer},
  };
  return table;
}

const std::map<std::string, Converter>& microsoft_converters() {
  static const std::map<std::string, Converter> table = {
      {"QGemm", [](I& im) { qlinear_matmul(im, true); }},
  };
  return table;
}

}  // namespace lowbit::onnx_io
