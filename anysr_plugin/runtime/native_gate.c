/* The interweaving gate of one block in a single call, for inference on the CPU (float32).

   Why a native function: without gradients the gate is a handful of tiny tensor operations
   (pool, fc1, ReLU, fc2, sigmoid, the product onto the features) between two large
   convolutions.  Each eager operation costs a few microseconds of dispatch, several times more
   right after a convolution has pushed the interpreter out of the caches, which adds up to a
   quarter of a small encoder's time.  Here the whole gate is one call with one small scratch
   buffer.  It reads the gate's parameters as they are (no cached
   copies that could go stale) and computes exactly the sliced product of Eq. 8:

     v[cols[c]] = mean_hw x[b, c]  (c < n),  v[pairs[p]] = s_h,  v[pairs[p] + 1] = s_w
     h[j]       = relu(b1[j] + sum_k W1[j, k] v[k])                k < n + 2 * pairs
     g[c]       = gain * sigmoid(b2[c] + sum_j h[j] W2[c, j])      gain 2 (identity form) or 1
     out[b, c]  = act(x[b, c] * g[c])                               act: none, relu, leaky relu

   fc1's input is laid out in scratch memory (the pooled features at their columns, the pair
   after each complete chunk), so each row of fc1 is one contiguous dot product and the loops
   vectorise.  out may be x (in place).  Returns 0, or 1 when scratch memory could not be
   allocated. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* What stays the same from call to call of one gate at one width (native_gate.py keeps it). */
typedef struct {
    int64_t n, hidden, w1_row;   /* features kept; fc1 rows (2C); fc1 row length              */
    int64_t length;              /* fc1 input length at this width (Eq. 8: n + 2 * pairs)     */
    const float *w1, *b1, *w2, *b2;
    const int64_t *cols;         /* fc1 column of each feature                                */
    const int64_t *pairs;        /* column of each scale pair's s_h (s_w follows)            */
    int64_t npairs;
    float gain;                  /* 2 (identity form) or 1 (paper form)                      */
} anysr_gate_t;

/* On x86-64 with GCC or Clang (ELF), the loader picks an AVX2 + FMA build of the function on
   CPUs that have them (a third of the time of the baseline SSE2 build) and the baseline
   elsewhere; other platforms, or a build with -DANYSR_PORTABLE, get one portable version. */
#if defined(__x86_64__) && defined(__ELF__) && !defined(ANYSR_PORTABLE) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define ANYSR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#endif
#ifndef ANYSR_CLONES
#define ANYSR_CLONES
#endif

ANYSR_CLONES
int anysr_gate_f32(const float *x, float *out, int64_t batch, int64_t hw, const float *scale,
                   int64_t scale_stride, int act, float slope, const anysr_gate_t *g)
{
    const int64_t n = g->n, hidden = g->hidden;
    float *v = (float *)malloc(sizeof(float) * (size_t)(g->length + hidden));
    if (v == NULL)
        return 1;
    float *h = v + g->length;
#if defined(__GNUC__) || defined(__clang__)
    /* start fetching the weights now: the convolution before this call pushed them out of the
       caches, and the pooling below gives the memory system time to bring them back */
    for (int64_t i = 0; i < hidden * g->w1_row; i += 16)
        __builtin_prefetch(g->w1 + i);
    for (int64_t i = 0; i < n * hidden; i += 16)
        __builtin_prefetch(g->w2 + i);
#endif
    const float inv = 1.0f / (float)hw;
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = x + b * n * hw;
        float *ob = out + b * n * hw;
        for (int64_t c = 0; c < n; c++) {
            const float *p = xb + c * hw;
            float s = 0.0f;
#pragma omp simd reduction(+ : s)
            for (int64_t i = 0; i < hw; i++)
                s += p[i];
            v[g->cols[c]] = s * inv;
        }
        for (int64_t q = 0; q < g->npairs; q++) {
            v[g->pairs[q]] = scale[b * scale_stride];
            v[g->pairs[q] + 1] = scale[b * scale_stride + 1];
        }
        for (int64_t j = 0; j < hidden; j++) {
            const float *row = g->w1 + j * g->w1_row;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t k = 0; k < g->length; k++)
                acc += v[k] * row[k];
            acc += g->b1[j];
            h[j] = acc < 0.0f ? 0.0f : acc; /* NaN stays NaN, as in torch.relu */
        }
        for (int64_t c = 0; c < n; c++) {
            const float *row = g->w2 + c * hidden;
            float z = 0.0f;
#pragma omp simd reduction(+ : z)
            for (int64_t j = 0; j < hidden; j++)
                z += h[j] * row[j];
            const float gc = g->gain / (1.0f + expf(-(z + g->b2[c])));
            const float *p = xb + c * hw;
            float *o = ob + c * hw;
            if (act == 1) {
#pragma omp simd
                for (int64_t i = 0; i < hw; i++) {
                    const float v = p[i] * gc;
                    o[i] = v < 0.0f ? 0.0f : v;
                }
            } else if (act == 2) {
#pragma omp simd
                for (int64_t i = 0; i < hw; i++) {
                    const float v = p[i] * gc;
                    o[i] = v < 0.0f ? v * slope : v;
                }
            } else {
#pragma omp simd
                for (int64_t i = 0; i < hw; i++)
                    o[i] = p[i] * gc;
            }
        }
    }
    free(v);
    return 0;
}

#ifdef ANYSR_PYTHON_MODULE
/* Built with Python's headers, the same library is also a Python extension module whose
   ``gate`` takes the C function's arguments as Python numbers (METH_FASTCALL): a call costs a
   tenth of a ctypes call, and far less right after a convolution has pushed ctypes' argument
   conversion out of the caches.  Without the headers native_gate.py calls anysr_gate_f32
   through ctypes instead, with the same arguments. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *anysr_py_gate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "gate(x, out, batch, hw, scale, scale_stride, act, slope, args): 9 arguments");
        return NULL;
    }
    float *x = (float *)PyLong_AsVoidPtr(args[0]);
    float *out = (float *)PyLong_AsVoidPtr(args[1]);
    const long long batch = PyLong_AsLongLong(args[2]);
    const long long hw = PyLong_AsLongLong(args[3]);
    const float *scale = (const float *)PyLong_AsVoidPtr(args[4]);
    const long long stride = PyLong_AsLongLong(args[5]);
    const long act = PyLong_AsLong(args[6]);
    const double slope = PyFloat_AsDouble(args[7]);
    const anysr_gate_t *g = (const anysr_gate_t *)PyLong_AsVoidPtr(args[8]);
    if (PyErr_Occurred())
        return NULL;
    int status;
    if (batch * hw * g->n >= 65536) { /* a large map: let other Python threads run meanwhile, as ctypes does */
        Py_BEGIN_ALLOW_THREADS
        status = anysr_gate_f32(x, out, batch, hw, scale, stride, (int)act, (float)slope, g);
        Py_END_ALLOW_THREADS
    } else {
        status = anysr_gate_f32(x, out, batch, hw, scale, stride, (int)act, (float)slope, g);
    }
    return PyLong_FromLong(status);
}

static PyMethodDef anysr_py_methods[] = {
    {"gate", (PyCFunction)(void (*)(void))anysr_py_gate, METH_FASTCALL, "anysr_gate_f32 with Python numbers"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef anysr_py_module = {PyModuleDef_HEAD_INIT, "_anysr_native_gate", NULL, -1, anysr_py_methods,
                                             NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__anysr_native_gate(void) { return PyModule_Create(&anysr_py_module); }
#endif
