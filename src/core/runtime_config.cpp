#include "lowbit/runtime_config.h"

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "lowbit/error.h"

namespace lowbit {

const char* name_of(Isa isa) noexcept {
  switch (isa) {
    case Isa::Reference: return "reference";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512Vnni: return "avx512vnni";
  }
  return "?";
}

const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = [] {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;  // (clang's __builtin_cpu_supports does not know "f16c")
    f.f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#endif
    return f;
  }();
  return features;
}

namespace {
std::atomic<int> g_max_isa{static_cast<int>(Isa::Avx512Vnni)};

Isa env_cap() noexcept {
  const char* v = std::getenv("LOWBIT_ISA");
  if (v && (std::strcmp(v, "reference") == 0 || std::strcmp(v, "ref") == 0)) return Isa::Reference;
  if (v && std::strcmp(v, "avx2") == 0) return Isa::Avx2;
  return Isa::Avx512Vnni;
}

int initial_threads() noexcept {
  if (const char* v = std::getenv("LOWBIT_NUM_THREADS")) {
    int n = std::atoi(v);
    if (n >= 1) return n;
  }
  return std::max(1, omp_get_num_procs());
}
std::atomic<int> g_threads{0};
thread_local RunSettings t_settings;  // this thread's ScopedRunSettings, defaults when none
}  // namespace

ScopedRunSettings::ScopedRunSettings(const RunSettings& settings) : previous_(t_settings) {
  if (settings.threads < 0)
    throw Error(ErrorKind::InvalidArgument, "thread count must be at least 1 (or 0 for the default), got " +
                                                std::to_string(settings.threads));
  t_settings = settings;
}
ScopedRunSettings::~ScopedRunSettings() { t_settings = previous_; }

Isa active_isa() noexcept {
  static const Isa hardware = [] {
    const CpuFeatures& f = cpu_features();
    if (!(f.avx2 && f.fma && f.f16c)) return Isa::Reference;
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni) return Isa::Avx512Vnni;
    return Isa::Avx2;
  }();
  static const Isa capped_by_env = std::min(hardware, env_cap());
  return std::min({capped_by_env, static_cast<Isa>(g_max_isa.load(std::memory_order_relaxed)), t_settings.max_isa});
}

void set_max_isa(Isa isa) noexcept { g_max_isa.store(static_cast<int>(isa)); }

const char* isa_cap_reason() noexcept {
  const Isa cap = static_cast<Isa>(g_max_isa.load(std::memory_order_relaxed));
  if (t_settings.max_isa < Isa::Avx512Vnni && active_isa() == t_settings.max_isa) return "capped by RunSettings::max_isa";
  if (cap < Isa::Avx512Vnni && active_isa() == cap) return "capped by set_max_isa";
  if (env_cap() < Isa::Avx512Vnni && active_isa() == env_cap()) return "capped by LOWBIT_ISA";
  return "";
}

namespace {
std::atomic<int> g_verbose{-1};  // -1: not read from the environment yet
}  // namespace

bool verbose() noexcept {
  int v = g_verbose.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("LOWBIT_VERBOSE");
    v = e && *e && std::strcmp(e, "0") != 0 ? 1 : 0;
    g_verbose.store(v);
  }
  return v == 1;
}

void set_verbose(bool on) noexcept { g_verbose.store(on ? 1 : 0); }

int num_threads() noexcept {
  if (t_settings.threads > 0) return t_settings.threads;
  int n = g_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = initial_threads();
    g_threads.store(n);
  }
  return n;
}

void set_num_threads(int threads) {
  if (threads < 1) throw Error(ErrorKind::InvalidArgument, "thread count must be at least 1, got " + std::to_string(threads));
  g_threads.store(threads);
}

void parallel_for(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (count <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), (count + grain - 1) / grain);
  if (chunks <= 1) {
    body(0, count);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(chunks)) schedule(static, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = count * c / chunks, end = count * (c + 1) / chunks;
    if (begin < end) body(begin, end);
  }
}

}  // namespace lowbit
