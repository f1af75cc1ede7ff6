// GPTQ weight rounding (Frantar et al. 2022) and the layer Hessians it reads
// (include/lowbit/quantize.h). docs/design.md, "GPTQ", derives the update.
#include <algorithm>
#include <cmath>
#include <exception>
#include <numeric>

#include "graph/ops/conv_geometry.h"
#include "kernels/gemm.h"
#include "lowbit/executor.h"
#include "lowbit/quantize.h"
#include "lowbit/train.h"

namespace lowbit {
namespace {

// sum_k a[k] b[k] over n terms, in four running sums added in a fixed order (deterministic on
// every machine; four independent chains instead of one dependent one).
double dot(const double* a, const double* b, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    s0 += a[k] * b[k];
    s1 += a[k + 1] * b[k + 1];
    s2 += a[k + 2] * b[k + 2];
    s3 += a[k + 3] * b[k + 3];
  }
  for (; k < n; ++k) s0 += a[k] * b[k];
  return (s0 + s1) + (s2 + s3);
}

// In place: the lower Cholesky factor L of a symmetric positive definite n x n matrix (row-major;
// the upper triangle is zeroed). Row by row, every sum a dot product of two contiguous rows.
// False when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double* row_i = a.data() + i * n;
    for (int64_t j = 0; j <= i; ++j) {
      const double* row_j = a.data() + j * n;
      const double s = row_i[j] - dot(row_i, row_j, j);
      if (j < i) {
        row_i[j] = s / row_j[j];
      } else {
        if (!(s > 0)) return false;
        row_i[i] = std::sqrt(s);
      }
    }
    for (int64_t k = i + 1; k < n; ++k) row_i[k] = 0;
  }
  return true;
}

// The upper triangular U with H^-1 = U^T U, from H (symmetric positive definite). With P the
// reversal permutation and M the lower Cholesky factor of P H P: H^-1 = (P M^-1 P)^T (P M^-1 P),
// and P M^-1 P is upper triangular with a positive diagonal, so it is U (unique). One Cholesky
// factorization and one triangular inverse (n^3 / 2 multiply-adds); no inverse of H is formed.
// False when H is not positive definite.
bool inverse_cholesky_upper(const std::vector<double>& h, int64_t n, std::vector<double>& u) {
  std::vector<double> m(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
  if (!cholesky_lower(m, n)) return false;
  // M^-1 column by column: forward substitution M x = e_c, x[i] = 0 for i < c.
  u.assign(static_cast<size_t>(n * n), 0.0);
  std::vector<double> x(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    x[c] = 1.0 / m[c * n + c];
    for (int64_t i = c + 1; i < n; ++i) x[i] = -dot(m.data() + i * n + c, x.data() + c, i - c) / m[i * n + i];
    // U[a][b] = M^-1[n-1-a][n-1-b]: column c of M^-1 is column n-1-c of U, reversed.
    for (int64_t i = c; i < n; ++i) u[(n - 1 - i) * n + (n - 1 - c)] = x[i];
  }
  return true;
}

}  // namespace

std::vector<int32_t> gptq_codes(const Tensor& weight, const Tensor& hessian, QuantParams& params, const GptqOptions& options) {
  if (weight.dtype() != DType::F32 || weight.rank() < 2)
    throw Error(ErrorKind::InvalidArgument, "gptq: weights must be f32 [units, features...]");
  const int64_t units = weight.dim(0), features = weight.numel() / std::max<int64_t>(units, 1);
  if (hessian.dtype() != DType::F32 || hessian.shape() != Shape{features, features})
    throw Error(ErrorKind::InvalidArgument, "gptq: the Hessian must be f32 [" + std::to_string(features) + ", " +
                                                std::to_string(features) + "], got " + to_string(hessian.shape()));
  const int64_t block = params.block_size, blocks = block > 0 ? (features + block - 1) / block : 1;
  if (params.per_channel() ? static_cast<int64_t>(params.channels()) != units * blocks : params.channels() != 1)
    throw Error(ErrorKind::InvalidArgument, "gptq: the weight parameters must be per tensor, per output channel or per block");
  if (!(options.damp >= 0)) throw Error(ErrorKind::InvalidArgument, "gptq: damp must be >= 0");
  // H + damp * mean(diag H) * I, and a unit diagonal for inputs never seen (zero rows and columns).
  std::vector<double> h(hessian.data<float>(), hessian.data<float>() + hessian.numel());
  double mean_diagonal = 0;
  for (int64_t i = 0; i < features; ++i) mean_diagonal += h[i * features + i];
  mean_diagonal /= static_cast<double>(features);
  const double damp = options.damp * (mean_diagonal > 0 ? mean_diagonal : 1.0);
  for (int64_t i = 0; i < features; ++i) {
    double& d = h[i * features + i];
    d = (d > 0 ? d : 1.0) + damp;
  }
  if (options.batch < 0) throw Error(ErrorKind::InvalidArgument, "gptq: the batch of columns must be >= 0");
  // Processing order: the columns as they are, or (activation order) by decreasing Hessian
  // diagonal, ties by position. H is permuted the same way; position i holds column order[i].
  std::vector<int64_t> order(static_cast<size_t>(features));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (options.act_order) {
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return h[a * features + a] > h[b * features + b]; });
    std::vector<double> permuted(h.size());
    for (int64_t i = 0; i < features; ++i)
      for (int64_t j = 0; j < features; ++j) permuted[i * features + j] = h[order[i] * features + order[j]];
    h.swap(permuted);
  }
  std::vector<int64_t> position(static_cast<size_t>(features));  // column -> position
  for (int64_t i = 0; i < features; ++i) position[order[i]] = i;
  std::vector<double> u;
  if (!inverse_cholesky_upper(h, features, u))
    throw Error(ErrorKind::InvalidArgument, "gptq: the Hessian is not positive semi-definite (is it a sum of x x^T?)");
  // The position at which each block of columns is first reached (its grid is fitted then).
  std::vector<int64_t> first_of_block(static_cast<size_t>(block > 0 ? blocks : 0), features);
  for (int64_t c = 0; c < features && block > 0; ++c)
    first_of_block[c / block] = std::min(first_of_block[c / block], position[c]);
  const int64_t batch = options.batch > 0 ? std::min(options.batch, features) : features;

  // Position by position: round, then spread the rounding error (scaled by the inverse Hessian's
  // Cholesky row) over the positions not rounded yet. Rows (output units) are independent, so
  // they are split over threads without changing a bit. Lazy batches: within a batch of
  // positions [i0, i1) the updates reach only the batch's own positions; the later positions
  // receive the batch's updates when it ends, a tile of columns at a time for all the thread's
  // rows (the inverse Hessian's rows stay in cache), each column still updated by position
  // i0, i0 + 1, ... in turn: the same operations in the same order as updating everything at
  // once, so the codes are the plain algorithm's bit for bit.
  std::vector<int32_t> codes(static_cast<size_t>(units * features));
  std::vector<std::exception_ptr> failures(static_cast<size_t>(units));
  parallel_for(units, std::max<int64_t>(1, (int64_t{1} << 22) / std::max<int64_t>(1, features * features)), [&](int64_t n0, int64_t n1) {
    const int64_t rows = n1 - n0;
    std::vector<double> w(static_cast<size_t>(rows * features)), errors(static_cast<size_t>(rows * batch));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < features; ++i) w[r * features + i] = weight.data<float>()[(n0 + r) * features + order[i]];
    std::vector<bool> failed(static_cast<size_t>(rows), false);
    for (int64_t i0 = 0; i0 < features; i0 += batch) {
      const int64_t i1 = std::min(i0 + batch, features);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t column = order[i];
        const double* u_row = u.data() + i * features;
        for (int64_t r = 0; r < rows; ++r) {
          if (failed[r]) continue;
          double* wr = w.data() + r * features;
          const int64_t n = n0 + r;
          size_t channel = params.per_channel() ? static_cast<size_t>(n) : 0;
          if (block > 0) {
            const int64_t b = column / block;
            channel = static_cast<size_t>(n * blocks + b);
            if (first_of_block[b] == i) {
              // The block's grid, fitted to its weights as updated so far: positions in this
              // batch or before it are current; later ones still owe this batch's updates.
              double lo = 0, hi = 0;
              for (int64_t c = b * block; c < std::min((b + 1) * block, features); ++c) {
                const int64_t at = position[c];
                double v = wr[at];
                if (at >= i1)
                  for (int64_t t = i0; t < i; ++t) v -= errors[r * batch + (t - i0)] * u[t * features + at];
                lo = std::min(lo, v), hi = std::max(hi, v);
              }
              try {
                fit_block(params, channel, static_cast<float>(lo), static_cast<float>(hi));
              } catch (...) {
                failures[static_cast<size_t>(n)] = std::current_exception();
                failed[r] = true;
                continue;
              }
            }
          }
          const int32_t q = params.quantize(static_cast<float>(wr[i]), channel);
          codes[static_cast<size_t>(n * features + column)] = q;
          const double error = (wr[i] - static_cast<double>(params.dequantize(q, channel))) / u_row[i];
          errors[r * batch + (i - i0)] = error;
          for (int64_t j = i + 1; j < i1; ++j) wr[j] -= error * u_row[j];
        }
      }
      // The batch's updates to the later positions, a tile of columns at a time.
      constexpr int64_t kTile = 256;
      for (int64_t j0 = i1; j0 < features; j0 += kTile) {
        const int64_t j1 = std::min(j0 + kTile, features);
        for (int64_t r = 0; r < rows; ++r) {
          double* wr = w.data() + r * features;
          for (int64_t t = i0; t < i1; ++t) {
            const double e = errors[r * batch + (t - i0)];
            const double* u_row = u.data() + t * features;
            for (int64_t j = j0; j < j1; ++j) wr[j] -= e * u_row[j];
          }
        }
      }
    }
  });
  for (const auto& failure : failures)
    if (failure) std::rethrow_exception(failure);
  return codes;
}

std::map<std::string, Tensor> layer_hessians(const Graph& model, const Dataset& data, const std::vector<std::string>& layers,
                                             int64_t samples, int batch_size) {
  if (batch_size < 1) throw Error(ErrorKind::InvalidArgument, "layer_hessians: batch size must be at least 1");
  std::map<std::string, std::string> input_of;  // layer -> the value it reads
  std::map<std::string, int64_t> features_of;
  std::map<std::string, const Node*> conv_of;     // Conv2D layers: their rows are input patches
  for (const auto& name : layers) {
    auto it = std::find_if(model.nodes.begin(), model.nodes.end(), [&](const Node& n) { return n.name == name; });
    if (it == model.nodes.end()) throw Error(ErrorKind::InvalidArgument, "layer_hessians: no layer '" + name + "'");
    const Node& node = *it;
    const Tensor& weight = model.initializers.at(node.inputs.at(1));
    if (node.op == "Conv2D") {
      if (node.attr_int("group", 1) != 1)
        throw Error(ErrorKind::InvalidArgument, "layer_hessians: layer '" + name + "' is a grouped convolution (one Hessian per group is not supported)");
      conv_of[name] = &node;
    } else if (node.op != "Dense") {
      throw Error(ErrorKind::InvalidArgument, "layer_hessians: layer '" + name + "' is " + node.op + " (Dense and Conv2D layers only)");
    }
    input_of[name] = node.inputs.at(0);
    features_of[name] = weight.numel() / weight.dim(0);
  }
  std::map<std::string, std::vector<double>> sums;
  for (const auto& [name, k] : features_of) sums[name].assign(static_cast<size_t>(k * k), 0.0);
  Executor run(model);
  const int64_t count = std::min(samples, data.size());
  std::vector<uint32_t> indices;
  std::vector<float> product, patches;
  for (int64_t begin = 0; begin < count; begin += batch_size) {
    const int64_t n = std::min<int64_t>(batch_size, count - begin);
    indices.resize(static_cast<size_t>(n));
    std::iota(indices.begin(), indices.end(), static_cast<uint32_t>(begin));
    feed_batch(data, indices, model, run);
    run.forward();
    for (const auto& [name, value] : input_of) {
      const Tensor& x = run.value(value);
      const int64_t k = features_of[name];
      std::vector<double>& sum = sums[name];
      // R^T R of rows R [rows, k] in f32 (one GEMM), accumulated in double.
      auto accumulate = [&](const float* r, int64_t rows) {
        product.resize(static_cast<size_t>(k * k));
        gemm_f32(Transpose::Yes, Transpose::No, k, k, rows, 1.0f, r, k, r, k, 0.0f, product.data(), k);
        for (size_t i = 0; i < product.size(); ++i) sum[i] += product[i];
      };
      auto conv = conv_of.find(name);
      if (conv == conv_of.end()) {
        accumulate(x.data<float>(), x.numel() / k);
        continue;
      }
      // A convolution's rows are its input patches, one per image and output position, in the
      // weight's [channels, kh, kw] order (zeros where the window reads padding).
      const Tensor& w = model.initializers.at(conv->second->inputs.at(1));
      const kernels::ConvGeometry g = ops::conv_geometry(*conv->second, x.shape(), w.shape());
      const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 20) / k);  // rows per GEMM (4 MiB of patches)
      patches.resize(static_cast<size_t>(chunk * k));
      int64_t filled = 0;
      for (int64_t b = 0; b < g.batch; ++b)
        for (int64_t oy = 0; oy < g.out_h; ++oy)
          for (int64_t ox = 0; ox < g.out_w; ++ox) {
            float* row = patches.data() + filled * k;
            for (int64_t c = 0; c < g.in_channels; ++c)
              for (int64_t ky = 0; ky < g.kernel_h; ++ky)
                for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
                  const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
                  const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
                  const bool inside = iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w;
                  *row++ = inside ? x.data<float>()[((b * g.in_channels + c) * g.in_h + iy) * g.in_w + ix] : 0.0f;
                }
            if (++filled == chunk) accumulate(patches.data(), filled), filled = 0;
          }
      if (filled) accumulate(patches.data(), filled);
    }
  }
  std::map<std::string, Tensor> result;
  for (auto& [name, sum] : sums) {
    const int64_t k = features_of[name];
    Tensor h(DType::F32, {k, k});
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < k; ++j)  // symmetric to the last bit
        h.data<float>()[i * k + j] = static_cast<float>(i <= j ? sum[i * k + j] : sum[j * k + i]);
    result[name] = std::move(h);
  }
  return result;
}

bool plan_uses_gptq(const QuantPlan& plan) {
  if (plan.defaults.quantize && plan.defaults.rounding == "gptq" && plan.mode != QuantMode::Partial) return true;
  for (const auto& [name, rule] : plan.layers)
    if (rule.quantize && rule.rounding == "gptq") return true;
  return false;
}

bool gptq_rounds(const Node& node, const LayerRule& rule) {
  // (grouped convolutions round to nearest; block rules on a convolution are refused by quantize_model)
  const bool conv_to_nearest = node.op == "Conv2D" && (node.attr_int("group", 1) != 1 || rule.group_size > 0);
  return (node.op == "Dense" || node.op == "Conv2D") && !conv_to_nearest && rule.quantize && rule.rounding == "gptq";
}

void gptq_layer(const Graph& prepared, const Node& node, const LayerRule& rule, const Tensor& hessian, FixedQuantParams& fixed) {
  const Tensor& weight = prepared.initializers.at(node.inputs.at(1));
  QuantParams params = rule.group_size > 0
                           ? choose_block_weight_params(weight, rule.weight_bits, rule.weight_scheme, rule.group_size)
                           : choose_weight_params(weight, QuantSpec{rule.weight_bits, rule.weight_scheme, rule.per_channel, true, true});
  GptqOptions options;
  options.act_order = rule.act_order;
  fixed.weight_codes[node.name] = gptq_codes(weight, hessian, params, options);
  fixed.weights[node.name] = std::move(params);
}

FixedQuantParams gptq_weights(const Graph& model, const QuantPlan& plan, const Dataset& data, int64_t samples) {
  // The graph quantize_model quantizes (BatchNorm folded): its Dense weights are the ones rounded.
  const Graph prepared = prepare_for_quantization(model);
  std::vector<std::string> layers;
  for (const auto& node : prepared.nodes)
    if (gptq_rounds(node, plan.rule_for(node.name))) layers.push_back(node.name);
  FixedQuantParams fixed;
  if (layers.empty()) return fixed;
  const std::map<std::string, Tensor> hessians = layer_hessians(prepared, data, layers, samples);
  for (const auto& node : prepared.nodes) {
    auto h = hessians.find(node.name);
    if (h != hessians.end()) gptq_layer(prepared, node, plan.rule_for(node.name), h->second, fixed);
  }
  return fixed;
}

}  // namespace lowbit
