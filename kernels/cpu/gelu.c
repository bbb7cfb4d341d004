/* GELU, tanh approximation (torch gelu(approximate="tanh"), "gelu_pytorch_tanh"):
 *   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))
 *   gelu:  y[n] = gelu(x[n])                                (SigLIP fc1; y may alias x)
 *   geglu: y[M,F] = gelu(gu[:, :F]) * gu[:, F:]  from gu[M, 2F]
 *          (Gemma MLP: gate_proj and up_proj fused into one GEMM, gate columns first)
 * Both written with `=`. Their backwards accumulate with `+=`:
 *   gelu'(x) = 0.5 (1 + tanh(a)) + 0.5 x (1 - tanh²(a)) sqrt(2/pi) (1 + 3 · 0.044715 x²),
 *              a = sqrt(2/pi) (x + 0.044715 x³)
 *   gelu_backward:  dx[n] += dy[n] · gelu'(x[n])
 *   geglu_backward: dgu[:, :F] += dy · up · gelu'(gate),  dgu[:, F:] += dy · gelu(gate) */
#include <math.h>

#include "kernels/cpu/ops.h"

static float gelu_tanh(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* d gelu / dx, from the product and chain rules on the formula above */
static float gelu_tanh_grad(float x) {
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    const float t = tanhf(k * (x + 0.044715f * x * x * x));
    const float dinner = k * (1.0f + 3.0f * 0.044715f * x * x); /* d a / dx */
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * dinner;
}

void mg_cpu_gelu_forward(void *ctx, void *y_, const void *x_, int64_t n) {
    (void)ctx;
    float *y = y_;
    const float *x = x_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] = gelu_tanh(x[i]);
}

void mg_cpu_geglu_forward(void *ctx, void *y_, const void *gu_, int64_t M, int F) {
    (void)ctx;
    float *y = y_;
    const float *gu = gu_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *gate = gu + m * 2 * F, *up = gate + F;
        for (int f = 0; f < F; f++) y[m * F + f] = gelu_tanh(gate[f]) * up[f];
    }
}

void mg_cpu_gelu_backward(void *ctx, void *dx_, const void *dy_, const void *x_, int64_t n) {
    (void)ctx;
    float *dx = dx_;
    const float *dy = dy_, *x = x_;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * gelu_tanh_grad(x[i]);
}

void mg_cpu_geglu_backward(void *ctx, void *dgu_, const void *dy_, const void *gu_, int64_t M, int F) {
    (void)ctx;
    float *dgu = dgu_;
    const float *dy = dy_, *gu = gu_;
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < M; m++) {
        const float *gate = gu + m * 2 * F, *up = gate + F;
        float *dgate = dgu + m * 2 * F, *dup = dgate + F;
        for (int f = 0; f < F; f++) {
            const float g = dy[m * F + f];
            dgate[f] += g * up[f] * gelu_tanh_grad(gate[f]); /* through the GELU */
            dup[f] += g * gelu_tanh(gate[f]);                /* the product's other factor */
        }
    }
}
