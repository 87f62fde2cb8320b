// CUDA device utilities: a device context (device, streams, cuBLAS handle), events, and RAII owners
// of device memory, pinned host memory and a pinned pool for the block store.
//
// No CUDA header is included here: streams are the opaque CudaStream (a cudaStream_t inside
// src/ops/cuda), device memory is a raw pointer. Every call that reaches the CUDA runtime returns
// a Status; the error text names the call and the CUDA error string.
//
// Threading: the CUDA runtime keeps a current device per host thread. A thread that issues work
// for a context calls DeviceContext::Activate() once first (Create() activates the caller). One
// host thread at a time issues work through a context (its cuBLAS handle is rebound to the
// stream of each MatMul); buffers, events and the pinned pool may be used from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "store/block_store.h"  // HostAllocator (header only: kvstar_store is not linked)

namespace kvstar::cuda {

struct CudaStream;  // opaque: a CUstream_st inside src/ops/cuda

// Number of CUDA devices; 0 when there is no device or no driver (never an error).
int DeviceCount();

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int sm_count = 0;
  int cc_major = 0;
  int cc_minor = 0;
  size_t total_memory = 0;  // bytes
  size_t l2_bytes = 0;
  size_t smem_per_block = 0;  // opt-in maximum of dynamic + static shared memory per block
  int memory_bus_bits = 0;
};

// Device memory from cudaMalloc (never managed memory). Move-only; freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static StatusOr<DeviceBuffer> Allocate(size_t bytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Page-locked host memory from cudaHostAlloc (portable across devices). Move-only.
class PinnedHostBuffer {
 public:
  PinnedHostBuffer() = default;
  static StatusOr<PinnedHostBuffer> Allocate(size_t bytes);
  PinnedHostBuffer(PinnedHostBuffer&& o) noexcept;
  PinnedHostBuffer& operator=(PinnedHostBuffer&& o) noexcept;
  PinnedHostBuffer(const PinnedHostBuffer&) = delete;
  PinnedHostBuffer& operator=(const PinnedHostBuffer&) = delete;
  ~PinnedHostBuffer();

  void* data() const { return data_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(data_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Pinned host memory for DramStore (StoreOptions::allocator), so that host-to-device copies run
// straight from store memory at full PCIe speed. cudaHostAlloc pins pages at a cost of
// milliseconds per call, so memory is taken in arenas of `arena_bytes` and handed out by a bump
// pointer; freed pieces go to a free list per (size, alignment) and are reused first (store
// entries come in few sizes: one per block geometry). Memory goes back to the driver only when
// the pool is destroyed, which must happen after every user is done. Thread-safe.
class PinnedHostPool : public HostAllocator {
 public:
  // capacity_bytes: most pinned bytes held in arenas (Allocate returns nullptr beyond).
  explicit PinnedHostPool(size_t capacity_bytes, size_t arena_bytes = size_t{256} << 20);
  ~PinnedHostPool() override;
  PinnedHostPool(const PinnedHostPool&) = delete;
  PinnedHostPool& operator=(const PinnedHostPool&) = delete;

  // alignment: a power of two up to 4096. Returns nullptr when the capacity is reached or the
  // driver refuses to pin more memory.
  void* Allocate(size_t bytes, size_t alignment) override;
  void Free(void* p, size_t bytes) override;

  size_t pinned_bytes() const;  // held in arenas
  size_t used_bytes() const;    // handed out and not freed

 private:
  struct Arena {
    char* base = nullptr;
    size_t bytes = 0;
    size_t used = 0;
  };
  static uint64_t Key(size_t bytes, size_t alignment) {
    return (uint64_t{bytes} << 13) | alignment;
  }

  const size_t capacity_bytes_;
  const size_t arena_bytes_;
  mutable std::mutex mu_;
  std::vector<Arena> arenas_;
  std::unordered_map<uint64_t, std::vector<void*>> free_lists_;  // Key(bytes, alignment) -> ptrs
  std::unordered_map<void*, size_t> alignment_of_;               // live pointer -> alignment
  size_t pinned_bytes_ = 0;
  size_t used_bytes_ = 0;
};

class DeviceContext;

// A CUDA event (timing enabled). Record on one stream, wait for it on another or on the host.
class Event {
 public:
  static StatusOr<Event> Create();
  Event(Event&& o) noexcept;
  Event& operator=(Event&& o) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();

  Status Record(CudaStream* stream);
  // Work queued on `stream` after this call starts only after the recorded work completed.
  Status WaitOn(CudaStream* stream) const;
  Status Synchronize() const;
  // True once the recorded work completed.
  StatusOr<bool> Query() const;
  // Milliseconds from `start` to this event; both recorded and completed.
  StatusOr<float> ElapsedMsSince(const Event& start) const;

 private:
  explicit Event(void* e) : event_(e) {}
  void* event_ = nullptr;  // cudaEvent_t
};

// One device with its streams and cuBLAS handle. Kernels of src/ops/cuda/ops.h run on the stream
// passed to them; the context offers one compute stream and one copy stream per direction so that
// KV onboarding / offloading overlaps compute (order them with Event).
class DeviceContext {
 public:
  static StatusOr<std::unique_ptr<DeviceContext>> Create(int device = 0);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  const DeviceInfo& info() const;
  // Makes this context's device current for the calling thread.
  Status Activate() const;

  CudaStream* compute_stream() const;
  CudaStream* h2d_stream() const;
  CudaStream* d2h_stream() const;
  // Lowest priority: background kernels (kvstar's block scoring) that should take only the SMs
  // the compute stream leaves idle.
  CudaStream* background_stream() const;

  Status Synchronize(CudaStream* stream) const;
  Status SynchronizeDevice() const;

  // Asynchronous copies on `stream`. Host memory should be pinned for truly asynchronous copies;
  // pageable memory is staged by the driver and the call may block.
  Status CopyToDevice(void* dst_device, const void* src_host, size_t bytes,
                      CudaStream* stream) const;
  Status CopyToHost(void* dst_host, const void* src_device, size_t bytes, CudaStream* stream) const;
  // Host-to-device copies of count pieces in one call (cudaMemcpyBatchAsync): the batch runs in
  // stream order, the pieces in any order among themselves; sources should be pinned. One call
  // instead of one per piece: the driver's per-call cost dominated small delta loads.
  Status CopyBatchToDevice(void* const* dst_device, const void* const* src_host,
                           const size_t* bytes, size_t count, CudaStream* stream) const;
  // The same for pieces in any direction (host to device, device to host, device to device).
  Status CopyBatch(void* const* dst, const void* const* src, const size_t* bytes, size_t count,
                   CudaStream* stream) const;
  // `rows` rows of `width` bytes, src_pitch / dst_pitch bytes apart, in one copy.
  Status CopyToHost2D(void* dst_host, size_t dst_pitch, const void* src_device, size_t src_pitch,
                      size_t width, size_t rows, CudaStream* stream) const;
  Status CopyOnDevice(void* dst_device, const void* src_device, size_t bytes,
                      CudaStream* stream) const;
  Status Memset(void* dst_device, int byte, size_t bytes, CudaStream* stream) const;

  // The cuBLAS handle (a cublasHandle_t) for src/ops/cuda; not for use outside it.
  void* blas_handle() const;

 private:
  struct Impl;
  explicit DeviceContext(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvstar::cuda
