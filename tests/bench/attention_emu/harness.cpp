// Runs kernels/cuda/attention.cu's kernels in the emulator against a float64 reference: the
// forward (which checks the emulation: that kernel runs on the GPU) and the backward, every output
// of every head. usage: harness small|shapes|edges|masks (run.sh builds it).
#include "emu.h"
#include "attn_emu.inc"
#include "attn_sm90_emu.inc"
#include "emu_attention.h"

static uint64_t rng_state = 7;
static double rng_uniform() {  // splitmix64 -> [-1, 1)
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}
static double bfv(bf16 h) { return __bfloat162float(h); }
static double rb(double x) { return __bfloat162float(__float2bfloat16_rn((float)x)); }
static std::vector<bf16> rand_bf(size_t n, double s) {
    std::vector<bf16> v(n);
    for (auto &x : v) x = __float2bfloat16_rn((float)(rng_uniform() * s));
    return v;
}

// padding: 1 = first 2 keys of row 0 and last 5 of row B-1; 2 = every key of row 0 and one of row 1.
// Images: image 0 at img_start, two text tokens, image 1 (cut at T); img_start < 0: none.
struct Case { int64_t B, T; int H, Hkv, D; int causal, window, padding; int64_t img_start, img_len; };

static bool visible(const mg_attention_args &a, int64_t b, int64_t i, int64_t j) {
    const int64_t row = b * a.T;
    if (a.key_valid && !a.key_valid[row + j]) return false;
    const bool causal_ok = a.causal ? j <= i : true;
    const bool same_image = a.group && a.group[row + i] >= 0 && a.group[row + i] == a.group[row + j];
    const bool in_window = a.window > 0 ? i - j < a.window : true;
    return (causal_ok || same_image) && in_window;
}

static double nmse(const std::vector<double> &got, const std::vector<double> &ref, double *match) {
    double num = 0, den = 0;
    size_t same = 0, nan = 0;
    for (size_t i = 0; i < got.size(); i++) {
        if (std::isnan(got[i])) nan++;
        else num += (got[i] - ref[i]) * (got[i] - ref[i]);
        den += ref[i] * ref[i];
        same += got[i] == ref[i];
    }
    *match = (double)same / (double)got.size();
    return nan ? INFINITY : num / (den > 0 ? den : 1);
}

static int failures;

static void run_case(Case c, bool tc) {
    const int64_t T = c.T, BT = c.B * T;
    const int D = c.D, H = c.H, Hkv = c.Hkv, HG = H / Hkv;
    const size_t nq = BT * H * D, nk = BT * Hkv * D;
    auto q = rand_bf(nq, 2.0), k = rand_bf(nk, 2.0), v = rand_bf(nk, 1.0), dout = rand_bf(nq, 1.0);
    std::vector<int32_t> key_valid, group;
    if (c.padding) key_valid.assign(BT, 1);
    if (c.padding == 1) {
        for (int64_t j = 0; j < 2 && j < T; j++) key_valid[j] = 0;
        for (int64_t j = T - 5; j < T; j++)
            if (j >= 0) key_valid[(c.B - 1) * T + j] = 0;
    } else if (c.padding == 2) {
        for (int64_t j = 0; j < T; j++) key_valid[j] = 0;
        if (c.B > 1) key_valid[T + T / 2] = 0;
    }
    if (c.img_start >= 0) {
        group.assign(BT, -1);
        for (int64_t b = 0; b < c.B; b++)
            for (int64_t t = 0; t < T; t++) {
                const int64_t rel = t - c.img_start;
                if (rel >= 0 && rel < c.img_len) group[b * T + t] = 0;
                else if (rel >= c.img_len + 2 && rel < 2 * c.img_len + 2) group[b * T + t] = 1;
            }
    }
    mg_attention_args a = {};
    a.B = c.B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.scale = (float)(1.0 / sqrt((double)D));
    a.causal = c.causal, a.window = c.window;
    a.key_valid = key_valid.empty() ? NULL : key_valid.data();
    a.group = group.empty() ? NULL : group.data();

    // float64 reference of every head: out (and its bf16 rounding, the backward's input), dq, dk, dv
    std::vector<bf16> out(nq);
    std::vector<double> rq(nq, 0), rk(nk, 0), rv(nk, 0), rout(nq, 0), P(T * T), dS(T * T);
    const double scale = a.scale;
    for (int64_t b = 0; b < c.B; b++)
        for (int h = 0; h < H; h++) {
            const int g = h / HG;
            auto Q = [&](int64_t i) { return &q[((b * T + i) * H + h) * D]; };
            auto dO = [&](int64_t i) { return &dout[((b * T + i) * H + h) * D]; };
            auto K = [&](int64_t j) { return &k[((b * T + j) * Hkv + g) * D]; };
            auto V = [&](int64_t j) { return &v[((b * T + j) * Hkv + g) * D]; };
            for (int64_t i = 0; i < T; i++) {
                double *Pi = &P[i * T], *dSi = &dS[i * T], mx = -INFINITY, sum = 0, delta = 0;
                for (int64_t j = 0; j < T; j++) {
                    Pi[j] = -INFINITY;
                    if (!visible(a, b, i, j)) continue;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += bfv(Q(i)[d]) * bfv(K(j)[d]);
                    Pi[j] = dot * scale;
                    mx = std::max(mx, Pi[j]);
                }
                for (int64_t j = 0; j < T; j++) sum += Pi[j] = Pi[j] == -INFINITY ? 0.0 : exp(Pi[j] - mx);
                for (int64_t j = 0; j < T; j++) {
                    Pi[j] = sum > 0 ? Pi[j] / sum : 0;
                    dSi[j] = 0;
                    if (Pi[j] == 0) continue;
                    double dp = 0;
                    for (int d = 0; d < D; d++) dp += bfv(dO(i)[d]) * bfv(V(j)[d]);
                    dSi[j] = dp;
                    delta += Pi[j] * dp;
                }
                for (int64_t j = 0; j < T; j++) dSi[j] = Pi[j] * (dSi[j] - delta);
                for (int d = 0; d < D; d++) {
                    double o = 0, gq = 0;
                    for (int64_t j = 0; j < T; j++) o += Pi[j] * bfv(V(j)[d]), gq += dSi[j] * bfv(K(j)[d]);
                    const size_t e = ((b * T + i) * H + h) * D + d;
                    out[e] = __float2bfloat16_rn((float)o);
                    rout[e] = rb(o);
                    rq[e] = scale * gq;
                }
            }
            for (int64_t j = 0; j < T; j++)
                for (int64_t i = 0; i < T; i++) {
                    const double p = P[i * T + j], ds = dS[i * T + j];
                    for (int d = 0; d < D; d++) {
                        rv[((b * T + j) * Hkv + g) * D + d] += p * bfv(dO(i)[d]);
                        rk[((b * T + j) * Hkv + g) * D + d] += scale * ds * bfv(Q(i)[d]);
                    }
                }
        }
    printf("case B=%lld T=%lld H=%d Hkv=%d D=%d causal=%d window=%d padding=%d image=%lld+%lld %s\n", (long long)c.B,
           (long long)T, H, Hkv, D, c.causal, c.window, c.padding, (long long)c.img_start, (long long)c.img_len,
           tc ? "tc" : "fp32");
    if (tc) {  // the forward through the emulator: checks the emulation itself
        std::vector<bf16> o(nq, __float2bfloat16_rn(NAN));
        emu_forward_tc<false>(o.data(), NULL, q.data(), k.data(), v.data(), a);
        std::vector<double> got(nq);
        for (size_t i = 0; i < nq; i++) got[i] = bfv(o[i]);
        double m;
        const double e = nmse(got, rout, &m);
        printf("  forward nmse=%.2e match=%.3f %s\n", e, m, e < 1e-5 ? "OK" : "FAIL");
        failures += !(e < 1e-5);
    }
    // the backward accumulates into random prefills
    auto pq = rand_bf(nq, 0.05), pk = rand_bf(nk, 0.05), pv = rand_bf(nk, 0.1);
    std::vector<bf16> dq = pq, dk = pk, dv = pv;
    emu_attention_backward(tc ? EMU_BWD_TC : EMU_BWD_FP32, dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(), v.data(), out.data(), a);
    const char *names[3] = {"dq", "dk", "dv"};
    const std::vector<bf16> *gots[3] = {&dq, &dk, &dv}, *pres[3] = {&pq, &pk, &pv};
    const std::vector<double> *refs[3] = {&rq, &rk, &rv};
    for (int t = 0; t < 3; t++) {
        const size_t n = gots[t]->size();
        std::vector<double> got(n), ref(n);
        for (size_t i = 0; i < n; i++) got[i] = bfv((*gots[t])[i]), ref[i] = rb(bfv((*pres[t])[i]) + (*refs[t])[i]);
        double m;
        const double e = nmse(got, ref, &m);
        const bool ok = e < 5e-5 && m > 0.4;  // tests/gpu/test_cuda_ops.c's bounds
        printf("  %s nmse=%.2e match=%.3f %s\n", names[t], e, m, ok ? "OK" : "FAIL");
        if (ok) continue;
        failures++;
        for (size_t i = 0, shown = 0; i < n && shown < 8; i++)
            if (!(fabs(got[i] - ref[i]) <= 0.02 * fabs(ref[i]) + 1e-3))
                printf("    [row %zu, d %zu] got %g ref %g (prefill %g)\n", i / D, i % D, got[i], ref[i],
                       bfv((*pres[t])[i])), shown++;
    }
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "small";
    if (!strcmp(which, "small")) {
        run_case({1, 37, 2, 1, 16, 1, 0, 0, -1, 0}, true);
    } else if (!strcmp(which, "shapes")) {  // every tensor-core configuration, partial dim blocks, GQA
        run_case({2, 37, 4, 2, 16, 1, 0, 1, -1, 0}, true);
        run_case({1, 77, 2, 1, 32, 1, 0, 0, 3, 16}, true);
        run_case({1, 150, 3, 1, 24, 0, 40, 1, -1, 0}, true);
        run_case({1, 200, 3, 3, 72, 0, 0, 0, -1, 0}, true);
        run_case({1, 200, 2, 1, 72, 1, 50, 1, 10, 80}, true);
        run_case({1, 150, 2, 1, 128, 1, 0, 1, 30, 50}, true);
        run_case({1, 100, 2, 2, 128, 0, 20, 0, -1, 0}, true);
        run_case({1, 70, 2, 1, 200, 1, 0, 1, 10, 20}, true);
        run_case({1, 150, 2, 1, 256, 1, 0, 1, 44, 60}, true);
        run_case({1, 33, 2, 2, 5, 1, 3, 0, -1, 0}, false);
        run_case({1, 60, 2, 1, 256, 1, 0, 0, 7, 20}, false);
    } else if (!strcmp(which, "edges")) {  // T = 1, tile edges, window 1 and > T, rows with no key
        run_case({1, 1, 2, 1, 16, 1, 0, 0, -1, 0}, true);
        run_case({2, 1, 2, 2, 72, 0, 0, 0, -1, 0}, true);
        run_case({1, 64, 4, 2, 64, 1, 0, 0, -1, 0}, true);
        run_case({1, 65, 4, 2, 64, 0, 0, 0, -1, 0}, true);
        run_case({1, 129, 2, 1, 72, 1, 0, 0, -1, 0}, true);
        run_case({1, 100, 2, 1, 40, 1, 1, 0, -1, 0}, true);
        run_case({1, 100, 2, 1, 40, 0, 1, 0, -1, 0}, true);
        run_case({1, 100, 2, 1, 256, 1, 500, 0, -1, 0}, true);
        run_case({1, 100, 2, 1, 128, 1, 0, 0, 0, 100}, true);
        run_case({2, 90, 8, 2, 32, 1, 0, 2, 20, 30}, true);
        run_case({2, 90, 8, 2, 256, 1, 17, 2, 20, 30}, true);
        run_case({2, 90, 8, 2, 24, 1, 17, 2, 20, 30}, false);
        run_case({1, 1, 2, 1, 7, 1, 0, 0, -1, 0}, false);
        run_case({1, 40, 3, 1, 33, 0, 5, 1, 3, 10}, false);
    } else if (!strcmp(which, "masks")) {  // causal × window × padding × images, both paths (slow)
        for (int fp = 0; fp < 2; fp++)
            for (int m = 0; m < 16; m++)
                run_case({2, 150, 2, 1, fp ? 24 : 40, m & 1, (m & 2) ? 40 : 0, (m >> 2) & 1, (m & 8) ? 5 : -1, 50}, !fp);
    } else {
        fprintf(stderr, "usage: harness small|shapes|edges|masks\n");
        return 2;
    }
    printf("%s\n", failures ? "SOME FAILED" : "ALL OK");
    return failures != 0;
}
