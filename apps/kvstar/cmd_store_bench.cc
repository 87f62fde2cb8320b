// kvstar store-bench: dump/load throughput and latency of the block store backends over a grid of
// block sizes and queue depths, next to the raw baseline measured in the same run on the same
// memory / file system (memcpy for DRAM; plain pread/pwrite of equal bytes for files).
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "base/timer.h"
#include "cli_common.h"
#include "command.h"
#include "json_plot.h"
#include "store/block_store.h"
#include "store/file/file_store.h"

namespace kvstar::cli {
namespace {

struct StoreBenchFlags {
  std::string dir;
  std::string block_sizes = "64K,256K,1M,4M,16M,32M";
  std::string queue_depths = "1,8,64";
  std::string backends = "dram,file,file-direct";
  std::string total_bytes = "64M";
  int io_threads = 0;
  int dram_shards = StoreOptions{}.dram_shards;
  std::string dram_inline_bytes = "auto";
  size_t dram_inline = StoreOptions::kDramInlineAuto;  // parsed
  std::string dram_bytes_per_runner = "0";
  size_t dram_runner_bytes = StoreOptions{}.dram_bytes_per_runner;  // parsed
  int items_per_task = 1;
  std::string io_dispatch = "handoff";  // StoreOptions::io_direct_handoff: handoff or queue
  int repeats = 1;
  std::string fsync = "none";
  bool quick = false;
  bool json = false;
  std::string plot;  // PNG/SVG: load / raw (same threads) vs block size per backend and qd
};

StatusOr<size_t> ParseSize(std::string text, const char* flag) {
  const std::string orig = text;
  size_t mult = 1;
  for (const char* suffix : {"iB", "B"}) {
    const size_t n = std::strlen(suffix);
    if (text.size() > n && text.compare(text.size() - n, n, suffix) == 0) {
      text.resize(text.size() - n);
      break;
    }
  }
  if (!text.empty()) {
    switch (text.back()) {
      case 'K':
      case 'k':
        mult = size_t{1} << 10;
        break;
      case 'M':
      case 'm':
        mult = size_t{1} << 20;
        break;
      case 'G':
      case 'g':
        mult = size_t{1} << 30;
        break;
      default:
        break;
    }
    if (mult != 1) text.pop_back();
  }
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || v <= 0) {
    return InvalidArgument("%s: '%s' is not a size (examples: 65536, 64K, 1M, 1.5G)", flag,
                           orig.c_str());
  }
  return static_cast<size_t>(v * static_cast<double>(mult));
}

std::vector<std::string> SplitCommas(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = std::min(s.find(',', start), s.size());
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string HumanSize(size_t b) {
  char buf[32];
  if (b >= (size_t{1} << 20) && b % (size_t{1} << 20) == 0) {
    std::snprintf(buf, sizeof(buf), "%zuM", b >> 20);
  } else if (b >= 1024 && b % 1024 == 0) {
    std::snprintf(buf, sizeof(buf), "%zuK", b >> 10);
  } else {
    std::snprintf(buf, sizeof(buf), "%zu", b);
  }
  return buf;
}

std::string CpuModel() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string FsType(const std::string& dir) {
  struct statfs s;
  if (::statfs(dir.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53:
      return "ext4";
    case 0x58465342:
      return "xfs";
    case 0x01021994:
      return "tmpfs";
    case 0x6969:
      return "nfs";
    case 0x9123683E:
      return "btrfs";
    case 0x794c7630:
      return "overlayfs";
    case 0x0BD00BD0:
      return "lustre";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "0x%lx", static_cast<unsigned long>(s.f_type));
      return buf;
    }
  }
}

// An aligned, pre-faulted region of `blocks` blocks.
struct Region {
  explicit Region(size_t bytes) : size(bytes) {
    data = static_cast<char*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096));
    KVSTAR_CHECK(data != nullptr, "cannot allocate %zu bytes for the benchmark", bytes);
    std::memset(data, 0, bytes);
  }
  ~Region() { std::free(data); }
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  char* data;
  size_t size;
};

void FillRandom(Region& r) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  auto* p = reinterpret_cast<uint64_t*>(r.data);
  for (size_t i = 0; i < r.size / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = x;
  }
}

struct PassResult {
  double gbps = 0;
  double p50_us = 0;
  double p99_us = 0;
  double minor_faults = 0;  // page faults of the whole process during the pass
};

double MinorFaults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_minflt);
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// Names the calling thread for a scope (`perf report --comms sb-load` then shows the
// submitting thread of the load passes alone), and restores its name after.
class ScopedThreadName {
 public:
  explicit ScopedThreadName(const char* name) {
    pthread_getname_np(pthread_self(), old_, sizeof(old_));
    pthread_setname_np(pthread_self(), name);
  }
  ~ScopedThreadName() { pthread_setname_np(pthread_self(), old_); }
  ScopedThreadName(const ScopedThreadName&) = delete;
  ScopedThreadName& operator=(const ScopedThreadName&) = delete;

 private:
  char old_[16] = {};
};

// Runs n blocks as tasks of k blocks (the last may be smaller), keeping about `qd` blocks in
// flight; latency = submit to completion of a task. The thread is named `name` meanwhile.
template <typename SubmitFn>
StatusOr<PassResult> RunPass(const char* name, size_t n, size_t block, int qd, size_t k,
                             SubmitFn submit) {
  const ScopedThreadName thread_name(name);
  using Clock = std::chrono::steady_clock;
  std::deque<std::pair<StoreTask, Clock::time_point>> inflight;
  std::vector<double> lat;
  lat.reserve(n);
  Status first;
  auto retire = [&] {
    auto& [task, start] = inflight.front();
    Status s = task.Wait();
    if (!s.ok() && first.ok()) first = s;
    lat.push_back(
        std::chrono::duration<double, std::micro>(task.completion()->finish_time() - start)
            .count());
    inflight.pop_front();
  };
  const size_t max_tasks = std::max<size_t>(1, static_cast<size_t>(qd) / k);
  const double faults0 = MinorFaults();
  Stopwatch watch;
  for (size_t i = 0; i < n; i += k) {
    if (inflight.size() >= max_tasks) retire();
    const auto start = Clock::now();
    inflight.emplace_back(submit(i, std::min(k, n - i)), start);
  }
  while (!inflight.empty()) retire();
  const double secs = watch.Seconds();
  KVSTAR_RETURN_IF_ERROR(first);
  PassResult r;
  r.gbps = static_cast<double>(n * block) / secs / 1e9;
  r.p50_us = Percentile(lat, 0.5);
  r.p99_us = Percentile(lat, 0.99);
  r.minor_faults = MinorFaults() - faults0;
  return r;
}

// Raw baselines: `threads` threads copy / pread / pwrite block i of n (claimed in order).
double RawMemcpy(Region& dst, const Region& src, size_t block, size_t n, int threads) {
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      std::memcpy(dst.data + i * block, src.data + i * block, block);
    }
  };
  Stopwatch watch;
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return static_cast<double>(n * block) / watch.Seconds() / 1e9;
}

void DropFromPageCache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);  // dirty pages cannot be dropped
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

StatusOr<double> RawFile(const std::string& path, bool write, bool direct, Region& mem,
                         size_t block, size_t n, int threads) {
  const int flags =
      (write ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY) | O_CLOEXEC | (direct ? O_DIRECT : 0);
  const int fd = ::open(path.c_str(), flags, 0644);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  std::atomic<size_t> next{0};
  std::atomic<int> err{0};
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      char* p = mem.data + i * block;
      const off_t off = static_cast<off_t>(i * block);
      const ssize_t got = write ? ::pwrite(fd, p, block, off) : ::pread(fd, p, block, off);
      if (got != static_cast<ssize_t>(block)) err = got < 0 ? errno : EIO;
    }
  };
  Stopwatch watch;
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  const double secs = watch.Seconds();
  ::close(fd);
  if (err) return ErrnoStatus(err, std::string(write ? "pwrite " : "pread ") + path);
  return static_cast<double>(n * block) / secs / 1e9;
}

struct Point {
  std::string backend;
  size_t block = 0;
  int qd = 0;
  int io_threads = 0;
  size_t blocks = 0;
  PassResult dump, load;
  double raw_write_seq = 0, raw_write_qd = 0, raw_read_seq = 0, raw_read_qd = 0;
  // Ratios of the store to the baseline of the same round (one per round; see Aggregate).
  std::vector<double> load_ratio_seq, load_ratio_qd, dump_ratio_qd;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// One point from its rounds (--repeats): every rate and latency is the median over the rounds,
// and each ratio the median of the rounds' ratios, each round's store pass against the baselines
// measured right after it, so that a slow or fast phase of the disk or the machine counts on
// both sides of a ratio.
Point Aggregate(const std::vector<Point>& rounds) {
  Point p = rounds.front();
  const auto median = [&](auto get) {
    std::vector<double> v;
    for (const Point& r : rounds) v.push_back(get(r));
    return Median(std::move(v));
  };
  p.dump = {median([](const Point& r) { return r.dump.gbps; }),
            median([](const Point& r) { return r.dump.p50_us; }),
            median([](const Point& r) { return r.dump.p99_us; }),
            median([](const Point& r) { return r.dump.minor_faults; })};
  p.load = {median([](const Point& r) { return r.load.gbps; }),
            median([](const Point& r) { return r.load.p50_us; }),
            median([](const Point& r) { return r.load.p99_us; }),
            median([](const Point& r) { return r.load.minor_faults; })};
  p.raw_write_seq = median([](const Point& r) { return r.raw_write_seq; });
  p.raw_write_qd = median([](const Point& r) { return r.raw_write_qd; });
  p.raw_read_seq = median([](const Point& r) { return r.raw_read_seq; });
  p.raw_read_qd = median([](const Point& r) { return r.raw_read_qd; });
  p.load_ratio_seq.clear();
  p.load_ratio_qd.clear();
  p.dump_ratio_qd.clear();
  for (const Point& r : rounds) {
    p.load_ratio_seq.push_back(r.load.gbps / r.raw_read_seq);
    p.load_ratio_qd.push_back(r.load.gbps / r.raw_read_qd);
    p.dump_ratio_qd.push_back(r.dump.gbps / r.raw_write_qd);
  }
  return p;
}

StatusOr<Point> RunPoint(const std::string& backend, const std::string& dir, size_t block, int qd,
                         size_t total, const StoreBenchFlags& f, Region& src, Region& dst) {
  Point p;
  p.backend = backend;
  p.block = block;
  p.qd = qd;
  const bool is_dram = backend == "dram";
  const bool direct = backend == "file-direct";
  const int hw = ThreadPool::HardwareThreads();
  // Files: one blocking pread/pwrite per thread, so threads = queue depth. DRAM copies are CPU
  // work: more threads than cores only adds switching, and the submitting thread needs a core of
  // its own (its I/O threads spin while they wait for work).
  p.io_threads = f.io_threads > 0 ? f.io_threads : is_dram ? std::max(1, std::min(qd, hw - 1)) : qd;
  p.blocks = total / block;
  const size_t n = p.blocks;

  StoreOptions o;
  o.io_threads = p.io_threads;
  o.max_entry_bytes = std::max<size_t>(block, o.max_entry_bytes);
  o.dram_capacity_bytes = total + (size_t{64} << 20);
  o.dram_shards = f.dram_shards;
  o.dram_inline_bytes = f.dram_inline;
  o.dram_bytes_per_runner = f.dram_runner_bytes;
  o.io_direct_handoff = f.io_dispatch == "handoff";
  o.use_o_direct = direct;
  o.fsync = f.fsync == "data"   ? FsyncPolicy::kData
            : f.fsync == "full" ? FsyncPolicy::kFull
                                : FsyncPolicy::kNone;
  const std::string store_dir = dir + "/store-" + backend;
  auto opened = OpenStore(is_dram ? "dram" : "file:" + store_dir, o);
  if (!opened.ok()) return opened.status();
  BlockStore& store = **opened;
  std::vector<Hash128> ids(n);
  for (size_t i = 0; i < n; ++i)
    ids[i] = Hash128{i + 1, block * 1000003 + static_cast<uint64_t>(qd)};

  const size_t k = static_cast<size_t>(f.items_per_task);
  auto dump = [&](size_t first, size_t count) {
    std::vector<DumpItem> items;
    for (size_t i = first; i < first + count; ++i) {
      items.push_back({ids[i], src.data + i * block, block});
    }
    return store.Dump(items);
  };
  auto load = [&](size_t first, size_t count) {
    std::vector<LoadItem> items;
    for (size_t i = first; i < first + count; ++i) {
      items.push_back({ids[i], dst.data + i * block, block});
    }
    return store.Load(items);
  };
  std::memset(dst.data, 0, n * block);
  if (is_dram) {
    // Steady state: a running DramStore recycles the buffers of evicted entries. Fresh memory
    // would time the kernel's first-touch page faults instead (very slow on some VMs).
    KVSTAR_RETURN_IF_ERROR(RunPass("sb-warmup", n, block, qd, k, dump).status());
    KVSTAR_RETURN_IF_ERROR(store.Remove(ids));
  }
  KVSTAR_ASSIGN_OR_RETURN(p.dump, RunPass("sb-dump", n, block, qd, k, dump));
  if (!is_dram && !direct) {
    auto* fs = dynamic_cast<FileStore*>(&store);
    for (const Hash128& id : ids) DropFromPageCache(fs->BlockPath(id));
  }
  KVSTAR_ASSIGN_OR_RETURN(p.load, RunPass("sb-load", n, block, qd, k, load));
  if (std::memcmp(dst.data, src.data, n * block) != 0) {
    return DataLoss("%s: loaded blocks differ from the dumped ones (block %zu, qd %d)",
                    backend.c_str(), block, qd);
  }
  KVSTAR_RETURN_IF_ERROR(store.Remove(ids));
  opened->reset();

  const int par = std::min(qd, is_dram ? hw : qd);
  if (is_dram) {
    p.raw_write_seq = p.raw_read_seq = RawMemcpy(dst, src, block, n, 1);
    p.raw_write_qd = p.raw_read_qd = RawMemcpy(dst, src, block, n, par);
  } else {
    const std::string raw = dir + "/raw-" + backend;
    KVSTAR_ASSIGN_OR_RETURN(p.raw_write_seq, RawFile(raw, true, direct, src, block, n, 1));
    KVSTAR_ASSIGN_OR_RETURN(p.raw_write_qd, RawFile(raw, true, direct, src, block, n, par));
    if (!direct) DropFromPageCache(raw);
    KVSTAR_ASSIGN_OR_RETURN(p.raw_read_seq, RawFile(raw, false, direct, dst, block, n, 1));
    if (!direct) DropFromPageCache(raw);
    KVSTAR_ASSIGN_OR_RETURN(p.raw_read_qd, RawFile(raw, false, direct, dst, block, n, par));
    std::filesystem::remove(raw);
  }
  return p;
}

int RunStoreBench(const StoreBenchFlags& flags_in) {
  StoreBenchFlags f = flags_in;
  if (f.quick) {
    f.block_sizes = "64K,1M";
    f.queue_depths = "1,8";
    f.total_bytes = "8M";
  }
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
    return 1;
  };
  std::vector<size_t> sizes;
  for (const std::string& s : SplitCommas(f.block_sizes)) {
    auto v = ParseSize(s, "--block-sizes");
    if (!v.ok()) return fail(v.status());
    sizes.push_back(*v);
  }
  std::vector<int> qds;
  for (const std::string& s : SplitCommas(f.queue_depths)) {
    const int q = std::atoi(s.c_str());
    if (q < 1 || q > 1024) {
      return fail(InvalidArgument("--queue-depths: '%s' is not in 1..1024", s.c_str()));
    }
    qds.push_back(q);
  }
  const std::vector<std::string> backends = SplitCommas(f.backends);
  for (const std::string& b : backends) {
    if (b != "dram" && b != "file" && b != "file-direct") {
      return fail(
          InvalidArgument("--backends: unknown backend '%s' (dram, file, file-direct)", b.c_str()));
    }
  }
  if (f.dram_shards < 1 || f.dram_shards > 1024) {
    return fail(InvalidArgument("--dram-shards must be in 1..1024, got %d", f.dram_shards));
  }
  if (f.dram_inline_bytes == "0") {  // ParseBytes takes sizes > 0 only
    f.dram_inline = 0;
  } else if (f.dram_inline_bytes != "auto") {
    auto inline_bytes = ParseBytes(f.dram_inline_bytes, "--dram-inline-bytes");
    if (!inline_bytes.ok()) return fail(inline_bytes.status());
    f.dram_inline = *inline_bytes;
  }
  if (f.dram_bytes_per_runner == "0") {
    f.dram_runner_bytes = 0;
  } else {
    auto runner_bytes = ParseBytes(f.dram_bytes_per_runner, "--dram-bytes-per-runner");
    if (!runner_bytes.ok()) return fail(runner_bytes.status());
    f.dram_runner_bytes = *runner_bytes;
  }
  if (f.repeats < 1 || f.repeats > 100) {
    return fail(InvalidArgument("--repeats must be in 1..100, got %d", f.repeats));
  }
  if (f.io_dispatch != "handoff" && f.io_dispatch != "queue") {
    return fail(
        InvalidArgument("--io-dispatch: '%s' is not handoff or queue", f.io_dispatch.c_str()));
  }
  if (f.items_per_task < 1) {
    return fail(InvalidArgument("--items-per-task must be >= 1, got %d", f.items_per_task));
  }
  if (f.fsync != "none" && f.fsync != "data" && f.fsync != "full") {
    return fail(InvalidArgument("--fsync: '%s' is not none, data or full", f.fsync.c_str()));
  }
  auto total_or = ParseSize(f.total_bytes, "--total-bytes");
  if (!total_or.ok()) return fail(total_or.status());
  if (sizes.empty() || qds.empty() || backends.empty()) {
    return fail(InvalidArgument("--block-sizes, --queue-depths and --backends need values"));
  }

  bool made_dir = false;
  std::string dir = f.dir;
  if (dir.empty()) {
    char templ[] = "/tmp/kvstar-store-bench-XXXXXX";
    if (::mkdtemp(templ) == nullptr) return fail(ErrnoStatus(errno, "mkdtemp /tmp"));
    dir = templ;
    made_dir = true;
  } else {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return fail(IoError("--dir %s: %s", dir.c_str(), ec.message().c_str()));
  }

  const size_t max_block = *std::max_element(sizes.begin(), sizes.end());
  // At least 4 blocks per point, so that big blocks still overlap.
  const size_t region = std::max(*total_or, 4 * max_block);
  Region src(region), dst(region);
  FillRandom(src);

  nlohmann::json points = nlohmann::json::array();
  if (!f.json) {
    std::printf("store-bench: %s, %d hardware threads, dir %s (%s), %d block(s) per task\n",
                CpuModel().c_str(), ThreadPool::HardwareThreads(), dir.c_str(), FsType(dir).c_str(),
                f.items_per_task);
    std::printf(
        "GB/s = 1e9 bytes/s. raw = plain memcpy (dram) or pread/pwrite of the same bytes "
        "on the same file system; seq = 1 thread, qd = same parallelism as the store.\n"
        "Buffered file reads start cold (fdatasync + POSIX_FADV_DONTNEED); buffered "
        "writes land in the page cache (fsync %s).\n\n",
        f.fsync.c_str());
    std::printf("%-11s %6s %4s %6s | %7s %7s %7s %6s | %7s %7s %7s %6s %6s | %9s %9s\n", "backend",
                "block", "qd", "blocks", "dump", "raw-seq", "raw-qd", "ratio", "load", "raw-seq",
                "raw-qd", "r-seq", "r-qd", "load-p50", "load-p99");
  }
  Status first_error;
  for (const std::string& backend : backends) {
    for (size_t block : sizes) {
      const size_t total = std::max(*total_or, 4 * block) / block * block;
      for (int qd : qds) {
        std::vector<Point> rounds;
        Status failed;
        for (int round = 0; round < f.repeats && failed.ok(); ++round) {
          auto r = RunPoint(backend, dir, block, qd, total, f, src, dst);
          if (r.ok()) {
            rounds.push_back(*std::move(r));
          } else {
            failed = r.status();
          }
        }
        if (!failed.ok()) {
          first_error = failed;
          std::fprintf(stderr, "error: %s\n", failed.ToString().c_str());
          continue;
        }
        const Point p = Aggregate(rounds);
        const double load_seq = Median(p.load_ratio_seq), load_qd = Median(p.load_ratio_qd);
        if (!f.json) {
          std::printf(
              "%-11s %6s %4d %6zu | %7.2f %7.2f %7.2f %6.2f | %7.2f %7.2f %7.2f %6.2f "
              "%6.2f | %7.0fus %7.0fus\n",
              p.backend.c_str(), HumanSize(p.block).c_str(), p.qd, p.blocks, p.dump.gbps,
              p.raw_write_seq, p.raw_write_qd, Median(p.dump_ratio_qd), p.load.gbps, p.raw_read_seq,
              p.raw_read_qd, load_seq, load_qd, p.load.p50_us, p.load.p99_us);
          if (f.repeats > 1) {
            const auto [lo, hi] =
                std::minmax_element(p.load_ratio_seq.begin(), p.load_ratio_seq.end());
            std::printf("%40s load / raw-seq over %d rounds: %.2f .. %.2f\n", "", f.repeats, *lo,
                        *hi);
          }
          std::fflush(stdout);
        }
        points.push_back({{"backend", p.backend},
                          {"block_bytes", p.block},
                          {"queue_depth", p.qd},
                          {"io_threads", p.io_threads},
                          {"items_per_task", f.items_per_task},
                          {"io_dispatch", f.io_dispatch},
                          {"blocks", p.blocks},
                          {"dump_gbps", p.dump.gbps},
                          {"dump_p50_us", p.dump.p50_us},
                          {"dump_p99_us", p.dump.p99_us},
                          {"load_gbps", p.load.gbps},
                          {"load_p50_us", p.load.p50_us},
                          {"load_p99_us", p.load.p99_us},
                          {"dump_minor_faults", p.dump.minor_faults},
                          {"load_minor_faults", p.load.minor_faults},
                          {"raw_write_seq_gbps", p.raw_write_seq},
                          {"raw_write_qd_gbps", p.raw_write_qd},
                          {"raw_read_seq_gbps", p.raw_read_seq},
                          {"raw_read_qd_gbps", p.raw_read_qd},
                          {"load_ratio_seq", load_seq},
                          {"load_ratio_qd", load_qd},
                          {"dump_ratio_qd", Median(p.dump_ratio_qd)},
                          {"repeats", f.repeats},
                          {"load_ratio_seq_rounds", p.load_ratio_seq},
                          {"load_ratio_qd_rounds", p.load_ratio_qd},
                          {"dump_ratio_qd_rounds", p.dump_ratio_qd}});
      }
    }
  }
  if (f.json) {
    nlohmann::json out = {{"command", "store-bench"},
                          {"cpu", CpuModel()},
                          {"hardware_threads", ThreadPool::HardwareThreads()},
                          {"dir", dir},
                          {"filesystem", FsType(dir)},
                          {"fsync", f.fsync},
                          {"dram_shards", f.dram_shards},
                          {"dram_inline_bytes", f.dram_inline_bytes},
                          {"dram_bytes_per_runner", f.dram_bytes_per_runner},
                          {"buffered_read_cache", "fdatasync + POSIX_FADV_DONTNEED before reads"},
                          {"points", points}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  if (!f.plot.empty() && !points.empty()) {
    LinePlot plot;
    plot.title = "Block store load / raw baseline with the same threads (" + CpuModel() + ")";
    plot.x_label = "block bytes";
    plot.y_label = "load GB/s / raw GB/s";
    plot.log_x = true;
    RecordPlotSpec spec;
    spec.x = "block_bytes";
    spec.y = "load_ratio_qd";
    spec.group_by = {"backend", "queue_depth"};
    spec.group_names = {"", "qd"};
    const Status s = PlotRecordsToFile(std::move(plot), points, spec, "store-bench", f.plot);
    if (!s.ok()) {
      std::fprintf(stderr, "error: %s\n", s.ToString().c_str());
      if (first_error.ok()) first_error = s;
    } else if (!f.json) {
      std::printf("plot: %s\n", f.plot.c_str());
    }
  }
  if (made_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return first_error.ok() ? 0 : 1;
}

void AddStoreBench(CLI::App& root, int* exit_code) {
  auto flags = std::make_shared<StoreBenchFlags>();
  auto* cmd = root.add_subcommand(
      "store-bench",
      "Measure block store dump/load throughput and latency against raw memcpy / pread / pwrite.\n"
      "For every backend, block size and queue depth: dumps --total-bytes of blocks, then loads\n"
      "them back (verified), keeping `qd` blocks in flight (tasks of --items-per-task blocks), "
      "and\n"
      "measures the raw baseline of equal bytes in the same run on the same memory / file system.");
  cmd->add_option("--dir", flags->dir,
                  "Directory for the file backends (default: a new temp dir under /tmp, removed "
                  "afterwards). Put it on the file system you want to measure, e.g. an NFS mount.");
  cmd->add_option("--block-sizes", flags->block_sizes, "Comma list of block sizes (K/M/G suffixes)")
      ->capture_default_str();
  cmd->add_option("--queue-depths", flags->queue_depths, "Comma list of blocks kept in flight")
      ->capture_default_str();
  cmd->add_option("--backends", flags->backends, "Comma list of dram, file, file-direct (O_DIRECT)")
      ->capture_default_str();
  cmd->add_option("--total-bytes", flags->total_bytes,
                  "Bytes dumped and loaded per point (at least 4 blocks)")
      ->capture_default_str();
  cmd->add_option("--io-threads", flags->io_threads,
                  "Store I/O threads (0: the queue depth of each point for files, "
                  "min(queue depth, cores - 1) for dram: one core is the submitting thread's)")
      ->capture_default_str();
  cmd->add_option("--dram-shards", flags->dram_shards,
                  "DramStore index shards (each with its own lock and LRU list); 1 = one lock for "
                  "the whole store, to compare")
      ->capture_default_str();
  cmd->add_option("--dram-inline-bytes", flags->dram_inline_bytes,
                  "DramStore tasks of at most this many bytes copy on the submitting thread "
                  "(K/M suffixes); 0 = every task on the I/O threads; auto = 256K with at most 4 "
                  "hardware threads, else 0")
      ->capture_default_str();
  cmd->add_option("--dram-bytes-per-runner", flags->dram_bytes_per_runner,
                  "DramStore: a task of several blocks wakes one I/O thread per this many bytes "
                  "of them (K/M suffixes); 0 = one per block, up to the I/O threads")
      ->capture_default_str();
  cmd->add_option("--items-per-task", flags->items_per_task,
                  "Blocks per Dump/Load task (the engine loads a whole delta in one task); "
                  "qd / items-per-task tasks are kept in flight")
      ->capture_default_str();
  cmd->add_option("--io-dispatch", flags->io_dispatch,
                  "How a task reaches the store's I/O threads: handoff = straight into one idle "
                  "thread's own slot (one thread reacts), queue = a shared queue that every idle "
                  "thread watches, to compare")
      ->capture_default_str();
  cmd->add_option("--repeats", flags->repeats,
                  "Rounds per point, each a store pass followed by its baselines; rates and "
                  "latencies are the medians over the rounds, each ratio the median of the "
                  "rounds' own ratios (their range is printed and in the JSON), so that a disk "
                  "or machine whose speed drifts between passes counts on both sides")
      ->capture_default_str();
  cmd->add_option("--fsync", flags->fsync, "File store fsync policy: none, data, full")
      ->capture_default_str();
  cmd->add_flag("--quick", flags->quick, "Small grid (64K,1M x qd 1,8, 8 MiB per point) for tests");
  cmd->add_flag("--json", flags->json, "Print the results as JSON on stdout");
  cmd->add_option("--plot", flags->plot,
                  "Also draw load / raw baseline (same threads) against block size, one line per "
                  "backend and queue depth, to this PNG (or SVG when it ends in .svg)");
  cmd->callback([flags, exit_code] { *exit_code = RunStoreBench(*flags); });
}

}  // namespace

KVSTAR_COMMAND(store_bench, 60, AddStoreBench);

}  // namespace kvstar::cli
