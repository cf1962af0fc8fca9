/* The interface of the compiled loops, described once. fused_scan.c includes this file once per
 * `real` (float: the _f32 functions, double: _f64), so the compiler checks every definition there
 * against these prototypes; build.py hands the same text to cffi (`ffi.cdef`, with NAME(f) and `real`
 * spelled out), so every call from Python is checked against them too: a wrong argument count or
 * pointer type raises TypeError instead of corrupting memory. Plain C declarations only (cffi's
 * parser reads no macros but NAME and real); what each function does is said in fused_scan.c. */

/* a Conv2d, or a Linear as a 1x1 convolution on 1x1 inputs, read event by event: weight
 * [cin, kh, kw, cout] (each tap's targets contiguous), bias [cout] or NULL, the input [cin, hin, win]
 * and output [cout, hout, wout] of one row, kernel, stride and padding */
struct NAME(synapses) {
    const real *weight;
    const real *bias;
    int64_t cin, hin, win, cout, kh, kw, sh, sw, ph, pw, hout, wout;
};

void NAME(if_scan)(const real *current, int64_t step_stride, real *v, real *spikes, int64_t steps, int64_t n,
                   double threshold, int64_t threads);
void NAME(fire)(const real *gate, double offset, real *v, real *spikes, int64_t bits, int64_t n, int64_t threads);
int NAME(fractional)(const real *x, int64_t n, int64_t threads);
void NAME(integrate)(const real *current, real *v, int64_t steps, int64_t n, int64_t threads);
int NAME(events)(const real *in, int64_t planes, const double *scales, int64_t rows,
                 const struct NAME(synapses) *synapses, real *out, int64_t max_events, int64_t threads);
int NAME(tally)(const real *spikes, int64_t steps, int64_t batch, int64_t channels, int64_t positions,
                const real *fan, real *totals, real *channel, real *ops, int64_t threads);
int NAME(rate_layer)(const real *current, int64_t step_stride, real *v, real *spikes, int64_t steps,
                     double threshold, int64_t batch, int64_t channels, int64_t positions, const real *fan,
                     real *totals, real *channel, real *ops, const struct NAME(synapses) *synapses, real *out,
                     int64_t max_events, int64_t loop_threads, int64_t tally_threads, int64_t threads);
int NAME(binary_layer)(const real *gate, double offset, int64_t bits, int64_t batch, int64_t channels,
                       int64_t positions, real *residual, real *spikes, int64_t keep, const real *fan,
                       real *totals, real *channel, real *ops, const double *scales,
                       const struct NAME(synapses) *synapses, real *out, int64_t max_events,
                       int64_t loop_threads, int64_t threads);
int NAME(delta_layer)(const real *v, double start, double levels, real *level, real *change, int64_t batch,
                      int64_t channels, int64_t positions, const real *fan, real *totals, real *channel,
                      real *ops, real *bits, const struct NAME(synapses) *next, const int32_t *whole, double unit,
                      real *touched, real *next_v, int64_t max_events);
int NAME(delta_input)(const real *x, real *prev, double x_max, int64_t batch, int64_t channels, int64_t positions,
                      const double *fan, double *totals, double *ops, const struct NAME(synapses) *next,
                      const double *weight, double *touched, double *next_v, int64_t max_events);
