#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

namespace kvstar {
namespace {

using nlohmann::json;

// Element sizes of every dtype the safetensors format defines. Only F32/BF16/F16 are computed
// with; the others are still validated so that their presence does not break a file.
std::optional<size_t> SafetensorsDtypeSize(std::string_view name) {
  struct Entry {
    std::string_view name;
    size_t size;
  };
  static constexpr Entry kTable[] = {
      {"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},    {"I64", 8}, {"I32", 4},
      {"I16", 2},  {"I8", 1},      {"U64", 8},     {"U32", 4},     {"U16", 2}, {"U8", 1},
      {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}, {"C64", 8}};
  for (const Entry& e : kTable) {
    if (e.name == name) return e.size;
  }
  return std::nullopt;
}

std::optional<DType> ComputeDtype(std::string_view name) {
  if (name == "F32") return DType::kF32;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  return std::nullopt;
}

bool GetUnsigned(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

bool PlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos &&
         name.find('\\') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

std::string ShapeToString(std::span<const size_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  KVSTAR_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->name_ = path;
  f->mapped_ = std::move(mapped);
  f->base_ = f->mapped_.data();
  f->size_ = f->mapped_.size();
  KVSTAR_RETURN_IF_ERROR(f->Parse());
  return f;
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromMemory(
    std::string name, std::span<const uint8_t> bytes) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->name_ = std::move(name);
  f->base_ = bytes.data();
  f->size_ = bytes.size();
  KVSTAR_RETURN_IF_ERROR(f->Parse());
  return f;
}

Status SafetensorsFile::Parse() {
  const char* file = name_.c_str();
  if (size_ < 8) {
    return DataLoss(
        "%s: file is %zu bytes, shorter than the 8-byte header length; truncated or "
        "not a safetensors file",
        file, size_);
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base_[i];
  if (header_len > kMaxSafetensorsHeaderBytes) {
    return InvalidArgument("%s: oversized header: %llu bytes (limit %zu); not a safetensors file",
                           file, static_cast<unsigned long long>(header_len),
                           kMaxSafetensorsHeaderBytes);
  }
  if (header_len > size_ - 8) {
    return DataLoss(
        "%s: header length %llu exceeds the %zu bytes after the length field; "
        "truncated file",
        file, static_cast<unsigned long long>(header_len), size_ - 8);
  }
  const char* header = reinterpret_cast<const char*>(base_ + 8);
  json j;
  try {
    j = json::parse(header, header + header_len);
  } catch (const json::exception& e) {
    return InvalidArgument("%s: header is not valid JSON: %s", file, e.what());
  }
  if (!j.is_object()) {
    return InvalidArgument("%s: header must be a JSON object, got a %s", file, j.type_name());
  }
  const uint8_t* data = base_ + 8 + header_len;
  const size_t data_size = size_ - 8 - header_len;

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (const auto& item : j.items()) {
    const std::string& name = item.key();
    if (name == "__metadata__") continue;
    const json& v = item.value();
    const char* tn = name.c_str();
    if (!v.is_object()) {
      return InvalidArgument("%s: tensor '%s': entry must be an object", file, tn);
    }
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) {
      return InvalidArgument("%s: tensor '%s': 'dtype' missing or not a string", file, tn);
    }
    if (sh == v.end() || !sh->is_array()) {
      return InvalidArgument("%s: tensor '%s': 'shape' missing or not a list", file, tn);
    }
    if (off == v.end() || !off->is_array() || off->size() != 2) {
      return InvalidArgument("%s: tensor '%s': 'data_offsets' must be a list of two integers", file,
                             tn);
    }
    SafetensorsTensor t;
    t.name = name;
    t.dtype_name = dt->get<std::string>();
    const std::optional<size_t> elem = SafetensorsDtypeSize(t.dtype_name);
    if (!elem) {
      return InvalidArgument("%s: tensor '%s': unknown dtype '%s'", file, tn, t.dtype_name.c_str());
    }
    t.dtype = ComputeDtype(t.dtype_name);
    uint64_t numel = 1;
    for (const json& d : *sh) {
      uint64_t dim = 0;
      if (!GetUnsigned(d, &dim)) {
        return InvalidArgument(
            "%s: tensor '%s': shape %s holds a value that is not a "
            "non-negative integer",
            file, tn, sh->dump().c_str());
      }
      if (__builtin_mul_overflow(numel, dim, &numel)) {
        return InvalidArgument("%s: tensor '%s': shape %s overflows", file, tn, sh->dump().c_str());
      }
      t.shape.push_back(static_cast<size_t>(dim));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(*elem), &nbytes)) {
      return InvalidArgument("%s: tensor '%s': shape %s overflows", file, tn, sh->dump().c_str());
    }
    uint64_t begin = 0, end = 0;
    if (!GetUnsigned((*off)[0], &begin) || !GetUnsigned((*off)[1], &end)) {
      return InvalidArgument("%s: tensor '%s': 'data_offsets' must be two non-negative integers",
                             file, tn);
    }
    if (begin > end) {
      return InvalidArgument("%s: tensor '%s': data_offsets [%llu, %llu] has begin > end", file, tn,
                             static_cast<unsigned long long>(begin),
                             static_cast<unsigned long long>(end));
    }
    if (end > data_size) {
      return DataLoss(
          "%s: tensor '%s': data_offsets end %llu is beyond the %zu-byte data "
          "region; truncated or corrupt file",
          file, tn, static_cast<unsigned long long>(end), data_size);
    }
    if (end - begin != nbytes) {
      return InvalidArgument(
          "%s: tensor '%s': data_offsets span %llu bytes but %s shape %s needs "
          "%llu",
          file, tn, static_cast<unsigned long long>(end - begin), t.dtype_name.c_str(),
          ShapeToString(t.shape).c_str(), static_cast<unsigned long long>(nbytes));
    }
    t.data = data + begin;
    t.bytes = static_cast<size_t>(nbytes);
    auto [it, inserted] = tensors_.emplace(name, std::move(t));
    if (!inserted) return InvalidArgument("%s: tensor '%s' appears twice", file, tn);
    if (end > begin) ranges.push_back({begin, end, &it->first});
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end) {
      return InvalidArgument("%s: tensors '%s' and '%s' overlap in the data region", file,
                             ranges[i - 1].name->c_str(), ranges[i].name->c_str());
    }
  }
  return Status::Ok();
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view tensor_name) const {
  auto it = tensors_.find(tensor_name);
  return it == tensors_.end() ? nullptr : &it->second;
}

StatusOr<TensorView> TensorToView(const SafetensorsTensor& t, const std::string& file,
                                  std::span<const size_t> expected_shape) {
  if (!expected_shape.empty() &&
      !std::equal(t.shape.begin(), t.shape.end(), expected_shape.begin(), expected_shape.end())) {
    return InvalidArgument("%s has shape %s, expected %s (in %s)", t.name.c_str(),
                           ShapeToString(t.shape).c_str(), ShapeToString(expected_shape).c_str(),
                           file.c_str());
  }
  if (!t.dtype) {
    return Unimplemented(
        "%s has dtype %s, which is not supported; supported: F32, BF16, F16 "
        "(in %s)",
        t.name.c_str(), t.dtype_name.c_str(), file.c_str());
  }
  // Kernels read elements through typed pointers; HF writers pad the header so that every
  // tensor is aligned, and a file that is not cannot be used without a copy.
  if (reinterpret_cast<uintptr_t>(t.data) % DTypeSize(*t.dtype) != 0) {
    return InvalidArgument(
        "%s data is not aligned to its %zu-byte elements (in %s); re-save the "
        "file with the safetensors library, which pads the header",
        t.name.c_str(), DTypeSize(*t.dtype), file.c_str());
  }
  TensorView view;
  view.data = t.data;
  view.dtype = *t.dtype;
  if (t.shape.empty()) {
    view.rows = view.cols = 1;
  } else {
    view.cols = t.shape.back();
    view.rows = 1;
    for (size_t i = 0; i + 1 < t.shape.size(); ++i) view.rows *= t.shape[i];
  }
  return view;
}

StatusOr<TensorView> SafetensorsFile::Get(std::string_view tensor_name,
                                          std::span<const size_t> expected_shape) const {
  const SafetensorsTensor* t = Find(tensor_name);
  if (t == nullptr) {
    return NotFound("tensor %.*s is missing from %s", static_cast<int>(tensor_name.size()),
                    tensor_name.data(), name_.c_str());
  }
  return TensorToView(*t, name_, expected_shape);
}

// ---------------------------------------------------------------------------------------------

StatusOr<std::unique_ptr<TensorSet>> TensorSet::Open(const std::string& model_dir) {
  struct stat st;
  if (::stat(model_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return NotFound("model directory %s does not exist or is not a directory", model_dir.c_str());
  }
  auto set = std::make_unique<TensorSet>();
  set->dir_ = model_dir;
  const std::string single = model_dir + "/model.safetensors";
  const std::string index_path = model_dir + "/model.safetensors.index.json";
  if (IsRegularFile(single)) {
    KVSTAR_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(single));
    for (const auto& [name, t] : file->tensors()) set->index_.emplace(name, std::make_pair(0, &t));
    set->files_.push_back(std::move(file));
    return set;
  }
  if (!IsRegularFile(index_path)) {
    return NotFound(
        "%s holds neither model.safetensors nor model.safetensors.index.json (only "
        "safetensors weights are supported)",
        model_dir.c_str());
  }
  KVSTAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(index_path));
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument("%s: invalid JSON: %s", index_path.c_str(), e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
    return InvalidArgument("%s: key 'weight_map' missing or not an object", index_path.c_str());
  }
  std::map<std::string, size_t> shard_index;
  for (const auto& item : j["weight_map"].items()) {
    const std::string& name = item.key();
    if (!item.value().is_string()) {
      return InvalidArgument("%s: key 'weight_map': entry for %s is not a file name",
                             index_path.c_str(), name.c_str());
    }
    const std::string shard = item.value().get<std::string>();
    if (!PlainFileName(shard)) {
      return InvalidArgument(
          "%s: key 'weight_map': shard '%s' of %s must be a plain file name "
          "inside the model directory",
          index_path.c_str(), shard.c_str(), name.c_str());
    }
    auto [it, inserted] = shard_index.emplace(shard, set->files_.size());
    if (inserted) {
      auto file = SafetensorsFile::Open(model_dir + "/" + shard);
      if (!file.ok()) {
        return file.status().WithContext(index_path + " names shard " + shard);
      }
      set->files_.push_back(std::move(file).value());
    }
    const SafetensorsFile& f = *set->files_[it->second];
    const SafetensorsTensor* t = f.Find(name);
    if (t == nullptr) {
      return NotFound("%s maps tensor %s to %s, but that file does not contain it",
                      index_path.c_str(), name.c_str(), f.path().c_str());
    }
    set->index_.emplace(name, std::make_pair(it->second, t));
  }
  return set;
}

const SafetensorsTensor* TensorSet::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.second;
}

std::string TensorSet::FileOf(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? std::string() : files_[it->second.first]->path();
}

StatusOr<TensorView> TensorSet::Get(std::string_view name,
                                    std::span<const size_t> expected_shape) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    return NotFound("tensor %.*s is missing from the model in %s", static_cast<int>(name.size()),
                    name.data(), dir_.c_str());
  }
  return TensorToView(*it->second.second, files_[it->second.first]->path(), expected_shape);
}

std::vector<std::string> TensorSet::Names() const {
  std::vector<std::string> names;
  names.reserve(index_.size());
  for (const auto& kv : index_) names.push_back(kv.first);
  return names;
}

size_t TensorSet::total_file_bytes() const {
  size_t total = 0;
  for (const auto& f : files_) total += f->file_bytes();
  return total;
}

// ---------------------------------------------------------------------------------------------

Status WriteSafetensors(const std::string& path, const std::vector<SafetensorsWriteTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsWriteTensor& t : tensors) {
    const std::optional<size_t> elem = SafetensorsDtypeSize(t.dtype_name);
    if (!elem) {
      return InvalidArgument("writing %s: tensor %s: unknown dtype '%s'", path.c_str(),
                             t.name.c_str(), t.dtype_name.c_str());
    }
    size_t numel = 1;
    for (size_t d : t.shape) numel *= d;
    if (numel * *elem != t.data.size()) {
      return InvalidArgument("writing %s: tensor %s: %zu bytes given, shape %s of %s needs %zu",
                             path.c_str(), t.name.c_str(), t.data.size(),
                             ShapeToString(t.shape).c_str(), t.dtype_name.c_str(), numel * *elem);
    }
    if (header.contains(t.name)) {
      return InvalidArgument("writing %s: tensor %s given twice", path.c_str(), t.name.c_str());
    }
    header[t.name] = {{"dtype", t.dtype_name},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.data.size()}}};
    offset += t.data.size();
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // keeps the data region 8-byte aligned
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((head.size() >> (8 * i)) & 0xff);

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  auto write_all = [&](const void* p, size_t n) -> Status {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, "write " + path);
      }
      c += w;
      n -= static_cast<size_t>(w);
    }
    return Status::Ok();
  };
  Status s = write_all(prefix.data(), prefix.size());
  if (s.ok()) s = write_all(head.data(), head.size());
  for (const SafetensorsWriteTensor& t : tensors) {
    if (!s.ok()) break;
    s = write_all(t.data.data(), t.data.size());
  }
  if (::close(fd) != 0 && s.ok()) s = ErrnoStatus(errno, "close " + path);
  return s;
}

}  // namespace kvstar
