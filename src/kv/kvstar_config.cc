#include "kv/kvstar_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

namespace kvstar {

Status KvstarConfig::Validate(size_t block_tokens) const {
  if (!(sparse_ratio > 0.0 && sparse_ratio <= 1.0)) {
    return InvalidArgument("sparse_ratio must be in (0, 1], got %g", sparse_ratio);
  }
  if (retrieval_stride == 0 || retrieval_stride > 4096) {
    return InvalidArgument("retrieval_stride must be in [1, 4096], got %zu", retrieval_stride);
  }
  if (!(blk_repre_dim_prune_ratio > 0.0 && blk_repre_dim_prune_ratio <= 1.0)) {
    return InvalidArgument("blk_repre_dim_prune_ratio must be in (0, 1], got %g",
                           blk_repre_dim_prune_ratio);
  }
  if (blk_repre_inner_token_merge == 0 || block_tokens % blk_repre_inner_token_merge != 0) {
    return InvalidArgument("blk_repre_inner_token_merge must divide block_tokens (%zu), got %zu",
                           block_tokens, blk_repre_inner_token_merge);
  }
  if (init_window_sz > 1024 || local_window_sz > 1024) {
    return InvalidArgument("window sizes are in blocks and must be <= 1024 (init %zu, local %zu)",
                           init_window_sz, local_window_sz);
  }
  if (first_selection != "representations" && first_selection != "exact") {
    return InvalidArgument("first_selection must be 'representations' or 'exact', got '%s'",
                           first_selection.c_str());
  }
  if (softmax_scope != "candidates" && softmax_scope != "all") {
    return InvalidArgument("softmax_scope must be 'candidates' or 'all', got '%s'",
                           softmax_scope.c_str());
  }
  if (vote != "sum" && vote != "max") {
    return InvalidArgument("vote must be 'sum' or 'max', got '%s'", vote.c_str());
  }
  if (prompt_query_window > 4096) {
    return InvalidArgument("prompt_query_window must be <= 4096, got %zu", prompt_query_window);
  }
  if (sync_steps > 1000000) {
    return InvalidArgument("sync_steps must be <= 1000000, got %zu", sync_steps);
  }
  if (staging_slots > 4096) {
    return InvalidArgument("staging_slots must be <= 4096, got %zu", staging_slots);
  }
  if (max_loads_per_step > 4096) {
    return InvalidArgument("max_loads_per_step must be <= 4096, got %zu", max_loads_per_step);
  }
  if (deterministic && max_loads_per_step != 0) {
    return InvalidArgument(
        "max_loads_per_step %zu needs the asynchronous schedule: deterministic applies every "
        "selection whole at UCM's step",
        max_loads_per_step);
  }
  return Status::Ok();
}

std::string KvstarConfig::ToJson() const {
  nlohmann::json j = {{"init_window_sz", init_window_sz},
                      {"local_window_sz", local_window_sz},
                      {"sparse_ratio", sparse_ratio},
                      {"retrieval_stride", retrieval_stride},
                      {"blk_repre_dim_prune_ratio", blk_repre_dim_prune_ratio},
                      {"blk_repre_inner_token_merge", blk_repre_inner_token_merge},
                      {"select_per_kv_head", select_per_kv_head},
                      {"deterministic", deterministic},
                      {"staging_slots", staging_slots},
                      {"max_loads_per_step", max_loads_per_step},
                      {"prompt_query_window", prompt_query_window},
                      {"first_selection", first_selection},
                      {"vote", vote},
                      {"softmax_scope", softmax_scope},
                      {"sync_steps", sync_steps}};
  return j.dump();
}

StatusOr<KvstarConfig> ParseKvstarConfig(std::string_view json, std::string_view source,
                                         KvstarConfig c) {
  const std::string src(source);
  nlohmann::json j = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("%s: not a JSON object of KVstar settings", src.c_str());
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    auto want_size = [&](size_t* out) -> Status {
      if (!v.is_number_integer() || v.get<int64_t>() < 0) {
        return InvalidArgument("%s: %s must be a non-negative integer", src.c_str(), key.c_str());
      }
      *out = v.get<size_t>();
      return Status::Ok();
    };
    auto want_double = [&](double* out) -> Status {
      if (!v.is_number())
        return InvalidArgument("%s: %s must be a number", src.c_str(), key.c_str());
      *out = v.get<double>();
      return Status::Ok();
    };
    auto want_bool = [&](bool* out) -> Status {
      if (!v.is_boolean())
        return InvalidArgument("%s: %s must be true or false", src.c_str(), key.c_str());
      *out = v.get<bool>();
      return Status::Ok();
    };
    Status s;
    if (key == "init_window_sz")
      s = want_size(&c.init_window_sz);
    else if (key == "local_window_sz")
      s = want_size(&c.local_window_sz);
    else if (key == "sparse_ratio")
      s = want_double(&c.sparse_ratio);
    else if (key == "retrieval_stride")
      s = want_size(&c.retrieval_stride);
    else if (key == "blk_repre_dim_prune_ratio")
      s = want_double(&c.blk_repre_dim_prune_ratio);
    else if (key == "blk_repre_inner_token_merge")
      s = want_size(&c.blk_repre_inner_token_merge);
    else if (key == "select_per_kv_head")
      s = want_bool(&c.select_per_kv_head);
    else if (key == "deterministic")
      s = want_bool(&c.deterministic);
    else if (key == "staging_slots")
      s = want_size(&c.staging_slots);
    else if (key == "max_loads_per_step")
      s = want_size(&c.max_loads_per_step);
    else if (key == "prompt_query_window")
      s = want_size(&c.prompt_query_window);
    else if (key == "sync_steps")
      s = want_size(&c.sync_steps);
    else if (key == "first_selection" || key == "vote" || key == "softmax_scope") {
      if (!v.is_string()) {
        return InvalidArgument("%s: %s must be a string", src.c_str(), key.c_str());
      }
      (key == "vote"            ? c.vote
       : key == "softmax_scope" ? c.softmax_scope
                                : c.first_selection) = v.get<std::string>();
    } else if (key == "block_tokens")
      continue;  // engine-wide: taken by the engine options
    else {
      return InvalidArgument(
          "%s: unknown KVstar setting '%s' (known: init_window_sz, local_window_sz, sparse_ratio, "
          "retrieval_stride, blk_repre_dim_prune_ratio, blk_repre_inner_token_merge, "
          "select_per_kv_head, deterministic, staging_slots, max_loads_per_step, "
          "prompt_query_window, first_selection, vote, softmax_scope, sync_steps, "
          "block_tokens)",
          src.c_str(), key.c_str());
    }
    KVSTAR_RETURN_IF_ERROR(s);
  }
  return c;
}

}  // namespace kvstar
