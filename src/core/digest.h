// Internal: FNV-1a, 64 bits, the one digest of the library: platform-independent (unlike
// std::hash), for keys of cached results and for seeds derived from names. Not cryptographic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lowbit {

struct Digest {
  uint64_t value = 0xcbf29ce484222325ULL;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) value = (value ^ p[i]) * 0x100000001b3ULL;
  }
  // A string and a terminating NUL, so that ("ab", "c") and ("a", "bc") differ.
  void add(const std::string& s) {
    add(s.data(), s.size());
    add("\0", 1);
  }
  std::string hex() const {  // 16 lower-case digits
    static const char* digits = "0123456789abcdef";
    std::string s(16, '0');
    for (int i = 0; i < 16; ++i) s[15 - i] = digits[(value >> (4 * i)) & 15];
    return s;
  }
};

}  // namespace lowbit
