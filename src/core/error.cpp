#include "lowbit/error.h"

namespace lowbit {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Io: return "i/o error";
    case ErrorKind::Format: return "format error";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Internal: return "internal error";
    case ErrorKind::Interrupted: return "interrupted";
  }
  return "error";
}

void throw_internal(const char* condition, const char* file, int line, const std::string& message) {
  throw Error(ErrorKind::Internal, message + " (check '" + condition + "' failed at " + file + ":" +
                                       std::to_string(line) + ")");
}

}  // namespace lowbit
