#include "base/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <utility>

#include "base/file_util.h"

namespace kvstar {
namespace {

// Classic 5x7 ASCII font, printable 32..126: 5 columns per glyph, bit r of a column is row r
// (row 0 on top). Drawn with a 1-column gap, so a glyph advances 6 units.
// clang-format off
constexpr uint8_t kFont5x7[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00},  // space !
    {0x00, 0x07, 0x00, 0x07, 0x00}, {0x14, 0x7F, 0x14, 0x7F, 0x14},  // " #
    {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},  // $ %
    {0x36, 0x49, 0x55, 0x22, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00},  // & '
    {0x00, 0x1C, 0x22, 0x41, 0x00}, {0x00, 0x41, 0x22, 0x1C, 0x00},  // ( )
    {0x08, 0x2A, 0x1C, 0x2A, 0x08}, {0x08, 0x08, 0x3E, 0x08, 0x08},  // * +
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08},  // , -
    {0x00, 0x60, 0x60, 0x00, 0x00}, {0x20, 0x10, 0x08, 0x04, 0x02},  // . /
    {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},  // 0 1
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31},  // 2 3
    {0x18, 0x14, 0x12, 0x7F, 0x10}, {0x27, 0x45, 0x45, 0x45, 0x39},  // 4 5
    {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03},  // 6 7
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E},  // 8 9
    {0x00, 0x36, 0x36, 0x00, 0x00}, {0x00, 0x56, 0x36, 0x00, 0x00},  // : ;
    {0x08, 0x14, 0x22, 0x41, 0x00}, {0x14, 0x14, 0x14, 0x14, 0x14},  // < =
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x51, 0x09, 0x06},  // > ?
    {0x32, 0x49, 0x79, 0x41, 0x3E}, {0x7E, 0x11, 0x11, 0x11, 0x7E},  // @ A
    {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},  // B C
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41},  // D E
    {0x7F, 0x09, 0x09, 0x09, 0x01}, {0x3E, 0x41, 0x49, 0x49, 0x7A},  // F G
    {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},  // H I
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41},  // J K
    {0x7F, 0x40, 0x40, 0x40, 0x40}, {0x7F, 0x02, 0x0C, 0x02, 0x7F},  // L M
    {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},  // N O
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E},  // P Q
    {0x7F, 0x09, 0x19, 0x29, 0x46}, {0x46, 0x49, 0x49, 0x49, 0x31},  // R S
    {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F},  // T U
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F},  // V W
    {0x63, 0x14, 0x08, 0x14, 0x63}, {0x07, 0x08, 0x70, 0x08, 0x07},  // X Y
    {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x00},  // Z [
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x7F, 0x00},  // backslash ]
    {0x04, 0x02, 0x01, 0x02, 0x04}, {0x40, 0x40, 0x40, 0x40, 0x40},  // ^ _
    {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78},  // ` a
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20},  // b c
    {0x38, 0x44, 0x44, 0x48, 0x7F}, {0x38, 0x54, 0x54, 0x54, 0x18},  // d e
    {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x0C, 0x52, 0x52, 0x52, 0x3E},  // f g
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00},  // h i
    {0x20, 0x40, 0x44, 0x3D, 0x00}, {0x7F, 0x10, 0x28, 0x44, 0x00},  // j k
    {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78},  // l m
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38},  // n o
    {0x7C, 0x14, 0x14, 0x14, 0x08}, {0x08, 0x14, 0x14, 0x18, 0x7C},  // p q
    {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20},  // r s
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C},  // t u
    {0x1C, 0x20, 0x40, 0x20, 0x1C}, {0x3C, 0x40, 0x30, 0x40, 0x3C},  // v w
    {0x44, 0x28, 0x10, 0x28, 0x44}, {0x0C, 0x50, 0x50, 0x50, 0x3C},  // x y
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00},  // z {
    {0x00, 0x00, 0x7F, 0x00, 0x00}, {0x00, 0x41, 0x36, 0x08, 0x00},  // | }
    {0x08, 0x04, 0x08, 0x10, 0x08},  // ~
};
// clang-format on

// g j p q y with real descenders: two rows (7, 8) below the baseline, outside the 7-row text box;
// the layout leaves at least 2 rows of space under every text line.
struct DescenderGlyph {
  char ch;
  uint16_t cols[5];
};
constexpr DescenderGlyph kDescenders[] = {
    {'g', {0x038, 0x144, 0x144, 0x144, 0x0FC}}, {'j', {0x080, 0x100, 0x100, 0x0FD, 0x000}},
    {'p', {0x1FC, 0x044, 0x044, 0x044, 0x038}}, {'q', {0x038, 0x044, 0x044, 0x044, 0x1FC}},
    {'y', {0x03C, 0x140, 0x140, 0x140, 0x0FC}},
};

std::array<uint16_t, 5> Glyph(char ch) {
  for (const DescenderGlyph& d : kDescenders) {
    if (d.ch == ch) return {d.cols[0], d.cols[1], d.cols[2], d.cols[3], d.cols[4]};
  }
  const int c = static_cast<unsigned char>(ch);
  const uint8_t* g = kFont5x7[(c >= 32 && c <= 126 ? c : '?') - 32];
  return {g[0], g[1], g[2], g[3], g[4]};
}

constexpr int kTextScale = 2;  // ticks, axis labels, legend: 10x14-pixel glyphs
constexpr int kTickLen = 5;

constexpr int TextWidth(std::string_view s, int scale) {
  return s.empty() ? 0 : static_cast<int>(s.size()) * 6 * scale - scale;
}
constexpr int TextHeight(int scale) { return 7 * scale; }

struct Rgb {
  uint8_t r, g, b;
};
// Tableau-10 colours: distinguishable on white and in most colour-vision deficiencies.
constexpr Rgb kPalette[8] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                             {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {23, 190, 207}};
constexpr Rgb kWhite = {255, 255, 255};
constexpr Rgb kBlack = {0, 0, 0};
constexpr Rgb kAxis = {60, 60, 60};
constexpr Rgb kGrid = {225, 225, 225};
constexpr Rgb kLegendBorder = {160, 160, 160};

Rgb PaletteColor(size_t i) { return kPalette[i % 8]; }
bool SquareMarker(size_t i) { return i % 2 == 0; }

std::string Printf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Printf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  std::vsnprintf(out.data(), out.size(), fmt, ap2);
  va_end(ap2);
  out.pop_back();
  return out;
}

// ---- Which points are drawn ----

bool Drawable(double x, double y, bool log_x, bool log_y) {
  return std::isfinite(x) && std::isfinite(y) && (!log_x || x > 0) && (!log_y || y > 0);
}

// ---- Tick values and labels ----

double NiceCeil(double x) {  // smallest 1/2/5 x 10^k >= x
  const double p = std::pow(10.0, std::floor(std::log10(x)));
  const double f = x / p;
  const double nice = f <= 1.0 + 1e-9 ? 1 : f <= 2.0 + 1e-9 ? 2 : f <= 5.0 + 1e-9 ? 5 : 10;
  return nice * p;
}

double NextNice(double step) { return NiceCeil(step * 1.5); }

std::string StripZeros(std::string s) {
  if (s.find('.') == std::string::npos) return s;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

// One unit, suffix and number of decimals per axis so that labels read alike: 0.0K 2.5K 5.0K.
// Beyond G or below 1e-4 the unit is a power of ten written after the number: 2.5e-7.
std::string LinearLabel(double v, double step, double max_abs) {
  double unit = 1;
  std::string suffix;
  if (max_abs >= 1e13 || max_abs < 1e-4) {
    const int e = static_cast<int>(std::floor(std::log10(max_abs)));
    unit = std::pow(10.0, e), suffix = Printf("e%d", e);
  } else if (max_abs >= 1e10) {
    unit = 1e9, suffix = "G";
  } else if (max_abs >= 1e7) {
    unit = 1e6, suffix = "M";
  } else if (max_abs >= 1e4) {
    unit = 1e3, suffix = "K";
  }
  if (std::fabs(v) < step * 1e-6) {
    if (unit != 1) return "0";  // not "0K"
    v = 0;                      // and not "-0.0" from rounding
  }
  const int decimals =
      std::clamp(static_cast<int>(std::ceil(-std::log10(step / unit) - 1e-9)), 0, 9);
  return Printf("%.*f", decimals, v / unit) + suffix;
}

// Log-2 axes count in binary units (contexts: 4K 8K 16K), log-10 axes in decimal ones.
std::string LogLabel(int base, int e) {
  if (base == 2) {
    if (e >= 30) return Printf("%lldG", 1LL << (e - 30));
    if (e >= 20) return Printf("%lldM", 1LL << (e - 20));
    if (e >= 10) return Printf("%lldK", 1LL << (e - 10));
    if (e >= 0) return Printf("%lld", 1LL << e);
    if (e >= -4) return StripZeros(Printf("%.4f", std::ldexp(1.0, e)));
    return Printf("2^%d", e);
  }
  if (e >= 12 || e < -4) return Printf("1e%d", e);
  if (e >= 9) return Printf("%.0fG", std::pow(10.0, e - 9));
  if (e >= 6) return Printf("%.0fM", std::pow(10.0, e - 6));
  if (e >= 4) return Printf("%.0fK", std::pow(10.0, e - 3));
  if (e >= 0) return Printf("%.0f", std::pow(10.0, e));
  return StripZeros(Printf("%.4f", std::pow(10.0, e)));
}

struct Axis {
  double lo = 0, hi = 1;
  std::vector<PlotTick> ticks;
};

int MaxLabelWidth(const std::vector<PlotTick>& ticks) {
  int w = 0;
  for (const PlotTick& t : ticks) w = std::max(w, TextWidth(t.label, kTextScale));
  return w;
}

// Labels must not touch: x labels need their width plus a gap, y labels their height plus a gap.
bool LabelsFit(const std::vector<PlotTick>& ticks, double spacing_px, bool horizontal) {
  const int need = horizontal ? MaxLabelWidth(ticks) + 14 : TextHeight(kTextScale) + 10;
  return ticks.size() < 2 || spacing_px >= need;
}

Axis LinearAxis(double dmin, double dmax, int length_px, bool horizontal) {
  if (!(dmax > dmin)) {
    const double pad = dmin == 0 ? 1.0 : std::fabs(dmin) * 0.1;
    dmin -= pad;
    dmax += pad;
  }
  const int max_ticks = std::max(2, length_px / (horizontal ? 90 : 60));  // not crowded
  double step = NiceCeil((dmax - dmin) / max_ticks);
  Axis axis;
  for (int attempt = 0; attempt < 64; ++attempt, step = NextNice(step)) {
    axis.lo = std::floor(dmin / step + 1e-9) * step;
    axis.hi = std::ceil(dmax / step - 1e-9) * step;
    const int n = static_cast<int>(std::lround((axis.hi - axis.lo) / step));
    const double max_abs = std::max(std::fabs(axis.lo), std::fabs(axis.hi));
    axis.ticks.clear();
    for (int i = 0; i <= n; ++i) {
      const double v = axis.lo + i * step;
      axis.ticks.push_back({v, LinearLabel(v, step, max_abs)});
    }
    if (LabelsFit(axis.ticks, step / (axis.hi - axis.lo) * length_px, horizontal)) break;
  }
  return axis;
}

Axis LogAxis(double dmin, double dmax, int length_px, bool horizontal) {
  // Powers of 2 for counts that span at most 2^12 (contexts, batch sizes, threads), else decades.
  const int base = dmin >= 1 && std::log2(dmax / dmin) <= 12.0 ? 2 : 10;
  const double lb = std::log(static_cast<double>(base));
  int e_lo = static_cast<int>(std::floor(std::log(dmin) / lb + 1e-9));
  int e_hi = static_cast<int>(std::ceil(std::log(dmax) / lb - 1e-9));
  if (e_hi == e_lo) {
    --e_lo;
    ++e_hi;
  }
  Axis axis;
  axis.lo = std::pow(static_cast<double>(base), e_lo);
  axis.hi = std::pow(static_cast<double>(base), e_hi);
  for (int k = 1; k <= e_hi - e_lo; ++k) {
    axis.ticks.clear();
    for (int e = e_lo; e <= e_hi; e += k) {
      axis.ticks.push_back({std::pow(static_cast<double>(base), e), LogLabel(base, e)});
    }
    if (LabelsFit(axis.ticks, static_cast<double>(k) / (e_hi - e_lo) * length_px, horizontal)) {
      break;
    }
  }
  return axis;
}

Axis MakeAxis(double dmin, double dmax, bool log, int length_px, bool horizontal) {
  return log ? LogAxis(dmin, dmax, length_px, horizontal)
             : LinearAxis(dmin, dmax, length_px, horizontal);
}

double AxisFraction(double v, double lo, double hi, bool log) {
  if (log) return (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo));
  return (v - lo) / (hi - lo);
}

// ---- Layout ----

struct Extents {
  double x_min = INFINITY, x_max = -INFINITY, y_min = INFINITY, y_max = -INFINITY;
  size_t points = 0;
};

Extents DataExtents(const LinePlot& plot) {
  Extents e;
  for (const Series& s : plot.series) {
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!Drawable(s.x[i], s.y[i], plot.log_x, plot.log_y)) continue;
      e.x_min = std::min(e.x_min, s.x[i]);
      e.x_max = std::max(e.x_max, s.x[i]);
      e.y_min = std::min(e.y_min, s.y[i]);
      e.y_max = std::max(e.y_max, s.y[i]);
      ++e.points;
    }
  }
  return e;
}

// ---- Layout ----

constexpr int kLegendPad = 8;
constexpr int kLegendGap = 8;      // between legend rows
constexpr int kLegendSample = 28;  // width of the line sample in front of a label

// Shortens s with "..." until it is at most max_px wide at this scale.
std::string Ellipsize(std::string s, int max_px, int scale) {
  if (TextWidth(s, scale) <= max_px) return s;
  while (!s.empty() && TextWidth(s + "...", scale) > max_px) s.pop_back();
  return s + "...";
}

int LegendRowTop(const PlotFrame& f, size_t row) {
  return f.legend_top + kLegendPad + static_cast<int>(row) * (TextHeight(kTextScale) + kLegendGap);
}

// Calls fn(px, py, first_of_run) for every drawn point of series s, in order; a skipped point
// starts a new run.
template <typename Fn>
void ForEachPixel(const LinePlot& plot, const PlotFrame& f, const Series& s, Fn fn) {
  bool first = true;
  for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
    if (!Drawable(s.x[i], s.y[i], plot.log_x, plot.log_y)) {
      first = true;
      continue;
    }
    fn(f.PixelX(s.x[i]), f.PixelY(s.y[i]), first);
    first = false;
  }
}

// How much of the data a legend box at [l, r] x [t, b] would hide: markers weigh more than
// line samples (one every ~4 px).
int Covered(const LinePlot& plot, const PlotFrame& f, int l, int t, int r, int b) {
  int covered = 0;
  auto inside = [&](double px, double py) {
    return px >= l - 4 && px <= r + 4 && py >= t - 4 && py <= b + 4;
  };
  for (const Series& s : plot.series) {
    double qx = 0, qy = 0;
    ForEachPixel(plot, f, s, [&](double px, double py, bool first) {
      if (inside(px, py)) covered += 10;
      if (!first) {
        const int n = std::max(2, static_cast<int>(std::hypot(px - qx, py - qy) / 4));
        for (int k = 1; k < n; ++k) {
          const double a = static_cast<double>(k) / n;
          if (inside(qx + (px - qx) * a, qy + (py - qy) * a)) ++covered;
        }
      }
      qx = px, qy = py;
    });
  }
  return covered;
}

struct LegendSize {
  int w = 0, h = 0;
};

LegendSize MeasureLegend(const PlotFrame& f) {
  if (f.legend.empty()) return {};
  int label_w = 0;
  for (const PlotLegendEntry& e : f.legend) {
    label_w = std::max(label_w, TextWidth(e.label, kTextScale));
  }
  const int n = static_cast<int>(f.legend.size());
  return {kLegendPad + kLegendSample + 8 + label_w + kLegendPad,
          2 * kLegendPad + n * TextHeight(kTextScale) + (n - 1) * kLegendGap};
}

// Inside the plot area, in the corner where it hides the least data; returns how much it hides.
int PlaceLegendInside(const LinePlot& plot, PlotFrame& f) {
  const auto [w, h] = MeasureLegend(f);
  const int inset = 8;
  const std::array<std::pair<int, int>, 4> corners = {{
      {f.plot_right - inset - w, f.plot_top + inset},
      {f.plot_left + inset, f.plot_top + inset},
      {f.plot_right - inset - w, f.plot_bottom - inset - h},
      {f.plot_left + inset, f.plot_bottom - inset - h},
  }};
  int best = -1;
  for (const auto& [l, t] : corners) {
    const int c = Covered(plot, f, l, t, l + w, t + h);
    if (best < 0 || c < best) {
      best = c;
      f.legend_left = l, f.legend_top = t, f.legend_right = l + w, f.legend_bottom = t + h;
    }
  }
  return best;
}

// ---- Drawing: one description of the picture, two outputs ----

enum class Anchor { kStart, kMiddle, kEnd };

// The PNG and the SVG are drawn by the same calls, so they show the same thing in the same place.
class Painter {
 public:
  virtual ~Painter() = default;
  virtual void Line(double x0, double y0, double x1, double y1, Rgb c, int width_px) = 0;
  virtual void Polyline(const std::vector<std::pair<double, double>>& pts, Rgb c) = 0;  // 2 px
  virtual void Box(int l, int t, int r, int b, Rgb stroke, bool white_fill) = 0;
  virtual void Marker(double x, double y, bool square, Rgb c) = 0;
  // Black text; (x, top) is the anchor point on the top edge of the 7-row text box.
  virtual void Text(double x, double top, std::string_view s, int scale, Anchor a) = 0;
  // A quarter turn counter-clockwise (read bottom to top), centred on y, glyph tops at x.
  virtual void TextUp(double x, double center_y, std::string_view s, int scale) = 0;
};

class Canvas final : public Painter {
 public:
  Canvas(int w, int h) : w_(w), h_(h), px_(static_cast<size_t>(w) * h * 3, 255) {}

  // Bresenham with a width_px x width_px brush.
  void Line(double fx0, double fy0, double fx1, double fy1, Rgb c, int width_px) override {
    int x0 = Round(fx0), y0 = Round(fy0);
    const int x1 = Round(fx1), y1 = Round(fy1);
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    while (true) {
      Fill(x0, y0, x0 + width_px - 1, y0 + width_px - 1, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  void Polyline(const std::vector<std::pair<double, double>>& pts, Rgb c) override {
    for (size_t i = 1; i < pts.size(); ++i) {
      Line(pts[i - 1].first, pts[i - 1].second, pts[i].first, pts[i].second, c, 2);
    }
  }
  void Box(int l, int t, int r, int b, Rgb stroke, bool white_fill) override {
    if (white_fill) Fill(l, t, r, b, kWhite);
    Fill(l, t, r, t, stroke), Fill(l, b, r, b, stroke);
    Fill(l, t, l, b, stroke), Fill(r, t, r, b, stroke);
  }
  void Marker(double fx, double fy, bool square, Rgb c) override {
    const int x = Round(fx), y = Round(fy);
    if (square) return Fill(x - 3, y - 3, x + 3, y + 3, c);
    for (int dy = -4; dy <= 4; ++dy) {
      for (int dx = -4; dx <= 4; ++dx) {
        if (dx * dx + dy * dy <= 18) Fill(x + dx, y + dy, x + dx, y + dy, c);
      }
    }
  }
  void Text(double x, double top, std::string_view s, int scale, Anchor a) override {
    const int w = TextWidth(s, scale);
    const int left = Round(x) - (a == Anchor::kMiddle ? w / 2 : a == Anchor::kEnd ? w : 0);
    Glyphs(left, Round(top), s, scale, false);
  }
  void TextUp(double x, double center_y, std::string_view s, int scale) override {
    Glyphs(Round(x), static_cast<int>(center_y + TextWidth(s, scale) / 2.0), s, scale, true);
  }
  std::vector<uint8_t> Take() && { return std::move(px_); }

 private:
  static int Round(double v) { return static_cast<int>(std::lround(v)); }
  void Fill(int x0, int y0, int x1, int y1, Rgb c) {  // inclusive corners, clipped
    for (int y = std::max(y0, 0); y <= std::min(y1, h_ - 1); ++y) {
      for (int x = std::max(x0, 0); x <= std::min(x1, w_ - 1); ++x) {
        uint8_t* p = &px_[(static_cast<size_t>(y) * w_ + x) * 3];
        p[0] = c.r, p[1] = c.g, p[2] = c.b;
      }
    }
  }
  // Upright: (x, y) is the top-left corner. Up: (x, y) is where reading starts, glyph tops at x.
  void Glyphs(int x, int y, std::string_view s, int scale, bool up) {
    for (size_t k = 0; k < s.size(); ++k) {
      const std::array<uint16_t, 5> glyph = Glyph(s[k]);
      for (int col = 0; col < 5; ++col) {
        for (int row = 0; row < 9; ++row) {
          if (!((glyph[col] >> row) & 1)) continue;
          const int u = (static_cast<int>(k) * 6 + col) * scale, v = row * scale;
          if (up) {
            Fill(x + v, y - u - scale + 1, x + v + scale - 1, y - u, kBlack);
          } else {
            Fill(x + u, y + v, x + u + scale - 1, y + v + scale - 1, kBlack);
          }
        }
      }
    }
  }

  int w_, h_;
  std::vector<uint8_t> px_;  // [h][w][3]
};

std::string Hex(Rgb c) { return Printf("#%02x%02x%02x", c.r, c.g, c.b); }

std::string XmlEscape(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += static_cast<unsigned char>(ch) < 0x20 ? '?' : ch;  // not allowed in XML
    }
  }
  return out;
}

// Text is monospace at 10 px per font scale unit: its advance (0.6 em) is the bitmap font's 6
// units, so the layout computed with the bitmap font holds for the SVG as well.
class SvgPainter final : public Painter {
 public:
  explicit SvgPainter(std::string* out) : out_(*out) {}

  void Line(double x0, double y0, double x1, double y1, Rgb c, int width_px) override {
    out_ += Printf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"", x0, y0,
                   x1, y1, Hex(c).c_str());
    out_ += width_px == 1 ? "/>\n" : Printf(" stroke-width=\"%d\"/>\n", width_px);
  }
  void Polyline(const std::vector<std::pair<double, double>>& pts, Rgb c) override {
    out_ += "<polyline fill=\"none\" stroke=\"" + Hex(c) +
            "\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"";
    for (size_t i = 0; i < pts.size(); ++i) {
      out_ += Printf("%s%.1f,%.1f", i == 0 ? "" : " ", pts[i].first, pts[i].second);
    }
    out_ += "\"/>\n";
  }
  void Box(int l, int t, int r, int b, Rgb stroke, bool white_fill) override {
    out_ +=
        Printf("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"%s\"/>\n",
               l, t, r - l, b - t, white_fill ? "#ffffff" : "none", Hex(stroke).c_str());
  }
  void Marker(double x, double y, bool square, Rgb c) override {
    if (square) {
      out_ += Printf("<rect x=\"%.1f\" y=\"%.1f\" width=\"7\" height=\"7\" fill=\"%s\"/>\n",
                     x - 3.5, y - 3.5, Hex(c).c_str());
    } else {
      out_ +=
          Printf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.2\" fill=\"%s\"/>\n", x, y, Hex(c).c_str());
    }
  }
  void Text(double x, double top, std::string_view s, int scale, Anchor a) override {
    const char* anchor = a == Anchor::kMiddle ? "middle" : a == Anchor::kEnd ? "end" : "start";
    out_ += Printf("<text x=\"%.1f\" y=\"%.1f\" font-size=\"%d\" text-anchor=\"%s\">", x,
                   top + TextHeight(scale), 10 * scale, anchor) +
            XmlEscape(s) + "</text>\n";
  }
  void TextUp(double x, double center_y, std::string_view s, int scale) override {
    out_ += Printf(
                "<text x=\"0\" y=\"0\" font-size=\"%d\" text-anchor=\"middle\" "
                "transform=\"translate(%.1f,%.1f) rotate(-90)\">",
                10 * scale, x + TextHeight(scale), center_y) +
            XmlEscape(s) + "</text>\n";
  }

 private:
  std::string& out_;
};

void Draw(const LinePlot& plot, const PlotFrame& f, Painter& p) {
  const int th = TextHeight(kTextScale);
  for (const PlotTick& t : f.x_ticks) {
    const double px = std::round(f.PixelX(t.value));
    p.Line(px, f.plot_top, px, f.plot_bottom, kGrid, 1);
    p.Line(px, f.plot_bottom, px, f.plot_bottom + kTickLen, kAxis, 1);
    p.Text(px, f.plot_bottom + kTickLen + 6, t.label, kTextScale, Anchor::kMiddle);
  }
  for (const PlotTick& t : f.y_ticks) {
    const double py = std::round(f.PixelY(t.value));
    p.Line(f.plot_left, py, f.plot_right, py, kGrid, 1);
    p.Line(f.plot_left - kTickLen, py, f.plot_left, py, kAxis, 1);
    p.Text(f.plot_left - kTickLen - 6, py - th / 2.0, t.label, kTextScale, Anchor::kEnd);
  }
  p.Box(f.plot_left, f.plot_top, f.plot_right, f.plot_bottom, kAxis, false);
  for (size_t i = 0; i < plot.series.size(); ++i) {
    std::vector<std::pair<double, double>> run;  // unbroken points, in pixels
    ForEachPixel(plot, f, plot.series[i], [&](double px, double py, bool first) {
      if (first && !run.empty()) p.Polyline(run, PaletteColor(i)), run.clear();
      run.emplace_back(px, py);
    });
    if (!run.empty()) p.Polyline(run, PaletteColor(i));
    ForEachPixel(plot, f, plot.series[i], [&](double px, double py, bool) {
      p.Marker(px, py, SquareMarker(i), PaletteColor(i));
    });
  }
  if (!f.title.empty()) p.Text(f.width / 2.0, 12, f.title, f.title_scale, Anchor::kMiddle);
  if (!f.x_label.empty()) {
    p.Text((f.plot_left + f.plot_right) / 2.0, f.plot_bottom + kTickLen + 6 + th + 10, f.x_label,
           kTextScale, Anchor::kMiddle);
  }
  if (!f.y_label.empty()) p.TextUp(12, (f.plot_top + f.plot_bottom) / 2.0, f.y_label, kTextScale);
  if (f.legend.empty()) return;
  p.Box(f.legend_left, f.legend_top, f.legend_right, f.legend_bottom, kLegendBorder, true);
  for (size_t row = 0; row < f.legend.size(); ++row) {
    const size_t i = f.legend[row].series;
    const int top = LegendRowTop(f, row), mid = top + th / 2;
    const int x0 = f.legend_left + kLegendPad;
    p.Line(x0, mid, x0 + kLegendSample, mid, PaletteColor(i), 2);
    p.Marker(x0 + kLegendSample / 2, mid, SquareMarker(i), PaletteColor(i));
    p.Text(x0 + kLegendSample + 8, top, f.legend[row].label, kTextScale, Anchor::kStart);
  }
}

// Atomic write (base/file_util); every failure is an IoError naming the plot's path.
Status WritePlotFile(const std::string& path, const std::string& data) {
  const Status st = WriteFileAtomically(path, data);
  if (st.ok()) return st;
  return IoError("cannot write plot %s: %s", path.c_str(), st.message().c_str());
}

}  // namespace

// ---- Public ----

double PlotFrame::PixelX(double x) const {
  return plot_left + AxisFraction(x, x_lo, x_hi, log_x) * (plot_right - plot_left);
}

double PlotFrame::PixelY(double y) const {
  return plot_bottom - AxisFraction(y, y_lo, y_hi, log_y) * (plot_bottom - plot_top);
}

std::vector<uint8_t> SeriesColor(size_t series_index) {
  const Rgb c = PaletteColor(series_index);
  return {c.r, c.g, c.b};
}

Status ValidatePlot(const LinePlot& plot, int width, int height) {
  if (width < 200 || width > 8192 || height < 150 || height > 8192) {
    return InvalidArgument("plot size %dx%d is outside [200, 8192] x [150, 8192]", width, height);
  }
  for (const Series& s : plot.series) {
    if (s.x.size() != s.y.size()) {
      return InvalidArgument("plot '%s', series '%s': %zu x values but %zu y values",
                             plot.title.c_str(), s.label.c_str(), s.x.size(), s.y.size());
    }
  }
  if (DataExtents(plot).points == 0) {
    return InvalidArgument("plot '%s' has no point to draw (%zu series; points must be finite%s)",
                           plot.title.c_str(), plot.series.size(),
                           plot.log_x || plot.log_y ? " and > 0 on a log axis" : "");
  }
  return Status::Ok();
}

namespace {

// legend_outside: the legend goes right of the data area, which gets narrower.
StatusOr<PlotFrame> LayoutWithLegend(const LinePlot& plot, int width, int height,
                                     bool legend_outside) {
  const Extents ext = DataExtents(plot);
  const int th = TextHeight(kTextScale);
  PlotFrame f;
  f.width = width, f.height = height;
  f.log_x = plot.log_x, f.log_y = plot.log_y;
  f.title_scale = TextWidth(plot.title, 3) <= width - 24 ? 3 : 2;
  f.title = Ellipsize(plot.title, width - 24, f.title_scale);
  for (size_t i = 0; i < plot.series.size(); ++i) {
    if (plot.series[i].label.empty()) continue;
    f.legend.push_back({i, Ellipsize(plot.series[i].label, std::max(60, width / 3), kTextScale)});
  }
  f.plot_top = f.title.empty() ? 16 : 12 + TextHeight(f.title_scale) + 16;
  f.plot_bottom = height - (kTickLen + 6 + th + (plot.x_label.empty() ? 0 : 10 + th) + 12);
  f.y_label = Ellipsize(plot.y_label, f.plot_bottom - f.plot_top, kTextScale);
  Axis y = MakeAxis(ext.y_min, ext.y_max, plot.log_y, f.plot_bottom - f.plot_top, false);
  f.plot_left = 12 + (f.y_label.empty() ? 0 : th + 10) + MaxLabelWidth(y.ticks) + 6 + kTickLen;
  const LegendSize legend = MeasureLegend(f);
  f.legend_outside = legend_outside && !f.legend.empty();
  // The last x label is centred on the right edge: widen the margin once if it sticks out.
  int right_margin = f.legend_outside ? legend.w + 20 : 20;
  Axis x;
  for (int pass = 0; pass < 2; ++pass) {
    f.plot_right = width - right_margin;
    x = MakeAxis(ext.x_min, ext.x_max, plot.log_x, f.plot_right - f.plot_left, true);
    const int overhang = TextWidth(x.ticks.back().label, kTextScale) / 2 + 6;
    if (overhang <= right_margin) break;
    right_margin = overhang;
  }
  if (f.plot_right - f.plot_left < 40 || f.plot_bottom - f.plot_top < 40) {
    return InvalidArgument("plot size %dx%d leaves no room for the data next to its labels", width,
                           height);
  }
  f.x_label = Ellipsize(plot.x_label, f.plot_right - f.plot_left, kTextScale);
  f.x_lo = x.lo, f.x_hi = x.hi, f.x_ticks = std::move(x.ticks);
  f.y_lo = y.lo, f.y_hi = y.hi, f.y_ticks = std::move(y.ticks);
  if (f.legend_outside) {
    f.legend_left = width - 10 - legend.w, f.legend_top = f.plot_top;
    f.legend_right = width - 10, f.legend_bottom = f.plot_top + legend.h;
  }
  return f;
}

}  // namespace

StatusOr<PlotFrame> LayoutPlot(const LinePlot& plot, int width, int height) {
  KVSTAR_RETURN_IF_ERROR(ValidatePlot(plot, width, height));
  KVSTAR_ASSIGN_OR_RETURN(PlotFrame inside, LayoutWithLegend(plot, width, height, false));
  if (inside.legend.empty()) return inside;
  // Over the data in its emptiest corner if that hides (almost) nothing: more room for the data.
  // Else right of the data area, when that leaves the data a fair width.
  if (PlaceLegendInside(plot, inside) < 10) return inside;
  StatusOr<PlotFrame> outside = LayoutWithLegend(plot, width, height, true);
  if (!outside.ok() ||
      outside->plot_right - outside->plot_left < (inside.plot_right - inside.plot_left) / 2) {
    return inside;
  }
  return outside;
}

StatusOr<std::vector<uint8_t>> RenderPlotRgb(const LinePlot& plot, int width, int height) {
  KVSTAR_ASSIGN_OR_RETURN(const PlotFrame f, LayoutPlot(plot, width, height));
  Canvas canvas(width, height);
  Draw(plot, f, canvas);
  return std::move(canvas).Take();
}

std::string PlotSvg(const LinePlot& plot, int width, int height) {
  std::string svg = Printf(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
      "font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n",
      width, height, width, height);
  SvgPainter painter(&svg);
  StatusOr<PlotFrame> frame = LayoutPlot(plot, width, height);
  if (frame.ok()) {
    Draw(plot, *frame, painter);
  } else {
    painter.Text(10, 10, "cannot plot: " + frame.status().ToString(), 1, Anchor::kStart);
  }
  return svg + "</svg>\n";
}

Status WritePlotPng(const LinePlot& plot, const std::string& path, int width, int height) {
  KVSTAR_ASSIGN_OR_RETURN(const std::vector<uint8_t> rgb, RenderPlotRgb(plot, width, height));
  return WritePlotFile(path, EncodePngRgb(rgb.data(), width, height));
}

Status WritePlotSvg(const LinePlot& plot, const std::string& path, int width, int height) {
  KVSTAR_RETURN_IF_ERROR(ValidatePlot(plot, width, height));
  return WritePlotFile(path, PlotSvg(plot, width, height));
}

}  // namespace kvstar
