// KVstar retrieval: scores candidate blocks against a group of recent queries and selects the
// top k (DESIGN.md, "The KVstar schedule", step 3).
//
// For every query and query head h (KV head h / group size, its pruned channels): softmax over all
// candidate merged vectors of q.k / sqrt(head_dim); a block's score is the sum of its vectors'
// probabilities over the queries and heads. k = ceil(candidates * sparse_ratio); ties go to the
// lower block index.
//
// Work is cut into fixed segments of candidates; each segment stores per-query partial max/sum
// (a log-sum-exp merge), so the result is bitwise the same however the segments are spread over
// threads.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/async.h"
#include "base/status.h"
#include "base/thread_pool.h"
#include "sparse/block_representations.h"

namespace kvstar::sparse {

struct ScoringOptions {
  // One top-k per KV head (scores summed over that head's query heads) instead of one per layer.
  bool select_per_kv_head = false;
  // false reproduces the reference implementation's softmax of q.k without 1/sqrt(head_dim).
  bool scale_by_inv_sqrt_head_dim = true;
};

struct RetrievalTask {
  RepresentationView reps;           // taken with BlockRepresentations::View()
  std::vector<float> queries;        // [num_queries][q_heads][head_dim], after RoPE
  size_t num_queries = 0;            // x, the queries of one retrieval group
  size_t q_heads = 0;                // a multiple of reps.kv_heads()
  std::vector<uint32_t> candidates;  // block indices (< reps.num_blocks()), windows excluded
  double sparse_ratio = 0.25;        // in [0, 1]
  ScoringOptions options;
};

struct RetrievalResult {
  size_t k = 0;  // per selection (per layer, or per KV head)
  // Selected block indices, ascending, with their scores. With select_per_kv_head: the union of
  // the per-head selections, each with its score summed over the heads that selected it.
  std::vector<uint32_t> blocks;
  std::vector<float> scores;
  // select_per_kv_head only: [kv_heads] ascending block lists and their per-head scores.
  std::vector<std::vector<uint32_t>> head_blocks;
  std::vector<std::vector<float>> head_scores;
  // Score of every candidate in task order: [candidates] per layer, or [candidates][kv_heads]
  // with select_per_kv_head.
  std::vector<float> candidate_scores;
};

// k = ceil(candidates * sparse_ratio), with a 1e-9 relative tolerance so that 10 * 0.3 gives 3.
size_t SelectionSize(size_t candidates, double sparse_ratio);

// Top k of `scores` (ties: lower block index), returned as positions sorted by block index.
std::vector<size_t> TopKPositions(const float* scores, size_t stride,
                                  const std::vector<uint32_t>& blocks, size_t k);

// The result for block scores [candidates][heads] (heads = the KV heads, or 1 for scores
// already summed over them): one top-k of the sums, or with per_kv_head one per head and their
// union; blocks ascending (as TopKPositions orders them), candidate_scores as given.
RetrievalResult SelectionFromScores(std::vector<float> scores, size_t heads,
                                    const std::vector<uint32_t>& candidates, size_t k,
                                    bool per_kv_head);

// Runs a task on the calling thread. InvalidArgument on bad shapes or NaN/Inf inputs.
StatusOr<RetrievalResult> RunRetrieval(const RetrievalTask& task);

namespace internal {
struct RetrievalState;
}

// Handle of a submitted task. Dropping it without waiting is fine: the task finishes (or notices
// a Cancel) and its memory is freed by whichever side lets go last.
class RetrievalHandle {
 public:
  RetrievalHandle() = default;
  bool valid() const { return state_ != nullptr; }
  bool Ready() const;
  // The task's status, or DeadlineExceeded while it is still running. Negative: wait forever.
  Status Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1)) const;
  // Requests cancellation; the task then finishes with Cancelled unless it had already finished.
  void Cancel();
  // The result of a task that finished OK (check Wait() first).
  const RetrievalResult& result() const;

 private:
  friend class Retriever;
  std::shared_ptr<internal::RetrievalState> state_;
};

inline constexpr size_t kSegmentBlocksDefault = 32;

struct RetrieverOptions {
  int num_threads = 0;        // worker threads of an owned pool; 0: hardware threads
  bool pin_to_cores = false;  // pin worker i to core first_core + i
  int first_core = 0;
  // A task is split over at most this many threads (0: all); each part gets >= min_segments
  // segments of kSegmentBlocks candidates. 1: a 250-block task (8 segments) can use 8 threads
  // (measured on 16 cores: 0.67 ms at 8 threads against 1.11 ms with 2 segments per part).
  int max_split = 0;
  size_t min_segments = 1;
  // Candidates per segment (the unit a part claims; results depend on it only through the f32
  // summation order, not on the number of threads). Smaller segments balance the parts of one
  // task better when it is split over many threads; InvalidArgument (through the handle) at 0.
  size_t segment_blocks = kSegmentBlocksDefault;
};

class Retriever {
 public:
  static constexpr size_t kSegmentBlocks = kSegmentBlocksDefault;  // RunRetrieval's segments

  // Owns a dedicated pool.
  explicit Retriever(const RetrieverOptions& options = {});
  // Uses `pool` (not owned; it must outlive every task submitted here).
  Retriever(ThreadPool* pool, const RetrieverOptions& options = {});
  // Tasks still queued finish with Cancelled; running parts stop at their next block.
  ~Retriever();
  Retriever(const Retriever&) = delete;
  Retriever& operator=(const Retriever&) = delete;

  // Returns at once; validation errors are reported through the handle.
  RetrievalHandle Submit(RetrievalTask task);
  // For a caller that would only wait for the result: runs the first part of the task on the
  // calling thread and the other parts on `helpers`' workers (e.g. the compute pool, idle while
  // its caller waits), then returns the handle (Wait() for the parts still running). A task
  // splits into at most helpers->num_workers() + 1 parts (max_split and min_segments apply).
  RetrievalHandle RunWith(RetrievalTask task, ThreadPool* helpers);
  // Threads available to one task.
  int parallelism() const;

 private:
  RetrieverOptions options_;
  std::unique_ptr<ThreadPool> owned_pool_;
  ThreadPool* pool_;
  std::shared_ptr<std::atomic<bool>> shutdown_;
};

}  // namespace kvstar::sparse
