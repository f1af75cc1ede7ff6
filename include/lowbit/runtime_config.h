// lowbit/runtime_config.h - threads and instruction-set dispatch.
//
// lowbit runs its kernels on a fixed number of threads (OpenMP underneath) and picks the fastest
// kernel the CPU supports. Both can be set by the program or from the environment:
//
//   lowbit::set_num_threads(2);                     // or LOWBIT_NUM_THREADS=2
//   lowbit::Isa isa = lowbit::active_isa();         // Avx2 on an AVX2+FMA machine
//   // LOWBIT_ISA=reference forces the scalar reference kernels, LOWBIT_ISA=avx2 caps at AVX2
//   // (tests run every path on one machine this way).
//
// One Executor (or one stretch of code) can use its own settings instead of the process-wide
// ones, e.g. a server running a 1-thread executor per request beside a 4-thread batch job:
//   lowbit::Executor small(model, false, lowbit::RunSettings{.threads = 1});
//   { lowbit::ScopedRunSettings scope({.threads = 1, .max_isa = lowbit::Isa::Reference}); /* ... */ }
//
// Results never depend on the thread count: kernels split work only along output rows and
// columns, never along a reduction, so 1 and 2 threads give bit-identical results.
#pragma once

#include <cstdint>
#include <functional>

namespace lowbit {

// Ordered: each level implies the ones before it.
enum class Isa { Reference, Avx2, Avx512Vnni };
const char* name_of(Isa isa) noexcept;

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;  // fp16 <-> fp32 conversion (the block-weight scales)
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avxvnni = false;
};
const CpuFeatures& cpu_features() noexcept;

// The best ISA this CPU supports, capped by LOWBIT_ISA (reference|avx2|avx512vnni) and by
// set_max_isa(). Avx512Vnni needs AVX-512 F/BW/VL and VNNI (int8 dot products); it is used only
// by the integer kernels, the float kernels stay AVX2/FMA.
Isa active_isa() noexcept;
void set_max_isa(Isa isa) noexcept;  // for tests; Isa::Avx512Vnni removes the cap

// Why the fastest implementation the CPU allows is not the active one, in words: "" when nothing
// caps it, else e.g. "LOWBIT_ISA=avx2" or "set_max_isa(reference)". For the verbose report.
const char* isa_cap_reason() noexcept;

// LOWBIT_VERBOSE=1 (or set_verbose(true)): every Executor prints, once per node when it is
// planned, the implementation chosen and why the faster ones declined (oneDNN's habit), to stderr.
bool verbose() noexcept;
void set_verbose(bool on) noexcept;

int num_threads() noexcept;
void set_num_threads(int threads);  // throws Error(InvalidArgument) for threads < 1

// Settings for one executor or one scope; the defaults mean "as the process" (set_num_threads,
// LOWBIT_NUM_THREADS, set_max_isa, LOWBIT_ISA). `max_isa` can only lower the process's cap.
struct RunSettings {
  int threads = 0;                 // 0: the process's num_threads()
  Isa max_isa = Isa::Avx512Vnni;   // no further cap
};
// While alive, num_threads() and active_isa() called on this thread follow `settings`; scopes
// nest (the inner one wins, the outer one is restored on exit). Throws Error(InvalidArgument)
// for threads < 0. Executors open one around their planning, forward() and backward().
class ScopedRunSettings {
 public:
  explicit ScopedRunSettings(const RunSettings& settings);
  ~ScopedRunSettings();
  ScopedRunSettings(const ScopedRunSettings&) = delete;
  ScopedRunSettings& operator=(const ScopedRunSettings&) = delete;

 private:
  RunSettings previous_;
};

// Calls body(begin, end) on disjoint chunks covering [0, count), in parallel on num_threads().
// Chunks are at least `grain` long; the split depends only on count, grain and num_threads().
void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace lowbit
