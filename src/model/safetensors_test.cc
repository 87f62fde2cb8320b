#include "model/safetensors.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "base/file_util.h"

namespace kvstar {
namespace {

// A scratch directory removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string templ = testing::TempDir() + "/kvstar_st_XXXXXX";
    KVSTAR_CHECK(mkdtemp(templ.data()) != nullptr, "mkdtemp %s", templ.c_str());
    path_ = templ;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Raw file image: 8-byte little-endian length (the true header size unless overridden), the
// header text, then `data`. Independent of the library's writer so that it can lie.
std::string RawImage(const std::string& header, const std::string& data,
                     std::optional<uint64_t> header_len = std::nullopt) {
  const uint64_t n = header_len.value_or(header.size());
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

void WriteRaw(const std::string& path, const std::string& image) {
  ASSERT_TRUE(WriteStringToFile(path, image).ok());
}

template <typename T>
std::span<const uint8_t> Bytes(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

// Non-owning, like FromMemory: `image` must outlive the result.
StatusOr<std::unique_ptr<SafetensorsFile>> ParseImage(const std::string& image) {
  return SafetensorsFile::FromMemory(
      "mem.safetensors",
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(image.data()), image.size()));
}

void ExpectError(const StatusOr<std::unique_ptr<SafetensorsFile>>& r, StatusCode code,
                 const std::string& needle) {
  ASSERT_FALSE(r.ok()) << "expected an error containing: " << needle;
  EXPECT_EQ(r.status().code(), code) << r.status().ToString();
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("mem.safetensors"), std::string::npos)
      << r.status().ToString();
}

TEST(SafetensorsTest, RoundTripAllDtypes) {
  TempDir dir;
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};  // [2, 3]
  std::vector<bf16_t> bf16;
  std::vector<f16_t> f16;
  for (float v : f32) {
    bf16.push_back(F32ToBF16(v));
    f16.push_back(F32ToF16(v));
  }
  std::vector<float> cube(2 * 3 * 4);  // [2, 3, 4]
  for (size_t i = 0; i < cube.size(); ++i) cube[i] = static_cast<float>(i);
  std::vector<float> scalar = {42.0f};
  const std::string path = dir.file("a.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"w.f32", "F32", {2, 3}, Bytes(f32)},
                                {"w.bf16", "BF16", {6}, Bytes(bf16)},
                                {"w.f16", "F16", {3, 2}, Bytes(f16)},
                                {"cube", "F32", {2, 3, 4}, Bytes(cube)},
                                {"scalar", "F32", {}, Bytes(scalar)}},
                               {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->tensors().size(), 5u);  // __metadata__ is not a tensor

  auto a = (*file)->Get("w.f32", std::vector<size_t>{2, 3});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->rows, 2u);
  EXPECT_EQ(a->cols, 3u);
  EXPECT_EQ(std::memcmp(a->data, f32.data(), 24), 0);
  EXPECT_EQ(static_cast<const float*>(a->row(1))[2], 7.0f);

  auto b = (*file)->Get("w.bf16", std::vector<size_t>{6});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->dtype, DType::kBF16);
  EXPECT_EQ(b->rows, 1u);  // vectors are 1 x N
  EXPECT_EQ(b->cols, 6u);
  EXPECT_EQ(BF16ToF32(static_cast<const bf16_t*>(b->data)[2]), 3.25f);

  auto c = (*file)->Get("w.f16");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->dtype, DType::kF16);
  EXPECT_EQ(c->rows, 3u);
  EXPECT_EQ(F16ToF32(static_cast<const f16_t*>(c->data)[1]), -2.0f);

  auto d = (*file)->Get("cube");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->rows, 6u);  // leading dimensions flattened
  EXPECT_EQ(d->cols, 4u);
  EXPECT_EQ(static_cast<const float*>(d->row(5))[3], 23.0f);

  auto s = (*file)->Get("scalar");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->elements(), 1u);
  EXPECT_EQ(*static_cast<const float*>(s->data), 42.0f);

  const auto* t = (*file)->Find("w.f16");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype_name, "F16");
  EXPECT_EQ(t->shape, (std::vector<size_t>{3, 2}));
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST(SafetensorsTest, RawWriterRoundTripAndEmptyTensor) {
  const std::string data = std::string("\x00\x00\x80\x3f\x00\x00\x00\x40", 8);  // 1.0f, 2.0f
  std::string header =
      R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("e":{"dtype":"BF16","shape":[0,4],"data_offsets":[8,8]},"__metadata__":{"a":"b"}})";
  header.append((8 - header.size() % 8) % 8, ' ');  // trailing whitespace is allowed
  const std::string image = RawImage(header, data);
  auto r = ParseImage(image);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto x = (*r)->Get("x", std::vector<size_t>{2});
  ASSERT_TRUE(x.ok());
  EXPECT_EQ(static_cast<const float*>(x->data)[1], 2.0f);
  auto e = (*r)->Get("e");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->elements(), 0u);
}

TEST(SafetensorsTest, MisalignedTensorIsRejectedOnUse) {
  // A 1-byte tensor first puts the F32 one at an odd offset.
  std::string header = R"({"u":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                       R"("x":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string image = RawImage(header, std::string(5, '\0'));
  auto r = ParseImage(image);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto x = (*r)->Get("x");
  ASSERT_FALSE(x.ok());
  EXPECT_EQ(x.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(x.status().message().find("x data is not aligned"), std::string::npos)
      << x.status().ToString();
}

TEST(SafetensorsTest, WrongShapeMessage) {
  std::vector<float> w(64 * 32);
  TempDir dir;
  ASSERT_TRUE(WriteSafetensors(dir.file("model.safetensors"),
                               {{"model.layers.3.mlp.up_proj.weight", "F32", {64, 32}, Bytes(w)}})
                  .ok());
  auto set = TensorSet::Open(dir.path());
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  auto v = (*set)->Get("model.layers.3.mlp.up_proj.weight", {128, 32});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(v.status().message().find(
                "model.layers.3.mlp.up_proj.weight has shape [64, 32], expected [128, 32]"),
            std::string::npos)
      << v.status().ToString();
  auto m = (*set)->Get("model.norm.weight", {32});
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model.norm.weight"), std::string::npos);
  EXPECT_TRUE((*set)->Get("model.layers.3.mlp.up_proj.weight", {64, 32}).ok());
}

TEST(SafetensorsTest, MissingFile) {
  auto r = SafetensorsFile::Open("/nonexistent/x.safetensors");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/x.safetensors"), std::string::npos);
}

TEST(SafetensorsTest, TruncatedFiles) {
  const std::string header = R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})";
  const std::string image = RawImage(header, std::string(16, '\1'));
  ExpectError(ParseImage(""), StatusCode::kDataLoss, "shorter than the 8-byte header length");
  ExpectError(ParseImage(image.substr(0, 5)), StatusCode::kDataLoss, "shorter than");
  // Cut inside the header: the length field promises more than the file holds.
  ExpectError(ParseImage(image.substr(0, 8 + header.size() / 2)), StatusCode::kDataLoss,
              "exceeds the");
  // Cut inside the data region.
  ExpectError(ParseImage(image.substr(0, image.size() - 3)), StatusCode::kDataLoss,
              "beyond the 13-byte data region");
  // Also through a real file.
  TempDir dir;
  WriteRaw(dir.file("t.safetensors"), image.substr(0, image.size() - 3));
  auto f = SafetensorsFile::Open(dir.file("t.safetensors"));
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(f.status().message().find(dir.file("t.safetensors")), std::string::npos);
}

TEST(SafetensorsTest, LyingAndOversizedHeaderLength) {
  const std::string header = R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ExpectError(ParseImage(RawImage(header, "abcd", header.size() + 100)), StatusCode::kDataLoss,
              "header length");
  ExpectError(ParseImage(RawImage(header, "abcd", uint64_t{1} << 40)), StatusCode::kInvalidArgument,
              "oversized header");
  ExpectError(ParseImage(RawImage(header, "abcd", ~uint64_t{0})), StatusCode::kInvalidArgument,
              "oversized header");
  // Shorter than the JSON: the header text is cut and no longer parses.
  ExpectError(ParseImage(RawImage(header, "abcd", header.size() - 5)), StatusCode::kInvalidArgument,
              "not valid JSON");
  ExpectError(ParseImage(RawImage("", "", 0)), StatusCode::kInvalidArgument, "not valid JSON");
}

TEST(SafetensorsTest, BadHeaders) {
  const std::string data(64, '\0');
  struct Case {
    const char* header;
    StatusCode code;
    const char* needle;
  };
  const Case cases[] = {
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", StatusCode::kInvalidArgument,
       "not valid JSON"},
      {R"([1,2,3])", StatusCode::kInvalidArgument, "must be a JSON object"},
      {R"({"x":[1]})", StatusCode::kInvalidArgument, "tensor 'x': entry must be an object"},
      {R"({"x":{"shape":[4],"data_offsets":[0,16]}})", StatusCode::kInvalidArgument, "'dtype'"},
      {R"({"x":{"dtype":"F32","data_offsets":[0,16]}})", StatusCode::kInvalidArgument, "'shape'"},
      {R"({"x":{"dtype":"F32","shape":[4]}})", StatusCode::kInvalidArgument, "data_offsets"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", StatusCode::kInvalidArgument,
       "two integers"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16,32]}})",
       StatusCode::kInvalidArgument, "two integers"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,"16"]}})", StatusCode::kInvalidArgument,
       "two non-negative integers"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[-16,0]}})", StatusCode::kInvalidArgument,
       "two non-negative integers"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0.5,16]}})", StatusCode::kInvalidArgument,
       "two non-negative integers"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", StatusCode::kInvalidArgument,
       "begin > end"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[60,76]}})", StatusCode::kDataLoss,
       "beyond the 64-byte data region"},
      {R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", StatusCode::kInvalidArgument,
       "span 12 bytes but F32 shape [4] needs 16"},
      {R"({"x":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", StatusCode::kInvalidArgument,
       "not a non-negative integer"},
      {R"({"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}})",
       StatusCode::kInvalidArgument, "overflows"},
      {R"({"x":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}})",
       StatusCode::kInvalidArgument, "overflows"},
      {R"({"x":{"dtype":"Q4","shape":[4],"data_offsets":[0,16]}})", StatusCode::kInvalidArgument,
       "unknown dtype 'Q4'"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
       R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
       StatusCode::kInvalidArgument, "tensors 'a' and 'b' overlap"},
      {R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[20,28]}})",
       StatusCode::kInvalidArgument, "overlap"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.header);
    ExpectError(ParseImage(RawImage(c.header, data)), c.code, c.needle);
  }
}

TEST(SafetensorsTest, UnsupportedDtypeFailsOnUseOnly) {
  // An F64 / I64 tensor does not spoil the file; asking for it names the tensor and dtype.
  std::string header = R"({"pos":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                       R"("d":{"dtype":"F64","shape":[1],"data_offsets":[16,24]},)"
                       R"("q":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[24,32]},)"
                       R"("w":{"dtype":"F32","shape":[2],"data_offsets":[32,40]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string image = RawImage(header, std::string(40, '\0'));
  auto r = ParseImage(image);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const char* name : {"pos", "d", "q"}) {
    auto v = (*r)->Get(name);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(v.status().message().find(std::string(name) + " has dtype"), std::string::npos)
        << v.status().ToString();
  }
  EXPECT_NE((*r)->Get("d").status().message().find("F64"), std::string::npos);
  EXPECT_TRUE((*r)->Get("w").ok());
}

// ------------------------------- directories and sharded models -------------------------------

std::string Index(const std::string& weight_map_json) {
  return R"({"metadata": {"total_size": 96}, "weight_map": )" + weight_map_json + "}";
}

class ShardedTest : public testing::Test {
 protected:
  void SetUp() override {
    std::vector<float> a(8, 1.0f), b(16, 2.0f);
    ASSERT_TRUE(WriteSafetensors(dir_.file("model-00001-of-00002.safetensors"),
                                 {{"a", "F32", {2, 4}, Bytes(a)}})
                    .ok());
    ASSERT_TRUE(WriteSafetensors(dir_.file("model-00002-of-00002.safetensors"),
                                 {{"b", "F32", {4, 4}, Bytes(b)}, {"c", "F32", {8}, Bytes(a)}})
                    .ok());
  }
  void WriteIndex(const std::string& weight_map) {
    ASSERT_TRUE(
        WriteStringToFile(dir_.file("model.safetensors.index.json"), Index(weight_map)).ok());
  }
  TempDir dir_;
};

TEST_F(ShardedTest, LoadsAllShardsOnce) {
  WriteIndex(R"({"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
                 "c": "model-00002-of-00002.safetensors"})");
  auto set = TensorSet::Open(dir_.path());
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ((*set)->num_files(), 2u);
  EXPECT_EQ((*set)->Names(), (std::vector<std::string>{"a", "b", "c"}));
  auto b = (*set)->Get("b", {4, 4});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(static_cast<const float*>(b->data)[15], 2.0f);
  EXPECT_NE((*set)->FileOf("b").find("model-00002-of-00002.safetensors"), std::string::npos);
}

TEST_F(ShardedTest, MissingShard) {
  WriteIndex(
      R"({"a": "model-00001-of-00002.safetensors", "z": "model-00003-of-00003.safetensors"})");
  auto set = TensorSet::Open(dir_.path());
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), StatusCode::kNotFound);
  EXPECT_NE(set.status().message().find("model-00003-of-00003.safetensors"), std::string::npos)
      << set.status().ToString();
}

TEST_F(ShardedTest, TensorMissingFromShard) {
  WriteIndex(
      R"({"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"})");
  auto set = TensorSet::Open(dir_.path());
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), StatusCode::kNotFound);
  EXPECT_NE(set.status().message().find("maps tensor b to"), std::string::npos)
      << set.status().ToString();
}

TEST_F(ShardedTest, PathTraversalRejected) {
  for (const char* shard :
       {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors", "..", "."}) {
    WriteIndex(std::string(R"({"a": ")") + shard + "\"}");
    auto set = TensorSet::Open(dir_.path());
    ASSERT_FALSE(set.ok()) << shard;
    EXPECT_EQ(set.status().code(), StatusCode::kInvalidArgument) << shard;
    EXPECT_NE(set.status().message().find("plain file name"), std::string::npos)
        << set.status().ToString();
  }
}

TEST_F(ShardedTest, BadIndex) {
  ASSERT_TRUE(WriteStringToFile(dir_.file("model.safetensors.index.json"), "{not json").ok());
  auto set = TensorSet::Open(dir_.path());
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("model.safetensors.index.json: invalid JSON"),
            std::string::npos);
  ASSERT_TRUE(WriteStringToFile(dir_.file("model.safetensors.index.json"), "{}").ok());
  set = TensorSet::Open(dir_.path());
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("'weight_map'"), std::string::npos);
  WriteIndex(R"({"a": 5})");
  set = TensorSet::Open(dir_.path());
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("not a file name"), std::string::npos);
}

TEST(TensorSetTest, EmptyOrMissingDirectory) {
  TempDir dir;
  auto set = TensorSet::Open(dir.path());
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), StatusCode::kNotFound);
  EXPECT_NE(set.status().message().find("neither model.safetensors"), std::string::npos);
  set = TensorSet::Open(dir.file("nope"));
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsWriterTest, RejectsInconsistentInput) {
  TempDir dir;
  std::vector<float> v(3);
  auto s = WriteSafetensors(dir.file("x.safetensors"), {{"x", "F32", {4}, Bytes(v)}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = WriteSafetensors(dir.file("x.safetensors"), {{"x", "F99", {3}, Bytes(v)}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = WriteSafetensors(dir.file("x.safetensors"),
                       {{"x", "F32", {3}, Bytes(v)}, {"x", "F32", {3}, Bytes(v)}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
}

// --------------------------------------- randomized -------------------------------------------

// Corrupts random bytes of the length field and the header of a valid image (and tries random
// header lengths and truncations) thousands of times: every parse must return OK or an error
// Status, and an OK parse must only hand out tensors inside the image.
TEST(SafetensorsFuzzTest, CorruptHeadersNeverCrash) {
  std::vector<float> a(12), b(5);
  std::vector<bf16_t> c(7);
  TempDir dir;
  const std::string path = dir.file("v.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"model.a", "F32", {3, 4}, Bytes(a)},
                                {"model.b", "F32", {5}, Bytes(b)},
                                {"model.c", "BF16", {7}, Bytes(c)}},
                               {{"format", "pt"}})
                  .ok());
  auto valid = ReadFileToString(path);
  ASSERT_TRUE(valid.ok());
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>((*valid)[i]);
  const size_t header_end = 8 + header_len;
  ASSERT_LE(header_end, valid->size());

  std::mt19937_64 rng(20261123);
  const char kInteresting[] = "{}[]\",:0123456789-.eE \\ntfu";
  size_t ok_count = 0, err_count = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string img = *valid;
    const int mode = static_cast<int>(rng() % 4);
    if (mode == 0 || mode == 1) {
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int f = 0; f < flips; ++f) {
        const size_t pos = rng() % header_end;
        img[pos] = mode == 0 ? static_cast<char>(rng() & 0xff)
                             : kInteresting[rng() % (sizeof(kInteresting) - 1)];
      }
    } else if (mode == 2) {
      uint64_t n = rng();
      switch (rng() % 3) {
        case 0:
          n %= img.size() + 16;
          break;
        case 1:
          n = header_len + (rng() % 16) - 8;
          break;
        default:
          break;
      }
      for (int i = 0; i < 8; ++i) img[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    } else {
      img.resize(rng() % (img.size() + 1));
    }
    auto r = ParseImage(img);
    if (!r.ok()) {
      ++err_count;
      EXPECT_FALSE(r.status().message().empty());
      continue;
    }
    ++ok_count;
    const uint8_t* lo = reinterpret_cast<const uint8_t*>(img.data());
    const uint8_t* hi = lo + img.size();
    for (const auto& [name, t] : (*r)->tensors()) {
      ASSERT_GE(t.data, lo) << name;
      ASSERT_LE(t.data + t.bytes, hi) << name;
      if (t.dtype) {
        auto v = (*r)->Get(name);  // may refuse a misaligned tensor, never crash
        if (v.ok()) {
          ASSERT_EQ(v->bytes(), t.bytes);
        }
      }
    }
  }
  EXPECT_GT(err_count, 5000u);  // most corruptions are detected...
  RecordProperty("ok", static_cast<int>(ok_count));
  RecordProperty("errors", static_cast<int>(err_count));
  EXPECT_GT(ok_count, 0u);  // ...and some (e.g. in metadata values) are harmless
}

}  // namespace
}  // namespace kvstar
