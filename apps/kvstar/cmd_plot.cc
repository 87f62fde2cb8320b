// kvstar plot: line plots (PNG or SVG) of the JSON that the bench commands write, e.g. thread
// scaling from bench-retrieval or load GB/s per block size from store-bench.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "base/plot.h"
#include "base/status.h"
#include "command.h"
#include "json_plot.h"

namespace kvstar::cli {
namespace {

struct PlotFlags {
  std::vector<std::string> inputs;
  std::vector<std::string> labels;  // one per input; default: the file name
  std::string rows;                 // key of the array of records; default: runs, points, results
  std::string x;
  std::string y;                   // FIELD or FIELD/FIELD
  std::string series;              // split each input's records into series by this field
  std::vector<std::string> where;  // FIELD=VALUE filters, all must hold
  bool log_x = false, log_y = false;
  std::string title, x_label, y_label;
  std::string out;
  int width = 900, height = 560;
};

StatusOr<const nlohmann::json*> Records(const nlohmann::json& doc, const std::string& rows,
                                        const std::string& path) {
  if (!doc.is_object()) return InvalidArgument("%s: not a JSON object", path.c_str());
  const std::vector<std::string> keys = rows.empty()
                                            ? std::vector<std::string>{"runs", "points", "results"}
                                            : std::vector<std::string>{rows};
  for (const std::string& k : keys) {
    auto it = doc.find(k);
    if (it != doc.end() && it->is_array()) return &*it;
  }
  return InvalidArgument(
      "%s: no array of records under %s", path.c_str(),
      rows.empty() ? "runs, points or results (use --rows KEY)" : ("'" + rows + "'").c_str());
}

// Series from the records of every input.
StatusOr<LinePlot> BuildPlot(const PlotFlags& f) {
  if (!f.labels.empty() && f.labels.size() != f.inputs.size()) {
    return InvalidArgument("--labels has %zu names for %zu inputs", f.labels.size(),
                           f.inputs.size());
  }
  std::vector<std::pair<std::string, std::string>> filters;
  for (const std::string& w : f.where) {
    const size_t eq = w.find('=');
    if (eq == std::string::npos || eq == 0) {
      return InvalidArgument("--where '%s': expected FIELD=VALUE", w.c_str());
    }
    filters.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  std::string y_num = f.y, y_den;
  if (const size_t slash = f.y.find('/'); slash != std::string::npos) {
    y_num = f.y.substr(0, slash);
    y_den = f.y.substr(slash + 1);
    if (y_num.empty() || y_den.empty()) {
      return InvalidArgument("--y '%s': expected FIELD or FIELD/FIELD", f.y.c_str());
    }
  }
  LinePlot plot;
  plot.title = f.title;
  plot.x_label = f.x_label.empty() ? f.x : f.x_label;
  plot.y_label = f.y_label.empty() ? f.y : f.y_label;
  plot.log_x = f.log_x;
  plot.log_y = f.log_y;
  for (size_t i = 0; i < f.inputs.size(); ++i) {
    const std::string& path = f.inputs[i];
    std::ifstream in(path);
    if (!in) return NotFound("cannot open %s", path.c_str());
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return InvalidArgument("%s: not valid JSON", path.c_str());
    KVSTAR_ASSIGN_OR_RETURN(const nlohmann::json* recs, Records(doc, f.rows, path));
    RecordPlotSpec spec;
    spec.x = f.x;
    spec.y = y_num;
    spec.y_div = y_den;
    spec.where = filters;
    if (!f.series.empty()) spec.group_by = {f.series};
    // The input's name, unless series split a single input (then the field values say it all).
    const std::string base =
        f.labels.empty() ? path.substr(path.find_last_of('/') + 1) : f.labels[i];
    if (f.series.empty() || f.inputs.size() > 1) spec.label_prefix = base;
    KVSTAR_ASSIGN_OR_RETURN(std::vector<Series> series, SeriesFromRecords(*recs, spec, path));
    for (Series& s : series) plot.series.push_back(std::move(s));
  }
  if (plot.series.empty()) {
    return InvalidArgument("no record matched (check --rows, --where and the field names)");
  }
  return plot;
}

int RunPlot(const PlotFlags& f) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  };
  auto plot = BuildPlot(f);
  if (!plot.ok()) return fail(plot.status());
  const Status s = WritePlotFile(*plot, f.out, f.width, f.height);
  if (!s.ok()) return fail(s);
  size_t n = 0;
  for (const Series& series : plot->series) n += series.x.size();
  std::printf("wrote %s: %zu series, %zu points\n", f.out.c_str(), plot->series.size(), n);
  return 0;
}

void AddPlot(CLI::App& root, int* exit_code) {
  auto f = std::make_shared<PlotFlags>();
  auto* cmd = root.add_subcommand(
      "plot",
      "Line plot (PNG, or SVG when --out ends in .svg) of the JSON the bench commands write.\n"
      "Each input's records (its 'runs', 'points' or 'results' array, or --rows KEY) give one\n"
      "point each: x = --x field, y = --y field (or FIELD/FIELD, a ratio). One series per input,\n"
      "or per value of --series FIELD. With --x index, an array --y field (bench's step_ms)\n"
      "gives one point per element. Example, thread scaling of two bench-retrieval runs:\n"
      "  kvstar plot --input best.json,avx2.json --labels AVX-512,AVX2 --x threads \\\n"
      "      --y speedup_vs_first/threads --title 'speedup per thread' --out scaling.png\n"
      "and the time of every decode step of two CUDA bench runs:\n"
      "  kvstar plot --input a.json,b.json --x index --y step_ms --where mode=kvstar --out "
      "steps.png");
  cmd->add_option("--input", f->inputs,
                  "JSON files written by a bench command (--json), comma-separated")
      ->required()
      ->delimiter(',');
  cmd->add_option("--labels", f->labels,
                  "Series names, comma-separated, one per input (default: file names)")
      ->delimiter(',');
  cmd->add_option("--rows", f->rows,
                  "Key of the array of records (default: runs, points or results)");
  cmd->add_option("--x", f->x, "Numeric field for the x axis")->required();
  cmd->add_option("--y", f->y, "Numeric field for the y axis, or FIELD/FIELD")->required();
  cmd->add_option("--series", f->series, "Split records into series by this field");
  cmd->add_option("--where", f->where, "Keep records whose FIELD=VALUE (repeatable)");
  cmd->add_flag("--log-x", f->log_x, "Logarithmic x axis");
  cmd->add_flag("--log-y", f->log_y, "Logarithmic y axis");
  cmd->add_option("--title", f->title, "Plot title");
  cmd->add_option("--x-label", f->x_label, "x axis label (default: the field)");
  cmd->add_option("--y-label", f->y_label, "y axis label (default: the field)");
  cmd->add_option("--out", f->out, "Output file (.png or .svg)")->required();
  cmd->add_option("--width", f->width, "Image width in pixels")->capture_default_str();
  cmd->add_option("--height", f->height, "Image height in pixels")->capture_default_str();
  cmd->callback([f, exit_code] { *exit_code = RunPlot(*f); });
}

}  // namespace

KVSTAR_COMMAND(plot, 90, AddPlot);

}  // namespace kvstar::cli
