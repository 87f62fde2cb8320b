// A program that embeds kvstar through its public API (include/kvstar/kvstar.h) only: it opens a
// model directory and answers the prompt in a file, streaming the text.
//
//   kvstar_complete MODEL_DIR PROMPT_FILE [MODE [KVSTAR_SETTINGS_JSON_FILE]]
//
// MODE: dense (default) or kvstar on the CPU. Prints the answer, then one line of counts on stderr.
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "kvstar/kvstar.h"

namespace {

bool ReadFile(const char* path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::fprintf(stderr, "usage: %s MODEL_DIR PROMPT_FILE [MODE [KVSTAR_SETTINGS_JSON_FILE]]\n",
                 argv[0]);
    return 2;
  }
  kvstar::LlmOptions options;
  if (argc > 3) options.mode = argv[3];
  if (argc > 4 && !ReadFile(argv[4], &options.kvstar_settings)) {
    std::fprintf(stderr, "error: cannot read %s\n", argv[4]);
    return 1;
  }
  kvstar::TextRequest request;
  if (!ReadFile(argv[2], &request.prompt)) {
    std::fprintf(stderr, "error: cannot read %s\n", argv[2]);
    return 1;
  }
  auto llm = kvstar::Llm::Open(argv[1], options);
  if (!llm.ok()) {
    std::fprintf(stderr, "error: %s\n", llm.status().ToString().c_str());
    return 1;
  }
  request.max_new_tokens = 32;
  request.on_text = [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  auto result = (*llm)->Complete(request);
  if (!result.ok()) {
    std::fprintf(stderr, "error: %s\n", result.status().ToString().c_str());
    return 1;
  }
  std::printf("\n");
  std::fprintf(stderr, "[%s on %s: %zu prompt tokens, %zu generated, %.1f tok/s, %s]\n",
               options.mode.c_str(), (*llm)->device_name().c_str(), result->prompt_tokens,
               result->tokens.size(), result->decode_tokens_per_second,
               result->finish_reason.c_str());
  return 0;
}
