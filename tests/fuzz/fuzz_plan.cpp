// libFuzzer target: the quantization plan file (QuantPlan::from_json, what load_plan parses) on
// arbitrary text, then the plan's rule for a layer. Any input must give a plan or a lowbit::Error.
// Seeds: plan files written by run_fuzzers.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "lowbit/error.h"
#include "lowbit/quantize.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const lowbit::QuantPlan plan = lowbit::QuantPlan::from_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz.plan.json");
    plan.rule_for("dense_1");
    plan.to_json();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
