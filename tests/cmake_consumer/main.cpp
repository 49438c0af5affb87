// One sgd_mom_update through the installed package; checks docs/SEMANTICS.md §3's worked example.
#include <fusedopt/fusedopt.h>

#include <cmath>
#include <cstdio>

int main() {
  float w = 1.0f, g = 1.0f, m = 0.0f;
  fusedopt::SgdParams p;
  p.lr = 0.1;
  p.momentum = 0.9;
  for (int step = 0; step < 2; ++step)
    fusedopt::sgd_mom_update({&w, fusedopt::DType::kFloat32, {1}}, {&g, fusedopt::DType::kFloat32, {1}},
                             {&m, fusedopt::DType::kFloat32, {1}}, p);
  std::printf("fusedopt %s: w=%g m=%g\n", FUSEDOPT_VERSION_STRING, w, m);
  return (std::fabs(w - 0.71f) < 1e-6f && std::fabs(m + 0.19f) < 1e-6f) ? 0 : 1;
}
