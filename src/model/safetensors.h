// Safetensors reading (mmap, zero copy) and writing.
//
// File layout: 8-byte little-endian header length N, N bytes of JSON header
//   {"name": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data region; offsets are relative to its start. Every header is validated before
// any tensor is handed out: a malformed file gives an error Status naming the file, never a
// crash or an out-of-bounds read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/file_util.h"
#include "base/half.h"
#include "base/status.h"
#include "base/tensor_view.h"

namespace kvstar {

// Headers above this are rejected as "oversized header" (real ones are well below 10 MB).
inline constexpr size_t kMaxSafetensorsHeaderBytes = size_t{100} << 20;

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;      // as in the file: "BF16", "F32", "I64", ...
  std::optional<DType> dtype;  // empty for dtypes the engine cannot compute with (F64, I64, F8)
  std::vector<size_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates a file.
  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  // Validates an in-memory image; `bytes` must outlive the result. `name` is used in errors.
  static StatusOr<std::unique_ptr<SafetensorsFile>> FromMemory(std::string name,
                                                               std::span<const uint8_t> bytes);

  const std::string& path() const { return name_; }
  // nullptr when absent.
  const SafetensorsTensor* Find(std::string_view tensor_name) const;
  // The tensor as a 2-D view: rank 1 -> 1 x N, rank 2 -> rows x cols, rank > 2 -> the leading
  // dimensions flattened into rows. Errors: missing tensor, shape differing from expected_shape
  // (when not empty), a dtype other than F32/BF16/F16.
  StatusOr<TensorView> Get(std::string_view tensor_name,
                           std::span<const size_t> expected_shape = {}) const;
  const std::map<std::string, SafetensorsTensor, std::less<>>& tensors() const { return tensors_; }
  size_t file_bytes() const { return size_; }

 private:
  SafetensorsFile() = default;
  Status Parse();

  std::string name_;
  MappedFile mapped_;  // empty for FromMemory
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, SafetensorsTensor, std::less<>> tensors_;
};

// "[64, 32]"
std::string ShapeToString(std::span<const size_t> shape);
// Checks a tensor found in `file` against an expected shape and returns the 2-D view.
StatusOr<TensorView> TensorToView(const SafetensorsTensor& t, const std::string& file,
                                  std::span<const size_t> expected_shape);

// The tensors of a Hugging Face model directory: model.safetensors, or the shards named by
// model.safetensors.index.json ("weight_map": tensor name -> shard file in the same directory).
class TensorSet {
 public:
  static StatusOr<std::unique_ptr<TensorSet>> Open(const std::string& model_dir);

  const SafetensorsTensor* Find(std::string_view name) const;
  bool Contains(std::string_view name) const { return Find(name) != nullptr; }
  // Error messages name the tensor, its file and both shapes:
  // "model.layers.3.mlp.up_proj.weight has shape [64, 32], expected [128, 32] (in
  // /m/x.safetensors)"
  StatusOr<TensorView> Get(std::string_view name, std::span<const size_t> expected_shape) const;
  StatusOr<TensorView> Get(std::string_view name, std::initializer_list<size_t> expected) const {
    return Get(name, std::span<const size_t>(expected.begin(), expected.size()));
  }
  // The file holding `name` ("" when absent).
  std::string FileOf(std::string_view name) const;
  std::vector<std::string> Names() const;
  size_t num_files() const { return files_.size(); }
  size_t total_file_bytes() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  // name -> (file index, tensor)
  std::map<std::string, std::pair<size_t, const SafetensorsTensor*>, std::less<>> index_;
};

// A tensor to write: raw little-endian bytes of `dtype_name` elements.
struct SafetensorsWriteTensor {
  std::string name;
  std::string dtype_name;  // "F32", "BF16", "F16", ...
  std::vector<size_t> shape;
  std::span<const uint8_t> data;
};
// Writes a valid safetensors file (header padded to 8 bytes, tensors in the given order).
Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace kvstar
