#include "eval/tasks.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "eval/eval_test_util.h"

namespace kvstar::eval {
namespace {

using testing::CountWords;

class TasksTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto text = LoadHaystackText(testing::HaystackPath());
    ASSERT_TRUE(text.ok()) << text.status().ToString();
    text_ = new HaystackText(std::move(text).value());
  }
  static void TearDownTestSuite() { delete text_; }
  Sample Make(const std::string& task, size_t length, size_t index = 0, size_t n = 1,
              uint64_t seed = 7) {
    TaskGenerator gen(text_, CountWords);
    auto s = gen.Generate(task, length, seed, index, n);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : Sample{};
  }
  static size_t Occurrences(const std::string& hay, const std::string& needle) {
    size_t n = 0;
    for (size_t i = hay.find(needle); i != std::string::npos; i = hay.find(needle, i + 1)) ++n;
    return n;
  }
  static HaystackText* text_;
};
HaystackText* TasksTest::text_ = nullptr;

TEST_F(TasksTest, HaystackTextLoads) {
  EXPECT_GT(text_->sentences.size(), 7000u);
  EXPECT_GT(text_->words.size(), 4000u);
  EXPECT_TRUE(std::is_sorted(text_->words.begin(), text_->words.end()));
  EXPECT_FALSE(LoadHaystackText("/nonexistent/kjv.txt").ok());
}

TEST_F(TasksTest, SameSeedSamePromptOtherSeedOtherPrompt) {
  for (const auto& task : TaskNames()) {
    const Sample a = Make(task, 1024, 1, 3, 11);
    const Sample b = Make(task, 1024, 1, 3, 11);
    const Sample c = Make(task, 1024, 1, 3, 12);
    EXPECT_EQ(a.prompt, b.prompt) << task;
    EXPECT_EQ(a.answers, b.answers) << task;
    EXPECT_NE(a.prompt, c.prompt) << task;
    EXPECT_EQ(a.id, testing::Cat({task, "/1024/1"}));
  }
}

TEST_F(TasksTest, PromptLengthHitsTargetMinusAnswerBudget) {
  for (const auto& task : TaskNames()) {
    for (size_t length : {512u, 2048u, 6000u}) {
      const Sample s = Make(task, length);
      const size_t budget = length - s.max_new_tokens;
      const size_t n = CountWords(s.prompt);
      EXPECT_EQ(n, s.prompt_tokens) << task;
      EXPECT_LE(n, budget) << task << " " << length;
      // Filling stops at a sentence boundary: a KJV verse is at most ~90 words.
      EXPECT_GE(n + 100, budget) << task << " " << length;
      EXPECT_FALSE(s.answers.empty()) << task;
      EXPECT_NE(s.prompt.back(), ' ') << task;
    }
  }
}

TEST_F(TasksTest, NeedleOnceAtItsDepth) {
  for (const std::string task : {"niah_single", "niah_single_text", "passkey"}) {
    const size_t n = 5;
    for (size_t i = 0; i < n; ++i) {
      const Sample s = Make(task, 3000, i, n);
      EXPECT_DOUBLE_EQ(s.depth, static_cast<double>(i) / (n - 1));
      const std::string marker =
          task == "passkey" ? "the pass key is " : "A special magic number for ";
      ASSERT_EQ(Occurrences(s.prompt, marker), 1u) << task << " " << i;
      const size_t ctx_begin = s.prompt.find('\n') + 1;
      const size_t ctx_end = s.prompt.rfind('\n');
      const double pos = static_cast<double>(s.prompt.find(marker) - ctx_begin) /
                         static_cast<double>(ctx_end - ctx_begin);
      // Depth is measured in sentences; verses vary in length, noise sentences do not.
      EXPECT_NEAR(pos, s.depth, task == "niah_single_text" ? 0.1 : 0.03) << task << " sample " << i;
      EXPECT_NE(s.prompt.find(s.answers[0]), std::string::npos);
    }
  }
}

TEST_F(TasksTest, NiahAnswersMatchTheNeedles) {
  for (const std::string task : {"niah_multikey", "niah_multivalue", "niah_multiquery"}) {
    for (size_t i = 0; i < 4; ++i) {
      const Sample s = Make(task, 2500, i, 4);
      EXPECT_EQ(Occurrences(s.prompt, "A special magic number for "), 4u) << task;
      EXPECT_EQ(s.answers.size(), task == "niah_multikey" ? 1u : 4u) << task;
      // The reference reader finds exactly the expected answers, in order.
      EXPECT_EQ(testing::Solve(task, s.prompt), testing::Cat({" ", testing::Join(s.answers, ", ")}))
          << task;
    }
  }
}

TEST_F(TasksTest, VariableChainResolvesToTheAnswers) {
  for (size_t i = 0; i < 4; ++i) {
    const Sample s = Make("vt", 1500, i, 4);
    ASSERT_EQ(s.answers.size(), 5u);
    const std::string last = s.prompt.substr(s.prompt.rfind('\n') + 1);
    const std::string value = testing::Between(last, "whose value is ", " in the text");
    ASSERT_EQ(value.size(), 5u);
    EXPECT_NE(s.prompt.find(testing::Cat({"VAR ", s.answers[0], " = ", value, "."})),
              std::string::npos);
    auto resolved = testing::ResolveChain(s.prompt, value);
    EXPECT_EQ(std::set<std::string>(resolved.begin(), resolved.end()),
              std::set<std::string>(s.answers.begin(), s.answers.end()));
    // Each link appears after the variable it copies from.
    for (size_t h = 1; h < s.answers.size(); ++h) {
      EXPECT_LT(
          s.prompt.find(testing::Cat({"VAR ", s.answers[h - 1], " ="})),
          s.prompt.find(testing::Cat({"VAR ", s.answers[h], " = VAR ", s.answers[h - 1], "."})));
    }
  }
}

TEST_F(TasksTest, CommonWordsAreTheMostFrequent) {
  for (size_t length : {800u, 4000u}) {
    const Sample s = Make("cwe", length);
    ASSERT_EQ(s.answers.size(), 10u);
    std::map<std::string, size_t> count;
    for (const auto& line : testing::Split(s.prompt, "\n")) {
      const size_t dot = line.find(". ");
      if (dot != std::string::npos && line[0] >= '0' && line[0] <= '9') {
        ++count[line.substr(dot + 2)];
      }
    }
    size_t min_common = SIZE_MAX, max_rare = 0;
    for (const auto& [w, c] : count) {
      const bool common = std::find(s.answers.begin(), s.answers.end(), w) != s.answers.end();
      if (common) min_common = std::min(min_common, c);
      if (!common) max_rare = std::max(max_rare, c);
    }
    EXPECT_GT(min_common, max_rare) << length;
    EXPECT_GT(count.size(), 10u);
  }
}

TEST_F(TasksTest, FrequentWordsAreTheTopThree) {
  const Sample s = Make("fwe", 3000);
  ASSERT_EQ(s.answers.size(), 3u);
  EXPECT_EQ(testing::Solve("fwe", s.prompt), testing::Cat({" ", testing::Join(s.answers, " ")}));
}

TEST_F(TasksTest, BadInputsAreErrors) {
  TaskGenerator gen(text_, CountWords);
  auto bad = gen.Generate("niah_single_essay", 2048, 1, 0, 1);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("niah_multikey"), std::string::npos);
  EXPECT_FALSE(gen.Generate("vt", 100, 1, 0, 1).ok());
  EXPECT_FALSE(gen.Generate("vt", 2048, 1, 3, 3).ok());
}

}  // namespace
}  // namespace kvstar::eval
