// DeviceContext, buffers, events and the pinned pool over the CUDA runtime and cuBLAS.
#include "ops/cuda/device.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <utility>

#include "base/check.h"
#include "ops/cuda/cuda_util.h"
#include "ops/cuda/ops.h"

namespace kvstar::cuda {

namespace internal {
Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Internal("%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
}
}  // namespace internal

using internal::AsCuda;
using internal::FromCuda;

namespace {
std::atomic<bool> g_dependent_launches{true};
std::atomic<int> g_skinny_stages{0};
std::atomic<bool> g_decode_mma{true};
std::atomic<bool> g_skinny_split{true};
}  // namespace

void SetDependentLaunches(bool on) { g_dependent_launches.store(on, std::memory_order_relaxed); }
bool DependentLaunches() { return g_dependent_launches.load(std::memory_order_relaxed); }

bool SkinnyStagesValid(int stages) { return stages >= 0 && stages <= 4; }
void SetSkinnyStages(int stages) {
  KVSTAR_CHECK(SkinnyStagesValid(stages), "skinny stages %d: 0 to 4", stages);
  g_skinny_stages.store(stages, std::memory_order_relaxed);
}
int SkinnyStages() { return g_skinny_stages.load(std::memory_order_relaxed); }

void SetDecodeAttentionOnTensorCores(bool on) { g_decode_mma.store(on, std::memory_order_relaxed); }
bool DecodeAttentionOnTensorCores() { return g_decode_mma.load(std::memory_order_relaxed); }

void SetSkinnySplit(bool on) { g_skinny_split.store(on, std::memory_order_relaxed); }
bool SkinnySplit() { return g_skinny_split.load(std::memory_order_relaxed); }

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error for later callers
    return 0;
  }
  return n;
}

// ---- DeviceBuffer ----------------------------------------------------------------------------

StatusOr<DeviceBuffer> DeviceBuffer::Allocate(size_t bytes) {
  DeviceBuffer b;
  if (bytes == 0) return b;
  const cudaError_t err = cudaMalloc(&b.data_, bytes);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return ResourceExhausted("cudaMalloc(%zu bytes): %s", bytes, cudaGetErrorString(err));
  }
  b.bytes_ = bytes;
  return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

// ---- PinnedHostBuffer ------------------------------------------------------------------------

StatusOr<PinnedHostBuffer> PinnedHostBuffer::Allocate(size_t bytes) {
  PinnedHostBuffer b;
  if (bytes == 0) return b;
  const cudaError_t err = cudaHostAlloc(&b.data_, bytes, cudaHostAllocPortable);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return ResourceExhausted("cudaHostAlloc(%zu bytes): %s", bytes, cudaGetErrorString(err));
  }
  b.bytes_ = bytes;
  return b;
}

PinnedHostBuffer::PinnedHostBuffer(PinnedHostBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

PinnedHostBuffer& PinnedHostBuffer::operator=(PinnedHostBuffer&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) cudaFreeHost(data_);
    data_ = std::exchange(o.data_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

PinnedHostBuffer::~PinnedHostBuffer() {
  if (data_ != nullptr) cudaFreeHost(data_);
}

// ---- PinnedHostPool --------------------------------------------------------------------------

PinnedHostPool::PinnedHostPool(size_t capacity_bytes, size_t arena_bytes)
    : capacity_bytes_(capacity_bytes), arena_bytes_(std::max<size_t>(arena_bytes, 1 << 20)) {}

PinnedHostPool::~PinnedHostPool() {
  for (Arena& a : arenas_) cudaFreeHost(a.base);
}

void* PinnedHostPool::Allocate(size_t bytes, size_t alignment) {
  if (alignment == 0) alignment = 1;
  KVSTAR_CHECK((alignment & (alignment - 1)) == 0 && alignment <= 4096,
               "alignment %zu is not a power of two <= 4096", alignment);
  if (bytes == 0) bytes = 1;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_lists_.find(Key(bytes, alignment));
  if (it != free_lists_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    alignment_of_[p] = alignment;
    used_bytes_ += bytes;
    return p;
  }
  for (Arena& a : arenas_) {
    const size_t start = (a.used + alignment - 1) & ~(alignment - 1);
    if (start + bytes <= a.bytes) {
      a.used = start + bytes;
      void* p = a.base + start;
      alignment_of_[p] = alignment;
      used_bytes_ += bytes;
      return p;
    }
  }
  // Arenas start page aligned (cudaHostAlloc), which covers every alignment allowed here.
  const size_t arena = std::max(arena_bytes_, (bytes + 4095) & ~size_t{4095});
  if (pinned_bytes_ + arena > capacity_bytes_) return nullptr;
  void* base = nullptr;
  if (cudaHostAlloc(&base, arena, cudaHostAllocPortable) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  pinned_bytes_ += arena;
  arenas_.push_back(Arena{static_cast<char*>(base), arena, bytes});
  alignment_of_[base] = alignment;
  used_bytes_ += bytes;
  return base;
}

void PinnedHostPool::Free(void* p, size_t bytes) {
  if (p == nullptr) return;
  if (bytes == 0) bytes = 1;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = alignment_of_.find(p);
  KVSTAR_CHECK(it != alignment_of_.end(), "Free(%p, %zu): pointer not from this pool", p, bytes);
  free_lists_[Key(bytes, it->second)].push_back(p);
  alignment_of_.erase(it);
  used_bytes_ -= bytes;
}

size_t PinnedHostPool::pinned_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pinned_bytes_;
}

size_t PinnedHostPool::used_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_bytes_;
}

// ---- Event -----------------------------------------------------------------------------------

StatusOr<Event> Event::Create() {
  cudaEvent_t e = nullptr;
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
  return Event(e);
}

Event::Event(Event&& o) noexcept : event_(std::exchange(o.event_, nullptr)) {}

Event& Event::operator=(Event&& o) noexcept {
  if (this != &o) {
    if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
    event_ = std::exchange(o.event_, nullptr);
  }
  return *this;
}

Event::~Event() {
  if (event_ != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event_));
}

Status Event::Record(CudaStream* stream) {
  return internal::CudaStatus(cudaEventRecord(static_cast<cudaEvent_t>(event_), AsCuda(stream)),
                              "cudaEventRecord");
}

Status Event::WaitOn(CudaStream* stream) const {
  return internal::CudaStatus(
      cudaStreamWaitEvent(AsCuda(stream), static_cast<cudaEvent_t>(event_), 0),
      "cudaStreamWaitEvent");
}

Status Event::Synchronize() const {
  return internal::CudaStatus(cudaEventSynchronize(static_cast<cudaEvent_t>(event_)),
                              "cudaEventSynchronize");
}

StatusOr<bool> Event::Query() const {
  const cudaError_t err = cudaEventQuery(static_cast<cudaEvent_t>(event_));
  if (err == cudaSuccess) return true;
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  return internal::CudaStatus(err, "cudaEventQuery");
}

StatusOr<float> Event::ElapsedMsSince(const Event& start) const {
  float ms = 0.0f;
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start.event_),
                                                   static_cast<cudaEvent_t>(event_)));
  return ms;
}

// ---- DeviceContext ---------------------------------------------------------------------------

struct DeviceContext::Impl {
  DeviceInfo info;
  cudaStream_t compute = nullptr;
  cudaStream_t h2d = nullptr;
  cudaStream_t d2h = nullptr;
  cudaStream_t background = nullptr;
  cublasHandle_t blas = nullptr;

  ~Impl() {
    if (cudaSetDevice(info.ordinal) != cudaSuccess) return;
    if (blas != nullptr) cublasDestroy(blas);
    for (cudaStream_t s : {compute, h2d, d2h, background}) {
      if (s != nullptr) cudaStreamDestroy(s);
    }
  }
};

DeviceContext::DeviceContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceContext::~DeviceContext() = default;

StatusOr<std::unique_ptr<DeviceContext>> DeviceContext::Create(int device) {
  const int count = DeviceCount();
  if (device < 0 || device >= count) {
    return NotFound("CUDA device %d requested, %d present", device, count);
  }
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaSetDevice(device));
  auto impl = std::make_unique<Impl>();
  cudaDeviceProp prop{};
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device));
  DeviceInfo& info = impl->info;
  info.ordinal = device;
  info.name = prop.name;
  info.sm_count = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  info.l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  info.smem_per_block = prop.sharedMemPerBlockOptin;
  info.memory_bus_bits = prop.memoryBusWidth;
  // Non-blocking: the legacy default stream must not serialise our streams.
  for (cudaStream_t* s : {&impl->compute, &impl->h2d, &impl->d2h}) {
    KVSTAR_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking));
  }
  // The background stream at the lowest priority (the largest number): the scheduler starts
  // its CTAs only where the other streams leave room.
  int least = 0, greatest = 0;
  KVSTAR_CUDA_RETURN_IF_ERROR(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  KVSTAR_CUDA_RETURN_IF_ERROR(
      cudaStreamCreateWithPriority(&impl->background, cudaStreamNonBlocking, least));
  const cublasStatus_t bs = cublasCreate(&impl->blas);
  if (bs != CUBLAS_STATUS_SUCCESS) {
    return Internal("cublasCreate: %s", cublasGetStatusString(bs));
  }
  return std::unique_ptr<DeviceContext>(new DeviceContext(std::move(impl)));
}

const DeviceInfo& DeviceContext::info() const { return impl_->info; }

Status DeviceContext::Activate() const {
  return internal::CudaStatus(cudaSetDevice(impl_->info.ordinal), "cudaSetDevice");
}

CudaStream* DeviceContext::compute_stream() const { return FromCuda(impl_->compute); }
CudaStream* DeviceContext::h2d_stream() const { return FromCuda(impl_->h2d); }
CudaStream* DeviceContext::d2h_stream() const { return FromCuda(impl_->d2h); }
CudaStream* DeviceContext::background_stream() const { return FromCuda(impl_->background); }

Status DeviceContext::Synchronize(CudaStream* stream) const {
  return internal::CudaStatus(cudaStreamSynchronize(AsCuda(stream)), "cudaStreamSynchronize");
}

Status DeviceContext::SynchronizeDevice() const {
  return internal::CudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

Status DeviceContext::CopyToDevice(void* dst_device, const void* src_host, size_t bytes,
                                   CudaStream* stream) const {
  return internal::CudaStatus(
      cudaMemcpyAsync(dst_device, src_host, bytes, cudaMemcpyHostToDevice, AsCuda(stream)),
      "cudaMemcpyAsync(host to device)");
}

Status DeviceContext::CopyBatchToDevice(void* const* dst_device, const void* const* src_host,
                                        const size_t* bytes, size_t count,
                                        CudaStream* stream) const {
  if (count == 1) return CopyToDevice(dst_device[0], src_host[0], bytes[0], stream);
  return CopyBatch(dst_device, src_host, bytes, count, stream);
}

Status DeviceContext::CopyBatch(void* const* dst, const void* const* src, const size_t* bytes,
                                size_t count, CudaStream* stream) const {
  if (count == 0) return Status::Ok();
  if (count == 1) {
    return internal::CudaStatus(
        cudaMemcpyAsync(dst[0], src[0], bytes[0], cudaMemcpyDefault, AsCuda(stream)),
        "cudaMemcpyAsync");
  }
  cudaMemcpyAttributes attr{};
  attr.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
  attr.flags = cudaMemcpyFlagPreferOverlapWithCompute;
  size_t attr_index = 0;
  return internal::CudaStatus(
      cudaMemcpyBatchAsync(dst, src, bytes, count, &attr, &attr_index, 1, AsCuda(stream)),
      "cudaMemcpyBatchAsync");
}

Status DeviceContext::CopyToHost(void* dst_host, const void* src_device, size_t bytes,
                                 CudaStream* stream) const {
  return internal::CudaStatus(
      cudaMemcpyAsync(dst_host, src_device, bytes, cudaMemcpyDeviceToHost, AsCuda(stream)),
      "cudaMemcpyAsync(device to host)");
}

Status DeviceContext::CopyToHost2D(void* dst_host, size_t dst_pitch, const void* src_device,
                                   size_t src_pitch, size_t width, size_t rows,
                                   CudaStream* stream) const {
  return internal::CudaStatus(cudaMemcpy2DAsync(dst_host, dst_pitch, src_device, src_pitch, width,
                                                rows, cudaMemcpyDeviceToHost, AsCuda(stream)),
                              "cudaMemcpy2DAsync(device to host)");
}

Status DeviceContext::CopyOnDevice(void* dst_device, const void* src_device, size_t bytes,
                                   CudaStream* stream) const {
  return internal::CudaStatus(
      cudaMemcpyAsync(dst_device, src_device, bytes, cudaMemcpyDeviceToDevice, AsCuda(stream)),
      "cudaMemcpyAsync(device to device)");
}

Status DeviceContext::Memset(void* dst_device, int byte, size_t bytes, CudaStream* stream) const {
  return internal::CudaStatus(cudaMemsetAsync(dst_device, byte, bytes, AsCuda(stream)),
                              "cudaMemsetAsync");
}

void* DeviceContext::blas_handle() const { return impl_->blas; }

}  // namespace kvstar::cuda
