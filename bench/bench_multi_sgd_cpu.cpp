// bench_multi_sgd_cpu.cpp — whole-model SGD steps on the parameter lists of param_shapes.json (read at
// run time: --shapes=<file>, else FUSEDOPT_PARAM_SHAPES, else bench/param_shapes.json in the source
// tree) and on 161 tiny tensors, aggregated (one multi_* call) vs per tensor (one call per tensor):
//   BM_multi_<rule>/<dtype>/<list>/<cap>        one multi_sgd[_mom] / multi_mp_sgd_mom call
//   BM_<rule>_per_tensor/<dtype>/<list>/<cap>   the per-tensor operator, once per tensor
//   BM_prepared_<rule>/<dtype>/<list>/<cap>     fusedopt::PreparedUpdate::step (validated once)
// lists: resnet50 (161 tensors, 25.6 M elements), bert_base (199, 109.5 M), tiny161x64 (161 × 64).
// Rules: sgd (12 B/elem), sgd_mom (20), mp_sgd_mom f16/bf16 (22). Views and per-tensor
// hyper-parameters are prepared outside the timed loop (the C++ "prepared parameter group").
// Each operand lives in one slab with every tensor starting on a 64-byte line.
#include "bench_common.h"

#include "fusedopt/prepared.h"
#include "fusedopt/sgd.h"

namespace fb = fusedopt_bench;
using fusedopt::TensorView;

namespace {

enum class Rule { kSgd, kSgdMom, kMpSgdMom };

const char* rule_name(Rule r) {
  switch (r) {
    case Rule::kSgd: return "sgd";
    case Rule::kSgdMom: return "sgd_mom";
    case Rule::kMpSgdMom: return "mp_sgd_mom";
  }
  return "?";
}

double bytes_per_elem(Rule r) {
  switch (r) {
    case Rule::kSgd: return 12;
    case Rule::kSgdMom: return 20;
    case Rule::kMpSgdMom: return 22;
  }
  return 0;
}

enum class Mode { kAggregated, kPerTensor, kPrepared };

template <class T>
void bm_list(benchmark::State& st, Rule rule, const std::string& list, const fb::ShapeList& shapes,
             Mode mode) {
  const bool aggregated = mode == Mode::kAggregated;
  using State = std::conditional_t<std::is_same_v<T, float>, T, float>;  // mom / master are float32
  std::int64_t total = 0;
  const auto off = fb::slab_offsets(shapes, &total);
  bool fresh;
  fb::CaseData& d = fb::CaseData::get(std::string(rule_name(rule)) + "/" + fb::DTypeOf<T>::name + "/" + list,
                              &fresh);
  if (fresh) {
    d.add<T>(total, 1, -1.f, 1.f);              // 0 weight
    d.add<T>(total, 2, -0.1f, 0.1f);            // 1 grad
    d.add<State>(total, 3, -0.01f, 0.01f);      // 2 momentum
    if (rule == Rule::kMpSgdMom) d.add<float>(total, 1, -1.f, 1.f);  // 3 master
  }
  std::vector<TensorView> w, g, m, w32;
  std::int64_t elems = 0;
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    w.push_back(fb::view(d.at<T>(0) + off[k], shapes[k]));
    g.push_back(fb::view(d.at<T>(1) + off[k], shapes[k]));
    m.push_back(fb::view(d.at<State>(2) + off[k], shapes[k]));
    if (rule == Rule::kMpSgdMom) w32.push_back(fb::view(d.at<float>(3) + off[k], shapes[k]));
    elems += fb::numel(shapes[k]);
  }
  fusedopt::MultiSgdParams mp;
  mp.lrs.assign(shapes.size(), 1e-3);
  mp.wds.assign(shapes.size(), 1e-4);
  mp.momentum = rule == Rule::kSgd ? 0.0 : 0.9;
  std::vector<fusedopt::SgdParams> ps(shapes.size());
  for (std::size_t k = 0; k < shapes.size(); ++k) {
    ps[k].lr = mp.lrs[k];
    ps[k].wd = mp.wds[k];
    ps[k].momentum = mp.momentum;
  }
  const double bytes = bytes_per_elem(rule) * static_cast<double>(elems);
  const std::size_t n = shapes.size();
  if (mode == Mode::kPrepared) {  // validated once; a step passes only scalars
    fusedopt::PreparedUpdate prep = fusedopt::PreparedUpdate::sgd(
        w, g, rule == Rule::kSgd ? std::vector<TensorView>{} : m,
        rule == Rule::kMpSgdMom ? w32 : std::vector<TensorView>{});
    fb::run_hot(st, bytes, [&] { prep.step(1e-3, 1e-4, mp.momentum); });
    st.counters["tensors"] = static_cast<double>(n);
    return;
  }
  switch (rule) {
    case Rule::kSgd:
      if (aggregated)
        fb::run_hot(st, bytes, [&] { fusedopt::multi_sgd_update(w, g, mp); });
      else
        fb::run_hot(st, bytes, [&] {
          for (std::size_t k = 0; k < n; ++k) fusedopt::sgd_update(w[k], g[k], ps[k]);
        });
      break;
    case Rule::kSgdMom:
      if (aggregated)
        fb::run_hot(st, bytes, [&] { fusedopt::multi_sgd_mom_update(w, g, m, mp); });
      else
        fb::run_hot(st, bytes, [&] {
          for (std::size_t k = 0; k < n; ++k) fusedopt::sgd_mom_update(w[k], g[k], m[k], ps[k]);
        });
      break;
    case Rule::kMpSgdMom:
      if (aggregated)
        fb::run_hot(st, bytes, [&] { fusedopt::multi_mp_sgd_mom_update(w, g, m, w32, mp); });
      else
        fb::run_hot(st, bytes, [&] {
          for (std::size_t k = 0; k < n; ++k)
            fusedopt::mp_sgd_mom_update(w[k], g[k], m[k], w32[k], ps[k]);
        });
      break;
  }
  st.counters["tensors"] = static_cast<double>(n);
}

/// Registers aggregated, per-tensor and prepared variants of one rule/dtype/list, per capability.
template <class T>
void register_list(Rule rule, const std::string& list, const std::function<fb::ShapeList()>& load,
                   benchmark::TimeUnit unit) {
  const std::string dt = fb::DTypeOf<T>::name;
  const std::string r = rule_name(rule);
  for (Mode mode : {Mode::kAggregated, Mode::kPerTensor, Mode::kPrepared}) {
    const std::string base = mode == Mode::kAggregated  ? "BM_multi_" + r + "/" + dt + "/" + list
                             : mode == Mode::kPerTensor ? "BM_" + r + "_per_tensor/" + dt + "/" + list
                                                        : "BM_prepared_" + r + "/" + dt + "/" + list;
    fb::register_caps(
        base,
        [rule, list, load, mode](benchmark::State& st) {
          fb::ShapeList shapes;
          try {
            shapes = load();
          } catch (const std::exception& e) {
            st.SkipWithError(e.what());
            for (auto _ : st) {
            }
            return;
          }
          bm_list<T>(st, rule, list, shapes, mode);
        },
        unit);
  }
}

void register_all() {
  auto resnet = [] { return fb::load_shapes("resnet50"); };
  auto bert = [] { return fb::load_shapes("bert_base"); };
  auto tiny = [] { return fb::tiny_shapes(161, 64); };
  for (Rule r : {Rule::kSgd, Rule::kSgdMom}) {
    register_list<float>(r, "resnet50", resnet, benchmark::kMillisecond);
    register_list<float>(r, "bert_base", bert, benchmark::kMillisecond);
  }
  register_list<fusedopt::half>(Rule::kMpSgdMom, "resnet50", resnet, benchmark::kMillisecond);
  register_list<fusedopt::bfloat16>(Rule::kMpSgdMom, "resnet50", resnet, benchmark::kMillisecond);
  register_list<float>(Rule::kSgdMom, "tiny161x64", tiny, benchmark::kMicrosecond);
  register_list<float>(Rule::kSgd, "tiny161x64", tiny, benchmark::kMicrosecond);
}

}  // namespace

FUSEDOPT_BENCH_MAIN(register_all)
