// logistic_regression.cpp — trains a logistic-regression classifier on data it generates, once with
// fusedopt::SGD (momentum, weight decay, cosine schedule) and once with fusedopt::DCASGD, and prints
// the loss and accuracy per epoch. Exit code 0 when both reach >= 90 % training accuracy.
#include <fusedopt/fusedopt.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

namespace {

constexpr int kFeatures = 20;
constexpr int kSamples = 4000;
constexpr int kBatch = 100;
constexpr int kEpochs = 8;

struct Data {
  std::vector<float> x;  // kSamples x kFeatures, row-major
  std::vector<float> y;  // 0 or 1
};

// Labels from a hidden linear rule with 5 % label noise.
Data make_data(std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> truth(kFeatures);
  for (float& t : truth) t = normal(rng);
  Data d;
  d.x.resize(static_cast<std::size_t>(kSamples) * kFeatures);
  d.y.resize(kSamples);
  for (int i = 0; i < kSamples; ++i) {
    float z = 0.5f;
    for (int j = 0; j < kFeatures; ++j) {
      float v = normal(rng);
      d.x[static_cast<std::size_t>(i) * kFeatures + j] = v;
      z += v * truth[static_cast<std::size_t>(j)];
    }
    bool label = z > 0.0f;
    if (uniform(rng) < 0.05f) label = !label;
    d.y[static_cast<std::size_t>(i)] = label ? 1.0f : 0.0f;
  }
  return d;
}

// Trains weights (index 0) and bias (index 1); returns the final training accuracy.
double train(const char* name, fusedopt::Optimizer& opt, const Data& d) {
  std::vector<float> w(kFeatures, 0.0f), b(1, 0.0f), gw(kFeatures), gb(1);
  using fusedopt::DType;
  const fusedopt::TensorView wv(w.data(), DType::kFloat32, {kFeatures}), bv(b.data(), DType::kFloat32, {1});
  const fusedopt::TensorView gwv(gw.data(), DType::kFloat32, {kFeatures}), gbv(gb.data(), DType::kFloat32, {1});
  std::printf("\n%s\n%5s %8s %9s\n", name, "epoch", "loss", "accuracy");
  double accuracy = 0.0;
  for (int epoch = 1; epoch <= kEpochs; ++epoch) {
    double loss = 0.0;
    int correct = 0;
    for (int start = 0; start < kSamples; start += kBatch) {
      std::fill(gw.begin(), gw.end(), 0.0f);
      gb[0] = 0.0f;
      for (int i = start; i < start + kBatch; ++i) {
        const float* xi = &d.x[static_cast<std::size_t>(i) * kFeatures];
        float z = b[0];
        for (int j = 0; j < kFeatures; ++j) z += w[static_cast<std::size_t>(j)] * xi[j];
        const float p = 1.0f / (1.0f + std::exp(-z));
        const float yi = d.y[static_cast<std::size_t>(i)];
        loss -= yi * std::log(p + 1e-7f) + (1 - yi) * std::log(1 - p + 1e-7f);
        correct += (p > 0.5f) == (yi > 0.5f);
        for (int j = 0; j < kFeatures; ++j) gw[static_cast<std::size_t>(j)] += (p - yi) * xi[j];
        gb[0] += p - yi;
      }
      // Summed gradients; rescale_grad (1 / batch) turns them into the mean inside the kernel.
      opt.update({0, 1}, {wv, bv}, {gwv, gbv});
    }
    accuracy = static_cast<double>(correct) / kSamples;
    std::printf("%5d %8.4f %9.3f\n", epoch, loss / kSamples, accuracy);
  }
  std::printf("updates: %lld, final learning rate %.4g\n", static_cast<long long>(opt.num_update()),
              opt.learning_rate());
  return accuracy;
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  const Data data = make_data(rng);
  std::printf("fusedopt %s, CPU kernels: %s\n", FUSEDOPT_VERSION_STRING,
              fusedopt::cpu_capability().c_str());

  fusedopt::SGDOptions sgd_opts;
  sgd_opts.momentum = 0.9;
  sgd_opts.wd = 1e-4;
  sgd_opts.rescale_grad = 1.0 / kBatch;
  sgd_opts.aggregate_num = 0;  // both tensors in one aggregated kernel call
  sgd_opts.lr_scheduler = std::make_shared<fusedopt::CosineScheduler>(
      /*max_update=*/kEpochs * kSamples / kBatch, /*base_lr=*/0.5, /*final_lr=*/0.01);
  fusedopt::SGD sgd(sgd_opts);
  const double acc_sgd = train("SGD, momentum 0.9, cosine schedule 0.5 -> 0.01", sgd, data);

  fusedopt::DCASGDOptions dca_opts;
  dca_opts.learning_rate = 0.2;
  dca_opts.momentum = 0.9;
  dca_opts.lamda = 0.04;
  dca_opts.rescale_grad = 1.0 / kBatch;
  fusedopt::DCASGD dcasgd(dca_opts);
  const double acc_dca = train("DCASGD, momentum 0.9, lamda 0.04", dcasgd, data);

  const bool ok = acc_sgd >= 0.9 && acc_dca >= 0.9;
  std::printf("\n%s\n", ok ? "both optimizers reached >= 90 % training accuracy" : "FAILED to train");
  return ok ? 0 : 1;
}
