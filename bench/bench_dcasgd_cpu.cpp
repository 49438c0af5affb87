// bench_dcasgd_cpu.cpp — fused DCASGD on the CPU, once per capability:
//   BM_dcasgd_mom/f32/<n>/<cap>              with momentum: w, g, m, prev read; w, m, prev written (28 B)
//   BM_dcasgd/f32/<n>/<cap>                  without momentum (20 B/elem)
//   BM_mp_dcasgd_mom/f16/<n>/<cap>           float16 weight, float32 master, prev and momentum (30 B)
//   BM_dcasgd_mom_per_tensor/f32/resnet50/<cap>  one dcasgd_update per ResNet-50 tensor, 161 calls per
//                                            step
// The paper's form (per-worker backup, only read) and the adaptive lambda (SPEC section 13):
//   BM_dcasgd_backup_mom/f32/<n>/<cap>       w, g, m, backup read; w, m written (24 B/elem)
//   BM_dcasgd_backup_ada_mom/f32/<n>/<cap>   adaptive: + mean square read and written (32 B/elem)
//   BM_mp_dcasgd_backup_ada_mom/f16/<n>/<cap> float16 weight; float32 master, backup, m, ms (34 B)
//   BM_multi_dcasgd_backup_mom/f32/resnet50/<cap>, BM_multi_dcasgd_backup_ada_mom/...: one aggregated
//                                            call over the 161 ResNet-50 tensors (24 / 32 B/elem)
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

/// w, g, m, backup, ms (float32) of n elements, allocated once per case.
fb::CaseData& backup_data(const std::string& key, std::int64_t n) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(key, &fresh);
  if (fresh) {
    d.add<float>(n, 1, -1.f, 1.f);        // w
    d.add<float>(n, 2, -0.1f, 0.1f);      // g
    d.add<float>(n, 3, -0.01f, 0.01f);    // m
    d.add<float>(n, 4, -1.f, 1.f);        // backup
    d.add<float>(n, 5, 0.f, 0.01f);       // ms
  }
  return d;
}

void bm_backup_f32(benchmark::State& st, std::int64_t n, bool adaptive) {
  fb::CaseData& d = backup_data("dcasgd_backup/f32/" + std::to_string(n), n);
  const auto w = fb::view(d.at<float>(0), n), g = fb::view(d.at<float>(1), n);
  const auto m = fb::view(d.at<float>(2), n), b = fb::view(d.at<float>(3), n),
             ms = fb::view(d.at<float>(4), n);
  DcasgdParams p = params(0.9);
  p.lamda = 2.0;
  fb::run_hot(st, (adaptive ? 32.0 : 24.0) * n, [&] {
    fusedopt::dcasgd_backup_update(w, g, b, &m, adaptive ? &ms : nullptr, p);
  });
}

void bm_mp_backup_f16(benchmark::State& st, std::int64_t n) {
  bool fresh;
  fb::CaseData& d = fb::CaseData::get("mp_dcasgd_backup/f16/" + std::to_string(n), &fresh);
  if (fresh) {
    d.add<fusedopt::half>(n, 1, -1.f, 1.f);    // w
    d.add<fusedopt::half>(n, 2, -0.1f, 0.1f);  // g
    d.add<float>(n, 3, -0.01f, 0.01f);         // m
    d.add<float>(n, 4, -1.f, 1.f);             // backup
    d.add<float>(n, 5, 0.f, 0.01f);            // ms
    d.add<float>(n, 1, -1.f, 1.f);             // w32
  }
  const auto w = fb::view(d.at<fusedopt::half>(0), n), g = fb::view(d.at<fusedopt::half>(1), n);
  const auto m = fb::view(d.at<float>(2), n), b = fb::view(d.at<float>(3), n),
             ms = fb::view(d.at<float>(4), n), w32 = fb::view(d.at<float>(5), n);
  DcasgdParams p = params(0.9);
  p.lamda = 2.0;
  // w16 written (2; its old value is not read), g16 (2), backup (4), m r+w (8), ms r+w (8), w32 r+w (8)
  fb::run_hot(st, 32.0 * n,
              [&] { fusedopt::mp_dcasgd_backup_update(w, g, b, w32, &m, &ms, p); });
}

void bm_backup_list(benchmark::State& st, const fb::ShapeList& shapes, bool adaptive) {
  std::int64_t total = 0;
  const auto off = fb::slab_offsets(shapes, &total);
  fb::CaseData& d = backup_data("dcasgd_backup/f32/resnet50", total);
  std::vector<TensorView> w, g, m, b, ms;
  std::int64_t elems = 0;
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    w.push_back(fb::view(d.at<float>(0) + off[k], shapes[k]));
    g.push_back(fb::view(d.at<float>(1) + off[k], shapes[k]));
    m.push_back(fb::view(d.at<float>(2) + off[k], shapes[k]));
    b.push_back(fb::view(d.at<float>(3) + off[k], shapes[k]));
    ms.push_back(fb::view(d.at<float>(4) + off[k], shapes[k]));
    elems += fb::numel(shapes[k]);
  }
  fusedopt::MultiDcasgdParams p;
  p.lrs.assign(shapes.size(), 1e-3);
  p.wds.assign(shapes.size(), 1e-4);
  p.momentum = 0.9;
  p.lamda = 2.0;
  const std::vector<TensorView> none;
  fb::run_hot(st, (adaptive ? 32.0 : 24.0) * elems, [&] {
    fusedopt::multi_dcasgd_backup_update(w, g, b, m, adaptive ? ms : none, p);
  });
  st.counters["tensors"] = static_cast<double>(shapes.size());
}

/// Runs `fn` on the ResNet-50 shape list, or reports why it cannot.
void with_resnet50(benchmark::State& st, const std::function<void(const fb::ShapeList&)>& fn) {
  fb::ShapeList shapes;
  try {
    shapes = fb::load_shapes("resnet50");
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    for (auto _ : st) {
    }
    return;
  }
  fn(shapes);
}

void register_all() {
  const std::int64_t n = 64 * fb::kMi;
  const std::string ns = std::to_string(n);
  fb::register_caps("BM_dcasgd_mom/f32/" + ns, [n](benchmark::State& st) { bm_dcasgd_f32(st, n, true); });
  fb::register_caps("BM_dcasgd/f32/" + ns, [n](benchmark::State& st) { bm_dcasgd_f32(st, n, false); });
  fb::register_caps("BM_mp_dcasgd_mom/f16/" + ns, [n](benchmark::State& st) { bm_mp_dcasgd_f16(st, n); });
  fb::register_caps("BM_dcasgd_mom_per_tensor/f32/resnet50", [](benchmark::State& st) {
    with_resnet50(st, [&](const fb::ShapeList& shapes) { bm_dcasgd_list(st, shapes); });
  });
  fb::register_caps("BM_dcasgd_backup_mom/f32/" + ns,
                    [n](benchmark::State& st) { bm_backup_f32(st, n, false); });
  fb::register_caps("BM_dcasgd_backup_ada_mom/f32/" + ns,
                    [n](benchmark::State& st) { bm_backup_f32(st, n, true); });
  fb::register_caps("BM_mp_dcasgd_backup_ada_mom/f16/" + ns,
                    [n](benchmark::State& st) { bm_mp_backup_f16(st, n); });
  fb::register_caps("BM_multi_dcasgd_backup_mom/f32/resnet50", [](benchmark::State& st) {
    with_resnet50(st, [&](const fb::ShapeList& shapes) { bm_backup_list(st, shapes, false); });
  });
  fb::register_caps("BM_multi_dcasgd_backup_ada_mom/f32/resnet50", [](benchmark::State& st) {
    with_resnet50(st, [&](const fb::ShapeList& shapes) { bm_backup_list(st, shapes, true); });
  });
}

}  // namespace

FUSEDOPT_BENCH_MAIN(register_all)
