// test_cpu_kernels.cpp — every CPU kernel against the double reference (reference.h), once per CPU
// capability this machine supports (forced with set_cpu_capability, restored afterwards): dense,
// multi-precision, DCASGD, row-sparse and aggregated operators over sizes around the SIMD widths
// (8 floats for AVX2, 16 for AVX-512), the 512-element conversion block and the OpenMP split
// (32768 elements per thread), and the option product momentum x wd x rescale x clip. Also: aggregated
// results are bitwise equal to per-tensor calls, NaN/Inf gradients, and the float16/bfloat16
// conversions against references computed another way.
//
// Tolerances, per check:
//   float64 kernels      |got - ref| <= 1e-12 + 1e-12 |ref|   (free-running over all steps)
//   float32 (and the float32 master/state of the mp_ paths)
//                        |got - ref| <= 1e-6 + 1e-5 |ref|     (free-running over all steps)
//   float16/bfloat16 storage without a master: one step at a time from the kernel's own stored state
//   (the weight is rounded on every store, so a free-running double reference drifts by design);
//                        |got - ref| <= 1 ulp of the storage type at ref + 2^-20 (1 + |ref|), the last
//                        term covering float32 evaluation error when the result cancels to ~0.
//   the 16-bit weight of an mp_ path must be bitwise cast(weight32) (round to nearest even).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "fusedopt/fusedopt.h"
#include "reference.h"

namespace {

using fusedopt::bfloat16;
using fusedopt::DType;
using fusedopt::half;
using fusedopt::TensorView;
namespace ref = fusedopt_test::ref;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kLamda = 0.5;

std::size_t uz(std::int64_t i) { return static_cast<std::size_t>(i); }

bool is16(DType t) { return t == DType::kFloat16 || t == DType::kBFloat16; }

const char* short_name(DType t) {
  switch (t) {
    case DType::kFloat16: return "f16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat32: return "f32";
    case DType::kFloat64: return "f64";
  }
  return "?";
}

std::uint16_t cast16(DType t, float f) {
  return t == DType::kFloat16 ? fusedopt::to_half(f).bits : fusedopt::to_bfloat16(f).bits;
}

// ---- deterministic, cheap pseudo-random numbers (splitmix64) -----------------------------------------

std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
/// Uniform in [-1, 1), a function of (seed, i).
double uniform(std::uint64_t seed, std::uint64_t i) {
  return static_cast<double>(mix(seed * 0x100000001B3ull + i) >> 11) * 0x1p-52 - 1.0;
}

// ---- type-erased host buffers -------------------------------------------------------------------------

class Buf {
 public:
  Buf() = default;
  Buf(DType t, std::int64_t n) : dtype_(t), n_(n), bytes_(uz(n) * fusedopt::dtype_size(t)) {}

  DType dtype() const { return dtype_; }
  std::int64_t size() const { return n_; }
  /// Null for an empty buffer: zero-size views with a null pointer are valid (docs/SEMANTICS.md §10).
  void* data() { return n_ > 0 ? bytes_.data() : nullptr; }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

  double get(std::int64_t i) const {
    const unsigned char* p = bytes_.data() + uz(i) * fusedopt::dtype_size(dtype_);
    switch (dtype_) {
      case DType::kFloat16: {
        half h;
        std::memcpy(&h.bits, p, 2);
        return fusedopt::to_float(h);
      }
      case DType::kBFloat16: {
        bfloat16 h;
        std::memcpy(&h.bits, p, 2);
        return fusedopt::to_float(h);
      }
      case DType::kFloat32: {
        float f;
        std::memcpy(&f, p, 4);
        return f;
      }
      case DType::kFloat64: {
        double d;
        std::memcpy(&d, p, 8);
        return d;
      }
    }
    return 0.0;
  }
  /// Stores v rounded to the buffer's dtype (16-bit types via float, round to nearest even).
  void set(std::int64_t i, double v) {
    unsigned char* p = bytes_.data() + uz(i) * fusedopt::dtype_size(dtype_);
    if (is16(dtype_)) {
      const std::uint16_t b = cast16(dtype_, static_cast<float>(v));
      std::memcpy(p, &b, 2);
    } else if (dtype_ == DType::kFloat32) {
      const float f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
    } else {
      std::memcpy(p, &v, 8);
    }
  }
  std::uint16_t bits16(std::int64_t i) const {
    std::uint16_t b;
    std::memcpy(&b, bytes_.data() + uz(i) * 2, 2);
    return b;
  }
  void set_bits16(std::int64_t i, std::uint16_t b) { std::memcpy(bytes_.data() + uz(i) * 2, &b, 2); }
  float getf(std::int64_t i) const {
    float f;
    std::memcpy(&f, bytes_.data() + uz(i) * 4, 4);
    return f;
  }
  void setf(std::int64_t i, float f) { std::memcpy(bytes_.data() + uz(i) * 4, &f, 4); }

  TensorView view(const std::vector<std::int64_t>& shape) {
    return TensorView(data(), dtype_, shape);
  }
  /// A read-only view: a gradient may be const (docs/SEMANTICS.md §10).
  TensorView cview(const std::vector<std::int64_t>& shape) {
    TensorView v = view(shape);
    v.read_only = true;
    return v;
  }

 private:
  DType dtype_ = DType::kFloat32;
  std::int64_t n_ = 0;
  std::vector<unsigned char> bytes_;
};

std::vector<double> values(const Buf& b) {
  std::vector<double> v(uz(b.size()));
  for (std::int64_t i = 0; i < b.size(); ++i) v[uz(i)] = b.get(i);
  return v;
}

// ---- tolerances ---------------------------------------------------------------------------------------

/// Spacing of the storage type's values at |v| (its ulp), subnormals included.
double ulp_of(DType t, double v) {
  const int mant = t == DType::kFloat16 ? 11 : t == DType::kBFloat16 ? 8 : t == DType::kFloat32 ? 24 : 53;
  const int emin = t == DType::kFloat16 ? -14 : t == DType::kFloat64 ? -1022 : -126;
  int e = 0;
  std::frexp(std::fabs(v), &e);  // |v| = f * 2^e, f in [0.5, 1)
  return std::ldexp(1.0, std::max(e - 1, emin) - (mant - 1));
}

enum class Check { kExact, kF64, kF32, kStorage16 };

bool close(double got, double want, Check c, DType storage) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return got == want;
  const double err = std::fabs(got - want);
  switch (c) {
    case Check::kExact: return got == want;
    case Check::kF64: return err <= 1e-12 + 1e-12 * std::fabs(want);
    case Check::kF32: return err <= 1e-6 + 1e-5 * std::fabs(want);
    case Check::kStorage16: return err <= ulp_of(storage, want) + 0x1p-20 * (1.0 + std::fabs(want));
  }
  return false;
}

::testing::AssertionResult compare(const char* what, const Buf& got, const std::vector<double>& want,
                                   Check c) {
  std::int64_t bad = 0;
  std::ostringstream os;
  for (std::int64_t i = 0; i < got.size(); ++i) {
    const double g = got.get(i), w = want[uz(i)];
    if (close(g, w, c, got.dtype())) continue;
    if (bad < 5) os << "\n  " << what << "[" << i << "] = " << g << ", reference " << w << " (diff " << (g - w) << ")";
    ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements of " << what
                                       << " (" << short_name(got.dtype()) << ") differ:" << os.str();
}

/// The 16-bit weight of an mp_ update must be exactly cast(weight32).
::testing::AssertionResult weight_is_cast_of_master(const Buf& w, const Buf& w32) {
  std::int64_t bad = 0;
  std::ostringstream os;
  for (std::int64_t i = 0; i < w.size(); ++i) {
    const float m = w32.getf(i);
    const bool ok = std::isnan(m) ? std::isnan(w.get(i)) : w.bits16(i) == cast16(w.dtype(), m);
    if (ok) continue;
    if (bad < 5)
      os << "\n  weight[" << i << "] bits 0x" << std::hex << w.bits16(i) << ", cast(weight32 = " << m
         << ") = 0x" << cast16(w.dtype(), m) << std::dec;
    ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " weights differ from cast(weight32):" << os.str();
}

::testing::AssertionResult bitwise_equal(const char* what, const Buf& a, const Buf& b) {
  if (a.bytes() == b.bytes()) return ::testing::AssertionSuccess();
  const std::size_t es = fusedopt::dtype_size(a.dtype());
  for (std::int64_t i = 0; i < a.size(); ++i)
    if (std::memcmp(a.bytes().data() + uz(i) * es, b.bytes().data() + uz(i) * es, es) != 0)
      return ::testing::AssertionFailure() << what << " differs first at element " << i << ": "
                                           << a.get(i) << " vs " << b.get(i);
  return ::testing::AssertionFailure() << what << " sizes differ";
}

// ---- operator cases -----------------------------------------------------------------------------------

struct OpCase {
  const char* op;  ///< operator family, for names
  bool dcasgd;
  bool mom;
  bool master;
  DType dtype;
};

std::string case_name(const OpCase& c) { return std::string(c.op) + "_" + short_name(c.dtype); }
void PrintTo(const OpCase& c, std::ostream* os) { *os << case_name(c); }
DType state_dtype(const OpCase& c) { return c.master ? DType::kFloat32 : c.dtype; }

std::vector<OpCase> all_cases() {
  std::vector<OpCase> out;
  const DType all[] = {DType::kFloat64, DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  const DType low[] = {DType::kFloat16, DType::kBFloat16};
  for (DType t : all) {
    out.push_back({"sgd", false, false, false, t});
    out.push_back({"sgd_mom", false, true, false, t});
    out.push_back({"dcasgd", true, false, false, t});
    out.push_back({"dcasgd_mom", true, true, false, t});
  }
  for (DType t : low) {
    out.push_back({"mp_sgd", false, false, true, t});
    out.push_back({"mp_sgd_mom", false, true, true, t});
    out.push_back({"mp_dcasgd", true, false, true, t});
    out.push_back({"mp_dcasgd_mom", true, true, true, t});
  }
  return out;
}

struct Options {
  double momentum = 0.0;
  double wd = 0.0;
  double rescale_grad = 1.0;
  std::optional<double> clip;
};

std::string describe(const Options& o) {
  std::ostringstream os;
  os << "momentum=" << o.momentum << " wd=" << o.wd << " rescale_grad=" << o.rescale_grad
     << " clip=" << (o.clip ? std::to_string(*o.clip) : std::string("None"));
  return os.str();
}

/// momentum x wd x rescale x clip (None, active 0.5, +inf). Operators without momentum get a non-zero
/// momentum too: they must ignore it.
std::vector<Options> full_options() {
  std::vector<Options> out;
  for (double mu : {0.0, 0.9})
    for (double wd : {0.0, 0.1})
      for (double rg : {1.0, 0.5})
        for (std::optional<double> c : {std::optional<double>{}, std::optional<double>{0.5},
                                        std::optional<double>{kInf}})
          out.push_back({mu, wd, rg, c});
  return out;
}
/// The two extremes of the product, for the large sizes.
std::vector<Options> large_options() {
  return {{0.9, 0.1, 0.5, 0.5}, {0.0, 0.0, 1.0, kInf}};
}

ref::Hyper hyper(const Options& o, double lr, double wd) {
  ref::Hyper h;
  h.lr = lr;
  h.wd = wd;
  h.momentum = o.momentum;
  h.rescale_grad = o.rescale_grad;
  h.clip = o.clip ? *o.clip : kInf;
  h.lamda = kLamda;
  return h;
}

fusedopt::SgdParams sgd_params(const Options& o, double lr, double wd) {
  fusedopt::SgdParams p;
  p.lr = lr;
  p.wd = wd;
  p.momentum = o.momentum;
  p.rescale_grad = o.rescale_grad;
  p.clip_gradient = o.clip;
  return p;
}

// ---- one tensor's operands and its reference state ----------------------------------------------------

struct Slot {
  OpCase c;
  std::vector<std::int64_t> shape;
  Buf w, g, m, prev, w32;
  std::vector<double> rw, rm, rprev;  ///< reference state (rm / rprev empty when unused)

  std::int64_t n() const { return w.size(); }
  /// 16-bit storage without a master rounds on every store: compare one step at a time.
  bool resync() const { return is16(c.dtype) && !c.master; }
};

std::int64_t numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n *= d;
  return n;
}

Slot make_slot(const OpCase& c, const std::vector<std::int64_t>& shape, std::uint64_t seed) {
  Slot s;
  s.c = c;
  s.shape = shape;
  const std::int64_t n = numel(shape);
  const DType sd = state_dtype(c);
  s.w = Buf(c.dtype, n);
  s.g = Buf(c.dtype, n);
  if (c.mom) s.m = Buf(sd, n);
  if (c.dcasgd) s.prev = Buf(sd, n);
  if (c.master) s.w32 = Buf(DType::kFloat32, n);
  for (std::int64_t i = 0; i < n; ++i) {
    const auto u = static_cast<std::uint64_t>(i);
    const double w0 = uniform(seed, u);
    if (c.master) {
      s.w32.set(i, w0);
      s.w.set(i, s.w32.get(i));  // as create_state_multi_precision: w = cast(w32)
    } else {
      s.w.set(i, w0);
    }
    if (c.mom) s.m.set(i, 0.5 * uniform(seed + 1, u));
    // prev != w so that the delay compensation term is active from the first step
    if (c.dcasgd) s.prev.set(i, w0 + 0.1 * uniform(seed + 2, u));
  }
  s.rw = values(c.master ? s.w32 : s.w);
  if (c.mom) s.rm = values(s.m);
  if (c.dcasgd) s.rprev = values(s.prev);
  return s;
}

/// Gradient of one step: uniform in [-1, 1), every 7th element x4 so that clip 0.5 bites both before
/// and after rescaling.
void fill_grad(Slot& s, std::uint64_t seed) {
  for (std::int64_t i = 0; i < s.n(); ++i) {
    double v = uniform(seed, static_cast<std::uint64_t>(i));
    if (i % 7 == 3) v *= 4.0;
    s.g.set(i, v);
  }
}

void ref_step(Slot& s, const ref::Hyper& h) {
  if (s.resync()) {
    s.rw = values(s.w);
    if (s.c.mom) s.rm = values(s.m);
    if (s.c.dcasgd) s.rprev = values(s.prev);
  }
  ref::dense_step(s.rw, s.rm, s.rprev, values(s.g), s.c.dcasgd, h);
}

/// The single-tensor operator of the slot's case.
void kernel_step(Slot& s, const Options& o, double lr, double wd) {
  const TensorView w = s.w.view(s.shape), g = s.g.cview(s.shape);
  const TensorView m = s.c.mom ? s.m.view(s.shape) : TensorView();
  const TensorView w32 = s.c.master ? s.w32.view(s.shape) : TensorView();
  if (!s.c.dcasgd) {
    const auto p = sgd_params(o, lr, wd);
    if (s.c.master && s.c.mom) fusedopt::mp_sgd_mom_update(w, g, m, w32, p);
    else if (s.c.master) fusedopt::mp_sgd_update(w, g, w32, p);
    else if (s.c.mom) fusedopt::sgd_mom_update(w, g, m, p);
    else fusedopt::sgd_update(w, g, p);
    return;
  }
  fusedopt::DcasgdParams p;
  p.lr = lr;
  p.wd = wd;
  p.momentum = s.c.mom ? o.momentum : 0.0;  // DCASGD rejects momentum > 0 without a buffer
  p.lamda = kLamda;
  p.rescale_grad = o.rescale_grad;
  p.clip_gradient = o.clip;
  const TensorView prev = s.prev.view(s.shape);
  if (s.c.master) fusedopt::mp_dcasgd_update(w, g, s.c.mom ? &m : nullptr, prev, w32, p);
  else fusedopt::dcasgd_update(w, g, s.c.mom ? &m : nullptr, prev, p);
}

/// Compares the slot's arrays with its reference state after a step. Fatal failures return early.
void check_slot(const Slot& s, const Buf& grad_before) {
  ASSERT_TRUE(bitwise_equal("grad (never written)", s.g, grad_before));
  const Check wide = s.c.dtype == DType::kFloat64 ? Check::kF64 : Check::kF32;
  if (s.c.master) {
    ASSERT_TRUE(compare("weight32", s.w32, s.rw, Check::kF32));
    ASSERT_TRUE(weight_is_cast_of_master(s.w, s.w32));
    if (s.c.mom) {
      ASSERT_TRUE(compare("mom", s.m, s.rm, Check::kF32));
    }
    if (s.c.dcasgd) {
      ASSERT_TRUE(compare("prev32", s.prev, s.rprev, Check::kF32));
    }
  } else if (s.resync()) {
    ASSERT_TRUE(compare("weight", s.w, s.rw, Check::kStorage16));
    if (s.c.mom) {
      ASSERT_TRUE(compare("mom", s.m, s.rm, Check::kStorage16));
    }
    // prev = the weight before the update, stored without any arithmetic
    if (s.c.dcasgd) {
      ASSERT_TRUE(compare("prev", s.prev, s.rprev, Check::kExact));
    }
  } else {
    ASSERT_TRUE(compare("weight", s.w, s.rw, wide));
    if (s.c.mom) {
      ASSERT_TRUE(compare("mom", s.m, s.rm, wide));
    }
    if (s.c.dcasgd) {
      ASSERT_TRUE(compare("prev", s.prev, s.rprev, wide));
    }
  }
}

/// Shapes of the tested sizes: 1-D mostly, a few multi-dimensional (the kernels see numel only).
std::vector<std::int64_t> shape_for(std::int64_t n) {
  if (n == 16) return {2, 2, 4};
  if (n == 512) return {8, 64};
  if (n == 4097) return {17, 241};
  return {n};
}

// Around the SIMD widths (8 / 16 lanes), the 512-element conversion block, one OpenMP range of 32768
// elements (65536 + 3 = two threads with a ragged tail) and apex's 278011 (several ranges, none aligned).
const std::int64_t kSmallSizes[] = {1, 7, 8, 15, 16, 17, 511, 512, 513, 4097};
const std::int64_t kLargeSizes[] = {65536 + 3, 278011};

// ---- threads ------------------------------------------------------------------------------------------

/// Four OpenMP threads unless OMP_NUM_THREADS says otherwise (even on a two-core machine), so the large
/// cases are cut into several ranges that start inside tensors, not just two.
class ThreadsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
#if defined(_OPENMP)
    if (std::getenv("OMP_NUM_THREADS") == nullptr) omp_set_num_threads(4);
#endif
  }
};
[[maybe_unused]] ::testing::Environment* const kThreads =
    ::testing::AddGlobalTestEnvironment(new ThreadsEnvironment);

// ---- capability fixtures ------------------------------------------------------------------------------

/// Forces one capability for the duration of a test and restores the previous one.
class CapabilityGuard {
 public:
  explicit CapabilityGuard(const std::string& cap) : saved_(fusedopt::cpu_capability()) {
    fusedopt::set_cpu_capability(cap);
  }
  ~CapabilityGuard() { fusedopt::set_cpu_capability(saved_); }
  CapabilityGuard(const CapabilityGuard&) = delete;
  CapabilityGuard& operator=(const CapabilityGuard&) = delete;

 private:
  std::string saved_;
};

class CpuKernels : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    guard_.emplace(GetParam());
    ASSERT_EQ(fusedopt::cpu_capability(), GetParam());
  }
  void TearDown() override { guard_.reset(); }
  std::optional<CapabilityGuard> guard_;
};

INSTANTIATE_TEST_SUITE_P(Capability, CpuKernels,
                         ::testing::ValuesIn(fusedopt::supported_cpu_capabilities()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

using DenseParam = std::tuple<std::string, OpCase>;

class DenseOps : public ::testing::TestWithParam<DenseParam> {
 protected:
  void SetUp() override {
    guard_.emplace(std::get<0>(GetParam()));
    ASSERT_EQ(fusedopt::cpu_capability(), std::get<0>(GetParam()));
  }
  void TearDown() override { guard_.reset(); }
  std::optional<CapabilityGuard> guard_;
};

INSTANTIATE_TEST_SUITE_P(
    Capability, DenseOps,
    ::testing::Combine(::testing::ValuesIn(fusedopt::supported_cpu_capabilities()),
                       ::testing::ValuesIn(all_cases())),
    [](const ::testing::TestParamInfo<DenseParam>& info) {
      return std::get<0>(info.param) + "_" + case_name(std::get<1>(info.param));
    });

// ---- dense operators ----------------------------------------------------------------------------------

void run_dense(const OpCase& c, std::int64_t n, const Options& o, int steps, std::uint64_t seed) {
  Slot s = make_slot(c, shape_for(n), seed);
  for (int step = 0; step < steps; ++step) {
    // The learning rate changes between steps (a schedule): lr lives inside the momentum buffer.
    const double lr = 0.1 * (1.0 - 0.1 * step);
    fill_grad(s, seed + 100 + static_cast<std::uint64_t>(step));
    ref_step(s, hyper(o, lr, o.wd));
    const Buf grad_before = s.g;
    kernel_step(s, o, lr, o.wd);
    SCOPED_TRACE("step " + std::to_string(step));
    check_slot(s, grad_before);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST_P(DenseOps, MatchesReferenceOverSteps) {
  const OpCase& c = std::get<1>(GetParam());
  std::uint64_t seed = 1;
  for (std::int64_t n : kSmallSizes) {
    for (const Options& o : full_options()) {
      SCOPED_TRACE("size " + std::to_string(n) + " " + describe(o));
      run_dense(c, n, o, 5, seed++);
      if (HasFatalFailure()) return;
    }
  }
  // Large sizes: both extremes of the option product at 65539, every option on at 278011 (these two
  // sizes are most of the suite's run time).
  const auto large = large_options();
  const std::pair<std::int64_t, Options> large_cases[] = {
      {kLargeSizes[0], large[0]}, {kLargeSizes[0], large[1]}, {kLargeSizes[1], large[0]}};
  for (const auto& [n, o] : large_cases) {
    SCOPED_TRACE("size " + std::to_string(n) + " " + describe(o));
    run_dense(c, n, o, 3, seed++);
    if (HasFatalFailure()) return;
  }
}

TEST_P(DenseOps, NanGradientPropagatesAndInfiniteGradientIsClipped) {
  // docs/SEMANTICS.md §3: NaN/Inf in a gradient propagate (no special handling); an infinite gradient is clipped to
  // +-c when clipping is on; clip = +inf is no clipping. Positions inside the vector body and in the
  // scalar tail of a 37-element array.
  const OpCase& c = std::get<1>(GetParam());
  const std::int64_t n = 37;
  const std::int64_t kNan = 3, kPosInf = 20, kNegInf = 33;
  for (std::optional<double> clip : {std::optional<double>{1.0}, std::optional<double>{},
                                     std::optional<double>{kInf}}) {
    const Options o{0.9, 0.1, 1.0, clip};
    SCOPED_TRACE(describe(o));
    Slot s = make_slot(c, {n}, 7);
    fill_grad(s, 8);
    s.g.set(kNan, std::numeric_limits<double>::quiet_NaN());
    s.g.set(kPosInf, kInf);
    s.g.set(kNegInf, -kInf);
    ref_step(s, hyper(o, 0.1, o.wd));
    const Buf grad_before = s.g;
    kernel_step(s, o, 0.1, o.wd);
    check_slot(s, grad_before);
    if (HasFatalFailure()) return;
    const Buf& w = c.master ? s.w32 : s.w;
    EXPECT_TRUE(std::isnan(w.get(kNan))) << "NaN gradient must propagate to the weight";
    if (c.mom) {
      EXPECT_TRUE(std::isnan(s.m.get(kNan))) << "and to the momentum";
    }
    if (!c.dcasgd) {  // DCASGD squares r: inf * (w - prev) may be inf or NaN, checked above
      if (clip && std::isfinite(*clip)) {
        EXPECT_TRUE(std::isfinite(w.get(kPosInf))) << "+inf gradient clipped to +c";
        EXPECT_TRUE(std::isfinite(w.get(kNegInf))) << "-inf gradient clipped to -c";
      } else {
        EXPECT_EQ(w.get(kPosInf), -kInf);
        EXPECT_EQ(w.get(kNegInf), kInf);
      }
    }
    for (std::int64_t i = 0; i < n; ++i)
      if (i != kNan && i != kPosInf && i != kNegInf) {
        EXPECT_TRUE(std::isfinite(w.get(i))) << "element " << i << " must not be contaminated";
      }
  }
}

// ---- aggregated operators -----------------------------------------------------------------------------

/// Tensor shapes of one aggregated call: zero-size tensors first, in the middle and last, tiny ones,
/// and one large tensor so that the OpenMP split (32768 elements per thread) cuts inside it.
std::vector<std::vector<std::int64_t>> layout_mixed() {
  return {{0}, {1}, {17}, {3, 0}, {513}, {4097}, {7}, {70001}, {0}};
}
/// Many medium tensors (24 x 4099, three threads): ranges start inside tensors that are not the first.
std::vector<std::vector<std::int64_t>> layout_many() {
  std::vector<std::vector<std::int64_t>> out(25, std::vector<std::int64_t>{4099});
  out[0] = {0};
  out[12] = {2, 0, 3};
  out.push_back({0});
  return out;
}

struct MultiKind {
  bool mom;
  bool master;
  bool dcasgd = false;
};

void call_multi(const MultiKind& k, std::vector<Slot>& slots, const fusedopt::MultiSgdParams& p) {
  std::vector<TensorView> w, g, m, w32, prev;
  for (Slot& s : slots) {
    w.push_back(s.w.view(s.shape));
    g.push_back(s.g.cview(s.shape));
    if (k.mom) m.push_back(s.m.view(s.shape));
    if (k.master) w32.push_back(s.w32.view(s.shape));
    if (k.dcasgd) prev.push_back(s.prev.view(s.shape));
  }
  if (k.dcasgd) {
    fusedopt::MultiDcasgdParams d;
    d.lrs = p.lrs;
    d.wds = p.wds;
    d.momentum = k.mom ? p.momentum : 0.0;
    d.lamda = kLamda;
    d.rescale_grad = p.rescale_grad;
    d.clip_gradient = p.clip_gradient;
    if (k.master) fusedopt::multi_mp_dcasgd_update(w, g, m, prev, w32, d);
    else fusedopt::multi_dcasgd_update(w, g, m, prev, d);
    return;
  }
  if (k.master && k.mom) fusedopt::multi_mp_sgd_mom_update(w, g, m, w32, p);
  else if (k.master) fusedopt::multi_mp_sgd_update(w, g, w32, p);
  else if (k.mom) fusedopt::multi_sgd_mom_update(w, g, m, p);
  else fusedopt::multi_sgd_update(w, g, p);
}

void run_multi(const MultiKind& k) {
  std::vector<std::vector<DType>> dtype_sets;
  // One dtype alone, and every dtype interleaved in one call (grouped by dtype inside the library).
  if (k.master) {
    dtype_sets = {{DType::kFloat16}, {DType::kBFloat16, DType::kFloat16}};
  } else {
    dtype_sets = {{DType::kFloat32},
                  {DType::kFloat32, DType::kFloat16, DType::kFloat64, DType::kBFloat16}};
  }
  const std::vector<Options> options = {{0.9, 0.0, 0.5, 0.5}, {0.9, 0.0, 1.0, std::nullopt}};
  std::uint64_t seed = 1000;
  for (const auto& dtypes : dtype_sets) {
    for (const auto& layout : {layout_mixed(), layout_many()}) {
      for (const Options& o : options) {
        std::ostringstream trace;
        trace << "dtypes";
        for (DType t : dtypes) trace << " " << short_name(t);
        trace << ", " << layout.size() << " tensors, " << describe(o);
        SCOPED_TRACE(trace.str());
        // `agg` is updated by the multi_* operator, `single` by per-tensor calls on the same data.
        std::vector<Slot> agg;
        fusedopt::MultiSgdParams p;
        p.momentum = o.momentum;
        p.rescale_grad = o.rescale_grad;
        p.clip_gradient = o.clip;
        for (std::size_t t = 0; t < layout.size(); ++t) {
          const OpCase c{"multi", k.dcasgd, k.mom, k.master, dtypes[t % dtypes.size()]};
          agg.push_back(make_slot(c, layout[t], seed++));
          p.lrs.push_back(0.05 + 0.01 * static_cast<double>(t));  // per-tensor lr and wd
          p.wds.push_back(0.05 * static_cast<double>(t % 3));
        }
        std::vector<Slot> single = agg;
        for (int step = 0; step < 3; ++step) {
          SCOPED_TRACE("step " + std::to_string(step));
          std::vector<Buf> grads_before;
          for (std::size_t t = 0; t < agg.size(); ++t) {
            fill_grad(agg[t], seed + 7919 * static_cast<std::uint64_t>(step) + t);
            single[t].g = agg[t].g;
            ref_step(agg[t], hyper(o, p.lrs[t], p.wds[t]));
            grads_before.push_back(agg[t].g);
          }
          call_multi(k, agg, p);
          for (std::size_t t = 0; t < single.size(); ++t)
            kernel_step(single[t], o, p.lrs[t], p.wds[t]);
          for (std::size_t t = 0; t < agg.size(); ++t) {
            SCOPED_TRACE("tensor " + std::to_string(t));
            check_slot(agg[t], grads_before[t]);
            if (::testing::Test::HasFatalFailure()) return;
            // docs/SEMANTICS.md §5: results equal the per-tensor path, bitwise.
            ASSERT_TRUE(bitwise_equal("weight (aggregated vs per-tensor)", agg[t].w, single[t].w));
            if (k.mom) {
              ASSERT_TRUE(bitwise_equal("mom (aggregated vs per-tensor)", agg[t].m, single[t].m));
            }
            if (k.master) {
              ASSERT_TRUE(bitwise_equal("weight32 (aggregated vs per-tensor)", agg[t].w32, single[t].w32));
            }
            if (k.dcasgd) {
              ASSERT_TRUE(bitwise_equal("prev (aggregated vs per-tensor)", agg[t].prev, single[t].prev));
            }
          }
        }
      }
    }
  }
}

TEST_P(CpuKernels, MultiSgdUpdate) { run_multi({false, false}); }
TEST_P(CpuKernels, MultiSgdMomUpdate) { run_multi({true, false}); }
TEST_P(CpuKernels, MultiMpSgdUpdate) { run_multi({false, true}); }
TEST_P(CpuKernels, MultiMpSgdMomUpdate) { run_multi({true, true}); }
TEST_P(CpuKernels, MultiDcasgdUpdate) { run_multi({false, false, true}); }
TEST_P(CpuKernels, MultiDcasgdMomUpdate) { run_multi({true, false, true}); }
TEST_P(CpuKernels, MultiMpDcasgdUpdate) { run_multi({false, true, true}); }
TEST_P(CpuKernels, MultiMpDcasgdMomUpdate) { run_multi({true, true, true}); }

TEST_P(CpuKernels, MultiWithOnlyZeroSizeTensorsIsANoOp) {
  Buf w(DType::kFloat32, 0), g(DType::kFloat32, 0);
  fusedopt::MultiSgdParams p;
  p.lrs = {0.1, 0.1};
  p.wds = {0.0, 0.0};
  EXPECT_NO_THROW(fusedopt::multi_sgd_update({w.view({0}), w.view({4, 0})},
                                             {g.view({0}), g.view({4, 0})}, p));
  p.lrs.clear();
  p.wds.clear();
  EXPECT_NO_THROW(fusedopt::multi_sgd_update({}, {}, p));
}

// ---- row-sparse gradients -----------------------------------------------------------------------------

struct SparseShape {
  std::vector<std::int64_t> shape;  ///< dense shape; rows = shape[0]
  int every;                        ///< store about one row in `every` (0: no row stored)
};

void run_row_sparse(DType dt, bool mom, bool lazy, const SparseShape& sh, const Options& o,
                    std::uint64_t seed) {
  const std::int64_t rows = sh.shape[0];
  const std::int64_t row_len = numel(sh.shape) / rows;
  const OpCase c{"row_sparse", false, mom, false, dt};
  Slot s = make_slot(c, sh.shape, seed);
  const bool resync = is16(dt);
  const Check check = dt == DType::kFloat64 ? Check::kF64 : dt == DType::kFloat32 ? Check::kF32
                                                                                   : Check::kStorage16;
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    // A different unsorted subset each step; the first and last rows are always stored when any is.
    std::vector<std::int64_t> idx;
    if (sh.every > 0) {
      for (std::int64_t r = rows - 1; r >= 0; --r)
        if (r == 0 || r == rows - 1 || mix(seed + uz(r) + 31 * uz(step)) % uz(sh.every) == 0)
          idx.push_back(r);
      std::rotate(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(idx.size() / 3), idx.end());
    }
    const auto nidx = static_cast<std::int64_t>(idx.size());
    std::vector<std::int64_t> data_shape = sh.shape;
    data_shape[0] = nidx;
    Buf data(dt, nidx * row_len);
    for (std::int64_t i = 0; i < data.size(); ++i) {
      double v = uniform(seed + 50 + uz(step), uz(i));
      if (i % 7 == 3) v *= 4.0;
      data.set(i, v);
    }
    if (resync) {
      s.rw = values(s.w);
      if (mom) s.rm = values(s.m);
    }
    const Buf w_before = s.w, m_before = s.m, data_before = data;
    ref::row_sparse_step(s.rw, s.rm, rows, row_len, idx, values(data), lazy,
                         hyper(o, 0.1, o.wd));
    fusedopt::RowSparseView g;
    g.data = data.cview(data_shape);
    g.indices = idx.data();
    g.num_indices = nidx;
    g.ndim = static_cast<std::int32_t>(sh.shape.size());
    std::copy(sh.shape.begin(), sh.shape.end(), g.shape.begin());
    auto p = sgd_params(o, 0.1, o.wd);
    p.lazy_update = lazy;
    if (mom)
      fusedopt::sgd_mom_update(s.w.view(sh.shape), g, s.m.view(sh.shape), p);
    else
      fusedopt::sgd_update(s.w.view(sh.shape), g, p);
    ASSERT_TRUE(bitwise_equal("grad.data (never written)", data, data_before));
    ASSERT_TRUE(compare("weight", s.w, s.rw, check));
    if (mom) {
      ASSERT_TRUE(compare("mom", s.m, s.rm, check));
    }
    if (lazy) {  // rows that are not stored are untouched, bit for bit (no decay)
      std::vector<bool> stored(uz(rows), false);
      for (std::int64_t r : idx) stored[uz(r)] = true;
      for (std::int64_t i = 0; i < s.n(); ++i) {
        if (stored[uz(i / row_len)]) continue;
        ASSERT_EQ(std::memcmp(s.w.bytes().data() + uz(i) * fusedopt::dtype_size(dt),
                              w_before.bytes().data() + uz(i) * fusedopt::dtype_size(dt),
                              fusedopt::dtype_size(dt)), 0) << "lazy update wrote weight element " << i;
        if (mom) {
          ASSERT_EQ(s.m.get(i), m_before.get(i)) << "lazy update wrote mom element " << i;
        }
      }
    }
  }
}

TEST_P(CpuKernels, RowSparseLazyAndStandard) {
  const std::vector<SparseShape> shapes = {
      {{1, 1}, 1},     {{5, 3}, 1},      {{37, 17}, 3}, {{10, 4, 5}, 2},
      {{37, 17}, 0},   {{600, 129}, 4},  // 77400 elements: the standard update runs on threads
  };
  const std::vector<Options> options = large_options();
  std::uint64_t seed = 5000;
  for (DType dt : {DType::kFloat64, DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (bool mom : {false, true}) {
      for (bool lazy : {true, false}) {
        for (const SparseShape& sh : shapes) {
          // the large shape with every option on only (run time)
          const std::size_t n_options = numel(sh.shape) > 65536 ? 1 : options.size();
          for (std::size_t oi = 0; oi < n_options; ++oi) {
            const Options& o = options[oi];
            std::ostringstream trace;
            trace << short_name(dt) << (mom ? " sgd_mom_update" : " sgd_update")
                  << (lazy ? " lazy" : " standard") << " shape (";
            for (std::int64_t d : sh.shape) trace << d << ",";
            trace << ") " << describe(o);
            SCOPED_TRACE(trace.str());
            run_row_sparse(dt, mom, lazy, sh, o, seed++);
            if (HasFatalFailure()) return;
          }
        }
      }
    }
  }
}

// ---- 16-bit conversions inside the kernels ------------------------------------------------------------

/// Every finite value of the type, as bit patterns (both signs).
std::vector<std::uint16_t> finite_codes(DType t) {
  const std::uint16_t exp_mask = t == DType::kFloat16 ? 0x7C00 : 0x7F80;
  std::vector<std::uint16_t> out;
  for (std::uint32_t b = 0; b < 0x10000u; ++b)
    if ((b & exp_mask) != exp_mask) out.push_back(static_cast<std::uint16_t>(b));
  return out;
}

TEST_P(CpuKernels, StorageLoadAndStoreKeepEveryFiniteValue) {
  // With lr = 0 the rule returns w unchanged (w - 0 * 0), so a float16/bfloat16 weight holding every
  // finite code goes through the kernel's widening load and rounding store (F16C / AVX-512 where
  // compiled) and must come back bit for bit, -0 and subnormals included.
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(short_name(t));
    const std::vector<std::uint16_t> codes = finite_codes(t);
    const auto n = static_cast<std::int64_t>(codes.size());
    Buf w(t, n), g(t, n);
    for (std::int64_t i = 0; i < n; ++i) {
      w.set_bits16(i, codes[uz(i)]);
      g.set_bits16(i, 0);
    }
    const Buf before = w;
    fusedopt::SgdParams p;
    p.lr = 0.0;
    fusedopt::sgd_update(w.view({n}), g.cview({n}), p);
    EXPECT_TRUE(bitwise_equal("weight", w, before));
  }
}

/// Floats that probe round-to-nearest-even into a 16-bit type: every code, every midpoint between
/// adjacent codes and the floats either side of it, both signs, plus overflow and underflow values.
std::vector<float> rounding_probes(DType t) {
  std::vector<float> out;
  const std::uint16_t max_finite = t == DType::kFloat16 ? 0x7BFF : 0x7F7F;
  auto value = [&](std::uint16_t b) {
    return t == DType::kFloat16 ? fusedopt::to_float(half{b}) : fusedopt::to_float(bfloat16{b});
  };
  for (std::uint16_t b = 0; b <= max_finite; ++b) {
    const double lo = value(b);
    const double hi = b == max_finite ? (t == DType::kFloat16 ? 65536.0 : std::ldexp(1.0, 128))
                                      : double(value(static_cast<std::uint16_t>(b + 1)));
    const auto mid = static_cast<float>((lo + hi) / 2);  // exact: one more bit than the type has
    for (float f : {static_cast<float>(lo), mid, std::nextafter(mid, 0.0f),
                    std::nextafter(mid, std::numeric_limits<float>::max())}) {
      out.push_back(f);
      out.push_back(-f);
    }
  }
  for (float f : {std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min(), 1e5f, 65519.0f, 65520.0f, 1e-8f, 3e-8f}) {
    out.push_back(f);
    out.push_back(-f);
  }
  return out;
}

TEST_P(CpuKernels, MasterCastRoundsToNearestEven) {
  // mp_sgd_update with lr = 0 leaves weight32 as it is and writes weight = cast(weight32): the
  // kernel's vector rounding must equal fusedopt::to_half / to_bfloat16 (checked against independent
  // references below) on every midpoint, subnormal and overflow value. 190k+ elements: threaded too.
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(short_name(t));
    const std::vector<float> probes = rounding_probes(t);
    const auto n = static_cast<std::int64_t>(probes.size());
    Buf w(t, n), g(t, n), w32(DType::kFloat32, n);
    for (std::int64_t i = 0; i < n; ++i) {
      w32.setf(i, probes[uz(i)]);
      g.set_bits16(i, 0);
      w.set_bits16(i, 0x1234);
    }
    const Buf w32_before = w32;
    fusedopt::SgdParams p;
    p.lr = 0.0;
    fusedopt::mp_sgd_update(w.view({n}), g.cview({n}), w32.view({n}), p);
    EXPECT_TRUE(bitwise_equal("weight32", w32, w32_before));
    EXPECT_TRUE(weight_is_cast_of_master(w, w32));
  }
}

TEST_P(CpuKernels, MasterCastOfNaNAndInfinityAnywhereInABlock) {
  // NaNs (quiet and signalling payloads, both signs) and infinities placed at every position of
  // vector-sized groups among finite values: the vector store paths that treat NaN-free groups
  // specially must still give to_half / to_bfloat16 of the master for every element.
  const std::uint32_t specials[] = {0x7FC00000u, 0xFFC00000u, 0x7F800001u, 0xFF800001u,
                                    0x7FBFFFFFu, 0x7FFFFFFFu, 0x7F80FFFFu, 0x7F800000u, 0xFF800000u};
  for (DType t : {DType::kFloat16, DType::kBFloat16}) {
    SCOPED_TRACE(short_name(t));
    const std::int64_t n = 64 * 40 + 13;
    Buf w(t, n), g(t, n), w32(DType::kFloat32, n);
    std::uint64_t k = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      w32.setf(i, static_cast<float>(uniform(77, static_cast<std::uint64_t>(i))));
      g.set_bits16(i, 0);
      w.set_bits16(i, 0x1234);
    }
    // group j (64 elements) gets a special value at position j % 64; some groups get two
    for (std::int64_t grp = 0; grp * 64 < n; ++grp) {
      const std::int64_t i = grp * 64 + grp % 64;
      if (i >= n) break;
      const std::uint32_t bits = specials[k++ % std::size(specials)];
      float f;
      std::memcpy(&f, &bits, sizeof f);
      w32.setf(i, f);
      if (grp % 3 == 0 && i + 17 < n) w32.setf(i + 17, f);
    }
    fusedopt::SgdParams p;
    p.lr = 0.0;
    fusedopt::mp_sgd_update(w.view({n}), g.cview({n}), w32.view({n}), p);
    EXPECT_TRUE(weight_is_cast_of_master(w, w32));
  }
}

TEST(CpuCapability, SupportedListStartsWithBaselineAndCanBeForced) {
  const auto caps = fusedopt::supported_cpu_capabilities();
  ASSERT_FALSE(caps.empty());
  EXPECT_EQ(caps.front(), "baseline");
  const std::string saved = fusedopt::cpu_capability();
  EXPECT_NE(std::find(caps.begin(), caps.end(), saved), caps.end());
  for (const std::string& cap : caps) {
    fusedopt::set_cpu_capability(cap);
    EXPECT_EQ(fusedopt::cpu_capability(), cap);
  }
  fusedopt::set_cpu_capability(saved);
  EXPECT_EQ(fusedopt::cpu_capability(), saved);
  EXPECT_GE(fusedopt::cpu_num_threads(), 1);
#if defined(_OPENMP)
  if (std::getenv("OMP_NUM_THREADS") == nullptr) {
    EXPECT_EQ(fusedopt::cpu_num_threads(), 4) << "set by ThreadsEnvironment";
  }
#endif
}

// ---- scalar conversions: fusedopt::to_half / to_bfloat16 / to_float -----------------------------------

/// IEEE decode written from the format definition (not bit shifting into a float).
double decode(DType t, std::uint16_t b) {
  const int man_bits = t == DType::kFloat16 ? 10 : 7;
  const int exp_bits = t == DType::kFloat16 ? 5 : 8;
  const int bias = (1 << (exp_bits - 1)) - 1;
  const int e = (b >> man_bits) & ((1 << exp_bits) - 1);
  const int man = b & ((1 << man_bits) - 1);
  const double sign = (b & 0x8000) ? -1.0 : 1.0;
  if (e == (1 << exp_bits) - 1) return man ? std::numeric_limits<double>::quiet_NaN() : sign * kInf;
  if (e == 0) return sign * std::ldexp(double(man), 1 - bias - man_bits);
  return sign * std::ldexp(double((1 << man_bits) + man), e - bias - man_bits);
}

/// Round to nearest, ties to even, by search over the sorted table of all non-negative finite values
/// (plus the first value past the largest finite, 2^(emax+1), standing for infinity: IEEE overflow
/// rounding is exactly "nearest, ties to even" against that value).
class NearestRounder {
 public:
  explicit NearestRounder(DType t) : t_(t) {
    const std::uint16_t max_finite = t == DType::kFloat16 ? 0x7BFF : 0x7F7F;
    for (std::uint32_t b = 0; b <= max_finite; ++b) {
      values_.push_back(decode(t, static_cast<std::uint16_t>(b)));
      codes_.push_back(static_cast<std::uint16_t>(b));
    }
    values_.push_back(t == DType::kFloat16 ? 65536.0 : std::ldexp(1.0, 128));
    codes_.push_back(static_cast<std::uint16_t>(max_finite + 1));  // the infinity code, even
  }
  /// Code of the nearest value; NaN -> nullopt.
  std::optional<std::uint16_t> operator()(float f) const {
    if (std::isnan(f)) return std::nullopt;
    const auto sign = static_cast<std::uint16_t>(std::signbit(f) ? 0x8000 : 0);
    const double a = std::fabs(double(f));
    const auto it = std::lower_bound(values_.begin(), values_.end(), a);
    if (it == values_.end()) return static_cast<std::uint16_t>(sign | codes_.back());
    const auto hi = static_cast<std::size_t>(it - values_.begin());
    if (*it == a || hi == 0) return static_cast<std::uint16_t>(sign | codes_[hi]);
    const std::size_t lo = hi - 1;
    const double dl = a - values_[lo], dh = values_[hi] - a;  // exact in double
    std::size_t pick = dl < dh ? lo : dh < dl ? hi : ((codes_[lo] & 1) == 0 ? lo : hi);
    return static_cast<std::uint16_t>(sign | codes_[pick]);
  }
  DType dtype() const { return t_; }

 private:
  DType t_;
  std::vector<double> values_;
  std::vector<std::uint16_t> codes_;
};

bool is_nan16(DType t, std::uint16_t b) {
  const std::uint16_t exp_mask = t == DType::kFloat16 ? 0x7C00 : 0x7F80;
  return (b & exp_mask) == exp_mask && (b & ~exp_mask & 0x7FFF) != 0;
}

float float_from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// Compares cast16 (fusedopt's conversion) with `rounder` on `inputs`; NaN must map to a NaN of the
/// same sign.
::testing::AssertionResult rounding_agrees(const NearestRounder& rounder, const std::vector<float>& inputs) {
  const DType t = rounder.dtype();
  std::int64_t bad = 0;
  std::ostringstream os;
  for (float f : inputs) {
    const std::uint16_t got = cast16(t, f);
    const auto want = rounder(f);
    const bool ok = want ? got == *want
                         : is_nan16(t, got) && ((got & 0x8000) != 0) == std::signbit(f);
    if (ok) continue;
    if (bad < 5) {
      std::uint32_t u;
      std::memcpy(&u, &f, 4);
      os << "\n  float " << f << " (0x" << std::hex << u << ") -> 0x" << got << ", expected 0x"
         << (want ? *want : 0xFFFF) << std::dec;
    }
    ++bad;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << inputs.size() << " conversions differ:" << os.str();
}

std::vector<float> special_floats() {
  std::vector<float> out;
  for (std::uint32_t u : {0x00000000u, 0x00000001u, 0x007FFFFFu, 0x00800000u,  // zero, float subnormals
                          0x33000000u, 0x33000001u, 0x337FFFFFu,  // 2^-25 (half tie to 0) and above
                          0x33C00000u, 0x34200000u,               // 1.5 and 2.5 x 2^-24: ties
                          0x387FC000u, 0x387FE000u, 0x38800000u,  // around the smallest normal half
                          0x477FE000u, 0x477FEFFFu, 0x477FF000u, 0x477FF001u,  // 65504 .. 65520
                          0x47800000u, 0x7F7F7FFFu, 0x7F7F8000u, 0x7F7FFFFFu,  // 65536, bf16 top
                          0x7F800000u,                                          // inf
                          0x7F800001u, 0x7F802000u, 0x7FA00000u, 0x7FC00000u,   // sNaN / qNaN
                          0x7FFFFFFFu, 0x3F808000u, 0x3F818000u, 0x3F800001u}) {
    out.push_back(float_from_bits(u));
    out.push_back(float_from_bits(u | 0x80000000u));
  }
  return out;
}

/// 2^20 random bit patterns: every exponent, NaN payloads included.
std::vector<float> random_floats() {
  std::vector<float> out;
  for (std::uint64_t i = 0; i < (1u << 20); ++i)
    out.push_back(float_from_bits(static_cast<std::uint32_t>(mix(i + 77) >> 32)));
  return out;
}

TEST(Float16Conversion, ToFloatMatchesDecodeForAllCodes) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto code = static_cast<std::uint16_t>(b);
    const double want = decode(DType::kFloat16, code);
    const float got = fusedopt::to_float(half{code});
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << b;
      ASSERT_EQ(std::signbit(got), (b & 0x8000) != 0) << std::hex << b;
    } else {
      ASSERT_EQ(double(got), want) << std::hex << b;
      ASSERT_EQ(std::signbit(got), std::signbit(want)) << std::hex << b;
    }
  }
}

TEST(Float16Conversion, RoundTripsEveryValue) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto code = static_cast<std::uint16_t>(b);
    const std::uint16_t back = fusedopt::to_half(fusedopt::to_float(half{code})).bits;
    if (is_nan16(DType::kFloat16, code)) {
      ASSERT_TRUE(is_nan16(DType::kFloat16, back)) << std::hex << b << " -> " << back;
      ASSERT_EQ(back & 0x8000, code & 0x8000);
    } else {
      ASSERT_EQ(back, code) << std::hex << b;
    }
  }
}

TEST(Float16Conversion, RoundsToNearestEven) {
  const NearestRounder rounder(DType::kFloat16);
  EXPECT_TRUE(rounding_agrees(rounder, rounding_probes(DType::kFloat16)));
  EXPECT_TRUE(rounding_agrees(rounder, special_floats()));
  EXPECT_TRUE(rounding_agrees(rounder, random_floats()));
}

TEST(Float16Conversion, EdgeValues) {
  auto h = [](float f) { return fusedopt::to_half(f).bits; };
  EXPECT_EQ(h(65504.0f), 0x7BFF);
  EXPECT_EQ(h(65519.99f), 0x7BFF);
  EXPECT_EQ(h(65520.0f), 0x7C00) << "the tie above the largest half rounds to inf";
  EXPECT_EQ(h(-1e10f), 0xFC00);
  EXPECT_EQ(h(std::numeric_limits<float>::max()), 0x7C00);
  EXPECT_EQ(h(float_from_bits(0x7F800000u)), 0x7C00);
  EXPECT_EQ(h(std::ldexp(1.0f, -24)), 0x0001) << "smallest subnormal";
  EXPECT_EQ(h(std::ldexp(1.0f, -25)), 0x0000) << "tie between 0 and 2^-24 rounds to even (0)";
  EXPECT_EQ(h(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(h(1.5f * std::ldexp(1.0f, -24)), 0x0002) << "tie between codes 1 and 2 -> 2";
  EXPECT_EQ(h(2.5f * std::ldexp(1.0f, -24)), 0x0002) << "tie between codes 2 and 3 -> 2";
  EXPECT_EQ(h(-std::numeric_limits<float>::denorm_min()), 0x8000) << "underflow keeps the sign";
  EXPECT_EQ(h(std::ldexp(1023.5f, -24)), 0x0400) << "largest subnormal rounds up into the normals";
  EXPECT_EQ(h(1.0f + std::ldexp(1.0f, -11)), 0x3C00) << "tie at 1 + 2^-11 -> even (1.0)";
  EXPECT_EQ(h(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3C02) << "tie at 1 + 3*2^-11 -> even";
  for (std::uint32_t nan : {0x7F800001u, 0x7FC00000u, 0xFF800001u, 0x7FBFFFFFu}) {
    const std::uint16_t r = h(float_from_bits(nan));
    EXPECT_TRUE(is_nan16(DType::kFloat16, r)) << std::hex << nan << " -> " << r;
    EXPECT_EQ((r & 0x8000) != 0, (nan & 0x80000000u) != 0);
  }
}

#if defined(__FLT16_MANT_DIG__)
TEST(Float16Conversion, MatchesCompilerFloat16) {
  // GCC/Clang _Float16: libgcc's soft-float conversion (or AVX512-FP16), an independent implementation.
  auto ref_bits = [](float f) {
    const auto h = static_cast<_Float16>(f);
    std::uint16_t b;
    std::memcpy(&b, &h, 2);
    return b;
  };
  std::vector<float> inputs = rounding_probes(DType::kFloat16);
  for (float f : special_floats()) inputs.push_back(f);
  for (float f : random_floats()) inputs.push_back(f);
  std::int64_t bad = 0;
  for (float f : inputs) {
    const std::uint16_t got = fusedopt::to_half(f).bits, want = ref_bits(f);
    const bool ok = std::isnan(f) ? is_nan16(DType::kFloat16, got) : got == want;
    if (!ok && bad++ < 5) ADD_FAILURE() << f << " -> 0x" << std::hex << got << ", _Float16 0x" << want;
  }
  EXPECT_EQ(bad, 0);
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    _Float16 h;
    const auto code = static_cast<std::uint16_t>(b);
    std::memcpy(&h, &code, 2);
    const float want = static_cast<float>(h), got = fusedopt::to_float(half{code});
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got));
    } else {
      ASSERT_EQ(std::memcmp(&want, &got, 4), 0) << std::hex << b;
    }
  }
}
#endif

TEST(BFloat16Conversion, ToFloatMatchesDecodeForAllCodes) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto code = static_cast<std::uint16_t>(b);
    const double want = decode(DType::kBFloat16, code);
    const float got = fusedopt::to_float(bfloat16{code});
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(got)) << std::hex << b;
    } else {
      ASSERT_EQ(double(got), want) << std::hex << b;
    }
    ASSERT_EQ(std::signbit(got), (b & 0x8000) != 0) << std::hex << b;
  }
}

TEST(BFloat16Conversion, RoundTripsEveryValue) {
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto code = static_cast<std::uint16_t>(b);
    const std::uint16_t back = fusedopt::to_bfloat16(fusedopt::to_float(bfloat16{code})).bits;
    if (is_nan16(DType::kBFloat16, code)) {
      ASSERT_TRUE(is_nan16(DType::kBFloat16, back)) << std::hex << b << " -> " << back;
      ASSERT_EQ(back & 0x8000, code & 0x8000);
    } else {
      ASSERT_EQ(back, code) << std::hex << b;
    }
  }
}

TEST(BFloat16Conversion, RoundsToNearestEven) {
  const NearestRounder rounder(DType::kBFloat16);
  EXPECT_TRUE(rounding_agrees(rounder, rounding_probes(DType::kBFloat16)));
  EXPECT_TRUE(rounding_agrees(rounder, special_floats()));
  EXPECT_TRUE(rounding_agrees(rounder, random_floats()));
}

TEST(BFloat16Conversion, EdgeValues) {
  auto b = [](std::uint32_t u) { return fusedopt::to_bfloat16(float_from_bits(u)).bits; };
  EXPECT_EQ(b(0x3F808000u), 0x3F80) << "tie -> even";
  EXPECT_EQ(b(0x3F818000u), 0x3F82) << "tie -> even (up)";
  EXPECT_EQ(b(0x3F808001u), 0x3F81);
  EXPECT_EQ(b(0x7F7F7FFFu), 0x7F7F) << "just below the overflow tie";
  EXPECT_EQ(b(0x7F7F8000u), 0x7F80) << "overflow tie rounds to inf";
  EXPECT_EQ(b(0x7F7FFFFFu), 0x7F80) << "FLT_MAX rounds to inf";
  EXPECT_EQ(b(0xFF7FFFFFu), 0xFF80);
  EXPECT_EQ(b(0x00000001u), 0x0000) << "float subnormal below half a bf16 ulp";
  EXPECT_EQ(b(0x00008000u), 0x0000) << "tie -> even (0)";
  EXPECT_EQ(b(0x00018000u), 0x0002) << "tie -> even (2)";
  EXPECT_EQ(b(0x007FFFFFu), 0x0080) << "largest float subnormal rounds to the smallest normal";
  for (std::uint32_t nan : {0x7F800001u, 0x7F80FFFFu, 0xFF800001u, 0x7FC00000u, 0x7FFFFFFFu}) {
    const std::uint16_t r = b(nan);
    EXPECT_TRUE(is_nan16(DType::kBFloat16, r)) << std::hex << nan << " -> " << r
                                              << " (a NaN whose payload is in the low bits must not become inf)";
    EXPECT_EQ((r & 0x8000) != 0, (nan & 0x80000000u) != 0);
  }
}

}  // namespace
