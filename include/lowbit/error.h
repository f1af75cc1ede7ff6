// lowbit/error.h - the one error type of the library.
//
// Every failure that a caller can cause (a bad file, a bad shape, a bad option) is reported by
// throwing lowbit::Error. It carries a category and a message written for a person: it names the
// file, the field and what was expected. Kernels never throw; they are given checked arguments.
//
//   try {
//     lowbit::Graph m = lowbit::load_model("model.lbm");
//   } catch (const lowbit::Error& e) {
//     std::cerr << "lowbit: error: " << e.what() << "\n";   // one clear line
//     return 1;
//   }
//
// LOWBIT_CHECK(cond, message) guards invariants inside the library; it throws Error with category
// Internal and the source location, so a broken invariant is a clean exception, never a crash.
#pragma once

#include <stdexcept>
#include <string>

namespace lowbit {

enum class ErrorKind {
  InvalidArgument,  // a bad option, shape or value given by the caller
  Io,               // a file that cannot be opened, read or written
  Format,           // a file whose contents are not what its format requires
  Unsupported,      // valid, but not handled by this build (e.g. a newer file version)
  Internal,         // a broken invariant: a bug in lowbit
  Interrupted,      // stopped on request (SIGINT/SIGTERM at the CLI) before it finished
};

const char* to_string(ErrorKind kind) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void throw_internal(const char* condition, const char* file, int line, const std::string& message);

}  // namespace lowbit

#define LOWBIT_CHECK(condition, message)                                           \
  do {                                                                             \
    if (!(condition)) ::lowbit::throw_internal(#condition, __FILE__, __LINE__, (message)); \
  } while (0)
