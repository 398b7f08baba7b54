/* Corpus memory keys of a packed batch: the kernel behind echogate.corpus.turn_keys (read its
 * docstring for what a key is); and the memory's count of them (count_turns, below).
 *
 * One pass over the batch's bytes. The NumPy version it replaced built the polynomial from
 * prefix sums of the whole stream (a product, a cumulative sum and a count of spaces over every
 * byte, each a full array) and took 1.5-2 ms of a 256-transcript batch's 27; this takes a tenth.
 * The fold table and the role salts come from Python, so there is one source of truth for both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

#define P 0x100000001B3ull /* odd: the polynomial's base */
#define SLOT 257u                /* a slot's term: past every folded byte's (fold + 1 <= 256) */

/* h += term * P**(k+1) for the key's k-th term, wrapping modulo 2**64. */
static inline void add(uint64_t *h, uint64_t *power, uint64_t term) {
    *h += term * *power;
    *power *= P;
}

static inline int is_upper(uint8_t b) { return b >= 'A' && b <= 'Z'; }
static inline int is_letter(uint8_t b) { return is_upper(b) || (b >= 'a' && b <= 'z'); }
static inline int ends_sentence(uint8_t b) { return b == '.' || b == '?' || b == '!'; }

/* A slot word: one holding a digit, or a capitalised word (after any leading punctuation) that
 * does not start a sentence and is not the pronoun I (I, I'm, I'd...). Template bots fill these
 * with names, places, dates and numbers: "OK, the North Heights Venue is free on Friday @ 7 pm"
 * keys as "ok, the # is free on # @ # pm". */
static int is_slot(const uint8_t *word, Py_ssize_t n, int sentence_start) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (word[i] >= '0' && word[i] <= '9') return 1;
    if (sentence_start) return 0;
    Py_ssize_t i = 0;
    while (i < n && word[i] < 0x80 && !is_letter(word[i])) i++;
    if (i == n || !is_upper(word[i])) return 0;
    return !(word[i] == 'I' && (i + 1 == n || !is_letter(word[i + 1])));
}

static uint64_t splitmix64(uint64_t h) {
    h ^= h >> 30;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 27;
    h *= 0x94D049BB133111EBull;
    return h ^ (h >> 31);
}

static PyObject *turn_keys(PyObject *self, PyObject *args) {
    Py_buffer stream, starts, lengths, codes, fold, role_salt, keys;
    Py_ssize_t max_key_bytes, min_words;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*nnw*", &stream, &starts, &lengths, &codes, &fold, &role_salt,
                          &max_key_bytes, &min_words, &keys))
        return NULL;
    Py_buffer *views[] = {&stream, &starts, &lengths, &codes, &fold, &role_salt, &keys};
    PyObject *result = NULL;
    Py_ssize_t n_turns = starts.len / 8, n_roles = role_salt.len / 8;
    const int64_t *s = starts.buf, *l = lengths.buf, *c = codes.buf;
    if (lengths.len != starts.len || codes.len != starts.len || keys.len != starts.len || fold.len != 256) {
        PyErr_SetString(PyExc_ValueError, "turn_keys: starts, lengths, codes and keys need one entry per turn, "
                                          "fold 256 bytes");
        goto done;
    }
    for (Py_ssize_t r = 0; r < n_turns; r++) {
        if (s[r] < 0 || l[r] < 0 || s[r] + l[r] > stream.len || c[r] < 0 || c[r] >= n_roles) {
            PyErr_Format(PyExc_ValueError, "turn %zd: bytes out of the stream or role code out of range", r);
            goto done;
        }
    }
    const uint8_t *bytes = stream.buf, *folded = fold.buf;
    const uint64_t *salt = role_salt.buf;
    uint64_t *out = keys.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < n_turns; r++) {
        const uint8_t *turn = bytes + s[r];
        Py_ssize_t keyed = l[r] < max_key_bytes ? l[r] : max_key_bytes;
        uint64_t h = 0, power = P;
        int after_slot = 0, sentence_start = 1;
        /* word by word (runs of non-spaces, empty ones too), each after one space: a turn without
         * slot words gives the same terms, and so the same key, as its folded bytes alone */
        for (Py_ssize_t k = 0, end;; k = end + 1) {
            for (end = k; end < keyed && turn[end] != ' ';) end++;
            int slot = end > k && is_slot(turn + k, end - k, sentence_start);
            if (!(slot && after_slot)) { /* a run of slot words is one slot */
                if (k > 0) add(&h, &power, folded[' '] + 1u);
                if (slot) add(&h, &power, SLOT);
                else for (Py_ssize_t i = k; i < end; i++) add(&h, &power, folded[turn[i]] + 1u);
            }
            after_slot = slot;
            if (end > k) sentence_start = ends_sentence(turn[end - 1]);
            if (end >= keyed) break;
        }
        Py_ssize_t words = l[r] > 0; /* spaces + 1: normalised text has single spaces inside */
        for (Py_ssize_t k = 0; k < l[r]; k++) words += turn[k] == ' ';
        out[r] = words >= min_words ? splitmix64(h ^ salt[c[r]]) | 1 : 0; /* 0 is NO_KEY */
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) PyBuffer_Release(views[i]);
    return result;
}

typedef struct {
    uint64_t key;
    PyObject *object; /* the key as the dict holds it, made once per turn */
    long long prior;  /* its count before the transcript: the new count is one more, no second lookup */
} Key;

static int compare_keys(const void *a, const void *b) {
    uint64_t x = ((const Key *)a)->key, y = ((const Key *)b)->key;
    return (x > y) - (x < y);
}

/* counts[key] = count; 0, or -1 with an exception set. */
static int set_count(PyObject *counts, PyObject *key, long long count) {
    PyObject *value = PyLong_FromLongLong(count);
    if (value == NULL) return -1;
    int status = PyDict_SetItem(counts, key, value);
    Py_DECREF(value);
    return status;
}

/* counts[key] += 1 (a key not held counts from 0); 0, or -1 with an exception set. */
static int increment(PyObject *counts, PyObject *key) {
    PyObject *held = PyDict_GetItemWithError(counts, key);
    if (held == NULL && PyErr_Occurred()) return -1;
    long long count = held == NULL ? 0 : PyLong_AsLongLong(held);
    if (count == -1 && PyErr_Occurred()) return -1;
    return set_count(counts, key, count + 1);
}

/* The loop behind echogate.corpus.CorpusMemory.observe: per transcript in order, every turn's
 * prior count, then one more for each distinct key of a transcript that counts. The counts stay
 * a dict of Python ints (the store loads, merges and saves them as such); where this loop was
 * Python, with dict and Counter calls per transcript, it took 2.9 ms of a batch of 256 new SGD
 * transcripts. Runs with the GIL held: it changes Python objects. */
static PyObject *count_turns(PyObject *self, PyObject *args) {
    PyObject *counts, *touched, *deltas;
    Py_buffer keys, turns, counted, prior;
    if (!PyArg_ParseTuple(args, "O!y*y*y*w*O!O", &PyDict_Type, &counts, &keys, &turns, &counted, &prior, &PySet_Type,
                          &touched, &deltas))
        return NULL;
    Py_buffer *views[] = {&keys, &turns, &counted, &prior};
    PyObject *result = NULL;
    Key *distinct = NULL;
    Py_ssize_t n_turns = keys.len / 8, n_transcripts = turns.len / 8, total = 0, most = 0, n = 0;
    const int64_t *per = turns.buf;
    for (Py_ssize_t t = 0; t < n_transcripts && total >= 0; t++) total = per[t] < 0 ? -1 : total + per[t];
    if (total != n_turns || prior.len != keys.len || counted.len != n_transcripts ||
        (deltas != Py_None && !PyDict_Check(deltas))) {
        PyErr_SetString(PyExc_ValueError, "count_turns: turns per transcript must add up to the keys, one prior per "
                                          "key, one counted flag per transcript, deltas a dict or None");
        goto done;
    }
    const uint64_t *k = keys.buf;
    const uint8_t *counts_it = counted.buf;
    int64_t *out = prior.buf;
    distinct = PyMem_Malloc((n_turns > 0 ? n_turns : 1) * sizeof(Key));
    if (distinct == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t t = 0, first = 0; t < n_transcripts; first += per[t], t++) {
        for (; n > 0; n--) Py_DECREF(distinct[n - 1].object); /* the last transcript's keys */
        for (Py_ssize_t r = first; r < first + per[t]; r++) {
            out[r] = 0;
            if (k[r] == 0) continue; /* NO_KEY: never counted */
            PyObject *key = PyLong_FromUnsignedLongLong(k[r]);
            if (key == NULL) goto done;
            distinct[n++] = (Key){k[r], key, 0};
            PyObject *held = PyDict_GetItemWithError(counts, key);
            if (held == NULL && PyErr_Occurred()) goto done;
            if (held != NULL && (out[r] = PyLong_AsLongLong(held)) == -1 && PyErr_Occurred()) goto done;
            distinct[n - 1].prior = out[r];
        }
        if (!counts_it[t]) continue; /* a retry: looked up, not counted */
        qsort(distinct, n, sizeof(Key), compare_keys);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i > 0 && distinct[i].key == distinct[i - 1].key) continue;
            PyObject *key = distinct[i].object;
            long long count = distinct[i].prior + 1; /* counts do not change before this loop */
            if (set_count(counts, key, count) < 0 || (deltas != Py_None && increment(deltas, key) < 0) ||
                PySet_Add(touched, key) < 0)
                goto done;
            if (count > most) most = (Py_ssize_t)count;
        }
    }
    result = PyLong_FromSsize_t(most);
done:
    for (; n > 0; n--) Py_DECREF(distinct[n - 1].object);
    PyMem_Free(distinct);
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) PyBuffer_Release(views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"turn_keys", turn_keys, METH_VARARGS,
     "turn_keys(stream, starts, lengths, codes, fold, role_salt, max_key_bytes, min_words, keys_out) -> None\n\n"
     "Fills keys_out [R] uint64; see echogate.corpus.turn_keys."},
    {"count_turns", count_turns, METH_VARARGS,
     "count_turns(counts, keys, turns_per_transcript, counted, prior_out, touched, deltas) -> highest new count\n\n"
     "Fills prior_out [R] int64 with each turn's count before its transcript, then adds one to counts (and\n"
     "deltas, unless None) for each distinct key of each counted transcript, adding the key to touched;\n"
     "see echogate.corpus.CorpusMemory.observe."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_corpus",
                                    "Corpus memory keys and counts (echogate.corpus).", -1, methods, NULL, NULL, NULL,
                                    NULL};

PyMODINIT_FUNC PyInit__corpus(void) { return PyModule_Create(&module); }
