// Line-plot series from the records of a bench command's JSON (an array of objects): used by
// `kvstar plot` and by the --plot flags of store-bench and bench-retrieval.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "base/plot.h"
#include "base/status.h"

namespace kvstar::cli {

struct RecordPlotSpec {
  std::string x;      // numeric field for x
  std::string y;      // numeric field for y
  std::string y_div;  // when set, y = y / y_div (a ratio of two fields)
  // One series per distinct combination of these fields' values, labelled "f1 v1, f2 v2" after
  // `label_prefix` (prefix alone when empty).
  std::vector<std::string> group_by;
  // Names shown for the group_by fields (same order; "" shows the value alone); default: the
  // field names.
  std::vector<std::string> group_names;
  std::vector<std::pair<std::string, std::string>> where;  // keep records with field == value
  std::string label_prefix;
};

// Series in order of first appearance, points sorted by x. `source` names the input in errors.
// A record without a numeric x or y field is InvalidArgument; records failing `where` are
// skipped. With x "index" (and no such field) an array y gives one point per element, x its
// position (e.g. bench's per-step times, `step_ms`). No series (nothing matched) is an empty
// result, not an error.
StatusOr<std::vector<Series>> SeriesFromRecords(const nlohmann::json& records,
                                                const RecordPlotSpec& spec,
                                                const std::string& source);

// `plot` (title and axes set) with the series of `records` (SeriesFromRecords), written to
// `path` by WritePlotFile. Nothing that matches the spec is InvalidArgument.
Status PlotRecordsToFile(LinePlot plot, const nlohmann::json& records, const RecordPlotSpec& spec,
                         const std::string& source, const std::string& path);

// Writes SVG when `path` ends in ".svg", else PNG (base/plot.h, default size).
Status WritePlotFile(const LinePlot& plot, const std::string& path, int width = 900,
                     int height = 560);

// A field's value as text: strings without quotes, numbers as JSON prints them.
std::string JsonFieldText(const nlohmann::json& v);

}  // namespace kvstar::cli
