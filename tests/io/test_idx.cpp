#include <cstring>
#include <zlib.h>

#include "test_util.h"

namespace lowbit {
namespace {

using testing::TempDir;

Tensor images(int count) {
  Tensor t(DType::U8, {count, 3, 2});
  for (int64_t i = 0; i < t.numel(); ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(i * 7);
  return t;
}

Tensor labels(int count) {
  Tensor t(DType::U8, {count});
  for (int i = 0; i < count; ++i) t.data<uint8_t>()[i] = static_cast<uint8_t>(i % 3);
  return t;
}

void write_dataset(const TempDir& dir, bool gzip, int train = 5, int test = 4) {
  std::string ext = gzip ? ".gz" : "";
  write_idx(dir.file("train-images-idx3-ubyte" + ext), images(train), gzip);
  write_idx(dir.file("train-labels-idx1-ubyte" + ext), labels(train), gzip);
  write_idx(dir.file("t10k-images-idx3-ubyte" + ext), images(test), gzip);
  write_idx(dir.file("t10k-labels-idx1-ubyte" + ext), labels(test), gzip);
}

TEST(Idx, RoundTripsPlainAndGzip) {
  TempDir dir;
  for (bool gzip : {false, true}) {
    std::string path = dir.file(gzip ? "a.gz" : "a");
    write_idx(path, images(4), gzip);
    Tensor back = read_idx(path);
    ASSERT_EQ(back.shape(), (Shape{4, 3, 2}));
    EXPECT_EQ(std::memcmp(back.raw(), images(4).raw(), back.nbytes()), 0);
  }
  EXPECT_NE(testing::read_bytes(dir.file("a")), testing::read_bytes(dir.file("a.gz")));
}

TEST(Idx, DatasetDirectoryPlainOrGzip) {
  for (bool gzip : {false, true}) {
    TempDir dir;
    write_dataset(dir, gzip);
    DatasetSplits d = load_dataset_dir(dir.path());
    EXPECT_EQ(d.train.size(), 5);
    EXPECT_EQ(d.test.size(), 4);
    EXPECT_EQ(d.train.sample_shape(), (Shape{3, 2}));
    EXPECT_EQ(d.train.num_classes, 3);
    EXPECT_EQ(d.train.labels[4], 1);
  }
}

TEST(Idx, TruncatedFilesNameTheFile) {
  TempDir dir;
  write_idx(dir.file("full"), images(4), false);
  std::string bytes = testing::read_bytes(dir.file("full"));
  testing::write_bytes(dir.file("short"), bytes.substr(0, bytes.size() - 5));
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("short")), "short': truncated: header declares [4, 3, 2] = 24 bytes of data, found 19");
  testing::write_bytes(dir.file("header"), bytes.substr(0, 6));
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("header")), "truncated: the file ends inside the IDX header");
  testing::write_bytes(dir.file("long"), bytes + "xx");
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("long")), "has data after");
}

TEST(Idx, ClaimedSizesBeyondTheDataAreRefusedBeforeAllocating) {
  // A header claiming 2 x 65536 x 65536 bytes (8 GiB) over a few bytes of data: refused with the
  // claim and what the file holds, plain or gzipped, without allocating the claim (the fuzzer's
  // 2 GiB limit would stop the test: tests/fuzz/regressions/idx).
  TempDir dir;
  const std::string header("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x01\x00\x00\x00\x01\x00\x00", 16);
  testing::write_bytes(dir.file("big"), header + "abcdefgh");
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("big")), "truncated: header declares [2, 65536, 65536] = 8589934592 bytes of data, found 8");
  write_idx(dir.file("small.gz"), images(1), true);
  gzFile f = gzopen(dir.file("big.gz").c_str(), "wb");
  ASSERT_NE(f, nullptr);
  gzwrite(f, (header + "abcdefgh").data(), static_cast<unsigned>(header.size() + 8));
  gzclose(f);
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("big.gz")), "= 8589934592 bytes of data, more than a gzip file of");
  // Within what the gzip file could hold, but short: the claim is read in place and found short.
  gzFile g = gzopen(dir.file("short.gz").c_str(), "wb");
  ASSERT_NE(g, nullptr);
  const std::string claim("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x10\x00\x00\x00\x10", 16);  // 2 x 16 x 16
  gzwrite(g, (claim + "abcdefgh").data(), static_cast<unsigned>(claim.size() + 8));
  gzclose(g);
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("short.gz")), "truncated: header declares [2, 16, 16] = 512 bytes of data, found 8");
  // Beyond 2^34 bytes: implausible, whatever the data (the dimensions' product does not overflow).
  testing::write_bytes(dir.file("huge"), std::string("\x00\x00\x08\x04\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 20));
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("huge")), "implausibly large");
}

TEST(Idx, TruncatedGzipIsAnError) {
  TempDir dir;
  write_idx(dir.file("full.gz"), images(40), true);
  std::string bytes = testing::read_bytes(dir.file("full.gz"));
  testing::write_bytes(dir.file("cut.gz"), bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(read_idx(dir.file("cut.gz")), Error);
}

TEST(Idx, WrongMagicAndTypeAreRejected) {
  TempDir dir;
  testing::write_bytes(dir.file("png"), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("png")), "not an IDX file");
  testing::write_bytes(dir.file("float"), std::string("\0\0\x0d\x01\0\0\0\x01\0\0\0\0", 12));
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("float")), "data type 0x0d is not supported");
}

TEST(Idx, UnreadableFilesAreIoErrors) {
  TempDir dir;
  EXPECT_LOWBIT_ERROR(read_idx(dir.file("missing")), "cannot open");
  EXPECT_LOWBIT_ERROR(read_idx(dir.path()), "is a directory");
  EXPECT_LOWBIT_ERROR(load_dataset_dir(dir.file("nope")), "does not exist");
  EXPECT_LOWBIT_ERROR(load_dataset_dir(dir.path()), "has no train-images-idx3-ubyte");
}

TEST(Idx, CountMismatchBetweenImagesAndLabels) {
  TempDir dir;
  write_dataset(dir, false);
  write_idx(dir.file("train-labels-idx1-ubyte"), labels(6), false);
  EXPECT_LOWBIT_ERROR(load_dataset_dir(dir.path()), "holds 6 labels but");
}

TEST(Idx, WrongRankIsRejected) {
  TempDir dir;
  write_dataset(dir, false);
  write_idx(dir.file("train-images-idx3-ubyte"), labels(5), false);
  EXPECT_LOWBIT_ERROR(load_dataset_dir(dir.path()), "expected images [count, rows, cols]");
}

TEST(Idx, ReadsTheDefaultDatasetWhenInstalled) {
  DatasetSplits d = load_dataset_dir(testing::test_dataset_dir());
  EXPECT_EQ(d.train.images.shape(), (Shape{60000, 28, 28}));
  EXPECT_EQ(d.test.images.shape(), (Shape{10000, 28, 28}));
  EXPECT_EQ(d.train.num_classes, 10);
}

}  // namespace
}  // namespace lowbit
