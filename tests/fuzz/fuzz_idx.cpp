// libFuzzer target: the IDX reader (plain and gzip, detected from the content) on arbitrary bytes,
// through a scratch file as a dataset's files are read. Any input must give a tensor or a
// lowbit::Error; a claimed size beyond the data must be refused before it is allocated.
// Seeds: small IDX files, plain and gzipped (tests/fuzz/run_fuzzers.sh).
#include <cstddef>
#include <cstdint>

#include "fuzz_support.h"
#include "lowbit/error.h"
#include "lowbit/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = lowbit::fuzz::scratch_path(".idx");
  if (!lowbit::fuzz::write_scratch(path, data, size)) return 0;
  try {
    lowbit::read_idx(path);
  } catch (const lowbit::Error&) {
  }
  return 0;
}
