// libFuzzer target: the JSON model description (and the "784-64-32-10" form) on arbitrary text,
// built for 28x28 images and 10 classes. Any input must give a model or a lowbit::Error; a
// description that would allocate more than the limit (LOWBIT_MAX_MODEL_BYTES, set to 48 MiB
// here) must be refused before allocating. Seeds: examples/models/*.json (tests/fuzz/run_fuzzers.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "lowbit/error.h"
#include "lowbit/model_io.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("LOWBIT_MAX_MODEL_BYTES", "50331648", 1);  // 48 MiB: within run_fuzzers.sh's 64 MiB per allocation
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  // JSON text, or layer sizes: nothing else (parse_arch would take it for a path).
  if (text.empty() || (text[0] != '{' && text.find_first_not_of("0123456789-") != std::string::npos)) return 0;
  try {
    lowbit::build_model(lowbit::parse_arch(text), {28, 28}, 10, 0);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
