// Test helpers: a whitespace token counter, the committed haystack text, and a reference solver
// that answers every task by parsing the prompt (what a perfect model would answer).
#pragma once

#include <algorithm>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "eval/tasks.h"

namespace kvstar::eval::testing {

// Appends instead of `"literal" + std::string`, on which GCC 12 warns falsely (-Wrestrict).
inline std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (auto p : parts) out.append(p);
  return out;
}

inline size_t CountWords(std::string_view s) {
  size_t n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in_word) ++n;
    in_word = !space;
  }
  return n;
}

inline std::string HaystackPath() { return Cat({KVSTAR_SOURCE_DIR, "/src/eval/data/kjv_nt.txt"}); }

inline std::string Between(std::string_view s, std::string_view a, std::string_view b,
                           size_t from = 0) {
  const size_t i = s.find(a, from);
  if (i == std::string_view::npos) return "";
  const size_t j = s.find(b, i + a.size());
  if (j == std::string_view::npos) return "";
  return std::string(s.substr(i + a.size(), j - i - a.size()));
}

inline std::string Digits(std::string_view s, size_t from) {
  std::string d;
  while (from < s.size() && s[from] >= '0' && s[from] <= '9') d += s[from++];
  return d;
}

// All values stored for `key` ("for KEY is: 1234567."), in reading order.
inline std::vector<std::string> ValuesFor(std::string_view prompt, const std::string& key) {
  std::vector<std::string> out;
  const std::string pat = Cat({"for ", key, " is: "});
  for (size_t i = prompt.find(pat); i != std::string_view::npos; i = prompt.find(pat, i + 1)) {
    out.push_back(Digits(prompt, i + pat.size()));
  }
  return out;
}

inline std::vector<std::string> Split(std::string_view s, std::string_view sep) {
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t i = s.find(sep); i != std::string_view::npos; i = s.find(sep, b)) {
    out.emplace_back(s.substr(b, i - b));
    b = i + sep.size();
  }
  out.emplace_back(s.substr(b));
  return out;
}

// Resolves "VAR X = 12345." / "VAR Y = VAR X." statements: every variable holding `value`.
inline std::vector<std::string> ResolveChain(std::string_view prompt, const std::string& value) {
  std::map<std::string, std::string> assign;  // var -> value or "VAR name"
  for (size_t i = prompt.find("VAR "); i != std::string_view::npos;
       i = prompt.find("VAR ", i + 1)) {
    const size_t eq = prompt.find(" = ", i);
    const size_t dot = prompt.find('.', eq);
    if (eq == std::string_view::npos || dot == std::string_view::npos || eq - i > 10) continue;
    assign[std::string(prompt.substr(i + 4, eq - i - 4))] =
        std::string(prompt.substr(eq + 3, dot - eq - 3));
  }
  std::vector<std::string> out;
  for (const auto& [var, rhs] : assign) {
    std::string cur = var;
    for (int hops = 0; hops < 32; ++hops) {
      auto it = assign.find(cur);
      if (it == assign.end()) break;
      if (it->second.rfind("VAR ", 0) == 0) {
        cur = it->second.substr(4);
      } else {
        if (it->second == value) out.push_back(var);
        break;
      }
    }
  }
  return out;
}

// Most frequent words of `words`, ties broken by first appearance.
inline std::vector<std::string> TopWords(const std::vector<std::string>& words, size_t k) {
  std::map<std::string, size_t> count, first;
  for (size_t i = 0; i < words.size(); ++i) {
    ++count[words[i]];
    first.emplace(words[i], i);
  }
  std::vector<std::string> order;
  for (const auto& [w, c] : count) order.push_back(w);
  std::sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return count[a] != count[b] ? count[a] > count[b] : first[a] < first[b];
  });
  order.resize(std::min(k, order.size()));
  return order;
}

inline std::string Join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? std::string(sep) : "") + v[i];
  return out;
}

// The answer a perfect reader gives, found by parsing the prompt only.
inline std::string Solve(const std::string& task, const std::string& prompt) {
  const std::string last = prompt.substr(prompt.rfind('\n') + 1);
  if (task.rfind("niah_", 0) == 0) {
    const size_t prefix = last.rfind("The special magic");
    const std::string keys = Between(last, "magic numbers for ", " mentioned", prefix).empty()
                                 ? Between(last, "magic number for ", " mentioned", prefix)
                                 : Between(last, "magic numbers for ", " mentioned", prefix);
    std::vector<std::string> values;
    for (const auto& part : Split(keys, ", ")) {
      for (const auto& key : Split(part, " and ")) {
        for (auto& v : ValuesFor(prompt, key)) values.push_back(v);
      }
    }
    return Cat({" ", Join(values, ", ")});
  }
  if (task == "passkey") {
    const size_t i = prompt.find("the pass key is ");
    return i == std::string::npos ? "" : Cat({" ", Digits(prompt, i + 16)});
  }
  if (task == "vt") {
    return Cat(
        {" ", Join(ResolveChain(prompt, Between(last, "whose value is ", " in the text")), " ")});
  }
  std::vector<std::string> words;
  if (task == "cwe") {
    for (const auto& line : Split(prompt, "\n")) {
      const size_t dot = line.find(". ");
      if (dot != std::string::npos && dot > 0 && line[0] >= '0' && line[0] <= '9') {
        words.push_back(line.substr(dot + 2));
      }
    }
    return Cat({" ", Join(TopWords(words, 10), " ")});
  }
  if (task == "fwe") {
    const auto lines = Split(prompt, "\n");
    std::istringstream in(lines.size() > 1 ? lines[1] : "");
    for (std::string w; in >> w;) {
      if (w != "....") words.push_back(w);
    }
    return Cat({" ", Join(TopWords(words, 3), " ")});
  }
  return "";
}

}  // namespace kvstar::eval::testing
