#include "sparse/block_representations.h"

#include <cmath>
#include <cstring>

#include "base/aligned_buffer.h"
#include "base/hash.h"
#include "sparse/kv_element.h"

namespace kvstar::sparse {
namespace internal {

struct RepresentationShape {
  KvGeometry geometry;  // kv_heads, head_dim, block_tokens (dtype of the source is irrelevant)
  size_t merge = 0;
  size_t vectors = 0;  // block_tokens / merge
  DType dtype = DType::kF16;
  ChannelIndex channels;
  uint64_t channels_fingerprint = 0;
  size_t block_elements() const { return vectors * geometry.kv_heads * channels.d_pruned; }
};

struct RepresentationChunk {
  RepresentationChunk(size_t blocks, size_t block_elements)
      : data(blocks * block_elements), finite(blocks, 0) {}
  AlignedBuffer<uint16_t> data;  // [chunk_blocks][vectors][kv_heads][d_pruned]
  std::vector<uint8_t> finite;   // [chunk_blocks]
};

}  // namespace internal

namespace {

using internal::RepresentationChunk;
using internal::RepresentationDirectory;
using internal::RepresentationShape;

constexpr uint32_t kMagic = 0x5253564b;  // "KVSR"
constexpr uint16_t kVersion = 1;
constexpr uint16_t kKindAll = 1;
constexpr uint16_t kKindBlock = 2;

// Fixed little-endian header of both serialised forms.
struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t kind;
  uint32_t dtype;
  uint32_t merge;
  uint32_t kv_heads;
  uint32_t head_dim;
  uint32_t block_tokens;
  uint32_t d_pruned;
  uint64_t num_blocks;
  uint64_t channels_fingerprint;
  uint64_t payload_hash;  // of every byte after the header
};
static_assert(sizeof(Header) == 56);

uint64_t Fingerprint(const ChannelIndex& c) {
  const Hash128 h = HashBytes(c.channels.data(), c.channels.size() * sizeof(uint16_t),
                              c.kv_heads * 1000003u + c.head_dim);
  return h.lo;
}

// Covers the header (with this field zeroed) and the payload, so a flipped shape field is caught.
uint64_t PayloadHash(const Header& header, const uint8_t* payload, size_t size) {
  Header h = header;
  h.payload_hash = 0;
  return HashChain(HashBytes(&h, sizeof(h)), payload, size).lo;
}

uint16_t Encode(float v, DType dtype) {
  return dtype == DType::kBF16 ? F32ToBF16(v).bits : F32ToF16(v).bits;
}

bool AllFinite(const uint16_t* data, size_t n, DType dtype) {
  // Exponent all ones means Inf or NaN in both formats.
  const uint16_t exp_mask = dtype == DType::kBF16 ? 0x7f80 : 0x7c00;
  for (size_t i = 0; i < n; ++i) {
    if ((data[i] & exp_mask) == exp_mask) return false;
  }
  return true;
}

Header MakeHeader(const RepresentationShape& s, uint16_t kind, uint64_t blocks) {
  Header h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.kind = kind;
  h.dtype = static_cast<uint32_t>(s.dtype);
  h.merge = static_cast<uint32_t>(s.merge);
  h.kv_heads = static_cast<uint32_t>(s.geometry.kv_heads);
  h.head_dim = static_cast<uint32_t>(s.geometry.head_dim);
  h.block_tokens = static_cast<uint32_t>(s.geometry.block_tokens);
  h.d_pruned = static_cast<uint32_t>(s.channels.d_pruned);
  h.num_blocks = blocks;
  h.channels_fingerprint = s.channels_fingerprint;
  return h;
}

StatusOr<Header> ReadHeader(std::span<const uint8_t> bytes, uint16_t kind) {
  Header h;
  if (bytes.size() < sizeof(Header)) {
    return DataLoss("block representation bytes truncated: %zu bytes, the header alone needs %zu",
                    bytes.size(), sizeof(Header));
  }
  std::memcpy(&h, bytes.data(), sizeof(Header));
  if (h.magic != kMagic)
    return DataLoss("not block representation bytes (bad magic %08x)", h.magic);
  if (h.version != kVersion) {
    return DataLoss("block representation format version %u, this build reads %u", h.version,
                    kVersion);
  }
  if (h.kind != kind) {
    return InvalidArgument("block representation bytes of kind %u, expected %u (%s)", h.kind, kind,
                           kind == kKindAll ? "a whole layer" : "one block");
  }
  const uint64_t hash =
      PayloadHash(h, bytes.data() + sizeof(Header), bytes.size() - sizeof(Header));
  if (hash != h.payload_hash) return DataLoss("block representation payload checksum mismatch");
  return h;
}

StatusOr<std::shared_ptr<const RepresentationShape>> MakeShape(const KvGeometry& geometry,
                                                               ChannelIndex channels, size_t merge,
                                                               DType dtype) {
  if (dtype != DType::kF16 && dtype != DType::kBF16) {
    return InvalidArgument("representation dtype must be f16 or bf16, got %s", DTypeName(dtype));
  }
  if (geometry.block_tokens == 0 || merge == 0 || geometry.block_tokens % merge != 0) {
    return InvalidArgument("blk_repre_inner_token_merge %zu must divide block_tokens %zu", merge,
                           geometry.block_tokens);
  }
  KVSTAR_RETURN_IF_ERROR(channels.Validate());
  if (channels.kv_heads != geometry.kv_heads || channels.head_dim != geometry.head_dim) {
    return InvalidArgument("channel index for kv_heads=%zu head_dim=%zu, geometry has %zu/%zu",
                           channels.kv_heads, channels.head_dim, geometry.kv_heads,
                           geometry.head_dim);
  }
  auto shape = std::make_shared<RepresentationShape>();
  shape->geometry = geometry;
  shape->merge = merge;
  shape->vectors = geometry.block_tokens / merge;
  shape->dtype = dtype;
  shape->channels_fingerprint = Fingerprint(channels);
  shape->channels = std::move(channels);
  return std::shared_ptr<const RepresentationShape>(std::move(shape));
}

}  // namespace

// ---- RepresentationView ----

size_t RepresentationView::vectors_per_block() const { return shape_->vectors; }
size_t RepresentationView::kv_heads() const { return shape_->geometry.kv_heads; }
size_t RepresentationView::head_dim() const { return shape_->geometry.head_dim; }
size_t RepresentationView::d_pruned() const { return shape_->channels.d_pruned; }
DType RepresentationView::dtype() const { return shape_->dtype; }
const ChannelIndex& RepresentationView::channels() const { return shape_->channels; }
size_t RepresentationView::block_elements() const { return shape_->block_elements(); }

const uint16_t* RepresentationView::block(size_t b) const {
  KVSTAR_DCHECK(b < num_blocks_, "block %zu of %zu", b, num_blocks_);
  const size_t per_chunk = (*dir_)[0]->finite.size();
  return (*dir_)[b / per_chunk]->data.data() + (b % per_chunk) * shape_->block_elements();
}

bool RepresentationView::block_finite(size_t b) const {
  KVSTAR_DCHECK(b < num_blocks_, "block %zu of %zu", b, num_blocks_);
  const size_t per_chunk = (*dir_)[0]->finite.size();
  return (*dir_)[b / per_chunk]->finite[b % per_chunk] != 0;
}

// ---- BlockRepresentations ----

BlockRepresentations::BlockRepresentations(std::shared_ptr<const RepresentationShape> shape,
                                           size_t chunk_blocks)
    : shape_(std::move(shape)),
      chunk_blocks_(chunk_blocks == 0 ? 1 : chunk_blocks),
      dir_(std::make_shared<const RepresentationDirectory>()) {}

BlockRepresentations::~BlockRepresentations() = default;

StatusOr<std::unique_ptr<BlockRepresentations>> BlockRepresentations::Create(
    const KvGeometry& geometry, ChannelIndex channels, const RepresentationOptions& options) {
  KVSTAR_ASSIGN_OR_RETURN(auto shape,
                          MakeShape(geometry, std::move(channels), options.merge, options.dtype));
  return std::unique_ptr<BlockRepresentations>(
      new BlockRepresentations(std::move(shape), options.chunk_blocks));
}

size_t BlockRepresentations::num_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return num_blocks_;
}

const ChannelIndex& BlockRepresentations::channels() const { return shape_->channels; }
size_t BlockRepresentations::vectors_per_block() const { return shape_->vectors; }
size_t BlockRepresentations::block_bytes() const {
  return shape_->block_elements() * sizeof(uint16_t);
}

RepresentationView BlockRepresentations::View() const {
  RepresentationView view;
  view.shape_ = shape_;
  std::lock_guard<std::mutex> lock(mu_);
  view.dir_ = dir_;
  view.num_blocks_ = num_blocks_;
  return view;
}

uint16_t* BlockRepresentations::NextSlot() {
  // Only the appending thread changes num_blocks_ and dir_, so reading them unlocked here is safe.
  const size_t chunk = num_blocks_ / chunk_blocks_;
  if (chunk == dir_->size()) {
    auto grown = std::make_shared<RepresentationDirectory>(*dir_);
    grown->push_back(
        std::make_shared<RepresentationChunk>(chunk_blocks_, shape_->block_elements()));
    std::lock_guard<std::mutex> lock(mu_);
    dir_ = std::move(grown);
  }
  return (*dir_)[chunk]->data.data() + (num_blocks_ % chunk_blocks_) * shape_->block_elements();
}

void BlockRepresentations::Publish(bool finite) {
  (*dir_)[num_blocks_ / chunk_blocks_]->finite[num_blocks_ % chunk_blocks_] = finite ? 1 : 0;
  std::lock_guard<std::mutex> lock(mu_);
  ++num_blocks_;
}

Status BlockRepresentations::Append(const void* block, const KvGeometry& geometry) {
  const RepresentationShape& s = *shape_;
  if (geometry.kv_heads != s.geometry.kv_heads || geometry.head_dim != s.geometry.head_dim ||
      geometry.block_tokens != s.geometry.block_tokens) {
    return InvalidArgument(
        "block geometry kv_heads=%zu head_dim=%zu block_tokens=%zu does not match the "
        "representations' %zu/%zu/%zu",
        geometry.kv_heads, geometry.head_dim, geometry.block_tokens, s.geometry.kv_heads,
        s.geometry.head_dim, s.geometry.block_tokens);
  }
  if (block == nullptr) return InvalidArgument("null KV block");
  const size_t heads = s.geometry.kv_heads;
  const size_t d = s.channels.d_pruned;
  uint16_t* out = NextSlot();  // [vectors][kv_heads][d_pruned]
  std::vector<float> acc(d);
  const float inv_merge = 1.0f / static_cast<float>(s.merge);
  for (size_t h = 0; h < heads; ++h) {
    const uint16_t* chans = s.channels.head(h);
    for (size_t v = 0; v < s.vectors; ++v) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (size_t i = 0; i < s.merge; ++i) {
        const size_t base = geometry.offset(0, h, v * s.merge + i);
        for (size_t c = 0; c < d; ++c) {
          acc[c] += internal::LoadAsF32(block, geometry.dtype, base + chans[c]);
        }
      }
      uint16_t* dst = out + (v * heads + h) * d;
      for (size_t c = 0; c < d; ++c) dst[c] = Encode(acc[c] * inv_merge, s.dtype);
    }
  }
  Publish(AllFinite(out, s.block_elements(), s.dtype));
  return Status::Ok();
}

std::vector<uint8_t> BlockRepresentations::Serialize() const {
  const RepresentationView view = View();
  const RepresentationShape& s = *shape_;
  const size_t chan_bytes = s.channels.channels.size() * sizeof(uint16_t);
  const size_t block_bytes_ = s.block_elements() * sizeof(uint16_t);
  std::vector<uint8_t> out(sizeof(Header) + chan_bytes + view.num_blocks() * block_bytes_);
  uint8_t* p = out.data() + sizeof(Header);
  std::memcpy(p, s.channels.channels.data(), chan_bytes);
  p += chan_bytes;
  for (size_t b = 0; b < view.num_blocks(); ++b, p += block_bytes_) {
    std::memcpy(p, view.block(b), block_bytes_);
  }
  Header h = MakeHeader(s, kKindAll, view.num_blocks());
  h.payload_hash = PayloadHash(h, out.data() + sizeof(Header), out.size() - sizeof(Header));
  std::memcpy(out.data(), &h, sizeof(Header));
  return out;
}

StatusOr<std::unique_ptr<BlockRepresentations>> BlockRepresentations::Deserialize(
    std::span<const uint8_t> bytes, size_t chunk_blocks) {
  KVSTAR_ASSIGN_OR_RETURN(const Header h, ReadHeader(bytes, kKindAll));
  if (h.kv_heads == 0 || h.head_dim == 0 || h.head_dim > 65535 || h.d_pruned == 0 ||
      h.d_pruned > h.head_dim || h.kv_heads > 4096 || h.block_tokens == 0 ||
      h.block_tokens > (1u << 20)) {
    return DataLoss(
        "block representation header has an invalid shape (kv_heads=%u head_dim=%u "
        "d_pruned=%u block_tokens=%u)",
        h.kv_heads, h.head_dim, h.d_pruned, h.block_tokens);
  }
  const size_t chan_count = static_cast<size_t>(h.kv_heads) * h.d_pruned;
  const size_t chan_bytes = chan_count * sizeof(uint16_t);
  if (bytes.size() - sizeof(Header) < chan_bytes) {
    return DataLoss("block representation bytes truncated inside the channel index");
  }
  ChannelIndex channels{.kv_heads = h.kv_heads, .head_dim = h.head_dim, .d_pruned = h.d_pruned};
  channels.channels.resize(chan_count);
  std::memcpy(channels.channels.data(), bytes.data() + sizeof(Header), chan_bytes);
  if (Fingerprint(channels) != h.channels_fingerprint) {
    return DataLoss("block representation channel index does not match its fingerprint");
  }
  const KvGeometry geometry{
      .kv_heads = h.kv_heads, .head_dim = h.head_dim, .block_tokens = h.block_tokens};
  if (h.dtype != static_cast<uint32_t>(DType::kF16) &&
      h.dtype != static_cast<uint32_t>(DType::kBF16)) {
    return DataLoss("block representation dtype code %u is not f16/bf16", h.dtype);
  }
  auto shape_or = MakeShape(geometry, std::move(channels), h.merge, static_cast<DType>(h.dtype));
  if (!shape_or.ok()) return DataLoss("%s", shape_or.status().message().c_str());
  std::unique_ptr<BlockRepresentations> reps(
      new BlockRepresentations(std::move(shape_or).value(), chunk_blocks));
  const size_t block_bytes_ = reps->block_bytes();
  const size_t payload = bytes.size() - sizeof(Header) - chan_bytes;
  if (h.num_blocks > payload / block_bytes_ || payload != h.num_blocks * block_bytes_) {
    return DataLoss(
        "block representation bytes hold %zu payload bytes, header says %llu blocks "
        "of %zu bytes",
        payload, static_cast<unsigned long long>(h.num_blocks), block_bytes_);
  }
  const uint8_t* p = bytes.data() + sizeof(Header) + chan_bytes;
  for (uint64_t b = 0; b < h.num_blocks; ++b, p += block_bytes_) {
    uint16_t* slot = reps->NextSlot();
    std::memcpy(slot, p, block_bytes_);
    reps->Publish(AllFinite(slot, reps->shape_->block_elements(), reps->shape_->dtype));
  }
  return reps;
}

std::vector<uint8_t> BlockRepresentations::SerializeBlock(size_t b) const {
  const RepresentationView view = View();
  KVSTAR_CHECK(b < view.num_blocks(), "SerializeBlock(%zu) with %zu blocks", b, view.num_blocks());
  const size_t n = block_bytes();
  std::vector<uint8_t> out(sizeof(Header) + n);
  std::memcpy(out.data() + sizeof(Header), view.block(b), n);
  Header h = MakeHeader(*shape_, kKindBlock, 1);
  h.payload_hash = PayloadHash(h, out.data() + sizeof(Header), n);
  std::memcpy(out.data(), &h, sizeof(Header));
  return out;
}

Status BlockRepresentations::AppendSerializedBlock(std::span<const uint8_t> bytes) {
  KVSTAR_ASSIGN_OR_RETURN(const Header h, ReadHeader(bytes, kKindBlock));
  const Header mine = MakeHeader(*shape_, kKindBlock, 1);
  if (h.dtype != mine.dtype || h.merge != mine.merge || h.kv_heads != mine.kv_heads ||
      h.head_dim != mine.head_dim || h.block_tokens != mine.block_tokens ||
      h.d_pruned != mine.d_pruned || h.num_blocks != 1) {
    return InvalidArgument(
        "stored block representation has shape dtype=%u merge=%u kv_heads=%u head_dim=%u "
        "block_tokens=%u d_pruned=%u, this layer uses %u/%u/%u/%u/%u/%u",
        h.dtype, h.merge, h.kv_heads, h.head_dim, h.block_tokens, h.d_pruned, mine.dtype,
        mine.merge, mine.kv_heads, mine.head_dim, mine.block_tokens, mine.d_pruned);
  }
  if (h.channels_fingerprint != mine.channels_fingerprint) {
    return InvalidArgument(
        "stored block representation was built with another channel index than this layer's");
  }
  if (bytes.size() != sizeof(Header) + block_bytes()) {
    return DataLoss("stored block representation has %zu bytes, expected %zu", bytes.size(),
                    sizeof(Header) + block_bytes());
  }
  uint16_t* slot = NextSlot();
  std::memcpy(slot, bytes.data() + sizeof(Header), block_bytes());
  Publish(AllFinite(slot, shape_->block_elements(), shape_->dtype));
  return Status::Ok();
}

}  // namespace kvstar::sparse
