// Internal: ordered lists of implementations (oneDNN's habit). Each operation that has several
// ways to compute keeps a list, fastest first and the reference last; every entry says why it
// declines a problem (or nothing when it takes it), and the first that takes it runs. The reasons
// are static strings, so choosing allocates nothing; describe() turns a choice into the line that
// LOWBIT_VERBOSE=1 prints.
//
//   const Implementation<ConvProblem> list[] = {{"direct", direct_declines}, {"reference", nullptr}};
//   const Choice c = choose(list, problem);   // c.index: which one runs
#pragma once

#include <cstddef>
#include <string>

#include "lowbit/runtime_config.h"
#include "lowbit/tensor.h"

namespace lowbit::kernels {

template <typename Problem>
struct Implementation {
  const char* name;                          // what it computes on which ISA, e.g. "qconv_direct_s8__avx2"
  const char* (*declines)(const Problem&);  // why it cannot take the problem; nullptr = takes everything
};

struct Choice {
  static constexpr int kMaxDeclined = 8;
  int index = -1;
  const char* name = "";
  int declined_count = 0;
  const char* declined_name[kMaxDeclined] = {};
  const char* declined_reason[kMaxDeclined] = {};
  // "name (declined: a: why; b: why)".
  std::string describe() const;
};

template <typename Problem, size_t N>
Choice choose(const Implementation<Problem> (&list)[N], const Problem& problem) {
  Choice c;
  for (size_t i = 0; i < N; ++i) {
    const char* why = list[i].declines ? list[i].declines(problem) : nullptr;
    if (!why) {
      c.index = static_cast<int>(i);
      c.name = list[i].name;
      return c;
    }
    if (c.declined_count < Choice::kMaxDeclined) {
      c.declined_name[c.declined_count] = list[i].name;
      c.declined_reason[c.declined_count++] = why;
    }
  }
  return c;  // index -1: nothing takes it (lists end with a reference that takes everything)
}

// The reason an implementation for ISA level `needed` declines on this machine, or nullptr when
// the active ISA has it: "the CPU lacks AVX-512 VNNI", "capped by LOWBIT_ISA", ...
const char* isa_declines(Isa needed);

// The lines for the shared kernels that ops call: which GEMM runs, and why the faster ones
// declined (for Op::describe).
std::string describe_gemm_f32();
// Element-wise kernels with an AVX2 version and a reference (quantize, dequantize, Adam, ...).
std::string describe_avx2_or_reference(const char* avx2_name, const char* reference_name);
std::string describe_qgemm(DType weight_storage, bool has_vnni_layout, bool has_avx2_layout);

}  // namespace lowbit::kernels
