// Internal: batch normalization of float [N, C] or NCHW data, forward (inference and training) and
// backward (the BatchNormalization op's compute; the op, its attributes and shapes are in
// graph/ops/norm.cpp). Every form computes y = x * a[c] + b[c] per channel, with
//   a = scale / sqrt(var + epsilon), b = B - mean * a
// (two roundings: -ffp-contract=off keeps them apart), where mean and var are
//   - inference: the running statistics;
//   - training: the batch's, mean then biased variance (squared deviations from the float mean,
//     divided by m = N*H*W); the running statistics are then updated as PyTorch does:
//       running_mean = momentum * running_mean + (1 - momentum) * batch_mean
//       running_var  = momentum * running_var  + (1 - momentum) * batch_var * m / (m - 1)
//     (the unbiased variance; the biased one when m = 1). ONNX's momentum: 0.9 is PyTorch's 0.1.
// The backward pass differentiates the training forward, the batch statistics recomputed from x
// exactly as the forward pass computed them; with xhat = (x - mean) / sqrt(var + epsilon):
//   dB = sum(dy),  dscale = sum(dy * xhat),  dx = scale / sqrt(var + epsilon) * (dy - dB / m - xhat * dscale / m).
// Determinism: every reduction of a channel runs in one thread in a fixed order, in double over
// eight float lanes per run (kernels/sum_run.h), so results are bit-identical for any thread count.
//
//   kernels::NormGeometry g{.batch = n, .channels = c, .spatial = h * w};
//   kernels::batchnorm_inference_f32(g, x, scale, bias, running_mean, running_var, 1e-5f, y);
#pragma once

#include <cstdint>

namespace lowbit::kernels {

// x viewed as [batch, channels, spatial]: spatial = H*W for NCHW input, 1 for [N, C].
struct NormGeometry {
  int64_t batch = 0, channels = 0, spatial = 1;
  int64_t per_channel() const { return batch * spatial; }  // values behind one channel's statistics
  int64_t plane(int64_t n, int64_t c) const { return (n * channels + c) * spatial; }
};

// scale, bias, running_mean, running_var: [channels]. y like x (may not alias it).
void batchnorm_inference_f32(const NormGeometry& g, const float* x, const float* scale, const float* bias,
                             const float* running_mean, const float* running_var, float epsilon, float* y);
// Normalizes with the batch statistics and updates running_mean / running_var in place. An empty
// batch (m = 0) has no statistics: nothing is written.
void batchnorm_training_f32(const NormGeometry& g, const float* x, const float* scale, const float* bias,
                            float* running_mean, float* running_var, float epsilon, float momentum, float* y);
// Gradients of the training forward from dy: dx like x, dscale and dbias [channels]; each may be
// null (not computed), each is overwritten (dscale and dbias with zeros for an empty batch).
void batchnorm_backward_f32(const NormGeometry& g, const float* x, const float* scale, const float* dy, float epsilon,
                            float* dx, float* dscale, float* dbias);

}  // namespace lowbit::kernels
