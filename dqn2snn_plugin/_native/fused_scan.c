/* dqn2snn_plugin's compiled inference loops: the IF scan, binary coding's fire / integrate, event-driven
 * synapses, spike bookkeeping, a whole spiking layer in one call (rate_layer, binary_layer) and the
 * observation check. `loader.py` compiles this file once per machine and CPU and loads it with cffi
 * through the prototypes of `fused_scan.h`; `fused_scan.py` says what each function is for, and the
 * Python loops are the references.
 *
 * Every function is written once over the type `real` and compiled twice: the file includes itself,
 * first with real = float (the _f32 functions), then with real = double (_f64); each time it includes
 * fused_scan.h first, so a definition that disagrees with its prototype does not compile.
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
#define MAX_PLANES 32 /* input planes of one event-driven pass: a neuron's spikes are the bits of a uint32 */
#define PARALLEL _Pragma("omp parallel for schedule(static) num_threads(threads)")
/* a struct synapses (fused_scan.h) as send's arguments */
#define SYNAPSES(s) (s)->cin, (s)->hin, (s)->win, (s)->weight, (s)->bias, (s)->cout, (s)->kh, (s)->kw, (s)->sh, \
                    (s)->sw, (s)->ph, (s)->pw, (s)->hout, (s)->wout

#ifdef __AVX512F__ /* 16 positions at a time, found with compress; MASK: which of src[p .. p + 16) are nonzero */
#define COMPRESS(MASK)                                                                                \
    for (__m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);     \
         p + 16 <= n; p += 16) {                                                                       \
        const __mmask16 set = (MASK);                                                                 \
        _mm512_storeu_si512((void *)(events + count), _mm512_maskz_compress_epi32(set, index));       \
        count += __builtin_popcount((unsigned)set);                                                   \
        index = _mm512_add_epi32(index, _mm512_set1_epi32(16));                                       \
    }
#else
#define COMPRESS(MASK)
#endif
/* name(src, n, events): the positions of the nonzero values of src[0 .. n), in order, into events */
/* (room for n + 16): floats, doubles, or codes */
#define NONZERO(name, type, MASK)                                                                     \
    static inline int64_t name(const type *restrict src, int64_t n, int32_t *restrict events) {      \
        int64_t count = 0, p = 0;                                                                     \
        COMPRESS(MASK)                                                                                \
        for (; p < n; p++) { events[count] = (int32_t)p; count += src[p] != 0; }                       \
        return count;                                                                                 \
    }
NONZERO(nonzero_f32, float, _mm512_cmpneq_ps_mask(_mm512_loadu_ps(src + p), _mm512_setzero_ps()))
NONZERO(nonzero_f64, double, _mm512_cmpneq_pd_mask(_mm512_loadu_pd(src + p), _mm512_setzero_pd())
                             | _mm512_cmpneq_pd_mask(_mm512_loadu_pd(src + p + 8), _mm512_setzero_pd()) << 8)
NONZERO(nonzero_code, uint32_t, _mm512_test_epi32_mask(_mm512_loadu_si512((const void *)(src + p)),
                                                      _mm512_set1_epi32(-1)))
/* d[0 .. n) += x * w[0 .. n) for each spike x of the neuron in turn (see add_spikes), V vectors of */
/* d at a time held in registers */
#define ADD_SPIKES(V)                                                                                 \
    for (; i + (V) * LANES <= n; i += (V) * LANES) {                                                  \
        VEC s[V], wv[V];                                                                              \
        for (int u = 0; u < (V); u++) s[u] = *(VEC *)(d + i + u * LANES), wv[u] = *(const VEC *)(w + i + u * LANES); \
        for (uint32_t m = bits; m; m &= m - 1) {                                                      \
            const int q = __builtin_ctz(m);                                                           \
            const real x = value ? value[q * stride] * scale[q] : scale[q];                           \
            for (int u = 0; u < (V); u++) s[u] += x * wv[u];                                          \
        }                                                                                             \
        for (int u = 0; u < (V); u++) *(VEC *)(d + i + u * LANES) = s[u];                             \
    }

/* the float64 event pass, called from both instantiations (delta_input's weights are float64) */
static inline void add_scaled_f64(double *restrict d, const double *restrict w, double x, int64_t n);

#define real float
#define NAME(f) f##_f32
#define TRUNC truncf
#include __FILE__
#undef real
#undef NAME
#undef TRUNC
#define real double
#define NAME(f) f##_f64
#define TRUNC trunc
#include __FILE__

#else /* the functions, for one `real` */
#include "fused_scan.h"

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
/* binary code of v = gate + offset over n neurons, most significant bit first: s_t = [v >= 2^(bits-1-t)]; */
/* v -= s_t * 2^(bits-1-t); v ends as the residual, and bit t of code[i] holds neuron i's spike s_t    */
static inline void NAME(fire_codes)(const real *restrict gate, double offset, real *restrict v,
                                    uint32_t *restrict code, int64_t bits, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = gate[i] + (real)offset, code[i] = 0;
    for (int64_t t = 0; t < bits; t++) {
        const real th = (real)ldexp(1.0, (int)(bits - 1 - t));
        for (int64_t i = 0; i < n; i++) {
            const int fired = v[i] >= th;
            code[i] |= (uint32_t)fired << t;
            v[i] = v[i] - (real)fired * th;
        }
    }
}
/* spike planes spikes[t * stride + i] = bit t of code[i], i < n */
static inline void NAME(spread)(const uint32_t *restrict code, real *restrict spikes, int64_t bits, int64_t n,
                                int64_t stride) {
    for (int64_t t = 0; t < bits; t++)
        for (int64_t i = 0; i < n; i++) spikes[t * stride + i] = (real)((code[i] >> t) & 1u);
}
/* binary code of gate + offset as `bits` spike planes [bits, n] and the residual v */
void NAME(fire)(const real *restrict gate, double offset, real *restrict v, real *restrict spikes,
                int64_t bits, int64_t n, int64_t threads) {
    PARALLEL
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t m = start + BLOCK < n ? BLOCK : n - start;
        uint32_t code[BLOCK];
        NAME(fire_codes)(gate + start, offset, v + start, code, bits, m);
        NAME(spread)(code, spikes + start, bits, m, n);
    }
}
/* 1 if any of x[0 .. n) is not a whole number (a fraction, NaN or infinity: x - trunc(x) != 0), else 0 */
int NAME(fractional)(const real *restrict x, int64_t n, int64_t threads) {
    int found = 0;
    _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(|:found)")
    for (int64_t i = 0; i < n; i++) found |= x[i] - TRUNC(x[i]) != (real)0;
    return found;
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
/* d += x * w over n targets, w whole numbers (exact in float64: |x w| < 2**53 where the caller uses it) */
static inline void NAME(add_whole)(real *restrict d, const int32_t *restrict w, real x, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] += x * (real)w[i];
}
typedef real NAME(vec) __attribute__((vector_size(64), aligned(sizeof(real)), may_alias));
/* d += x_q * w for each set bit q of `bits` in turn (a neuron's spikes on one tap's targets), with */
/* x_q = value[q * stride] * scale[q] (value NULL: every spike is 1, x_q = scale[q]); d loaded once */
static inline __attribute__((always_inline)) void NAME(add_spikes)(real *restrict d, const real *restrict w, uint32_t bits,
                                    const real *restrict value, int64_t stride, const real *restrict scale,
                                    int64_t n) {
#define VEC NAME(vec)
#define LANES (64 / (int64_t)sizeof(real))
    int64_t i = 0;
    ADD_SPIKES(4)
    ADD_SPIKES(2)
    ADD_SPIKES(1)
    for (; i < n; i++) {
        real sum = d[i];
        for (uint32_t m = bits; m; m &= m - 1) {
            const int q = __builtin_ctz(m);
            sum += (value ? value[q * stride] * scale[q] : scale[q]) * w[i];
        }
        d[i] = sum;
    }
#undef VEC
#undef LANES
}
/* a neuron's spikes onto each of its taps t (count, then (weight offset, accumulator offset) pairs) */
static inline __attribute__((always_inline)) void NAME(add_taps)(real *restrict a, const real *restrict wc,
                                                                 const int64_t *restrict t, uint32_t bits,
                                                                 const real *restrict value, int64_t stride,
                                                                 const real *restrict scale, int64_t n) {
    for (int64_t i = 0; i < t[0]; i++) NAME(add_spikes)(a + t[2 + 2 * i], wc + t[1 + 2 * i], bits, value, stride, scale, n);
}
/* The event-driven pass. out[r] = bias * sum_q scale_q + the sum, over the spiking neurons (nonzero  */
/* inputs) in index order, of each spike's value times its plane's scale times its weight column.    */
/* The input is in [rows, cin, hin, win] with one plane (code NULL), or, with code [rows, cin, hin,  */
/* win] (bit q: the neuron is nonzero in plane q), `planes` planes in [planes, rows, ...] (in NULL:  */
/* every spike is 1). A neuron's spikes are added tap by tap, each tap's targets loaded once.         */
/* wt [cin, kh, kw, cout] (one tap's targets contiguous); out [rows, cout, hout, wout], summed        */
/* channels-last in a per-thread accumulator. Returns 1 when out of memory. The layer comes as loose */
/* arguments (SYNAPSES spreads a struct synapses), restrict parameters: read from the struct, the    */
/* hot loops compiled slower.                                                                         */
static int NAME(send)(const real *restrict in, const uint32_t *restrict code, int64_t planes,
                      const double *restrict scales, int64_t rows, int64_t cin, int64_t hin, int64_t win,
                      const real *restrict wt, const real *restrict bias, int64_t cout, int64_t kh,
                      int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t hout,
                      int64_t wout, real *restrict out, int64_t threads) {
    const int64_t plane = hout * wout, hw = hin * win, kk = kh * kw;
    const int64_t reach = ((kh + sh - 1) / sh) * ((kw + sw - 1) / sw); /* most taps of one input position */
    const int64_t width = 1 + 2 * (reach < kk ? reach : kk);
    const int64_t stride = rows * cin * hw; /* one input plane */
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
    real scale[MAX_PLANES], bias_scale = (real)0;
    for (int64_t q = 0; q < planes; q++) bias_scale += scale[q] = (real)scales[q];
    /* Work items: blocks of rows whose accumulators fit in L1 (32 KB; each input channel's weights
     * are then read once per block). A single row (binary coding at B = 1) is summed in two groups,
     * the first and second half of its input channels, added at the end, so that two threads share
     * it; otherwise, with fewer blocks than threads, each block's output channels are split. Each
     * output sums its inputs in a fixed order, (group,) channel, position, plane, that does not
     * depend on the thread count. */
    int64_t block = (32768 / (int64_t)sizeof(real)) / (plane * cout);
    const int64_t even = (rows + threads - 1) / threads;
    block = block < 1 ? 1 : block > even ? even : block;
    const int64_t blocks = (rows + block - 1) / block;
    const int64_t groups = rows == 1 && cin > 1 ? 2 : 1;
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
            for (int64_t c = cin * g / groups; c < cin * (g + 1) / groups; c++) {
                const real *wc = wt + c * kk * cout + c0;
                for (int64_t r = r0; r < r1; r++) {
                    const int64_t base = (r * cin + c) * hw;
                    real *a = (plane == 1 ? target + r * cout : acc + (r - r0) * plane * cout) + c0;
                    if (hw == 1) { /* a fully connected input: one neuron, one tap */
                        if (!code && in[base] != (real)0) NAME(add_scaled)(a, wc, in[base] * scale[0], c1 - c0);
                        if (code && code[base])
                            NAME(add_spikes)(a, wc, code[base], in ? in + base : NULL, stride, scale, c1 - c0);
                        continue;
                    }
                    const int64_t n = code ? nonzero_code(code + base, hw, events)
                                           : NAME(nonzero)(in + base, hw, events);
                    for (int64_t e = 0; e < n; e++) {
                        const int64_t at = base + events[e], *t = taps + events[e] * width;
                        if (!code) { /* one plane: one spike (or value) per neuron */
                            const real x = in[at] * scale[0];
                            for (int64_t i = 0; i < t[0]; i++)
                                NAME(add_scaled)(a + t[2 + 2 * i], wc + t[1 + 2 * i], x, c1 - c0);
                            continue;
                        }
                        const uint32_t bits = code[at]; /* the planes this neuron spikes in */
                        const real *value = in ? in + at : NULL;
                        const int64_t width_out = c1 - c0;
                        if (width_out == 64) /* common widths, unrolled */
                            NAME(add_taps)(a, wc, t, bits, value, stride, scale, 64);
                        else if (width_out == 32)
                            NAME(add_taps)(a, wc, t, bits, value, stride, scale, 32);
                        else
                            NAME(add_taps)(a, wc, t, bits, value, stride, scale, width_out);
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
/* event-driven synapses on `planes` input planes in [planes, rows, cin, hin, win] (see send):    */
/* out[r] = sum_q scale_q layer(in[q, r]). Returns 2 without work if more than max_events inputs  */
/* are nonzero, 1 when out of memory, else 0.                                                      */
int NAME(events)(const real *restrict in, int64_t planes, const double *restrict scales, int64_t rows,
                 const struct NAME(synapses) *syn, real *restrict out, int64_t max_events, int64_t threads) {
    const int64_t n = rows * syn->cin * syn->hin * syn->win;
    uint32_t *code = planes > 1 ? malloc(sizeof(uint32_t) * n) : NULL; /* which planes each neuron spikes in */
    if (planes > 1 && !code) return 1;
    int64_t nonzero = 0;
    if (!code) {
        _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+:nonzero)")
        for (int64_t i = 0; i < n; i++) nonzero += in[i] != (real)0;
    } else {
        _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+:nonzero)")
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = 0;
            for (int64_t q = 0; q < planes; q++) bits |= (uint32_t)(in[q * n + i] != (real)0) << q;
            code[i] = bits;
            nonzero += __builtin_popcount(bits);
        }
    }
    const int done = nonzero > max_events ? 2 : NAME(send)(in, code, planes, scales, rows, SYNAPSES(syn), out, threads);
    free(code);
    return done;
}
/* spike bookkeeping of spikes [steps, batch, channels, positions]: totals[b] and channel[c] gain  */
/* their spikes, ops[b] their spikes times each neuron's fan-out fan[c, p]. Spikes and fan-outs are */
/* whole numbers, summed exactly as integers: the result does not depend on the order or threads   */
int NAME(tally)(const real *restrict spikes, int64_t steps, int64_t batch, int64_t channels,
                   int64_t positions, const real *restrict fan, real *restrict totals,
                   real *restrict channel, real *restrict ops, int64_t threads) {
    const int64_t n = channels * positions;
    int64_t *per_channel = calloc(batch * channels, sizeof(int64_t));
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
            int64_t total = 0, synaptic = 0;
            for (int64_t c = 0; c < channels; c++) {
                int64_t in_channel = 0;
                for (int64_t p = c * positions; p < (c + 1) * positions; p++) {
                    in_channel += (int64_t)count[p];
                    synaptic += (int64_t)count[p] * (int64_t)fan[p];
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
        int64_t sum = 0;
        for (int64_t b = 0; b < batch; b++) sum += per_channel[b * channels + c];
        channel[c] += (real)sum;
    }
    free(per_channel);
    return failed;
}
/* One rate-coded layer in one call: the IF scan of `current` over `steps` (if_scan; n = batch *    */
/* channels * positions neurons per step), the tally of its spikes [steps, batch, channels,         */
/* positions], then, if syn is given, the event-driven pass of its steps * batch spike maps (events). */
/* Returns events' code (2: no syn, or too dense: the caller runs the dense pass on `spikes`), or 1   */
/* when out of memory. The scan runs on loop_threads, the tally on tally_threads (the caller's rules */
/* for neuron loops), the event-driven pass on threads.                                             */
int NAME(rate_layer)(const real *restrict current, int64_t step_stride, real *restrict v,
                     real *restrict spikes, int64_t steps, double threshold, int64_t batch,
                     int64_t channels, int64_t positions, const real *restrict fan, real *restrict totals,
                     real *restrict channel, real *restrict ops, const struct NAME(synapses) *syn,
                     real *restrict out, int64_t max_events, int64_t loop_threads, int64_t tally_threads,
                     int64_t threads) {
    const double one = 1.0; /* the scale of the single plane */
    NAME(if_scan)(current, step_stride, v, spikes, steps, batch * channels * positions, threshold, loop_threads);
    if (NAME(tally)(spikes, steps, batch, channels, positions, fan, totals, channel, ops, tally_threads)) return 1;
    if (!syn) return 2;
    return NAME(events)(spikes, 1, &one, steps * batch, syn, out, max_events, threads);
}
/* One binary-coded layer in one call: fire gate + offset as `bits`-bit codes (with the residual), */
/* count their spikes (tally), then, if syn is given, send them to the next layer event by event as  */
/* weighted planes (send). The spike planes [bits, batch, channels, positions] are written where    */
/* `keep` asks, or where the caller runs the dense pass: then it returns 2 (no syn, or more than     */
/* max_events spikes). 1 when out of memory. fire and tally run on loop_threads (the caller's rule  */
/* for neuron loops), the event-driven pass on threads.                                             */
int NAME(binary_layer)(const real *restrict gate, double offset, int64_t bits, int64_t batch,
                       int64_t channels, int64_t positions, real *restrict residual,
                       real *restrict spikes, int64_t keep, const real *restrict fan, real *restrict totals,
                       real *restrict channel, real *restrict ops, const double *restrict scales,
                       const struct NAME(synapses) *syn, real *restrict out, int64_t max_events,
                       int64_t loop_threads, int64_t threads) {
    const int64_t n = batch * channels * positions;
    uint32_t *code = malloc(sizeof(uint32_t) * n);
    real *count = malloc(sizeof(real) * n); /* spikes per neuron */
    if (!code || !count) { free(code); free(count); return 1; }
    int64_t sent = 0; /* spikes of the whole layer */
    _Pragma("omp parallel for schedule(static) num_threads(loop_threads) reduction(+:sent)")
    for (int64_t start = 0; start < n; start += BLOCK) {
        const int64_t m = start + BLOCK < n ? BLOCK : n - start;
        NAME(fire_codes)(gate + start, offset, residual + start, code + start, bits, m);
        for (int64_t i = start; i < start + m; i++) sent += (int64_t)(count[i] = (real)__builtin_popcount(code[i]));
    }
    /* tally of the counts: one "step" that holds every neuron's spikes */
    int failed = NAME(tally)(count, 1, batch, channels, positions, fan, totals, channel, ops,
                             batch < loop_threads ? batch : loop_threads);
    free(count);
    const int dense = !syn || sent > max_events;
    if (!failed && (keep || dense)) {
        _Pragma("omp parallel for schedule(static) num_threads(loop_threads)")
        for (int64_t start = 0; start < n; start += BLOCK)
            NAME(spread)(code + start, spikes + start, bits, start + BLOCK < n ? BLOCK : n - start, n);
    }
    if (!failed && !dense)
        failed = NAME(send)(NULL, code, bits, scales, batch, SYNAPSES(syn), out, threads);
    free(code);
    return failed ? 1 : dense ? 2 : 0;
}
/* The taps of input position p of the convolution `next`: for each window holding it, its output */
/* position into o[] and the kernel tap (ky * kw + kx) it meets there into tap[]; returns how many */
static inline int64_t NAME(targets)(const struct NAME(synapses) *next, int64_t p, int64_t *restrict o,
                                    int64_t *restrict tap) {
    const int64_t y = p / next->win + next->ph, x = p % next->win + next->pw; /* in the padded input */
    int64_t n = 0;
    for (int64_t ky = y % next->sh; ky < next->kh && ky <= y; ky += next->sh) { /* the taps a stride meets */
        const int64_t oy = (y - ky) / next->sh;
        if (oy >= next->hout) continue;
        for (int64_t kx = x % next->sw; kx < next->kw && kx <= x; kx += next->sw) {
            const int64_t ox = (x - kx) / next->sw;
            if (ox >= next->wout) continue;
            o[n] = oy * next->wout + ox;
            tap[n++] = ky * next->kw + kx;
        }
    }
    return n;
}
/* The output positions of the convolution `next` whose window holds a marked input position    */
/* (moved[p], p < hin * win) into hit[o] (o < hout * wout); returns how many.                     */
static int64_t NAME(reached)(const struct NAME(synapses) *next, const unsigned char *restrict moved,
                             unsigned char *restrict hit) {
    const int64_t plane = next->hout * next->wout;
    int64_t target[next->kh * next->kw], tap[next->kh * next->kw];
    for (int64_t i = 0; i < plane; i++) hit[i] = 0;
    for (int64_t p = 0; p < next->hin * next->win; p++)
        for (int64_t i = 0, n = moved[p] ? NAME(targets)(next, p, target, tap) : 0; i < n; i++) hit[target[i]] = 1;
    int64_t reached = 0;
    for (int64_t i = 0; i < plane; i++) reached += hit[i];
    return reached;
}
/* Delta coding's one layer of batch x channels x positions neurons (engine/delta.py). With v: each  */
/* neuron's level becomes clip(floor(v + start), 0, levels) and change its new level less the old;   */
/* without v (the observation), change is given. Per row b: totals[b] gains its nonzero changes     */
/* (graded events), ops[b] their fan-outs fan[c, p], bits[b] (if given) the ones of |change| (binary */
/* spikes), touched[b] the neurons of the stage `next` an event reaches (a convolution: the output   */
/* positions whose window holds one, every channel; a fully connected stage: all, if any changed);   */
/* channel[c] (if given) gains its events. Whole numbers, counted as integers: exact. Then, with     */
/* next_v (the next stage's membranes [batch, cout, hout, wout]) and at most max_events events, each */
/* event adds its change times its weight column (next->weight [cin, kh, kw, cout]) to them: a      */
/* convolution's sums gathered channels-last at the reached positions only, then added; no bias. A */
/* fully connected stage with whole (its weights as int32 whole numbers of `unit`, [cin, cout]; the */
/* f64 functions) adds change * unit * whole: the same products, exact, from half the memory.       */
/* Returns 2 where there were more events (next_v untouched: the caller runs a dense pass), 1 when   */
/* out of memory, else 0.                                                                            */
int NAME(delta_layer)(const real *restrict v, double start, double levels, real *restrict level,
                      real *restrict change, int64_t batch, int64_t channels, int64_t positions,
                      const real *restrict fan, real *restrict totals, real *restrict channel,
                      real *restrict ops, real *restrict bits, const struct NAME(synapses) *next,
                      const int32_t *restrict whole, double unit, real *restrict touched, real *restrict next_v,
                      int64_t max_events) {
    const int64_t n = channels * positions, plane = next->hout * next->wout, cout = next->cout;
    const int spatial = next->hin * next->win > 1; /* a convolution over [channels, hin, win] */
    unsigned char *moved = spatial ? malloc(positions) : NULL, *hit = spatial ? malloc(plane) : NULL;
    if (spatial && (!moved || !hit)) { free(moved); free(hit); return 1; }
    int64_t sent = 0;
    for (int64_t b = 0; b < batch; b++) {
        real *d = change + b * n, *l = level ? level + b * n : NULL;
        int64_t events = 0, synaptic = 0, ones = 0;
        if (spatial) for (int64_t p = 0; p < positions; p++) moved[p] = 0;
        for (int64_t first = 0; first < n; first += 64) { /* vectorised per 64 neurons; few change */
            const int64_t end = first + 64 < n ? first + 64 : n;
            int differ = 0;
            if (v)
                for (int64_t i = first; i < end; i++) {
                    real q = (real)floor(v[b * n + i] + (real)start);
                    q = q < (real)0 ? (real)0 : q > (real)levels ? (real)levels : q;
                    d[i] = q - l[i];
                    l[i] = q;
                    differ |= d[i] != (real)0;
                }
            else
                for (int64_t i = first; i < end; i++) differ |= d[i] != (real)0;
            for (int64_t i = first; i < end && differ; i++) {
                if (d[i] == (real)0) continue;
                events++;
                synaptic += (int64_t)fan[i];
                ones += __builtin_popcountll((unsigned long long)llabs((long long)d[i]));
                if (channel) channel[i / positions] += (real)1;
                if (spatial) moved[i % positions] = 1;
            }
        }
        totals[b] += (real)events;
        ops[b] += (real)synaptic;
        if (bits) bits[b] += (real)ones;
        touched[b] += (real)((events == 0 ? 0 : spatial ? NAME(reached)(next, moved, hit) : plane) * cout);
        sent += events;
    }
    int done = next_v == NULL ? 0 : sent > max_events ? 2 : 0;
    real *acc = next_v && done == 0 && sent && spatial ? malloc(sizeof(real) * plane * cout) : NULL;
    if (next_v && done == 0 && sent && spatial && !acc) done = 1;
    if (next_v && done == 0 && sent && !spatial) /* fully connected: each input's weights read once for all rows */
        for (int64_t i = 0; i < n; i++)
            for (int64_t b = 0; b < batch; b++)
                if (change[b * n + i] != (real)0 && whole)
                    NAME(add_whole)(next_v + b * cout, whole + i * cout, change[b * n + i] * (real)unit, cout);
                else if (change[b * n + i] != (real)0)
                    NAME(add_scaled)(next_v + b * cout, next->weight + i * cout, change[b * n + i], cout);
    for (int64_t b = 0; b < batch && next_v && done == 0 && sent && spatial; b++) {
        const real *d = change + b * n;
        real *out = next_v + b * cout * plane;
        for (int64_t p = 0; p < positions; p++) moved[p] = 0;
        for (int64_t c = 0; c < channels; c++)
            for (int64_t p = 0; p < positions; p++) moved[p] |= d[c * positions + p] != (real)0;
        if (!NAME(reached)(next, moved, hit)) continue;
        for (int64_t o = 0; o < plane; o++)
            if (hit[o]) for (int64_t co = 0; co < cout; co++) acc[o * cout + co] = (real)0;
        const int64_t kk = next->kh * next->kw;
        int64_t target[kk], tap[kk];
        for (int64_t p = 0; p < positions; p++) {
            const int64_t targets = moved[p] ? NAME(targets)(next, p, target, tap) : 0;
            for (int64_t c = 0; c < channels && targets; c++) {
                const real x = d[c * positions + p];
                if (x == (real)0) continue;
                for (int64_t i = 0; i < targets; i++)
                    NAME(add_scaled)(acc + target[i] * cout, next->weight + (c * kk + tap[i]) * cout, x, cout);
            }
        }
        for (int64_t o = 0; o < plane; o++)
            if (hit[o]) for (int64_t co = 0; co < cout; co++) out[co * plane + o] += acc[o * cout + co];
    }
    free(acc);
    free(moved);
    free(hit);
    return done;
}
/* Delta coding's observation layer (engine/delta.py): observations x [batch, channels, positions]  */
/* against the previous ones, prev. Where every x is a whole number of magnitude at most x_max and   */
/* at most max_events of them changed: per row b, totals[b] gains the changes (graded events), ops[b] */
/* their fan-outs fan[c, p], touched[b] the neurons of the convolution `next` they reach (its output  */
/* positions whose window holds one, every channel); each change x - prev (exact in float64) adds its */
/* weight column (weight [cin, kh, kw, cout] in float64; next's own weight is not read) times it to   */
/* next_v [batch, cout, hout, wout], gathered channels-last at the reached positions; prev becomes x; */
/* returns 0. The check and the search for changes are one vectorised pass that writes nothing    */
/* outside: where an x is not such a whole number it returns 3, where more changed 2 (the caller     */
/* runs tensor operations); 1 when out of memory.                                                    */
int NAME(delta_input)(const real *restrict x, real *restrict prev, double x_max, int64_t batch,
                      int64_t channels, int64_t positions, const double *restrict fan,
                      double *restrict totals, double *restrict ops, const struct NAME(synapses) *next,
                      const double *restrict weight, double *restrict touched, double *restrict next_v,
                      int64_t max_events) {
    const int64_t n = channels * positions, plane = next->hout * next->wout, cout = next->cout;
    const int64_t kk = next->kh * next->kw;
    const real high = (real)x_max;
    int32_t *event = malloc(sizeof(int32_t) * batch * n); /* each row's changed positions, rows in turn */
    int64_t *first = malloc(sizeof(int64_t) * (batch + 1)), changed = 0;
    unsigned char *moved = malloc(positions), *hit = malloc(plane);
    double *acc = malloc(sizeof(double) * plane * cout);
    int whole = 1, failed = !event || !first || !moved || !hit || !acc;
    for (int64_t b = 0; b < batch && !failed && whole; b++) {
        const real *xb = x + b * n, *pb = prev + b * n;
        first[b] = changed;
        for (int64_t start = 0; start < n; start += 64) { /* vectorised per 64 values; few change */
            const int64_t end = start + 64 < n ? start + 64 : n;
            int differ = 0;
            for (int64_t i = start; i < end; i++) {
                const real xi = xb[i];
                whole &= (xi - TRUNC(xi) == (real)0) & (xi <= high) & (xi >= -high);
                differ |= xi != pb[i];
            }
            for (int64_t i = start; i < end && differ; i++) event[changed] = (int32_t)i, changed += xb[i] != pb[i];
        }
    }
    if (failed || !whole || changed > max_events || !changed) {
        free(event);
        free(first);
        free(moved);
        free(hit);
        free(acc);
        return failed ? 1 : !whole ? 3 : changed > max_events ? 2 : 0;
    }
    first[batch] = changed;
    int64_t target[kk], tap[kk];
    for (int64_t b = 0; b < batch; b++) {
        const real *xb = x + b * n;
        real *pb = prev + b * n;
        double *out = next_v + b * cout * plane;
        const int32_t *row = event + first[b];
        const int64_t count = first[b + 1] - first[b];
        double synaptic = 0;
        if (!count) continue;
        for (int64_t p = 0; p < positions; p++) moved[p] = 0;
        for (int64_t k = 0; k < count; k++) synaptic += fan[row[k]], moved[row[k] % positions] = 1;
        totals[b] += (double)count;
        ops[b] += synaptic;
        touched[b] += (double)(NAME(reached)(next, moved, hit) * cout);
        for (int64_t o = 0; o < plane; o++)
            if (hit[o]) for (int64_t co = 0; co < cout; co++) acc[o * cout + co] = 0.0;
        for (int64_t k = 0; k < count; k++) {
            const int64_t i = row[k], c = i / positions, targets = NAME(targets)(next, i % positions, target, tap);
            const double d = (double)xb[i] - (double)pb[i];
            pb[i] = xb[i];
            for (int64_t t = 0; t < targets; t++)
                add_scaled_f64(acc + target[t] * cout, weight + (c * kk + tap[t]) * cout, d, cout);
        }
        for (int64_t o = 0; o < plane; o++)
            if (hit[o]) for (int64_t co = 0; co < cout; co++) out[co * plane + o] += acc[o * cout + co];
    }
    free(event);
    free(first);
    free(moved);
    free(hit);
    free(acc);
    return 0;
}

#endif
