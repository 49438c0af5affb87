// bench_common.h — shared machinery of the fusedopt Google Benchmark binaries (STYLE.md §6.8,
// shared/PERF.md): aligned case buffers reused by every capability variant of a case, registration
// once per CPU capability, the measured bandwidth floor and its x_floor counter, LLC flushing for cold
// cases, and the parameter-shape lists of param_shapes.json.
//
// Counters every benchmark reports (set by finish()):
//   bytes_per_second  minimal bytes of PERF.md's table (each operand read once, each output written once)
//   GBps              the same in decimal GB/s, so it compares directly with PERF.md and the floor
//   x_floor           time per step / (minimal bytes / floor bandwidth); 1.0 = at the floor
// The floor bandwidth is measured at start-up with a plain in-place OpenMP loop over 3 and over 4
// arrays (sgd_mom's and DCASGD's access patterns): the best median over 3 allocations; override it with
// FUSEDOPT_BENCH_FLOOR_GBPS=<GB/s> (e.g. to compare runs against one fixed floor).
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "fusedopt/cpu_capability.h"
#include "fusedopt/dtype.h"
#include "fusedopt/tensor_view.h"

namespace fusedopt_bench {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kMi = std::int64_t{1} << 20;  ///< "1M" in names and PERF.md's floors

// ---------------------------------------------------------------------------------------------------
// Memory

/// One owning, 4 KiB-aligned allocation.
class Buffer {
 public:
  explicit Buffer(std::size_t bytes) : bytes_(bytes) {
    const std::size_t rounded = (std::max<std::size_t>(bytes, 1) + 4095) / 4096 * 4096;
    p_ = std::aligned_alloc(4096, rounded);
    if (p_ == nullptr) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* data() const { return p_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

template <class T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr fusedopt::DType value = fusedopt::DType::kFloat32;
  static constexpr const char* name = "f32";
};
template <>
struct DTypeOf<fusedopt::half> {
  static constexpr fusedopt::DType value = fusedopt::DType::kFloat16;
  static constexpr const char* name = "f16";
};
template <>
struct DTypeOf<fusedopt::bfloat16> {
  static constexpr fusedopt::DType value = fusedopt::DType::kBFloat16;
  static constexpr const char* name = "bf16";
};

inline float from_f(float x, float*) { return x; }
inline fusedopt::half from_f(float x, fusedopt::half*) { return fusedopt::to_half(x); }
inline fusedopt::bfloat16 from_f(float x, fusedopt::bfloat16*) { return fusedopt::to_bfloat16(x); }

/// Deterministic values in [lo, hi) (a cheap integer hash; no denormals, no zeros unless lo == hi).
/// Filled in parallel with the kernels' static split, so pages are first touched by their users.
template <class T>
void fill(T* p, std::int64_t n, std::uint32_t seed, float lo, float hi) {
#pragma omp parallel for schedule(static)
  for (std::int64_t i = 0; i < n; ++i) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ (seed * 0x9E3779B9u);
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 12;
    const float u = static_cast<float>(h >> 8) * (1.0f / 16777216.0f);
    p[i] = from_f(lo + (hi - lo) * u, static_cast<T*>(nullptr));
  }
}

/// The buffers of one case, cached by key so that every capability variant (and, with
/// --benchmark_enable_random_interleaving, every repetition) of a case runs on the very same
/// allocation: placement alone moves times by ±15 % here. Least recently used cases are freed once the
/// cache holds more than FUSEDOPT_BENCH_CACHE_MB (default 2048) MiB.
class CaseData {
 public:
  /// The case `key`; *fresh is true when it was not cached (the caller then adds its buffers).
  static CaseData& get(const std::string& key, bool* fresh) {
    auto& cases = all();
    for (auto it = cases.begin(); it != cases.end(); ++it) {
      if ((*it)->key_ == key) {
        std::unique_ptr<CaseData> d = std::move(*it);
        cases.erase(it);
        cases.push_back(std::move(d));  // most recently used last
        *fresh = false;
        return *cases.back();
      }
    }
    cases.push_back(std::unique_ptr<CaseData>(new CaseData(key)));
    *fresh = true;
    return *cases.back();
  }
  template <class T>
  T* add(std::int64_t n, std::uint32_t seed, float lo, float hi) {
    bufs_.push_back(std::make_unique<Buffer>(static_cast<std::size_t>(n) * sizeof(T)));
    bytes_ += bufs_.back()->bytes();
    T* p = static_cast<T*>(bufs_.back()->data());
    fill(p, n, seed, lo, hi);
    evict(this);
    return p;
  }
  template <class T>
  T* at(std::size_t i) const {
    return static_cast<T*>(bufs_.at(i)->data());
  }

 private:
  explicit CaseData(std::string key) : key_(std::move(key)) {}
  static std::vector<std::unique_ptr<CaseData>>& all() {
    static std::vector<std::unique_ptr<CaseData>> cases;
    return cases;
  }
  static void evict(const CaseData* keep) {
    static const std::size_t budget = [] {
      const char* env = std::getenv("FUSEDOPT_BENCH_CACHE_MB");
      const double mb = env && *env ? std::atof(env) : 2048.0;
      return static_cast<std::size_t>(mb * 1048576.0);
    }();
    auto& cases = all();
    auto total = [&] {
      std::size_t t = 0;
      for (const auto& c : cases) t += c->bytes_;
      return t;
    };
    while (total() > budget) {
      auto victim = cases.end();
      for (auto it = cases.begin(); it != cases.end(); ++it)
        if (it->get() != keep) {
          victim = it;
          break;
        }
      if (victim == cases.end()) return;
      cases.erase(victim);
    }
  }

  std::string key_;
  std::vector<std::unique_ptr<Buffer>> bufs_;
  std::size_t bytes_ = 0;
};

template <class T>
fusedopt::TensorView view(T* p, std::int64_t n) {
  return fusedopt::TensorView(static_cast<void*>(p), DTypeOf<T>::value, {n});
}
template <class T>
fusedopt::TensorView view(T* p, const std::vector<std::int64_t>& shape) {
  return fusedopt::TensorView(static_cast<void*>(p), DTypeOf<T>::value, shape);
}

/// Evicts the last-level cache (32 MiB here) by reading a 64 MiB buffer, one load per line. Reading
/// (not writing) leaves no dirty lines whose write-back the timed step would pay for.
inline void flush_llc() {
  static Buffer buf(64 * kMi);
  static bool init = [] {
    std::memset(buf.data(), 1, buf.bytes());
    return true;
  }();
  (void)init;
  const auto* p = static_cast<const unsigned char*>(buf.data());
  unsigned sum = 0;
  for (std::size_t i = 0; i < buf.bytes(); i += 64) sum += p[i];
  benchmark::DoNotOptimize(sum);
}

// ---------------------------------------------------------------------------------------------------
// Floor bandwidth

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
/// The plain loops are compiled for the widest vectors this CPU has (AVX2 or SSE2; one core streams
/// noticeably more with 256-bit accesses on the EPYC VMs), so the floor is not a baseline-ISA artefact.
#define FUSEDOPT_BENCH_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FUSEDOPT_BENCH_CLONES
#endif

/// a = a*s + b*t; c = c*s + a*t over [lo, hi): reads a b c, writes a c (sgd_mom's pattern, 20 B/elem).
FUSEDOPT_BENCH_CLONES static void stream3_range(float* __restrict a, const float* __restrict b,
                                                float* __restrict c, std::int64_t lo, std::int64_t hi) {
  const float s = 0.999f, t = 1e-3f;
  for (std::int64_t i = lo; i < hi; ++i) {
    const float ai = a[i] * s + b[i] * t;
    a[i] = ai;
    c[i] = c[i] * s + ai * t;
  }
}

/// Reads a b c d, writes a c d (DCASGD's pattern, 28 B/elem).
FUSEDOPT_BENCH_CLONES static void stream4_range(float* __restrict a, const float* __restrict b,
                                                float* __restrict c, float* __restrict d,
                                                std::int64_t lo, std::int64_t hi) {
  const float s = 0.999f, t = 1e-3f;
  for (std::int64_t i = lo; i < hi; ++i) {
    const float ai = a[i] * s + b[i] * t;
    c[i] = c[i] * s + (ai - d[i]) * t;
    d[i] = a[i];
    a[i] = ai;
  }
}

/// The plain fused sgd_mom loop (PERF.md's "plain fused C loop"), as a reference peer.
[[maybe_unused]] FUSEDOPT_BENCH_CLONES static void plain_sgd_mom_range(float* __restrict w, const float* __restrict g,
                                                      float* __restrict m, std::int64_t lo,
                                                      std::int64_t hi, float lr, float mu, float wd) {
  for (std::int64_t i = lo; i < hi; ++i) {
    const float r = g[i] + wd * w[i];
    const float mi = mu * m[i] - lr * r;
    m[i] = mi;
    w[i] += mi;
  }
}

/// Calls f(lo, hi) on equal contiguous ranges of [0, n), one per OpenMP thread (serial when small).
template <class F>
void parallel_ranges(std::int64_t n, F&& f) {
#if defined(_OPENMP)
  if (n >= 65536 && omp_get_max_threads() > 1) {
#pragma omp parallel
    {
      const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      f(n * t / nt, n * (t + 1) / nt);
    }
    return;
  }
#endif
  f(std::int64_t{0}, n);
}

/// Median GB/s of the in-place loop over `arrays` (3 or 4) on n elements per array.
inline double stream_gbps(int arrays, std::int64_t n, int reps) {
  std::vector<std::unique_ptr<Buffer>> bufs;
  std::vector<float*> p;
  for (int k = 0; k < arrays; ++k) {
    bufs.push_back(std::make_unique<Buffer>(static_cast<std::size_t>(n) * 4));
    p.push_back(static_cast<float*>(bufs.back()->data()));
    fill(p.back(), n, 100u + static_cast<std::uint32_t>(k), -1.0f, 1.0f);
  }
  const double bytes = static_cast<double>(n) * (arrays > 3 ? 28.0 : 20.0);
  std::vector<double> gbps;
  for (int r = 0; r < reps + 2; ++r) {  // two warm-up passes
    const auto t0 = Clock::now();
    if (arrays > 3)
      parallel_ranges(n, [&](std::int64_t lo, std::int64_t hi) { stream4_range(p[0], p[1], p[2], p[3], lo, hi); });
    else
      parallel_ranges(n, [&](std::int64_t lo, std::int64_t hi) { stream3_range(p[0], p[1], p[2], lo, hi); });
    const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::DoNotOptimize(p[0]);
    if (r >= 2) gbps.push_back(bytes / sec / 1e9);
  }
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

struct Floor {
  double gbps = 0;      ///< used for x_floor
  double gbps3 = 0;     ///< measured, 3 arrays (0 when overridden)
  double gbps4 = 0;     ///< measured, 4 arrays
  bool overridden = false;
};

inline Floor& floor_bw() {
  static Floor f;
  return f;
}

/// Measures (or reads FUSEDOPT_BENCH_FLOOR_GBPS) once, before any benchmark runs. Bandwidth depends
/// on where an allocation lands (±15 % here), so each pattern is measured on 3 fresh allocations and
/// the best median is kept: the floor is what a plain loop can reach, x_floor errs on the strict side.
inline void measure_floor() {
  Floor& f = floor_bw();
  if (const char* env = std::getenv("FUSEDOPT_BENCH_FLOOR_GBPS"); env && *env) {
    f.gbps = std::atof(env);
    f.overridden = f.gbps > 0;
    if (f.overridden) return;
  }
  // 16 Mi floats per array: 192-256 MiB per pass, far past the 32 MiB L3.
  for (int a = 0; a < 3; ++a) {
    f.gbps3 = std::max(f.gbps3, stream_gbps(3, 16 * kMi, 5));
    f.gbps4 = std::max(f.gbps4, stream_gbps(4, 16 * kMi, 5));
  }
  f.gbps = std::max(f.gbps3, f.gbps4);
}

// ---------------------------------------------------------------------------------------------------
// Timing loops

/// Sets the bandwidth counters from the minimal bytes of one step and the accumulated step time.
inline void finish(benchmark::State& st, double bytes_per_step, double step_seconds_total) {
  const auto iters = static_cast<double>(st.iterations());
  st.SetBytesProcessed(static_cast<std::int64_t>(iters * bytes_per_step));
  if (iters <= 0 || step_seconds_total <= 0) return;
  const double per = step_seconds_total / iters;
  st.counters["GBps"] = benchmark::Counter(bytes_per_step / per / 1e9);
  const double floor_gbps = floor_bw().gbps;
  if (floor_gbps > 0) st.counters["x_floor"] = benchmark::Counter(per / (bytes_per_step / (floor_gbps * 1e9)));
}

/// Hot loop: steps back to back (arrays larger than the LLC are streamed from DRAM anyway).
template <class Step>
void run_hot(benchmark::State& st, double bytes_per_step, Step&& step) {
  step();  // warm-up: first call picks the kernel table, pages are already touched by fill()
  double total = 0;
  for (auto _ : st) {
    const auto t0 = Clock::now();
    step();
    total += std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::ClobberMemory();
  }
  finish(st, bytes_per_step, total);
}

/// Cold loop: the LLC is flushed (untimed) before every step.
template <class Step>
void run_cold(benchmark::State& st, double bytes_per_step, Step&& step) {
  step();
  double total = 0;
  for (auto _ : st) {
    st.PauseTiming();
    flush_llc();
    st.ResumeTiming();
    const auto t0 = Clock::now();
    step();
    total += std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::ClobberMemory();
  }
  finish(st, bytes_per_step, total);
}

// ---------------------------------------------------------------------------------------------------
// Registration

/// Capabilities to run: FUSEDOPT_CPU_CAPABILITY alone when set, else every supported one.
inline std::vector<std::string> capabilities() {
  if (const char* env = std::getenv("FUSEDOPT_CPU_CAPABILITY"); env && *env) return {env};
  return fusedopt::supported_cpu_capabilities();
}

using BenchFn = std::function<void(benchmark::State&)>;

/// Registers `fn` once per capability as "<base>/<cap>"; each variant selects its capability first.
inline void register_caps(const std::string& base, BenchFn fn,
                          benchmark::TimeUnit unit = benchmark::kMillisecond) {
  for (const std::string& cap : capabilities()) {
    benchmark::RegisterBenchmark((base + "/" + cap).c_str(),
                                 [fn, cap](benchmark::State& st) {
                                   fusedopt::set_cpu_capability(cap);
                                   fn(st);
                                 })
        ->UseRealTime()
        ->Unit(unit);
  }
}

/// Registers a capability-independent reference (plain loops) as "<base>".
inline void register_plain(const std::string& base, BenchFn fn,
                           benchmark::TimeUnit unit = benchmark::kMillisecond) {
  benchmark::RegisterBenchmark(base.c_str(), [fn](benchmark::State& st) { fn(st); })
      ->UseRealTime()
      ->Unit(unit);
}

// ---------------------------------------------------------------------------------------------------
// Parameter shape lists (param_shapes.json)

inline std::string& shapes_path() {
  static std::string path = [] {
    if (const char* env = std::getenv("FUSEDOPT_PARAM_SHAPES"); env && *env) return std::string(env);
#ifdef FUSEDOPT_BENCH_SHAPES_DEFAULT
    return std::string(FUSEDOPT_BENCH_SHAPES_DEFAULT);
#else
    return std::string("bench/param_shapes.json");
#endif
  }();
  return path;
}

using ShapeList = std::vector<std::vector<std::int64_t>>;

/// Parses the list `key` ("resnet50", "bert_base") of param_shapes.json: an array of int arrays.
/// Throws std::runtime_error with the path when the file or the key is missing or malformed.
inline ShapeList load_shapes(const std::string& key) {
  std::ifstream in(shapes_path());
  if (!in) throw std::runtime_error("cannot open " + shapes_path() + " (set FUSEDOPT_PARAM_SHAPES or --shapes=)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  const std::size_t k = s.find("\"" + key + "\"");
  if (k == std::string::npos) throw std::runtime_error("no list \"" + key + "\" in " + shapes_path());
  std::size_t i = s.find('[', k);
  auto bad = [&] { return std::runtime_error("malformed list \"" + key + "\" in " + shapes_path()); };
  auto skip_ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t' || s[i] == ','))
      ++i;
  };
  if (i == std::string::npos) throw bad();
  ++i;  // outer '['
  ShapeList out;
  for (;;) {
    skip_ws();
    if (i >= s.size()) throw bad();
    if (s[i] == ']') break;
    if (s[i] != '[') throw bad();
    ++i;
    std::vector<std::int64_t> shape;
    for (;;) {
      skip_ws();
      if (i >= s.size()) throw bad();
      if (s[i] == ']') {
        ++i;
        break;
      }
      char* end = nullptr;
      const long long v = std::strtoll(s.c_str() + i, &end, 10);
      if (end == s.c_str() + i) throw bad();
      shape.push_back(static_cast<std::int64_t>(v));
      i = static_cast<std::size_t>(end - s.c_str());
    }
    out.push_back(std::move(shape));
  }
  return out;
}

inline std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

/// `count` tensors of shape {elems} (the "161 tiny tensors" case).
inline ShapeList tiny_shapes(int count, std::int64_t elems) {
  return ShapeList(static_cast<std::size_t>(count), std::vector<std::int64_t>{elems});
}

/// Element offsets of each tensor in one slab per operand, every tensor starting on a 64-byte line.
inline std::vector<std::int64_t> slab_offsets(const ShapeList& shapes, std::int64_t* total) {
  std::vector<std::int64_t> off;
  std::int64_t at = 0;
  for (const auto& sh : shapes) {
    off.push_back(at);
    at += (numel(sh) + 31) / 32 * 32;  // 32 elements: 64 B for 16-bit, 128 B for float32
  }
  *total = at;
  return off;
}

// ---------------------------------------------------------------------------------------------------
// main

/// Strips --shapes=<file> (this binary's own flag) from argv.
inline void parse_own_args(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], "--shapes=", 9) == 0) {
      shapes_path() = argv[i] + 9;
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
}

inline void add_context() {
  std::string caps;
  for (const auto& c : fusedopt::supported_cpu_capabilities()) caps += (caps.empty() ? "" : ",") + c;
  benchmark::AddCustomContext("fusedopt_supported_capabilities", caps);
  benchmark::AddCustomContext("fusedopt_threads", std::to_string(fusedopt::cpu_num_threads()));
  const Floor& f = floor_bw();
  char buf[160];
  if (f.overridden) {
    std::snprintf(buf, sizeof buf, "%.2f (FUSEDOPT_BENCH_FLOOR_GBPS)", f.gbps);
  } else {
    std::snprintf(buf, sizeof buf, "%.2f (measured, best of 3 allocations: in-place 3 arrays %.2f, 4 arrays %.2f)", f.gbps,
                  f.gbps3, f.gbps4);
  }
  benchmark::AddCustomContext("floor_GBps", buf);
  benchmark::AddCustomContext("param_shapes", shapes_path());
}

}  // namespace fusedopt_bench

/// main(): own flags, Initialize, register (a void() function), floor, context, run.
#define FUSEDOPT_BENCH_MAIN(register_all)                                 \
  int main(int argc, char** argv) {                                       \
    fusedopt_bench::parse_own_args(&argc, argv);                          \
    benchmark::Initialize(&argc, argv);                                   \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;     \
    register_all();                                                       \
    fusedopt_bench::measure_floor();                                      \
    fusedopt_bench::add_context();                                        \
    benchmark::RunSpecifiedBenchmarks();                                  \
    benchmark::Shutdown();                                                \
    return 0;                                                             \
  }
