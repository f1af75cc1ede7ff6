// .npy / .npz files (io/npy.cpp): every dtype and awkward shapes (scalar, empty, 1-D, 3-D) round
// trip through both formats; the header lowbit writes is numpy's version 1.0 layout; malformed
// files (bad magic, truncated data, a shape larger than the data, Fortran order, big-endian or
// unknown dtypes, random bytes as .npz, duplicate names) give one error naming the file and the
// array, and nothing is written for a bad write. (Files numpy itself wrote, stored and deflated,
// are read in tests/cli/cli_test.sh, which has Python.)
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "lowbit/npy.h"
#include "test_util.h"

namespace lowbit {
namespace {

Tensor filled(DType d, Shape shape) {
  Tensor t(d, std::move(shape));
  uint8_t* p = static_cast<uint8_t*>(t.raw());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<uint8_t>(d == DType::Bool ? i % 2 : i * 37 + 11);
  return t;
}

bool same(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(Npy, EveryDtypeAndShapeRoundTrips) {
  const testing::TempDir tmp;
  const std::string dir = tmp.path();
  std::vector<NamedTensor> all;
  for (DType d : {DType::F32, DType::F16, DType::S64, DType::S32, DType::U8, DType::S8, DType::Bool})
    for (const Shape& s : {Shape{}, Shape{0}, Shape{7}, Shape{2, 3, 17}}) {
      const Tensor t = filled(d, s);
      write_npy(dir + "/a.npy", t);
      EXPECT_TRUE(same(read_npy(dir + "/a.npy"), t)) << name_of(d) << to_string(s);
      const auto arrays = read_arrays(dir + "/a.npy");
      ASSERT_EQ(arrays.size(), 1u);
      EXPECT_EQ(arrays[0].name, "a");
      all.push_back({std::string(name_of(d)) + "_" + std::to_string(all.size()), t});
    }
  write_arrays(dir + "/all.npz", all);
  const auto back = read_arrays(dir + "/all.npz");
  ASSERT_EQ(back.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(back[i].name, all[i].name);
    EXPECT_TRUE(same(back[i].tensor, all[i].tensor)) << all[i].name;
  }
}

TEST(Npy, WritesNumpysVersionOneHeader) {
  const testing::TempDir tmp;
  const std::string path = tmp.file("h.npy");
  write_npy(path, filled(DType::F32, {2, 3}));
  const std::string bytes = testing::read_bytes(path);
  ASSERT_GE(bytes.size(), 64u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
  EXPECT_EQ((10 + len) % 64, 0u);
  EXPECT_EQ(bytes.substr(10, 59), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  EXPECT_EQ(bytes[10 + len - 1], '\n');
  EXPECT_EQ(bytes.size(), 10 + len + 24);
  write_npy(path, filled(DType::U8, {5}));
  EXPECT_NE(testing::read_bytes(path).find("'shape': (5,)"), std::string::npos);
}

std::string npy(const std::string& header_dict, size_t data_bytes) {
  std::string header = header_dict;
  header.append((10 + header.size() + 1 + 63) / 64 * 64 - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + std::string(data_bytes, '\0');
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

TEST(Npy, MalformedFilesGiveOneClearError) {
  const testing::TempDir tmp;
  const std::string path = tmp.file("bad.npy");
  const struct {
    std::string bytes, needle;
  } cases[] = {
      {"not numpy at all", "not an .npy array"},
      {npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 23), "needs 24 bytes of data, the file holds 23"},
      {npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", 8), "needs more bytes than the file holds"},
      {npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8), "Fortran-ordered"},
      {npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", 8), "dtype '>f4' is not supported"},
      {npy("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", 16), "dtype '<c8' is not supported"},
      {npy("{'descr': '<f4', 'fortran_order': False}", 4), "has no 'shape'"},
      {npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", 8), "not a tuple of non-negative integers"},
      {npy("{'descr': '|b1', 'fortran_order': False, 'shape': (1,), }", 0) + "\x02", "other than 0 and 1"},
      {std::string("\x93NUMPY\x01\x00\xff\x00{", 11), "the file is shorter"},
  };
  for (const auto& c : cases) {
    write_bytes(path, c.bytes);
    EXPECT_LOWBIT_ERROR(read_npy(path), c.needle);
    EXPECT_LOWBIT_ERROR(read_npy(path), "bad.npy");
  }
  write_bytes(tmp.file("random.npz"), std::string(300, '\x5a'));
  EXPECT_LOWBIT_ERROR(read_arrays(tmp.file("random.npz")), "random.npz: not an .npz archive");
  EXPECT_LOWBIT_ERROR(read_arrays(tmp.file("missing.npz")), "missing.npz");
  const std::string out = tmp.file("dup.npz");
  EXPECT_LOWBIT_ERROR(write_npz(out, {{"x", filled(DType::U8, {2})}, {"x", filled(DType::U8, {2})}}), "unique");
  EXPECT_LOWBIT_ERROR(write_arrays(tmp.file("two.npy"), {{"x", filled(DType::U8, {2})}, {"y", filled(DType::U8, {2})}}),
                      "holds one array");
  EXPECT_FALSE(std::filesystem::exists(out));
}

}  // namespace
}  // namespace lowbit
