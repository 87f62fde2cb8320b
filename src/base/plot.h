// Line plots written as PNG or SVG without any imaging library: benchmark commands emit
// "tokens/s vs context per mode" or "accuracy vs sparse ratio" charts next to their tables.
//
// Rendering: white background, light grid, axes with numeric tick labels (linear axes use nice
// 1/2/5 x 10^k steps; log axes use powers of 2 when every value is >= 1 and they span at most
// 2^12, else powers of 10; large values get K/M/G suffixes, binary on a log-2 axis: 4096 is "4K",
// decimal elsewhere: 20000 is "20K"), a title, axis labels, one colour per series from a fixed
// palette of 8 (it cycles past 8; even series get square markers, odd ones round markers) and a
// legend in the corner of the data area that hides the fewest points, or right of the data area
// when every corner would hide some. Texts too long for the image are shortened with "...".
//
// Data rules a caller must know:
// - Points are joined in the order given (sort by x first if that is what you mean).
// - A non-finite x or y (NaN, +-inf), or a value <= 0 on a log axis, is skipped and breaks the
//   line there (a gap).
// - A plot with no drawable point, a series whose x and y sizes differ, or a size outside
//   [200, 8192] x [150, 8192] is InvalidArgument.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/png.h"
#include "base/status.h"

namespace kvstar {

struct Series {
  std::string label;
  std::vector<double> x, y;  // same size
};

struct LinePlot {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  std::vector<Series> series;
};

// Writes to `path` + ".tmp<pid>" and renames, so `path` is either the old file or the complete
// new one. Unwritable path -> IoError naming it.
Status WritePlotPng(const LinePlot& plot, const std::string& path, int width = 900,
                    int height = 560);
Status WritePlotSvg(const LinePlot& plot, const std::string& path, int width = 900,
                    int height = 560);

// The SVG document. For a plot that ValidatePlot rejects it is a small SVG that shows the error
// text instead of axes (use WritePlotSvg or ValidatePlot to get a Status).
std::string PlotSvg(const LinePlot& plot, int width, int height);

// OK when the plot can be drawn at this size (see the data rules above).
Status ValidatePlot(const LinePlot& plot, int width, int height);

// ---- Lower level: layout, raster and PNG encoding (used by the tests; usable for annotations) --

struct PlotTick {
  double value;       // data units
  std::string label;  // "4K", "0.25", "1e-06"
};

struct PlotLegendEntry {
  size_t series;      // index into LinePlot::series
  std::string label;  // as drawn
};

// Where everything lands, in pixels with the origin at the top-left corner. Texts are as drawn:
// too long ones are shortened with "...".
struct PlotFrame {
  int width = 0, height = 0;
  int plot_left = 0, plot_top = 0, plot_right = 0, plot_bottom = 0;  // the data area
  // Series with an empty label get no legend row; no labels, no legend (all four stay 0). A
  // legend that would hide much of the data sits right of the data area (legend_outside).
  int legend_left = 0, legend_top = 0, legend_right = 0, legend_bottom = 0;
  bool legend_outside = false;
  std::vector<PlotLegendEntry> legend;
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  double x_lo = 0, x_hi = 1, y_lo = 0, y_hi = 1;  // axis ends in data units
  std::vector<PlotTick> x_ticks, y_ticks;
  int title_scale = 2;  // bitmap font scale of the title (2 or 3)

  // Data -> pixel. Only meaningful for values the axis can show (positive on a log axis).
  double PixelX(double x) const;
  double PixelY(double y) const;
};

StatusOr<PlotFrame> LayoutPlot(const LinePlot& plot, int width, int height);

// The PNG image before encoding: [height][width][3] bytes, RGB.
StatusOr<std::vector<uint8_t>> RenderPlotRgb(const LinePlot& plot, int width, int height);

// The colour of series i, {r, g, b}.
std::vector<uint8_t> SeriesColor(size_t series_index);

}  // namespace kvstar
