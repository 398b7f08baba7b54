/* Each byte's share of the model's evidence: the kernel behind echogate.explain (read its module
 * docstring for why phrases are found this way).
 *
 * For every valid n-gram of the packed turns (the byte stream, its writing-style classes, its
 * function-word skeleton, and the words alone and in pairs, hashed as echogate.features hashes
 * them), its weight divided by the bytes it spans is added where it starts and taken off past
 * its end; a running sum then gives each byte its share. The NumPy form built each of the nine
 * streams and orders with a handful of array operations, about 300 NumPy calls for any batch:
 * 0.33 ms to explain one turn, which is as much as scoring it.
 *
 * The arithmetic is the reference's, step for step, so the shares are equal bit for bit (a test
 * checks it): hashes wrap modulo 2**64 and are cut to the power-of-two table, which gives the
 * same remainder as NumPy's exact int64 sums; each share is a float32 division; a stream and
 * order adds all its starts, then takes off all its ends, as NumPy's two fancy-index updates do.
 * Hashing constants (powers of the base, salts, tables) come from Python: one source of truth.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

enum { BYTES = 0, SHAPE = 1, SKELETON = 2, WORDS = 3 }; /* what a plan hashes: echogate.features.Stream */
#define MAX_ORDER 7
#define WORD_LETTERS 14 /* word_powers holds one more entry, 0, for the letters past these */

static inline int is_letter(uint8_t b) { return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z'); }
static inline uint64_t letter_code(uint8_t b) { return b >= 'a' ? b : (uint64_t)(b + ('a' - 'A')); }

typedef struct {
    const uint8_t *stream;
    const int64_t *turn;
    Py_ssize_t size;
    /* the words (echogate.features._words): runs of ASCII letters within a turn */
    Py_ssize_t n_words;
    int64_t *first, *end; /* each word's first byte and one past its last */
    uint64_t *hash;       /* each word's hash, modulo the word table */
} Words;

static int find_words(Words *w, const int64_t *word_powers, uint64_t word_mask) {
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < w->size; i++)
        n += is_letter(w->stream[i]) && (i == 0 || !is_letter(w->stream[i - 1]) || w->turn[i] != w->turn[i - 1]);
    w->n_words = 0;
    w->first = malloc(sizeof(int64_t) * (n + 1));
    w->end = malloc(sizeof(int64_t) * (n + 1));
    w->hash = malloc(sizeof(uint64_t) * (n + 1));
    if (w->first == NULL || w->end == NULL || w->hash == NULL) return -1;
    for (Py_ssize_t i = 0; i < w->size;) {
        if (!is_letter(w->stream[i])) {
            i++;
            continue;
        }
        Py_ssize_t j = i;
        uint64_t h = 0;
        while (j < w->size && is_letter(w->stream[j]) && w->turn[j] == w->turn[i]) {
            h += letter_code(w->stream[j]) * (uint64_t)word_powers[j - i < WORD_LETTERS ? j - i : WORD_LETTERS];
            j++;
        }
        w->first[w->n_words] = i;
        w->end[w->n_words] = j;
        w->hash[w->n_words++] = h & word_mask;
        i = j;
    }
    return 0;
}

/* The function-word skeleton (echogate.features.function_word_stream): a function word's letters
 * kept, every other byte its writing-style class. */
static void skeleton(const Words *w, const uint8_t *shape_classes, const uint8_t *function_table, uint8_t *out) {
    for (Py_ssize_t i = 0; i < w->size; i++) out[i] = shape_classes[w->stream[i]];
    for (Py_ssize_t k = 0; k < w->n_words; k++)
        if (function_table[w->hash[k]])
            for (int64_t i = w->first[k]; i < w->end[k]; i++) out[i] = w->stream[i];
}

/* Adds one stream and order's n-grams to diff: shares[g] at start[g], then off at end[g]. */
static void spread(double *diff, const float *shares, const int64_t *start, const int64_t *end, Py_ssize_t count) {
    for (Py_ssize_t g = 0; g < count; g++) diff[start[g]] += shares[g];
    for (Py_ssize_t g = 0; g < count; g++) diff[end[g]] -= shares[g];
}

static PyObject *byte_shares(PyObject *self, PyObject *args) {
    Py_buffer stream, turn, weights, base_powers, word_powers, shape_classes, function_table, out;
    PyObject *plans;
    if (!PyArg_ParseTuple(args, "y*y*y*O!y*y*y*y*w*", &stream, &turn, &weights, &PyList_Type, &plans, &base_powers,
                          &word_powers, &shape_classes, &function_table, &out))
        return NULL;
    Py_buffer *views[] = {&stream, &turn, &weights, &base_powers, &word_powers, &shape_classes, &function_table, &out};
    PyObject *result = NULL;
    Py_ssize_t size = stream.len, table = weights.len / 4, word_table = function_table.len,
               n_plans = PyList_GET_SIZE(plans);
    Words words = {stream.buf, turn.buf, size, 0, NULL, NULL, NULL};
    uint8_t *shape = NULL, *skel = NULL;
    double *diff = NULL;
    float *shares = NULL;
    int64_t *starts = NULL, *ends = NULL;
    if (turn.len != size * 8 || out.len != size * 8 || base_powers.len != 8 * (MAX_ORDER + 1) ||
        word_powers.len != 8 * (WORD_LETTERS + 1) || shape_classes.len != 256 || table == 0 || (table & (table - 1)) ||
        word_table == 0 || (word_table & (word_table - 1))) {
        PyErr_SetString(PyExc_ValueError, "byte_shares: arrays of the wrong size");
        goto done;
    }
    int kinds[16], orders[16];
    uint64_t salts[16];
    if (n_plans > 16) {
        PyErr_SetString(PyExc_ValueError, "byte_shares: at most 16 plans");
        goto done;
    }
    for (Py_ssize_t p = 0; p < n_plans; p++) {
        unsigned long long salt;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(plans, p), "iiK", &kinds[p], &orders[p], &salt)) goto done;
        salts[p] = salt;
        if (kinds[p] < BYTES || kinds[p] > WORDS || orders[p] < 1 || orders[p] > (kinds[p] == WORDS ? 2 : MAX_ORDER)) {
            PyErr_Format(PyExc_ValueError, "byte_shares: plan %zd is not a stream and order it knows", p);
            goto done;
        }
    }
    const uint64_t mask = (uint64_t)table - 1, *bp = base_powers.buf;
    const float *w = weights.buf;
    const int64_t *t = turn.buf;
    int status = 0;
    Py_BEGIN_ALLOW_THREADS
    diff = calloc(size + 1, sizeof(double));
    shares = malloc(sizeof(float) * (size + 1));
    starts = malloc(sizeof(int64_t) * (size + 1));
    ends = malloc(sizeof(int64_t) * (size + 1));
    shape = malloc(size + 1);
    skel = malloc(size + 1);
    if (diff == NULL || shares == NULL || starts == NULL || ends == NULL || shape == NULL || skel == NULL ||
        find_words(&words, word_powers.buf, (uint64_t)word_table - 1)) {
        status = -1;
    } else {
        const uint8_t *classes = shape_classes.buf;
        for (Py_ssize_t i = 0; i < size; i++) shape[i] = classes[((const uint8_t *)stream.buf)[i]];
        skeleton(&words, classes, function_table.buf, skel);
        for (Py_ssize_t p = 0; p < n_plans; p++) {
            Py_ssize_t count = 0;
            int n = orders[p];
            if (kinds[p] == WORDS) {
                for (Py_ssize_t k = 0; k + n <= words.n_words; k++) {
                    if (n == 2 && t[words.first[k + 1]] != t[words.first[k]]) continue; /* pairs within a turn */
                    uint64_t h = salts[p] + words.hash[k] * bp[1] + (n == 2 ? words.hash[k + 1] * bp[2] : 0);
                    starts[count] = words.first[k];
                    ends[count] = words.end[k + n - 1];
                    shares[count] = w[h & mask] / (float)(ends[count] - starts[count]);
                    count++;
                }
            } else {
                const uint8_t *x = kinds[p] == BYTES ? (const uint8_t *)stream.buf : kinds[p] == SHAPE ? shape : skel;
                for (Py_ssize_t i = 0; i + n <= size; i++) {
                    if (t[i] != t[i + n - 1]) continue; /* an n-gram within one turn */
                    uint64_t h = salts[p];
                    for (int k = 0; k < n; k++) h += x[i + k] * bp[k];
                    starts[count] = i;
                    ends[count] = i + n;
                    shares[count++] = w[h & mask] / (float)n;
                }
            }
            spread(diff, shares, starts, ends, count);
        }
        double *o = out.buf, running = 0.0;
        for (Py_ssize_t i = 0; i < size; i++) o[i] = running += diff[i];
    }
    Py_END_ALLOW_THREADS
    if (status == -1)
        PyErr_NoMemory();
    else
        result = Py_NewRef(Py_None);
done:
    free(words.first);
    free(words.end);
    free(words.hash);
    free(shape);
    free(skel);
    free(diff);
    free(shares);
    free(starts);
    free(ends);
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) PyBuffer_Release(views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"byte_shares", byte_shares, METH_VARARGS,
     "byte_shares(stream, byte_turn, weights, plans, base_powers, word_powers, shape_classes, function_table, out)\n\n"
     "Fills out (float64 [N]) with each byte's share of the n-gram weights; plans: [(kind, order, salt)], kind\n"
     "0 bytes, 1 writing-style classes, 2 function-word skeleton, 3 words. See echogate.explain."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_explain",
                                    "Each byte's share of the model's n-gram evidence (echogate.explain).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__explain(void) { return PyModule_Create(&module); }
