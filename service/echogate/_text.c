/* Packing a batch's turns into one UTF-8 byte stream: the kernel behind echogate.text.pack_turns
 * (read its docstring for what the stream and its index arrays are); the scan that tells
 * echogate.text.normalize_all which texts normalisation could change; the digit masking of
 * echogate.text.model_texts; and the canonical content that echogate.text.content_sha256 hashes.
 *
 * One pass over the turns copies each turn's UTF-8 bytes (CPython keeps them inside an ASCII
 * string, or caches them on first use for others) and fills the per-turn index arrays. In
 * Python this was an encode and a slice per turn, a join and an np.repeat over every byte:
 * about 1 ms of a 256-transcript batch.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static PyObject *pack_turns(PyObject *self, PyObject *args) {
    PyObject *texts;
    Py_ssize_t max_bytes;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &texts, &max_bytes)) return NULL;
    if (max_bytes < 0) {
        PyErr_SetString(PyExc_ValueError, "max_bytes must not be negative");
        return NULL;
    }
    Py_ssize_t n_turns = PyList_GET_SIZE(texts), total = 0;
    PyObject *stream = NULL, *starts = PyBytes_FromStringAndSize(NULL, n_turns * 8),
             *lengths = PyBytes_FromStringAndSize(NULL, n_turns * 8), *result = NULL;
    if (starts == NULL || lengths == NULL) goto done;
    int64_t *start = (int64_t *)PyBytes_AS_STRING(starts), *length = (int64_t *)PyBytes_AS_STRING(lengths);
    for (Py_ssize_t r = 0; r < n_turns; r++) { /* sizes first: the stream is allocated once */
        PyObject *text = PyList_GET_ITEM(texts, r);
        Py_ssize_t size;
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "turn %zd is not a str", r);
            goto done;
        }
        if (PyUnicode_AsUTF8AndSize(text, &size) == NULL) goto done; /* lone surrogates: not UTF-8 */
        start[r] = total;
        length[r] = size < max_bytes ? size : max_bytes;
        total += length[r];
    }
    stream = PyBytes_FromStringAndSize(NULL, total);
    if (stream == NULL) goto done;
    char *out = PyBytes_AS_STRING(stream);
    for (Py_ssize_t r = 0; r < n_turns; r++) {
        Py_ssize_t size;
        const char *utf8 = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(texts, r), &size); /* cached by now */
        memcpy(out + start[r], utf8, (size_t)length[r]);
    }
    result = PyTuple_Pack(3, stream, starts, lengths);
done:
    Py_XDECREF(stream);
    Py_XDECREF(starts);
    Py_XDECREF(lengths);
    return result;
}

/* Bits of normalization_flags: what in a text normalisation could change (see echogate.text). */
enum { NOT_PLAIN = 1, ODD_CASE = 2, CAPITAL_RUN = 4 };
/* A byte's kind (0 other, 1 small letter, 2 capital, 3 space); the flags each run of three kinds
 * raises (indexed by kind before last << 4 | kind before << 2 | kind); the control bytes; the
 * digits; what a tokeniser detaches from the word before it (sentence punctuation, a clitic's
 * apostrophe). Filled once at import: one table lookup a byte instead of a chain of comparisons. */
static uint8_t KIND[256], RUN_FLAGS[64], CONTROL[256], DIGIT[256], DETACHED[256];

static void fill_tables(void) {
    for (int b = 'a'; b <= 'z'; b++) KIND[b] = 1;
    for (int b = 'A'; b <= 'Z'; b++) KIND[b] = 2;
    KIND[' '] = 3;
    for (int b = 0; b < 32; b++) CONTROL[b] = NOT_PLAIN;
    for (int b = '0'; b <= '9'; b++) DIGIT[b] = 1;
    for (const char *b = ".,!?;:'"; *b; b++) DETACHED[(uint8_t)*b] = 1;
    for (int run = 0; run < 64; run++) {
        int k2 = run >> 4, k1 = (run >> 2) & 3, k0 = run & 3;
        if (k1 == 1 && k0 == 2) RUN_FLAGS[run] |= ODD_CASE;                /* aB */
        if (k2 == 2 && k1 == 2 && k0 == 1) RUN_FLAGS[run] |= ODD_CASE;     /* ABc */
        if (k2 == 2 && k1 == 2 && k0 == 2) RUN_FLAGS[run] |= CAPITAL_RUN;  /* ABC */
        if (k1 == 3 && k0 == 3) RUN_FLAGS[run] |= NOT_PLAIN;               /* two spaces */
    }
}

static PyObject *normalization_flags(PyObject *self, PyObject *args) {
    PyObject *texts;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &texts)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *result = PyBytes_FromStringAndSize(NULL, n);
    if (result == NULL) return NULL;
    uint8_t *flags = (uint8_t *)PyBytes_AS_STRING(result);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i);
        if (!PyUnicode_Check(text)) {
            Py_DECREF(result);
            PyErr_Format(PyExc_TypeError, "text %zd is not a str", i);
            return NULL;
        }
        if (!PyUnicode_IS_ASCII(text)) { /* NFKC, zero-width characters, look-alikes: the full path */
            flags[i] = NOT_PLAIN;
            continue;
        }
        const unsigned char *c = PyUnicode_1BYTE_DATA(text);
        Py_ssize_t len = PyUnicode_GET_LENGTH(text);
        unsigned run = 0, f = len && (c[0] == ' ' || c[len - 1] == ' ') ? NOT_PLAIN : 0;
        for (Py_ssize_t k = 0; k < len; k++) {
            run = ((run << 2) | KIND[c[k]]) & 63;
            f |= RUN_FLAGS[run] | CONTROL[c[k]];
        }
        flags[i] = (uint8_t)f;
    }
    return result;
}

/* Each ASCII text with every run of digits as one '0' (the text itself where it has no digit),
 * None for a text that is not ASCII (other scripts have digits of their own) or that may be
 * tokenised (a space before . , ! ? ; : or an apostrophe, or before "n'"): echogate.text.model_texts
 * treats those with regular expressions. And whether any text changed. */
static PyObject *mask_digit_runs(PyObject *self, PyObject *args) {
    PyObject *texts;
    if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &texts)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *text = PyList_GET_ITEM(texts, i), *item;
        if (!PyUnicode_Check(text)) {
            Py_DECREF(out);
            PyErr_Format(PyExc_TypeError, "text %zd is not a str", i);
            return NULL;
        }
        const unsigned char *c = PyUnicode_IS_ASCII(text) ? PyUnicode_1BYTE_DATA(text) : NULL;
        Py_ssize_t len = c == NULL ? 0 : PyUnicode_GET_LENGTH(text), digits = 0, dropped = 0;
        int tokenised = 0;
        for (Py_ssize_t k = 0; k < len; k++) {
            digits += DIGIT[c[k]];
            dropped += k && DIGIT[c[k]] && DIGIT[c[k - 1]]; /* a digit after a digit */
            /* a space before sentence punctuation or a clitic's apostrophe (" ." " 's" " n't"); punctuation
             * is rare, so the test behind it is a branch seldom taken (0.30 -> 0.42 ms per 256 SGD
             * transcripts; a test at every space or byte took 0.55-0.60) */
            if (DETACHED[c[k]] && k)
                tokenised |= c[k - 1] == ' ' || (c[k] == '\'' && k >= 2 && c[k - 1] == 'n' && c[k - 2] == ' ');
        }
        if (c == NULL || tokenised) {
            item = Py_NewRef(Py_None);
        } else if (!digits) {
            item = Py_NewRef(text);
        } else {
            item = PyUnicode_New(len - dropped, 127);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            Py_UCS1 *w = PyUnicode_1BYTE_DATA(item);
            for (Py_ssize_t k = 0; k < len; k++) {
                if (DIGIT[c[k]] && k && DIGIT[c[k - 1]]) continue;
                *w++ = DIGIT[c[k]] ? '0' : c[k];
            }
            changed = 1;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return Py_BuildValue("(Ni)", out, changed);
}

/* The canonical content of a batch's turns, for echogate.text.content_sha256: each turn's role,
 * 0x1F, its text and 0x1E, as UTF-8, one turn after another; and the byte offset where each turn
 * ends (int64). One pass, where a join per transcript in Python cost 1 ms a batch. */
static PyObject *canonical_content(PyObject *self, PyObject *args) {
    PyObject *roles, *texts;
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &roles, &PyList_Type, &texts)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts), total = 0;
    if (PyList_GET_SIZE(roles) != n) {
        PyErr_Format(PyExc_ValueError, "%zd roles for %zd texts", PyList_GET_SIZE(roles), n);
        return NULL;
    }
    PyObject *ends = PyBytes_FromStringAndSize(NULL, n * 8), *stream = NULL, *result = NULL;
    if (ends == NULL) return NULL;
    int64_t *end = (int64_t *)PyBytes_AS_STRING(ends);
    for (Py_ssize_t r = 0; r < n; r++) { /* sizes first: the stream is allocated once */
        PyObject *role = PyList_GET_ITEM(roles, r), *text = PyList_GET_ITEM(texts, r);
        Py_ssize_t role_size, text_size;
        if (!PyUnicode_Check(role) || !PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "turn %zd: role and text must be str", r);
            goto done;
        }
        if (PyUnicode_AsUTF8AndSize(role, &role_size) == NULL || PyUnicode_AsUTF8AndSize(text, &text_size) == NULL)
            goto done; /* lone surrogates: not UTF-8 */
        total += role_size + text_size + 2;
        end[r] = total;
    }
    stream = PyBytes_FromStringAndSize(NULL, total);
    if (stream == NULL) goto done;
    char *out = PyBytes_AS_STRING(stream);
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t role_size, text_size;
        const char *role = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(roles, r), &role_size); /* cached by now */
        const char *text = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(texts, r), &text_size);
        memcpy(out, role, (size_t)role_size);
        out += role_size;
        *out++ = 0x1F;
        memcpy(out, text, (size_t)text_size);
        out += text_size;
        *out++ = 0x1E;
    }
    result = PyTuple_Pack(2, stream, ends);
done:
    Py_XDECREF(stream);
    Py_XDECREF(ends);
    return result;
}

static PyMethodDef methods[] = {
    {"pack_turns", pack_turns, METH_VARARGS,
     "pack_turns(texts: list[str], max_bytes) -> (stream, starts, lengths) as bytes\n\n"
     "stream: the turns' UTF-8, each cut to max_bytes; the others int64: see echogate.text.pack_turns."},
    {"normalization_flags", normalization_flags, METH_VARARGS,
     "normalization_flags(texts: list[str]) -> bytes, one per text: 1 not plain ASCII with single inner\n"
     "spaces, 2 a small letter before a capital or two capitals before a small one, 4 three capitals in a row."},
    {"mask_digit_runs", mask_digit_runs, METH_VARARGS,
     "mask_digit_runs(texts: list[str]) -> (list, changed): each ASCII text with every run of digits as one\n"
     "'0', None for a text that is not ASCII or may be tokenised; changed: whether any other text had a digit."},
    {"canonical_content", canonical_content, METH_VARARGS,
     "canonical_content(roles: list[str], texts: list[str]) -> (stream, ends) as bytes\n\n"
     "stream: role, 0x1F, text, 0x1E of every turn as UTF-8; ends: int64 offset where each turn ends."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_text",
                                    "Packing turns into one byte stream, and what normalisation could change "
                                    "(echogate.text).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__text(void) {
    fill_tables();
    return PyModule_Create(&module);
}
