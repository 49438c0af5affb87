// test_api_errors.cpp — every validation path of the C++ API: the exception type (fusedopt::ValueError
// or fusedopt::TypeError, SPEC §10), a message naming the operator and the argument, and no write at
// all. Every array of every call lives in one arena whose bytes are compared before and after, so
// "validation of a whole call completes before the first write" is checked for all operands at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "fusedopt/fusedopt.h"

namespace {

using fusedopt::DType;
using fusedopt::TensorView;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

static_assert(std::is_base_of_v<fusedopt::Error, fusedopt::ValueError>);
static_assert(std::is_base_of_v<fusedopt::Error, fusedopt::TypeError>);
static_assert(std::is_base_of_v<std::runtime_error, fusedopt::Error>);
static_assert(!std::is_base_of_v<fusedopt::ValueError, fusedopt::TypeError>);

/// 16 arrays of 4 KiB each; slot k is one argument. Filled with arbitrary bytes: a rejected call must
/// leave every one of them as it was.
class Arena {
 public:
  static constexpr std::size_t kSlot = 4096;
  Arena() : bytes_(16 * kSlot) {
    std::uint32_t x = 12345;
    for (auto& b : bytes_) {
      x = x * 1664525u + 1013904223u;
      b = static_cast<unsigned char>(x >> 24);
    }
  }
  unsigned char* at(std::size_t slot, std::size_t byte_offset = 0) {
    return bytes_.data() + slot * kSlot + byte_offset;
  }
  /// A C-contiguous view of slot `slot` (plus `byte_offset`).
  TensorView view(std::size_t slot, DType t, std::vector<std::int64_t> shape,
                  std::size_t byte_offset = 0) {
    return TensorView(at(slot, byte_offset), t, shape);
  }
  const std::vector<unsigned char>& bytes() const { return bytes_; }

 private:
  std::vector<unsigned char> bytes_;
};

std::vector<std::string> N(std::initializer_list<const char*> needles) {
  return std::vector<std::string>(needles.begin(), needles.end());
}

class ApiErrors : public ::testing::Test {
 protected:
  /// Runs `call`; expects exactly `Err` (not the sibling type) with every needle in its message, and
  /// no byte of the arena changed.
  template <class Err, class F>
  void expect_rejected(const std::vector<std::string>& needles, F&& call) {
    const std::vector<unsigned char> before = arena.bytes();
    try {
      call();
      ADD_FAILURE() << "no exception thrown (expected " << typeid(Err).name() << ")";
    } catch (const Err& e) {
      const std::string what = e.what();
      for (const std::string& n : needles)
        EXPECT_NE(what.find(n), std::string::npos) << "message \"" << what << "\" lacks \"" << n << "\"";
    } catch (const fusedopt::Error& e) {
      ADD_FAILURE() << "wrong exception type " << typeid(e).name() << ": " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a fusedopt error: " << typeid(e).name() << ": " << e.what();
    }
    EXPECT_TRUE(arena.bytes() == before) << "a rejected call wrote to its arrays";
  }
  template <class F>
  void expect_accepted(F&& call) {
    EXPECT_NO_THROW(call());
  }

  // Common views: float32 (4, 4) weight in slot 0, grad 1, mom 2, prev 3; float16 weight in slot 4,
  // float16 grad 5, float32 master 6, float32 mom 7, float32 prev32 8.
  TensorView w() { return arena.view(0, DType::kFloat32, {4, 4}); }
  TensorView g() { return arena.view(1, DType::kFloat32, {4, 4}); }
  TensorView m() { return arena.view(2, DType::kFloat32, {4, 4}); }
  TensorView prev() { return arena.view(3, DType::kFloat32, {4, 4}); }
  TensorView hw() { return arena.view(4, DType::kFloat16, {4, 4}); }
  TensorView hg() { return arena.view(5, DType::kFloat16, {4, 4}); }
  TensorView w32() { return arena.view(6, DType::kFloat32, {4, 4}); }
  TensorView m32() { return arena.view(7, DType::kFloat32, {4, 4}); }
  TensorView prev32() { return arena.view(8, DType::kFloat32, {4, 4}); }

  static fusedopt::SgdParams sgd(double momentum = 0.9) {
    fusedopt::SgdParams p;
    p.lr = 0.1;
    p.momentum = momentum;
    return p;
  }
  static fusedopt::DcasgdParams dca(double momentum = 0.0) {
    fusedopt::DcasgdParams p;
    p.lr = 0.1;
    p.momentum = momentum;
    return p;
  }
  static fusedopt::MultiSgdParams multi(std::size_t n) {
    fusedopt::MultiSgdParams p;
    p.lrs.assign(n, 0.1);
    p.wds.assign(n, 0.0);
    p.momentum = 0.9;
    return p;
  }

  Arena arena;
};

#define EXPECT_REJECTED(Err, needles, ...) \
  expect_rejected<fusedopt::Err>(needles, [&] { __VA_ARGS__; })

TensorView transposed(TensorView v) {  // a (4, 4) view read column-major: not C-contiguous
  v.has_strides = true;
  v.strides[0] = 1;
  v.strides[1] = 4;
  return v;
}
TensorView read_only(TensorView v) {
  v.read_only = true;
  return v;
}
TensorView null_data(TensorView v) {
  v.data = nullptr;
  return v;
}
TensorView on(TensorView v, fusedopt::DeviceType t, std::int32_t id = 0) {
  v.device = fusedopt::Device{t, id};
  return v;
}

// ---- dtypes: TypeError --------------------------------------------------------------------------------

TEST_F(ApiErrors, WrongDtypes) {
  const TensorView g64 = arena.view(1, DType::kFloat64, {4, 4});
  const TensorView m16 = arena.view(2, DType::kFloat16, {4, 4});
  EXPECT_REJECTED(TypeError, N({"sgd_update", "grad", "float32", "float64"}),
                  fusedopt::sgd_update(w(), g64, sgd()));
  EXPECT_REJECTED(TypeError, N({"sgd_mom_update", "mom", "float16"}),
                  fusedopt::sgd_mom_update(w(), g(), m16, sgd()));
  EXPECT_REJECTED(TypeError, N({"mp_sgd_update", "weight32", "float32"}),
                  fusedopt::mp_sgd_update(hw(), hg(), arena.view(6, DType::kFloat16, {4, 4}), sgd()));
  EXPECT_REJECTED(TypeError, N({"mp_sgd_update", "weight", "float16 or bfloat16", "float32"}),
                  fusedopt::mp_sgd_update(w(), g(), w32(), sgd()));
  EXPECT_REJECTED(TypeError, N({"mp_sgd_mom_update", "mom", "float32"}),
                  fusedopt::mp_sgd_mom_update(hw(), hg(), arena.view(7, DType::kFloat16, {4, 4}),
                                              w32(), sgd()));
  EXPECT_REJECTED(TypeError, N({"mp_sgd_mom_update", "grad", "float16"}),
                  fusedopt::mp_sgd_mom_update(hw(), arena.view(5, DType::kFloat32, {4, 4}), m32(),
                                              w32(), sgd()));
  EXPECT_REJECTED(TypeError, N({"dcasgd_update", "prev", "float64"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, arena.view(3, DType::kFloat64, {4, 4}),
                                          dca()));
  const TensorView mm = m16;
  EXPECT_REJECTED(TypeError, N({"dcasgd_update", "mom"}),
                  fusedopt::dcasgd_update(w(), g(), &mm, prev(), dca()));
  EXPECT_REJECTED(TypeError, N({"mp_dcasgd_update", "prev32"}),
                  fusedopt::mp_dcasgd_update(hw(), hg(), nullptr, arena.view(8, DType::kFloat16, {4, 4}),
                                             w32(), dca()));
  EXPECT_REJECTED(TypeError, N({"mp_dcasgd_update", "weight32"}),
                  fusedopt::mp_dcasgd_update(hw(), hg(), nullptr, prev32(),
                                             arena.view(6, DType::kFloat64, {4, 4}), dca()));
  // bfloat16 grad for a float16 weight
  EXPECT_REJECTED(TypeError, N({"mp_sgd_update", "grad", "bfloat16"}),
                  fusedopt::mp_sgd_update(hw(), arena.view(5, DType::kBFloat16, {4, 4}), w32(), sgd()));
  // a DType value outside the enum (a corrupted or newer caller)
  TensorView bad = w();
  bad.dtype = static_cast<DType>(9);
  EXPECT_REJECTED(TypeError, N({"sgd_update", "weight"}), fusedopt::sgd_update(bad, g(), sgd()));
}

TEST_F(ApiErrors, WrongDtypesInAggregatedCalls) {
  const TensorView w0 = arena.view(0, DType::kFloat32, {8}), w1 = arena.view(0, DType::kFloat32, {8}, 64);
  const TensorView g0 = arena.view(1, DType::kFloat32, {8}), g1 = arena.view(1, DType::kFloat32, {8}, 64);
  const TensorView m0 = arena.view(2, DType::kFloat32, {8});
  const TensorView m1_bad = arena.view(2, DType::kFloat64, {8}, 64);
  EXPECT_REJECTED(TypeError, N({"multi_sgd_mom_update", "moms[1]", "float64"}),
                  fusedopt::multi_sgd_mom_update({w0, w1}, {g0, g1}, {m0, m1_bad}, multi(2)));
  const TensorView h0 = arena.view(4, DType::kFloat16, {8}), h1 = arena.view(4, DType::kBFloat16, {8}, 64);
  const TensorView hg0 = arena.view(5, DType::kFloat16, {8}), hg1 = arena.view(5, DType::kBFloat16, {8}, 64);
  const TensorView s0 = arena.view(6, DType::kFloat32, {8}), s1 = arena.view(6, DType::kFloat32, {8}, 64);
  const TensorView s1_bad = arena.view(6, DType::kBFloat16, {8}, 64);
  EXPECT_REJECTED(TypeError, N({"multi_mp_sgd_update", "weights32[1]"}),
                  fusedopt::multi_mp_sgd_update({h0, h1}, {hg0, hg1}, {s0, s1_bad}, multi(2)));
  EXPECT_REJECTED(TypeError, N({"multi_mp_sgd_update", "weights[1]", "float16 or bfloat16"}),
                  fusedopt::multi_mp_sgd_update({h0, w1}, {hg0, g1}, {s0, s1}, multi(2)));
  EXPECT_REJECTED(TypeError, N({"multi_sgd_update", "grads[1]"}),
                  fusedopt::multi_sgd_update({h0, h1}, {hg0, hg0}, multi(2)));
}

// ---- shapes, layout, writability, pointers: ValueError ------------------------------------------------

TEST_F(ApiErrors, ShapeMismatch) {
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "shape", "(4, 3)"}),
                  fusedopt::sgd_update(w(), arena.view(1, DType::kFloat32, {4, 3}), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "(16,)"}),  // same element count, other shape
                  fusedopt::sgd_update(w(), arena.view(1, DType::kFloat32, {16}), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom"}),
                  fusedopt::sgd_mom_update(w(), g(), arena.view(2, DType::kFloat32, {4, 4, 1}), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "weight32"}),
                  fusedopt::mp_sgd_update(hw(), hg(), arena.view(6, DType::kFloat32, {2, 8}), sgd()));
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "prev"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, arena.view(3, DType::kFloat32, {4}), dca()));
  const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "grads[1]", "weights[1]"}),
                  fusedopt::multi_sgd_update({a, b},
                                             {arena.view(1, DType::kFloat32, {8}),
                                              arena.view(1, DType::kFloat32, {7}, 64)},
                                             multi(2)));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "negative"}),
                  fusedopt::sgd_update(arena.view(0, DType::kFloat32, {-1, 4}),
                                       arena.view(1, DType::kFloat32, {-1, 4}), sgd()));
}

TEST_F(ApiErrors, NonContiguous) {
  // A transposed array is dense: accepted only when every array of the update has its strides.
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "strides of weight"}),
                  fusedopt::sgd_update(transposed(w()), g(), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "strides of weight"}),
                  fusedopt::sgd_update(w(), transposed(g()), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "strides of weight"}),
                  fusedopt::sgd_mom_update(w(), g(), transposed(m()), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "weight32", "strides of weight"}),
                  fusedopt::mp_sgd_update(hw(), hg(), transposed(w32()), sgd()));
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "prev", "strides of weight"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, transposed(prev()), dca()));
  // A strided view of every other element (stride 2) is not dense.
  TensorView every_other = arena.view(0, DType::kFloat32, {8});
  every_other.has_strides = true;
  every_other.strides[0] = 2;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "dense"}),
                  fusedopt::sgd_update(every_other, arena.view(1, DType::kFloat32, {8}), sgd()));
}

TEST_F(ApiErrors, ExplicitCContiguousStridesAreAccepted) {
  TensorView a = w(), b = g();
  a.has_strides = b.has_strides = true;
  a.strides[0] = b.strides[0] = 4;
  a.strides[1] = b.strides[1] = 1;
  expect_accepted([&] { fusedopt::sgd_update(a, b, sgd()); });
  // size-1 dimensions may carry any stride
  TensorView c = arena.view(0, DType::kFloat32, {1, 16}), d = arena.view(1, DType::kFloat32, {1, 16});
  c.has_strides = true;
  c.strides[0] = 12345;
  c.strides[1] = 1;
  expect_accepted([&] { fusedopt::sgd_update(c, d, sgd()); });
}

TEST_F(ApiErrors, ReadOnlyOutputs) {
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "read-only"}),
                  fusedopt::sgd_update(read_only(w()), g(), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "read-only"}),
                  fusedopt::sgd_mom_update(w(), g(), read_only(m()), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_mom_update", "weight32", "read-only"}),
                  fusedopt::mp_sgd_mom_update(hw(), hg(), m32(), read_only(w32()), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "weight", "read-only"}),
                  fusedopt::mp_sgd_update(read_only(hw()), hg(), w32(), sgd()));
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "prev", "read-only"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, read_only(prev()), dca()));
  const TensorView ro_m = read_only(m());
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "mom", "read-only"}),
                  fusedopt::dcasgd_update(w(), g(), &ro_m, prev(), dca()));
  // the const-pointer constructor makes a read-only view
  const float* cw = reinterpret_cast<const float*>(arena.at(0));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "read-only"}),
                  fusedopt::sgd_update(TensorView(static_cast<const void*>(cw), DType::kFloat32, {4, 4}),
                                       g(), sgd()));
}

TEST_F(ApiErrors, ReadOnlyGradientIsAccepted) {
  expect_accepted([&] { fusedopt::sgd_mom_update(w(), read_only(g()), m(), sgd()); });
}

TEST_F(ApiErrors, NullDataWithElements) {
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "null"}),
                  fusedopt::sgd_update(null_data(w()), g(), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "null"}),
                  fusedopt::sgd_update(w(), null_data(g()), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "null"}),
                  fusedopt::sgd_mom_update(w(), g(), null_data(m()), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "weight32", "null"}),
                  fusedopt::mp_sgd_update(hw(), hg(), null_data(w32()), sgd()));
}

TEST_F(ApiErrors, NullDataWithoutElementsIsAccepted) {
  const TensorView e(static_cast<void*>(nullptr), DType::kFloat32, {0, 4});
  expect_accepted([&] { fusedopt::sgd_mom_update(e, e, e, sgd()); });
  expect_accepted([&] { fusedopt::dcasgd_update(e, e, &e, e, dca()); });
}

// ---- hyper-parameters ---------------------------------------------------------------------------------

TEST_F(ApiErrors, ClipGradientZeroNegativeOrNaN) {
  for (double c : {0.0, -0.0, -1.0, -kInf, kNaN}) {
    SCOPED_TRACE("clip_gradient = " + std::to_string(c));
    auto p = sgd();
    p.clip_gradient = c;
    auto dp = dca();
    dp.clip_gradient = c;
    auto mp = multi(1);
    mp.clip_gradient = c;
    EXPECT_REJECTED(ValueError, N({"sgd_update", "clip_gradient"}), fusedopt::sgd_update(w(), g(), p));
    EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "clip_gradient"}),
                    fusedopt::sgd_mom_update(w(), g(), m(), p));
    EXPECT_REJECTED(ValueError, N({"mp_sgd_mom_update", "clip_gradient"}),
                    fusedopt::mp_sgd_mom_update(hw(), hg(), m32(), w32(), p));
    EXPECT_REJECTED(ValueError, N({"dcasgd_update", "clip_gradient"}),
                    fusedopt::dcasgd_update(w(), g(), nullptr, prev(), dp));
    EXPECT_REJECTED(ValueError, N({"mp_dcasgd_update", "clip_gradient"}),
                    fusedopt::mp_dcasgd_update(hw(), hg(), nullptr, prev32(), w32(), dp));
    EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "clip_gradient"}),
                    fusedopt::multi_sgd_update({w()}, {g()}, mp));
  }
}

TEST_F(ApiErrors, ClipGradientInfinityIsAccepted) {
  auto p = sgd();
  p.clip_gradient = kInf;
  expect_accepted([&] { fusedopt::sgd_mom_update(w(), g(), m(), p); });
}

TEST_F(ApiErrors, LearningRateAndWeightDecay) {
  for (double v : {-0.1, -kInf, kInf, kNaN}) {
    SCOPED_TRACE("value = " + std::to_string(v));
    auto p = sgd();
    p.lr = v;
    EXPECT_REJECTED(ValueError, N({"sgd_update", "lr"}), fusedopt::sgd_update(w(), g(), p));
    EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "lr"}), fusedopt::mp_sgd_update(hw(), hg(), w32(), p));
    p = sgd();
    p.wd = v;
    EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "wd"}), fusedopt::sgd_mom_update(w(), g(), m(), p));
    auto dp = dca();
    dp.lr = v;
    EXPECT_REJECTED(ValueError, N({"dcasgd_update", "lr"}),
                    fusedopt::dcasgd_update(w(), g(), nullptr, prev(), dp));
    dp = dca();
    dp.wd = v;
    EXPECT_REJECTED(ValueError, N({"mp_dcasgd_update", "wd"}),
                    fusedopt::mp_dcasgd_update(hw(), hg(), nullptr, prev32(), w32(), dp));
    auto mp = multi(2);
    mp.lrs[1] = v;
    const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
    const TensorView ga = arena.view(1, DType::kFloat32, {8}), gb = arena.view(1, DType::kFloat32, {8}, 64);
    EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "lrs"}), fusedopt::multi_sgd_update({a, b}, {ga, gb}, mp));
    mp = multi(2);
    mp.wds[1] = v;
    EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "wds"}), fusedopt::multi_sgd_update({a, b}, {ga, gb}, mp));
  }
}

TEST_F(ApiErrors, MomentumLamdaAndRescale) {
  for (double v : {-0.5, kInf, kNaN}) {
    SCOPED_TRACE("value = " + std::to_string(v));
    EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "momentum"}),
                    fusedopt::sgd_mom_update(w(), g(), m(), sgd(v)));
    EXPECT_REJECTED(ValueError, N({"mp_sgd_mom_update", "momentum"}),
                    fusedopt::mp_sgd_mom_update(hw(), hg(), m32(), w32(), sgd(v)));
    const TensorView mm = m();
    EXPECT_REJECTED(ValueError, N({"dcasgd_update", "momentum"}),
                    fusedopt::dcasgd_update(w(), g(), &mm, prev(), dca(v)));
    auto mp = multi(1);
    mp.momentum = v;
    EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "momentum"}),
                    fusedopt::multi_sgd_mom_update({w()}, {g()}, {m()}, mp));
    auto dp = dca();
    dp.lamda = v;
    EXPECT_REJECTED(ValueError, N({"dcasgd_update", "lamda"}),
                    fusedopt::dcasgd_update(w(), g(), nullptr, prev(), dp));
  }
  for (double v : {kInf, -kInf, kNaN}) {
    SCOPED_TRACE("rescale_grad = " + std::to_string(v));
    auto p = sgd();
    p.rescale_grad = v;
    EXPECT_REJECTED(ValueError, N({"sgd_update", "rescale_grad"}), fusedopt::sgd_update(w(), g(), p));
    auto dp = dca();
    dp.rescale_grad = v;
    EXPECT_REJECTED(ValueError, N({"dcasgd_update", "rescale_grad"}),
                    fusedopt::dcasgd_update(w(), g(), nullptr, prev(), dp));
    auto mp = multi(1);
    mp.rescale_grad = v;
    EXPECT_REJECTED(ValueError, N({"multi_mp_sgd_update", "rescale_grad"}),
                    fusedopt::multi_mp_sgd_update({hw()}, {hg()}, {w32()}, mp));
  }
}

TEST_F(ApiErrors, DcasgdMomentumWithoutBuffer) {
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "momentum", "mom"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, prev(), dca(0.9)));
  EXPECT_REJECTED(ValueError, N({"mp_dcasgd_update", "momentum", "mom"}),
                  fusedopt::mp_dcasgd_update(hw(), hg(), nullptr, prev32(), w32(), dca(0.9)));
}

TEST_F(ApiErrors, SgdWithoutMomentumIgnoresMomentum) {
  // params.h: "ignored by sgd_update" (MXNet's sgd_update has no momentum argument).
  expect_accepted([&] { fusedopt::sgd_update(w(), g(), sgd(-1.0)); });
}

// ---- dry-run validation: check_sgd_args / check_dcasgd_args ---------------------------------------

TEST_F(ApiErrors, CheckArgsAcceptValidCallsWithoutWriting) {
  const std::vector<unsigned char> before = arena.bytes();
  const TensorView mm = m(), ww32 = w32(), mm32 = m32();
  EXPECT_NO_THROW(fusedopt::check_sgd_args(w(), g(), nullptr, nullptr, sgd()));
  EXPECT_NO_THROW(fusedopt::check_sgd_args(w(), g(), &mm, nullptr, sgd()));
  EXPECT_NO_THROW(fusedopt::check_sgd_args(hw(), hg(), nullptr, &ww32, sgd()));
  EXPECT_NO_THROW(fusedopt::check_sgd_args(hw(), hg(), &mm32, &ww32, sgd()));
  EXPECT_NO_THROW(fusedopt::check_dcasgd_args(w(), g(), &mm, prev(), nullptr, dca(0.9)));
  EXPECT_NO_THROW(fusedopt::check_dcasgd_args(hw(), hg(), &mm32, prev32(), &ww32, dca(0.9)));
  EXPECT_TRUE(arena.bytes() == before) << "a check_*_args call wrote to its arrays";
}

TEST_F(ApiErrors, CheckArgsThrowTheOperatorsErrors) {
  const TensorView ro_m = read_only(m()), mm = m(), mm32 = m32(), ww32 = w32();
  const TensorView bad32 = arena.view(6, DType::kFloat16, {4, 4});
  EXPECT_REJECTED(TypeError, N({"sgd_update", "grad", "float64"}),
                  fusedopt::check_sgd_args(w(), arena.view(1, DType::kFloat64, {4, 4}), nullptr, nullptr, sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "read-only"}),
                  fusedopt::check_sgd_args(w(), g(), &ro_m, nullptr, sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "momentum"}),
                  fusedopt::check_sgd_args(w(), g(), &mm, nullptr, sgd(kNaN)));
  EXPECT_REJECTED(TypeError, N({"mp_sgd_update", "weight32"}),
                  fusedopt::check_sgd_args(hw(), hg(), nullptr, &bad32, sgd()));
  auto p = sgd();
  p.clip_gradient = 0.0;
  EXPECT_REJECTED(ValueError, N({"mp_sgd_mom_update", "clip_gradient"}),
                  fusedopt::check_sgd_args(hw(), hg(), &mm32, &ww32, p));
  auto dp = dca();
  dp.lamda = -1.0;
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "lamda"}),
                  fusedopt::check_dcasgd_args(w(), g(), nullptr, prev(), nullptr, dp));
  EXPECT_REJECTED(ValueError, N({"mp_dcasgd_update", "prev32", "overlaps"}),
                  fusedopt::check_dcasgd_args(hw(), hg(), nullptr, w32(), &ww32, dca()));
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "momentum", "mom"}),
                  fusedopt::check_dcasgd_args(w(), g(), nullptr, prev(), nullptr, dca(0.5)));
}

// ---- aliasing -----------------------------------------------------------------------------------------

TEST_F(ApiErrors, OverlappingArrays) {
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "grad", "overlaps"}),
                  fusedopt::sgd_update(w(), arena.view(0, DType::kFloat32, {4, 4}), sgd()));
  // mom starts two elements into the weight
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "weight", "overlaps"}),
                  fusedopt::sgd_mom_update(w(), g(), arena.view(0, DType::kFloat32, {4, 4}, 8), sgd()));
  // grad (read) shares its last element with mom (written)
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "grad", "overlaps"}),
                  fusedopt::sgd_mom_update(w(), g(), arena.view(1, DType::kFloat32, {4, 4}, 60), sgd()));
  // the float32 master overlaps the float16 weight's bytes
  EXPECT_REJECTED(ValueError, N({"mp_sgd_update", "weight32", "weight", "overlaps"}),
                  fusedopt::mp_sgd_update(hw(), hg(), arena.view(4, DType::kFloat32, {4, 4}, 16), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_sgd_mom_update", "weight32", "mom", "overlaps"}),
                  fusedopt::mp_sgd_mom_update(hw(), hg(), m32(), arena.view(7, DType::kFloat32, {4, 4}), sgd()));
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "prev", "weight", "overlaps"}),
                  fusedopt::dcasgd_update(w(), g(), nullptr, w(), dca()));
  const TensorView mm = prev();
  EXPECT_REJECTED(ValueError, N({"dcasgd_update", "prev", "mom", "overlaps"}),
                  fusedopt::dcasgd_update(w(), g(), &mm, prev(), dca()));
}

TEST_F(ApiErrors, OverlappingArraysInAggregatedCalls) {
  const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
  const TensorView ga = arena.view(1, DType::kFloat32, {8}), gb = arena.view(1, DType::kFloat32, {8}, 64);
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "weights[0]", "weights[2]", "overlaps"}),
                  fusedopt::multi_sgd_update({a, b, a}, {ga, gb, arena.view(1, DType::kFloat32, {8}, 128)},
                                             multi(3)));
  // partial: weights[1] starts inside weights[0]
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "weights[1]", "weights[0]", "overlaps"}),
                  fusedopt::multi_sgd_update({a, arena.view(0, DType::kFloat32, {8}, 28)}, {ga, gb}, multi(2)));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "moms[1]", "grads[0]", "overlaps"}),
                  fusedopt::multi_sgd_mom_update({a, b}, {ga, gb},
                                                 {arena.view(2, DType::kFloat32, {8}), ga}, multi(2)));
  EXPECT_REJECTED(ValueError, N({"multi_mp_sgd_update", "weights32[0]", "weights32[1]", "overlaps"}),
                  fusedopt::multi_mp_sgd_update(
                      {arena.view(4, DType::kFloat16, {8}), arena.view(4, DType::kFloat16, {8}, 64)},
                      {arena.view(5, DType::kFloat16, {8}), arena.view(5, DType::kFloat16, {8}, 64)},
                      {arena.view(6, DType::kFloat32, {8}), arena.view(6, DType::kFloat32, {8}, 16)}, multi(2)));
}

TEST_F(ApiErrors, SharedReadOnlyInputsAndEmptyArraysAreAccepted) {
  const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
  const TensorView ga = arena.view(1, DType::kFloat32, {8});
  // one gradient array read by two updates: nothing is written through it
  expect_accepted([&] { fusedopt::multi_sgd_update({a, b}, {ga, ga}, multi(2)); });
  // zero-size arrays occupy no memory, wherever their pointer is
  const TensorView e = arena.view(0, DType::kFloat32, {0});
  expect_accepted([&] { fusedopt::multi_sgd_update({e, e, a}, {e, e, ga}, multi(3)); });
}

// ---- aggregated calls: counts, and nothing written when the last tensor is bad ------------------------

TEST_F(ApiErrors, AggregatedCountMismatch) {
  const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
  const TensorView ga = arena.view(1, DType::kFloat32, {8}), gb = arena.view(1, DType::kFloat32, {8}, 64);
  const TensorView ma = arena.view(2, DType::kFloat32, {8}), mb = arena.view(2, DType::kFloat32, {8}, 64);
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "lrs", "2", "1"}),
                  fusedopt::multi_sgd_update({a, b}, {ga, gb}, [] { auto p = multi(2); p.lrs.pop_back(); return p; }()));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "wds"}),
                  fusedopt::multi_sgd_update({a, b}, {ga, gb}, [] { auto p = multi(2); p.wds.push_back(0); return p; }()));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "grads"}),
                  fusedopt::multi_sgd_update({a, b}, {ga}, multi(2)));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "moms"}),
                  fusedopt::multi_sgd_mom_update({a, b}, {ga, gb}, {ma}, multi(2)));
  EXPECT_REJECTED(ValueError, N({"multi_mp_sgd_mom_update", "weights32"}),
                  fusedopt::multi_mp_sgd_mom_update(
                      {arena.view(4, DType::kFloat16, {8})}, {arena.view(5, DType::kFloat16, {8})},
                      {arena.view(7, DType::kFloat32, {8})}, {}, multi(1)));
  (void)mb;
}

TEST_F(ApiErrors, AggregatedDcasgd) {
  // Two float32 tensors: weights in slot 0, grads 1, moms 2, prevs 3 (offset 64 for the second).
  auto v = [&](std::size_t slot, std::size_t k) { return arena.view(slot, DType::kFloat32, {8}, 64 * k); };
  const std::vector<TensorView> ws{v(0, 0), v(0, 1)}, gs{v(1, 0), v(1, 1)}, ms{v(2, 0), v(2, 1)},
      ps{v(3, 0), v(3, 1)};
  auto params = [] {
    fusedopt::MultiDcasgdParams p;
    p.lrs = {0.1, 0.1};
    p.wds = {0.0, 0.0};
    p.momentum = 0.9;
    return p;
  };
  EXPECT_REJECTED(ValueError, N({"multi_dcasgd_update", "momentum", "moms"}),
                  fusedopt::multi_dcasgd_update(ws, gs, {}, ps, params()));
  EXPECT_REJECTED(ValueError, N({"multi_dcasgd_update", "prevs", "2", "1"}),
                  fusedopt::multi_dcasgd_update(ws, gs, ms, {ps[0]}, params()));
  EXPECT_REJECTED(ValueError, N({"multi_dcasgd_update", "lamda"}),
                  fusedopt::multi_dcasgd_update(ws, gs, ms, ps, [&] { auto p = params(); p.lamda = -1; return p; }()));
  EXPECT_REJECTED(ValueError, N({"multi_dcasgd_update", "prevs[1]", "overlaps"}),
                  fusedopt::multi_dcasgd_update(ws, gs, ms, {ps[0], ws[1]}, params()));
  EXPECT_REJECTED(ValueError, N({"multi_dcasgd_update", "prevs[1]", "read-only"}),
                  fusedopt::multi_dcasgd_update(ws, gs, ms, {ps[0], read_only(ps[1])}, params()));
  EXPECT_REJECTED(TypeError, N({"multi_mp_dcasgd_update", "prevs32[0]"}),
                  fusedopt::multi_mp_dcasgd_update({arena.view(4, DType::kFloat16, {8})},
                                                   {arena.view(5, DType::kFloat16, {8})}, {},
                                                   {arena.view(6, DType::kFloat16, {8})},
                                                   {arena.view(7, DType::kFloat32, {8})},
                                                   [] { fusedopt::MultiDcasgdParams p; p.lrs = {0.1}; p.wds = {0.0}; return p; }()));
}

TEST_F(ApiErrors, BadLastTensorLeavesTheFirstOnesUntouched) {
  // Four valid float32 tensors, then one bad fifth; the arena check proves tensors 0-3 were not updated.
  std::vector<TensorView> ws, gs, ms;
  for (std::size_t k = 0; k < 5; ++k) {
    ws.push_back(arena.view(0, DType::kFloat32, {16}, 64 * k));
    gs.push_back(arena.view(1, DType::kFloat32, {16}, 64 * k));
    ms.push_back(arena.view(2, DType::kFloat32, {16}, 64 * k));
  }
  auto with = [](std::vector<TensorView> v, const TensorView& last) {
    v.back() = last;
    return v;
  };
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "weights[4]", "read-only"}),
                  fusedopt::multi_sgd_mom_update(with(ws, read_only(ws[4])), gs, ms, multi(5)));
  EXPECT_REJECTED(TypeError, N({"multi_sgd_mom_update", "grads[4]"}),
                  fusedopt::multi_sgd_mom_update(ws, with(gs, arena.view(1, DType::kFloat64, {16}, 256)), ms,
                                                 multi(5)));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "moms[4]"}),
                  fusedopt::multi_sgd_mom_update(ws, gs, with(ms, arena.view(2, DType::kFloat32, {15}, 256)),
                                                 multi(5)));
  TensorView strided = arena.view(2, DType::kFloat32, {16}, 256);
  strided.has_strides = true;
  strided.strides[0] = 2;
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "moms[4]", "strides of weights[4]"}),
                  fusedopt::multi_sgd_mom_update(ws, gs, with(ms, strided), multi(5)));
  auto p = multi(5);
  p.lrs[4] = kNaN;
  EXPECT_REJECTED(ValueError, N({"multi_sgd_mom_update", "lrs"}), fusedopt::multi_sgd_mom_update(ws, gs, ms, p));
  // the last weight aliases the first
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "overlaps"}),
                  fusedopt::multi_sgd_update(with(ws, ws[0]), gs, multi(5)));
  // mixed dtypes are grouped internally: a bad float16 tensor last must still stop the float32 ones
  std::vector<TensorView> mixed_w = ws, mixed_g = gs;
  mixed_w.back() = arena.view(4, DType::kFloat16, {16});
  mixed_g.back() = arena.view(5, DType::kFloat16, {17});
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "grads[4]"}),
                  fusedopt::multi_sgd_update(mixed_w, mixed_g, multi(5)));
}

// ---- row-sparse gradients -----------------------------------------------------------------------------

class RowSparseErrors : public ApiErrors {
 protected:
  // weight (4, 3) float32 in slot 0, mom in slot 2, gradient rows in slot 1, indices in slot 9
  TensorView rw() { return arena.view(0, DType::kFloat32, {4, 3}); }
  TensorView rm() { return arena.view(2, DType::kFloat32, {4, 3}); }
  fusedopt::RowSparseView grad(std::vector<std::int64_t> idx, std::int64_t data_rows = -1,
                               std::int64_t data_cols = 3) {
    idx_ = std::move(idx);
    fusedopt::RowSparseView g;
    const std::int64_t rows = data_rows < 0 ? static_cast<std::int64_t>(idx_.size()) : data_rows;
    g.data = arena.view(1, DType::kFloat32, {rows, data_cols});
    g.indices = idx_.data();
    g.num_indices = static_cast<std::int64_t>(idx_.size());
    g.ndim = 2;
    g.shape[0] = 4;
    g.shape[1] = 3;
    return g;
  }
  static fusedopt::SgdParams lazy(bool on) {
    auto p = sgd();
    p.lazy_update = on;
    return p;
  }
  std::vector<std::int64_t> idx_;
};

TEST_F(RowSparseErrors, Indices) {
  for (bool lz : {true, false}) {
    SCOPED_TRACE(lz ? "lazy" : "standard");
    EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.indices", "twice"}),
                    fusedopt::sgd_update(rw(), grad({1, 3, 1}), lazy(lz)));
    EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "grad.indices", "out of range"}),
                    fusedopt::sgd_mom_update(rw(), grad({0, 4}), rm(), lazy(lz)));
    EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.indices", "-1"}),
                    fusedopt::sgd_update(rw(), grad({2, -1}), lazy(lz)));
    auto g = grad({0, 1});
    g.indices = nullptr;
    EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.indices", "null"}), fusedopt::sgd_update(rw(), g, lazy(lz)));
  }
}

TEST_F(RowSparseErrors, Shapes) {
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.data"}),  // 3 data rows for 2 indices
                  fusedopt::sgd_update(rw(), grad({0, 2}, 3), lazy(true)));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.data"}),  // rows of length 2, weight rows of 3
                  fusedopt::sgd_update(rw(), grad({0, 2}, 2, 2), lazy(false)));
  auto g = grad({0});
  g.shape[1] = 4;  // dense shape (4, 4) for a (4, 3) weight
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "(4, 3)", "(4, 4)"}), fusedopt::sgd_update(rw(), g, lazy(true)));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom"}),
                  fusedopt::sgd_mom_update(rw(), grad({0}), arena.view(2, DType::kFloat32, {3, 4}), lazy(true)));
  auto g0 = grad({});
  g0.ndim = 0;
  g0.data = arena.view(1, DType::kFloat32, {});
  EXPECT_REJECTED(ValueError, N({"sgd_update", "dimension"}),
                  fusedopt::sgd_update(arena.view(0, DType::kFloat32, {}), g0, lazy(true)));
}

TEST_F(RowSparseErrors, DtypesHyperParametersAndAliasing) {
  auto g = grad({1});
  g.data.dtype = DType::kFloat64;
  EXPECT_REJECTED(TypeError, N({"sgd_update", "grad.data", "float64"}), fusedopt::sgd_update(rw(), g, lazy(true)));
  EXPECT_REJECTED(TypeError, N({"sgd_mom_update", "mom"}),
                  fusedopt::sgd_mom_update(rw(), grad({1}), arena.view(2, DType::kFloat16, {4, 3}), lazy(true)));
  auto p = lazy(false);
  p.clip_gradient = 0.0;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "clip_gradient"}), fusedopt::sgd_update(rw(), grad({1}), p));
  p = lazy(false);
  p.lr = -1.0;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "lr"}), fusedopt::sgd_update(rw(), grad({1}), p));
  p = lazy(false);
  p.wd = kNaN;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "wd"}), fusedopt::sgd_update(rw(), grad({1}), p));
  p = lazy(false);
  p.rescale_grad = kInf;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "rescale_grad"}), fusedopt::sgd_update(rw(), grad({1}), p));
  p = lazy(false);
  p.momentum = -0.9;
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "momentum"}), fusedopt::sgd_mom_update(rw(), grad({1}), rm(), p));
  auto alias = grad({1});
  alias.data = arena.view(0, DType::kFloat32, {1, 3}, 12);  // gradient row = weight row 1
  EXPECT_REJECTED(ValueError, N({"sgd_update", "overlaps"}), fusedopt::sgd_update(rw(), alias, lazy(false)));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "weight", "overlaps"}),
                  fusedopt::sgd_mom_update(rw(), grad({1}), rw(), lazy(true)));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "read-only"}),
                  fusedopt::sgd_update(read_only(rw()), grad({1}), lazy(true)));
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "contiguous"}),
                  fusedopt::sgd_update(transposed(arena.view(0, DType::kFloat32, {4, 4})),
                                       [&] { auto h = grad({1}, 1, 4); h.shape[1] = 4; return h; }(), lazy(true)));
}

TEST_F(RowSparseErrors, CheckArgs) {
  const std::vector<unsigned char> before = arena.bytes();
  const TensorView mm = rm();
  EXPECT_NO_THROW(fusedopt::check_sgd_args(rw(), grad({3, 0}), nullptr, lazy(false)));
  EXPECT_NO_THROW(fusedopt::check_sgd_args(rw(), grad({2}), &mm, lazy(true)));
  EXPECT_TRUE(arena.bytes() == before) << "check_sgd_args wrote to its arrays";
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad.indices", "twice"}),
                  fusedopt::check_sgd_args(rw(), grad({2, 2}), nullptr, lazy(false)));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "grad.indices", "out of range"}),
                  fusedopt::check_sgd_args(rw(), grad({7}), &mm, lazy(true)));
}

// ---- dimensions ---------------------------------------------------------------------------------------

TEST_F(ApiErrors, MoreThanEightDimensions) {
  float x = 0.0f;
  try {
    TensorView v(&x, DType::kFloat32, {1, 1, 1, 1, 1, 1, 1, 1, 1});
    ADD_FAILURE() << "a 9-dimensional view was built";
  } catch (const fusedopt::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find('8'), std::string::npos) << e.what();
  }
  const std::vector<std::int64_t> nine(9, 1);
  EXPECT_THROW(TensorView(&x, DType::kFloat32, nine), fusedopt::ValueError);
  TensorView v;
  EXPECT_THROW(v.set_shape(nine.data(), 9), fusedopt::ValueError);
  EXPECT_THROW(v.set_shape(nine.data(), -1), fusedopt::ValueError);
  EXPECT_NO_THROW(TensorView(&x, DType::kFloat32, {1, 1, 1, 1, 1, 1, 1, 1}));
}

TEST_F(ApiErrors, OutOfRangeNdimSetDirectlyIsRejected) {
  // TensorView's fields are public, so a caller can set ndim without set_shape(). Validation must not
  // read shape[] out of bounds (ndim 9) or treat a negative ndim as a one-element scalar and write it.
  TensorView a = w(), b = g();
  a.ndim = b.ndim = 9;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight"}), fusedopt::sgd_update(a, b, sgd()));
  a = w();
  b = g();
  a.ndim = b.ndim = -1;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight"}), fusedopt::sgd_update(a, b, sgd()));
}

// ---- capabilities and devices -------------------------------------------------------------------------

TEST(CapabilityErrors, UnknownOrUnsupportedNameIsRejected) {
  const std::string before = fusedopt::cpu_capability();
  for (const char* name : {"sse9", "", "AVX2 ", "neon"}) {
    try {
      fusedopt::set_cpu_capability(name);
      ADD_FAILURE() << "accepted '" << name << "'";
    } catch (const fusedopt::ValueError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("set_cpu_capability"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("'") + name + "'"), std::string::npos) << what;
    }
    EXPECT_EQ(fusedopt::cpu_capability(), before) << "a rejected name changed the capability";
  }
  const auto supported = fusedopt::supported_cpu_capabilities();
  for (const char* name : {"avx2", "avx512"}) {
    if (std::find(supported.begin(), supported.end(), name) != supported.end()) continue;
    EXPECT_THROW(fusedopt::set_cpu_capability(name), fusedopt::ValueError) << name;
    EXPECT_EQ(fusedopt::cpu_capability(), before);
  }
}

TEST_F(ApiErrors, CudaViewWithoutCuda) {
#if FUSEDOPT_WITH_CUDA
  GTEST_SKIP() << "this build has CUDA kernels";
#else
  using fusedopt::DeviceType;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "cuda:0", "without CUDA"}),
                  fusedopt::sgd_update(on(w(), DeviceType::kCUDA), on(g(), DeviceType::kCUDA), sgd()));
  EXPECT_REJECTED(ValueError, N({"mp_dcasgd_update", "weight", "without CUDA"}),
                  fusedopt::mp_dcasgd_update(on(hw(), DeviceType::kCUDA), on(hg(), DeviceType::kCUDA), nullptr,
                                             on(prev32(), DeviceType::kCUDA), on(w32(), DeviceType::kCUDA), dca()));
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "weights[0]", "without CUDA"}),
                  fusedopt::multi_sgd_update({on(w(), DeviceType::kCUDA)}, {on(g(), DeviceType::kCUDA)}, multi(1)));
  fusedopt::RowSparseView rg;
  const std::int64_t idx[] = {0};
  rg.data = on(arena.view(1, DType::kFloat32, {1, 4}), DeviceType::kCUDA);
  rg.indices = idx;
  rg.num_indices = 1;
  rg.ndim = 2;
  rg.shape[0] = 4;
  rg.shape[1] = 4;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "weight", "without CUDA"}),
                  fusedopt::sgd_update(on(w(), DeviceType::kCUDA), rg, sgd()));
#endif
}

TEST_F(ApiErrors, DeviceMismatch) {
  using fusedopt::DeviceType;
  EXPECT_REJECTED(ValueError, N({"sgd_update", "grad", "device", "cpu:0"}),
                  fusedopt::sgd_update(w(), on(g(), DeviceType::kCUDAHost), sgd()));
  EXPECT_REJECTED(ValueError, N({"sgd_mom_update", "mom", "device"}),
                  fusedopt::sgd_mom_update(w(), g(), on(m(), DeviceType::kCPU, 1), sgd()));
  const TensorView a = arena.view(0, DType::kFloat32, {8}), b = arena.view(0, DType::kFloat32, {8}, 64);
  const TensorView ga = arena.view(1, DType::kFloat32, {8}), gb = arena.view(1, DType::kFloat32, {8}, 64);
  EXPECT_REJECTED(ValueError, N({"multi_sgd_update", "weights[1]", "device"}),
                  fusedopt::multi_sgd_update({a, on(b, DeviceType::kCUDAManaged)},
                                             {ga, on(gb, DeviceType::kCUDAManaged)}, multi(2)));
}

}  // namespace
