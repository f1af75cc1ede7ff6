// lowbit integer GEMM (qgemm_s8) against lowbit's own fp32 gemm_f32 and oneDNN's u8s8s32 matmul,
// same shapes, same run, 1 and 2 threads.
//
// Benchmark names: <variant>/<M>x<N>x<K>/threads:<t>, the GOPS counter is 2*M*N*K per second / 1e9.
//   lowbit_s8    qgemm_s8: s8 activations x s8 weights (prepared by QWeights::pack), requantized
//                to s8 output (per-column multipliers, zero points, column offsets).
//   lowbit_s4    the same with packed 4-bit weights (kept packed, unpacked in registers).
//   lowbit_f32NN gemm_f32, B stored [K, N];  lowbit_f32NT  gemm_f32, B stored [N, K] (X W^T).
//   onednn_u8s8  oneDNN matmul u8 x s8 -> s32, weights reordered once to the layout oneDNN
//                prefers (the fair, prepared-weights setting), plain s32 output. Capped at the
//                instruction set lowbit runs (AVX2, or AVX-512 VNNI) unless DNNL_MAX_CPU_ISA is
//                set (see main).
//   peak_vpdpbusd/threads:<t>  on CPUs where lowbit runs AVX-512 VNNI: 12 independent chains of
//                register-only vpdpbusd per thread, the multiply-add ceiling of every int8 kernel
//                here (GOPS counts 2 x 64 per vpdpbusd).
// bench/qgemm_ratios.py runs this binary and tabulates the ratios.
#include <benchmark/benchmark.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

#if defined(LOWBIT_BENCH_ONEDNN)
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

struct Shape {
  int64_t m, n, k;
};

enum class Variant { S8, S4, F32NN, F32NT, OneDnn };

const char* name_of(Variant v) {
  switch (v) {
    case Variant::S8: return "lowbit_s8";
    case Variant::S4: return "lowbit_s4";
    case Variant::F32NN: return "lowbit_f32NN";
    case Variant::F32NT: return "lowbit_f32NT";
    default: return "onednn_u8s8";
  }
}

template <typename T>
std::vector<T> random_codes(size_t count, int lo, int hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(lo, hi);
  std::vector<T> v(count);
  for (auto& x : v) x = static_cast<T>(d(rng));
  return v;
}

// Integer operands and output stage of one lowbit qgemm call.
struct QOperands {
  std::vector<int8_t> a, c;
  lowbit::QWeights w;
  std::vector<int32_t> col_off;
  std::vector<lowbit::FixedPointMultiplier> mult;
  lowbit::QOutputStage out;
  QOperands(const Shape& s, lowbit::DType storage) {
    a = random_codes<int8_t>(static_cast<size_t>(s.m * s.k), -128, 127, 1);
    c.resize(static_cast<size_t>(s.m * s.n));
    const int hi = storage == lowbit::DType::S8 ? 127 : 7;
    const std::vector<int32_t> codes = random_codes<int32_t>(static_cast<size_t>(s.n * s.k), -hi, hi, 2);
    w = lowbit::QWeights::pack(lowbit::pack_codes(codes, {s.n, s.k}, storage), s.n, s.k);
    col_off = random_codes<int32_t>(static_cast<size_t>(s.n), -1000, 1000, 3);
    mult.assign(static_cast<size_t>(s.n), lowbit::FixedPointMultiplier::from(1.0 / (64.0 * static_cast<double>(s.k))));
    out.column_offset = col_off.data();
    out.multiplier = mult.data();
  }
  void call(const Shape& s) { lowbit::qgemm_s8(s.m, a.data(), s.k, w, out, c.data(), s.n); }
};

struct FOperands {
  std::vector<float> a, b, c;
  explicit FOperands(const Shape& s)
      : a(static_cast<size_t>(s.m * s.k)), b(static_cast<size_t>(s.k * s.n)), c(static_cast<size_t>(s.m * s.n)) {
    std::mt19937 rng(4);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (auto& x : a) x = d(rng);
    for (auto& x : b) x = d(rng);
  }
  void call(const Shape& s, bool nt) {
    lowbit::gemm_f32(lowbit::Transpose::No, nt ? lowbit::Transpose::Yes : lowbit::Transpose::No, s.m, s.n, s.k, 1.0f,
                     a.data(), s.k, b.data(), nt ? s.k : s.n, 0.0f, c.data(), s.n);
  }
};

#if defined(LOWBIT_BENCH_ONEDNN)
struct DnnlOperands {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::memory a, w, c;
  dnnl::matmul prim;
  explicit DnnlOperands(const Shape& s) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::dims ad{s.m, s.k}, wd{s.k, s.n}, cd{s.m, s.n};
    const dnnl::memory::desc a_md(ad, dt::u8, tag::ab), c_md(cd, dt::s32, tag::ab);
    const dnnl::memory::desc w_any(wd, dt::s8, tag::any), w_user(wd, dt::s8, tag::ba);  // user: [N, K]
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, w_any, c_md), eng);
    prim = dnnl::matmul(pd);
    a = dnnl::memory(a_md, eng);
    c = dnnl::memory(c_md, eng);
    w = dnnl::memory(pd.weights_desc(), eng);
    dnnl::memory wu(w_user, eng);
    const auto av = random_codes<uint8_t>(static_cast<size_t>(s.m * s.k), 0, 255, 1);
    const auto wv = random_codes<int8_t>(static_cast<size_t>(s.n * s.k), -127, 127, 2);
    std::copy(av.begin(), av.end(), static_cast<uint8_t*>(a.get_data_handle()));
    std::copy(wv.begin(), wv.end(), static_cast<int8_t*>(wu.get_data_handle()));
    dnnl::reorder(wu, w).execute(strm, wu, w);  // once, like QWeights::pack
    strm.wait();
  }
  void call() {
    prim.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, c}});
    strm.wait();
  }
};
#endif

#if defined(__x86_64__)
// 12 independent vpdpbusd chains, register operands only: `iters` x 12 instructions.
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) int32_t vpdpbusd_chains(int64_t iters) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0, c8 = c0, c9 = c0,
          c10 = c0, c11 = c0;
  const __m512i b0 = _mm512_set1_epi8(1), b1 = _mm512_set1_epi8(2), x = _mm512_set1_epi8(3);
  for (int64_t i = 0; i < iters; ++i)
    asm volatile(
        "vpdpbusd %[x], %[b0], %[c0]\n\tvpdpbusd %[x], %[b1], %[c1]\n\tvpdpbusd %[x], %[b0], %[c2]\n\t"
        "vpdpbusd %[x], %[b1], %[c3]\n\tvpdpbusd %[x], %[b0], %[c4]\n\tvpdpbusd %[x], %[b1], %[c5]\n\t"
        "vpdpbusd %[x], %[b0], %[c6]\n\tvpdpbusd %[x], %[b1], %[c7]\n\tvpdpbusd %[x], %[b0], %[c8]\n\t"
        "vpdpbusd %[x], %[b1], %[c9]\n\tvpdpbusd %[x], %[b0], %[c10]\n\tvpdpbusd %[x], %[b1], %[c11]\n\t"
        : [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [c3] "+v"(c3), [c4] "+v"(c4), [c5] "+v"(c5), [c6] "+v"(c6),
          [c7] "+v"(c7), [c8] "+v"(c8), [c9] "+v"(c9), [c10] "+v"(c10), [c11] "+v"(c11)
        : [x] "v"(x), [b0] "v"(b0), [b1] "v"(b1));
  const __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                     _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
  return _mm512_reduce_add_epi32(
      _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11))));
}

void peak(benchmark::State& state, int threads) {
  constexpr int64_t kIters = 1 << 20;
  for (auto _ : state) {
    int32_t sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink)
    sink += vpdpbusd_chains(kIters);
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GOPS"] = benchmark::Counter(2e-9 * 64 * 12 * static_cast<double>(kIters * threads),
                                              benchmark::Counter::kIsIterationInvariantRate);
}
#endif

// Idle OpenMP workers of the previous benchmark keep spinning for a while; let them sleep.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(100)); }

void run(benchmark::State& state, Variant v, Shape s, int threads) {
  lowbit::set_num_threads(threads);
  omp_set_num_threads(threads);
  settle();
  std::function<void()> call;
  std::unique_ptr<QOperands> q;
  std::unique_ptr<FOperands> f;
#if defined(LOWBIT_BENCH_ONEDNN)
  std::unique_ptr<DnnlOperands> d;
#endif
  switch (v) {
    case Variant::S8:
    case Variant::S4:
      q = std::make_unique<QOperands>(s, v == Variant::S8 ? lowbit::DType::S8 : lowbit::DType::S4);
      call = [&] { q->call(s); };
      break;
    case Variant::F32NN:
    case Variant::F32NT:
      f = std::make_unique<FOperands>(s);
      call = [&, nt = v == Variant::F32NT] { f->call(s, nt); };
      break;
    case Variant::OneDnn:
#if defined(LOWBIT_BENCH_ONEDNN)
      d = std::make_unique<DnnlOperands>(s);
      call = [&] { d->call(); };
      break;
#else
      state.SkipWithError("built without oneDNN");
      return;
#endif
  }
  for (int i = 0; i < 3; ++i) call();  // warm-up: buffers, thread pools, weights into cache
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  state.counters["GOPS"] =
      benchmark::Counter(2e-9 * static_cast<double>(s.m * s.n * s.k), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  struct Entry {
    Shape s;
    std::vector<Variant> variants;
  };
  const std::vector<Variant> all = {Variant::S8, Variant::F32NN, Variant::F32NT, Variant::OneDnn};
  const std::vector<Variant> gemv = {Variant::S4, Variant::S8, Variant::F32NN, Variant::F32NT, Variant::OneDnn};
  const Entry entries[] = {
      {{1024, 1024, 1024}, all},
      // The reference MLP's int8 layers (784-64-32-10, W is [out, in]), batch 256 and batch 1.
      {{256, 64, 784}, all}, {{256, 32, 64}, all}, {{256, 10, 32}, all},
      {{1, 64, 784}, all},   {{1, 32, 64}, all},   {{1, 10, 32}, all},
      // Batch-1 GEMV, K = N = 4096: 4-bit weights (8 MiB) vs s8 (16 MiB) vs fp32 (64 MiB).
      {{1, 4096, 4096}, gemv},
  };
  for (int threads : {1, 2})
    for (const Entry& e : entries)
      for (Variant v : e.variants) {
        const std::string name = std::string(name_of(v)) + "/" + std::to_string(e.s.m) + "x" + std::to_string(e.s.n) +
                                 "x" + std::to_string(e.s.k) + "/threads:" + std::to_string(threads);
        benchmark::RegisterBenchmark(name.c_str(), [v, s = e.s, threads](benchmark::State& st) {
          run(st, v, s, threads);
        })->UseRealTime();
      }
  const bool vnni = lowbit::active_isa() >= lowbit::Isa::Avx512Vnni;
#if defined(__x86_64__)
  if (vnni)
    for (int threads : {1, 2})
      benchmark::RegisterBenchmark(("peak_vpdpbusd/threads:" + std::to_string(threads)).c_str(), [threads](benchmark::State& st) {
        peak(st, threads);
      })->UseRealTime();
#endif
#if defined(LOWBIT_BENCH_ONEDNN)
  // Like for like by default: oneDNN capped at the instruction set lowbit's kernels run here
  // (AVX2, or AVX-512 with VNNI). DNNL_MAX_CPU_ISA=ALL (or any oneDNN value) overrides the cap.
  const char* isa_env = std::getenv("DNNL_MAX_CPU_ISA");
  if (!isa_env) dnnl::set_max_cpu_isa(vnni ? dnnl::cpu_isa::avx512_core_vnni : dnnl::cpu_isa::avx2);
  benchmark::AddCustomContext("onednn_max_isa", isa_env ? isa_env
                                                        : vnni ? "avx512_core_vnni (set DNNL_MAX_CPU_ISA to change)"
                                                               : "avx2 (set DNNL_MAX_CPU_ISA to change)");
#endif
  // lowbit's integer kernels follow lowbit::active_isa(): LOWBIT_ISA=avx2 measures the AVX2 path
  // on a machine that also has AVX-512 VNNI.
  benchmark::AddCustomContext("lowbit_isa", lowbit::name_of(lowbit::active_isa()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
