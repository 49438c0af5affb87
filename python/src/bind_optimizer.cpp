// bind_optimizer.cpp — the C++ LR schedulers (the implementation behind fusedopt.lr_scheduler) and the
// C++ SGD / DCASGD optimizer objects (exposed as fusedopt._core.cpp_SGD / cpp_DCASGD so tests can
// check that the Python and C++ optimizers agree bit for bit).
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bind_common.h"
#include "fusedopt/errors.h"
#include "fusedopt/lr_scheduler.h"
#include "fusedopt/optimizer.h"

namespace fusedopt::python {
namespace {

const char* mode_name(WarmupMode m) { return m == WarmupMode::kLinear ? "linear" : "constant"; }

py::array state_copy(const TensorView& v) {
  std::vector<py::ssize_t> shape(v.shape.begin(), v.shape.begin() + v.ndim);
  if (v.dtype == DType::kFloat32) {
    py::array_t<float> out(shape);
    std::memcpy(out.mutable_data(), v.data, static_cast<std::size_t>(v.numel()) * sizeof(float));
    return std::move(out);
  }
  if (v.dtype == DType::kFloat64) {
    py::array_t<double> out(shape);
    std::memcpy(out.mutable_data(), v.data, static_cast<std::size_t>(v.numel()) * sizeof(double));
    return std::move(out);
  }
  py::array_t<std::uint16_t> out(shape);  // 16-bit states as their bits
  std::memcpy(out.mutable_data(), v.data, static_cast<std::size_t>(v.numel()) * 2);
  return std::move(out);
}

template <class Opt>
void update_lists(Opt& opt, const std::vector<std::int64_t>& indices, const py::sequence& weights,
                  const py::sequence& grads) {
  std::vector<ArrayRef> w, g;
  for (std::size_t k = 0; k < py::len(weights); ++k)
    w.push_back(to_array_ref(weights[k], "update", "weights", static_cast<std::int64_t>(k)));
  for (std::size_t k = 0; k < py::len(grads); ++k)
    g.push_back(to_array_ref(grads[k], "update", "grads", static_cast<std::int64_t>(k)));
  auto wv = views(w), gv = views(g);
  py::gil_scoped_release release;
  opt.update(indices, wv, gv);
}

template <class Opt, class Holder>
void common_methods(py::class_<Opt, Holder>& c) {
  c.def_property_readonly("num_update", &Opt::num_update)
      .def_property_readonly("learning_rate", [](Opt& o) { return o.learning_rate(); })
      .def("set_learning_rate", &Opt::set_learning_rate)
      .def("set_lr_mult", &Opt::set_lr_mult)
      .def("set_wd_mult", &Opt::set_wd_mult)
      .def("update", &update_lists<Opt>, "indices"_a, "weights"_a, "grads"_a)
      .def("state", [](const Opt& o, std::int64_t index, const std::string& name) {
        return state_copy(o.state(index, name.c_str()));
      });
}

void base_options(OptimizerOptions& o, double rescale_grad, double wd,
                  std::optional<double> clip_gradient, std::optional<double> learning_rate,
                  std::shared_ptr<LRScheduler> lr_scheduler, std::int64_t begin_num_update,
                  bool multi_precision) {
  o.rescale_grad = rescale_grad;
  o.wd = wd;
  o.clip_gradient = clip_gradient;
  o.learning_rate = learning_rate;
  o.lr_scheduler = std::move(lr_scheduler);
  o.begin_num_update = begin_num_update;
  o.multi_precision = multi_precision;
}

}  // namespace

void bind_optimizer(py::module_& m) {
  using Sched = LRScheduler;
  py::class_<Sched, std::shared_ptr<Sched>>(m, "LRScheduler")
      .def(py::init([](double base_lr, std::int64_t warmup_steps, double warmup_begin_lr,
                       const std::string& warmup_mode) {
             return std::make_shared<Sched>(base_lr, warmup_steps, warmup_begin_lr,
                                            parse_warmup_mode(warmup_mode));
           }),
           "base_lr"_a = 0.01, "warmup_steps"_a = 0, "warmup_begin_lr"_a = 0.0,
           "warmup_mode"_a = "linear")
      .def("__call__", &Sched::operator(), "num_update"_a)
      .def("get_warmup_lr", &Sched::get_warmup_lr, "num_update"_a)
      .def_readwrite("base_lr", &Sched::base_lr)
      .def_readwrite("warmup_steps", &Sched::warmup_steps)
      .def_readwrite("warmup_final_lr", &Sched::warmup_final_lr)
      .def_readwrite("warmup_begin_lr", &Sched::warmup_begin_lr)
      .def_property(
          "warmup_mode", [](const Sched& s) { return std::string(mode_name(s.warmup_mode)); },
          [](Sched& s, const std::string& v) { s.warmup_mode = parse_warmup_mode(v); });

  py::class_<FactorScheduler, Sched, std::shared_ptr<FactorScheduler>>(m, "FactorScheduler")
      .def(py::init([](std::int64_t step, double factor, double stop_factor_lr, double base_lr,
                       std::int64_t warmup_steps, double warmup_begin_lr, const std::string& mode) {
             return std::make_shared<FactorScheduler>(step, factor, stop_factor_lr, base_lr,
                                                      warmup_steps, warmup_begin_lr,
                                                      parse_warmup_mode(mode));
           }),
           "step"_a, "factor"_a = 1.0, "stop_factor_lr"_a = 1e-8, "base_lr"_a = 0.01,
           "warmup_steps"_a = 0, "warmup_begin_lr"_a = 0.0, "warmup_mode"_a = "linear")
      .def_readonly("step", &FactorScheduler::step)
      .def_readonly("factor", &FactorScheduler::factor)
      .def_readwrite("stop_factor_lr", &FactorScheduler::stop_factor_lr)
      .def_readwrite("count", &FactorScheduler::count);

  py::class_<MultiFactorScheduler, Sched, std::shared_ptr<MultiFactorScheduler>>(
      m, "MultiFactorScheduler")
      .def(py::init([](std::vector<std::int64_t> step, double factor, double base_lr,
                       std::int64_t warmup_steps, double warmup_begin_lr, const std::string& mode) {
             return std::make_shared<MultiFactorScheduler>(std::move(step), factor, base_lr,
                                                           warmup_steps, warmup_begin_lr,
                                                           parse_warmup_mode(mode));
           }),
           "step"_a, "factor"_a = 1.0, "base_lr"_a = 0.01, "warmup_steps"_a = 0,
           "warmup_begin_lr"_a = 0.0, "warmup_mode"_a = "linear")
      .def_readonly("step", &MultiFactorScheduler::step)
      .def_readonly("factor", &MultiFactorScheduler::factor)
      .def_property(
          "cur_step_ind", [](const MultiFactorScheduler& s) { return s.cur_step_ind; },
          [](MultiFactorScheduler& s, std::int64_t v) {
            if (v < 0 || v > static_cast<std::int64_t>(s.step.size()))
              throw ValueError("cur_step_ind out of range");
            s.cur_step_ind = v;
          })
      .def_readwrite("count", &MultiFactorScheduler::count);

  py::class_<PolyScheduler, Sched, std::shared_ptr<PolyScheduler>>(m, "PolyScheduler")
      .def(py::init([](std::int64_t max_update, double base_lr, double pwr, double final_lr,
                       std::int64_t warmup_steps, double warmup_begin_lr, const std::string& mode) {
             return std::make_shared<PolyScheduler>(max_update, base_lr, pwr, final_lr,
                                                    warmup_steps, warmup_begin_lr,
                                                    parse_warmup_mode(mode));
           }),
           "max_update"_a, "base_lr"_a = 0.01, "pwr"_a = 2.0, "final_lr"_a = 0.0,
           "warmup_steps"_a = 0, "warmup_begin_lr"_a = 0.0, "warmup_mode"_a = "linear")
      .def_readonly("power", &PolyScheduler::power)
      .def_readwrite("base_lr_orig", &PolyScheduler::base_lr_orig)
      .def_readonly("max_update", &PolyScheduler::max_update)
      .def_readonly("final_lr", &PolyScheduler::final_lr)
      .def_readonly("max_steps", &PolyScheduler::max_steps);

  py::class_<CosineScheduler, Sched, std::shared_ptr<CosineScheduler>>(m, "CosineScheduler")
      .def(py::init([](std::int64_t max_update, double base_lr, double final_lr,
                       std::int64_t warmup_steps, double warmup_begin_lr, const std::string& mode) {
             return std::make_shared<CosineScheduler>(max_update, base_lr, final_lr, warmup_steps,
                                                      warmup_begin_lr, parse_warmup_mode(mode));
           }),
           "max_update"_a, "base_lr"_a = 0.01, "final_lr"_a = 0.0, "warmup_steps"_a = 0,
           "warmup_begin_lr"_a = 0.0, "warmup_mode"_a = "linear")
      .def_readwrite("base_lr_orig", &CosineScheduler::base_lr_orig)
      .def_readonly("max_update", &CosineScheduler::max_update)
      .def_readonly("final_lr", &CosineScheduler::final_lr)
      .def_readonly("max_steps", &CosineScheduler::max_steps);

  py::class_<SGD, std::unique_ptr<SGD>> sgd(m, "cpp_SGD", "The C++ fusedopt::SGD object (tests).");
  sgd.def(py::init([](std::optional<double> learning_rate, double momentum, bool lazy_update,
                      bool multi_precision, std::int64_t aggregate_num, double rescale_grad,
                      double wd, std::optional<double> clip_gradient,
                      std::shared_ptr<LRScheduler> lr_scheduler, std::int64_t begin_num_update) {
            SGDOptions o;
            base_options(o, rescale_grad, wd, clip_gradient, learning_rate,
                         std::move(lr_scheduler), begin_num_update, multi_precision);
            o.momentum = momentum;
            o.lazy_update = lazy_update;
            o.aggregate_num = aggregate_num;
            return std::make_unique<SGD>(o);
          }),
          py::kw_only(), "learning_rate"_a = py::none(), "momentum"_a = 0.0,
          "lazy_update"_a = false, "multi_precision"_a = false, "aggregate_num"_a = 1,
          "rescale_grad"_a = 1.0, "wd"_a = 0.0, "clip_gradient"_a = py::none(),
          "lr_scheduler"_a = py::none(), "begin_num_update"_a = 0);
  common_methods(sgd);

  py::class_<DCASGD, std::unique_ptr<DCASGD>> dca(m, "cpp_DCASGD",
                                                  "The C++ fusedopt::DCASGD object (tests).");
  dca.def(py::init([](std::optional<double> learning_rate, double momentum, double lamda,
                      bool multi_precision, double rescale_grad, double wd,
                      std::optional<double> clip_gradient,
                      std::shared_ptr<LRScheduler> lr_scheduler, std::int64_t begin_num_update,
                      bool adaptive, double ms_decay, double eps) {
            DCASGDOptions o;
            base_options(o, rescale_grad, wd, clip_gradient, learning_rate,
                         std::move(lr_scheduler), begin_num_update, multi_precision);
            o.momentum = momentum;
            o.lamda = lamda;
            o.adaptive = adaptive;
            o.ms_decay = ms_decay;
            o.eps = eps;
            return std::make_unique<DCASGD>(o);
          }),
          py::kw_only(), "learning_rate"_a = py::none(), "momentum"_a = 0.0, "lamda"_a = 0.04,
          "multi_precision"_a = false, "rescale_grad"_a = 1.0, "wd"_a = 0.0,
          "clip_gradient"_a = py::none(), "lr_scheduler"_a = py::none(),
          "begin_num_update"_a = 0, "adaptive"_a = false, "ms_decay"_a = 0.95, "eps"_a = 1e-7);
  common_methods(dca);
}

}  // namespace fusedopt::python
