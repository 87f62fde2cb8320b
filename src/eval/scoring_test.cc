#include "eval/scoring.h"

#include <gtest/gtest.h>

namespace kvstar::eval {
namespace {

TEST(ScoringTest, StringMatchAllIsTheFractionFound) {
  EXPECT_DOUBLE_EQ(StringMatchAll(" 1234567, 7654321", {"1234567", "7654321"}), 1.0);
  EXPECT_DOUBLE_EQ(StringMatchAll(" 1234567", {"1234567", "7654321"}), 0.5);
  EXPECT_DOUBLE_EQ(StringMatchAll(" nothing", {"1234567", "7654321"}), 0.0);
  EXPECT_DOUBLE_EQ(StringMatchAll(" QPWLM xktze", {"qpwlm", "XKTZE", "ABCDE", "FGHIJ"}), 0.5);
  EXPECT_DOUBLE_EQ(StringMatchAll("anything", {}), 0.0);
}

TEST(ScoringTest, StringMatchPartNeedsOne) {
  EXPECT_DOUBLE_EQ(StringMatchPart(" 7654321", {"1234567", "7654321"}), 1.0);
  EXPECT_DOUBLE_EQ(StringMatchPart(" 765432", {"1234567", "7654321"}), 0.0);
}

TEST(ScoringTest, NumberMatchIsExactOnTheFirstNumber) {
  EXPECT_DOUBLE_EQ(NumberMatch(" 71432", {"71432"}), 1.0);
  EXPECT_DOUBLE_EQ(NumberMatch(" is 71432.", {"71432"}), 1.0);
  EXPECT_DOUBLE_EQ(NumberMatch(" 714321", {"71432"}), 0.0);  // a substring is not enough
  EXPECT_DOUBLE_EQ(NumberMatch(" 1 then 71432", {"71432"}), 0.0);
  EXPECT_DOUBLE_EQ(NumberMatch(" none", {"71432"}), 0.0);
}

TEST(ScoringTest, TaskPicksItsMetric) {
  EXPECT_DOUBLE_EQ(ScoreOutput("passkey", " 714321", {"71432"}), 0.0);
  EXPECT_DOUBLE_EQ(ScoreOutput("niah_single", " 714321", {"71432"}), 1.0);
  EXPECT_DOUBLE_EQ(ScoreOutput("cwe", " a b", {"a", "b", "c", "d"}), 0.5);
}

}  // namespace
}  // namespace kvstar::eval
