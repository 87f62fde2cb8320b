// Scoring as RULER does it: case-insensitive substring matches of the expected strings.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvstar::eval {

// Fraction of the expected strings found in the output (NIAH, vt, cwe, fwe).
double StringMatchAll(std::string_view output, const std::vector<std::string>& answers);
// 1 if any expected string is found in the output, else 0.
double StringMatchPart(std::string_view output, const std::vector<std::string>& answers);
// 1 if the first number in the output equals answers[0] exactly (passkey), else 0.
double NumberMatch(std::string_view output, const std::vector<std::string>& answers);
// The task's metric: NumberMatch for passkey, StringMatchAll for the rest.
double ScoreOutput(std::string_view task, std::string_view output,
                   const std::vector<std::string>& answers);

}  // namespace kvstar::eval
