// What the file-reading fuzz targets share: the input written to one scratch file per process, so
// that the loaders under test read it through their own code path (open, gzip detection, errors
// naming the file).
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace lowbit::fuzz {

inline const std::string& scratch_path(const char* suffix) {
  static const std::string path = [suffix] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/lowbit-fuzz-" + std::to_string(::getpid()) + suffix;
  }();
  return path;
}

// Writes the input to the scratch file; false if it cannot (the input is then skipped).
inline bool write_scratch(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

}  // namespace lowbit::fuzz
