/* Corpus memory keys of a packed batch: the kernel behind echogate.corpus.turn_keys (read its
 * docstring for what a key is).
 *
 * One pass over the batch's bytes. The NumPy version it replaced built the polynomial from
 * prefix sums of the whole stream (a product, a cumulative sum and a count of spaces over every
 * byte, each a full array) and took 1.5-2 ms of a 256-transcript batch's 27; this takes a tenth.
 * The fold table and the role salts come from Python, so there is one source of truth for both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static PyMethodDef methods[] = {
    {"turn_keys", turn_keys, METH_VARARGS,
     "turn_keys(stream, starts, lengths, codes, fold, role_salt, max_key_bytes, min_words, keys_out) -> None\n\n"
     "Fills keys_out [R] uint64; see echogate.corpus.turn_keys."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_corpus", "Corpus memory keys (echogate.corpus).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__corpus(void) { return PyModule_Create(&module); }
