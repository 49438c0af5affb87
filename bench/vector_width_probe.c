/* vector_width_probe.c — the sgd_mom element loop of cpp/src/cpu/kernels.cpp in isolation, compiled per
 * vector width, timed interleaved on the same buffers (1 thread): why the avx512 kernels use 256-bit
 * vectors and start on the weight's first 64-byte line (cpp/src/cpu/README.md). Built and run by
 * vector_width_probe.sh. With -DPROBE_KERNELS -DV=<tag> this file is one set of kernels for the flags it
 * is compiled with; without, it is the driver.
 *   plain : the loop as kernels.cpp had it (no peel)      peel : elements up to w's first line alone
 *   u2    : peel + 2x unrolled                            nt   : peel + non-temporal stores (AVX)  */
#include <stdint.h>
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
typedef struct { float lr, wd, mom, rs; } P;
typedef void (*F)(float*, const float*, float*, int64_t, P);

#ifdef PROBE_KERNELS
#include <immintrin.h>
/* one element of the rule (wd after the rescaled gradient, lr inside the momentum) */
#define SGD_MOM_ELEMENT(i)                     \
  do {                                         \
    float wi = w[i];                           \
    float r = p.rs * g[i] + p.wd * wi;         \
    float mi = p.mom * m[i] - p.lr * r;        \
    m[i] = mi;                                 \
    w[i] = wi + mi;                            \
  } while (0)
static inline void body(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) SGD_MOM_ELEMENT(i);
}
static inline void body_u2(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
#pragma GCC unroll 2
  for (int64_t i = 0; i < n; ++i) SGD_MOM_ELEMENT(i);
}
static int64_t head(const float* w, int64_t n) {
  int64_t h = (int64_t)((64 - ((uintptr_t)w & 63)) & 63) / 4;
  return h < n ? h : n;
}
void CAT(plain_, V)(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
  body(w, g, m, n, p);
}
void CAT(peel_, V)(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
  int64_t h = head(w, n);
  body(w, g, m, h, p);
  body(w + h, g + h, m + h, n - h, p);
}
void CAT(u2_, V)(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
  int64_t h = head(w, n);
  body(w, g, m, h, p);
  body_u2(w + h, g + h, m + h, n - h, p);
}
void CAT(nt_, V)(float* restrict w, const float* restrict g, float* restrict m, int64_t n, P p) {
  int64_t h = head(w, n), i = 0;
  body(w, g, m, h, p);
  w += h, g += h, m += h, n -= h;
  const __m256 lr = _mm256_set1_ps(p.lr), wd = _mm256_set1_ps(p.wd), mo = _mm256_set1_ps(p.mom),
               rs = _mm256_set1_ps(p.rs);
  const int m_aligned = ((uintptr_t)m & 31) == 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wi = _mm256_load_ps(w + i);
    __m256 r = _mm256_fmadd_ps(rs, _mm256_loadu_ps(g + i), _mm256_mul_ps(wd, wi));
    __m256 mi = _mm256_fmsub_ps(mo, _mm256_loadu_ps(m + i), _mm256_mul_ps(lr, r));
    if (m_aligned) _mm256_stream_ps(m + i, mi);
    else _mm256_storeu_ps(m + i, mi);
    _mm256_stream_ps(w + i, _mm256_add_ps(wi, mi));
  }
  _mm_sfence();
  body(w + i, g + i, m + i, n - i, p);
}
#else
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define DECL(v) void plain_##v(float*, const float*, float*, int64_t, P); \
  void peel_##v(float*, const float*, float*, int64_t, P); void u2_##v(float*, const float*, float*, int64_t, P); \
  void nt_##v(float*, const float*, float*, int64_t, P);
DECL(avx2) DECL(avx512) DECL(avx512_256)
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmpd(const void* a, const void* b) { double x = *(const double*)a, y = *(const double*)b; return x < y ? -1 : x > y; }
int main(int argc, char** argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s N numpy|same|distinct [rounds]\n", argv[0]); return 2; }
  int64_t n = atoll(argv[1]);
  const char* lay = argv[2];
  int reps = argc > 3 ? atoi(argv[3]) : 21;
  float *w, *g, *m;
  if (!strcmp(lay, "numpy")) {  /* malloc: large blocks 16 bytes past a page, as NumPy's */
    w = malloc(n * 4); g = malloc(n * 4); m = malloc(n * 4);
  } else {  /* line-aligned; "same": one offset within a 4 KiB page, "distinct": 1 KiB apart */
    int d = !strcmp(lay, "distinct");
    char* b = aligned_alloc(4096, 3 * (n * 4 + 8192));
    w = (float*)b; g = (float*)(b + n * 4 + 4096 + (d ? 1024 : 0)); m = (float*)(b + 2 * (n * 4 + 4096) + (d ? 2048 : 0));
  }
  for (int64_t i = 0; i < n; ++i) { w[i] = 0.5f; g[i] = 0.01f; m[i] = 0.001f; }
  P p = {1e-3f, 0.f, 0.9f, 1.f};
  const char* names[] = {"avx2", "avx512", "avx512/256", "avx2+peel", "avx512+peel", "avx512/256+peel",
                         "avx2+peel+u2", "avx2+peel+nt"};
  F fs[] = {plain_avx2, plain_avx512, plain_avx512_256, peel_avx2, peel_avx512, peel_avx512_256, u2_avx2, nt_avx2};
  const int nf = 8;
  int k = (int)(5e-4 / (n * 20 / 40e9)); if (k < 1) k = 1;
  double* s = malloc(sizeof(double) * nf * reps);
  double* rat = malloc(sizeof(double) * reps);
  for (int f = 0; f < nf; ++f) for (int j = 0; j < k; ++j) fs[f](w, g, m, n, p);
  for (int r = 0; r < reps; ++r)
    for (int ff = 0; ff < nf; ++ff) {
      int f = (ff + r) % nf;
      double t0 = now();
      for (int j = 0; j < k; ++j) fs[f](w, g, m, n, p);
      s[f * reps + r] = (now() - t0) / k;
    }
  printf("n=%lld layout=%s (w %% 64 = %d): GB/s at the fastest round (20 B/elem), median time ratio to avx2 plain\n",
         (long long)n, lay, (int)((uintptr_t)w & 63));
  for (int f = 0; f < nf; ++f) {
    double mn = 1e30;
    for (int r = 0; r < reps; ++r) { rat[r] = s[f * reps + r] / s[r]; if (s[f * reps + r] < mn) mn = s[f * reps + r]; }
    qsort(rat, reps, sizeof(double), cmpd);
    printf("  %-16s %6.1f GB/s  x%.3f\n", names[f], n * 20 / mn / 1e9, rat[reps / 2]);
  }
  return 0;
}
#endif
