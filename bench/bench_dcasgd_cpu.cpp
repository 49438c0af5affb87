// bench_dcasgd_cpu.cpp — fused DCASGD on the CPU, once per capability:
//   BM_dcasgd_mom/f32/<n>/<cap>              with momentum: w, g, m, prev read; w, m, prev written (28 B)
//   BM_dcasgd/f32/<n>/<cap>                  without momentum (20 B/elem)
//   BM_mp_dcasgd_mom/f16/<n>/<cap>           float16 weight, float32 master, prev and momentum (30 B)
//   BM_dcasgd_mom_per_tensor/f32/resnet50/<cap>  one dcasgd_update per ResNet-50 tensor (the API has no
//                                            aggregated DCASGD), 161 calls per step
#include "bench_common.h"

#include "fusedopt/dcasgd.h"

namespace fb = fusedopt_bench;
using fusedopt::DcasgdParams;
using fusedopt::TensorView;

namespace {

DcasgdParams params(double momentum) {
  DcasgdParams p;
  p.lr = 1e-3;
  p.wd = 1e-4;
  p.momentum = momentum;
  p.lamda = 0.04;
  return p;
}

void bm_dcasgd_f32(benchmark::State& st, std::int64_t n, bool mom) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get("dcasgd/f32/" + std::to_string(n), &fresh);
  if (fresh) {
    d.add<float>(n, 1, -1.f, 1.f);        // w
    d.add<float>(n, 2, -0.1f, 0.1f);      // g
    d.add<float>(n, 3, -0.01f, 0.01f);    // m
    d.add<float>(n, 4, -1.f, 1.f);        // prev
  }
  const auto w = fb::view(d.at<float>(0), n), g = fb::view(d.at<float>(1), n);
  const auto m = fb::view(d.at<float>(2), n), prev = fb::view(d.at<float>(3), n);
  const DcasgdParams p = params(mom ? 0.9 : 0.0);
  fb::run_hot(st, (mom ? 28.0 : 20.0) * n,
              [&] { fusedopt::dcasgd_update(w, g, mom ? &m : nullptr, prev, p); });
}

void bm_mp_dcasgd_f16(benchmark::State& st, std::int64_t n) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get("mp_dcasgd/f16/" + std::to_string(n), &fresh);
  if (fresh) {
    d.add<fusedopt::half>(n, 1, -1.f, 1.f);    // w
    d.add<fusedopt::half>(n, 2, -0.1f, 0.1f);  // g
    d.add<float>(n, 3, -0.01f, 0.01f);         // m
    d.add<float>(n, 4, -1.f, 1.f);             // prev32
    d.add<float>(n, 1, -1.f, 1.f);             // w32
  }
  const auto w = fb::view(d.at<fusedopt::half>(0), n), g = fb::view(d.at<fusedopt::half>(1), n);
  const auto m = fb::view(d.at<float>(2), n), prev = fb::view(d.at<float>(3), n),
             w32 = fb::view(d.at<float>(4), n);
  const DcasgdParams p = params(0.9);
  // w16 r+w (4), g16 (2), m r+w (8), prev32 r+w (8), w32 r+w (8)
  fb::run_hot(st, 30.0 * n, [&] { fusedopt::mp_dcasgd_update(w, g, &m, prev, w32, p); });
}

void bm_dcasgd_list(benchmark::State& st, const fb::ShapeList& shapes) {
  std::int64_t total = 0;
  const auto off = fb::slab_offsets(shapes, &total);
  bool fresh;
  fb::CaseData& d = fb::CaseData::get("dcasgd/f32/resnet50", &fresh);
  if (fresh) {
    d.add<float>(total, 1, -1.f, 1.f);
    d.add<float>(total, 2, -0.1f, 0.1f);
    d.add<float>(total, 3, -0.01f, 0.01f);
    d.add<float>(total, 4, -1.f, 1.f);
  }
  std::vector<TensorView> w, g, m, prev;
  std::int64_t elems = 0;
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    w.push_back(fb::view(d.at<float>(0) + off[k], shapes[k]));
    g.push_back(fb::view(d.at<float>(1) + off[k], shapes[k]));
    m.push_back(fb::view(d.at<float>(2) + off[k], shapes[k]));
    prev.push_back(fb::view(d.at<float>(3) + off[k], shapes[k]));
    elems += fb::numel(shapes[k]);
  }
  const DcasgdParams p = params(0.9);
  fb::run_hot(st, 28.0 * elems, [&] {
    for (std::size_t k = 0; k < shapes.size(); ++k) fusedopt::dcasgd_update(w[k], g[k], &m[k], prev[k], p);
  });
  st.counters["tensors"] = static_cast<double>(shapes.size());
}

void register_all() {
  const std::int64_t n = 64 * fb::kMi;
  const std::string ns = std::to_string(n);
  fb::register_caps("BM_dcasgd_mom/f32/" + ns, [n](benchmark::State& st) { bm_dcasgd_f32(st, n, true); });
  fb::register_caps("BM_dcasgd/f32/" + ns, [n](benchmark::State& st) { bm_dcasgd_f32(st, n, false); });
  fb::register_caps("BM_mp_dcasgd_mom/f16/" + ns, [n](benchmark::State& st) { bm_mp_dcasgd_f16(st, n); });
  fb::register_caps("BM_dcasgd_mom_per_tensor/f32/resnet50", [](benchmark::State& st) {
    fb::ShapeList shapes;
    try {
      shapes = fb::load_shapes("resnet50");
    } catch (const std::exception& e) {
      st.SkipWithError(e.what());
      for (auto _ : st) {
      }
      return;
    }
    bm_dcasgd_list(st, shapes);
  });
}

}  // namespace

FUSEDOPT_BENCH_MAIN(register_all)
