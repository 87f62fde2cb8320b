// File helpers with Status errors: whole-file reads and read-only memory maps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"

namespace kvstar {

StatusOr<std::string> ReadFileToString(const std::string& path);
Status WriteStringToFile(const std::string& path, const std::string& data);
// Writes `data` to a temporary file beside `path` (same directory, unique name), fsyncs it and
// renames it over `path`: readers see the old file or the whole new one, never a part. On any
// failure the temporary is removed and `path` is left as it was.
Status WriteFileAtomically(const std::string& path, const std::string& data);

// A read-only, private memory map of a whole file. Move-only; unmapped on destruction.
class MappedFile {
 public:
  static StatusOr<MappedFile> Open(const std::string& path);
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace kvstar
