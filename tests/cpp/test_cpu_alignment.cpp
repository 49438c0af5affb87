// test_cpu_alignment.cpp — the CPU kernels give the reference results wherever the operands start
// relative to a 64-byte cache line, once per CPU capability this machine supports. The kernels run the
// elements before the weight's first line boundary on their own (cpu/README.md), so every weight offset
// within a line is tried, with the other operands at different offsets, for sizes shorter than, equal
// to and longer than that head, and past the two-stream split of plain SGD (32768 elements) and one
// OpenMP range. Guard elements around every operand must stay untouched, and the gradient unchanged.
//
// Tolerances (free-running over 3 steps against the double reference, reference.h):
//   float32 (and the float32 master / momentum of mp_sgd_mom)   |got - ref| <= 1e-6 + 1e-5 |ref|
//   float64                                                     |got - ref| <= 1e-12 + 1e-12 |ref|
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fusedopt/fusedopt.h"
#include "reference.h"

namespace {

using fusedopt::DType;
using fusedopt::TensorView;
namespace ref = fusedopt_test::ref;

std::size_t uz(std::int64_t i) { return static_cast<std::size_t>(i); }

/// Deterministic uniform in [-1, 1) (splitmix64 of seed and index).
double uniform(std::uint64_t seed, std::uint64_t i) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1p-52 - 1.0;
}

constexpr std::int64_t kLine = 64;
constexpr std::int64_t kGuard = 32;  // guard elements on each side of an operand

/// n elements of T starting `offset` elements past a 64-byte boundary, with guard elements around.
template <class T>
class Operand {
 public:
  Operand(std::int64_t n, std::int64_t offset) : n_(n) {
    raw_.assign(uz((n + 2 * kGuard) * static_cast<std::int64_t>(sizeof(T)) + 2 * kLine), 0);
    const auto a = reinterpret_cast<std::uintptr_t>(raw_.data());
    const std::size_t to_line = (kLine - a % kLine) % kLine;
    // the view starts offset elements past a line, kGuard elements (a whole number of lines) in
    begin_ = reinterpret_cast<T*>(raw_.data() + to_line) + kGuard + offset;
    for (std::int64_t i = -kGuard; i < n + kGuard; ++i) set(i, kSentinel);
  }
  static constexpr double kSentinel = 12345.0;
  T* data() { return begin_; }
  std::int64_t size() const { return n_; }
  double get(std::int64_t i) const {
    T v;
    std::memcpy(&v, begin_ + i, sizeof(T));
    return static_cast<double>(v);
  }
  void set(std::int64_t i, double v) {
    const T t = static_cast<T>(v);
    std::memcpy(begin_ + i, &t, sizeof(T));
  }
  bool guards_intact() const {
    for (std::int64_t i = 1; i <= kGuard; ++i)
      if (get(-i) != kSentinel || get(n_ - 1 + i) != kSentinel) return false;
    return true;
  }

 private:
  std::vector<unsigned char> raw_;
  T* begin_ = nullptr;
  std::int64_t n_ = 0;
};

template <class T>
DType dtype_of() {
  return sizeof(T) == 4 ? DType::kFloat32 : DType::kFloat64;
}

::testing::AssertionResult close(const char* what, double got, double want, double atol, double rtol,
                                 std::int64_t i) {
  if (std::fabs(got - want) <= atol + rtol * std::fabs(want)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << "[" << i << "] = " << got << ", reference " << want;
}

/// One rule on one set of offsets and one size, 3 steps, against the reference.
template <class T>
void run_case(bool mom, bool dca, std::int64_t n, std::int64_t ow, std::int64_t og, std::int64_t om,
              std::int64_t op, bool clip) {
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12, atol = sizeof(T) == 4 ? 1e-6 : 1e-12;
  Operand<T> w(n, ow), g(n, og), m(n, om), prev(n, op);
  std::vector<double> rw(uz(n)), rg(uz(n)), rm, rprev;
  if (mom) rm.resize(uz(n));
  if (dca) rprev.resize(uz(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto u = static_cast<std::uint64_t>(i);
    w.set(i, uniform(1, u));
    rw[uz(i)] = w.get(i);
    if (mom) {
      m.set(i, 0.5 * uniform(2, u));
      rm[uz(i)] = m.get(i);
    }
    if (dca) {
      prev.set(i, rw[uz(i)] + 0.1 * uniform(3, u));
      rprev[uz(i)] = prev.get(i);
    }
  }
  const std::vector<std::int64_t> shape{n};
  const DType dt = dtype_of<T>();
  TensorView wv(w.data(), dt, shape), gv(g.data(), dt, shape), mv(m.data(), dt, shape),
      pv(prev.data(), dt, shape);
  gv.read_only = true;
  for (int step = 0; step < 3; ++step) {
    for (std::int64_t i = 0; i < n; ++i) {
      double v = uniform(10 + static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(i));
      if (i % 7 == 3) v *= 4.0;
      g.set(i, v);
      rg[uz(i)] = g.get(i);
    }
    ref::Hyper h;
    h.lr = 0.1 * (1.0 - 0.1 * step);
    h.wd = clip ? 0.01 : 0.0;
    h.momentum = mom ? 0.9 : 0.0;
    h.rescale_grad = clip ? 0.5 : 1.0;
    if (clip) h.clip = 0.5;
    h.lamda = dca ? 0.5 : 0.0;
    ref::dense_step(rw, rm, rprev, rg, dca, h);
    if (dca) {
      fusedopt::DcasgdParams p;
      p.lr = h.lr;
      p.wd = h.wd;
      p.momentum = h.momentum;
      p.lamda = h.lamda;
      p.rescale_grad = h.rescale_grad;
      if (clip) p.clip_gradient = h.clip;
      fusedopt::dcasgd_update(wv, gv, mom ? &mv : nullptr, pv, p);
    } else {
      fusedopt::SgdParams p;
      p.lr = h.lr;
      p.wd = h.wd;
      p.momentum = h.momentum;
      p.rescale_grad = h.rescale_grad;
      if (clip) p.clip_gradient = h.clip;
      if (mom) fusedopt::sgd_mom_update(wv, gv, mv, p);
      else fusedopt::sgd_update(wv, gv, p);
    }
    for (std::int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(close("weight", w.get(i), rw[uz(i)], atol, tol, i)) << "step " << step;
      if (mom) {
        ASSERT_TRUE(close("mom", m.get(i), rm[uz(i)], atol, tol, i)) << "step " << step;
      }
      if (dca) {
        ASSERT_TRUE(close("prev", prev.get(i), rprev[uz(i)], atol, tol, i)) << "step " << step;
      }
      ASSERT_EQ(g.get(i), rg[uz(i)]) << "grad[" << i << "] written";
    }
    ASSERT_TRUE(w.guards_intact()) << "weight guard written";
    ASSERT_TRUE(g.guards_intact()) << "grad guard written";
    ASSERT_TRUE(m.guards_intact()) << "mom guard written";
    ASSERT_TRUE(prev.guards_intact()) << "prev guard written";
  }
}

class CapabilityAlignment : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    saved_ = fusedopt::cpu_capability();
    fusedopt::set_cpu_capability(GetParam());
  }
  void TearDown() override { fusedopt::set_cpu_capability(saved_); }
  std::string saved_;
};

INSTANTIATE_TEST_SUITE_P(Capability, CapabilityAlignment,
                         ::testing::ValuesIn(fusedopt::supported_cpu_capabilities()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

template <class T>
void run_all_offsets() {
  constexpr std::int64_t per_line = kLine / static_cast<std::int64_t>(sizeof(T));
  const std::int64_t sizes[] = {1, 3, 8, 15, 16, 17, 40, 100, 1001};
  for (int rule = 0; rule < 4; ++rule) {  // sgd, sgd_mom, dcasgd, dcasgd_mom
    const bool mom = (rule & 1) != 0, dca = (rule & 2) != 0;
    const std::string name = std::string(dca ? "dcasgd" : "sgd") + (mom ? "_mom" : "");
    for (std::int64_t ow = 0; ow < per_line; ++ow) {
      // the other operands sit elsewhere in their lines (NumPy gives them all the same offset; a
      // view into a larger array need not)
      const std::int64_t og = (ow * 5 + 3) % per_line, om = (ow + 1) % per_line, op = per_line - 1 - ow;
      for (std::int64_t n : sizes) {
        for (bool clip : {false, true}) {
          SCOPED_TRACE(name + " n " + std::to_string(n) + " offsets w " +
                       std::to_string(ow) + " g " + std::to_string(og) + " m " + std::to_string(om) +
                       (clip ? " clip+wd" : ""));
          run_case<T>(mom, dca, n, ow, og, om, op, clip);
          if (::testing::Test::HasFatalFailure()) return;
        }
      }
      if (ow != 0 && ow != 1 && ow != per_line / 2 + 1 && ow != per_line - 1) continue;
      for (std::int64_t same : {ow, std::int64_t{0}}) {  // all at one offset, as NumPy places them
        SCOPED_TRACE(name + " n 70001 all at offset " + std::to_string(same));
        run_case<T>(mom, dca, 70001, same, same, same, same, ow % 2 == 1);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
  }
}

TEST_P(CapabilityAlignment, Float32EveryOffsetInALine) { run_all_offsets<float>(); }
TEST_P(CapabilityAlignment, Float64EveryOffsetInALine) { run_all_offsets<double>(); }

}  // namespace
