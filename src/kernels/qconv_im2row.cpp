// Integer convolution through a zero-padded NHWC copy, im2row and the integer GEMM
// (kernels/qconv.h), and the weights in the order its rows take.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>
#include <vector>

#include "kernels/grain.h"
#include "kernels/qconv.h"
#include "lowbit/quant_params.h"

namespace lowbit::kernels {
namespace {

// Images per im2col chunk: the row buffer stays under ~16 MiB.
int64_t images_per_chunk(const ConvGeometry& g) {
  const int64_t per_image = g.patch() * g.out_spatial();
  return std::clamp<int64_t>((int64_t{1} << 24) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(g.batch, 1));
}

// Transposes the 8x8 byte block held as 8 little-endian rows: byte j of row i moves to byte i
// of row j (three rounds of swapping 4x4, 2x2 and 1x1 sub-blocks across the diagonal).
inline void transpose_8x8(uint64_t r[8]) {
  for (int i = 0; i < 4; ++i) {
    const uint64_t t = ((r[i] >> 32) ^ r[i + 4]) & 0x00000000FFFFFFFFull;
    r[i] ^= t << 32;
    r[i + 4] ^= t;
  }
  for (int i : {0, 1, 4, 5}) {
    const uint64_t t = ((r[i] >> 16) ^ r[i + 2]) & 0x0000FFFF0000FFFFull;
    r[i] ^= t << 16;
    r[i + 2] ^= t;
  }
  for (int i : {0, 2, 4, 6}) {
    const uint64_t t = ((r[i] >> 8) ^ r[i + 1]) & 0x00FF00FF00FF00FFull;
    r[i] ^= t << 8;
    r[i + 1] ^= t;
  }
}

// The `count` NCHW images of x as NHWC with the padding materialized:
// padded[i][y][x][c] = x[i, c, y - pad_top, x - pad_left], or `zero` outside the image.
// `zero(i)`: the zero point of image i of the chunk.
// Channels in multiples of 8 go image by image: the padding set, then the interior in blocks of
// 8 channels x 8 pixels, each transposed in registers (transpose_8x8; a last, overlapping block
// of pixels writes some bytes twice, the same values); other channel counts row by row.
template <typename Zero> void to_padded_nhwc(const ConvGeometry& g, const int8_t* x, int64_t count, Zero zero_of, int8_t* padded) {
  const int64_t hp = padded_h(g), wp = padded_w(g), ch = g.in_channels;
  const int64_t hw = g.in_spatial();
  if (ch % 8 == 0 && hw >= 8) {
    parallel_for(count, plane_grain(hp * wp * ch), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const unsigned char zero = static_cast<unsigned char>(static_cast<int8_t>(zero_of(i)));
        int8_t* dst = padded + i * hp * wp * ch;
        std::memset(dst, zero, static_cast<size_t>(g.pad_top * wp * ch));
        std::memset(dst + (g.pad_top + g.in_h) * wp * ch, zero, static_cast<size_t>((hp - g.pad_top - g.in_h) * wp * ch));
        for (int64_t y = 0; y < g.in_h; ++y) {
          int8_t* r = dst + (y + g.pad_top) * wp * ch;
          std::memset(r, zero, static_cast<size_t>(g.pad_left * ch));
          std::memset(r + (g.pad_left + g.in_w) * ch, zero, static_cast<size_t>(g.pad_right * ch));
        }
        const int8_t* image = x + i * ch * hw;
        for (int64_t p0 = 0; p0 < hw; p0 += 8) {
          const int64_t p = std::min(p0, hw - 8);
          int8_t* at[8];
          for (int64_t j = 0, y = p / g.in_w, xx = p % g.in_w; j < 8; ++j) {
            at[j] = dst + ((y + g.pad_top) * wp + xx + g.pad_left) * ch;
            if (++xx == g.in_w) xx = 0, ++y;
          }
          for (int64_t c = 0; c < ch; c += 8) {
            uint64_t r[8];
            for (int k = 0; k < 8; ++k) std::memcpy(&r[k], image + (c + k) * hw + p, 8);
            transpose_8x8(r);
            for (int j = 0; j < 8; ++j) std::memcpy(at[j] + c, &r[j], 8);
          }
        }
      }
    });
    return;
  }
  parallel_for(count * hp, plane_grain(wp * ch), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / hp, y = r % hp - g.pad_top;
      const int8_t zero = static_cast<int8_t>(zero_of(i));
      int8_t* dst = padded + r * wp * ch;
      if (y < 0 || y >= g.in_h) {
        std::memset(dst, static_cast<unsigned char>(zero), static_cast<size_t>(wp * ch));
        continue;
      }
      std::memset(dst, static_cast<unsigned char>(zero), static_cast<size_t>(g.pad_left * ch));
      std::memset(dst + (g.pad_left + g.in_w) * ch, static_cast<unsigned char>(zero), static_cast<size_t>(g.pad_right * ch));
      const int8_t* src = x + i * ch * g.in_spatial() + y * g.in_w;
      int8_t* d = dst + g.pad_left * ch;
      if (ch == 1) {
        std::memcpy(d, src, static_cast<size_t>(g.in_w));
        continue;
      }
      for (int64_t c = 0; c < ch; ++c) {
        const int8_t* plane = src + c * g.in_spatial();
        for (int64_t ix = 0; ix < g.in_w; ++ix) d[ix * ch + c] = plane[ix];
      }
    }
  });
}

// Copies n bytes with fixed-size (inlined) moves, overlapping at the end rather than looping
// byte by byte: a 3x3 kernel row of one channel is 3 bytes, of 32 channels 96.
template <size_t Bytes> inline void move(int8_t* d, const int8_t* s) { std::memcpy(d, s, Bytes); }
inline void copy_bytes(int8_t* __restrict d, const int8_t* __restrict s, int64_t n) {
  if (n >= 16) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) move<16>(d + j, s + j);
    if (j < n) move<16>(d + n - 16, s + n - 16);
  } else if (n >= 8) {
    move<8>(d, s);
    move<8>(d + n - 8, s + n - 8);
  } else if (n >= 4) {
    move<4>(d, s);
    move<4>(d + n - 4, s + n - 4);
  } else if (n >= 2) {
    move<2>(d, s);
    move<2>(d + n - 2, s + n - 2);
  } else if (n == 1) {
    *d = *s;
  }
}

// rows[(i*OH + oy)*OW + ox][(ki*kw + kj)*cg + c] = padded[i][oy*sh + ki*dh][ox*sw + kj*dw][group*cg + c].
void im2row_nhwc(const ConvGeometry& g, const int8_t* padded, int64_t count, int64_t group, int8_t* rows) {
  const int64_t k = g.patch(), spatial = g.out_spatial(), ch = g.in_channels, cg = g.group_in();
  const int64_t hp = padded_h(g), wp = padded_w(g);
  const bool whole_rows = g.dilation_w == 1 && cg == ch;  // a kernel row is kw * C contiguous bytes
  parallel_for(count * g.out_h, plane_grain(g.out_w * k, 4096), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / g.out_h, oy = r % g.out_h;
      int8_t* d = rows + (i * spatial + oy * g.out_w) * k;
      for (int64_t ox = 0; ox < g.out_w; ++ox)
        for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
          const int8_t* src = padded + ((i * hp + oy * g.stride_h + ki * g.dilation_h) * wp + ox * g.stride_w) * ch + group * cg;
          if (whole_rows) {
            copy_bytes(d, src, g.kernel_w * ch);
            d += g.kernel_w * ch;
          } else {
            for (int64_t kj = 0; kj < g.kernel_w; ++kj, d += cg) copy_bytes(d, src + kj * g.dilation_w * ch, cg);
          }
        }
    }
  });
}

// [count*OH*OW, OC] -> NCHW planes of the `count` images: per image, the [spatial, OC] matrix
// transposed, in 8x8 blocks for bytes (the edges and f32 element by element).
template <typename T> void rows_to_nchw(const ConvGeometry& g, const T* src, int64_t count, T* y) {
  const int64_t spatial = g.out_spatial(), oc = g.out_channels;
  constexpr int64_t kBlock = 8;
  const int64_t blocks = (spatial + kBlock - 1) / kBlock;  // of 8 pixels, per image
  parallel_for(count * blocks, plane_grain(oc * kBlock, 2048), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b / blocks, q0 = b % blocks * kBlock, q1 = std::min(q0 + kBlock, spatial);
      const T* s = src + (i * spatial + q0) * oc;
      T* d = y + i * oc * spatial + q0;
      int64_t m = 0;
      if constexpr (sizeof(T) == 1) {
        if (q1 - q0 == kBlock)
          for (; m + kBlock <= oc; m += kBlock) {
            uint64_t r[8];
            for (int j = 0; j < 8; ++j) std::memcpy(&r[j], s + j * oc + m, 8);
            transpose_8x8(r);
            for (int j = 0; j < 8; ++j) std::memcpy(d + (m + j) * spatial, &r[j], 8);
          }
      }
      for (; m < oc; ++m)
        for (int64_t q = q0; q < q1; ++q) d[m * spatial + q - q0] = s[(q - q0) * oc + m];
    }
  });
}


// The output stage of output channels [c0, ...) (a group's): the layer's, its per-channel arrays
// offset by c0 (row_offset / row_scale are the caller's).
QOutputStage columns_from(const QOutputStage& out, int64_t c0) {
  QOutputStage stage = out;
  stage.column_offset = out.column_offset + c0;
  if (out.weight_zero_point) stage.weight_zero_point = out.weight_zero_point + c0;
  if (out.multiplier) stage.multiplier = out.multiplier + c0;
  if (out.column_scale) stage.column_scale = out.column_scale + c0;
  if (out.bias) stage.bias = out.bias + c0;
  return stage;
}

template <typename Out>
void qconv2d_im2row(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                    const QOutputStage& out, Out* y, Workspace& workspace) {
  constexpr bool f32_output = std::is_same_v<Out, float>;
  const bool dynamic = grid.image_zero_point != nullptr;
  const int64_t chunk = images_per_chunk(g), k = g.patch(), spatial = g.out_spatial(), oc = g.out_channels;
  const int64_t og = g.group_out();
  // Buffers for the largest chunk, reused by every chunk.
  const int64_t most = std::min(chunk, g.batch), most_rows = most * spatial;
  int8_t* padded = workspace.take<int8_t>(static_cast<size_t>(most * padded_h(g) * padded_w(g) * g.in_channels));
  int8_t* rows = workspace.take<int8_t>(static_cast<size_t>(most_rows * k));
  int32_t* row_offset = workspace.take<int32_t>(static_cast<size_t>(most_rows));
  float* row_scale = workspace.take<float>(static_cast<size_t>(most_rows));
  Out* result = workspace.take<Out>(static_cast<size_t>(most_rows * oc));
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, g.batch - n0), m = count * spatial;
    to_padded_nhwc(g, x + n0 * g.in_channels * g.in_spatial(), count, [&](int64_t i) { return grid.zero(n0 + i); }, padded);
    if (dynamic) {  // every row (pixel) of image i: its zero point and scale
      for (int64_t r = 0; r < m; ++r) {
        row_offset[r] = grid.image_zero_point[n0 + r / spatial];
        row_scale[r] = grid.image_scale[n0 + r / spatial];
      }
    }
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t c0 = grp * og;  // the group's first output channel
      im2row_nhwc(g, padded, count, grp, rows);
      QOutputStage stage = columns_from(out, c0);
      if (dynamic) {
        stage.row_offset = row_offset;
        stage.row_scale = row_scale;
      } else if (out.weight_zero_point) {
        row_sums_s8(m, k, rows, k, row_offset);
        stage.row_offset = row_offset;
      }
      if constexpr (f32_output)
        qgemm_s8_f32(m, rows, k, w.group_weights[grp], stage, result + c0, oc);
      else
        qgemm_s8(m, rows, k, w.group_weights[grp], stage, result + c0, oc);
    }
    rows_to_nchw(g, result, count, y + n0 * oc * spatial);
  }
}

}  // namespace

void qconv2d_s8_im2row(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                       const QOutputStage& out, int8_t* y, Workspace& workspace) {
  qconv2d_im2row(g, w, x, grid, out, y, workspace);
}

void qconv2d_s8_f32_im2row(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                           const QOutputStage& out, float* y, Workspace& workspace) {
  qconv2d_im2row(g, w, x, grid, out, y, workspace);
}

std::vector<QWeights> qconv_im2row_weights(const int32_t* codes, int64_t out_channels, int64_t groups, int64_t k,
                                           int64_t taps, DType storage) {
  const int64_t og = out_channels / groups, cg = k / taps;
  std::vector<QWeights> result;
  std::vector<int32_t> permuted(static_cast<size_t>(og * k));
  for (int64_t grp = 0; grp < groups; ++grp) {
    for (int64_t m = 0; m < og; ++m) {
      const int32_t* src = codes + (grp * og + m) * k;
      for (int64_t ch = 0; ch < cg; ++ch)
        for (int64_t t = 0; t < taps; ++t) permuted[static_cast<size_t>(m * k + t * cg + ch)] = src[ch * taps + t];
    }
    result.push_back(QWeights::pack(pack_codes(permuted, {og, k}, storage), og, k));
  }
  return result;
}

}  // namespace lowbit::kernels
