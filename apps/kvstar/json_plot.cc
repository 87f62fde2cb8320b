#include "json_plot.h"

#include <algorithm>
#include <cmath>
#include <map>

namespace kvstar::cli {
namespace {

StatusOr<double> NumberField(const nlohmann::json& rec, const std::string& name,
                             const std::string& source) {
  auto it = rec.find(name);
  if (it == rec.end()) {
    return InvalidArgument("%s: a record has no field '%s'", source.c_str(), name.c_str());
  }
  if (!it->is_number()) {
    return InvalidArgument("%s: field '%s' is not a number (%s)", source.c_str(), name.c_str(),
                           it->dump().c_str());
  }
  return it->get<double>();
}

}  // namespace

Status PlotRecordsToFile(LinePlot plot, const nlohmann::json& records, const RecordPlotSpec& spec,
                         const std::string& source, const std::string& path) {
  KVSTAR_ASSIGN_OR_RETURN(plot.series, SeriesFromRecords(records, spec, source));
  if (plot.series.empty()) return InvalidArgument("%s: no record to plot", source.c_str());
  return WritePlotFile(plot, path);
}

Status WritePlotFile(const LinePlot& plot, const std::string& path, int width, int height) {
  const bool svg = path.size() >= 4 && path.compare(path.size() - 4, 4, ".svg") == 0;
  return svg ? WritePlotSvg(plot, path, width, height) : WritePlotPng(plot, path, width, height);
}

std::string JsonFieldText(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

StatusOr<std::vector<Series>> SeriesFromRecords(const nlohmann::json& records,
                                                const RecordPlotSpec& spec,
                                                const std::string& source) {
  if (!records.is_array()) return InvalidArgument("%s: records are not an array", source.c_str());
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::pair<double, double>>> points;
  for (const nlohmann::json& rec : records) {
    if (!rec.is_object()) continue;
    bool keep = true;
    for (const auto& [field, value] : spec.where) {
      auto it = rec.find(field);
      keep = keep && it != rec.end() && JsonFieldText(*it) == value;
    }
    if (!keep) continue;
    KVSTAR_ASSIGN_OR_RETURN(double x, NumberField(rec, spec.x, source));
    KVSTAR_ASSIGN_OR_RETURN(double y, NumberField(rec, spec.y, source));
    if (!spec.y_div.empty()) {
      KVSTAR_ASSIGN_OR_RETURN(double d, NumberField(rec, spec.y_div, source));
      y = d != 0 ? y / d : NAN;
    }
    std::string name = spec.label_prefix;
    for (size_t i = 0; i < spec.group_by.size(); ++i) {
      auto it = rec.find(spec.group_by[i]);
      const std::string shown =
          i < spec.group_names.size() ? spec.group_names[i] : spec.group_by[i];
      if (!name.empty()) name += ", ";
      name += (shown.empty() ? "" : shown + " ") +
              (it == rec.end() ? std::string("?") : JsonFieldText(*it));
    }
    if (!points.count(name)) order.push_back(name);
    points[name].emplace_back(x, y);
  }
  std::vector<Series> out;
  for (const std::string& name : order) {
    auto& pts = points[name];
    std::stable_sort(pts.begin(), pts.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    Series s;
    s.label = name;
    for (const auto& [x, y] : pts) {
      s.x.push_back(x);
      s.y.push_back(y);
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace kvstar::cli
