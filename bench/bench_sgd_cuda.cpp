// bench_sgd_cuda.cpp — the CUDA update kernels against the device's measured copy bandwidth (shared/PERF.md:
// "H100 / H200, every rule, 64M and the two lists: >= 85 % of the measured copy bandwidth; one launch per
// list; no host sync per step"). Built only when FUSEDOPT_WITH_CUDA; without a CUDA device it prints one
// line and exits 0 without registering anything.
//
// Cases (device buffers, bounded random values: w in [-1,1], g in [-0.1,0.1], mom in [-0.01,0.01];
// lr 0.01, momentum 0.9, wd 1e-4, so thousands of steps stay finite — checked after every case):
//   BM_cuda_copy/<bytes>                     cudaMemcpyAsync device-to-device; <bytes> = read + write =
//                                            2 x the copied size: 64 Mi floats and each case's traffic
//   BM_cuda_<rule>/<dtype>/67108864          one call on 64 Mi elements: sgd (12 B/elem), sgd_mom (20),
//                                            mp_sgd f16|bf16 (14), mp_sgd_mom f16|bf16 (22), dcasgd (20),
//                                            dcasgd_mom (28)
//   BM_cuda_multi_<rule>/<dtype>/<list>      one aggregated call (multi_sgd_update, multi_sgd_mom_update,
//                                            multi_mp_sgd_mom_update, multi_dcasgd_update with momentum)
//                                            on a list of param_shapes.json
//   BM_cuda_sgd_mom_per_tensor/f32/resnet50  one sgd_mom_update per tensor (161 launches), a reference
// Every case comes in two timings (Google Benchmark appends /manual_time to the names):
//   .../single       CUDA events around each step: record start, step(), record stop, wait for stop.
//                    The interval includes whatever the host does between the two records (argument
//                    checks, chunk-table building, launch latency), because the device reaches the start
//                    event before the host has launched the kernel: a pessimistic per-step time.
//   .../pipelined    <K> steps (FUSEDOPT_BENCH_PIPELINE, default 100) enqueued back to back between one
//                    pair of events, one wait at the end; time = elapsed / K. While the host enqueues
//                    faster than the device runs, launch overhead is hidden: this is the device-bound
//                    throughput, the number to hold against PERF.md's copy-bandwidth target.
// "No host sync per step" is shown twice:
//   launches (single)          one step captured into a CUDA graph (cudaStreamBeginCapture, nothing runs):
//                              the number of kernel nodes = launches per step (1 for each list), and the
//                              capture itself fails if the step synchronises the stream or the device,
//                              allocates synchronously or copies synchronously: launches = -1 then, and
//                              the reason is printed on stderr.
//   host_over_gpu (pipelined)  host time to enqueue the K steps / device time of the K steps. A host sync
//                              per step makes it ~1 (the host waits for every step); without one it is the
//                              host's launch cost over the step time, well below 1 for every case here
//                              (above 1 only when a step is cheaper on the device than on the host).
// Counters: GBps (decimal GB/s on PERF.md's minimal bytes; bytes_per_second is the same in binary
// units), x_copy = GBps / copy_GBps (the target is >= 0.85), us_per_step, launches, host_us_per_step,
// host_over_gpu, tensors. copy_GBps: the median of 20 event-timed 64 Mi-float device-to-device copies
// measured at start-up in this process (context header; FUSEDOPT_BENCH_COPY_GBPS=<GB/s> fixes it).
// Parameter lists: --shapes=<file>, else $FUSEDOPT_PARAM_SHAPES, else bench/param_shapes.json of the
// source tree (bench_common.h). Every CUDA call is checked; a failure becomes a benchmark error
// ("ERROR OCCURRED" in the console, "error_occurred": true in JSON), never a crash.
#include <cuda_runtime_api.h>

#include <cmath>
#include <type_traits>

#include "bench_common.h"
#include "fusedopt/cuda.h"
#include "fusedopt/dcasgd.h"
#include "fusedopt/sgd.h"

namespace fb = fusedopt_bench;
using fusedopt::DType;
using fusedopt::TensorView;

namespace {

constexpr std::int64_t kN = 64 * fb::kMi;  // 67108864 elements
constexpr double kLr = 0.01, kMomentum = 0.9, kWd = 1e-4;

// ---------------------------------------------------------------------------------------------------
// Errors

[[noreturn]] void cuda_fail(cudaError_t err, const char* expr, int line) {
  (void)cudaGetLastError();  // clear a non-sticky error so the next case starts clean
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ") from " + expr + " at bench_sgd_cuda.cpp:" +
                           std::to_string(line));
}
#define CK(expr)                                        \
  do {                                                  \
    const cudaError_t ck_err_ = (expr);                 \
    if (ck_err_ != cudaSuccess) cuda_fail(ck_err_, #expr, __LINE__); \
  } while (0)

// ---------------------------------------------------------------------------------------------------
// The process-wide device state: one device, one non-default stream, two events.

struct Gpu {
  int device = 0;
  cudaStream_t stream = nullptr;
  cudaEvent_t ev0 = nullptr, ev1 = nullptr;
  double copy_gbps = 0;
  std::string copy_note;
  int pipeline = 100;
};

Gpu& gpu() {
  static Gpu g;
  return g;
}

fusedopt::Device dev() { return fusedopt::Device{fusedopt::DeviceType::kCUDA, gpu().device}; }

/// One owning device allocation.
class DevBuf {
 public:
  explicit DevBuf(std::size_t bytes) : bytes_(bytes) { CK(cudaMalloc(&p_, std::max<std::size_t>(bytes, 256))); }
  ~DevBuf() {
    if (p_ != nullptr) (void)cudaFree(p_);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void* get() const { return p_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

/// Device time of `what` enqueued on the benchmark stream between the two events, in seconds.
template <class F>
double event_seconds(F&& what) {
  Gpu& g = gpu();
  CK(cudaEventRecord(g.ev0, g.stream));
  what();
  CK(cudaEventRecord(g.ev1, g.stream));
  CK(cudaEventSynchronize(g.ev1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, g.ev0, g.ev1));
  return static_cast<double>(ms) * 1e-3;
}

// ---------------------------------------------------------------------------------------------------
// Case buffers, cached by case so that the single and pipelined variants (and repetitions) reuse them.
// Before each allocation, least recently used other cases are freed while the device lacks room.

class DevCase {
 public:
  static DevCase& get(const std::string& key, bool* fresh) {
    auto& cases = all();
    for (auto it = cases.begin(); it != cases.end(); ++it) {
      if ((*it)->key_ == key) {
        std::unique_ptr<DevCase> d = std::move(*it);
        cases.erase(it);
        cases.push_back(std::move(d));  // most recently used last
        *fresh = false;
        return *cases.back();
      }
    }
    cases.push_back(std::unique_ptr<DevCase>(new DevCase(key)));
    *fresh = true;
    return *cases.back();
  }
  static void clear() { all().clear(); }

  /// Adds n elements of T, filled on the host with fb::fill(seed, lo, hi) and copied to the device.
  template <class T>
  T* add(std::int64_t n, std::uint32_t seed, float lo, float hi) {
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    make_room(bytes);
    auto buf = std::make_unique<DevBuf>(bytes);
    std::vector<T> host(static_cast<std::size_t>(n));
    fb::fill(host.data(), n, seed, lo, hi);
    CK(cudaMemcpy(buf->get(), host.data(), bytes, cudaMemcpyHostToDevice));
    bufs_.push_back(std::move(buf));
    return at<T>(bufs_.size() - 1);
  }
  /// Adds `bytes` raw bytes set to `value` on the device (the copy cases).
  unsigned char* add_bytes(std::size_t bytes, int value) {
    make_room(bytes);
    auto buf = std::make_unique<DevBuf>(bytes);
    CK(cudaMemset(buf->get(), value, bytes));
    bufs_.push_back(std::move(buf));
    return at<unsigned char>(bufs_.size() - 1);
  }
  template <class T>
  T* at(std::size_t i) const {
    return static_cast<T*>(bufs_.at(i)->get());
  }

 private:
  explicit DevCase(std::string key) : key_(std::move(key)) {}
  static std::vector<std::unique_ptr<DevCase>>& all() {
    static std::vector<std::unique_ptr<DevCase>> cases;
    return cases;
  }
  /// Frees other cases (least recently used first) until `bytes` + 512 MiB are free on the device.
  void make_room(std::size_t bytes) const {
    auto& cases = all();
    for (;;) {
      std::size_t free_b = 0, total_b = 0;
      CK(cudaMemGetInfo(&free_b, &total_b));
      if (free_b >= bytes + (std::size_t{512} << 20)) return;
      auto victim = std::find_if(cases.begin(), cases.end(), [this](const auto& c) { return c.get() != this; });
      if (victim == cases.end()) return;  // nothing left to free: cudaMalloc reports the failure
      cases.erase(victim);
    }
  }

  std::string key_;
  std::vector<std::unique_ptr<DevBuf>> bufs_;
};

template <class T>
TensorView dview(T* p, std::int64_t n) {
  return TensorView(static_cast<void*>(p), fb::DTypeOf<T>::value, {n}, dev());
}
template <class T>
TensorView dview(T* p, const std::vector<std::int64_t>& shape) {
  return TensorView(static_cast<void*>(p), fb::DTypeOf<T>::value, shape, dev());
}

float to_f(float x) { return x; }
float to_f(fusedopt::half x) { return fusedopt::to_float(x); }
float to_f(fusedopt::bfloat16 x) { return fusedopt::to_float(x); }

/// Copies the first min(n, 4096) elements of a device array back; throws if any is not finite.
template <class T>
void check_finite(const T* p, std::int64_t n, const char* what) {
  const std::size_t k = static_cast<std::size_t>(std::min<std::int64_t>(n, 4096));
  std::vector<T> host(k);
  CK(cudaStreamSynchronize(gpu().stream));
  CK(cudaMemcpy(host.data(), p, k * sizeof(T), cudaMemcpyDeviceToHost));
  for (std::size_t i = 0; i < k; ++i)
    if (!std::isfinite(to_f(host[i])))
      throw std::runtime_error(std::string("non-finite ") + what + "[" + std::to_string(i) + "] after the run");
}

// ---------------------------------------------------------------------------------------------------
// Launches per step, through stream capture into a CUDA graph.

/// The kernel launches of one step(), captured (not run) into a CUDA graph on the benchmark stream; -1
/// when the capture failed (a host synchronisation or another call that capture forbids), with the
/// reason in *why.
int count_launches(const std::function<void()>& step, std::string* why) {
  Gpu& g = gpu();
  CK(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
  std::string step_error;
  try {
    step();
  } catch (const std::exception& e) {
    step_error = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(g.stream, &graph);  // always ends the capture
  (void)cudaGetLastError();
  std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, void (*)(cudaGraph_t)> owner(
      graph, [](cudaGraph_t gr) {
        if (gr != nullptr) (void)cudaGraphDestroy(gr);
      });
  if (!step_error.empty() || end != cudaSuccess || graph == nullptr) {
    *why = !step_error.empty() ? step_error : std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
    return -1;
  }
  std::size_t n = 0;
  CK(cudaGraphGetNodes(graph, nullptr, &n));
  std::vector<cudaGraphNode_t> nodes(n);
  if (n > 0) CK(cudaGraphGetNodes(graph, nodes.data(), &n));
  int kernels = 0;
  for (std::size_t i = 0; i < n; ++i) {
    cudaGraphNodeType type{};
    CK(cudaGraphNodeGetType(nodes[i], &type));
    if (type == cudaGraphNodeTypeKernel) ++kernels;
  }
  return kernels;
}

// ---------------------------------------------------------------------------------------------------
// Timing

enum class Timing { kSingle, kPipelined };

/// What a case builder returns: the step, its minimal bytes, and a post-run check.
struct Setup {
  std::function<void()> step;
  double bytes = 0;
  int tensors = 1;
  bool count_launches = true;  ///< false for plain copies (no kernels) and very long per-tensor loops
  std::function<void()> check;  ///< throws when the results are not finite
};

void set_bandwidth(benchmark::State& st, double bytes, double seconds_per_step) {
  st.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(st.iterations()) * bytes));
  if (seconds_per_step <= 0) return;
  const double gbps = bytes / seconds_per_step / 1e9;
  st.counters["GBps"] = gbps;
  st.counters["us_per_step"] = seconds_per_step * 1e6;
  if (gpu().copy_gbps > 0) st.counters["x_copy"] = gbps / gpu().copy_gbps;
}

void run_case(benchmark::State& st, const std::string& name, const std::function<Setup()>& make,
              Timing timing) {
  try {
    Setup s = make();
    Gpu& g = gpu();
    for (int i = 0; i < 3; ++i) s.step();  // warm-up (first calls pick kernels, cache attributes)
    CK(cudaStreamSynchronize(g.stream));
    if (timing == Timing::kSingle) {
      if (s.count_launches) {
        std::string why;
        const int launches = count_launches(s.step, &why);
        st.counters["launches"] = launches;
        if (launches < 0)
          std::fprintf(stderr, "bench_sgd_cuda: %s: graph capture of one step failed: %s\n",
                       name.c_str(), why.c_str());
      }
      double total = 0;
      for (auto _ : st) {
        const double sec = event_seconds(s.step);
        st.SetIterationTime(sec);
        total += sec;
      }
      set_bandwidth(st, s.bytes, st.iterations() > 0 ? total / static_cast<double>(st.iterations()) : 0);
    } else {
      const int k = g.pipeline;
      double gpu_total = 0, host_total = 0;
      for (auto _ : st) {
        double host = 0;
        const double sec = event_seconds([&] {
          const auto t0 = fb::Clock::now();
          for (int i = 0; i < k; ++i) s.step();
          host = std::chrono::duration<double>(fb::Clock::now() - t0).count();
        });
        st.SetIterationTime(sec / k);  // the time column is per step, as for the single cases
        gpu_total += sec;
        host_total += host;
      }
      const double steps = static_cast<double>(st.iterations()) * k;
      set_bandwidth(st, s.bytes, steps > 0 ? gpu_total / steps : 0);
      if (steps > 0 && gpu_total > 0) {
        st.counters["host_us_per_step"] = host_total / steps * 1e6;
        st.counters["host_over_gpu"] = host_total / gpu_total;
      }
      st.counters["steps_per_iteration"] = k;
    }
    if (s.tensors > 1) st.counters["tensors"] = s.tensors;
    if (s.check) s.check();
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

// ---------------------------------------------------------------------------------------------------
// Case builders

fusedopt::SgdParams sgd_params(bool mom) {
  fusedopt::SgdParams p;
  p.lr = kLr;
  p.wd = kWd;
  p.momentum = mom ? kMomentum : 0.0;
  return p;
}

std::string key(const std::string& a, const std::string& b, const std::string& c) { return a + "/" + b + "/" + c; }

Setup copy_case(double traffic_bytes) {
  const std::size_t half = static_cast<std::size_t>(traffic_bytes / 2);
  bool fresh;
  DevCase& d = DevCase::get("copy/" + std::to_string(half), &fresh);
  if (fresh) {
    d.add_bytes(half, 1);
    d.add_bytes(half, 0);
  }
  const void* src = d.at<unsigned char>(0);
  void* dst = d.at<unsigned char>(1);
  Setup s;
  s.step = [=] { CK(cudaMemcpyAsync(dst, src, half, cudaMemcpyDeviceToDevice, gpu().stream)); };
  s.bytes = 2.0 * static_cast<double>(half);
  s.count_launches = false;
  return s;
}

Setup sgd_case(bool mom) {
  bool fresh;
  DevCase& d = DevCase::get(key("sgd_mom", "f32", std::to_string(kN)), &fresh);  // sgd uses w, g only
  if (fresh) {
    d.add<float>(kN, 1, -1.f, 1.f);
    d.add<float>(kN, 2, -0.1f, 0.1f);
    d.add<float>(kN, 3, -0.01f, 0.01f);
  }
  float* wp = d.at<float>(0);
  const auto w = dview(wp, kN), g = dview(d.at<float>(1), kN), m = dview(d.at<float>(2), kN);
  const fusedopt::SgdParams p = sgd_params(mom);
  const fusedopt::Stream stream{gpu().stream};
  Setup s;
  if (mom)
    s.step = [=] { fusedopt::sgd_mom_update(w, g, m, p, stream); };
  else
    s.step = [=] { fusedopt::sgd_update(w, g, p, stream); };
  s.bytes = (mom ? 20.0 : 12.0) * static_cast<double>(kN);
  s.check = [=] { check_finite(wp, kN, "weight"); };
  return s;
}

template <class T>
Setup mp_case(bool mom) {
  bool fresh;
  DevCase& d = DevCase::get(key("mp", fb::DTypeOf<T>::name, std::to_string(kN)), &fresh);
  if (fresh) {
    d.add<T>(kN, 1, -1.f, 1.f);          // 0 weight (16-bit)
    d.add<T>(kN, 2, -0.1f, 0.1f);        // 1 grad (16-bit)
    d.add<float>(kN, 1, -1.f, 1.f);      // 2 master weight32 (the same values, rounded in 0)
    d.add<float>(kN, 3, -0.01f, 0.01f);  // 3 momentum (float32)
  }
  T* wp = d.at<T>(0);
  const auto w = dview(wp, kN), g = dview(d.at<T>(1), kN);
  const auto w32 = dview(d.at<float>(2), kN), m = dview(d.at<float>(3), kN);
  const fusedopt::SgdParams p = sgd_params(mom);
  const fusedopt::Stream stream{gpu().stream};
  Setup s;
  if (mom)
    s.step = [=] { fusedopt::mp_sgd_mom_update(w, g, m, w32, p, stream); };
  else
    s.step = [=] { fusedopt::mp_sgd_update(w, g, w32, p, stream); };
  s.bytes = (mom ? 22.0 : 14.0) * static_cast<double>(kN);
  s.check = [=] { check_finite(wp, kN, "weight"); };
  return s;
}

Setup dcasgd_case(bool mom) {
  bool fresh;
  DevCase& d = DevCase::get(key("dcasgd", "f32", std::to_string(kN)), &fresh);
  if (fresh) {
    d.add<float>(kN, 1, -1.f, 1.f);      // 0 weight
    d.add<float>(kN, 2, -0.1f, 0.1f);    // 1 grad
    d.add<float>(kN, 3, -0.01f, 0.01f);  // 2 momentum
    d.add<float>(kN, 4, -1.f, 1.f);      // 3 previous weight
  }
  float* wp = d.at<float>(0);
  const auto w = dview(wp, kN), g = dview(d.at<float>(1), kN), m = dview(d.at<float>(2), kN),
             prev = dview(d.at<float>(3), kN);
  fusedopt::DcasgdParams p;
  p.lr = kLr;
  p.wd = kWd;
  p.momentum = mom ? kMomentum : 0.0;
  const fusedopt::Stream stream{gpu().stream};
  Setup s;
  if (mom)
    s.step = [=] { fusedopt::dcasgd_update(w, g, &m, prev, p, stream); };
  else
    s.step = [=] { fusedopt::dcasgd_update(w, g, nullptr, prev, p, stream); };
  s.bytes = (mom ? 28.0 : 20.0) * static_cast<double>(kN);
  s.check = [=] { check_finite(wp, kN, "weight"); };
  return s;
}

enum class ListRule { kSgd, kSgdMom, kMpSgdMom, kDcasgdMom, kSgdMomPerTensor };

/// A whole parameter list; each operand in one slab, every tensor starting on a 64-byte line.
template <class T>
Setup list_case(ListRule rule, const std::string& list) {
  const fb::ShapeList shapes = fb::load_shapes(list);  // throws (a benchmark error) without the file
  std::int64_t total = 0;
  const auto off = fb::slab_offsets(shapes, &total);
  const bool mp = rule == ListRule::kMpSgdMom;
  const bool dca = rule == ListRule::kDcasgdMom;
  bool fresh;
  DevCase& d = DevCase::get(key(dca ? "dcasgd_list" : "list", fb::DTypeOf<T>::name, list), &fresh);
  if (fresh) {
    d.add<T>(total, 1, -1.f, 1.f);                     // 0 weight
    d.add<T>(total, 2, -0.1f, 0.1f);                   // 1 grad
    d.add<float>(total, 3, -0.01f, 0.01f);             // 2 momentum (float32 for every dtype)
    if (mp || dca) d.add<float>(total, 4, -1.f, 1.f);  // 3 master (mp) or previous weight (DCASGD)
  }
  std::vector<TensorView> w, g, m, w32;
  std::int64_t elems = 0;
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    w.push_back(dview(d.at<T>(0) + off[k], shapes[k]));
    g.push_back(dview(d.at<T>(1) + off[k], shapes[k]));
    m.push_back(dview(d.at<float>(2) + off[k], shapes[k]));
    if (mp || dca) w32.push_back(dview(d.at<float>(3) + off[k], shapes[k]));
    elems += fb::numel(shapes[k]);
  }
  fusedopt::MultiSgdParams mp_params;
  mp_params.lrs.assign(shapes.size(), kLr);
  mp_params.wds.assign(shapes.size(), kWd);
  mp_params.momentum = rule == ListRule::kSgd ? 0.0 : kMomentum;
  const fusedopt::SgdParams one = sgd_params(true);
  const fusedopt::Stream stream{gpu().stream};
  Setup s;
  switch (rule) {
    case ListRule::kSgd:
      s.step = [=] { fusedopt::multi_sgd_update(w, g, mp_params, stream); };
      s.bytes = 12.0 * static_cast<double>(elems);
      break;
    case ListRule::kSgdMom:
      s.step = [=] { fusedopt::multi_sgd_mom_update(w, g, m, mp_params, stream); };
      s.bytes = 20.0 * static_cast<double>(elems);
      break;
    case ListRule::kMpSgdMom:
      s.step = [=] { fusedopt::multi_mp_sgd_mom_update(w, g, m, w32, mp_params, stream); };
      s.bytes = 22.0 * static_cast<double>(elems);
      break;
    case ListRule::kDcasgdMom: {
      fusedopt::MultiDcasgdParams dp;
      dp.lrs = mp_params.lrs;
      dp.wds = mp_params.wds;
      dp.momentum = kMomentum;
      // w32 holds the previous weights here (float32, as the weights).
      s.step = [=] { fusedopt::multi_dcasgd_update(w, g, m, w32, dp, stream); };
      s.bytes = 28.0 * static_cast<double>(elems);
      break;
    }
    case ListRule::kSgdMomPerTensor:
      s.step = [=] {
        for (std::size_t k = 0; k < w.size(); ++k) fusedopt::sgd_mom_update(w[k], g[k], m[k], one, stream);
      };
      s.bytes = 20.0 * static_cast<double>(elems);
      break;
  }
  s.tensors = static_cast<int>(shapes.size());
  T* wp = d.at<T>(0);
  s.check = [=] { check_finite(wp, total, "weight slab"); };
  return s;
}

// ---------------------------------------------------------------------------------------------------
// Registration

void add(const std::string& name, std::function<Setup()> make, bool pipelined = true,
         benchmark::TimeUnit unit = benchmark::kMicrosecond) {
  benchmark::RegisterBenchmark((name + "/single").c_str(),
                               [name, make](benchmark::State& st) { run_case(st, name, make, Timing::kSingle); })
      ->UseManualTime()
      ->Unit(unit);
  if (pipelined)
    // A fixed iteration count: each iteration is K steps, so --benchmark_min_time (counted in per-step
    // time) would otherwise run K times longer than asked.
    benchmark::RegisterBenchmark((name + "/pipelined").c_str(), [name, make](benchmark::State& st) {
      run_case(st, name, make, Timing::kPipelined);
    })
        ->UseManualTime()
        ->Iterations(5)
        ->Unit(unit);
}

double list_elems(const std::string& list) {
  double e = 0;
  for (const auto& sh : fb::load_shapes(list)) e += static_cast<double>(fb::numel(sh));
  return e;
}

void register_all() {
  const std::string n = std::to_string(kN);
  // The copy references: 64 Mi floats, then one per case's traffic (deduplicated, in bytes).
  std::vector<double> traffic = {8.0 * kN, 12.0 * kN, 14.0 * kN, 20.0 * kN, 22.0 * kN, 28.0 * kN};
  for (const char* list : {"resnet50", "bert_base"}) {
    try {
      const double e = list_elems(list);
      traffic.push_back(20.0 * e);
      traffic.push_back(28.0 * e);
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "bench_sgd_cuda: %s (no copy reference for %s)\n", ex.what(), list);
    }
  }
  std::sort(traffic.begin(), traffic.end());
  traffic.erase(std::unique(traffic.begin(), traffic.end()), traffic.end());
  for (double t : traffic)
    add("BM_cuda_copy/" + std::to_string(static_cast<std::int64_t>(t)), [t] { return copy_case(t); }, false);

  add("BM_cuda_sgd/f32/" + n, [] { return sgd_case(false); });
  add("BM_cuda_sgd_mom/f32/" + n, [] { return sgd_case(true); });
  add("BM_cuda_mp_sgd/f16/" + n, [] { return mp_case<fusedopt::half>(false); });
  add("BM_cuda_mp_sgd/bf16/" + n, [] { return mp_case<fusedopt::bfloat16>(false); });
  add("BM_cuda_mp_sgd_mom/f16/" + n, [] { return mp_case<fusedopt::half>(true); });
  add("BM_cuda_mp_sgd_mom/bf16/" + n, [] { return mp_case<fusedopt::bfloat16>(true); });
  add("BM_cuda_dcasgd/f32/" + n, [] { return dcasgd_case(false); });
  add("BM_cuda_dcasgd_mom/f32/" + n, [] { return dcasgd_case(true); });
  for (const std::string list : {"resnet50", "bert_base"}) {
    add("BM_cuda_multi_sgd/f32/" + list, [list] { return list_case<float>(ListRule::kSgd, list); });
    add("BM_cuda_multi_sgd_mom/f32/" + list, [list] { return list_case<float>(ListRule::kSgdMom, list); });
    add("BM_cuda_multi_dcasgd_mom/f32/" + list, [list] { return list_case<float>(ListRule::kDcasgdMom, list); });
  }
  add("BM_cuda_multi_mp_sgd_mom/f16/resnet50",
      [] { return list_case<fusedopt::half>(ListRule::kMpSgdMom, "resnet50"); });
  add("BM_cuda_multi_mp_sgd_mom/bf16/resnet50",
      [] { return list_case<fusedopt::bfloat16>(ListRule::kMpSgdMom, "resnet50"); });
  // 161 launches per step: no pipelined variant (K x 161 launches would fill the launch queue).
  add("BM_cuda_sgd_mom_per_tensor/f32/resnet50",
      [] { return list_case<float>(ListRule::kSgdMomPerTensor, "resnet50"); }, false);
}

// ---------------------------------------------------------------------------------------------------
// Start-up: device, stream, events, copy bandwidth

/// Median GB/s (read + write) of 20 event-timed device-to-device copies of 64 Mi floats after 20 warm-ups.
double measure_copy_gbps() {
  const std::size_t bytes = static_cast<std::size_t>(kN) * sizeof(float);
  DevBuf src(bytes), dst(bytes);
  CK(cudaMemsetAsync(src.get(), 1, bytes, gpu().stream));
  CK(cudaMemsetAsync(dst.get(), 0, bytes, gpu().stream));
  auto copy = [&] { CK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, gpu().stream)); };
  for (int i = 0; i < 20; ++i) copy();  // warm-up: ~5 ms of copies, clocks settle
  std::vector<double> gbps;
  for (int i = 0; i < 20; ++i) gbps.push_back(2.0 * static_cast<double>(bytes) / event_seconds(copy) / 1e9);
  std::sort(gbps.begin(), gbps.end());
  return gbps[gbps.size() / 2];
}

void init_gpu() {
  Gpu& g = gpu();
  if (const char* env = std::getenv("FUSEDOPT_BENCH_PIPELINE"); env && *env) g.pipeline = std::max(1, std::atoi(env));
  CK(cudaSetDevice(g.device));
  CK(cudaStreamCreateWithFlags(&g.stream, cudaStreamNonBlocking));
  CK(cudaEventCreate(&g.ev0));
  CK(cudaEventCreate(&g.ev1));
  if (const char* env = std::getenv("FUSEDOPT_BENCH_COPY_GBPS"); env && *env && std::atof(env) > 0) {
    g.copy_gbps = std::atof(env);
    g.copy_note = " (FUSEDOPT_BENCH_COPY_GBPS)";
  } else {
    g.copy_gbps = measure_copy_gbps();
    g.copy_note = " (measured: median of 20 device-to-device copies of 64 Mi floats, read + write)";
  }
}

void shutdown_gpu() {
  DevCase::clear();
  Gpu& g = gpu();
  if (g.ev0 != nullptr) (void)cudaEventDestroy(g.ev0);
  if (g.ev1 != nullptr) (void)cudaEventDestroy(g.ev1);
  if (g.stream != nullptr) (void)cudaStreamDestroy(g.stream);
}

void add_context() {
  Gpu& g = gpu();
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, g.device) == cudaSuccess) {
    benchmark::AddCustomContext("cuda_device", prop.name);
    benchmark::AddCustomContext("cuda_cc", std::to_string(prop.major) + "." + std::to_string(prop.minor));
    benchmark::AddCustomContext("cuda_sms", std::to_string(prop.multiProcessorCount));
    benchmark::AddCustomContext("cuda_memory_GiB", std::to_string(static_cast<double>(prop.totalGlobalMem) / (1 << 30)));
  }
  (void)cudaGetLastError();
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, g.device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, g.device) == cudaSuccess &&
      clock_khz > 0 && bus_bits > 0) {
    // DDR: two transfers per clock.
    const double peak = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    benchmark::AddCustomContext("cuda_peak_GBps", std::to_string(peak) + " (memory clock x bus width, theoretical)");
  }
  (void)cudaGetLastError();
  int drv = 0, rt = 0;
  (void)cudaDriverGetVersion(&drv);
  (void)cudaRuntimeGetVersion(&rt);
  (void)cudaGetLastError();
  benchmark::AddCustomContext("cuda_driver_runtime", std::to_string(drv) + " / " + std::to_string(rt));
  benchmark::AddCustomContext("copy_GBps", std::to_string(g.copy_gbps) + g.copy_note);
  benchmark::AddCustomContext("pipeline_steps", std::to_string(g.pipeline));
  benchmark::AddCustomContext("param_shapes", fb::shapes_path());
}

}  // namespace

int main(int argc, char** argv) {
  fb::parse_own_args(&argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  if (fusedopt::cuda_device_count() == 0) {
    std::printf("bench_sgd_cuda: no CUDA device (fusedopt::cuda_device_count() == 0); nothing to measure\n");
    return 0;
  }
  int status = 0;
  try {
    init_gpu();
    std::printf("bench_sgd_cuda: copy bandwidth %.1f GB/s%s\n", gpu().copy_gbps, gpu().copy_note.c_str());
    register_all();
    add_context();
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sgd_cuda: %s\n", e.what());
    status = 1;
  }
  benchmark::Shutdown();
  shutdown_gpu();
  return status;
}
