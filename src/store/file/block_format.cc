#include "store/file/block_format.h"

#include <xxhash.h>

#include <bit>
#include <cstring>

namespace kvstar::file_format {

static_assert(std::endian::native == std::endian::little, "block files are little-endian");

uint64_t PayloadChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

void EncodeHeader(const Hash128& id, size_t payload_bytes, uint64_t payload_checksum, void* out) {
  std::memset(out, 0, kHeaderBytes);
  BlockHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.version = kVersion;
  h.header_bytes = kHeaderBytes;
  h.id_lo = id.lo;
  h.id_hi = id.hi;
  h.payload_bytes = payload_bytes;
  h.payload_checksum = payload_checksum;
  h.header_checksum = XXH3_64bits(&h, offsetof(BlockHeader, header_checksum));
  std::memcpy(out, &h, sizeof(h));
}

StatusOr<BlockHeader> DecodeHeader(const void* in, const Hash128& id, const char* what) {
  BlockHeader h;
  std::memcpy(&h, in, sizeof(h));
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return DataLoss("%s: not a kvstar block file (bad magic)", what);
  }
  if (h.header_checksum != XXH3_64bits(&h, offsetof(BlockHeader, header_checksum))) {
    return DataLoss("%s: header checksum mismatch (corrupt block file)", what);
  }
  if (h.version != kVersion || h.header_bytes != kHeaderBytes) {
    return DataLoss("%s: block format version %u / header %u bytes, this build reads %u / %zu",
                    what, h.version, h.header_bytes, kVersion, kHeaderBytes);
  }
  if (h.id_lo != id.lo || h.id_hi != id.hi) {
    return DataLoss("%s: holds block %s, expected %s", what,
                    Hash128{h.id_lo, h.id_hi}.ToHex().c_str(), id.ToHex().c_str());
  }
  return h;
}

}  // namespace kvstar::file_format
