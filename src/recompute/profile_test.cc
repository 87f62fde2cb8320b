#include "recompute/profile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "base/file_util.h"

namespace kvstar::recompute {
namespace {

KvprProfile Sample() {
  KvprProfile p;
  p.device_name = "NVIDIA H100 80GB HBM3";
  p.device_key = "NVIDIA H100 80GB HBM3|cc 9.0|132 SMs|81008 MiB|CUDA 13.0.88";
  p.measured_at = "2026-11-23T00:00:00Z";
  p.h2d_gbps = 53.0;
  p.h2d_bytes = 256 << 20;
  p.h2d_latency_us = 4.5;
  p.device_gbps = 2900;
  GemmTable t;
  t.hidden = 4096;
  t.kv_dim = 4096;
  t.launch_overhead_us = 6;
  t.points = {{64, 20}, {1024, 300}, {65536, 600}};
  p.gemm.push_back(t);
  p.layer_compute.push_back({"llama2-7b", 8, 4096, 0.25});
  p.recompute_scale = 1.25;
  p.link_scale = 1.1;
  p.recompute_scale_note = "llama2-7b batch 8 context 4096";
  return p;
}

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("kvstar_profile_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

TEST(ProfileTest, JsonRoundTripKeepsEveryField) {
  const KvprProfile p = Sample();
  auto back = ProfileFromJson(ProfileToJson(p).dump(), "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->device_name, p.device_name);
  EXPECT_EQ(back->device_key, p.device_key);
  EXPECT_EQ(back->measured_at, p.measured_at);
  EXPECT_DOUBLE_EQ(back->h2d_gbps, 53.0);
  EXPECT_EQ(back->h2d_bytes, p.h2d_bytes);
  EXPECT_DOUBLE_EQ(back->h2d_latency_us, 4.5);
  EXPECT_DOUBLE_EQ(back->device_gbps, 2900);
  ASSERT_EQ(back->gemm.size(), 1u);
  EXPECT_EQ(back->gemm[0].points.size(), 3u);
  EXPECT_EQ(back->gemm[0].points[1].rows, 1024u);
  EXPECT_DOUBLE_EQ(back->gemm[0].points[2].tflops, 600);
  EXPECT_DOUBLE_EQ(back->gemm[0].launch_overhead_us, 6);
  ASSERT_NE(back->FindLayerCompute("llama2-7b", 8, 4096), nullptr);
  EXPECT_DOUBLE_EQ(back->FindLayerCompute("llama2-7b", 8, 4096)->ms, 0.25);
  EXPECT_EQ(back->FindLayerCompute("llama2-7b", 8, 2048), nullptr);
  EXPECT_NE(back->FindGemm(4096, 4096), nullptr);
  EXPECT_EQ(back->FindGemm(4096, 1024), nullptr);
  EXPECT_DOUBLE_EQ(back->recompute_scale, 1.25);
  EXPECT_DOUBLE_EQ(back->link_scale, 1.1);
  EXPECT_EQ(back->recompute_scale_note, p.recompute_scale_note);
}

TEST(ProfileTest, RecomputeScaleIsOptionalAndBounded) {
  nlohmann::json j = ProfileToJson(Sample());
  j.erase("recompute_scale");
  j.erase("link_scale");
  j.erase("recompute_scale_note");
  auto old = ProfileFromJson(j.dump(), "older file");
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_DOUBLE_EQ(old->recompute_scale, 1.0);
  EXPECT_DOUBLE_EQ(old->link_scale, 1.0);
  EXPECT_TRUE(old->recompute_scale_note.empty());
  for (double bad : {0.0, -1.0, 50.0}) {
    j["recompute_scale"] = bad;
    auto r = ProfileFromJson(j.dump(), "bad");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  }
  j["recompute_scale"] = 1.0;
  j["link_scale"] = 0.0;
  EXPECT_EQ(ProfileFromJson(j.dump(), "bad link").status().code(), StatusCode::kInvalidArgument);
  j["link_scale"] = 1.0;
  j["recompute_scale"] = "fast";
  EXPECT_EQ(ProfileFromJson(j.dump(), "typed").status().code(), StatusCode::kDataLoss);
}

TEST(ProfileTest, InterpolatesLogLinearAndClampsOutside) {
  const KvprProfile p = Sample();
  const GemmTable& t = p.gemm[0];
  EXPECT_DOUBLE_EQ(t.TflopsAt(1024), 300);
  EXPECT_DOUBLE_EQ(t.TflopsAt(65536), 600);
  // 256 is the log-midpoint of 64 and 1024.
  EXPECT_NEAR(t.TflopsAt(256), 160, 1e-9);
  EXPECT_NEAR(t.TflopsAt(8192), 450, 1e-9);  // log-midpoint of 1024 and 65536
  EXPECT_DOUBLE_EQ(t.TflopsAt(1 << 20), 600);
  // Below the first point the time stays that of the first point.
  EXPECT_NEAR(t.TflopsAt(32), 10, 1e-12);
  EXPECT_NEAR(t.GemmMs(16), t.GemmMs(64), 1e-15);
  EXPECT_EQ(t.GemmMs(0), 0);
  const double flops = 2.0 * 4096 * 4096 * 2 * 4096;
  EXPECT_NEAR(t.GemmMs(4096), flops / (t.TflopsAt(4096) * 1e12) * 1e3, 1e-12);
}

TEST(ProfileTest, CorruptTextIsDataLossNotACrash) {
  const std::string good = ProfileToJson(Sample()).dump();
  for (const std::string& bad :
       {std::string(""), std::string("{"), std::string("[1,2]"), good.substr(0, good.size() / 2),
        std::string("\x00\xff garbage", 10)}) {
    auto r = ProfileFromJson(bad, "f.json");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    EXPECT_NE(r.status().message().find("f.json"), std::string::npos);
  }
}

TEST(ProfileTest, WrongVersionOrFormatIsFailedPrecondition) {
  nlohmann::json j = ProfileToJson(Sample());
  j["version"] = kProfileVersion + 1;
  auto r = ProfileFromJson(j.dump(), "f.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("version"), std::string::npos);
  j = ProfileToJson(Sample());
  j["format"] = "something-else";
  r = ProfileFromJson(j.dump(), "f.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
}

TEST(ProfileTest, MistypedOrMissingKeysAreDataLoss) {
  nlohmann::json j = ProfileToJson(Sample());
  j["h2d_gbps"] = "fast";
  EXPECT_EQ(ProfileFromJson(j.dump(), "f").status().code(), StatusCode::kDataLoss);
  j = ProfileToJson(Sample());
  j.erase("gemm");
  EXPECT_EQ(ProfileFromJson(j.dump(), "f").status().code(), StatusCode::kDataLoss);
  j = ProfileToJson(Sample());
  j["gemm"][0]["points"][0]["rows"] = -5;
  EXPECT_EQ(ProfileFromJson(j.dump(), "f").status().code(), StatusCode::kDataLoss);
  j = ProfileToJson(Sample());
  j["gemm"][0]["points"] = 3;
  EXPECT_EQ(ProfileFromJson(j.dump(), "f").status().code(), StatusCode::kDataLoss);
}

TEST(ProfileTest, BadValuesAreInvalidArgument) {
  KvprProfile p = Sample();
  p.h2d_gbps = 0;
  EXPECT_EQ(ValidateProfile(p, "x").code(), StatusCode::kInvalidArgument);
  p = Sample();
  p.gemm[0].points = {{1024, 300}, {64, 20}};
  EXPECT_EQ(ValidateProfile(p, "x").code(), StatusCode::kInvalidArgument);
  p = Sample();
  p.gemm[0].points[0].tflops = NAN;
  EXPECT_EQ(ValidateProfile(p, "x").code(), StatusCode::kInvalidArgument);
  p = Sample();
  p.gemm.push_back(p.gemm[0]);
  EXPECT_EQ(ValidateProfile(p, "x").code(), StatusCode::kInvalidArgument);
  p = Sample();
  p.gemm[0].points.clear();
  EXPECT_EQ(ValidateProfile(p, "x").code(), StatusCode::kInvalidArgument);
  nlohmann::json j = ProfileToJson(Sample());
  j["h2d_latency_us"] = -1;
  EXPECT_EQ(ProfileFromJson(j.dump(), "f").status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateProfile(Sample(), "x").ok());
}

TEST(ProfileTest, SaveCreatesDirectoriesAndLoadReadsItBack) {
  TempDir dir;
  const std::string path = dir.File("a/b/profile.json");
  ASSERT_TRUE(SaveProfile(Sample(), path).ok());
  auto back = LoadProfile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->device_key, Sample().device_key);
  // Nothing but the profile is left in the directory (the temporary file was renamed).
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.File("a/b"))) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
  // Saving an invalid profile fails and keeps the old file.
  KvprProfile bad = Sample();
  bad.h2d_gbps = -1;
  EXPECT_FALSE(SaveProfile(bad, path).ok());
  EXPECT_TRUE(LoadProfile(path).ok());
}

TEST(ProfileTest, LoadMissingIsNotFoundAndCorruptFileIsDataLoss) {
  TempDir dir;
  EXPECT_EQ(LoadProfile(dir.File("none.json")).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(WriteStringToFile(dir.File("bad.json"), "{\"format\": \"kvstar-kv").ok());
  EXPECT_EQ(LoadProfile(dir.File("bad.json")).status().code(), StatusCode::kDataLoss);
}

TEST(ProfileTest, DeviceKeyMismatchIsFailedPrecondition) {
  const KvprProfile p = Sample();
  EXPECT_TRUE(CheckProfileDevice(p, p.device_key).ok());
  Status s = CheckProfileDevice(p, "NVIDIA H200|cc 9.0|132 SMs|143771 MiB|CUDA 13.0.88");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("H200"), std::string::npos);
}

TEST(ProfileTest, SanitizedNamesAndDefaultPath) {
  EXPECT_EQ(SanitizeDeviceName("NVIDIA H100 80GB HBM3"), "nvidia-h100-80gb-hbm3");
  EXPECT_EQ(SanitizeDeviceName("  A/B..c_ "), "a-b-c");
  EXPECT_EQ(SanitizeDeviceName("///"), "device");
  const char* old_xdg = std::getenv("XDG_CACHE_HOME");
  const std::string saved = old_xdg ? old_xdg : "";
  ASSERT_EQ(setenv("XDG_CACHE_HOME", "/tmp/xdg", 1), 0);
  auto p = DefaultProfilePath("NVIDIA H100");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, "/tmp/xdg/kvstar/profile-nvidia-h100.json");
  ASSERT_EQ(unsetenv("XDG_CACHE_HOME"), 0);
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') {
    p = DefaultProfilePath("NVIDIA H100");
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, std::string(home) + "/.cache/kvstar/profile-nvidia-h100.json");
  }
  if (old_xdg) setenv("XDG_CACHE_HOME", saved.c_str(), 1);
}

}  // namespace
}  // namespace kvstar::recompute
