// PNG encoder: RGB 8-bit, filter 0, one IDAT of a zlib stream with stored or fixed-Huffman
// deflate blocks (RFC 1950/1951), CRC-32 per chunk. No zlib dependency.
#include "base/png.h"

#include <array>
#include <cstdint>
#include <string>

#include "base/check.h"

namespace kvstar {
namespace {

uint32_t Crc32(const uint8_t* data, size_t n) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

uint32_t Adler32(const std::string& data) {
  uint32_t a = 1, b = 0;
  size_t i = 0;
  while (i < data.size()) {
    const size_t end = std::min(data.size(), i + 5552);  // no overflow before the modulo
    for (; i < end; ++i) {
      a += static_cast<uint8_t>(data[i]);
      b += a;
    }
    a %= 65521, b %= 65521;
  }
  return (b << 16) | a;
}

void PutBe32(std::string& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}

void AppendChunk(std::string& png, const char* type, const std::string& data) {
  PutBe32(png, static_cast<uint32_t>(data.size()));
  const size_t start = png.size();
  png.append(type, 4);
  png += data;
  PutBe32(png, Crc32(reinterpret_cast<const uint8_t*>(png.data() + start), png.size() - start));
}

std::string DeflateStored(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - pos);
    const bool last = pos + n == raw.size();
    out.push_back(last ? 1 : 0);  // BFINAL, BTYPE=00, then pad to the byte
    out.push_back(static_cast<char>(n & 0xFF));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(~n & 0xFF));
    out.push_back(static_cast<char>((~n >> 8) & 0xFF));
    out.append(raw, pos, n);
    pos += n;
  } while (pos < raw.size());
  return out;
}

class BitWriter {
 public:
  void Put(uint32_t bits, int count) {  // LSB first, as deflate packs data bits
    acc_ |= static_cast<uint64_t>(bits) << n_;
    n_ += count;
    while (n_ >= 8) {
      out_.push_back(static_cast<char>(acc_ & 0xFF));
      acc_ >>= 8, n_ -= 8;
    }
  }
  void PutCode(uint32_t code, int len) {  // Huffman codes go MSB first
    uint32_t rev = 0;
    for (int i = 0; i < len; ++i) rev |= ((code >> i) & 1) << (len - 1 - i);
    Put(rev, len);
  }
  std::string Finish() && {
    if (n_ > 0) out_.push_back(static_cast<char>(acc_ & 0xFF));
    return std::move(out_);
  }

 private:
  std::string out_;
  uint64_t acc_ = 0;
  int n_ = 0;
};

void PutSymbol(BitWriter& bw, int sym) {  // the fixed literal/length code of RFC 1951 3.2.6
  if (sym < 144) return bw.PutCode(0x30 + sym, 8);
  if (sym < 256) return bw.PutCode(0x190 + sym - 144, 9);
  if (sym < 280) return bw.PutCode(sym - 256, 7);
  bw.PutCode(0xC0 + sym - 280, 8);
}

constexpr int kLenBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                              31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr int kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                               2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
constexpr int kDistBase[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                               33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                               1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr int kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

void PutMatch(BitWriter& bw, int len, int dist) {
  int li = 28;
  while (kLenBase[li] > len) --li;
  PutSymbol(bw, 257 + li);
  bw.Put(len - kLenBase[li], kLenExtra[li]);
  int di = 29;
  while (kDistBase[di] > dist) --di;
  bw.PutCode(di, 5);
  bw.Put(dist - kDistBase[di], kDistExtra[di]);
}

// One fixed-code block. Plots are runs of one colour and rows like the row above, so matching
// only at distance 3 (the previous pixel) and one row back finds nearly all the redundancy.
std::string DeflateFixed(const std::string& raw, size_t row_bytes) {
  BitWriter bw;
  bw.Put(1, 1);  // BFINAL
  bw.Put(1, 2);  // BTYPE=01 fixed Huffman
  const size_t n = raw.size();
  for (size_t i = 0; i < n;) {
    size_t best_len = 0, best_dist = 0;
    for (const size_t dist : {size_t{3}, row_bytes}) {
      if (dist > i || dist > 32768) continue;
      const size_t limit = std::min<size_t>(258, n - i);
      size_t len = 0;
      while (len < limit && raw[i + len] == raw[i + len - dist]) ++len;
      if (len > best_len) best_len = len, best_dist = dist;
    }
    if (best_len >= 3) {
      PutMatch(bw, static_cast<int>(best_len), static_cast<int>(best_dist));
      i += best_len;
    } else {
      PutSymbol(bw, static_cast<uint8_t>(raw[i]));
      ++i;
    }
  }
  PutSymbol(bw, 256);  // end of block
  return std::move(bw).Finish();
}

}  // namespace

std::string EncodePngRgb(const uint8_t* rgb, int width, int height, PngDeflate deflate) {
  KVSTAR_CHECK(width > 0 && height > 0, "PNG size %dx%d", width, height);
  const size_t row_bytes = 1 + static_cast<size_t>(width) * 3;
  std::string raw;  // [height][1 + width * 3]: filter byte 0, then the row
  raw.reserve(row_bytes * height);
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);
    raw.append(reinterpret_cast<const char*>(rgb) + static_cast<size_t>(y) * width * 3,
               static_cast<size_t>(width) * 3);
  }
  std::string zlib = "\x78\x01";  // deflate, 32K window; (0x78 << 8 | 0x01) % 31 == 0
  zlib += deflate == PngDeflate::kStored ? DeflateStored(raw) : DeflateFixed(raw, row_bytes);
  PutBe32(zlib, Adler32(raw));

  std::string ihdr;
  PutBe32(ihdr, static_cast<uint32_t>(width));
  PutBe32(ihdr, static_cast<uint32_t>(height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8 bit, RGB, deflate, filter 0, no interlace
  std::string png = "\x89PNG\r\n\x1a\n";
  AppendChunk(png, "IHDR", ihdr);
  AppendChunk(png, "IDAT", zlib);
  AppendChunk(png, "IEND", "");
  return png;
}

}  // namespace kvstar
