#include "eval/runner.h"

#include <gtest/gtest.h>

#include <string>

#include "eval/eval_test_util.h"

namespace kvstar::eval {
namespace {

EvalOptions SmallRun() {
  EvalOptions opts;
  opts.lengths = {700, 1600};
  opts.samples = 3;
  opts.seed = 5;
  opts.mode = "fake";
  opts.settings = {{"model", "none"}};
  opts.haystack_path = testing::HaystackPath();
  return opts;
}

// Answers by parsing the prompt, the way a perfect model would; reports made-up timings.
StatusOr<GenerateResult> Perfect(const std::string& task, const std::string& prompt) {
  GenerateResult r;
  r.text = testing::Solve(task, prompt);
  r.prompt_tokens = testing::CountWords(prompt);
  r.generated_tokens = 10;
  r.prefill_seconds = 0.5;
  r.decode_seconds = 2.0;
  return r;
}

// The prompt does not say which task it is; the test runs one task at a time for the solver.
TEST(RunnerTest, PerfectReaderScoresFullMarksWrongReaderZero) {
  for (const auto& task : TaskNames()) {
    EvalOptions opts = SmallRun();
    opts.tasks = {task};
    size_t calls = 0;
    auto perfect =
        RunEval(opts, testing::CountWords, [&](const std::string& prompt, size_t max_new) {
          ++calls;
          EXPECT_EQ(max_new, MaxNewTokens(task));
          return Perfect(task, prompt);
        });
    ASSERT_TRUE(perfect.ok()) << perfect.status().ToString();
    EXPECT_EQ(calls, 6u);
    ASSERT_EQ(perfect->cells.size(), 2u);
    for (const auto& cell : perfect->cells) {
      EXPECT_DOUBLE_EQ(cell.accuracy, 1.0)
          << task << " " << cell.length << ": " << cell.records[0].output;
      EXPECT_EQ(cell.samples, 3u);
      EXPECT_NEAR(cell.decode_tokens_per_s, 5.0, 1e-9);
      EXPECT_GT(cell.prefill_tokens_per_s, 0.0);
    }
    auto wrong = RunEval(opts, testing::CountWords, [](const std::string&, size_t) {
      return StatusOr<GenerateResult>(GenerateResult{" I do not know."});
    });
    ASSERT_TRUE(wrong.ok());
    for (const auto& cell : wrong->cells) EXPECT_DOUBLE_EQ(cell.accuracy, 0.0) << task;
  }
}

TEST(RunnerTest, ReportTableJsonAndProgress) {
  EvalOptions opts = SmallRun();
  opts.tasks = {"passkey", "niah_single"};
  size_t last_done = 0, total = 0;
  auto report = RunEval(
      opts, testing::CountWords,
      [](const std::string& prompt, size_t) { return Perfect("passkey", prompt); },
      [&](const EvalProgress& p) {
        EXPECT_EQ(p.done, last_done + 1);
        last_done = p.done;
        total = p.total;
        ASSERT_NE(p.last, nullptr);
      });
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(last_done, 12u);
  EXPECT_EQ(total, 12u);
  EXPECT_DOUBLE_EQ(report->Find("passkey", 700)->accuracy, 1.0);
  EXPECT_DOUBLE_EQ(report->Find("niah_single", 1600)->accuracy, 0.0);  // the passkey reader
  const std::string table = FormatTable(*report);
  EXPECT_NE(table.find("passkey"), std::string::npos);
  EXPECT_NE(table.find("100.0"), std::string::npos);
  EXPECT_NE(table.find("1600"), std::string::npos);
  EXPECT_NE(table.find("mean"), std::string::npos);
  const nlohmann::json j = ToJson(*report);
  ASSERT_EQ(j["results"].size(), 4u);
  EXPECT_EQ(j["results"][0]["task"], "passkey");
  EXPECT_EQ(j["results"][0]["length"], 700);
  EXPECT_EQ(j["results"][0]["mode"], "fake");
  EXPECT_EQ(j["results"][0]["samples"], 3);
  EXPECT_EQ(j["results"][0]["settings"]["model"], "none");
  EXPECT_DOUBLE_EQ(j["results"][0]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(j["samples"].size(), 12u);
}

TEST(RunnerTest, InvalidUtf8OutputStillSerialises) {
  EvalOptions opts = SmallRun();
  opts.tasks = {"passkey"};
  opts.lengths = {700};
  opts.samples = 1;
  auto report = RunEval(opts, testing::CountWords, [](const std::string&, size_t) {
    return StatusOr<GenerateResult>(GenerateResult{std::string(" \xe4\xb8", 3)});
  });
  ASSERT_TRUE(report.ok());
  EXPECT_NO_THROW({ (void)ToJson(*report).dump(); });
}

TEST(RunnerTest, ErrorsAreReturned) {
  EvalOptions opts = SmallRun();
  opts.tasks = {"vt"};
  auto failed = RunEval(opts, testing::CountWords, [](const std::string&, size_t) {
    return StatusOr<GenerateResult>(Internal("engine broke"));
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.status().message().find("vt/700/0"), std::string::npos);
  EXPECT_NE(failed.status().message().find("engine broke"), std::string::npos);

  opts.tasks = {"nope"};
  auto unknown = RunEval(opts, testing::CountWords, [](const std::string&, size_t) {
    return StatusOr<GenerateResult>(GenerateResult{});
  });
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(unknown.status().message().find("passkey"), std::string::npos);

  opts.tasks = {"passkey"};
  opts.haystack_path = "/nonexistent/text.txt";
  auto missing = RunEval(opts, testing::CountWords, [](const std::string&, size_t) {
    return StatusOr<GenerateResult>(GenerateResult{});
  });
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

TEST(RunnerTest, ParsesTaskAndLengthLists) {
  auto tasks = ParseTaskList("vt, passkey,vt");
  ASSERT_TRUE(tasks.ok());
  EXPECT_EQ(*tasks, (std::vector<std::string>{"vt", "passkey"}));
  EXPECT_EQ(ParseTaskList("all")->size(), TaskNames().size());
  EXPECT_FALSE(ParseTaskList("vt,bogus").ok());
  auto lengths = ParseLengthList("2048, 8k");
  ASSERT_TRUE(lengths.ok());
  EXPECT_EQ(*lengths, (std::vector<size_t>{2048, 8192}));
  EXPECT_FALSE(ParseLengthList("12x").ok());
  EXPECT_FALSE(ParseLengthList("0").ok());
}

}  // namespace
}  // namespace kvstar::eval
