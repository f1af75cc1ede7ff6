// libFuzzer target: the ranges file of `lowbit calibrate` (load_calibration) on arbitrary bytes,
// through a scratch file. Any input must give a Calibration or a lowbit::Error.
// Seeds: ranges files written by run_fuzzers.sh.
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "lowbit/calibration.h"
#include "lowbit/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = lowbit::fuzz::scratch_path(".json");
  if (!lowbit::fuzz::write_scratch(path, data, size)) return 0;
  try {
    lowbit::load_calibration(path);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
