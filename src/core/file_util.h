// Internal helpers for files: atomic writes and whole-file reads.
#pragma once

#include <string>
#include <string_view>

namespace lowbit::files {

// Writes `bytes` to a temporary file beside `path`, flushes it to disk and renames it over `path`,
// so a reader sees either the old file or the complete new one, never a half-written file.
// Throws Error(Io) naming the path.
void write_file_atomically(const std::string& path, std::string_view bytes);

// Reads a whole file. Throws Error(Io) naming the path if it cannot be opened or read.
std::string read_file(const std::string& path);

bool file_exists(const std::string& path);

}  // namespace lowbit::files
