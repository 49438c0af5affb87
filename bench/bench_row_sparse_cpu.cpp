// bench_row_sparse_cpu.cpp — sgd_mom_update with a row-sparse gradient on a BERT-size embedding
// (30522 × 768 float32) with 2 % of the rows (610, unique, unsorted, fixed seed), once per capability:
//   BM_sgd_mom_rsp_lazy/f32/30522x768/rows610/<hot|cold>/<cap>  lazy: only the stored rows
//       minimal bytes = 20 B × 610 × 768 + 8 B × 610 (the indices); cold flushes the LLC every step
//       (an embedding step in training meets rows that are not in cache; hot re-touches the same
//       5.6 MB, which stays in L3)
//   BM_sgd_mom_rsp_std/f32/30522x768/rows610/<cap>  standard (lazy_update=false): every row
//       minimal bytes = 16 B × all elements (w, m read and written) + 4 B × stored elements + indices
#include <numeric>
#include <random>

#include "bench_common.h"
#include "fusedopt/sgd.h"

namespace fb = fusedopt_bench;

namespace {

constexpr std::int64_t kRows = 30522, kCols = 768;
constexpr std::int64_t kTouched = kRows * 2 / 100;  // 610


void bm_rsp(benchmark::State& st, bool lazy, bool cold) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get("rsp/f32/30522x768", &fresh);
  if (fresh) {
    d.add<float>(kRows * kCols, 1, -1.f, 1.f);       // w
    d.add<float>(kRows * kCols, 3, -0.01f, 0.01f);   // m
    d.add<float>(kTouched * kCols, 2, -0.1f, 0.1f);  // grad rows
  }
  static const std::vector<std::int64_t> idx = [] {
    std::vector<std::int64_t> all(kRows);
    std::iota(all.begin(), all.end(), 0);
    std::mt19937_64 rng(42);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(kTouched);
    return all;
  }();
  const auto w = fb::view(d.at<float>(0), {kRows, kCols});
  const auto m = fb::view(d.at<float>(1), {kRows, kCols});
  fusedopt::RowSparseView g;
  g.data = fb::view(d.at<float>(2), {kTouched, kCols});
  g.indices = idx.data();
  g.num_indices = kTouched;
  g.ndim = 2;
  g.shape[0] = kRows;
  g.shape[1] = kCols;
  fusedopt::SgdParams p;
  p.lr = 1e-3;
  p.wd = 1e-4;
  p.momentum = 0.9;
  p.lazy_update = lazy;
  const double bytes = lazy ? 20.0 * kTouched * kCols + 8.0 * kTouched
                            : 16.0 * kRows * kCols + 4.0 * kTouched * kCols + 8.0 * kTouched;
  auto step = [&] { fusedopt::sgd_mom_update(w, g, m, p); };
  if (cold)
    fb::run_cold(st, bytes, step);
  else
    fb::run_hot(st, bytes, step);
  st.counters["rows"] = static_cast<double>(kTouched);
}

void register_all() {
  const std::string base = "/f32/30522x768/rows" + std::to_string(kTouched);
  fb::register_caps("BM_sgd_mom_rsp_lazy" + base + "/hot",
                    [](benchmark::State& st) { bm_rsp(st, true, false); }, benchmark::kMicrosecond);
  fb::register_caps("BM_sgd_mom_rsp_lazy" + base + "/cold",
                    [](benchmark::State& st) { bm_rsp(st, true, true); }, benchmark::kMicrosecond);
  fb::register_caps("BM_sgd_mom_rsp_std" + base, [](benchmark::State& st) { bm_rsp(st, false, false); });
}

}  // namespace

FUSEDOPT_BENCH_MAIN(register_all)
