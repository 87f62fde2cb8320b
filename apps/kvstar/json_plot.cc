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
    // (x, y) points of the record: one, or with x "index" and an array y (per-step times) one
    // per element, x its position.
    std::vector<std::pair<double, double>> xy;
    auto yit = rec.find(spec.y);
    if (spec.x == "index" && !rec.contains("index") && yit != rec.end() && yit->is_array()) {
      if (!spec.y_div.empty()) {
        return InvalidArgument("%s: '%s' is an array: plot it without a ratio", source.c_str(),
                               spec.y.c_str());
      }
      for (size_t i = 0; i < yit->size(); ++i) {
        if (!(*yit)[i].is_number()) {
          return InvalidArgument("%s: element %zu of '%s' is not a number", source.c_str(), i,
                                 spec.y.c_str());
        }
        xy.emplace_back(static_cast<double>(i), (*yit)[i].get<double>());
      }
    } else {
      if (yit != rec.end() && yit->is_array()) {
        return InvalidArgument("%s: '%s' is an array: use --x index to plot its elements",
                               source.c_str(), spec.y.c_str());
      }
      KVSTAR_ASSIGN_OR_RETURN(double x, NumberField(rec, spec.x, source));
      KVSTAR_ASSIGN_OR_RETURN(double y, NumberField(rec, spec.y, source));
      if (!spec.y_div.empty()) {
        KVSTAR_ASSIGN_OR_RETURN(double d, NumberField(rec, spec.y_div, source));
        y = d != 0 ? y / d : NAN;
      }
      xy.emplace_back(x, y);
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
    points[name].insert(points[name].end(), xy.begin(), xy.end());
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
