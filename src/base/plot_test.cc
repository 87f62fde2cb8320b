#include "base/plot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "base/file_util.h"

namespace kvstar {
namespace {

// ---- A small, independent PNG reader: every CRC, zlib header, stored and fixed-code deflate
// blocks, Adler-32. Anything unexpected is an error string, so the tests can assert on it. ----

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // [height][width][3]
  int stored_blocks = 0, fixed_blocks = 0;
  const uint8_t* At(int x, int y) const { return &rgb[(static_cast<size_t>(y) * width + x) * 3]; }
};

uint32_t TestCrc(const uint8_t* p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

class BitReader {
 public:
  BitReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool Bits(int count, uint32_t* out) {
    uint32_t v = 0;
    for (int i = 0; i < count; ++i) {
      if (pos_ >= n_ * 8) return false;
      v |= ((p_[pos_ / 8] >> (pos_ % 8)) & 1u) << i;
      ++pos_;
    }
    *out = v;
    return true;
  }
  void AlignToByte() { pos_ = (pos_ + 7) / 8 * 8; }
  size_t byte_pos() const { return pos_ / 8; }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
};

// Fixed literal/length code, read MSB first one bit at a time (RFC 1951 3.2.6).
bool FixedSymbol(BitReader& br, int* sym) {
  uint32_t code = 0, bit;
  for (int len = 1; len <= 9; ++len) {
    if (!br.Bits(1, &bit)) return false;
    code = (code << 1) | bit;
    if (len == 7 && code <= 23) return *sym = 256 + static_cast<int>(code), true;
    if (len == 8 && code >= 0x30 && code <= 0xBF) return *sym = static_cast<int>(code) - 0x30, true;
    if (len == 8 && code >= 0xC0 && code <= 0xC7)
      return *sym = 280 + static_cast<int>(code) - 0xC0, true;
    if (len == 9 && code >= 0x190) return *sym = 144 + static_cast<int>(code) - 0x190, true;
  }
  return false;
}

std::string Inflate(const uint8_t* p, size_t n, std::string* out, Image* img) {
  static const int kLenBase[] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
  static const int kLenExtra[] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                  2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  BitReader br(p, n);
  uint32_t final = 0, type = 0;
  do {
    if (!br.Bits(1, &final) || !br.Bits(2, &type)) return "truncated block header";
    if (type == 0) {
      br.AlignToByte();
      const size_t at = br.byte_pos();
      if (at + 4 > n) return "truncated stored header";
      const uint32_t len = p[at] | (p[at + 1] << 8), nlen = p[at + 2] | (p[at + 3] << 8);
      if ((len ^ 0xFFFF) != nlen) return "stored block LEN/NLEN mismatch";
      if (at + 4 + len > n) return "truncated stored block";
      out->append(reinterpret_cast<const char*>(p + at + 4), len);
      br = BitReader(p + at + 4 + len, n - at - 4 - len);
      p += at + 4 + len, n -= at + 4 + len;
      ++img->stored_blocks;
    } else if (type == 1) {
      ++img->fixed_blocks;
      while (true) {
        int sym;
        if (!FixedSymbol(br, &sym)) return "bad fixed code";
        if (sym < 256) {
          out->push_back(static_cast<char>(sym));
          continue;
        }
        if (sym == 256) break;
        if (sym > 285) return "bad length symbol";
        uint32_t extra, dcode, dextra;
        if (!br.Bits(kLenExtra[sym - 257], &extra)) return "truncated length";
        const size_t len = kLenBase[sym - 257] + extra;
        uint32_t rev;
        if (!br.Bits(5, &rev)) return "truncated distance";
        dcode = 0;
        for (int i = 0; i < 5; ++i) dcode |= ((rev >> i) & 1) << (4 - i);
        if (dcode >= 30) return "bad distance code";
        const int ebits = dcode < 4 ? 0 : static_cast<int>(dcode / 2 - 1);
        const size_t dbase = dcode < 4 ? dcode + 1 : (size_t{2 + (dcode & 1)} << ebits) + 1;
        if (!br.Bits(ebits, &dextra)) return "truncated distance extra";
        const size_t dist = dbase + dextra;
        if (dist > out->size()) return "distance before the start";
        for (size_t i = 0; i < len; ++i) out->push_back((*out)[out->size() - dist]);
      }
    } else {
      return "unsupported block type " + std::to_string(type);
    }
  } while (!final);
  return "";
}

// Returns "" on success, else what is wrong.
std::string DecodePng(const std::string& file, Image* img) {
  const auto* p = reinterpret_cast<const uint8_t*>(file.data());
  if (file.size() < 8 || file.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return "bad signature";
  size_t pos = 8;
  std::string idat;
  bool ihdr = false, iend = false;
  while (pos + 12 <= file.size() && !iend) {
    const uint32_t len = Be32(p + pos);
    if (pos + 12 + len > file.size()) return "truncated chunk";
    const std::string type = file.substr(pos + 4, 4);
    if (TestCrc(p + pos + 4, len + 4) != Be32(p + pos + 8 + len)) return "CRC mismatch in " + type;
    const uint8_t* d = p + pos + 8;
    if (type == "IHDR") {
      if (len != 13) return "IHDR length";
      img->width = static_cast<int>(Be32(d));
      img->height = static_cast<int>(Be32(d + 4));
      if (d[8] != 8 || d[9] != 2 || d[10] != 0 || d[11] != 0 || d[12] != 0) return "not RGB8";
      ihdr = true;
    } else if (type == "IDAT") {
      idat.append(reinterpret_cast<const char*>(d), len);
    } else if (type == "IEND") {
      iend = true;
    }
    pos += 12 + len;
  }
  if (!ihdr || !iend || pos != file.size()) return "missing IHDR/IEND or trailing bytes";
  if (idat.size() < 6) return "short IDAT";
  const auto* z = reinterpret_cast<const uint8_t*>(idat.data());
  if ((z[0] & 0x0F) != 8 || ((z[0] << 8) | z[1]) % 31 != 0) return "bad zlib header";
  std::string raw;
  const std::string err = Inflate(z + 2, idat.size() - 6, &raw, img);
  if (!err.empty()) return err;
  uint32_t a = 1, b = 0;
  for (const char c : raw) a = (a + static_cast<uint8_t>(c)) % 65521, b = (b + a) % 65521;
  if (((b << 16) | a) != Be32(z + idat.size() - 4)) return "Adler-32 mismatch";
  const size_t row = 1 + static_cast<size_t>(img->width) * 3;
  if (raw.size() != row * img->height) return "decoded size does not match IHDR";
  for (int y = 0; y < img->height; ++y) {
    if (raw[y * row] != 0) return "filter type is not 0";
    img->rgb.insert(img->rgb.end(), raw.begin() + y * row + 1, raw.begin() + (y + 1) * row);
  }
  return "";
}

// ---- Helpers ----

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/plot_test_" + std::to_string(::getpid()) + "_" + name;
}

bool IsColor(const uint8_t* px, const std::vector<uint8_t>& c) {
  return px[0] == c[0] && px[1] == c[1] && px[2] == c[2];
}
bool IsWhite(const uint8_t* px) { return px[0] == 255 && px[1] == 255 && px[2] == 255; }

LinePlot ThroughputPlot() {
  LinePlot plot;
  plot.title = "Decode throughput";
  plot.x_label = "context (tokens)";
  plot.y_label = "tokens/s";
  plot.log_x = true;
  plot.series = {
      {"dense", {4096, 8192, 16384, 32768, 65536, 131072}, {180, 150, 110, 70, 40, 21}},
      {"kvstar", {4096, 8192, 16384, 32768, 65536, 131072}, {175, 168, 160, 152, 140, 131}},
      {"offload", {4096, 8192, 16384, 32768, 65536, 131072}, {60, 35, 19, 10, 5.2, 2.7}},
  };
  return plot;
}

Image WriteAndRead(const LinePlot& plot, const std::string& name, int w = 900, int h = 560) {
  const std::string path = TempPath(name);
  const Status st = WritePlotPng(plot, path, w, h);
  EXPECT_TRUE(st.ok()) << st.ToString();
  StatusOr<std::string> file = ReadFileToString(path);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  Image img;
  if (file.ok()) {
    EXPECT_EQ(DecodePng(*file, &img), "");
  }
  return img;
}

// ---- PNG encoder ----

std::vector<uint8_t> NoiseImage(int w, int h) {
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  uint32_t s = 12345;
  for (size_t i = 0; i < rgb.size(); ++i) {
    s = s * 1664525u + 1013904223u;
    // Half noise, half flat runs: exercises literals and both match distances.
    rgb[i] = (i / 1500) % 2 ? static_cast<uint8_t>(s >> 24) : static_cast<uint8_t>(i / 3000);
  }
  return rgb;
}

TEST(PngTest, StoredBlocksRoundTrip) {
  const int w = 301, h = 200;  // 181k raw bytes: 3 stored blocks, the last one partial
  const std::vector<uint8_t> rgb = NoiseImage(w, h);
  Image img;
  ASSERT_EQ(DecodePng(EncodePngRgb(rgb.data(), w, h, PngDeflate::kStored), &img), "");
  EXPECT_EQ(img.width, w);
  EXPECT_EQ(img.height, h);
  EXPECT_EQ(img.stored_blocks, 3);
  EXPECT_EQ(img.fixed_blocks, 0);
  EXPECT_EQ(img.rgb, rgb);
}

TEST(PngTest, FixedHuffmanRoundTripAndSmaller) {
  const int w = 257, h = 130;
  const std::vector<uint8_t> rgb = NoiseImage(w, h);
  const std::string png = EncodePngRgb(rgb.data(), w, h, PngDeflate::kFixedHuffman);
  Image img;
  ASSERT_EQ(DecodePng(png, &img), "");
  EXPECT_EQ(img.fixed_blocks, 1);
  EXPECT_EQ(img.rgb, rgb);
  EXPECT_LT(png.size(), EncodePngRgb(rgb.data(), w, h, PngDeflate::kStored).size());
}

TEST(PngTest, ReaderCatchesCorruption) {
  const std::vector<uint8_t> rgb = NoiseImage(40, 30);
  std::string png = EncodePngRgb(rgb.data(), 40, 30);
  Image ok;
  ASSERT_EQ(DecodePng(png, &ok), "");
  png[60] ^= 0x10;  // inside IDAT
  Image bad;
  EXPECT_EQ(DecodePng(png, &bad), "CRC mismatch in IDAT");
}

// ---- Plots ----

TEST(PlotTest, PngHasSeriesColoursAtPointsAndWhiteMargins) {
  const LinePlot plot = ThroughputPlot();
  const Image img = WriteAndRead(plot, "throughput.png");
  ASSERT_EQ(img.width, 900);
  ASSERT_EQ(img.height, 560);
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  for (size_t s = 0; s < plot.series.size(); ++s) {
    for (size_t i = 0; i < plot.series[s].x.size(); ++i) {
      const int px = static_cast<int>(std::lround(f->PixelX(plot.series[s].x[i])));
      const int py = static_cast<int>(std::lround(f->PixelY(plot.series[s].y[i])));
      ASSERT_TRUE(px >= f->plot_left && px <= f->plot_right && py >= f->plot_top &&
                  py <= f->plot_bottom);
      EXPECT_TRUE(IsColor(img.At(px, py), SeriesColor(s))) << "series " << s << " point " << i;
    }
  }
  // Corners and the strip right of the plot area are background.
  for (const auto& [x0, y0] : {std::pair{0, 0}, {890, 0}, {0, 550}, {890, 550}}) {
    for (int y = y0; y < y0 + 10; ++y) {
      for (int x = x0; x < x0 + 10; ++x) ASSERT_TRUE(IsWhite(img.At(x, y))) << x << "," << y;
    }
  }
  for (int y = f->plot_top; y <= f->plot_bottom; ++y) {
    for (int x = f->plot_right + 6; x < 900 - 2; ++x) {
      // Markers on the edge overhang by 4 px; the last x tick label sits below the area.
      ASSERT_TRUE(IsWhite(img.At(x, y))) << x << "," << y;
    }
  }
}

TEST(PlotTest, LegendHasTextAndSamplesAndHidesNoPoint) {
  const LinePlot plot = ThroughputPlot();
  const Image img = WriteAndRead(plot, "legend.png");
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok());
  EXPECT_FALSE(f->legend_outside);  // the data leaves a corner free
  EXPECT_GE(f->legend_left, f->plot_left);
  EXPECT_LE(f->legend_right, f->plot_right);
  ASSERT_GT(f->legend_right - f->legend_left, 40);
  ASSERT_GT(f->legend_bottom - f->legend_top, 3 * 14);
  const int text_left = f->legend_left + 8 + 28 + 8;
  for (size_t s = 0; s < plot.series.size(); ++s) {
    const int top = f->legend_top + 8 + static_cast<int>(s) * 22;
    int dark = 0;
    for (int y = top; y < top + 14; ++y) {
      for (int x = text_left; x < f->legend_right; ++x) dark += img.At(x, y)[0] < 64;
    }
    EXPECT_GT(dark, 20) << "legend row " << s << " has no text";
    EXPECT_TRUE(IsColor(img.At(f->legend_left + 10, top + 7), SeriesColor(s))) << "row " << s;
    for (size_t i = 0; i < plot.series[s].x.size(); ++i) {
      const double px = f->PixelX(plot.series[s].x[i]), py = f->PixelY(plot.series[s].y[i]);
      EXPECT_FALSE(px >= f->legend_left && px <= f->legend_right && py >= f->legend_top &&
                   py <= f->legend_bottom)
          << "legend covers series " << s << " point " << i;
    }
  }
}

TEST(PlotTest, LegendMovesOutsideWhenNoCornerIsFree) {
  LinePlot plot;
  for (int s = 0; s < 10; ++s) {
    Series series{"series number " + std::to_string(s), {}, {}};
    for (int i = 0; i < 20; ++i) {
      series.x.push_back(i * 0.37 - 3);
      series.y.push_back(std::sin(i * 0.3 + s) * 1234.5);
    }
    plot.series.push_back(series);
  }
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->legend_outside);
  EXPECT_GT(f->legend_left, f->plot_right);
  EXPECT_LE(f->legend_right, 900);
  ASSERT_EQ(f->legend.size(), 10u);
  EXPECT_EQ(f->legend[9].label, "series number 9");
  const Image img = WriteAndRead(plot, "legend_outside.png");
  for (size_t s = 0; s < 10; ++s) {
    const int top = f->legend_top + 8 + static_cast<int>(s) * 22;
    EXPECT_TRUE(IsColor(img.At(f->legend_left + 10, top + 7), SeriesColor(s))) << "row " << s;
  }
  // A small image has no room beside the data: the legend stays over it, labels shortened.
  StatusOr<PlotFrame> small = LayoutPlot(plot, 420, 300);
  ASSERT_TRUE(small.ok());
  EXPECT_FALSE(small->legend_outside);
  EXPECT_EQ(small->legend[0].label.substr(small->legend[0].label.size() - 3), "...");
}

TEST(PlotTest, LogAxisPowersOfTwoWithBinarySuffixes) {
  const LinePlot plot = ThroughputPlot();
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok());
  std::vector<std::string> labels;
  for (const PlotTick& t : f->x_ticks) labels.push_back(t.label);
  EXPECT_EQ(labels, (std::vector<std::string>{"4K", "8K", "16K", "32K", "64K", "128K"}));
  // Doubling the context moves a point by the same distance, left to right, in the image too.
  const Image img = WriteAndRead(plot, "logx.png");
  const std::vector<double>& xs = plot.series[1].x;
  std::vector<double> px;
  for (size_t i = 0; i < xs.size(); ++i) {
    px.push_back(f->PixelX(xs[i]));
    const int py = static_cast<int>(std::lround(f->PixelY(plot.series[1].y[i])));
    EXPECT_TRUE(IsColor(img.At(static_cast<int>(std::lround(px[i])), py), SeriesColor(1)));
  }
  for (size_t i = 1; i < px.size(); ++i) {
    EXPECT_GT(px[i], px[i - 1]);
    EXPECT_NEAR(px[i] - px[i - 1], px[1] - px[0], 1e-6);
  }
}

TEST(PlotTest, LogYAxisUsesDecadesForWideRangesAndIsMonotonic) {
  LinePlot plot;
  plot.log_y = true;
  plot.series = {{"latency", {1, 2, 3, 4, 5}, {0.01, 1, 100, 1e4, 1e6}}};
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok());
  for (const PlotTick& t : f->y_ticks) {
    const double e = std::log10(t.value);
    EXPECT_NEAR(e, std::round(e), 1e-9) << t.label;
  }
  EXPECT_EQ(f->y_ticks.front().label, "0.01");
  EXPECT_EQ(f->y_ticks.back().label, "1M");
  const Image img = WriteAndRead(plot, "logy.png");
  double prev = 1e9;
  for (size_t i = 0; i < 5; ++i) {
    const double py = f->PixelY(plot.series[0].y[i]);
    EXPECT_LT(py, prev);  // larger values higher up
    if (i > 0) {
      EXPECT_NEAR(prev - py, f->PixelY(1) - f->PixelY(100), 1e-6);
    }
    prev = py;
    EXPECT_TRUE(IsColor(img.At(static_cast<int>(std::lround(f->PixelX(i + 1.0))),
                               static_cast<int>(std::lround(py))),
                        SeriesColor(0)));
  }
}

TEST(PlotTest, LinearTicksAreNiceAndDoNotOverlap) {
  LinePlot plot;
  plot.series = {{"acc", {0.05, 0.1, 0.25, 0.5, 0.73}, {0.31, 0.52, 0.8, 0.91, 0.93}},
                 {"tput", {0.05, 0.73}, {0.3, 0.9}}};
  for (const int w : {900, 400, 240}) {
    StatusOr<PlotFrame> f = LayoutPlot(plot, w, 300);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_GE(f->x_ticks.size(), 2u);
    const double step = f->x_ticks[1].value - f->x_ticks[0].value;
    const double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    EXPECT_TRUE(std::fabs(mant - 1) < 1e-6 || std::fabs(mant - 2) < 1e-6 ||
                std::fabs(mant - 5) < 1e-6)
        << "step " << step;
    for (const PlotTick& t : f->y_ticks) {  // one number of decimals on an axis: 0.3 ... 1.0
      EXPECT_EQ(t.label.size(), f->y_ticks[0].label.size()) << t.label;
    }
    EXPECT_LE(f->x_lo, 0.05);
    EXPECT_GE(f->x_hi, 0.73);
    for (size_t i = 1; i < f->x_ticks.size(); ++i) {
      const double gap = f->PixelX(f->x_ticks[i].value) - f->PixelX(f->x_ticks[i - 1].value);
      const double half = (f->x_ticks[i].label.size() + f->x_ticks[i - 1].label.size()) * 12 / 2.0;
      EXPECT_GT(gap, half) << "labels " << f->x_ticks[i - 1].label << " and " << f->x_ticks[i].label
                           << " overlap at width " << w;
    }
  }
  // Wide labels: the first step guess would put them closer than their width plus a gap.
  LinePlot narrow;
  narrow.series = {{"", {0.0001, 0.0009}, {1, 2}}};
  for (int w = 240; w <= 900; w += 7) {
    StatusOr<PlotFrame> nf = LayoutPlot(narrow, w, 300);
    ASSERT_TRUE(nf.ok());
    for (size_t i = 1; i < nf->x_ticks.size(); ++i) {
      const double gap = nf->PixelX(nf->x_ticks[i].value) - nf->PixelX(nf->x_ticks[i - 1].value);
      const double need = (nf->x_ticks[i].label.size() + nf->x_ticks[i - 1].label.size()) * 6.0;
      EXPECT_GE(gap, need + 8) << nf->x_ticks[i - 1].label << " " << nf->x_ticks[i].label
                               << " at width " << w;
    }
  }
  // Very large and very small values: a power of ten after the number, labels still distinct.
  for (const double scale : {1e15, 1e-7}) {
    LinePlot extreme;
    extreme.series = {{"", {0, 1}, {1 * scale, 3.3 * scale}}};
    StatusOr<PlotFrame> ef = LayoutPlot(extreme, 900, 560);
    ASSERT_TRUE(ef.ok());
    for (size_t i = 1; i < ef->y_ticks.size(); ++i) {
      EXPECT_NE(ef->y_ticks[i].label, ef->y_ticks[i - 1].label);
      EXPECT_LE(ef->y_ticks[i].label.size(), 8u) << ef->y_ticks[i].label;
    }
    EXPECT_NE(ef->y_ticks.back().label.find(scale > 1 ? "e15" : "e-7"), std::string::npos)
        << ef->y_ticks.back().label;
  }
  LinePlot big;
  big.series = {{"", {0, 1, 2}, {0, 45000, 130000}}};
  StatusOr<PlotFrame> f = LayoutPlot(big, 900, 560);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->y_ticks.front().label, "0");
  EXPECT_EQ(f->y_ticks[1].label, "20K");
  EXPECT_EQ(f->y_ticks.back().label, "140K");
  EXPECT_EQ(f->legend_right, 0);  // no labels, no legend
}

TEST(PlotTest, NonFinitePointsLeaveAGap) {
  LinePlot plot;
  plot.series = {{"s", {0, 1, 2, 3}, {0, 1, NAN, 3}}};
  LinePlot joined = plot;
  joined.series[0].y[2] = 2;
  StatusOr<PlotFrame> f = LayoutPlot(plot, 600, 400);
  ASSERT_TRUE(f.ok());
  const int mx = static_cast<int>(std::lround((f->PixelX(1) + f->PixelX(3)) / 2));
  const int my = static_cast<int>(std::lround((f->PixelY(1) + f->PixelY(3)) / 2));
  // The joined line passes through (2, 2), midway between (1, 1) and (3, 3); with the gap the
  // line from (1, 1) to (3, 3) is not drawn.
  const Image with_gap = WriteAndRead(plot, "gap.png", 600, 400);
  const Image without = WriteAndRead(joined, "nogap.png", 600, 400);
  const int qx = static_cast<int>(std::lround((f->PixelX(1) * 3 + f->PixelX(3)) / 4));
  const int qy = static_cast<int>(std::lround((f->PixelY(1) * 3 + f->PixelY(3)) / 4));
  EXPECT_TRUE(IsColor(without.At(qx, qy), SeriesColor(0)));
  EXPECT_FALSE(IsColor(with_gap.At(qx, qy), SeriesColor(0)));
  EXPECT_FALSE(IsColor(with_gap.At(mx, my), SeriesColor(0)));
  const std::string svg = PlotSvg(plot, 600, 400);
  size_t polylines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, 2u);  // one per unbroken run
}

TEST(PlotTest, SvgHasOnePolylinePerSeriesLabelsAndEscapes) {
  LinePlot plot = ThroughputPlot();
  plot.title = "tokens/s <dense & kvstar>";
  plot.series[2].label = "R&D \"x\"";
  const std::string svg = PlotSvg(plot, 900, 560);
  size_t polylines = 0;
  for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, plot.series.size());
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("tokens/s &lt;dense &amp; kvstar&gt;"), std::string::npos);
  EXPECT_EQ(svg.find("<dense"), std::string::npos);
  EXPECT_NE(svg.find("R&amp;D &quot;x&quot;"), std::string::npos);
  for (const char* s : {"dense", "kvstar", "context (tokens)", "tokens/s", ">4K<", ">128K<"}) {
    EXPECT_NE(svg.find(s), std::string::npos) << s;
  }
  for (size_t s = 0; s < 3; ++s) {
    const std::vector<uint8_t> c = SeriesColor(s);
    char hex[8];
    std::snprintf(hex, sizeof(hex), "#%02x%02x%02x", c[0], c[1], c[2]);
    EXPECT_NE(svg.find(std::string("stroke=\"") + hex), std::string::npos) << hex;
  }
  // Same layout as the PNG: the first point of each series is where PixelX/PixelY put it.
  StatusOr<PlotFrame> f = LayoutPlot(plot, 900, 560);
  ASSERT_TRUE(f.ok());
  for (const Series& s : plot.series) {
    char pt[64];
    std::snprintf(pt, sizeof(pt), "points=\"%.1f,%.1f ", f->PixelX(s.x[0]), f->PixelY(s.y[0]));
    EXPECT_NE(svg.find(pt), std::string::npos) << pt;
  }
  // Every element opened is closed: count '<' that start tags against '/>' and '</'.
  size_t opens = 0, closes = 0;
  for (size_t i = 0; i + 1 < svg.size(); ++i) {
    if (svg[i] == '<' && svg[i + 1] != '/') ++opens;
    if ((svg[i] == '/' && svg[i + 1] == '>') || (svg[i] == '<' && svg[i + 1] == '/')) ++closes;
  }
  EXPECT_EQ(opens, closes);
  const std::string path = TempPath("plot.svg");
  ASSERT_TRUE(WritePlotSvg(plot, path).ok());
  StatusOr<std::string> back = ReadFileToString(path);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, svg);
}

TEST(PlotTest, Errors) {
  LinePlot empty;
  EXPECT_EQ(WritePlotPng(empty, TempPath("e.png")).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(TempPath("e.png")));
  LinePlot nan;
  nan.series = {{"a", {1, 2}, {NAN, INFINITY}}};
  EXPECT_EQ(WritePlotSvg(nan, TempPath("n.svg")).code(), StatusCode::kInvalidArgument);
  EXPECT_NE(PlotSvg(nan, 900, 560).find("cannot plot"), std::string::npos);
  LinePlot neg;
  neg.log_y = true;
  neg.series = {{"a", {1, 2}, {0, -3}}};
  const Status st = ValidatePlot(neg, 900, 560);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("log axis"), std::string::npos) << st.ToString();
  LinePlot ragged;
  ragged.series = {{"r", {1, 2, 3}, {1, 2}}};
  EXPECT_EQ(ValidatePlot(ragged, 900, 560).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidatePlot(ThroughputPlot(), 100, 560).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidatePlot(ThroughputPlot(), 900, 560).ok());

  const std::string bad = "/nonexistent-plot-dir/x.png";
  const Status io = WritePlotPng(ThroughputPlot(), bad);
  EXPECT_EQ(io.code(), StatusCode::kIoError);
  EXPECT_NE(io.message().find(bad), std::string::npos) << io.ToString();
}

TEST(PlotTest, ReplacesFileAtomicallyAndLeavesNoTemporary) {
  const std::string dir = TempPath("atomic");
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/p.png";
  ASSERT_TRUE(WriteStringToFile(path, "old").ok());
  ASSERT_TRUE(WritePlotPng(ThroughputPlot(), path, 400, 300).ok());
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++files;
    EXPECT_EQ(e.path().filename(), "p.png");
  }
  EXPECT_EQ(files, 1);
  StatusOr<std::string> file = ReadFileToString(path);
  ASSERT_TRUE(file.ok());
  Image img;
  EXPECT_EQ(DecodePng(*file, &img), "");
  EXPECT_EQ(img.width, 400);
  EXPECT_LT(file->size(), 100000u);  // compressed: the stored form is 360 KB
  // A failed write (the target is a directory) keeps what was there.
  const Status st = WritePlotPng(ThroughputPlot(), dir);
  EXPECT_FALSE(st.ok());
  EXPECT_TRUE(std::filesystem::is_directory(dir));
  files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++files;
  EXPECT_EQ(files, 1);
  // The temporary for a failed write goes away too (it lives beside the target).
  const std::string stem = std::filesystem::path(dir).filename().string() + ".tmp";
  for (const auto& e : std::filesystem::directory_iterator(::testing::TempDir())) {
    EXPECT_NE(e.path().filename().string().rfind(stem, 0), 0u) << e.path();
  }
}

// KVSTAR_PLOT_SAMPLE_DIR=docs/plots regenerates the sample images shown in the docs.
TEST(PlotTest, WritesSamplesWhenAsked) {
  const char* dir = std::getenv("KVSTAR_PLOT_SAMPLE_DIR");
  if (dir == nullptr) GTEST_SKIP() << "set KVSTAR_PLOT_SAMPLE_DIR to write sample plots";
  LinePlot tput = ThroughputPlot();
  tput.title = "Decode throughput vs context (sample data)";
  ASSERT_TRUE(WritePlotPng(tput, std::string(dir) + "/sample_throughput.png").ok());
  ASSERT_TRUE(WritePlotSvg(tput, std::string(dir) + "/sample_throughput.svg").ok());
  LinePlot acc;
  acc.title = "Accuracy vs sparse ratio (sample data)";
  acc.x_label = "sparse ratio (fraction of blocks kept)";
  acc.y_label = "accuracy";
  acc.series = {
      {"multikey 8K", {0.05, 0.1, 0.15, 0.25, 0.5, 1.0}, {0.35, 0.6, 0.78, 0.9, 0.95, 0.96}},
      {"passkey 16K", {0.05, 0.1, 0.15, 0.25, 0.5, 1.0}, {0.8, 0.95, 1, 1, 1, 1}}};
  ASSERT_TRUE(WritePlotPng(acc, std::string(dir) + "/sample_accuracy.png").ok());
}

}  // namespace
}  // namespace kvstar
