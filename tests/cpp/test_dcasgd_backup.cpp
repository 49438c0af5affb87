// test_dcasgd_backup.cpp — the C++ API of docs/SEMANTICS.md §13 (DC-ASGD with per-worker backups and the adaptive
// lambda of DC-ASGD-a) against the double reference (reference.h), once per CPU capability:
//  - dcasgd_backup_update / mp_dcasgd_backup_update, constant and adaptive, momentum on and off, clip
//    on and off, over sizes around the SIMD widths, the 512-element block and the OpenMP split;
//  - dcasgd_update / mp_dcasgd_update with a mean square (MXNet's form, adaptive);
//  - the aggregated forms are bitwise equal to per-tensor calls;
//  - backup == weight is SGD, bitwise;
//  - errors: typed, naming the argument, nothing written; read-only backups and grads accepted.
// Tolerances: float64 |got - ref| <= 1e-11 (1 + |ref|); float32 and the float32 master / state of the
// mp_ paths <= 2e-5 (1 + |ref|) (free-running over the steps; the adaptive lambda amplifies rounding).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "fusedopt/fusedopt.h"
#include "reference.h"
#include "test_support.h"

namespace {

using fusedopt::DType;
using fusedopt::TensorView;
namespace ref = fusedopt_test::ref;

constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t uz(std::int64_t i) { return static_cast<std::size_t>(i); }
bool is16(DType t) { return t == DType::kFloat16 || t == DType::kBFloat16; }

/// Uniform in [-1, 1), a function of (seed, i).
double uniform(std::uint64_t seed, std::int64_t i) {
  return fusedopt_test::uniform(seed, static_cast<std::uint64_t>(i));
}

/// A 1-D array of any storage dtype, read and written as double (16-bit via float, nearest even).
class Arr {
 public:
  Arr() = default;
  Arr(DType t, std::int64_t n) : t_(t), n_(n), bytes_(uz(n) * fusedopt::dtype_size(t) + 1) {}
  DType dtype() const { return t_; }
  std::int64_t size() const { return n_; }
  double get(std::int64_t i) const {
    const unsigned char* p = bytes_.data() + uz(i) * fusedopt::dtype_size(t_);
    if (t_ == DType::kFloat16 || t_ == DType::kBFloat16) {
      std::uint16_t b;
      std::memcpy(&b, p, 2);
      return t_ == DType::kFloat16 ? fusedopt::to_float(fusedopt::half{b})
                                   : fusedopt::to_float(fusedopt::bfloat16{b});
    }
    if (t_ == DType::kFloat32) {
      float f;
      std::memcpy(&f, p, 4);
      return f;
    }
    double d;
    std::memcpy(&d, p, 8);
    return d;
  }
  void set(std::int64_t i, double v) {
    unsigned char* p = bytes_.data() + uz(i) * fusedopt::dtype_size(t_);
    if (is16(t_)) {
      const auto f = static_cast<float>(v);
      const std::uint16_t b =
          t_ == DType::kFloat16 ? fusedopt::to_half(f).bits : fusedopt::to_bfloat16(f).bits;
      std::memcpy(p, &b, 2);
    } else if (t_ == DType::kFloat32) {
      const auto f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
    } else {
      std::memcpy(p, &v, 8);
    }
  }
  TensorView view() { return TensorView(n_ > 0 ? bytes_.data() : nullptr, t_, {n_}); }
  TensorView cview() {
    TensorView v = view();
    v.read_only = true;
    return v;
  }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

 private:
  DType t_ = DType::kFloat32;
  std::int64_t n_ = 0;
  std::vector<unsigned char> bytes_;
};

// ---- capability fixture -----------------------------------------------------------------------------

class Backup : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { guard_.emplace(GetParam()); }
  void TearDown() override { guard_.reset(); }
  std::optional<fusedopt_test::CapabilityGuard> guard_;
};

INSTANTIATE_TEST_SUITE_P(Capability, Backup,
                         ::testing::ValuesIn(fusedopt::supported_cpu_capabilities()),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// ---- one tensor and its state ------------------------------------------------------------------------

struct Opts {
  bool adaptive, mom, clip;
};

ref::Hyper hyper(const Opts& o) {
  ref::Hyper h;
  h.lr = 0.05;
  h.wd = 0.01;
  h.momentum = o.mom ? 0.9 : 0.0;
  h.rescale_grad = 0.5;
  h.clip = o.clip ? 0.25 : kInf;
  h.lamda = 2.0;
  h.ms_decay = 0.9;
  h.eps = 1e-6;
  return h;
}

fusedopt::DcasgdParams params(const ref::Hyper& h) {
  fusedopt::DcasgdParams p;
  p.lr = h.lr;
  p.wd = h.wd;
  p.momentum = h.momentum;
  p.lamda = h.lamda;
  p.rescale_grad = h.rescale_grad;
  if (h.clip != kInf) p.clip_gradient = h.clip;
  p.ms_decay = h.ms_decay;
  p.eps = h.eps;
  return p;
}

/// Weight (dtype), grad, anchor (backup or prev), momentum, mean square and master: the states are
/// float32 with a master (16-bit weights), else of the weight's dtype.
struct Slot {
  DType dt;
  bool master;
  Arr w, g, anchor, m, ms, w32;
  std::vector<double> rw, rm, rms, ranchor;  // the reference's values (the master's with one)

  Slot(DType t, std::int64_t n, std::uint64_t seed)
      : dt(t), master(is16(t)), w(t, n), g(t, n) {
    const DType st = master ? DType::kFloat32 : t;
    anchor = Arr(st, n);
    m = Arr(st, n);
    ms = Arr(st, n);
    if (master) w32 = Arr(DType::kFloat32, n);
    for (std::int64_t i = 0; i < n; ++i) {
      w.set(i, uniform(seed, i));
      if (master) w32.set(i, w.get(i));
      m.set(i, 0.1 * uniform(seed + 1, i));
      ms.set(i, 0.1 * std::fabs(uniform(seed + 2, i)));
      anchor.set(i, (master ? w32 : w).get(i));
    }
    rw.resize(uz(n));
    rm.resize(uz(n));
    rms.resize(uz(n));
    ranchor.resize(uz(n));
    for (std::int64_t i = 0; i < n; ++i) {
      rw[uz(i)] = (master ? w32 : w).get(i);
      rm[uz(i)] = m.get(i);
      rms[uz(i)] = ms.get(i);
      ranchor[uz(i)] = anchor.get(i);
    }
  }
  /// A new gradient and, for the backup form, a new backup (a weight some pushes ago).
  void next(std::uint64_t seed, bool new_backup) {
    for (std::int64_t i = 0; i < w.size(); ++i) {
      g.set(i, uniform(seed, i));
      if (new_backup) {
        anchor.set(i, rw[uz(i)] + 0.1 * uniform(seed + 7, i));
        ranchor[uz(i)] = anchor.get(i);
      }
    }
  }
};

void check_close(double got, double want, DType storage, const std::string& what) {
  const double tol = storage == DType::kFloat64 ? 1e-11 : 2e-5;
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what;
    return;
  }
  EXPECT_LE(std::fabs(got - want), tol * (1.0 + std::fabs(want))) << what << ": got " << got
                                                                   << ", want " << want;
}

void check_slot(Slot& s, const Opts& o, const std::string& label) {
  const DType st = s.master ? DType::kFloat32 : s.dt;
  for (std::int64_t i = 0; i < s.w.size(); ++i) {
    const std::string at = label + " [" + std::to_string(i) + "]";
    check_close((s.master ? s.w32 : s.w).get(i), s.rw[uz(i)], st, "weight" + at);
    if (o.mom) check_close(s.m.get(i), s.rm[uz(i)], st, "mom" + at);
    if (o.adaptive) check_close(s.ms.get(i), s.rms[uz(i)], st, "mean_square" + at);
    if (s.master) {  // the 16-bit weight is exactly cast(weight32)
      Arr c(s.dt, 1);
      c.set(0, s.w32.get(i));
      ASSERT_EQ(s.w.get(i), c.get(0)) << "weight == cast(weight32)" << at;
    }
    if (::testing::Test::HasFailure()) return;
  }
}

const std::vector<std::int64_t> kSizes = {1, 7, 8, 17, 513, 4099, 70001};
const std::vector<DType> kDtypes = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                    DType::kBFloat16};

std::vector<Opts> all_opts() {
  std::vector<Opts> out;
  for (bool a : {false, true})
    for (bool m : {false, true})
      for (bool c : {false, true}) out.push_back({a, m, c});
  return out;
}

std::string label(DType dt, std::int64_t n, const Opts& o) {
  return std::string(fusedopt::dtype_name(dt)) + " n=" + std::to_string(n) +
         (o.adaptive ? " adaptive" : " constant") + (o.mom ? " mom" : "") + (o.clip ? " clip" : "");
}

TEST_P(Backup, BackupFormMatchesReference) {
  for (DType dt : kDtypes)
    for (std::int64_t n : kSizes)
      for (const Opts& o : all_opts()) {
        const ref::Hyper h = hyper(o);
        const fusedopt::DcasgdParams p = params(h);
        Slot s(dt, n, 11 + static_cast<std::uint64_t>(n));
        for (int step = 0; step < 3; ++step) {
          s.next(100 + static_cast<std::uint64_t>(step), true);
          const std::vector<unsigned char> g0 = s.g.bytes(), b0 = s.anchor.bytes();
          TensorView mv = s.m.view(), msv = s.ms.view();
          const TensorView* mom = o.mom ? &mv : nullptr;
          const TensorView* ms = o.adaptive ? &msv : nullptr;
          if (s.master)
            fusedopt::mp_dcasgd_backup_update(s.w.view(), s.g.cview(), s.anchor.cview(),
                                              s.w32.view(), mom, ms, p);
          else
            fusedopt::dcasgd_backup_update(s.w.view(), s.g.cview(), s.anchor.cview(), mom, ms, p);
          ASSERT_EQ(s.g.bytes(), g0) << "grad modified";
          ASSERT_EQ(s.anchor.bytes(), b0) << "backup modified";
          for (std::int64_t i = 0; i < n; ++i)
            ref::dcasgd_backup(s.rw[uz(i)], o.mom ? &s.rm[uz(i)] : nullptr, s.ranchor[uz(i)],
                               o.adaptive ? &s.rms[uz(i)] : nullptr, s.g.get(i), h);
        }
        check_slot(s, o, label(dt, n, o));
        if (HasFailure()) return;
      }
}

TEST_P(Backup, AdaptiveMxnetFormMatchesReference) {
  for (DType dt : kDtypes)
    for (std::int64_t n : {std::int64_t{9}, std::int64_t{4099}})
      for (bool mom : {false, true}) {
        const Opts o{true, mom, true};
        const ref::Hyper h = hyper(o);
        const fusedopt::DcasgdParams p = params(h);
        Slot s(dt, n, 5);
        for (int step = 0; step < 3; ++step) {
          s.next(200 + static_cast<std::uint64_t>(step), false);
          TensorView mv = s.m.view(), msv = s.ms.view();
          if (s.master)
            fusedopt::mp_dcasgd_update(s.w.view(), s.g.view(), mom ? &mv : nullptr, s.anchor.view(),
                                       s.w32.view(), &msv, p);
          else
            fusedopt::dcasgd_update(s.w.view(), s.g.view(), mom ? &mv : nullptr, s.anchor.view(),
                                    &msv, p);
          for (std::int64_t i = 0; i < n; ++i)
            ref::dcasgd_adaptive(s.rw[uz(i)], mom ? &s.rm[uz(i)] : nullptr, s.ranchor[uz(i)],
                                 s.rms[uz(i)], s.g.get(i), h);
        }
        check_slot(s, o, label(dt, n, o) + " mxnet");
        const DType st = s.master ? DType::kFloat32 : dt;
        for (std::int64_t i = 0; i < n; ++i)
          check_close(s.anchor.get(i), s.ranchor[uz(i)], st, "prev");
        if (HasFailure()) return;
      }
}

TEST_P(Backup, AggregatedIsBitwisePerTensor) {
  const std::vector<std::int64_t> sizes = {5, 1, 4099, 0, 99, 33};
  for (DType dt : kDtypes)
    for (const Opts& o : all_opts()) {
      const ref::Hyper h = hyper(o);
      std::vector<Slot> a, b;
      fusedopt::MultiDcasgdParams mp;
      mp.momentum = h.momentum;
      mp.lamda = h.lamda;
      mp.rescale_grad = h.rescale_grad;
      if (o.clip) mp.clip_gradient = h.clip;
      mp.ms_decay = h.ms_decay;
      mp.eps = h.eps;
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        a.emplace_back(dt, sizes[k], 31 + k);
        a.back().next(77 + k, true);
        b.push_back(a.back());
        mp.lrs.push_back(0.01 * static_cast<double>(k + 1));
        mp.wds.push_back(0.001 * static_cast<double>(k));
      }
      std::vector<TensorView> w, g, bk, w32, m, ms;
      for (Slot& s : a) {
        w.push_back(s.w.view());
        g.push_back(s.g.view());
        bk.push_back(s.anchor.cview());
        if (s.master) w32.push_back(s.w32.view());
        if (o.mom) m.push_back(s.m.view());
        if (o.adaptive) ms.push_back(s.ms.view());
      }
      const bool master = is16(dt);
      if (master)
        fusedopt::multi_mp_dcasgd_backup_update(w, g, bk, w32, m, ms, mp);
      else
        fusedopt::multi_dcasgd_backup_update(w, g, bk, m, ms, mp);
      for (std::size_t k = 0; k < b.size(); ++k) {
        Slot& s = b[k];
        fusedopt::DcasgdParams p = params(h);
        p.lr = mp.lrs[k];
        p.wd = mp.wds[k];
        TensorView mv = s.m.view(), msv = s.ms.view();
        if (master)
          fusedopt::mp_dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.cview(), s.w32.view(),
                                            o.mom ? &mv : nullptr, o.adaptive ? &msv : nullptr, p);
        else
          fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.cview(),
                                         o.mom ? &mv : nullptr, o.adaptive ? &msv : nullptr, p);
        const std::string at = label(dt, sizes[k], o);
        EXPECT_EQ(a[k].w.bytes(), s.w.bytes()) << at;
        EXPECT_EQ(a[k].m.bytes(), s.m.bytes()) << at;
        EXPECT_EQ(a[k].ms.bytes(), s.ms.bytes()) << at;
        if (master) {
          EXPECT_EQ(a[k].w32.bytes(), s.w32.bytes()) << at;
        }
      }
      if (HasFailure()) return;
    }
}

TEST_P(Backup, BackupEqualToWeightIsSgd) {
  for (DType dt : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16})
    for (const Opts& o : all_opts()) {
      const ref::Hyper h = hyper(o);
      const fusedopt::DcasgdParams p = params(h);
      fusedopt::SgdParams sp;
      sp.lr = h.lr;
      sp.wd = h.wd;
      sp.momentum = h.momentum;
      sp.rescale_grad = h.rescale_grad;
      sp.clip_gradient = p.clip_gradient;
      Slot s(dt, 4099, 3), t(dt, 4099, 3);
      for (int step = 0; step < 3; ++step) {
        s.next(300 + static_cast<std::uint64_t>(step), false);
        t.next(300 + static_cast<std::uint64_t>(step), false);
        Arr bk = s.master ? s.w32 : s.w;  // backup == the (master) weight
        TensorView mv = s.m.view(), msv = s.ms.view();
        const TensorView* mom = o.mom ? &mv : nullptr;
        const TensorView* ms = o.adaptive ? &msv : nullptr;
        if (s.master) {
          fusedopt::mp_dcasgd_backup_update(s.w.view(), s.g.view(), bk.cview(), s.w32.view(), mom,
                                            ms, p);
          if (o.mom) fusedopt::mp_sgd_mom_update(t.w.view(), t.g.view(), t.m.view(), t.w32.view(), sp);
          else fusedopt::mp_sgd_update(t.w.view(), t.g.view(), t.w32.view(), sp);
        } else {
          fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), bk.cview(), mom, ms, p);
          if (o.mom) fusedopt::sgd_mom_update(t.w.view(), t.g.view(), t.m.view(), sp);
          else fusedopt::sgd_update(t.w.view(), t.g.view(), sp);
        }
      }
      EXPECT_EQ(s.w.bytes(), t.w.bytes()) << label(dt, 4099, o);
      EXPECT_EQ(s.m.bytes(), t.m.bytes()) << label(dt, 4099, o);
      if (HasFailure()) return;
    }
}

/// One element by hand (docs/SEMANTICS.md §13): g = 1, w = 1, backup = 0.5, ms = 0, lamda = 2,
/// ms_decay = 0.75, eps = 1e-300: ms = 0.25, lam_t = 2 / 0.5 = 4, d = 1 + 4 * 1 * 1 * 0.5 = 3,
/// w = 1 - 0.1 * 3 = 0.7. Checks the reference first, then the kernel (float64).
TEST(BackupWorkedExample, ReferenceAndKernel) {
  ref::Hyper h;
  h.lr = 0.1;
  h.lamda = 2.0;
  h.ms_decay = 0.75;
  h.eps = 1e-300;
  double w = 1.0, ms = 0.0;
  ref::dcasgd_backup(w, nullptr, 0.5, &ms, 1.0, h);
  EXPECT_NEAR(w, 0.7, 1e-15);
  EXPECT_NEAR(ms, 0.25, 1e-15);
  double kw = 1.0, kg = 1.0, kb = 0.5, kms = 0.0;
  TensorView msv(&kms, DType::kFloat64, {1});
  fusedopt::dcasgd_backup_update(TensorView(&kw, DType::kFloat64, {1}),
                                 TensorView(&kg, DType::kFloat64, {1}),
                                 TensorView(&kb, DType::kFloat64, {1}), nullptr, &msv, params(h));
  EXPECT_NEAR(kw, 0.7, 1e-15);
  EXPECT_NEAR(kms, 0.25, 1e-15);
}

// ---- errors -------------------------------------------------------------------------------------------

/// Runs f, expecting an exception of type E whose message contains every string of `parts`.
template <class E, class F>
void expect_error(F f, std::initializer_list<const char*> parts) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << *parts.begin();
  } catch (const E& e) {
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST(BackupErrors, NameTheArgumentAndWriteNothing) {
  Slot s(DType::kFloat32, 6, 1);
  s.next(2, true);
  const auto before = [&] { return std::vector<std::vector<unsigned char>>{
                                s.w.bytes(), s.g.bytes(), s.anchor.bytes(), s.m.bytes(), s.ms.bytes()}; };
  const auto snap = before();
  fusedopt::DcasgdParams p;
  p.lamda = 2.0;
  p.momentum = 0.9;
  TensorView mv = s.m.view(), msv = s.ms.view();
  Arr b64(DType::kFloat64, 6), b5(DType::kFloat32, 5), ms16(DType::kFloat16, 6);
  using fusedopt::TypeError;
  using fusedopt::ValueError;
  expect_error<TypeError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), b64.view(), &mv, &msv, p); },
                          {"dcasgd_backup_update", "backup"});
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), b5.view(), &mv, &msv, p); },
                           {"backup", "shape"});
  TensorView ms16v = ms16.view();
  expect_error<TypeError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &ms16v, p); },
                          {"mean_square"});
  TensorView ro = s.ms.cview();
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &ro, p); },
                           {"mean_square"});
  TensorView alias = s.m.view();
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &alias, p); },
                           {"overlaps"});
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.w.view(), &mv, &msv, p); },
                           {"backup", "overlaps"});
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), nullptr, &msv, p); },
                           {"momentum is 0.9", "mom is None"});
  for (double bad : {1.0, -0.5, std::nan("")}) {
    fusedopt::DcasgdParams q = p;
    q.ms_decay = bad;
    expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &msv, q); },
                             {"ms_decay"});
  }
  for (double bad : {0.0, -1.0, kInf}) {
    fusedopt::DcasgdParams q = p;
    q.eps = bad;
    expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &msv, q); },
                             {"eps"});
  }
  fusedopt::DcasgdParams q = p;
  q.lamda = -1.0;
  expect_error<ValueError>([&] { fusedopt::dcasgd_backup_update(s.w.view(), s.g.view(), s.anchor.view(), &mv, &msv, q); },
                           {"lamda"});
  // Aggregated: a bad item anywhere leaves every tensor untouched; list lengths are checked.
  Slot s2(DType::kFloat32, 6, 9);
  fusedopt::MultiDcasgdParams mp;
  mp.lrs = {0.1, 0.1};
  mp.wds = {0.0, 0.0};
  mp.lamda = 2.0;
  expect_error<ValueError>([&] { fusedopt::multi_dcasgd_backup_update({s.w.view(), s2.w.view()}, {s.g.view(), s2.g.view()},
                                                                      {s.anchor.view(), b5.view()}, {}, {s.ms.view(), s2.ms.view()}, mp); },
                           {"multi_dcasgd_backup_update", "backups[1]"});
  expect_error<ValueError>([&] { fusedopt::multi_dcasgd_backup_update({s.w.view(), s2.w.view()}, {s.g.view(), s2.g.view()},
                                                                      {s.anchor.view(), s2.anchor.view()}, {}, {s.ms.view()}, mp); },
                           {"mean_squares"});
  EXPECT_EQ(before(), snap);
  // The dry-run check raises the same errors and writes nothing either.
  expect_error<TypeError>([&] { fusedopt::check_dcasgd_backup_args(s.w.view(), s.g.view(), b64.view(), nullptr, &mv, &msv, p); },
                          {"backup"});
  fusedopt::check_dcasgd_backup_args(s.w.view(), s.g.cview(), s.anchor.cview(), nullptr, &mv, &msv, p);
  EXPECT_EQ(before(), snap);
}

}  // namespace

namespace {

// PreparedUpdate::dcasgd_adaptive over float32 arrays: each step equals multi_dcasgd_update with
// mean_squares on copies of the same arrays, bit for bit (momentum, weight decay, per-tensor
// lr_mult); scalars out of range are refused before anything is written.
TEST(PreparedAdaptive, EqualsTheAggregatedOperatorAndChecksItsScalars) {
  const std::vector<std::int64_t> sizes = {7, 1, 4099, 33};
  const std::size_t k = sizes.size();
  std::vector<std::vector<float>> w(k), g(k), m(k), prev(k), ms(k);
  for (std::size_t t = 0; t < k; ++t) {
    for (std::int64_t i = 0; i < sizes[t]; ++i) {
      w[t].push_back(static_cast<float>(uniform(900 + t, i)));
      m[t].push_back(0.0f);
      ms[t].push_back(0.0f);
    }
    prev[t] = w[t];
    g[t].assign(w[t].size(), 0.0f);
  }
  auto w2 = w, m2 = m, prev2 = prev, ms2 = ms;
  auto views = [&](std::vector<std::vector<float>>& a) {
    std::vector<TensorView> v;
    for (std::size_t t = 0; t < k; ++t)
      v.emplace_back(a[t].data(), DType::kFloat32, std::vector<std::int64_t>{sizes[t]});
    return v;
  };
  const std::vector<double> lr_mult = {1.0, 0.5, 2.0, 1.0};
  auto prepared = fusedopt::PreparedUpdate::dcasgd_adaptive(
      views(w2), views(g), views(m2), views(prev2), views(ms2), {}, lr_mult, {});
  for (int step = 0; step < 3; ++step) {
    for (std::size_t t = 0; t < k; ++t)
      for (std::size_t i = 0; i < g[t].size(); ++i)
        g[t][i] = static_cast<float>(uniform(1000 + 10 * static_cast<std::size_t>(step) + t,
                                             static_cast<std::int64_t>(i)));
    fusedopt::MultiDcasgdParams mp;
    mp.momentum = 0.9;
    mp.lamda = 2.0;
    mp.ms_decay = 0.9;
    mp.eps = 1e-6;
    for (std::size_t t = 0; t < k; ++t) {
      mp.lrs.push_back(0.1 * lr_mult[t]);
      mp.wds.push_back(0.01);
    }
    fusedopt::multi_dcasgd_update(views(w), views(g), views(m), views(prev), views(ms), mp);
    prepared.step(0.1, 0.01, 0.9, 1.0, std::nullopt, 2.0, 0.9, 1e-6);
    for (std::size_t t = 0; t < k; ++t) {
      ASSERT_EQ(0, std::memcmp(w[t].data(), w2[t].data(), w[t].size() * sizeof(float))) << t;
      ASSERT_EQ(0, std::memcmp(ms[t].data(), ms2[t].data(), ms[t].size() * sizeof(float))) << t;
      ASSERT_EQ(0, std::memcmp(prev[t].data(), prev2[t].data(), prev[t].size() * sizeof(float)))
          << t;
    }
  }
  bool used = false;
  for (float v : ms2[2]) used = used || v != 0.0f;
  EXPECT_TRUE(used);
  const auto before = w2;
  const auto ms_before = ms2;
  EXPECT_THROW(prepared.step(0.1, 0.01, 0.9, 1.0, std::nullopt, 2.0, 1.0, 1e-6),
               fusedopt::ValueError);
  EXPECT_THROW(prepared.step(0.1, 0.01, 0.9, 1.0, std::nullopt, 2.0, 0.9, 0.0),
               fusedopt::ValueError);
  EXPECT_THROW(fusedopt::PreparedUpdate::dcasgd_adaptive(views(w2), views(g), views(m2),
                                                         views(prev2), {}, {}),
               fusedopt::ValueError);  // mean squares are required
  EXPECT_EQ(before, w2);
  EXPECT_EQ(ms_before, ms2);
}

}  // namespace
