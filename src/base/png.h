// PNG encoding of an RGB image (used by base/plot for its PNG output).
#pragma once

#include <cstdint>
#include <string>

namespace kvstar {

enum class PngDeflate {
  kStored,        // uncompressed deflate blocks: ~3 bytes a pixel
  kFixedHuffman,  // fixed-code deflate with run/row matches: a 900x560 plot is a few tens of KB
};

// An RGB 8-bit PNG (filter 0 on every row, one IDAT). rgb is [height][width][3].
std::string EncodePngRgb(const uint8_t* rgb, int width, int height,
                         PngDeflate deflate = PngDeflate::kFixedHuffman);

}  // namespace kvstar
