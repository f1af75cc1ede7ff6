// Choices of implementation in words (implementation.h), and the lists of the shared GEMMs.
#include "kernels/implementation.h"

namespace lowbit::kernels {

std::string Choice::describe() const {
  std::string s = index < 0 ? "no implementation" : name;
  for (int i = 0; i < declined_count; ++i)
    s += std::string(i == 0 ? " (declined: " : "; ") + declined_name[i] + ": " + declined_reason[i];
  return declined_count ? s + ")" : s;
}

const char* isa_declines(Isa needed) {
  if (active_isa() >= needed) return nullptr;
  const CpuFeatures& f = cpu_features();
  const bool hardware = needed == Isa::Avx2 ? f.avx2 && f.fma : f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
  if (hardware) return *isa_cap_reason() ? isa_cap_reason() : "capped";
  return needed == Isa::Avx2 ? "the CPU lacks AVX2/FMA" : "the CPU lacks AVX-512 VNNI";
}

namespace {
struct GemmProblem {
  DType storage = DType::F32;
  bool vnni_layout = false, avx2_layout = true;
};
const char* avx2_declines(const GemmProblem& p) {
  if (const char* why = isa_declines(Isa::Avx2)) return why;
  return p.avx2_layout ? nullptr : "the weights were not packed for it";
}
const char* vnni_declines(const GemmProblem& p) {
  if (const char* why = isa_declines(Isa::Avx512Vnni)) return why;
  return p.vnni_layout ? nullptr : "the weights were not packed for it";
}
}  // namespace

std::string describe_avx2_or_reference(const char* avx2_name, const char* reference_name) {
  const char* why = isa_declines(Isa::Avx2);
  return why ? std::string(reference_name) + " (declined: " + avx2_name + ": " + why + ")" : std::string(avx2_name);
}

std::string describe_gemm_f32() {
  static constexpr Implementation<GemmProblem> list[] = {{"gemm_f32__avx2_fma", avx2_declines}, {"gemm_f32_ref", nullptr}};
  return choose(list, GemmProblem{}).describe();
}

std::string describe_qgemm(DType weight_storage, bool has_vnni_layout, bool has_avx2_layout) {
  static constexpr Implementation<GemmProblem> list[] = {
      {"qgemm_s8__avx512vnni", vnni_declines}, {"qgemm_s8__avx2", avx2_declines}, {"qgemm_s8_ref", nullptr}};
  const Choice c = choose(list, GemmProblem{weight_storage, has_vnni_layout, has_avx2_layout});
  std::string s = c.describe();
  // Packed low-bit weights: batches 1-4 are memory-bound GEMVs that the AVX2 kernel runs on the
  // packed codes (qgemm_dispatch.cpp).
  if (c.index == 0 && weight_storage != DType::S8) s += ", batches 1-4 on qgemm_s8__avx2 (reads the packed codes)";
  return s;
}

}  // namespace lowbit::kernels
