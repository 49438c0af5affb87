// test_loss_scale.cpp — the aggregated operators' LossScale operands on the CPU (grad_scale and
// found_inf as one-element float32 host arrays): the scaled step against the double-precision oracle
// (reference.h) with rescale_grad / scale, the skipped step (found_inf != 0) writing nothing, and
// refused operands (dtype, element count, device, aliasing) writing nothing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "fusedopt/fusedopt.h"
#include "reference.h"
#include "test_support.h"

namespace {

using fusedopt::DType;
using fusedopt::TensorView;
namespace ref = fusedopt_test::ref;

constexpr double kLr = 0.05, kWd = 0.01, kMomentum = 0.9, kRescale = 0.9, kClip = 0.6, kLamda = 0.3;

struct Lists {
  std::vector<std::vector<double>> w, g, m, prev, m2;
  explicit Lists(std::uint64_t seed) {
    for (std::int64_t n : {7, 1000, 33}) {
      std::vector<double> a(static_cast<std::size_t>(n)), b(a.size()), c(a.size()), d(a.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        a[i] = fusedopt_test::uniform(seed, i);
        b[i] = 2.0 * fusedopt_test::uniform(seed + 1, i);  // the scale pushes some past the clip
        c[i] = 0.5 * fusedopt_test::uniform(seed + 2, i);
        d[i] = a[i] + 0.1 * fusedopt_test::uniform(seed + 3, i);
      }
      w.push_back(a);
      g.push_back(b);
      m.push_back(c);
      prev.push_back(d);
      for (double& x : c) x = std::fabs(x);
      m2.push_back(c);
    }
  }
  static std::vector<TensorView> views(std::vector<std::vector<double>>& v) {
    std::vector<TensorView> out;
    for (auto& a : v) out.emplace_back(a.data(), DType::kFloat64, std::initializer_list<std::int64_t>{
                                                                      static_cast<std::int64_t>(a.size())});
    return out;
  }
};

fusedopt::MultiSgdParams sgd_params(std::size_t n) {
  fusedopt::MultiSgdParams p;
  p.lrs.assign(n, kLr);
  p.wds.assign(n, kWd);
  p.momentum = kMomentum;
  p.rescale_grad = kRescale;
  p.clip_gradient = kClip;
  return p;
}

fusedopt::MultiDcasgdParams dcasgd_params(std::size_t n) {
  fusedopt::MultiDcasgdParams p;
  p.lrs.assign(n, kLr);
  p.wds.assign(n, kWd);
  p.momentum = kMomentum;
  p.lamda = kLamda;
  p.rescale_grad = kRescale;
  p.clip_gradient = kClip;
  return p;
}

TensorView scalar(float* v) { return TensorView(static_cast<const void*>(v), DType::kFloat32, {1}); }

TEST(LossScale, SgdMomScaledStepMatchesReference) {
  for (float scale : {4.0f, 3.0f, 0.25f}) {
    SCOPED_TRACE(scale);
    Lists l(11), want(11);
    float s = scale, found = 0.0f;
    auto p = sgd_params(l.w.size());
    p.loss_scale.grad_scale = scalar(&s);
    p.loss_scale.found_inf = scalar(&found);
    for (int step = 0; step < 3; ++step) {
      fusedopt::multi_sgd_mom_update(Lists::views(l.w), Lists::views(l.g), Lists::views(l.m), p);
      ref::Hyper h;
      h.lr = kLr;
      h.wd = kWd;
      h.momentum = kMomentum;
      h.rescale_grad = kRescale / static_cast<double>(scale);
      h.clip = kClip;
      for (std::size_t k = 0; k < want.w.size(); ++k)
        for (std::size_t i = 0; i < want.w[k].size(); ++i)
          ref::sgd(want.w[k][i], &want.m[k][i], want.g[k][i], h);
    }
    for (std::size_t k = 0; k < l.w.size(); ++k)
      for (std::size_t i = 0; i < l.w[k].size(); ++i) {
        EXPECT_NEAR(l.w[k][i], want.w[k][i], 1e-13) << k << "," << i;
        EXPECT_NEAR(l.m[k][i], want.m[k][i], 1e-13) << k << "," << i;
      }
  }
}

TEST(LossScale, DcasgdScaledStepMatchesReference) {
  Lists l(21), want(21);
  float s = 8.0f;
  auto p = dcasgd_params(l.w.size());
  p.loss_scale.grad_scale = scalar(&s);
  for (int step = 0; step < 3; ++step) {
    fusedopt::multi_dcasgd_update(Lists::views(l.w), Lists::views(l.g), Lists::views(l.m),
                                  Lists::views(l.prev), p);
    ref::Hyper h;
    h.lr = kLr;
    h.wd = kWd;
    h.momentum = kMomentum;
    h.rescale_grad = kRescale / 8.0;
    h.clip = kClip;
    h.lamda = kLamda;
    for (std::size_t k = 0; k < want.w.size(); ++k)
      for (std::size_t i = 0; i < want.w[k].size(); ++i)
        ref::dcasgd(want.w[k][i], &want.m[k][i], want.prev[k][i], want.g[k][i], h);
  }
  for (std::size_t k = 0; k < l.w.size(); ++k)
    for (std::size_t i = 0; i < l.w[k].size(); ++i) {
      EXPECT_NEAR(l.w[k][i], want.w[k][i], 1e-13);
      EXPECT_NEAR(l.prev[k][i], want.prev[k][i], 1e-13);
    }
}

TEST(LossScale, FoundInfWritesNothing) {
  for (float found : {1.0f, -2.0f, NAN, INFINITY}) {
    Lists l(31);
    const Lists before(31);
    float s = 2.0f, f = found;
    auto sp = sgd_params(l.w.size());
    sp.loss_scale.grad_scale = scalar(&s);
    sp.loss_scale.found_inf = scalar(&f);
    fusedopt::multi_sgd_mom_update(Lists::views(l.w), Lists::views(l.g), Lists::views(l.m), sp);
    fusedopt::multi_sgd_update(Lists::views(l.w), Lists::views(l.g), sp);
    auto dp = dcasgd_params(l.w.size());
    dp.loss_scale.found_inf = scalar(&f);
    fusedopt::multi_dcasgd_update(Lists::views(l.w), Lists::views(l.g), Lists::views(l.m),
                                  Lists::views(l.prev), Lists::views(l.m2), dp);
    EXPECT_EQ(l.w, before.w);
    EXPECT_EQ(l.m, before.m);
    EXPECT_EQ(l.prev, before.prev);
    EXPECT_EQ(l.m2, before.m2);
  }
}

TEST(LossScale, RefusedOperandsWriteNothing) {
  Lists l(41);
  const Lists before(41);
  double wrong_dtype = 2.0;
  float two[2] = {2.0f, 2.0f};
  float s = 2.0f;
  auto run = [&](const fusedopt::LossScale& ls) {
    auto p = sgd_params(l.w.size());
    p.loss_scale = ls;
    fusedopt::multi_sgd_mom_update(Lists::views(l.w), Lists::views(l.g), Lists::views(l.m), p);
  };
  fusedopt::LossScale ls;
  ls.grad_scale = TensorView(static_cast<const void*>(&wrong_dtype), DType::kFloat64, {1});
  EXPECT_THROW(run(ls), fusedopt::TypeError);
  ls = {};
  ls.found_inf = TensorView(static_cast<const void*>(two), DType::kFloat32, {2});
  EXPECT_THROW(run(ls), fusedopt::ValueError);
  ls = {};
  ls.grad_scale = TensorView(static_cast<const void*>(&s), DType::kFloat32, {1},
                             fusedopt::Device{fusedopt::DeviceType::kCUDAHost, 0});
  EXPECT_THROW(run(ls), fusedopt::ValueError);  // not the weights' device
  ls = {};
  ls.found_inf = TensorView(static_cast<const void*>(l.w[0].data()), DType::kFloat32, {1});
  EXPECT_THROW(run(ls), fusedopt::ValueError);  // aliases a weight that the call writes
  EXPECT_EQ(l.w, before.w);
  EXPECT_EQ(l.m, before.m);
}

}  // namespace
