// The profiler and the pipeline on a real device (label gpu; every test skips without one).
// Timings are printed, never asserted: KVSTAR_KVPR_OUT=<dir> also writes the measured profile and
// the model-vs-device comparison there as JSON.
#include "recompute/profiler_cuda.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/file_util.h"
#include "ops/cuda/cuda_test_util.h"
#include "recompute/planner.h"

namespace kvstar::recompute {
namespace {

using cuda::testing::SharedContext;

class ProfilerCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ctx_ = SharedContext();
    if (ctx_ == nullptr) GTEST_SKIP() << "no CUDA device";
    dir_ = std::filesystem::temp_directory_path() /
           ("kvstar_profiler_cuda_test_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  static void Save(const std::string& name, const std::string& text) {
    const char* out = std::getenv("KVSTAR_KVPR_OUT");
    if (out == nullptr) return;
    EXPECT_TRUE(WriteStringToFile(std::string(out) + "/" + name, text).ok());
  }

  cuda::DeviceContext* ctx_ = nullptr;
  std::filesystem::path dir_;
};

// Llama-2-7B geometry (MHA): hidden 4096, kv_dim 32 * 128.
KvprShape Llama2(size_t batch, size_t seq_len) {
  KvprShape s;
  s.batch = batch;
  s.seq_len = seq_len;
  s.hidden = 4096;
  s.kv_dim = 4096;
  s.layers = 32;
  return s;
}

TEST_F(ProfilerCudaTest, MeasuresCachesAndRemeasuresACorruptFile) {
  const std::string path = (dir_ / "cache" / "profile.json").string();
  ProfileOptions options;
  options.progress = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
  auto first = LoadOrMeasureProfile(*ctx_, 4096, 4096, path, /*refresh=*/false, options);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  EXPECT_TRUE(first->measured);
  EXPECT_NE(first->note.find("NotFound"), std::string::npos) << first->note;
  const KvprProfile& p = first->profile;
  EXPECT_TRUE(ValidateProfile(p, "measured").ok());
  EXPECT_EQ(p.device_name, ctx_->info().name);
  EXPECT_EQ(p.device_key, DeviceKey(ctx_->info()));
  ASSERT_NE(p.FindGemm(4096, 4096), nullptr);
  EXPECT_EQ(p.FindGemm(4096, 4096)->points.size(), options.rows.size());
  Save("profile.json", ProfileToJson(p).dump(2));

  auto second = LoadOrMeasureProfile(*ctx_, 4096, 4096, path, false, options);
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  EXPECT_FALSE(second->measured);
  EXPECT_EQ(second->profile.h2d_gbps, p.h2d_gbps);

  // Another geometry: only its table is measured and added to the file.
  ProfileOptions few = options;
  few.rows = {256, 4096};
  auto third = LoadOrMeasureProfile(*ctx_, 4096, 1024, path, false, few);
  ASSERT_TRUE(third.ok()) << third.status().ToString();
  EXPECT_TRUE(third->measured);
  EXPECT_EQ(third->profile.h2d_gbps, p.h2d_gbps);
  auto reread = LoadProfile(path);
  ASSERT_TRUE(reread.ok());
  EXPECT_EQ(reread->gemm.size(), 2u);

  ASSERT_TRUE(WriteStringToFile(path, "{\"format\": \"kvstar-kvpr-prof").ok());
  auto fourth = LoadOrMeasureProfile(*ctx_, 4096, 4096, path, false, few);
  ASSERT_TRUE(fourth.ok()) << fourth.status().ToString();
  EXPECT_TRUE(fourth->measured);
  EXPECT_NE(fourth->note.find("DataLoss"), std::string::npos) << fourth->note;
  EXPECT_TRUE(LoadProfile(path).ok());
}

TEST_F(ProfilerCudaTest, PipelineAgainstTheModel) {
  ProfileOptions options;
  auto profile = MeasureProfile(*ctx_, 4096, 4096, options);
  ASSERT_TRUE(profile.ok()) << profile.status().ToString();
  nlohmann::json all = nlohmann::json::array();
  for (auto [batch, seq] : {std::pair<size_t, size_t>{1, 2048}, {8, 4096}, {8, 16384}}) {
    const KvprShape shape = Llama2(batch, seq);
    auto plan = PlanSplit(*profile, shape);
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    std::vector<MeasuredStep> measured;
    std::vector<size_t> splits = {0, seq / 4, seq / 2, 3 * seq / 4, seq, plan->split};
    std::sort(splits.begin(), splits.end());
    splits.erase(std::unique(splits.begin(), splits.end()), splits.end());
    for (size_t l : splits) {
      auto ms = MeasurePipelineStepMs(*ctx_, shape, {l});
      ASSERT_TRUE(ms.ok()) << ms.status().ToString();
      EXPECT_GT(*ms, 0.0);
      measured.push_back({.split = l, .step_ms = *ms});
    }
    if (plan->kvpr_step_ms < plan->uniform_step_ms) {
      auto ms = MeasurePipelineStepMs(*ctx_, shape, plan->layer_splits);
      ASSERT_TRUE(ms.ok()) << ms.status().ToString();
      measured.push_back({.layer_splits = plan->layer_splits, .step_ms = *ms});
    }
    auto check = CheckPrediction(*profile, shape, measured);
    ASSERT_TRUE(check.ok()) << check.status().ToString();
    std::printf("b=%zu s=%zu: plan l=%zu (%s)\n", batch, seq, plan->split, plan->reason.c_str());
    for (size_t i = 0; i < check->rows.size(); ++i) {
      const PredictionRow& r = check->rows[i];
      std::printf("  l=%6zu%s measured %9.3f ms  model %9.3f ms  error %+6.1f%%\n", r.split,
                  measured[i].layer_splits.empty() ? "           " : " (per-layer)", r.measured_ms,
                  r.predicted_ms, 100 * r.rel_error);
    }
    std::printf("  max |error| %.1f%%\n", 100 * check->max_abs_rel_error);
    nlohmann::json j = PredictionCheckToJson(*check);
    j["batch"] = batch;
    j["seq_len"] = seq;
    j["plan"] = PlanToJson(*plan);
    all.push_back(j);
  }
  // Launches and copies as the CUDA engine makes them: per sequence, chunks of 1024 rows, K and
  // V GEMMs apart, two small launches per chunk, one copy per sequence.
  KvprShape engine = Llama2(8, 4096);
  engine.recompute = {.chunk_rows = 1024, .gemms = 2, .small_launches = 2};
  engine.transfer_copies = 8;
  std::vector<MeasuredStep> measured;
  for (size_t l : {0, 2048, 4096}) {
    auto ms = MeasurePipelineStepMs(*ctx_, engine, {l});
    ASSERT_TRUE(ms.ok()) << ms.status().ToString();
    measured.push_back({.split = l, .step_ms = *ms});
  }
  auto check = CheckPrediction(*profile, engine, measured);
  ASSERT_TRUE(check.ok()) << check.status().ToString();
  std::printf("b=8 s=4096, chunked per sequence (1024 rows, K and V GEMMs, 8 copies):\n");
  for (const PredictionRow& r : check->rows) {
    std::printf("  l=%6zu measured %9.3f ms  model %9.3f ms  error %+6.1f%%\n", r.split,
                r.measured_ms, r.predicted_ms, 100 * r.rel_error);
  }
  nlohmann::json j = PredictionCheckToJson(*check);
  j["batch"] = 8;
  j["seq_len"] = 4096;
  j["form"] = "chunk_rows 1024, gemms 2, small_launches 2, transfer_copies 8";
  all.push_back(j);
  Save("pipeline_check.json", all.dump(2));
}

}  // namespace
}  // namespace kvstar::recompute
