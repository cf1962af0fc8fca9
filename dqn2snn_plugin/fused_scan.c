/* dqn2snn_plugin's compiled inference loops: the IF scan, binary coding's fire / integrate, event-driven
 * synapses and spike bookkeeping. `fused_scan.py` compiles this file once per machine and CPU, loads
 * it with ctypes and says what each function is for; the Python loops there are the references.
 *
 * Every function is written once over the type `real` and compiled twice: the file includes itself,
 * first with real = float (the _f32 functions), then with real = double (_f64).
 * No fused multiply-adds (-ffp-contract=off), so the neuron loops repeat the references' rounding.
 */
#ifndef NAME
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#define BLOCK 4096    /* neurons per block: their membranes stay in L1/L2 over all steps */
#define MAX_PLANES 64 /* weighted planes summed per neuron; more take the plane-by-plane loop */
#define PARALLEL _Pragma("omp parallel for schedule(static) num_threads(threads)")

/* the positions of the nonzero values of src[0 .. n), in order, into events (room for n + 16) */
static inline int64_t nonzero_f32(const float *restrict src, int64_t n, int32_t *restrict events) {
    int64_t count = 0, p = 0;
#ifdef __AVX512F__
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; p + 16 <= n; p += 16) {
        const __mmask16 set = _mm512_cmpneq_ps_mask(_mm512_loadu_ps(src + p), _mm512_setzero_ps());
        _mm512_storeu_si512((void *)(events + count), _mm512_maskz_compress_epi32(set, index));
        count += __builtin_popcount((unsigned)set);
        index = _mm512_add_epi32(index, _mm512_set1_epi32(16));
    }
#endif
    for (; p < n; p++) { events[count] = (int32_t)p; count += src[p] != 0.0f; }
    return count;
}
static inline int64_t nonzero_f64(const double *restrict src, int64_t n, int32_t *restrict events) {
    int64_t count = 0;
    for (int64_t p = 0; p < n; p++) { events[count] = (int32_t)p; count += src[p] != 0.0; }
    return count;
}

#define real float
#define NAME(f) f##_f32
#include __FILE__
#undef real
#undef NAME
#define real double
#define NAME(f) f##_f64
#include __FILE__

#else /* the functions, for one `real` */

/* IF over `steps`: h = v + I_t; s_t = [h >= th]; v = h - s_t * th. step_stride 0: constant I */
void NAME(if_scan)(const real *restrict current, int64_t step_stride, real *restrict v,
                      real *restrict spikes, int64_t steps, int64_t n, double threshold,
                      int64_t threads) {
    const real th = (real)threshold;
    PARALLEL
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;
        for (int64_t t = 0; t < steps; t++) {
            const real *c = current + t * step_stride;
            real *s = spikes + t * n;
            for (int64_t i = start; i < end; i++) {
                const real h = v[i] + c[i];
                const real k = (real)(h >= th);
                s[i] = k;
                v[i] = h - k * th;
            }
        }
    }
}
/* binary code of v = gate + offset, most significant bit first: s_t = [v >= 2^(bits-1-t)];        */
/* v -= s_t * 2^(bits-1-t); v ends as the residual */
/* count (may be NULL): each neuron's number of spikes */
void NAME(fire)(const real *restrict gate, double offset, real *restrict v, real *restrict spikes,
                real *restrict count, int64_t bits, int64_t n, int64_t threads) {
    PARALLEL
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;
        for (int64_t i = start; i < end; i++) v[i] = gate[i] + (real)offset;
        for (int64_t t = 0; t < bits; t++) {
            const real th = (real)ldexp(1.0, (int)(bits - 1 - t));
            real *s = spikes + t * n;
            for (int64_t i = start; i < end; i++) {
                const real k = (real)(v[i] >= th);
                s[i] = k;
                v[i] = v[i] - k * th;
            }
        }
        if (count) {
            for (int64_t i = start; i < end; i++) count[i] = (real)0;
            for (int64_t t = 0; t < bits; t++)
                for (int64_t i = start; i < end; i++) count[i] += spikes[t * n + i];
        }
    }
}
/* a membrane that doubles before each step's input: v = 2 v + I_t, from v = 0 */
void NAME(integrate)(const real *restrict current, real *restrict v, int64_t steps, int64_t n,
                        int64_t threads) {
    PARALLEL
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t end = start + BLOCK < n ? start + BLOCK : n;
        for (int64_t i = start; i < end; i++) v[i] = (real)0;
        for (int64_t t = 0; t < steps; t++) {
            const real *c = current + t * n;
            for (int64_t i = start; i < end; i++) v[i] = v[i] * (real)2 + c[i];
        }
    }
}
/* d += x * w over n targets; n = 64 and 32 (common channel counts) unrolled by the compiler */
static inline void NAME(add_scaled)(real *restrict d, const real *restrict w, real x, int64_t n) {
    if (n == 64) for (int64_t i = 0; i < 64; i++) d[i] += x * w[i];
    else if (n == 32) for (int64_t i = 0; i < 32; i++) d[i] += x * w[i];
    else for (int64_t i = 0; i < n; i++) d[i] += x * w[i];
}
/* d += x_j * w for j = 0 .. k-1 in turn, d loaded and stored once */
static inline void NAME(add_spikes)(real *restrict d, const real *restrict w, const real *xs,
                                       int64_t k, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        real sum = d[i];
        for (int64_t j = 0; j < k; j++) sum += xs[j] * w[i];
        d[i] = sum;
    }
}
/* event-driven synapses: out[r] = sum_q scale_q (bias + sum over the nonzero inputs x of plane q, in */
/* index order, of x times its weight column). in [planes, rows, cin, hin, win]; wt [cin, kh, kw,    */
/* cout] (one input tap's targets contiguous); out [rows, cout, hout, wout], summed channels-last in  */
/* a per-thread accumulator. Returns 2 without work if more than max_events inputs are nonzero.      */
int NAME(events)(const real *restrict in, int64_t planes, const double *restrict scales,
                    int64_t rows, int64_t cin, int64_t hin, int64_t win, const real *restrict wt,
                    const real *restrict bias, int64_t cout, int64_t kh, int64_t kw, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t hout, int64_t wout,
                    real *restrict out, int64_t max_events, int64_t threads) {
    const int64_t plane = hout * wout, hw = hin * win, kk = kh * kw, width = 1 + 2 * kk;
    const int64_t nin = cin * hw, total = planes * rows * nin;
    if (max_events >= 0) { /* max_events < 0: the caller has counted already */
        int64_t nonzero = 0;
        _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+:nonzero)")
        for (int64_t i = 0; i < total; i++) nonzero += in[i] != (real)0;
        if (nonzero > max_events) return 2;
    }
    /* per input position: its number of taps, then (weight offset, accumulator offset) pairs */
    int64_t *taps = calloc(hw * width, sizeof(int64_t));
    if (!taps) return 1;
    for (int64_t oy = 0; oy < hout; oy++)
        for (int64_t ox = 0; ox < wout; ox++)
            for (int64_t ky = 0; ky < kh; ky++)
                for (int64_t kx = 0; kx < kw; kx++) {
                    const int64_t y = oy * sh - ph + ky, x = ox * sw - pw + kx;
                    if (y < 0 || y >= hin || x < 0 || x >= win) continue;
                    int64_t *t = taps + (y * win + x) * width;
                    t[1 + 2 * t[0]] = (ky * kw + kx) * cout;
                    t[2 + 2 * t[0]] = (oy * wout + ox) * cout;
                    t[0]++;
                }
    real bias_scale = (real)0;
    for (int64_t q = 0; q < planes; q++) bias_scale += (real)scales[q];
    /* Work items: blocks of rows whose accumulators fit in L1 (32 KB; each input channel's weights
     * are then read once per block). A single row of planes (binary coding at B = 1) is split into
     * two plane groups, even and odd planes (high bits fire less, so the halves are even), summed
     * apart and added at the end, so that two threads can share it. Otherwise, with fewer blocks
     * than threads, each block's output channels are split. Each output sums its inputs in a fixed
     * order, (group,) channel, plane, position, that does not depend on the thread count. */
    int64_t block = (32768 / (int64_t)sizeof(real)) / (plane * cout);
    const int64_t even = (rows + threads - 1) / threads;
    block = block < 1 ? 1 : block > even ? even : block;
    const int64_t blocks = (rows + block - 1) / block;
    const int64_t groups = planes > 1 && rows == 1 ? 2 : 1;
    const int64_t parts = groups == 1 && blocks < threads && cout >= 2 * threads ? threads : 1;
    real *second = groups > 1 ? malloc(sizeof(real) * rows * cout * plane) : NULL; /* group 1's sums */
    if (groups > 1 && !second) { free(taps); return 1; }
    int failed = 0;
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)")
    {
        real *acc = malloc(sizeof(real) * block * plane * cout);
        int32_t *events = malloc(sizeof(int32_t) * (hw + 16));
        failed = !acc || !events;
        _Pragma("omp for schedule(static)")
        for (int64_t item = 0; item < blocks * parts * groups; item++) {
            if (failed) continue;
            const int64_t g = item % groups, part = item / groups % parts, b = item / groups / parts;
            const int64_t r0 = b * block, r1 = r0 + block < rows ? r0 + block : rows;
            const int64_t c0 = cout * part / parts, c1 = cout * (part + 1) / parts;
            real *target = g == 0 ? out : second;
            for (int64_t r = r0; r < r1; r++) {
                real *a = plane == 1 ? target + r * cout : acc + (r - r0) * plane * cout;
                for (int64_t p = 0; p < plane; p++)
                    for (int64_t co = c0; co < c1; co++)
                        a[p * cout + co] = bias && g == 0 ? bias[co] * bias_scale : (real)0;
            }
            for (int64_t c = 0; c < cin; c++) {
                const real *wc = wt + c * kk * cout + c0;
                if (planes > 1 && planes <= MAX_PLANES && hw == 1) { /* fully connected, weighted */
                    for (int64_t r = r0; r < r1; r++) { /* planes: a neuron's spikes in turn, on its */
                        real xs[MAX_PLANES]; /* targets held in registers (read once, not per spike) */
                        int64_t k = 0;
                        for (int64_t q = g; q < planes; q += groups) {
                            const real x = in[(q * rows + r) * cin + c];
                            xs[k] = x * (real)scales[q]; /* kept only if nonzero: no branch */
                            k += x != (real)0;
                        }
                        if (k) NAME(add_spikes)(target + r * cout + c0, wc, xs, k, c1 - c0);
                    }
                    continue;
                }
                for (int64_t q = g; q < planes; q += groups) {
                    const real scale = (real)scales[q];
                    for (int64_t r = r0; r < r1; r++) {
                        const real *src = in + ((q * rows + r) * cin + c) * hw;
                        real *a = (plane == 1 ? target + r * cout : acc + (r - r0) * plane * cout) + c0;
                        if (hw == 1) { /* a fully connected input: one value */
                            if (src[0] != (real)0) NAME(add_scaled)(a, wc, src[0] * scale, c1 - c0);
                            continue;
                        }
                        const int64_t n = NAME(nonzero)(src, hw, events);
                        for (int64_t e = 0; e < n; e++) {
                            const real x = src[events[e]] * scale;
                            const int64_t *t = taps + events[e] * width;
                            for (int64_t i = 0; i < t[0]; i++)
                                NAME(add_scaled)(a + t[2 + 2 * i], wc + t[1 + 2 * i], x, c1 - c0);
                        }
                    }
                }
            }
            for (int64_t r = r0; r < r1 && plane > 1; r++) {
                const real *a = acc + (r - r0) * plane * cout;
                real *o = target + r * cout * plane;
                for (int64_t co = c0; co < c1; co++)
                    for (int64_t p = 0; p < plane; p++) o[co * plane + p] = a[p * cout + co];
            }
        }
        free(acc);
        free(events);
    }
    if (second) {
        for (int64_t i = 0; i < rows * cout * plane; i++) out[i] += second[i];
        free(second);
    }
    free(taps);
    return failed;
}
/* spike bookkeeping of spikes [steps, batch, channels, positions]: totals[b] and channel[c] gain  */
/* their spikes, ops[b] their spikes times each neuron's fan-out fan[c, p]. Counts are whole       */
/* numbers, summed exactly in double: the result does not depend on the order or the threads       */
int NAME(tally)(const real *restrict spikes, int64_t steps, int64_t batch, int64_t channels,
                   int64_t positions, const real *restrict fan, real *restrict totals,
                   real *restrict channel, real *restrict ops, int64_t threads) {
    const int64_t n = channels * positions;
    double *per_channel = calloc(batch * channels, sizeof(double));
    if (!per_channel) return 1;
    int failed = 0;
    _Pragma("omp parallel num_threads(threads) reduction(|:failed)")
    {
        real *count = malloc(sizeof(real) * n);
        failed = !count;
        _Pragma("omp for schedule(static)")
        for (int64_t b = 0; b < batch; b++) {
            if (failed) continue;
            for (int64_t i = 0; i < n; i++) count[i] = (real)0;
            for (int64_t t = 0; t < steps; t++) {
                const real *s = spikes + (t * batch + b) * n;
                for (int64_t i = 0; i < n; i++) count[i] += s[i];
            }
            double total = 0, synaptic = 0;
            for (int64_t c = 0; c < channels; c++) {
                double in_channel = 0;
                for (int64_t p = c * positions; p < (c + 1) * positions; p++) {
                    in_channel += count[p];
                    synaptic += (double)count[p] * fan[p];
                }
                per_channel[b * channels + c] = in_channel;
                total += in_channel;
            }
            totals[b] += (real)total;
            ops[b] += (real)synaptic;
        }
        free(count);
    }
    for (int64_t c = 0; c < channels && !failed; c++) {
        double sum = 0;
        for (int64_t b = 0; b < batch; b++) sum += per_channel[b * channels + c];
        channel[c] += (real)sum;
    }
    free(per_channel);
    return failed;
}
/* One binary-coded layer in one call: fire gate + offset as `bits` spike planes [bits, batch,       */
/* channels, positions] (with the residual), count them (tally), then, if wt is given, send them to  */
/* the next layer event by event as weighted planes (events). Returns events' code (2: too dense,    */
/* or no wt: the caller runs the dense pass on `spikes`), or 1 when out of memory. fire and tally     */
/* run on loop_threads (the caller's rule for neuron loops), the event-driven pass on threads.       */
int NAME(binary_layer)(const real *restrict gate, double offset, int64_t bits, int64_t batch,
                       int64_t channels, int64_t positions, real *restrict residual,
                       real *restrict spikes, const real *restrict fan, real *restrict totals,
                       real *restrict channel, real *restrict ops, const double *restrict scales,
                       int64_t cin, int64_t hin, int64_t win, const real *restrict wt,
                       const real *restrict bias, int64_t cout, int64_t kh, int64_t kw, int64_t sh,
                       int64_t sw, int64_t ph, int64_t pw, int64_t hout, int64_t wout,
                       real *restrict out, int64_t max_events, int64_t loop_threads, int64_t threads) {
    const int64_t n = batch * channels * positions;
    real *count = malloc(sizeof(real) * n); /* spikes per neuron: counted as they are fired */
    if (!count) return 1;
    NAME(fire)(gate, offset, residual, spikes, count, bits, n, loop_threads);
    /* tally of the counts: one "step" that holds every neuron's spikes */
    const int failed = NAME(tally)(count, 1, batch, channels, positions, fan, totals, channel, ops,
                                   batch < loop_threads ? batch : loop_threads);
    double sent = 0;
    for (int64_t i = 0; i < n; i++) sent += count[i];
    free(count);
    if (failed) return 1;
    if (!wt || sent > (double)max_events) return 2;
    return NAME(events)(spikes, bits, scales, batch, cin, hin, win, wt, bias, cout, kh, kw, sh, sw, ph, pw,
                        hout, wout, out, -1, threads);
}

#endif
