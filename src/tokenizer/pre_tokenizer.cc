#include "tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/unicode.h"

namespace kvstar::tokenizer_internal {

namespace {

struct Segment {
  size_t begin, end;
  bool match;
};

// Matches and the gaps between them, in order. A gap that holds ill-formed UTF-8 (which no
// pattern can match) is cut so that every ill-formed byte is a word of its own.
void ForEachSegment(const Regex& re, std::string_view text,
                    const std::function<void(const Segment&)>& on_segment) {
  auto gap = [&](size_t b, size_t e) {
    size_t run = b;
    size_t i = b;
    const std::string_view head = text.substr(0, e);
    while (i < e) {
      if (static_cast<uint8_t>(text[i]) < 0x80) {
        ++i;
        continue;
      }
      char32_t cp;
      const size_t len = Utf8CharLen(head, i, &cp);
      if (len > 0) {
        i += len;
        continue;
      }
      if (i > run) on_segment({run, i, false});
      on_segment({i, i + 1, false});
      run = ++i;
    }
    if (e > run) on_segment({run, e, false});
  };
  size_t pos = 0;
  re.ForEachMatch(text, [&](Regex::Match m) {
    if (m.begin > pos) gap(pos, m.begin);
    on_segment({m.begin, m.end, true});
    pos = m.end;
  });
  if (text.size() > pos) gap(pos, text.size());
}

}  // namespace

StatusOr<PreTokenizer> PreTokenizer::FromJson(const nlohmann::json& j) {
  PreTokenizer p;
  if (!j.is_null()) KVSTAR_RETURN_IF_ERROR(p.AddStep(j));
  return p;
}

Status PreTokenizer::AddStep(const nlohmann::json& j) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string()) {
    return InvalidArgument("pre_tokenizer entry without a \"type\": %s", j.dump().c_str());
  }
  const std::string type = j["type"].get<std::string>();
  if (type == "Sequence") {
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array()) {
      return InvalidArgument("pre_tokenizer Sequence without a \"pretokenizers\" array");
    }
    for (const auto& sub : j["pretokenizers"]) KVSTAR_RETURN_IF_ERROR(AddStep(sub));
    return Status::Ok();
  }
  Step step;
  if (type == "ByteLevel") {
    step.add_prefix_space = j.value("add_prefix_space", false);
    if (j.value("use_regex", true)) {
      KVSTAR_ASSIGN_OR_RETURN(step.regex, Regex::Compile(kGpt2Pattern, /*literal=*/false));
    }
    has_byte_level_ = true;
    steps_.push_back(std::move(step));
    return Status::Ok();
  }
  if (type == "Split") {
    if (!j.contains("pattern") || !j["pattern"].is_object()) {
      return InvalidArgument("pre_tokenizer Split without a \"pattern\" object");
    }
    const auto& pat = j["pattern"];
    if (pat.contains("Regex") && pat["Regex"].is_string()) {
      KVSTAR_ASSIGN_OR_RETURN(step.regex,
                              Regex::Compile(pat["Regex"].get<std::string>(), /*literal=*/false));
    } else if (pat.contains("String") && pat["String"].is_string()) {
      KVSTAR_ASSIGN_OR_RETURN(step.regex,
                              Regex::Compile(pat["String"].get<std::string>(), /*literal=*/true));
    } else {
      return InvalidArgument(
          "pre_tokenizer Split pattern is neither {\"Regex\": ...} nor "
          "{\"String\": ...}: %s",
          pat.dump().c_str());
    }
    const std::string behavior = j.value("behavior", std::string("Isolated"));
    if (behavior == "Isolated") {
      step.behavior = Behavior::kIsolated;
    } else if (behavior == "Removed") {
      step.behavior = Behavior::kRemoved;
    } else if (behavior == "MergedWithPrevious") {
      step.behavior = Behavior::kMergedWithPrevious;
    } else if (behavior == "MergedWithNext") {
      step.behavior = Behavior::kMergedWithNext;
    } else if (behavior == "Contiguous") {
      step.behavior = Behavior::kContiguous;
    } else {
      return InvalidArgument("pre_tokenizer Split behavior \"%s\" is unknown", behavior.c_str());
    }
    step.invert = j.value("invert", false);
    steps_.push_back(std::move(step));
    return Status::Ok();
  }
  return Unimplemented(
      "pre_tokenizer type \"%s\" is not supported (supported: Sequence, Split, "
      "ByteLevel)",
      type.c_str());
}

void PreTokenizer::Split(std::string_view text,
                         const std::function<void(std::string_view)>& emit) const {
  if (text.empty()) return;
  Run(0, text, emit);
}

void PreTokenizer::Run(size_t step_index, std::string_view text,
                       const std::function<void(std::string_view)>& emit) const {
  if (step_index == steps_.size()) {
    emit(text);
    return;
  }
  const Step& step = steps_[step_index];
  std::string prefixed;
  if (step.add_prefix_space && text[0] != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (step.regex == nullptr) {
    Run(step_index + 1, text, emit);
    return;
  }
  if (step.behavior == Behavior::kIsolated) {
    // The common case streams: no segment list for a long text.
    ForEachSegment(*step.regex, text, [&](const Segment& s) {
      Run(step_index + 1, text.substr(s.begin, s.end - s.begin), emit);
    });
    return;
  }
  std::vector<Segment> segs;
  ForEachSegment(*step.regex, text, [&](const Segment& s) { segs.push_back(s); });
  if (step.invert) {
    for (Segment& s : segs) s.match = !s.match;
  }
  // The behaviors below follow tokenizers' NormalizedString::split.
  std::vector<Segment> words;
  words.reserve(segs.size());
  switch (step.behavior) {
    case Behavior::kIsolated:  // streamed above
      break;
    case Behavior::kRemoved:
      for (const Segment& s : segs) {
        if (!s.match) words.push_back(s);
      }
      break;
    case Behavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const Segment& s : segs) {
        if (s.match && !previous_match && !words.empty()) {
          words.back().end = s.end;
        } else {
          words.push_back(s);
        }
        previous_match = s.match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool previous_match = false;
      for (size_t k = segs.size(); k-- > 0;) {
        const Segment& s = segs[k];
        if (s.match && !previous_match && !words.empty()) {
          words.back().begin = s.begin;
        } else {
          words.push_back(s);
        }
        previous_match = s.match;
      }
      std::reverse(words.begin(), words.end());
      break;
    }
    case Behavior::kContiguous: {
      bool previous_match = false;
      for (size_t k = 0; k < segs.size(); ++k) {
        const Segment& s = segs[k];
        if (k > 0 && s.match == previous_match) {
          words.back().end = s.end;
        } else {
          words.push_back(s);
        }
        previous_match = s.match;
      }
      break;
    }
  }
  for (const Segment& w : words) {
    if (w.end > w.begin) Run(step_index + 1, text.substr(w.begin, w.end - w.begin), emit);
  }
}

}  // namespace kvstar::tokenizer_internal
