#include "recompute/profile.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "base/file_util.h"

namespace kvstar::recompute {
namespace {

using json = nlohmann::json;

std::string Str(std::string_view s) { return std::string(s); }

// Typed reads that report a missing or mistyped key as DataLoss instead of throwing.
Status Missing(std::string_view src, std::string_view where, const char* key, const char* type) {
  return DataLoss("%s: %s key '%s' is missing or not %s", Str(src).c_str(), Str(where).c_str(), key,
                  type);
}

Status ReadNumber(const json& j, const char* key, std::string_view src, std::string_view where,
                  double* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return Missing(src, where, key, "a number");
  *out = it->get<double>();
  return Status::Ok();
}

Status ReadSize(const json& j, const char* key, std::string_view src, std::string_view where,
                size_t* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) {
    return Missing(src, where, key, "a non-negative integer");
  }
  *out = it->get<size_t>();
  return Status::Ok();
}

Status ReadString(const json& j, const char* key, std::string_view src, std::string_view where,
                  std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return Missing(src, where, key, "a string");
  *out = it->get<std::string>();
  return Status::Ok();
}

bool PositiveFinite(double v) { return std::isfinite(v) && v > 0; }
bool NonNegativeFinite(double v) { return std::isfinite(v) && v >= 0; }

}  // namespace

double GemmTable::TflopsAt(double rows) const {
  KVSTAR_CHECK(!points.empty(), "GEMM table hidden=%zu kv_dim=%zu has no points", hidden, kv_dim);
  const GemmPoint& first = points.front();
  const GemmPoint& last = points.back();
  if (rows <= static_cast<double>(first.rows)) {
    // Same time as the first point: the rate falls in proportion to the work.
    return first.tflops * std::max(rows, 0.0) / static_cast<double>(first.rows);
  }
  if (rows >= static_cast<double>(last.rows)) return last.tflops;
  for (size_t i = 1; i < points.size(); ++i) {
    const GemmPoint& hi = points[i];
    if (rows > static_cast<double>(hi.rows)) continue;
    const GemmPoint& lo = points[i - 1];
    const double t =
        (std::log(rows) - std::log(static_cast<double>(lo.rows))) /
        (std::log(static_cast<double>(hi.rows)) - std::log(static_cast<double>(lo.rows)));
    return lo.tflops + t * (hi.tflops - lo.tflops);
  }
  return last.tflops;
}

double GemmTable::GemmMs(double rows) const {
  if (rows <= 0) return 0;
  const double flops = 2.0 * rows * static_cast<double>(hidden) * 2.0 * static_cast<double>(kv_dim);
  return flops / (TflopsAt(rows) * 1e12) * 1e3;
}

const GemmTable* KvprProfile::FindGemm(size_t hidden, size_t kv_dim) const {
  for (const GemmTable& t : gemm) {
    if (t.hidden == hidden && t.kv_dim == kv_dim) return &t;
  }
  return nullptr;
}

const LayerComputeSample* KvprProfile::FindLayerCompute(std::string_view shape, size_t batch,
                                                        size_t seq_len) const {
  for (const LayerComputeSample& s : layer_compute) {
    if (s.shape == shape && s.batch == batch && s.seq_len == seq_len) return &s;
  }
  return nullptr;
}

Status ValidateProfile(const KvprProfile& p, std::string_view source) {
  const std::string src = Str(source);
  if (p.version != kProfileVersion) {
    return FailedPrecondition("%s: profile version %d, this build reads version %d; re-measure it",
                              src.c_str(), p.version, kProfileVersion);
  }
  if (p.device_name.empty()) return InvalidArgument("%s: empty device name", src.c_str());
  if (!PositiveFinite(p.h2d_gbps)) {
    return InvalidArgument("%s: h2d_gbps must be > 0, got %g", src.c_str(), p.h2d_gbps);
  }
  for (const double scale : {p.recompute_scale, p.link_scale}) {
    if (!std::isfinite(scale) || scale < 0.1 || scale > 10) {
      return InvalidArgument("%s: recompute_scale and link_scale must be in [0.1, 10], got %g",
                             src.c_str(), scale);
    }
  }
  if (!NonNegativeFinite(p.h2d_latency_us) || !NonNegativeFinite(p.device_gbps)) {
    return InvalidArgument("%s: h2d_latency_us (%g) and device_gbps (%g) must be >= 0", src.c_str(),
                           p.h2d_latency_us, p.device_gbps);
  }
  for (size_t i = 0; i < p.gemm.size(); ++i) {
    const GemmTable& t = p.gemm[i];
    if (t.hidden == 0 || t.kv_dim == 0) {
      return InvalidArgument("%s: gemm[%zu]: hidden (%zu) and kv_dim (%zu) must be > 0",
                             src.c_str(), i, t.hidden, t.kv_dim);
    }
    if (!NonNegativeFinite(t.launch_overhead_us)) {
      return InvalidArgument("%s: gemm[%zu]: launch_overhead_us must be >= 0, got %g", src.c_str(),
                             i, t.launch_overhead_us);
    }
    if (t.points.empty()) return InvalidArgument("%s: gemm[%zu] has no points", src.c_str(), i);
    for (size_t k = 0; k < t.points.size(); ++k) {
      const GemmPoint& pt = t.points[k];
      if (pt.rows == 0 || !PositiveFinite(pt.tflops)) {
        return InvalidArgument("%s: gemm[%zu].points[%zu]: rows %zu and tflops %g must be > 0",
                               src.c_str(), i, k, pt.rows, pt.tflops);
      }
      if (k > 0 && pt.rows <= t.points[k - 1].rows) {
        return InvalidArgument("%s: gemm[%zu]: rows must be ascending (%zu after %zu)", src.c_str(),
                               i, pt.rows, t.points[k - 1].rows);
      }
    }
    for (size_t j = 0; j < i; ++j) {
      if (p.gemm[j].hidden == t.hidden && p.gemm[j].kv_dim == t.kv_dim) {
        return InvalidArgument("%s: two GEMM tables for hidden %zu kv_dim %zu", src.c_str(),
                               t.hidden, t.kv_dim);
      }
    }
  }
  for (size_t i = 0; i < p.layer_compute.size(); ++i) {
    if (!PositiveFinite(p.layer_compute[i].ms)) {
      return InvalidArgument("%s: layer_compute[%zu].ms must be > 0, got %g", src.c_str(), i,
                             p.layer_compute[i].ms);
    }
  }
  return Status::Ok();
}

nlohmann::json ProfileToJson(const KvprProfile& p) {
  json j;
  j["format"] = kProfileFormat;
  j["version"] = p.version;
  j["device_name"] = p.device_name;
  j["device_key"] = p.device_key;
  j["measured_at"] = p.measured_at;
  j["h2d_gbps"] = p.h2d_gbps;
  j["h2d_bytes"] = p.h2d_bytes;
  j["h2d_latency_us"] = p.h2d_latency_us;
  j["device_gbps"] = p.device_gbps;
  json tables = json::array();
  for (const GemmTable& t : p.gemm) {
    json pts = json::array();
    for (const GemmPoint& pt : t.points) pts.push_back({{"rows", pt.rows}, {"tflops", pt.tflops}});
    tables.push_back({{"hidden", t.hidden},
                      {"kv_dim", t.kv_dim},
                      {"dtype", "bf16"},
                      {"launch_overhead_us", t.launch_overhead_us},
                      {"points", pts}});
  }
  j["gemm"] = tables;
  json lc = json::array();
  for (const LayerComputeSample& s : p.layer_compute) {
    lc.push_back({{"shape", s.shape}, {"batch", s.batch}, {"seq_len", s.seq_len}, {"ms", s.ms}});
  }
  j["layer_compute"] = lc;
  j["recompute_scale"] = p.recompute_scale;
  j["link_scale"] = p.link_scale;
  j["recompute_scale_note"] = p.recompute_scale_note;
  return j;
}

StatusOr<KvprProfile> ProfileFromJson(std::string_view text, std::string_view source) {
  const std::string src = Str(source);
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return DataLoss(
        "%s: not a JSON object (corrupt profile file); delete it or run "
        "`kvstar profile --refresh`",
        src.c_str());
  }
  std::string format;
  if (!ReadString(j, "format", src, "top-level", &format).ok() || format != kProfileFormat) {
    return FailedPrecondition("%s: not a KVPR profile (format '%s', expected '%s')", src.c_str(),
                              format.c_str(), kProfileFormat);
  }
  KvprProfile p;
  auto ver = j.find("version");
  if (ver == j.end() || !ver->is_number_integer()) {
    return DataLoss("%s: key 'version' is missing or not an integer", src.c_str());
  }
  p.version = ver->get<int>();
  if (p.version != kProfileVersion) {
    return FailedPrecondition("%s: profile version %d, this build reads version %d; re-measure it",
                              src.c_str(), p.version, kProfileVersion);
  }
  KVSTAR_RETURN_IF_ERROR(ReadString(j, "device_name", src, "top-level", &p.device_name));
  KVSTAR_RETURN_IF_ERROR(ReadString(j, "device_key", src, "top-level", &p.device_key));
  KVSTAR_RETURN_IF_ERROR(ReadString(j, "measured_at", src, "top-level", &p.measured_at));
  KVSTAR_RETURN_IF_ERROR(ReadNumber(j, "h2d_gbps", src, "top-level", &p.h2d_gbps));
  KVSTAR_RETURN_IF_ERROR(ReadSize(j, "h2d_bytes", src, "top-level", &p.h2d_bytes));
  KVSTAR_RETURN_IF_ERROR(ReadNumber(j, "h2d_latency_us", src, "top-level", &p.h2d_latency_us));
  KVSTAR_RETURN_IF_ERROR(ReadNumber(j, "device_gbps", src, "top-level", &p.device_gbps));
  auto tables = j.find("gemm");
  if (tables == j.end() || !tables->is_array()) return Missing(src, "top-level", "gemm", "a list");
  for (size_t i = 0; i < tables->size(); ++i) {
    const json& t = (*tables)[i];
    const std::string where = "gemm[" + std::to_string(i) + "]";
    if (!t.is_object()) return DataLoss("%s: %s is not an object", src.c_str(), where.c_str());
    GemmTable g;
    KVSTAR_RETURN_IF_ERROR(ReadSize(t, "hidden", src, where, &g.hidden));
    KVSTAR_RETURN_IF_ERROR(ReadSize(t, "kv_dim", src, where, &g.kv_dim));
    KVSTAR_RETURN_IF_ERROR(ReadNumber(t, "launch_overhead_us", src, where, &g.launch_overhead_us));
    auto pts = t.find("points");
    if (pts == t.end() || !pts->is_array()) return Missing(src, where, "points", "a list");
    for (const json& pt : *pts) {
      if (!pt.is_object())
        return DataLoss("%s: %s: a point is not an object", src.c_str(), where.c_str());
      GemmPoint gp;
      KVSTAR_RETURN_IF_ERROR(ReadSize(pt, "rows", src, where, &gp.rows));
      KVSTAR_RETURN_IF_ERROR(ReadNumber(pt, "tflops", src, where, &gp.tflops));
      g.points.push_back(gp);
    }
    p.gemm.push_back(std::move(g));
  }
  // Optional (older files have neither): 1 and no note.
  if (j.contains("recompute_scale")) {
    KVSTAR_RETURN_IF_ERROR(ReadNumber(j, "recompute_scale", src, "top-level", &p.recompute_scale));
  }
  if (j.contains("link_scale")) {
    KVSTAR_RETURN_IF_ERROR(ReadNumber(j, "link_scale", src, "top-level", &p.link_scale));
  }
  if (j.contains("recompute_scale_note")) {
    KVSTAR_RETURN_IF_ERROR(
        ReadString(j, "recompute_scale_note", src, "top-level", &p.recompute_scale_note));
  }
  auto lc = j.find("layer_compute");
  if (lc != j.end()) {
    if (!lc->is_array()) return Missing(src, "top-level", "layer_compute", "a list");
    for (const json& s : *lc) {
      if (!s.is_object()) {
        return DataLoss("%s: layer_compute: an entry is not an object", src.c_str());
      }
      LayerComputeSample ls;
      KVSTAR_RETURN_IF_ERROR(ReadString(s, "shape", src, "layer_compute", &ls.shape));
      KVSTAR_RETURN_IF_ERROR(ReadSize(s, "batch", src, "layer_compute", &ls.batch));
      KVSTAR_RETURN_IF_ERROR(ReadSize(s, "seq_len", src, "layer_compute", &ls.seq_len));
      KVSTAR_RETURN_IF_ERROR(ReadNumber(s, "ms", src, "layer_compute", &ls.ms));
      p.layer_compute.push_back(std::move(ls));
    }
  }
  KVSTAR_RETURN_IF_ERROR(ValidateProfile(p, source));
  return p;
}

Status SaveProfile(const KvprProfile& p, const std::string& path) {
  KVSTAR_RETURN_IF_ERROR(ValidateProfile(p, path));
  const std::filesystem::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    std::filesystem::create_directories(target.parent_path(), ec);
    if (ec) {
      return IoError("creating directory %s: %s", target.parent_path().c_str(),
                     ec.message().c_str());
    }
  }
  return WriteFileAtomically(path, ProfileToJson(p).dump(2) + "\n");
}

StatusOr<KvprProfile> LoadProfile(const std::string& path) {
  KVSTAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return ProfileFromJson(text, path);
}

Status CheckProfileDevice(const KvprProfile& p, std::string_view device_key) {
  if (p.device_key == device_key) return Status::Ok();
  return FailedPrecondition("profile measured on '%s', this device is '%s'; re-measuring",
                            p.device_key.c_str(), Str(device_key).c_str());
}

std::string SanitizeDeviceName(std::string_view name) {
  std::string out;
  for (char c : name) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (c >= 'A' && c <= 'Z') {
      out.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (alnum) {
      out.push_back(c);
    } else if (!out.empty() && out.back() != '-') {
      out.push_back('-');
    }
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "device" : out;
}

StatusOr<std::string> DefaultProfilePath(std::string_view device_name) {
  const std::string file = "profile-" + SanitizeDeviceName(device_name) + ".json";
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/kvstar/" + file;
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return std::string(home) + "/.cache/kvstar/" + file;
  return FailedPrecondition(
      "neither XDG_CACHE_HOME nor HOME is set: give the profile path with --profile-file");
}

}  // namespace kvstar::recompute
