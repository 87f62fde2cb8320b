#include "eval/tasks.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <random>
#include <set>
#include <utility>

#ifndef KVSTAR_EVAL_DATA_DIR
#define KVSTAR_EVAL_DATA_DIR "src/eval/data"
#endif

namespace kvstar::eval {
namespace {

// The wordings below are not used in training (tools/tasks.py keeps them as its "heldout" set).
constexpr std::string_view kNoise[] = {"The grass is green.", "The sky is blue.",
                                       "The sun is yellow.", "Here we go.",
                                       "There and back again."};
constexpr std::string_view kNiahIntro =
    "Special magic numbers are hidden in the text that follows. Memorize them, because questions "
    "about them come at the end.";
constexpr std::string_view kNiahQuestionOne =
    "Tell me the special magic number for {key} that appears in the text above.";
constexpr std::string_view kNiahPrefixOne =
    "The special magic number for {key} mentioned in the provided text is";
constexpr std::string_view kNiahQuestionAll =
    "Which special magic numbers does the text give for {key}? Name all of them.";
constexpr std::string_view kNiahPrefixAll =
    "The special magic numbers for {key} mentioned in the provided text are";
constexpr std::string_view kPasskeyIntro =
    "A pass key is hidden in a long stretch of filler text below. Find it and keep it in mind.";
constexpr std::string_view kPasskeyQuestion = "What pass key was given in the text above?";
constexpr std::string_view kPasskeyPrefix = "The pass key is";
constexpr std::string_view kVtIntro =
    "The text below hides a chain of variable assignments. Follow it.";
constexpr std::string_view kVtQuestion =
    "Question: List every variable whose value is {value} in the text above.";
constexpr std::string_view kVtPrefix =
    "Answer: According to the chain(s) of variables assigned in the text above, {n} variables "
    "are assigned the value {value}, they are:";
constexpr std::string_view kCweIntro =
    "The numbered list below contains words, and a few of them occur far more often than the "
    "rest.";
constexpr std::string_view kCweQuestion =
    "Question: Give the 10 words that occur most often in the list above.";
constexpr std::string_view kCwePrefix =
    "Answer: The top 10 words that appear most often in the list are:";
constexpr std::string_view kFweIntro =
    "Below is a coded text. Keep count of how many times each coded word occurs.";
constexpr std::string_view kFweQuestion =
    "Question: What are the three coded words that occur most often above?";
constexpr std::string_view kFwePrefix =
    "Answer: According to the coded text above, the three most frequently appeared words are:";

constexpr size_t kNeedles = 4;     // multikey / multivalue / multiquery
constexpr size_t kVtHops = 4;      // a chain assigns the value to kVtHops + 1 variables
constexpr size_t kVtChains = 2;    // the queried chain and one distractor chain
constexpr size_t kCweCommon = 10;  // words to find
constexpr size_t kFweVocab = 400;  // coded words
constexpr double kFweAlpha = 2.0;  // Zipf exponent of the coded words

// Concatenation by appends: GCC 12 warns falsely (-Wrestrict) on `"literal" + std::string`.
std::string Cat(std::initializer_list<std::string_view> parts) {
  size_t n = 0;
  for (auto p : parts) n += p.size();
  std::string out;
  out.reserve(n);
  for (auto p : parts) out.append(p);
  return out;
}

std::string Replace(std::string_view tmpl, std::string_view name, std::string_view value) {
  std::string out(tmpl);
  const std::string pat = Cat({"{", name, "}"});
  for (size_t pos = out.find(pat); pos != std::string::npos; pos = out.find(pat, pos)) {
    out.replace(pos, pat.size(), value);
    pos += value.size();
  }
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Sentences with their insertion fraction; a stable order for equal slots keeps chains in order.
struct Placed {
  double frac;
  size_t order;
  std::string text;
};

std::vector<std::string> Insert(const std::vector<std::string>& hay, std::vector<Placed> placed) {
  std::stable_sort(placed.begin(), placed.end(), [](const Placed& a, const Placed& b) {
    return a.frac != b.frac ? a.frac < b.frac : a.order < b.order;
  });
  std::vector<std::string> out;
  out.reserve(hay.size() + placed.size());
  size_t p = 0;
  for (size_t i = 0; i <= hay.size(); ++i) {
    while (p < placed.size() && static_cast<size_t>(std::llround(
                                    placed[p].frac * static_cast<double>(hay.size()))) <= i) {
      out.push_back(Cat({" ", placed[p].text}));
      ++p;
    }
    if (i < hay.size()) out.push_back(hay[i]);
  }
  return out;
}

// "intro\n" + pieces (first one without its leading space) + "\n" + question + " " + prefix.
std::string Assemble(std::string_view intro, const std::vector<std::string>& pieces,
                     std::string_view question, std::string_view prefix) {
  std::string out(intro);
  out += '\n';
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string_view s = pieces[i];
    if (i == 0 && !s.empty() && s[0] == ' ') s.remove_prefix(1);
    out += s;
  }
  out += '\n';
  out += question;
  out += ' ';
  out += prefix;
  return out;
}

}  // namespace

// mt19937_64 for the stream; bounded integers, reals and shuffles are written out here because
// the std:: distributions differ between standard libraries.
class TaskGenerator::Rng {
 public:
  explicit Rng(uint64_t seed) : gen_(seed) {}
  uint64_t Next() { return gen_(); }
  size_t Below(size_t n) { return static_cast<size_t>(Next() % n); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  std::string Number(int digits) {
    uint64_t lo = 1;
    for (int i = 1; i < digits; ++i) lo *= 10;
    return std::to_string(lo + Next() % (9 * lo));
  }
  template <typename T>
  void Shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[Below(i)]);
  }

 private:
  std::mt19937_64 gen_;
};

const std::vector<std::string>& TaskNames() {
  static const std::vector<std::string> names = {"niah_single",
                                                 "niah_single_text",
                                                 "niah_multikey",
                                                 "niah_multivalue",
                                                 "niah_multiquery",
                                                 "vt",
                                                 "cwe",
                                                 "fwe",
                                                 "passkey"};
  return names;
}

Status ValidateTask(std::string_view task) {
  const auto& names = TaskNames();
  if (std::find(names.begin(), names.end(), task) != names.end()) return Status::Ok();
  std::string valid;
  for (const auto& n : names) valid += (valid.empty() ? "" : ", ") + n;
  return InvalidArgument("unknown task '%.*s'; valid tasks: %s", static_cast<int>(task.size()),
                         task.data(), valid.c_str());
}

size_t MaxNewTokens(std::string_view task) {
  if (task == "niah_multivalue" || task == "niah_multiquery") return 64;
  if (task == "vt") return 48;
  if (task == "cwe") return 96;
  if (task == "fwe") return 32;
  if (task == "passkey") return 16;
  return 24;
}

HaystackText HaystackFromLines(const std::vector<std::string>& lines) {
  HaystackText text;
  std::set<std::string> words;
  for (const auto& raw : lines) {
    size_t b = raw.find_first_not_of(" \t\r");
    size_t e = raw.find_last_not_of(" \t\r");
    if (b == std::string::npos) continue;
    std::string line = raw.substr(b, e - b + 1);
    std::string w;
    for (size_t i = 0; i <= line.size(); ++i) {
      const unsigned char c = i < line.size() ? static_cast<unsigned char>(line[i]) : ' ';
      if (std::isalpha(c) && c < 128) {
        w += static_cast<char>(std::tolower(c));
      } else {
        if (w.size() >= 3 && w.size() <= 8) words.insert(w);
        w.clear();
      }
    }
    text.sentences.push_back(std::move(line));
  }
  text.words.assign(words.begin(), words.end());
  return text;
}

StatusOr<HaystackText> LoadHaystackText(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return NotFound(
        "eval haystack text '%s' not found: pass --haystack FILE or set KVSTAR_EVAL_TEXT (the "
        "text is src/eval/data/kjv_nt.txt in the source tree; scripts/make_haystack.sh --eval "
        "rewrites it from the bible-kjv-text package)",
        path.c_str());
  }
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(std::move(line));
  HaystackText text = HaystackFromLines(lines);
  if (text.sentences.size() < 100 || text.words.size() < 2000) {
    return InvalidArgument(
        "eval haystack text '%s' is too small (%zu sentences, %zu distinct words; need at least "
        "100 and 2000)",
        path.c_str(), text.sentences.size(), text.words.size());
  }
  return text;
}

std::string DefaultHaystackPath() {
  if (const char* env = std::getenv("KVSTAR_EVAL_TEXT"); env != nullptr && *env != '\0') {
    return env;
  }
  return Cat({KVSTAR_EVAL_DATA_DIR, "/kjv_nt.txt"});
}

TaskGenerator::TaskGenerator(const HaystackText* text, CountTokensFn count)
    : text_(text), count_(std::move(count)) {
  KVSTAR_CHECK(text_ != nullptr && !text_->sentences.empty() && text_->words.size() >= 2000,
               "haystack text needs sentences and >= 2000 words, got %zu words",
               text_ ? text_->words.size() : size_t{0});
}

size_t TaskGenerator::Count(const std::string& piece) {
  auto it = cache_.find(piece);
  if (it != cache_.end()) return it->second;
  const size_t n = count_(piece);
  if (cache_.size() < 100000) cache_.emplace(piece, n);
  return n;
}

std::vector<std::string> TaskGenerator::Noise(size_t budget) {
  std::vector<std::string> out;
  size_t used = 0;
  for (size_t i = 0;; ++i) {
    std::string s = Cat({" ", kNoise[i % std::size(kNoise)]});
    const size_t c = Count(s);
    if (used + c > budget) return out;
    used += c;
    out.push_back(std::move(s));
  }
}

std::vector<std::string> TaskGenerator::Text(Rng& rng, size_t budget) {
  std::vector<std::string> out;
  size_t used = 0;
  const auto& sentences = text_->sentences;
  for (size_t i = rng.Below(sentences.size());; ++i) {
    std::string s = Cat({" ", sentences[i % sentences.size()]});
    const size_t c = Count(s);
    if (used + c > budget) return out;
    used += c;
    out.push_back(std::move(s));
  }
}

std::string TaskGenerator::Key(Rng& rng) {
  const auto& w = text_->words;
  const std::string& a = w[rng.Below(w.size())];
  return Cat({a, "-", w[rng.Below(w.size())]});
}

StatusOr<Sample> TaskGenerator::Generate(std::string_view task, size_t target_length, uint64_t seed,
                                         size_t index, size_t num_samples) {
  KVSTAR_RETURN_IF_ERROR(ValidateTask(task));
  if (num_samples == 0 || index >= num_samples) {
    return InvalidArgument("sample index %zu out of range for %zu samples", index, num_samples);
  }
  const size_t max_new = MaxNewTokens(task);
  if (target_length < max_new + 128) {
    return InvalidArgument("length %zu is too short for task %.*s (need at least %zu tokens)",
                           target_length, static_cast<int>(task.size()), task.data(),
                           max_new + 128);
  }
  Sample s;
  s.task = std::string(task);
  s.target_length = target_length;
  s.max_new_tokens = max_new;
  s.id = Cat({s.task, "/", std::to_string(target_length), "/", std::to_string(index)});
  s.depth =
      num_samples > 1 ? static_cast<double>(index) / static_cast<double>(num_samples - 1) : 0.5;
  const uint64_t sample_seed =
      SplitMix64(SplitMix64(SplitMix64(seed) ^ Fnv1a(task)) ^ (target_length * 1000003ULL + index));
  // The prompt may use everything but the answer budget. Pieces are counted one by one; the sum
  // can differ slightly from the count of the joined text, so the budget shrinks until the whole
  // prompt fits, replaying the same random stream each time.
  const size_t prompt_budget = target_length - max_new;
  size_t budget = prompt_budget;
  for (int attempt = 0; attempt < 6; ++attempt) {
    Rng rng(sample_seed);
    KVSTAR_ASSIGN_OR_RETURN(Built b, Build(task, rng, budget, s.depth));
    const size_t n = count_(b.prompt);
    if (n <= prompt_budget) {
      s.prompt = std::move(b.prompt);
      s.answers = std::move(b.answers);
      s.prompt_tokens = n;
      return s;
    }
    const size_t over = n - prompt_budget + 4;
    if (over >= budget) break;
    budget -= over;
  }
  return Internal("could not fit %s into %zu tokens", s.id.c_str(), prompt_budget);
}

StatusOr<TaskGenerator::Built> TaskGenerator::Build(std::string_view task, Rng& rng, size_t budget,
                                                    double depth) {
  if (task == "passkey") return Passkey(rng, budget, depth);
  if (task == "vt") return VariableTracking(rng, budget, depth);
  if (task == "cwe") return CommonWords(rng, budget);
  if (task == "fwe") return FrequentWords(rng, budget);
  return Niah(task, rng, budget, depth);
}

StatusOr<TaskGenerator::Built> TaskGenerator::Niah(std::string_view task, Rng& rng, size_t budget,
                                                   double depth) {
  const bool single = task == "niah_single" || task == "niah_single_text";
  const size_t count = single ? 1 : kNeedles;
  std::vector<std::string> keys, values;
  const std::string shared_key = Key(rng);
  for (size_t i = 0; i < count; ++i) {
    keys.push_back(task == "niah_multivalue" ? shared_key : (i == 0 ? shared_key : Key(rng)));
    values.push_back(rng.Number(7));
  }
  // query[0] is the needle placed at `depth`; multiquery asks for every key in query order.
  std::vector<size_t> query(count);
  for (size_t i = 0; i < count; ++i) query[i] = i;
  if (task == "niah_multikey") {
    query = {rng.Below(count)};
  } else if (task == "niah_multiquery") {
    rng.Shuffle(query);
  }
  std::vector<Placed> placed;
  for (size_t i = 0; i < count; ++i) {
    const double frac = i == query[0] ? depth : rng.Unit();
    placed.push_back(
        {frac, i, Cat({"A special magic number for ", keys[i], " is: ", values[i], "."})});
  }
  Built b;
  std::string key_text, question, prefix;
  if (task == "niah_multivalue") {
    key_text = shared_key;
    question = Replace(kNiahQuestionAll, "key", key_text);
    prefix = Replace(kNiahPrefixAll, "key", key_text);
    std::vector<Placed> order = placed;  // answers in reading order
    std::stable_sort(order.begin(), order.end(), [](const Placed& a, const Placed& c) {
      return a.frac != c.frac ? a.frac < c.frac : a.order < c.order;
    });
    for (const auto& p : order) b.answers.push_back(values[p.order]);
  } else if (task == "niah_multiquery") {
    for (size_t i = 0; i < count; ++i) {
      if (i > 0) key_text += i + 1 == count ? " and " : ", ";
      key_text += keys[query[i]];
      b.answers.push_back(values[query[i]]);
    }
    question = Replace(kNiahQuestionAll, "key", key_text);
    prefix = Replace(kNiahPrefixAll, "key", key_text);
  } else {
    key_text = keys[query[0]];
    question = Replace(kNiahQuestionOne, "key", key_text);
    prefix = Replace(kNiahPrefixOne, "key", key_text);
    b.answers.push_back(values[query[0]]);
  }
  size_t fixed =
      Count(Cat({kNiahIntro, "\n"})) + Count(Cat({"\n", question})) + Count(Cat({" ", prefix})) + 2;
  for (const auto& p : placed) fixed += Count(Cat({" ", p.text}));
  if (fixed >= budget)
    return InvalidArgument("length too short for %.*s", static_cast<int>(task.size()), task.data());
  const bool noise = task == "niah_single";
  std::vector<std::string> hay = noise ? Noise(budget - fixed) : Text(rng, budget - fixed);
  b.prompt = Assemble(kNiahIntro, Insert(hay, std::move(placed)), question, prefix);
  return b;
}

StatusOr<TaskGenerator::Built> TaskGenerator::Passkey(Rng& rng, size_t budget, double depth) {
  const std::string value = rng.Number(5);
  std::string needle = Replace("Important: the pass key is {v}. Do not forget {v}.", "v", value);
  const size_t fixed = Count(Cat({kPasskeyIntro, "\n"})) + Count(Cat({"\n", kPasskeyQuestion})) +
                       Count(Cat({" ", kPasskeyPrefix})) + Count(Cat({" ", needle})) + 2;
  if (fixed >= budget) return InvalidArgument("length too short for passkey");
  std::vector<Placed> placed = {{depth, 0, std::move(needle)}};
  Built b;
  b.prompt = Assemble(kPasskeyIntro, Insert(Noise(budget - fixed), std::move(placed)),
                      kPasskeyQuestion, kPasskeyPrefix);
  b.answers = {value};
  return b;
}

StatusOr<TaskGenerator::Built> TaskGenerator::VariableTracking(Rng& rng, size_t budget,
                                                               double depth) {
  std::set<std::string> used;
  std::vector<std::vector<std::string>> names(kVtChains);
  std::vector<std::string> values;
  std::vector<Placed> placed;
  size_t order = 0;
  for (size_t c = 0; c < kVtChains; ++c) {
    while (names[c].size() < kVtHops + 1) {
      std::string n;
      for (int i = 0; i < 5; ++i) n += static_cast<char>('A' + rng.Below(26));
      if (used.insert(n).second) names[c].push_back(n);
    }
    std::string value = rng.Number(5);
    while (std::find(values.begin(), values.end(), value) != values.end()) value = rng.Number(5);
    values.push_back(value);
    // The queried chain starts at depth/2 so that its later links still fit after it.
    const double start = c == 0 ? depth * 0.5 : rng.Unit() * 0.5;
    std::vector<double> fracs = {start};
    for (size_t h = 0; h < kVtHops; ++h) fracs.push_back(start + rng.Unit() * (1.0 - start));
    std::sort(fracs.begin() + 1, fracs.end());
    placed.push_back({fracs[0], order++, Cat({"VAR ", names[c][0], " = ", value, "."})});
    for (size_t h = 1; h <= kVtHops; ++h) {
      placed.push_back(
          {fracs[h], order++, Cat({"VAR ", names[c][h], " = VAR ", names[c][h - 1], "."})});
    }
  }
  const std::string question = Replace(kVtQuestion, "value", values[0]);
  const std::string prefix =
      Replace(Replace(kVtPrefix, "n", std::to_string(kVtHops + 1)), "value", values[0]);
  size_t fixed =
      Count(Cat({kVtIntro, "\n"})) + Count(Cat({"\n", question})) + Count(Cat({" ", prefix})) + 2;
  for (const auto& p : placed) fixed += Count(Cat({" ", p.text}));
  if (fixed >= budget) return InvalidArgument("length too short for vt");
  Built b;
  b.prompt = Assemble(kVtIntro, Insert(Noise(budget - fixed), std::move(placed)), question, prefix);
  b.answers = names[0];
  return b;
}

StatusOr<TaskGenerator::Built> TaskGenerator::CommonWords(Rng& rng, size_t budget) {
  const size_t fixed = Count(std::string(kCweIntro)) + Count(Cat({"\n", kCweQuestion})) +
                       Count(Cat({" ", kCwePrefix})) + 2;
  if (fixed + 64 >= budget) return InvalidArgument("length too short for cwe");
  const size_t body_budget = budget - fixed;
  const size_t line_cost = std::max<size_t>(1, Count("\n100. shepherd"));
  const size_t lines = std::max<size_t>(40, body_budget / line_cost);
  const size_t freq_common = std::clamp<size_t>(lines / (kCweCommon * 3), 3, 30);
  const size_t freq_rare = freq_common < 6 ? 1 : (freq_common >= 12 ? 3 : 2);
  // Distinct words: a partial Fisher-Yates over the word list.
  std::vector<std::string> pool = text_->words;
  const size_t take = std::min<size_t>(pool.size(), 4000);
  for (size_t i = 0; i < take; ++i) std::swap(pool[i], pool[i + rng.Below(pool.size() - i)]);
  std::vector<std::string> items;
  size_t cost = 0;
  auto line = [](size_t n, const std::string& w) {
    return Cat({"\n", std::to_string(n), ". ", w});
  };
  for (size_t i = 0; i < kCweCommon; ++i) {
    for (size_t k = 0; k < freq_common; ++k) {
      items.push_back(pool[i]);
      cost += count_(line(items.size(), pool[i]));  // numbered lines: not worth caching
    }
  }
  for (size_t r = kCweCommon; r < take; ++r) {
    size_t add = 0;
    for (size_t k = 0; k < freq_rare; ++k) add += count_(line(items.size() + k + 1, pool[r]));
    if (cost + add > body_budget) break;
    for (size_t k = 0; k < freq_rare; ++k) items.push_back(pool[r]);
    cost += add;
  }
  rng.Shuffle(items);
  Built b;
  b.prompt = std::string(kCweIntro);
  for (size_t i = 0; i < items.size(); ++i) b.prompt += line(i + 1, items[i]);
  b.prompt += Cat({"\n", kCweQuestion, " ", kCwePrefix});
  b.answers.assign(pool.begin(), pool.begin() + kCweCommon);
  return b;
}

StatusOr<TaskGenerator::Built> TaskGenerator::FrequentWords(Rng& rng, size_t budget) {
  const size_t fixed = Count(Cat({kFweIntro, "\n"})) + Count(Cat({"\n", kFweQuestion})) +
                       Count(Cat({" ", kFwePrefix})) + 2;
  if (fixed + 32 >= budget) return InvalidArgument("length too short for fwe");
  std::set<std::string> seen;
  std::vector<std::string> vocab;  // vocab[r] has Zipf rank r
  while (vocab.size() < kFweVocab) {
    std::string w;
    const size_t len = 3 + rng.Below(3);
    for (size_t i = 0; i < len; ++i) w += static_cast<char>('a' + rng.Below(26));
    if (seen.insert(w).second) vocab.push_back(w);
  }
  std::vector<double> cdf(kFweVocab);
  double total = 0;
  for (size_t r = 0; r < kFweVocab; ++r) {
    total += 1.0 / std::pow(static_cast<double>(r + 1), kFweAlpha);
    cdf[r] = total;
  }
  std::vector<size_t> counts(kFweVocab, 0);
  std::vector<std::string> pieces;
  size_t used = 0;
  while (true) {
    const double u = rng.Unit() * total;
    const size_t r = std::min<size_t>(
        kFweVocab - 1,
        static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin()));
    std::string piece = Cat({" ", vocab[r], rng.Unit() < 0.1 ? " ...." : ""});
    const size_t c = Count(piece);
    if (used + c > budget - fixed) break;
    used += c;
    ++counts[r];
    pieces.push_back(std::move(piece));
  }
  std::vector<size_t> ranks(kFweVocab);
  for (size_t r = 0; r < kFweVocab; ++r) ranks[r] = r;
  // Most frequent first; equal counts keep Zipf rank order.
  std::stable_sort(ranks.begin(), ranks.end(),
                   [&](size_t a, size_t c) { return counts[a] > counts[c]; });
  Built b;
  b.prompt = Assemble(kFweIntro, pieces, kFweQuestion, kFwePrefix);
  for (size_t i = 0; i < 3; ++i) b.answers.push_back(vocab[ranks[i]]);
  return b;
}

}  // namespace kvstar::eval
