#include "eval/scoring.h"

#include <cctype>

namespace kvstar::eval {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace

double StringMatchAll(std::string_view output, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string out = Lower(output);
  size_t found = 0;
  for (const auto& a : answers) found += out.find(Lower(a)) != std::string::npos ? 1 : 0;
  return static_cast<double>(found) / static_cast<double>(answers.size());
}

double StringMatchPart(std::string_view output, const std::vector<std::string>& answers) {
  const std::string out = Lower(output);
  for (const auto& a : answers) {
    if (out.find(Lower(a)) != std::string::npos) return 1.0;
  }
  return 0.0;
}

double NumberMatch(std::string_view output, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  size_t b = 0;
  while (b < output.size() && !std::isdigit(static_cast<unsigned char>(output[b]))) ++b;
  size_t e = b;
  while (e < output.size() && std::isdigit(static_cast<unsigned char>(output[e]))) ++e;
  return b < output.size() && output.substr(b, e - b) == answers[0] ? 1.0 : 0.0;
}

double ScoreOutput(std::string_view task, std::string_view output,
                   const std::vector<std::string>& answers) {
  return task == "passkey" ? NumberMatch(output, answers) : StringMatchAll(output, answers);
}

}  // namespace kvstar::eval
