// test_cuda_kernels.cpp — the CUDA launchers against the CPU launchers, through the public API (host
// arrays vs device copies of the same data; DC-ASGD's backup form and adaptive lambda included) and,
// for contracts the API never exercises (zero-size and zero-gradient segments, aggregated DCASGD),
// through engine.h directly. Built only with CUDA; every
// test but DeviceQuery skips without a device.
//
// Tolerance: the rules are the same functions on both sides, but nvcc contracts a*b+c into FMA where the
// CPU build may not, so results agree within a few ulp at the scale of the operands (|x| <= ~1 here):
// 4 ulp for float32/float64 per step, 2 ulp for float16/bfloat16 (one rounding of a float result that
// may sit on the other side of a rounding boundary). Each step starts both sides from identical state.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "cuda_check.h"
#include "engine.h"
#include "fusedopt/fusedopt.h"

namespace {

using fusedopt::DType;
using fusedopt::Device;
using fusedopt::DeviceType;
using fusedopt::Stream;
using fusedopt::TensorView;

constexpr Device kGpu{DeviceType::kCUDA, 0};

std::size_t usize(std::int64_t v) { return static_cast<std::size_t>(v); }

// ---------------------------------------------------------------------------------------------------
// Buffers

class DeviceMemory {
 public:
  explicit DeviceMemory(std::size_t bytes) {
    FUSEDOPT_CUDA_CHECK(cudaMalloc(&p_, std::max<std::size_t>(bytes, 16)));
  }
  DeviceMemory(DeviceMemory&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  DeviceMemory& operator=(DeviceMemory&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory() {
    if (p_ != nullptr) (void)cudaFree(p_);
  }
  unsigned char* get() const { return static_cast<unsigned char*>(p_); }

 private:
  void* p_ = nullptr;
};

double read_value(DType dt, const unsigned char* base, std::int64_t i) {
  const unsigned char* p = base + usize(i) * fusedopt::dtype_size(dt);
  switch (dt) {
    case DType::kFloat16: {
      fusedopt::half h;
      std::memcpy(&h, p, sizeof h);
      return static_cast<double>(fusedopt::to_float(h));
    }
    case DType::kBFloat16: {
      fusedopt::bfloat16 h;
      std::memcpy(&h, p, sizeof h);
      return static_cast<double>(fusedopt::to_float(h));
    }
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, p, sizeof f);
      return static_cast<double>(f);
    }
    case DType::kFloat64: {
      double d;
      std::memcpy(&d, p, sizeof d);
      return d;
    }
  }
  return 0.0;
}

void write_value(DType dt, unsigned char* base, std::int64_t i, double v) {
  unsigned char* p = base + usize(i) * fusedopt::dtype_size(dt);
  switch (dt) {
    case DType::kFloat16: {
      const fusedopt::half h = fusedopt::to_half(static_cast<float>(v));
      std::memcpy(p, &h, sizeof h);
      break;
    }
    case DType::kBFloat16: {
      const fusedopt::bfloat16 h = fusedopt::to_bfloat16(static_cast<float>(v));
      std::memcpy(p, &h, sizeof h);
      break;
    }
    case DType::kFloat32: {
      const float f = static_cast<float>(v);
      std::memcpy(p, &f, sizeof f);
      break;
    }
    case DType::kFloat64: std::memcpy(p, &v, sizeof v); break;
  }
}

double unit_ulp(DType dt) {
  switch (dt) {
    case DType::kFloat16: return std::ldexp(1.0, -10);
    case DType::kBFloat16: return std::ldexp(1.0, -7);
    case DType::kFloat32: return std::ldexp(1.0, -23);
    case DType::kFloat64: return std::ldexp(1.0, -52);
  }
  return 0.0;
}

double tolerance_ulps(DType dt) { return fusedopt::dtype_size(dt) == 2 ? 2.0 : 4.0; }

/// One array of n elements of dtype dt, on the host and on the device, `offset` elements past an
/// allocation boundary (offset 1 defeats the vector path).
class Operand {
 public:
  Operand(std::string name, DType dt, std::int64_t n, std::int64_t offset = 0)
      : name_(std::move(name)),
        dt_(dt),
        n_(n),
        offset_(offset),
        host_(usize(n + offset) * fusedopt::dtype_size(dt)),
        dev_(host_.size()) {}

  const std::string& name() const { return name_; }
  DType dtype() const { return dt_; }
  std::int64_t size() const { return n_; }
  void* host() { return host_.data() + usize(offset_) * fusedopt::dtype_size(dt_); }
  void* dev() const { return dev_.get() + usize(offset_) * fusedopt::dtype_size(dt_); }
  double get(std::int64_t i) const {
    return read_value(dt_, host_.data() + usize(offset_) * fusedopt::dtype_size(dt_), i);
  }
  void set(std::int64_t i, double v) { write_value(dt_, static_cast<unsigned char*>(host()), i, v); }
  void fill(std::mt19937_64& rng, double lo, double hi) {
    std::uniform_real_distribution<double> u(lo, hi);
    for (std::int64_t i = 0; i < n_; ++i) set(i, u(rng));
  }
  /// Host -> device (the whole allocation).
  void upload() {
    FUSEDOPT_CUDA_CHECK(cudaMemcpy(dev_.get(), host_.data(), host_.size(), cudaMemcpyHostToDevice));
  }
  TensorView view(bool on_device) {
    if (on_device) return TensorView(dev(), dt_, {n_}, kGpu);
    return TensorView(host(), dt_, {n_});
  }
  TensorView view(bool on_device, const std::vector<std::int64_t>& shape) {
    if (on_device) return TensorView(dev(), dt_, shape, kGpu);
    return TensorView(host(), dt_, shape);
  }

  /// Device contents vs host contents within the tolerance of the dtype.
  ::testing::AssertionResult matches_device() const {
    std::vector<unsigned char> got(host_.size());
    FUSEDOPT_CUDA_CHECK(cudaMemcpy(got.data(), dev_.get(), got.size(), cudaMemcpyDeviceToHost));
    const unsigned char* got_base = got.data() + usize(offset_) * fusedopt::dtype_size(dt_);
    const double tol = tolerance_ulps(dt_) * unit_ulp(dt_);
    std::int64_t bad = 0;
    std::ostringstream first;
    for (std::int64_t i = 0; i < n_; ++i) {
      const double a = read_value(dt_, got_base, i);
      const double b = get(i);
      const bool ok = (std::isnan(a) && std::isnan(b)) || a == b ||
                      std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b));
      if (!ok && bad++ < 5)
        first << "\n  " << name_ << "[" << i << "]: cuda " << a << " vs cpu " << b << " (diff "
              << (a - b) / (unit_ulp(dt_) * std::max(1.0, std::fabs(b))) << " unit ulp)";
    }
    if (bad == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << bad << " of " << n_ << " elements of " << name_ << " ("
                                         << fusedopt::dtype_name(dt_) << ") differ" << first.str();
  }

 private:
  std::string name_;
  DType dt_;
  std::int64_t n_;
  std::int64_t offset_;
  std::vector<unsigned char> host_;
  DeviceMemory dev_;
};

void sync_and_check() {
  FUSEDOPT_CUDA_CHECK(cudaDeviceSynchronize());
  FUSEDOPT_CUDA_CHECK(cudaGetLastError());
}

/// Hyper-parameters chosen so that clipping, weight decay and every rule term matter.
constexpr double kLr = 0.05, kWd = 0.01, kMomentum = 0.9, kRescale = 0.9, kClip = 0.6, kLamda = 0.3;

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (fusedopt::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device";
  }
};

// ---------------------------------------------------------------------------------------------------
// Dense single-tensor operators: every rule x dtype x (master) x size x alignment.

enum class Rule { kSgd, kSgdMom, kDcasgd, kDcasgdMom };
enum class Align { kAligned, kGradShifted, kAllShifted };

const char* rule_name(Rule r) {
  switch (r) {
    case Rule::kSgd: return "sgd";
    case Rule::kSgdMom: return "sgd_mom";
    case Rule::kDcasgd: return "dcasgd";
    case Rule::kDcasgdMom: return "dcasgd_mom";
  }
  return "?";
}
bool has_mom(Rule r) { return r == Rule::kSgdMom || r == Rule::kDcasgdMom; }
bool is_dca(Rule r) { return r == Rule::kDcasgd || r == Rule::kDcasgdMom; }

const char* short_name(DType dt) {
  switch (dt) {
    case DType::kFloat16: return "f16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "f32";
    case DType::kFloat64: return "f64";
  }
  return "?";
}

/// Every operand of one single-tensor update.
struct Problem {
  Operand w, g;
  std::optional<Operand> m, prev, w32;

  Problem(DType dt, bool master, bool mom, bool dca, std::int64_t n, std::int64_t w_off,
          std::int64_t g_off, std::mt19937_64& rng)
      : w("w", dt, n, w_off), g("g", dt, n, g_off) {
    const DType state = master ? DType::kFloat32 : dt;
    if (master) {
      w32.emplace("w32", DType::kFloat32, n, w_off);
      w32->fill(rng, -1.0, 1.0);
      for (std::int64_t i = 0; i < n; ++i) w.set(i, w32->get(i));  // w = cast(w32)
    } else {
      w.fill(rng, -1.0, 1.0);
    }
    if (mom) {
      m.emplace("m", state, n, w_off);
      m->fill(rng, -0.5, 0.5);
    }
    if (dca) {
      prev.emplace("prev", state, n, w_off);
      std::uniform_real_distribution<double> u(-0.1, 0.1);
      for (std::int64_t i = 0; i < n; ++i) prev->set(i, (master ? w32->get(i) : w.get(i)) + u(rng));
    }
    new_grad(rng);
  }

  /// A fresh gradient, with +inf (clipped to +clip) and NaN (propagates) when there is room.
  void new_grad(std::mt19937_64& rng) {
    g.fill(rng, -1.0, 1.0);
    if (g.size() > 8) {
      g.set(3, INFINITY);
      g.set(5, NAN);
    }
  }

  std::vector<Operand*> written() {
    std::vector<Operand*> v{&w};
    if (m) v.push_back(&*m);
    if (prev) v.push_back(&*prev);
    if (w32) v.push_back(&*w32);
    return v;
  }
  void upload_all() {
    for (Operand* o : written()) o->upload();
    g.upload();
  }
};

struct DenseCase {
  DType dt;
  bool master;
  Rule rule;
  std::int64_t n;
  Align align;
};

std::string dense_case_name(const ::testing::TestParamInfo<DenseCase>& info) {
  const DenseCase& c = info.param;
  std::ostringstream s;
  s << rule_name(c.rule) << "_" << short_name(c.dt) << (c.master ? "_mp" : "") << "_n" << c.n << "_"
    << (c.align == Align::kAligned ? "aligned" : c.align == Align::kGradShifted ? "gshift" : "shift");
  return s.str();
}

std::vector<DenseCase> dense_cases() {
  std::vector<DenseCase> v;
  const std::pair<DType, bool> kinds[] = {{DType::kFloat16, false}, {DType::kFloat16, true},
                                          {DType::kBFloat16, false}, {DType::kBFloat16, true},
                                          {DType::kFloat32, false}, {DType::kFloat64, false}};
  for (auto [dt, master] : kinds)
    for (Rule r : {Rule::kSgd, Rule::kSgdMom, Rule::kDcasgd, Rule::kDcasgdMom})
      for (std::int64_t n : {std::int64_t{1}, std::int64_t{13}, std::int64_t{70001},
                             std::int64_t{(1 << 20) + 5}})
        for (Align a : {Align::kAligned, Align::kGradShifted, Align::kAllShifted})
          v.push_back({dt, master, r, n, a});
  return v;
}

/// Runs the public operator for `c` on the host arrays or on the device copies.
void run_dense_op(const DenseCase& c, Problem& p, bool on_device, Stream stream = {}) {
  TensorView w = p.w.view(on_device), g = p.g.view(on_device);
  if (is_dca(c.rule)) {
    fusedopt::DcasgdParams d;
    d.lr = kLr;
    d.wd = kWd;
    d.momentum = has_mom(c.rule) ? kMomentum : 0.0;
    d.lamda = kLamda;
    d.rescale_grad = kRescale;
    d.clip_gradient = kClip;
    std::optional<TensorView> m;
    if (p.m) m = p.m->view(on_device);
    const TensorView* mp = m ? &*m : nullptr;
    if (c.master)
      fusedopt::mp_dcasgd_update(w, g, mp, p.prev->view(on_device), p.w32->view(on_device), d,
                                 stream);
    else
      fusedopt::dcasgd_update(w, g, mp, p.prev->view(on_device), d, stream);
    return;
  }
  fusedopt::SgdParams s;
  s.lr = kLr;
  s.wd = kWd;
  s.momentum = kMomentum;
  s.rescale_grad = kRescale;
  s.clip_gradient = kClip;
  if (c.master) {
    if (p.m)
      fusedopt::mp_sgd_mom_update(w, g, p.m->view(on_device), p.w32->view(on_device), s, stream);
    else
      fusedopt::mp_sgd_update(w, g, p.w32->view(on_device), s, stream);
  } else {
    if (p.m)
      fusedopt::sgd_mom_update(w, g, p.m->view(on_device), s, stream);
    else
      fusedopt::sgd_update(w, g, s, stream);
  }
}

class CudaDense : public CudaTest, public ::testing::WithParamInterface<DenseCase> {};

TEST_P(CudaDense, MatchesCpu) {
  const DenseCase& c = GetParam();
  std::mt19937_64 rng(1234u + static_cast<std::uint64_t>(c.n));
  const std::int64_t w_off = c.align == Align::kAllShifted ? 1 : 0;
  const std::int64_t g_off = c.align == Align::kAligned ? 0 : 1;
  Problem p(c.dt, c.master, has_mom(c.rule), is_dca(c.rule), c.n, w_off, g_off, rng);
  p.upload_all();
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    run_dense_op(c, p, false);
    run_dense_op(c, p, true);
    sync_and_check();
    for (Operand* o : p.written()) EXPECT_TRUE(o->matches_device());
    p.new_grad(rng);
    p.upload_all();  // next step from identical state
  }
}

INSTANTIATE_TEST_SUITE_P(AllRules, CudaDense, ::testing::ValuesIn(dense_cases()), dense_case_name);

// ---------------------------------------------------------------------------------------------------
// Aggregated operators (multi-tensor-apply): zero-size tensors first / middle / last, misaligned members,
// more tensors than one chunk table holds, and a tensor carried over between launches.

enum class List { kZeroSizes, kManySmall, kCarryOver };

struct MultiCase {
  DType dt;
  bool master;
  bool mom;
  List list;
};

std::string multi_case_name(const ::testing::TestParamInfo<MultiCase>& info) {
  const MultiCase& c = info.param;
  std::ostringstream s;
  s << (c.mom ? "mom_" : "") << short_name(c.dt) << (c.master ? "_mp" : "") << "_"
    << (c.list == List::kZeroSizes ? "zero_sizes" : c.list == List::kManySmall ? "many" : "carry");
  return s.str();
}

std::vector<MultiCase> multi_cases() {
  std::vector<MultiCase> v;
  const std::pair<DType, bool> kinds[] = {{DType::kFloat16, false}, {DType::kFloat16, true},
                                          {DType::kBFloat16, false}, {DType::kBFloat16, true},
                                          {DType::kFloat32, false}, {DType::kFloat64, false}};
  for (auto [dt, master] : kinds)
    for (bool mom : {false, true})
      for (List l : {List::kZeroSizes, List::kManySmall, List::kCarryOver}) {
        // the carry-over list is large: float32 and float16 master are enough there
        if (l == List::kCarryOver && !(dt == DType::kFloat32 || (dt == DType::kFloat16 && master)))
          continue;
        v.push_back({dt, master, mom, l});
      }
  return v;
}

std::vector<std::pair<std::int64_t, std::int64_t>> list_sizes(List l, std::mt19937_64& rng) {
  // (elements, offset)
  switch (l) {
    case List::kZeroSizes:
      return {{0, 0}, {7, 0}, {2 * 65536 + 3, 0}, {0, 0}, {1, 0}, {100000, 1}, {4096, 0}, {0, 0}};
    case List::kManySmall: {
      std::vector<std::pair<std::int64_t, std::int64_t>> v;
      std::uniform_int_distribution<std::int64_t> u(1, 3000);
      for (int k = 0; k < 300; ++k) v.emplace_back(k % 10 == 0 ? 0 : u(rng), k % 17 == 3 ? 1 : 0);
      return v;
    }
    case List::kCarryOver:
      // 320 chunks of 65536 fill one launch; the big tensor continues in the next one.
      return {{5, 0}, {320 * 65536 + 12345, 0}, {0, 0}, {9, 0}};
  }
  return {};
}

/// The aggregated SGD operator of (master, mom) on the given views.
void multi_sgd_call(bool master, bool mom, const std::vector<TensorView>& w,
                    const std::vector<TensorView>& g, const std::vector<TensorView>& m,
                    const std::vector<TensorView>& w32, const fusedopt::MultiSgdParams& mp) {
  if (master && mom) fusedopt::multi_mp_sgd_mom_update(w, g, m, w32, mp);
  else if (master) fusedopt::multi_mp_sgd_update(w, g, w32, mp);
  else if (mom) fusedopt::multi_sgd_mom_update(w, g, m, mp);
  else fusedopt::multi_sgd_update(w, g, mp);
}

/// One step of an aggregated call on the host (run(false)) and on the device (run(true)); every
/// written operand must match; then new gradients for the next step.
template <class Run>
void run_and_compare(Run&& run, std::vector<Problem>& probs, std::mt19937_64& rng) {
  run(false);
  run(true);
  sync_and_check();
  for (std::size_t k = 0; k < probs.size(); ++k) {
    SCOPED_TRACE("tensor " + std::to_string(k));
    for (Operand* o : probs[k].written()) EXPECT_TRUE(o->matches_device());
  }
  for (Problem& p : probs) {
    p.new_grad(rng);
    p.upload_all();
  }
}

class CudaMulti : public CudaTest, public ::testing::WithParamInterface<MultiCase> {};

TEST_P(CudaMulti, MatchesCpu) {
  const MultiCase& c = GetParam();
  std::mt19937_64 rng(99);
  const auto sizes = list_sizes(c.list, rng);
  std::vector<Problem> probs;
  probs.reserve(sizes.size());
  for (auto [n, off] : sizes) probs.emplace_back(c.dt, c.master, c.mom, false, n, off, off, rng);
  fusedopt::MultiSgdParams mp;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    mp.lrs.push_back(0.01 * static_cast<double>(k % 7 + 1));
    mp.wds.push_back(0.001 * static_cast<double>(k % 3));
  }
  mp.momentum = kMomentum;
  mp.rescale_grad = kRescale;
  mp.clip_gradient = kClip;
  for (Problem& p : probs) p.upload_all();

  auto run = [&](bool on_device) {
    std::vector<TensorView> w, g, m, w32;
    for (Problem& p : probs) {
      w.push_back(p.w.view(on_device));
      g.push_back(p.g.view(on_device));
      if (p.m) m.push_back(p.m->view(on_device));
      if (p.w32) w32.push_back(p.w32->view(on_device));
    }
    multi_sgd_call(c.master, c.mom, w, g, m, w32, mp);
  };
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    run_and_compare(run, probs, rng);
  }
}

INSTANTIATE_TEST_SUITE_P(Lists, CudaMulti, ::testing::ValuesIn(multi_cases()), multi_case_name);

// ---------------------------------------------------------------------------------------------------
// Loss scaling read on the device (LossScale: grad_scale / found_inf as one-element device arrays). The
// host run reads host copies of the same values (the CPU path, tested against the float64 reference
// in tests/python), so the device result must match it; found_inf != 0 must leave every byte as it
// was. One tensor takes the single-tensor kernel, three the multi-tensor kernel.

struct ScaleCase {
  DType dt;
  bool master;
  bool mom;
  bool dca;
  int ntensors;
};

std::string scale_case_name(const ::testing::TestParamInfo<ScaleCase>& info) {
  const ScaleCase& c = info.param;
  std::ostringstream s;
  s << (c.dca ? "dcasgd_" : "sgd_") << (c.mom ? "mom_" : "") << short_name(c.dt)
    << (c.master ? "_mp" : "") << "_n" << c.ntensors;
  return s.str();
}

std::vector<ScaleCase> scale_cases() {
  std::vector<ScaleCase> v;
  const std::pair<DType, bool> kinds[] = {{DType::kFloat32, false}, {DType::kFloat16, true},
                                          {DType::kBFloat16, true}, {DType::kFloat64, false}};
  for (auto [dt, master] : kinds)
    for (bool mom : {false, true})
      for (bool dca : {false, true})
        for (int n : {1, 3}) v.push_back({dt, master, mom, dca, n});
  return v;
}

/// The device bytes of every written operand (to check that a skipped call wrote nothing).
std::vector<std::vector<unsigned char>> device_bytes(std::vector<Problem>& probs) {
  std::vector<std::vector<unsigned char>> out;
  for (Problem& p : probs)
    for (Operand* o : p.written()) {
      std::vector<unsigned char> b(usize(o->size()) * fusedopt::dtype_size(o->dtype()));
      FUSEDOPT_CUDA_CHECK(cudaMemcpy(b.data(), o->dev(), b.size(), cudaMemcpyDeviceToHost));
      out.push_back(std::move(b));
    }
  return out;
}

class CudaLossScale : public CudaTest, public ::testing::WithParamInterface<ScaleCase> {};

TEST_P(CudaLossScale, ReadOnDevice) {
  const ScaleCase& c = GetParam();
  std::mt19937_64 rng(17);
  const std::int64_t sizes[] = {70001, 5, 1 << 17};
  std::vector<Problem> probs;
  probs.reserve(usize(c.ntensors));
  for (int k = 0; k < c.ntensors; ++k) probs.emplace_back(c.dt, c.master, c.mom, c.dca, sizes[k], 0, 0, rng);
  for (Problem& p : probs) p.upload_all();
  // host and device copies of grad_scale and found_inf
  float host_scale = 3.0f, host_found = 0.0f;
  DeviceMemory dev_scale(sizeof(float)), dev_found(sizeof(float));
  auto set_device = [&](float scale, float found) {
    host_scale = scale;
    host_found = found;
    FUSEDOPT_CUDA_CHECK(cudaMemcpy(dev_scale.get(), &scale, sizeof(float), cudaMemcpyHostToDevice));
    FUSEDOPT_CUDA_CHECK(cudaMemcpy(dev_found.get(), &found, sizeof(float), cudaMemcpyHostToDevice));
  };
  auto run = [&](bool on_device) {
    fusedopt::LossScale ls;
    ls.grad_scale = on_device ? TensorView(static_cast<const void*>(dev_scale.get()), DType::kFloat32,
                                           {1}, kGpu)
                              : TensorView(static_cast<const void*>(&host_scale), DType::kFloat32, {1});
    ls.found_inf = on_device ? TensorView(static_cast<const void*>(dev_found.get()), DType::kFloat32,
                                          {1}, kGpu)
                             : TensorView(static_cast<const void*>(&host_found), DType::kFloat32, {1});
    std::vector<TensorView> w, g, m, prev, w32;
    std::vector<double> lrs, wds;
    for (Problem& p : probs) {
      w.push_back(p.w.view(on_device));
      g.push_back(p.g.view(on_device));
      if (p.m) m.push_back(p.m->view(on_device));
      if (p.prev) prev.push_back(p.prev->view(on_device));
      if (p.w32) w32.push_back(p.w32->view(on_device));
      lrs.push_back(kLr);
      wds.push_back(kWd);
    }
    if (c.dca) {
      fusedopt::MultiDcasgdParams dp;
      dp.lrs = lrs;
      dp.wds = wds;
      dp.momentum = c.mom ? kMomentum : 0.0;
      dp.lamda = kLamda;
      dp.rescale_grad = kRescale;
      dp.clip_gradient = kClip;
      dp.loss_scale = ls;
      if (c.master) fusedopt::multi_mp_dcasgd_update(w, g, m, prev, w32, dp);
      else fusedopt::multi_dcasgd_update(w, g, m, prev, dp);
      return;
    }
    fusedopt::MultiSgdParams mp;
    mp.lrs = lrs;
    mp.wds = wds;
    mp.momentum = kMomentum;
    mp.rescale_grad = kRescale;
    mp.clip_gradient = kClip;
    mp.loss_scale = ls;
    multi_sgd_call(c.master, c.mom, w, g, m, w32, mp);
  };
  for (const float scale : {3.0f, 1024.0f}) {
    SCOPED_TRACE("grad_scale " + std::to_string(scale));
    set_device(scale, 0.0f);
    run_and_compare(run, probs, rng);
  }
  // found_inf set (1 and NaN both count): nothing written on the device.
  for (const float found : {1.0f, NAN}) {
    set_device(2.0f, found);
    const auto before = device_bytes(probs);
    run(true);
    sync_and_check();
    EXPECT_EQ(device_bytes(probs), before) << "found_inf " << found;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaLossScale, ::testing::ValuesIn(scale_cases()), scale_case_name);

TEST_F(CudaTest, LossScaleOnAnotherDeviceIsRefused) {
  // grad_scale in host memory for device weights: refused before anything is written.
  DeviceMemory w(64), g(64);
  FUSEDOPT_CUDA_CHECK(cudaMemset(w.get(), 0, 64));
  float scale = 2.0f;
  fusedopt::MultiSgdParams mp;
  mp.lrs = {0.1};
  mp.wds = {0.0};
  mp.loss_scale.grad_scale = TensorView(static_cast<const void*>(&scale), DType::kFloat32, {1});
  std::vector<TensorView> ws = {TensorView(w.get(), DType::kFloat32, {4}, kGpu)};
  std::vector<TensorView> gs = {TensorView(static_cast<const void*>(g.get()), DType::kFloat32, {4}, kGpu)};
  EXPECT_THROW(fusedopt::multi_sgd_update(ws, gs, mp), fusedopt::ValueError);
}

// ---------------------------------------------------------------------------------------------------
// engine.h directly: zero-size segments anywhere, null gradients (zero gradient), aggregated DCASGD.

struct EngineCase {
  DType dt;
  bool master;
  fusedopt::detail::RuleKind rule;
  bool mom;
};

std::string engine_case_name(const ::testing::TestParamInfo<EngineCase>& info) {
  const EngineCase& c = info.param;
  std::ostringstream s;
  s << (c.rule == fusedopt::detail::RuleKind::kDcasgd ? "dcasgd" : "sgd") << (c.mom ? "_mom" : "")
    << "_" << short_name(c.dt) << (c.master ? "_mp" : "");
  return s.str();
}

class CudaEngine : public CudaTest, public ::testing::WithParamInterface<EngineCase> {};

TEST_P(CudaEngine, SegmentsMatchCpu) {
  using fusedopt::detail::RuleKind;
  using fusedopt::detail::Segment;
  const EngineCase& c = GetParam();
  const bool dca = c.rule == RuleKind::kDcasgd;
  std::mt19937_64 rng(7);
  // (size, gradient present); zero sizes first, middle and last; one segment alone tests the
  // single-tensor kernel with a null gradient.
  const std::vector<std::vector<std::pair<std::int64_t, bool>>> lists = {
      {{0, true}, {1000, true}, {0, true}, {77777, false}, {5, true}, {0, false}},
      {{123457, false}},
      {{0, true}, {0, true}}};
  fusedopt::detail::SharedScalars s;
  s.momentum = c.mom ? kMomentum : 0.0;
  s.rescale_grad = kRescale;
  s.clip = kClip;
  s.lamda = dca ? kLamda : 0.0;
  const fusedopt::detail::UpdateKind kind{c.dt, c.rule, c.mom, c.master};
  for (std::size_t li = 0; li < lists.size(); ++li) {
    SCOPED_TRACE("list " + std::to_string(li));
    std::vector<Problem> probs;
    probs.reserve(lists[li].size());
    for (auto [n, with_g] : lists[li]) probs.emplace_back(c.dt, c.master, c.mom, dca, n, 0, 0, rng);
    for (Problem& p : probs) p.upload_all();
    std::vector<Segment> host, dev;
    for (std::size_t k = 0; k < probs.size(); ++k) {
      Problem& p = probs[k];
      const bool with_g = lists[li][k].second;
      Segment h, d;
      h.w = p.w.host();
      d.w = p.w.dev();
      h.g = with_g ? p.g.host() : nullptr;
      d.g = with_g ? p.g.dev() : nullptr;
      if (p.m) {
        h.m = p.m->host();
        d.m = p.m->dev();
      }
      if (p.prev) {
        h.prev = p.prev->host();
        d.prev = p.prev->dev();
      }
      if (p.w32) {
        h.w32 = static_cast<float*>(p.w32->host());
        d.w32 = static_cast<float*>(p.w32->dev());
      }
      h.n = d.n = p.w.size();
      h.lr = d.lr = 0.02 * static_cast<double>(k + 1);
      h.wd = d.wd = 0.003 * static_cast<double>(k);
      host.push_back(h);
      dev.push_back(d);
    }
    const auto nseg = static_cast<std::int64_t>(host.size());
    fusedopt::detail::cpu_kernels().update(kind, host.data(), nseg, s);
    fusedopt::detail::cuda_update(kind, dev.data(), nseg, s, kGpu, Stream{});
    sync_and_check();
    for (std::size_t k = 0; k < probs.size(); ++k) {
      SCOPED_TRACE("segment " + std::to_string(k));
      for (Operand* o : probs[k].written()) EXPECT_TRUE(o->matches_device());
    }
  }
}

std::vector<EngineCase> engine_cases() {
  using fusedopt::detail::RuleKind;
  std::vector<EngineCase> v;
  const std::pair<DType, bool> kinds[] = {{DType::kFloat16, false}, {DType::kBFloat16, true},
                                          {DType::kFloat32, false}, {DType::kFloat64, false},
                                          {DType::kFloat16, true}};
  for (auto [dt, master] : kinds)
    for (RuleKind r : {RuleKind::kSgd, RuleKind::kDcasgd})
      for (bool mom : {false, true}) v.push_back({dt, master, r, mom});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Kinds, CudaEngine, ::testing::ValuesIn(engine_cases()), engine_case_name);

// ---------------------------------------------------------------------------------------------------
// Row-sparse gradients: lazy and standard, with and without momentum, vector and scalar row paths.

struct RspCase {
  DType dt;
  bool mom;
  bool lazy;
  int shape;     ///< index into rsp_shapes()
  int coverage;  ///< 0: no stored rows, 1: ~3 % of the rows, 2: every row
};

const std::vector<std::vector<std::int64_t>>& rsp_shapes() {
  static const std::vector<std::vector<std::int64_t>> shapes = {
      {1000, 768}, {1000, 7}, {50}, {300, 4, 3}};
  return shapes;
}

std::string rsp_case_name(const ::testing::TestParamInfo<RspCase>& info) {
  const RspCase& c = info.param;
  std::ostringstream s;
  s << (c.lazy ? "lazy" : "standard") << (c.mom ? "_mom" : "") << "_" << short_name(c.dt) << "_";
  for (std::int64_t d : rsp_shapes()[static_cast<std::size_t>(c.shape)]) s << "x" << d;
  s << "_cov" << c.coverage;
  return s.str();
}

std::vector<RspCase> rsp_cases() {
  std::vector<RspCase> v;
  for (DType dt : {DType::kFloat16, DType::kBFloat16, DType::kFloat32, DType::kFloat64})
    for (bool mom : {false, true})
      for (bool lazy : {true, false})
        for (int shape = 0; shape < static_cast<int>(rsp_shapes().size()); ++shape)
          for (int cov = 0; cov < 3; ++cov) v.push_back({dt, mom, lazy, shape, cov});
  return v;
}

class CudaRowSparse : public CudaTest, public ::testing::WithParamInterface<RspCase> {};

TEST_P(CudaRowSparse, MatchesCpu) {
  const RspCase& c = GetParam();
  const std::vector<std::int64_t>& shape = rsp_shapes()[static_cast<std::size_t>(c.shape)];
  const std::int64_t rows = shape[0];
  const std::int64_t numel =
      std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
  const std::int64_t row_len = numel / rows;
  std::mt19937_64 rng(42u + static_cast<std::uint64_t>(c.shape));

  // Unsorted unique indices.
  std::vector<std::int64_t> all(usize(rows));
  std::iota(all.begin(), all.end(), std::int64_t{0});
  std::shuffle(all.begin(), all.end(), rng);
  const std::int64_t nidx = c.coverage == 0 ? 0 : c.coverage == 2 ? rows : std::max<std::int64_t>(
                                                                               1, rows * 3 / 100);
  std::vector<std::int64_t> indices(all.begin(), all.begin() + nidx);

  Problem p(c.dt, false, c.mom, false, numel, 0, 0, rng);
  Operand gdata("grad.data", c.dt, nidx * row_len);
  gdata.fill(rng, -1.0, 1.0);
  p.upload_all();
  gdata.upload();

  std::vector<std::int64_t> data_shape = shape;
  data_shape[0] = nidx;
  fusedopt::SgdParams sp;
  sp.lr = kLr;
  sp.wd = kWd;
  sp.momentum = kMomentum;
  sp.rescale_grad = kRescale;
  sp.clip_gradient = kClip;
  sp.lazy_update = c.lazy;
  auto run = [&](bool on_device) {
    fusedopt::RowSparseView g;
    g.data = gdata.view(on_device, data_shape);
    g.indices = indices.data();
    g.num_indices = nidx;
    g.ndim = static_cast<std::int32_t>(shape.size());
    std::copy(shape.begin(), shape.end(), g.shape.begin());
    TensorView w = p.w.view(on_device, shape);
    if (c.mom) fusedopt::sgd_mom_update(w, g, p.m->view(on_device, shape), sp);
    else fusedopt::sgd_update(w, g, sp);
  };
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    run(false);
    run(true);
    sync_and_check();
    for (Operand* o : p.written()) EXPECT_TRUE(o->matches_device());
    gdata.fill(rng, -1.0, 1.0);
    gdata.upload();
    p.upload_all();
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, CudaRowSparse, ::testing::ValuesIn(rsp_cases()), rsp_case_name);

// ---------------------------------------------------------------------------------------------------
// Beyond 2^31 elements (64-bit indexing), single-tensor and aggregated kernels.

TEST_F(CudaTest, MoreThan2To31Elements) {
  const std::int64_t n = (std::int64_t{1} << 31) + 4099;
  const std::size_t bytes = usize(n) * 2;
  std::size_t free_bytes = 0, total_bytes = 0;
  FUSEDOPT_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  if (free_bytes < 2 * bytes + (std::size_t{1} << 30))
    GTEST_SKIP() << "needs " << (2 * bytes) / (1 << 20) << " MiB of free device memory";
  DeviceMemory w(bytes), g(bytes), small_w(4096), small_g(4096);
  // Every weight element 0x3C3C (1.0586 in float16), every gradient element 0x3838 (0.5273).
  FUSEDOPT_CUDA_CHECK(cudaMemset(w.get(), 0x3C, bytes));
  FUSEDOPT_CUDA_CHECK(cudaMemset(g.get(), 0x38, bytes));
  FUSEDOPT_CUDA_CHECK(cudaMemset(small_w.get(), 0x3C, 4096));
  FUSEDOPT_CUDA_CHECK(cudaMemset(small_g.get(), 0x38, 4096));
  fusedopt::SgdParams sp;
  sp.lr = 0.5;
  sp.wd = 0.1;
  fusedopt::half hw{0x3C3C}, hg{0x3838};

  // The same step on one host element gives the value every device element must (nearly) have.
  auto expect_all = [&](const char* what) {
    fusedopt::sgd_update(TensorView(&hw, DType::kFloat16, {1}), TensorView(&hg, DType::kFloat16, {1}),
                         sp);
    const double want = static_cast<double>(fusedopt::to_float(hw));
    std::vector<std::int64_t> probe = {0, 1, 7, 8, (std::int64_t{1} << 31) - 1,
                                       std::int64_t{1} << 31, (std::int64_t{1} << 31) + 1};
    for (std::int64_t i = n - 4100; i < n; i += 37) probe.push_back(i);
    probe.push_back(n - 1);
    std::mt19937_64 rng(5);
    std::uniform_int_distribution<std::int64_t> u(0, n - 1);
    for (int k = 0; k < 200; ++k) probe.push_back(u(rng));
    std::uint16_t first = 0;
    for (std::size_t k = 0; k < probe.size(); ++k) {
      std::uint16_t bits = 0;
      FUSEDOPT_CUDA_CHECK(cudaMemcpy(&bits, w.get() + usize(probe[k]) * 2, 2, cudaMemcpyDeviceToHost));
      if (k == 0) first = bits;
      // every element saw the same single update
      ASSERT_EQ(bits, first) << what << ": element " << probe[k];
    }
    const double got = static_cast<double>(fusedopt::to_float(fusedopt::half{first}));
    EXPECT_NEAR(got, want, 2 * unit_ulp(DType::kFloat16) * std::max(1.0, std::fabs(want))) << what;
  };

  fusedopt::sgd_update(TensorView(w.get(), DType::kFloat16, {n}, kGpu),
                       TensorView(static_cast<const void*>(g.get()), DType::kFloat16, {n}, kGpu), sp);
  sync_and_check();
  expect_all("sgd_update");

  fusedopt::MultiSgdParams mp;
  mp.lrs = {sp.lr, sp.lr};
  mp.wds = {sp.wd, sp.wd};
  std::vector<TensorView> ws = {TensorView(small_w.get(), DType::kFloat16, {2048}, kGpu),
                                TensorView(w.get(), DType::kFloat16, {n}, kGpu)};
  std::vector<TensorView> gs = {TensorView(small_g.get(), DType::kFloat16, {2048}, kGpu),
                                TensorView(g.get(), DType::kFloat16, {n}, kGpu)};
  fusedopt::multi_sgd_update(ws, gs, mp);
  sync_and_check();
  expect_all("multi_sgd_update");
}

// ---------------------------------------------------------------------------------------------------
// Streams, devices and errors.

TEST_F(CudaTest, RunsOnTheGivenStreamAndKeepsTheCurrentDevice) {
  int before = 0;
  FUSEDOPT_CUDA_CHECK(cudaGetDevice(&before));
  cudaStream_t stream = nullptr;
  FUSEDOPT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::mt19937_64 rng(3);
  const DenseCase c{DType::kFloat32, false, Rule::kSgdMom, 1 << 20, Align::kAligned};
  Problem p(c.dt, false, true, false, c.n, 0, 0, rng);
  p.upload_all();
  // A non-blocking stream is not ordered after the legacy stream's (pageable) copies: wait for them.
  sync_and_check();
  run_dense_op(c, p, false);
  run_dense_op(c, p, true, Stream{stream});
  FUSEDOPT_CUDA_CHECK(cudaStreamSynchronize(stream));
  for (Operand* o : p.written()) EXPECT_TRUE(o->matches_device());
  FUSEDOPT_CUDA_CHECK(cudaStreamDestroy(stream));
  int after = -1;
  FUSEDOPT_CUDA_CHECK(cudaGetDevice(&after));
  EXPECT_EQ(before, after);

  if (fusedopt::cuda_device_count() >= 2) {
    // Arrays on device 0 while device 1 is current: the launch goes to device 0, device 1 stays current.
    FUSEDOPT_CUDA_CHECK(cudaSetDevice(0));
    p.upload_all();
    sync_and_check();
    FUSEDOPT_CUDA_CHECK(cudaSetDevice(1));
    run_dense_op(c, p, false);
    run_dense_op(c, p, true);
    FUSEDOPT_CUDA_CHECK(cudaGetDevice(&after));
    EXPECT_EQ(after, 1);
    FUSEDOPT_CUDA_CHECK(cudaSetDevice(0));
    sync_and_check();
    for (Operand* o : p.written()) EXPECT_TRUE(o->matches_device());
    FUSEDOPT_CUDA_CHECK(cudaSetDevice(before));
  }
}

TEST_F(CudaTest, CudaErrorsBecomeFusedoptErrors) {
  DeviceMemory w(64), g(64);
  const Device bad{DeviceType::kCUDA, 4096};  // no such device: cudaSetDevice fails
  fusedopt::SgdParams sp;
  EXPECT_THROW(fusedopt::sgd_update(TensorView(w.get(), DType::kFloat32, {4}, bad),
                                    TensorView(static_cast<const void*>(g.get()), DType::kFloat32,
                                               {4}, bad),
                                    sp),
               fusedopt::Error);
  // The failure was cleared: the next call on a real device works.
  FUSEDOPT_CUDA_CHECK(cudaMemset(w.get(), 0, 64));
  FUSEDOPT_CUDA_CHECK(cudaMemset(g.get(), 0, 64));
  fusedopt::sgd_update(TensorView(w.get(), DType::kFloat32, {4}, kGpu),
                       TensorView(static_cast<const void*>(g.get()), DType::kFloat32, {4}, kGpu), sp);
  sync_and_check();
}

// ---------------------------------------------------------------------------------------------------
// DC-ASGD as in the paper (backup form, only read) and the adaptive lambda on both forms, single-tensor
// and aggregated (multi-tensor-apply with the mean square in the chunk table).

struct BackupCase {
  DType dt;
  bool master;
  bool backup;    ///< the backup form (else MXNet's prev form, adaptive)
  bool adaptive;
  bool mom;
  bool multi;     ///< the aggregated operator over the zero-size list (else one tensor)
};

std::string backup_case_name(const ::testing::TestParamInfo<BackupCase>& info) {
  const BackupCase& c = info.param;
  std::ostringstream s;
  s << (c.backup ? "backup" : "mxnet") << (c.adaptive ? "_adaptive" : "_constant")
    << (c.mom ? "_mom_" : "_") << short_name(c.dt) << (c.master ? "_mp" : "")
    << (c.multi ? "_multi" : "_single");
  return s.str();
}

std::vector<BackupCase> backup_cases() {
  std::vector<BackupCase> v;
  const std::pair<DType, bool> kinds[] = {{DType::kFloat16, true}, {DType::kBFloat16, true},
                                          {DType::kFloat16, false}, {DType::kFloat32, false},
                                          {DType::kFloat64, false}};
  for (auto [dt, master] : kinds)
    for (bool backup : {true, false})
      for (bool adaptive : {false, true}) {
        if (!backup && !adaptive) continue;  // MXNet's constant form is covered above
        for (bool mom : {false, true})
          for (bool multi : {false, true}) v.push_back({dt, master, backup, adaptive, mom, multi});
      }
  return v;
}

class CudaBackup : public CudaTest, public ::testing::WithParamInterface<BackupCase> {};

TEST_P(CudaBackup, MatchesCpu) {
  const BackupCase& c = GetParam();
  std::mt19937_64 rng(4321);
  std::vector<std::pair<std::int64_t, std::int64_t>> sizes =
      c.multi ? list_sizes(List::kZeroSizes, rng)
              : std::vector<std::pair<std::int64_t, std::int64_t>>{{70001, 1}};
  std::vector<Problem> probs;
  std::vector<Operand> ms;
  probs.reserve(sizes.size());
  ms.reserve(sizes.size());
  for (auto [n, off] : sizes) {
    probs.emplace_back(c.dt, c.master, c.mom, true, n, off, off, rng);  // prev: weight + noise
    ms.emplace_back("ms", c.master ? DType::kFloat32 : c.dt, n, off);
    ms.back().fill(rng, 0.0, 0.1);
  }
  fusedopt::MultiDcasgdParams mp;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    mp.lrs.push_back(0.01 * static_cast<double>(k % 7 + 1));
    mp.wds.push_back(0.001 * static_cast<double>(k % 3));
  }
  mp.momentum = c.mom ? kMomentum : 0.0;
  mp.lamda = kLamda;
  mp.rescale_grad = kRescale;
  mp.clip_gradient = kClip;
  mp.ms_decay = 0.9;
  mp.eps = 1e-6;
  auto upload = [&] {
    for (Problem& p : probs) p.upload_all();
    for (Operand& o : ms) o.upload();
  };
  upload();

  auto run = [&](bool on_device) {
    std::vector<TensorView> w, g, m, anchor, w32, s;
    for (std::size_t k = 0; k < probs.size(); ++k) {
      Problem& p = probs[k];
      w.push_back(p.w.view(on_device));
      g.push_back(p.g.view(on_device));
      TensorView a = p.prev->view(on_device);
      a.read_only = c.backup;  // a backup may be read-only
      anchor.push_back(a);
      if (p.m) m.push_back(p.m->view(on_device));
      if (p.w32) w32.push_back(p.w32->view(on_device));
      if (c.adaptive) s.push_back(ms[k].view(on_device));
    }
    if (c.multi) {
      if (c.backup && c.master) fusedopt::multi_mp_dcasgd_backup_update(w, g, anchor, w32, m, s, mp);
      else if (c.backup) fusedopt::multi_dcasgd_backup_update(w, g, anchor, m, s, mp);
      else if (c.master) fusedopt::multi_mp_dcasgd_update(w, g, m, anchor, w32, s, mp);
      else fusedopt::multi_dcasgd_update(w, g, m, anchor, s, mp);
      return;
    }
    fusedopt::DcasgdParams d;
    d.lr = mp.lrs[0];
    d.wd = mp.wds[0];
    d.momentum = mp.momentum;
    d.lamda = mp.lamda;
    d.rescale_grad = mp.rescale_grad;
    d.clip_gradient = mp.clip_gradient;
    d.ms_decay = mp.ms_decay;
    d.eps = mp.eps;
    const TensorView* mm = c.mom ? &m[0] : nullptr;
    const TensorView* ss = c.adaptive ? &s[0] : nullptr;
    if (c.backup && c.master) fusedopt::mp_dcasgd_backup_update(w[0], g[0], anchor[0], w32[0], mm, ss, d);
    else if (c.backup) fusedopt::dcasgd_backup_update(w[0], g[0], anchor[0], mm, ss, d);
    else if (c.master) fusedopt::mp_dcasgd_update(w[0], g[0], mm, anchor[0], w32[0], ss, d);
    else fusedopt::dcasgd_update(w[0], g[0], mm, anchor[0], ss, d);
  };
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    std::vector<std::vector<double>> backups_before(probs.size());
    for (std::size_t k = 0; k < probs.size(); ++k)
      for (std::int64_t i = 0; i < probs[k].prev->size(); ++i)
        backups_before[k].push_back(probs[k].prev->get(i));
    run(false);
    run(true);
    sync_and_check();
    for (std::size_t k = 0; k < probs.size(); ++k) {
      SCOPED_TRACE("tensor " + std::to_string(k));
      // prev is among the operands compared (device vs host); a backup is also unchanged on the host.
      for (Operand* o : probs[k].written()) EXPECT_TRUE(o->matches_device());
      if (c.adaptive) {
        EXPECT_TRUE(ms[k].matches_device());
      }
      if (c.backup) {
        for (std::int64_t i = 0; i < probs[k].prev->size(); ++i)
          ASSERT_EQ(probs[k].prev->get(i), backups_before[k][static_cast<std::size_t>(i)]);
      }
    }
    for (Problem& p : probs) p.new_grad(rng);
    upload();  // next step from identical state
  }
}

INSTANTIATE_TEST_SUITE_P(PaperForms, CudaBackup, ::testing::ValuesIn(backup_cases()),
                         backup_case_name);

// Runs everywhere, with or without a GPU or driver.
TEST(CudaDevice, DeviceQuery) {
  EXPECT_TRUE(fusedopt::built_with_cuda());
  const int n = fusedopt::cuda_device_count();
  EXPECT_GE(n, 0);
  EXPECT_EQ(n, fusedopt::cuda_device_count());
}

}  // namespace
