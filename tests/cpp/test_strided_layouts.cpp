// test_strided_layouts.cpp — dense strided layouts through the C++ API (Note [dense layouts] in
// tensor_view.h): weight, gradient and states sharing one dense layout with identical strides (a
// transposed matrix, an NCHW tensor stored channels_last) are updated in place, element by element as
// the double-precision reference says; different strides, gaps, overlapping, broadcast and negative
// strides are refused with a ValueError naming the argument, and nothing is written.
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

/// A float32 / float64 buffer holding a logical array of `shape` stored with `strides` (a
/// permutation of the C-contiguous strides), plus the logical values in C order for the reference.
template <class T>
struct Strided {
  std::vector<T> mem;
  TensorView view;
  Strided(std::vector<std::int64_t> shape, std::vector<std::int64_t> strides, DType dt, double seed) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    mem.resize(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) mem[static_cast<std::size_t>(i)] = static_cast<T>(std::sin(seed + 0.37 * static_cast<double>(i)));
    view = TensorView(mem.data(), dt, shape);
    view.has_strides = true;
    for (std::size_t i = 0; i < strides.size(); ++i) view.strides[i] = strides[i];
  }
  /// Element at the logical C-order position `flat`.
  T& at(std::int64_t flat) {
    std::int64_t off = 0;
    for (std::int32_t i = view.ndim - 1; i >= 0; --i) {
      const auto k = static_cast<std::size_t>(i);
      off += (flat % view.shape[k]) * view.strides[k];
      flat /= view.shape[k];
    }
    return mem[static_cast<std::size_t>(off)];
  }
  std::int64_t numel() const { return view.numel(); }
};

// (2, 3, 4, 5) NCHW stored channels_last: strides (60, 1, 15, 3).
const std::vector<std::int64_t> kShape{2, 3, 4, 5}, kChannelsLast{60, 1, 15, 3};

TEST(StridedLayouts, SgdMomChannelsLastMatchesReference) {
  Strided<float> w(kShape, kChannelsLast, DType::kFloat32, 0.1), g(kShape, kChannelsLast, DType::kFloat32, 1.3),
      m(kShape, kChannelsLast, DType::kFloat32, 2.7);
  std::vector<double> ew(static_cast<std::size_t>(w.numel())), em(ew.size());
  ref::Hyper h;
  h.lr = 0.1;
  h.momentum = 0.9;
  h.wd = 0.01;
  h.clip = 0.5;
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    double wi = w.at(i), mi = m.at(i);
    ref::sgd(wi, &mi, g.at(i), h);
    ew[static_cast<std::size_t>(i)] = wi;
    em[static_cast<std::size_t>(i)] = mi;
  }
  fusedopt::SgdParams p;
  p.lr = 0.1;
  p.momentum = 0.9;
  p.wd = 0.01;
  p.clip_gradient = 0.5;
  fusedopt::sgd_mom_update(w.view, g.view, m.view, p);
  for (std::int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_NEAR(w.at(i), ew[static_cast<std::size_t>(i)], 1e-6) << i;
    EXPECT_NEAR(m.at(i), em[static_cast<std::size_t>(i)], 1e-6) << i;
  }
}

TEST(StridedLayouts, AggregatedTransposedAndContiguous) {
  // tensor 0: a (6, 7) matrix stored column-major; tensor 1: C-contiguous (no strides).
  Strided<double> w0({6, 7}, {1, 6}, DType::kFloat64, 0.2), g0({6, 7}, {1, 6}, DType::kFloat64, 0.9);
  std::vector<double> w1(9, 1.5), g1(9, 0.25);
  std::vector<double> e0(42);
  ref::Hyper h;
  h.lr = 0.05;
  for (std::int64_t i = 0; i < 42; ++i) {
    double wi = w0.at(i);
    ref::sgd(wi, nullptr, g0.at(i), h);
    e0[static_cast<std::size_t>(i)] = wi;
  }
  fusedopt::MultiSgdParams p;
  p.lrs = {0.05, 0.5};
  p.wds = {0.0, 0.0};
  fusedopt::multi_sgd_update({w0.view, TensorView(w1.data(), DType::kFloat64, {9})},
                             {g0.view, TensorView(g1.data(), DType::kFloat64, {9})}, p);
  for (std::int64_t i = 0; i < 42; ++i) EXPECT_DOUBLE_EQ(w0.at(i), e0[static_cast<std::size_t>(i)]);
  for (double v : w1) EXPECT_DOUBLE_EQ(v, 1.5 - 0.5 * 0.25);
}

/// Runs `call`, expects a ValueError naming every needle and no byte of `bufs` changed.
template <class F>
void expect_refused(std::vector<std::vector<float>*> bufs, std::vector<std::string> needles, F call) {
  std::vector<std::vector<float>> before;
  for (auto* b : bufs) before.push_back(*b);
  try {
    call();
    ADD_FAILURE() << "not refused";
  } catch (const fusedopt::ValueError& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what() << " lacks " << n;
  }
  for (std::size_t k = 0; k < bufs.size(); ++k) EXPECT_EQ(*bufs[k], before[k]) << "buffer " << k << " written";
}

TensorView with_strides(TensorView v, std::vector<std::int64_t> s) {
  v.has_strides = true;
  for (std::size_t i = 0; i < s.size(); ++i) v.strides[i] = s[i];
  return v;
}

TEST(StridedLayouts, NonDenseWeightsAreRefused) {
  std::vector<float> wb(64, 1.0f), gb(64, 0.5f);
  fusedopt::SgdParams p;
  p.lr = 0.1;
  const TensorView g(gb.data(), DType::kFloat32, {4, 4});
  struct Case {
    const char* name;
    std::vector<std::int64_t> strides;
    std::size_t offset;
  };
  for (const Case& c : {Case{"gaps", {8, 2}, 0}, Case{"overlap", {1, 1}, 0}, Case{"broadcast", {0, 1}, 0},
                        Case{"negative", {-4, 1}, 12}, Case{"equal strides", {4, 4}, 0}}) {
    SCOPED_TRACE(c.name);
    TensorView w = with_strides(TensorView(wb.data() + c.offset, DType::kFloat32, {4, 4}), c.strides);
    TensorView gs = with_strides(TensorView(gb.data(), DType::kFloat32, {4, 4}), c.strides);
    expect_refused({&wb, &gb}, {"sgd_update", "weight must be dense"},
                   [&] { fusedopt::sgd_update(w, gs, p); });
    expect_refused({&wb, &gb}, {"sgd_update", "weight must be dense"},
                   [&] { fusedopt::sgd_update(w, g, p); });
  }
}

TEST(StridedLayouts, MismatchedStridesAreRefusedForEveryOperand) {
  std::vector<float> wb(16, 1.0f), gb(16, 0.5f), mb(16, 0.25f), pb(16, 2.0f);
  const std::vector<std::int64_t> t{1, 4};
  TensorView w = with_strides(TensorView(wb.data(), DType::kFloat32, {4, 4}), t);
  TensorView g = with_strides(TensorView(gb.data(), DType::kFloat32, {4, 4}), t);
  TensorView m = with_strides(TensorView(mb.data(), DType::kFloat32, {4, 4}), t);
  const TensorView gc(gb.data(), DType::kFloat32, {4, 4}), mc(mb.data(), DType::kFloat32, {4, 4}),
      pc(pb.data(), DType::kFloat32, {4, 4});
  fusedopt::SgdParams p;
  p.lr = 0.1;
  p.momentum = 0.9;
  fusedopt::DcasgdParams d;
  d.lr = 0.1;
  auto all = std::vector<std::vector<float>*>{&wb, &gb, &mb, &pb};
  expect_refused(all, {"grad must have the strides of weight (1, 4), got (4, 1)"},
                 [&] { fusedopt::sgd_mom_update(w, gc, m, p); });
  expect_refused(all, {"mom must have the strides of weight"}, [&] { fusedopt::sgd_mom_update(w, g, mc, p); });
  expect_refused(all, {"prev must have the strides of weight"},
                 [&] { fusedopt::dcasgd_update(w, g, nullptr, pc, d); });
  fusedopt::MultiSgdParams mp;
  mp.lrs = {0.1, 0.1};
  mp.wds = {0.0, 0.0};
  mp.momentum = 0.9;
  std::vector<float> w2(16, 3.0f), g2(16, 1.0f), m2(16, 0.0f);
  all.insert(all.end(), {&w2, &g2, &m2});
  expect_refused(all, {"moms[1] must have the strides of weights[1]"}, [&] {
    fusedopt::multi_sgd_mom_update({w, with_strides(TensorView(w2.data(), DType::kFloat32, {4, 4}), t)},
                                   {g, with_strides(TensorView(g2.data(), DType::kFloat32, {4, 4}), t)},
                                   {m, TensorView(m2.data(), DType::kFloat32, {4, 4})}, mp);
  });
  // A transposed weight and transposed states sharing memory: the overlap check still applies.
  expect_refused(all, {"overlaps"}, [&] { fusedopt::sgd_mom_update(w, g, w, p); });
}

TEST(StridedLayouts, OptimizerStatesAndPreparedUpdateKeepTheLayout) {
  Strided<float> w({5, 3}, {1, 5}, DType::kFloat32, 0.4), g({5, 3}, {1, 5}, DType::kFloat32, 1.1);
  Strided<float> w2 = w;
  w2.view.data = w2.mem.data();
  fusedopt::SGDOptions o;
  o.learning_rate = 0.1;
  o.momentum = 0.9;
  fusedopt::SGD opt(o);
  std::vector<double> ew(15), em(15, 0.0);
  ref::Hyper h;
  h.lr = 0.1;
  h.momentum = 0.9;
  for (int step = 0; step < 3; ++step) {
    opt.update(0, w.view, g.view);
    for (std::int64_t i = 0; i < 15; ++i) {
      double wi = step == 0 ? double(w2.at(i)) : ew[static_cast<std::size_t>(i)];
      ref::sgd(wi, &em[static_cast<std::size_t>(i)], g.at(i), h);
      ew[static_cast<std::size_t>(i)] = wi;
    }
  }
  for (std::int64_t i = 0; i < 15; ++i) EXPECT_NEAR(w.at(i), ew[static_cast<std::size_t>(i)], 1e-5);
  const TensorView mom = opt.state(0, "mom");
  EXPECT_TRUE(mom.has_strides);
  EXPECT_EQ(mom.strides[0], 1);
  EXPECT_EQ(mom.strides[1], 5);
  // The same weight seen with other strides later: refused with both layouts in the message.
  EXPECT_THROW(opt.update(0, TensorView(w.mem.data(), DType::kFloat32, {5, 3}), g.view), fusedopt::ValueError);

  // PreparedUpdate over the strided arrays (one step equals the operator).
  std::vector<float> mb(15, 0.0f);
  TensorView m = with_strides(TensorView(mb.data(), DType::kFloat32, {5, 3}), {1, 5});
  Strided<float> wp({5, 3}, {1, 5}, DType::kFloat32, 0.4);
  auto prepared = fusedopt::PreparedUpdate::sgd({wp.view}, {g.view}, {m}, {});
  prepared.step(0.1, 0.0, 0.9);
  Strided<float> wo({5, 3}, {1, 5}, DType::kFloat32, 0.4);
  std::vector<float> mo(15, 0.0f);
  fusedopt::SgdParams p;
  p.lr = 0.1;
  p.momentum = 0.9;
  fusedopt::sgd_mom_update(wo.view, g.view, with_strides(TensorView(mo.data(), DType::kFloat32, {5, 3}), {1, 5}), p);
  EXPECT_EQ(wp.mem, wo.mem);
  EXPECT_EQ(mb, mo);
  std::vector<float> mc(15, 0.0f);
  EXPECT_THROW(fusedopt::PreparedUpdate::sgd({wp.view}, {g.view}, {TensorView(mc.data(), DType::kFloat32, {5, 3})}, {}),
               fusedopt::ValueError);
}

TEST(StridedLayouts, RowSparseNeedsACContiguousWeight) {
  std::vector<float> wb(12, 1.0f), rows(3, 0.5f);
  std::vector<std::int64_t> idx{2};
  TensorView w = with_strides(TensorView(wb.data(), DType::kFloat32, {4, 3}), {1, 4});
  fusedopt::RowSparseView g;
  g.data = TensorView(rows.data(), DType::kFloat32, {1, 3});
  g.indices = idx.data();
  g.num_indices = 1;
  g.ndim = 2;
  g.shape[0] = 4;
  g.shape[1] = 3;
  fusedopt::SgdParams p;
  p.lr = 0.1;
  expect_refused({&wb, &rows}, {"row-sparse gradient must be C-contiguous"},
                 [&] { fusedopt::sgd_update(w, g, p); });
}

}  // namespace
