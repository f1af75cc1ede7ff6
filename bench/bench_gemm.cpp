// lowbit gemm_f32 against OpenBLAS cblas_sgemm, same shapes, same run, 1 and 2 threads.
//
// Benchmark names: <library>/<M>x<N>x<K>/<ta><tb>/threads:<t>, e.g. lowbit/32x64x784/NT/threads:2
// (row-major; N = not transposed, T = transposed). The GFLOPS counter is 2*M*N*K per second / 1e9.
// bench/gemm_ratios.py runs this binary and tabulates lowbit / OpenBLAS.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <string>
#include <thread>

#include "kernels/gemm.h"
#include "lowbit/runtime_config.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace {

struct Shape {
  int64_t m, n, k;
  bool ta, tb;
};

// Squares, then the reference MLP (784-64-32-10, batch 32; W is [out, in]) and batch-256 inference.
const Shape kShapes[] = {
    {256, 256, 256, false, false}, {512, 512, 512, false, false}, {1024, 1024, 1024, false, false},
    {32, 64, 784, false, true},    {32, 32, 64, false, true},     {32, 10, 32, false, true},  // Y = X W^T
    {64, 784, 32, true, false},    {32, 64, 32, true, false},     {10, 32, 32, true, false},  // dW = dY^T X
    {32, 64, 32, false, false},    {32, 32, 10, false, false},                                // dX = dY W
    {256, 64, 784, false, true},                                                              // inference
};

enum class Library { Lowbit, OpenBlas };

// 64-byte aligned, like lowbit::Tensor storage.
struct AlignedFloats {
  explicit AlignedFloats(size_t count)
      : data(static_cast<float*>(std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64))), size(count) {
    if (!data) throw std::bad_alloc();
  }
  ~AlignedFloats() { std::free(data); }
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  float* data;
  size_t size;
};

struct Operands {
  AlignedFloats a, b, c;
  int64_t lda, ldb, ldc;
  explicit Operands(const Shape& s)
      : a(static_cast<size_t>(s.m * s.k)), b(static_cast<size_t>(s.k * s.n)), c(static_cast<size_t>(s.m * s.n)) {
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (size_t i = 0; i < a.size; ++i) a.data[i] = dist(rng);
    for (size_t i = 0; i < b.size; ++i) b.data[i] = dist(rng);
    for (size_t i = 0; i < c.size; ++i) c.data[i] = 0.0f;
    lda = s.ta ? s.m : s.k;
    ldb = s.tb ? s.k : s.n;
    ldc = s.n;
  }
};

// The thread pools of both libraries keep spinning for a while after a call (OpenBLAS workers
// for up to ~2^28 cycles); give the other library's workers time to go to sleep when switching,
// so that they do not steal a core from the one being measured.
void settle(Library lib) {
  static int last = -1;
  if (last != static_cast<int>(lib)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    last = static_cast<int>(lib);
  }
}

void call(Library lib, const Shape& s, Operands& op) {
  if (lib == Library::Lowbit) {
    lowbit::gemm_f32(s.ta ? lowbit::Transpose::Yes : lowbit::Transpose::No,
                     s.tb ? lowbit::Transpose::Yes : lowbit::Transpose::No, s.m, s.n, s.k, 1.0f, op.a.data, op.lda,
                     op.b.data, op.ldb, 0.0f, op.c.data, op.ldc);
  } else {
    cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans,
                static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, op.a.data,
                static_cast<int>(op.lda), op.b.data, static_cast<int>(op.ldb), 0.0f, op.c.data,
                static_cast<int>(op.ldc));
  }
}

void run_gemm(benchmark::State& state, Library lib, Shape s, int threads) {
  Operands op(s);
  lowbit::set_num_threads(threads);
  openblas_set_num_threads(threads);
  settle(lib);
  // Untimed warm-up: the first call of a library allocates its buffers (OpenBLAS's first call
  // takes longer than a whole measurement of a small shape).
  for (int i = 0; i < 3; ++i) call(lib, s, op);
  for (auto _ : state) {
    call(lib, s, op);
    benchmark::DoNotOptimize(op.c.data);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(2e-9 * static_cast<double>(s.m * s.n * s.k), benchmark::Counter::kIsIterationInvariantRate);
}

std::string name_of(Library lib, const Shape& s, int threads) {
  return std::string(lib == Library::Lowbit ? "lowbit/" : "openblas/") + std::to_string(s.m) + "x" +
         std::to_string(s.n) + "x" + std::to_string(s.k) + "/" + (s.ta ? "T" : "N") + (s.tb ? "T" : "N") +
         "/threads:" + std::to_string(threads);
}

}  // namespace

int main(int argc, char** argv) {
  // The two libraries run back to back on each shape, so that both see the same machine load.
  for (int threads : {1, 2})
    for (const Shape& s : kShapes)
      for (Library lib : {Library::Lowbit, Library::OpenBlas})
        benchmark::RegisterBenchmark(name_of(lib, s, threads).c_str(), [lib, s, threads](benchmark::State& st) {
          run_gemm(st, lib, s, threads);
        })->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
