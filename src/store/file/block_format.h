// On-disk format of one FileStore block file:
//   [0, 4096)                 header (BlockHeader, then zeros); 4096 bytes so that the payload
//                             starts aligned for O_DIRECT
//   [4096, 4096 + payload)    the entry's bytes (O_DIRECT writers pad the file to 4096 bytes)
// All integers little-endian. Every load checks the magic, version, header checksum, the id
// against the file name, the payload size against the file, and the payload checksum.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/hash.h"
#include "base/status.h"

namespace kvstar::file_format {

inline constexpr size_t kHeaderBytes = 4096;
inline constexpr uint32_t kVersion = 1;
inline constexpr char kMagic[8] = {'K', 'V', 'S', 'T', 'B', 'L', 'K', '\n'};

struct BlockHeader {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;
  uint64_t id_lo;
  uint64_t id_hi;
  uint64_t payload_bytes;
  uint64_t payload_checksum;  // XXH3-64 of the payload
  uint64_t reserved;
  uint64_t header_checksum;  // XXH3-64 of the bytes above
};
static_assert(sizeof(BlockHeader) == 64);

uint64_t PayloadChecksum(const void* data, size_t bytes);

// Writes the header for (id, payload) into out[0, kHeaderBytes).
void EncodeHeader(const Hash128& id, size_t payload_bytes, uint64_t payload_checksum, void* out);

// Validates in[0, kHeaderBytes) as the header of `id`; `what` names the file in messages.
// DataLoss on any mismatch.
StatusOr<BlockHeader> DecodeHeader(const void* in, const Hash128& id, const char* what);

}  // namespace kvstar::file_format
