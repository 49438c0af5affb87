// bench_sgd_cpu.cpp — dense single-tensor SGD rules on the CPU, once per capability:
//   BM_sgd/f32/<n>/<cap>            sgd_update, 12 B/elem            n = 1Mi, 16Mi, 64Mi
//   BM_sgd_mom/f32/<n>/<cap>        sgd_mom_update, 20 B/elem        n = 1Mi, 16Mi, 64Mi
//   BM_sgd_mom_cold/f32/<n>/<cap>   the same with the LLC flushed before every step (1Mi)
//   BM_mp_sgd/<f16|bf16>/<n>/<cap>      mp_sgd_update, 14 B/elem      n = 64Mi
//   BM_mp_sgd_mom/<f16|bf16>/<n>/<cap>  mp_sgd_mom_update, 22 B/elem  n = 64Mi
//   BM_plain_loop_sgd_mom/f32/<n>   a plain fused OpenMP loop (the same rule), the "C loop" of PERF.md
#include "bench_common.h"

#include "fusedopt/sgd.h"

namespace fb = fusedopt_bench;
using fusedopt::SgdParams;

namespace {

SgdParams params(double momentum) {
  SgdParams p;
  p.lr = 1e-3;
  p.wd = 1e-4;
  p.momentum = momentum;
  return p;
}

std::string key(const char* rule, const char* dt, std::int64_t n) {
  return std::string(rule) + "/" + dt + "/" + std::to_string(n);
}

void bm_sgd_f32(benchmark::State& st, std::int64_t n) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(key("sgd", "f32", n), &fresh);
  if (fresh) {
    d.add<float>(n, 1, -1.f, 1.f);
    d.add<float>(n, 2, -0.1f, 0.1f);
  }
  const auto w = fb::view(d.at<float>(0), n), g = fb::view(d.at<float>(1), n);
  const SgdParams p = params(0.0);
  fb::run_hot(st, 12.0 * n, [&] { fusedopt::sgd_update(w, g, p); });
}

void bm_sgd_mom_f32(benchmark::State& st, std::int64_t n, bool cold) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(key("sgd_mom", "f32", n), &fresh);
  if (fresh) {
    d.add<float>(n, 1, -1.f, 1.f);
    d.add<float>(n, 2, -0.1f, 0.1f);
    d.add<float>(n, 3, -0.01f, 0.01f);
  }
  const auto w = fb::view(d.at<float>(0), n), g = fb::view(d.at<float>(1), n),
             m = fb::view(d.at<float>(2), n);
  const SgdParams p = params(0.9);
  auto step = [&] { fusedopt::sgd_mom_update(w, g, m, p); };
  if (cold)
    fb::run_cold(st, 20.0 * n, step);
  else
    fb::run_hot(st, 20.0 * n, step);
}

template <class T>
void bm_mp_sgd(benchmark::State& st, std::int64_t n, bool mom) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(key(mom ? "mp_sgd_mom" : "mp_sgd", fb::DTypeOf<T>::name, n), &fresh);
  if (fresh) {
    d.add<T>(n, 1, -1.f, 1.f);          // weight (16-bit)
    d.add<T>(n, 2, -0.1f, 0.1f);        // grad (16-bit)
    d.add<float>(n, 1, -1.f, 1.f);      // master weight32
    d.add<float>(n, 3, -0.01f, 0.01f);  // momentum (float32)
  }
  const auto w = fb::view(d.at<T>(0), n), g = fb::view(d.at<T>(1), n);
  const auto w32 = fb::view(d.at<float>(2), n), m = fb::view(d.at<float>(3), n);
  const SgdParams p = params(mom ? 0.9 : 0.0);
  if (mom)
    fb::run_hot(st, 22.0 * n, [&] { fusedopt::mp_sgd_mom_update(w, g, m, w32, p); });
  else
    fb::run_hot(st, 14.0 * n, [&] { fusedopt::mp_sgd_update(w, g, w32, p); });
}

void bm_plain_loop_sgd_mom(benchmark::State& st, std::int64_t n) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(key("sgd_mom", "f32", n), &fresh);  // shares sgd_mom's buffers
  if (fresh) {
    d.add<float>(n, 1, -1.f, 1.f);
    d.add<float>(n, 2, -0.1f, 0.1f);
    d.add<float>(n, 3, -0.01f, 0.01f);
  }
  float* w = d.at<float>(0);
  const float* g = d.at<float>(1);
  float* m = d.at<float>(2);
  fb::run_hot(st, 20.0 * n, [&] {
    fb::parallel_ranges(n, [&](std::int64_t lo, std::int64_t hi) {
      fb::plain_sgd_mom_range(w, g, m, lo, hi, 1e-3f, 0.9f, 1e-4f);
    });
  });
}

void register_all() {
  const std::int64_t sizes[] = {fb::kMi, 16 * fb::kMi, 64 * fb::kMi};
  for (std::int64_t n : sizes) {
    const auto unit = n <= fb::kMi ? benchmark::kMicrosecond : benchmark::kMillisecond;
    fb::register_caps("BM_sgd/f32/" + std::to_string(n), [n](benchmark::State& st) { bm_sgd_f32(st, n); },
                      unit);
  }
  for (std::int64_t n : sizes) {
    const auto unit = n <= fb::kMi ? benchmark::kMicrosecond : benchmark::kMillisecond;
    fb::register_caps("BM_sgd_mom/f32/" + std::to_string(n),
                      [n](benchmark::State& st) { bm_sgd_mom_f32(st, n, false); }, unit);
    if (n == fb::kMi)  // same buffers as the hot case (registered right after it)
      fb::register_caps("BM_sgd_mom_cold/f32/" + std::to_string(n),
                        [n](benchmark::State& st) { bm_sgd_mom_f32(st, n, true); },
                        benchmark::kMicrosecond);
    fb::register_plain("BM_plain_loop_sgd_mom/f32/" + std::to_string(n),
                       [n](benchmark::State& st) { bm_plain_loop_sgd_mom(st, n); }, unit);
  }
  const std::int64_t n = 64 * fb::kMi;
  const std::string ns = std::to_string(n);
  fb::register_caps("BM_mp_sgd_mom/f16/" + ns,
                    [n](benchmark::State& st) { bm_mp_sgd<fusedopt::half>(st, n, true); });
  fb::register_caps("BM_mp_sgd_mom/bf16/" + ns,
                    [n](benchmark::State& st) { bm_mp_sgd<fusedopt::bfloat16>(st, n, true); });
  fb::register_caps("BM_mp_sgd/f16/" + ns,
                    [n](benchmark::State& st) { bm_mp_sgd<fusedopt::half>(st, n, false); });
  fb::register_caps("BM_mp_sgd/bf16/" + ns,
                    [n](benchmark::State& st) { bm_mp_sgd<fusedopt::bfloat16>(st, n, false); });
}

}  // namespace

FUSEDOPT_BENCH_MAIN(register_all)
