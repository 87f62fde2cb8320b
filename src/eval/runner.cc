#include "eval/runner.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>

#include "base/timer.h"
#include "eval/scoring.h"

namespace kvstar::eval {
namespace {

std::vector<std::string_view> SplitCsv(std::string_view csv) {
  std::vector<std::string_view> out;
  while (!csv.empty()) {
    const size_t comma = csv.find(',');
    std::string_view item = csv.substr(0, comma);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) {
      item.remove_prefix(1);
    }
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) {
      item.remove_suffix(1);
    }
    if (!item.empty()) out.push_back(item);
    if (comma == std::string_view::npos) break;
    csv.remove_prefix(comma + 1);
  }
  return out;
}

double Ratio(double tokens, double seconds) { return seconds > 0 ? tokens / seconds : 0.0; }

std::string Format(const char* fmt, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, v);
  return buf;
}

// nlohmann::json refuses invalid UTF-8 on dump; a byte-level model can emit a partial character.
std::string ValidUtf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k) {
      ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    }
  }
  return out;
}

std::string Pad(std::string s, size_t width, bool left_align = false) {
  if (s.size() >= width) return s;
  return left_align ? s + std::string(width - s.size(), ' ')
                    : std::string(width - s.size(), ' ') + s;
}

}  // namespace

const CellResult* EvalReport::Find(std::string_view task, size_t length) const {
  for (const auto& c : cells) {
    if (c.task == task && c.length == length) return &c;
  }
  return nullptr;
}

StatusOr<std::vector<std::string>> ParseTaskList(std::string_view csv) {
  std::vector<std::string> tasks;
  for (std::string_view item : SplitCsv(csv)) {
    if (item == "all") {
      for (const auto& t : TaskNames()) tasks.push_back(t);
      continue;
    }
    KVSTAR_RETURN_IF_ERROR(ValidateTask(item));
    tasks.emplace_back(item);
  }
  if (tasks.empty()) return InvalidArgument("--tasks is empty; give task names or 'all'");
  std::vector<std::string> unique;
  for (auto& t : tasks) {
    if (std::find(unique.begin(), unique.end(), t) == unique.end()) unique.push_back(t);
  }
  return unique;
}

StatusOr<std::vector<size_t>> ParseLengthList(std::string_view csv) {
  std::vector<size_t> lengths;
  for (std::string_view item : SplitCsv(csv)) {
    size_t mult = 1;
    std::string digits(item);
    if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
      mult = 1024;
      digits.pop_back();
    }
    char* end = nullptr;
    const unsigned long long v = std::strtoull(digits.c_str(), &end, 10);
    if (digits.empty() || end != digits.c_str() + digits.size() || v == 0) {
      return InvalidArgument(
          "bad length '%.*s' in --lengths: expected positive integers such "
          "as 2048,4096 or 8k",
          static_cast<int>(item.size()), item.data());
    }
    lengths.push_back(static_cast<size_t>(v) * mult);
  }
  if (lengths.empty()) return InvalidArgument("--lengths is empty");
  return lengths;
}

StatusOr<EvalReport> RunEval(const EvalOptions& opts, const CountTokensFn& count,
                             const GenerateFn& generate, const ProgressFn& progress) {
  std::vector<std::string> tasks = opts.tasks.empty() ? TaskNames() : opts.tasks;
  for (const auto& t : tasks) KVSTAR_RETURN_IF_ERROR(ValidateTask(t));
  if (opts.lengths.empty()) return InvalidArgument("no lengths to evaluate");
  if (opts.samples == 0) return InvalidArgument("--samples must be at least 1");
  if (!count || !generate) return InvalidArgument("RunEval needs a token counter and a generator");
  const std::string path = opts.haystack_path.empty() ? DefaultHaystackPath() : opts.haystack_path;
  KVSTAR_ASSIGN_OR_RETURN(HaystackText text, LoadHaystackText(path));
  TaskGenerator gen(&text, count);

  EvalReport report;
  report.mode = opts.mode;
  report.settings = opts.settings;
  report.seed = opts.seed;
  report.tasks = tasks;
  report.lengths = opts.lengths;
  Stopwatch watch;
  const size_t total = tasks.size() * opts.lengths.size() * opts.samples;
  size_t done = 0;
  for (const auto& task : tasks) {
    for (size_t length : opts.lengths) {
      CellResult cell;
      cell.task = task;
      cell.length = length;
      double prefill_tokens = 0, prefill_s = 0, decode_tokens = 0, decode_s = 0, sum = 0;
      for (size_t i = 0; i < opts.samples; ++i) {
        auto sample = gen.Generate(task, length, opts.seed, i, opts.samples);
        if (!sample.ok()) return sample.status().WithContext(task + "/" + std::to_string(length));
        auto result = generate(sample->prompt, sample->max_new_tokens);
        if (!result.ok()) return result.status().WithContext("eval sample " + sample->id);
        SampleRecord rec;
        rec.id = sample->id;
        rec.task = task;
        rec.length = length;
        rec.depth = sample->depth;
        rec.expected = sample->answers;
        rec.output = result->text;
        rec.score = ScoreOutput(task, result->text, sample->answers);
        rec.prompt_tokens = result->prompt_tokens ? result->prompt_tokens : sample->prompt_tokens;
        rec.generated_tokens = result->generated_tokens;
        rec.prefill_seconds = result->prefill_seconds;
        rec.decode_seconds = result->decode_seconds;
        sum += rec.score;
        prefill_tokens += static_cast<double>(rec.prompt_tokens);
        prefill_s += rec.prefill_seconds;
        decode_tokens += static_cast<double>(rec.generated_tokens);
        decode_s += rec.decode_seconds;
        cell.records.push_back(std::move(rec));
        ++done;
        if (progress) progress(EvalProgress{done, total, &cell.records.back()});
      }
      cell.samples = opts.samples;
      cell.accuracy = sum / static_cast<double>(opts.samples);
      cell.prefill_tokens_per_s = Ratio(prefill_tokens, prefill_s);
      cell.decode_tokens_per_s = Ratio(decode_tokens, decode_s);
      report.cells.push_back(std::move(cell));
    }
  }
  report.seconds = watch.Seconds();
  return report;
}

std::string FormatTable(const EvalReport& report) {
  size_t name_w = 8;
  for (const auto& t : report.tasks) name_w = std::max(name_w, t.size() + 2);
  const size_t col_w = 16;
  std::string out = "accuracy (%), mode " + report.mode + ", " +
                    std::to_string(report.cells.empty() ? 0 : report.cells[0].samples) +
                    " samples per cell\n";
  auto header = [&] {
    std::string h = Pad("task", name_w, true);
    for (size_t len : report.lengths) h += Pad(std::to_string(len), col_w);
    return h + "\n";
  };
  out += header();
  std::vector<double> col_sum(report.lengths.size(), 0.0);
  for (const auto& t : report.tasks) {
    std::string row = Pad(t, name_w, true);
    for (size_t j = 0; j < report.lengths.size(); ++j) {
      const CellResult* c = report.Find(t, report.lengths[j]);
      const double acc = c ? c->accuracy : 0.0;
      col_sum[j] += acc;
      row += Pad(c ? Format("%.1f", 100.0 * acc) : "-", col_w);
    }
    out += row + "\n";
  }
  if (report.tasks.size() > 1) {
    std::string row = Pad("mean", name_w, true);
    for (double s : col_sum) {
      row += Pad(Format("%.1f", 100.0 * s / static_cast<double>(report.tasks.size())), col_w);
    }
    out += row + "\n";
  }
  out += "\ntokens/s (prefill / decode)\n" + header();
  for (const auto& t : report.tasks) {
    std::string row = Pad(t, name_w, true);
    for (size_t len : report.lengths) {
      const CellResult* c = report.Find(t, len);
      row += Pad(c ? Format("%.0f", c->prefill_tokens_per_s) + " / " +
                         Format("%.1f", c->decode_tokens_per_s)
                   : "-",
                 col_w);
    }
    out += row + "\n";
  }
  return out;
}

nlohmann::json ToJson(const EvalReport& report) {
  nlohmann::json j;
  j["mode"] = report.mode;
  j["seed"] = report.seed;
  j["settings"] = report.settings;
  j["tasks"] = report.tasks;
  j["lengths"] = report.lengths;
  j["seconds"] = report.seconds;
  nlohmann::json results = nlohmann::json::array();
  nlohmann::json samples = nlohmann::json::array();
  for (const auto& c : report.cells) {
    results.push_back({{"task", c.task},
                       {"length", c.length},
                       {"accuracy", c.accuracy},
                       {"samples", c.samples},
                       {"mode", report.mode},
                       {"settings", report.settings},
                       {"prefill_tokens_per_s", c.prefill_tokens_per_s},
                       {"decode_tokens_per_s", c.decode_tokens_per_s}});
    for (const auto& r : c.records) {
      std::vector<std::string> expected;
      for (const auto& e : r.expected) expected.push_back(ValidUtf8(e));
      samples.push_back({{"id", r.id},
                         {"task", r.task},
                         {"length", r.length},
                         {"depth", r.depth},
                         {"expected", expected},
                         {"output", ValidUtf8(r.output)},
                         {"score", r.score},
                         {"prompt_tokens", r.prompt_tokens},
                         {"generated_tokens", r.generated_tokens},
                         {"prefill_seconds", r.prefill_seconds},
                         {"decode_seconds", r.decode_seconds}});
    }
  }
  j["results"] = std::move(results);
  j["samples"] = std::move(samples);
  return j;
}

}  // namespace kvstar::eval
