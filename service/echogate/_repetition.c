/* Repetition features of a batch of transcripts in one pass per conversation.
 *
 * The kernel behind echogate.repetition.analyse (read its docstring for what each feature
 * means). Per transcript, one hash table keyed by word trigram, content word or turn key
 * remembers the first turn of each side that used the key and how often the statistics' side
 * used it; each turn's words are hashed as they are read. No NumPy call per step, so a single
 * transcript costs microseconds instead of a hundred calls' fixed cost, and the GIL is released
 * while it runs (the scorer runs on executor threads).
 *
 * Hashes match the NumPy definitions in echogate.repetition: a word is
 * mix(sum(byte * Q**k)) over its mapped bytes (uint32), a trigram w0 * K1 + w1 * K2 + w2
 * (uint64); the word-byte map and the stop-word table come from Python, so there is one
 * source of truth for both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define Q 0x9E3779B1u
#define K1 0x9E3779B97F4A7C15ull
#define K2 0xC2B2AE3D27D4EB4Full
#define N_FEATURES 4 /* trigram_self, content_self, trigram_other, content_other */
#define N_STATS 4    /* duplicate_turn_fraction, duplicate_turn_char_fraction, top_trigram_fraction, distinct_3 */

enum kind { TRIGRAM = 0, CONTENT = 1, TURN = 2 };

typedef struct {
    uint64_t key;
    uint32_t generation; /* the transcript that wrote the slot; any other means empty */
    int32_t first[2];    /* first turn of the other side [0] and of the agent side [1], or -1 */
    int32_t last_turn;   /* the last turn that used the key: counts a key once per turn */
    int32_t side_count;  /* trigram occurrences on the statistics' side */
    uint8_t kind;
} Entry;

typedef struct {
    Entry *slots;
    size_t mask;
    size_t used; /* slots of the current generation */
    uint32_t generation;
} Table;

static uint64_t mix(uint32_t h) {
    uint64_t x = (uint64_t)h * K1;
    return x ^ (x >> 29);
}

static size_t slot_of(uint64_t key, uint8_t kind, size_t mask) {
    return (size_t)(((key ^ ((uint64_t)kind * K2)) * K1) >> 17) & mask;
}

/* An empty table for the next transcript (a new generation: nothing to clear). */
static void table_reset(Table *t) {
    t->used = 0;
    if (++t->generation == 0) { /* wrapped after 2**32 transcripts: clear for real */
        memset(t->slots, 0, (t->mask + 1) * sizeof(Entry));
        t->generation = 1;
    }
}

/* Twice the slots, the current generation's entries moved over: the table stays at most half full. */
static int table_grow(Table *t) {
    size_t size = 2 * (t->mask + 1);
    Entry *slots = calloc(size, sizeof(Entry));
    if (slots == NULL) return -1;
    for (size_t i = 0; i <= t->mask; i++) {
        Entry *e = &t->slots[i];
        if (e->generation != t->generation) continue;
        size_t j = slot_of(e->key, e->kind, size - 1);
        while (slots[j].generation == t->generation) j = (j + 1) & (size - 1);
        slots[j] = *e;
    }
    free(t->slots);
    t->slots = slots;
    t->mask = size - 1;
    return 0;
}

/* The key's entry, created (`*created`) if the transcript had not used it; NULL when out of memory. */
static Entry *table_get(Table *t, uint64_t key, uint8_t kind, int *created) {
    size_t i = slot_of(key, kind, t->mask);
    for (;;) {
        Entry *e = &t->slots[i];
        if (e->generation != t->generation) {
            if (2 * (t->used + 1) > t->mask + 1) {
                if (table_grow(t) < 0) return NULL;
                return table_get(t, key, kind, created);
            }
            t->used++;
            e->generation = t->generation;
            e->key = key;
            e->kind = kind;
            e->first[0] = e->first[1] = -1;
            e->last_turn = -1;
            e->side_count = 0;
            *created = 1;
            return e;
        }
        if (e->key == key && e->kind == kind) {
            *created = 0;
            return e;
        }
        i = (i + 1) & t->mask;
    }
}

typedef struct {
    int64_t distinct[2], own[2], other[2]; /* per kind (trigram, content) within one turn */
} TurnCounts;

/* One use of `key` by turn `turn` (agent or not): the turn's counts of distinct keys and of
 * those some earlier turn of its own / the other side used. */
static Entry *use(Table *t, uint64_t key, uint8_t kind, int32_t turn, int agent, TurnCounts *c) {
    int created;
    Entry *e = table_get(t, key, kind, &created);
    if (e == NULL) return NULL;
    if (e->last_turn != turn) { /* first use in this turn; a key first used in this turn is not "earlier" */
        c->distinct[kind]++;
        c->own[kind] += e->first[agent] >= 0;
        c->other[kind] += e->first[!agent] >= 0;
        if (e->first[agent] < 0) e->first[agent] = turn;
        e->last_turn = turn;
    }
    return e;
}

typedef struct {
    const uint8_t *stream, *agent, *side, *word_bytes;
    const int64_t *starts, *lengths, *turn_transcript;
    const uint64_t *turn_keys, *stop_table;
    int64_t n_turns, stop_mask;
    int stop_shift;
    float *turn;
    double *stats;
    uint64_t *side_trigrams;
    int64_t *side_trigram_transcript;
    int64_t n_side_trigrams, capacity;
} Batch;

static double share(int64_t part, int64_t whole) { return whole > 0 ? (double)part / (double)whole : 0.0; }

static int run(Batch *b) {
    Table table = {calloc(256, sizeof(Entry)), 255, 0, 0};
    if (table.slots == NULL) return -1;
    int64_t first = 0;
    while (first < b->n_turns) {
        int64_t doc = b->turn_transcript[first], end = first;
        while (end < b->n_turns && b->turn_transcript[end] == doc) end++;
        table_reset(&table);
        int64_t side_turns = 0, duplicate_turns = 0, side_chars = 0, duplicate_chars = 0;
        int64_t trigrams = 0, distinct = 0, top = 0;
        for (int64_t r = first; r < end; r++) {
            int32_t turn = (int32_t)(r - first);
            int agent = b->agent[r] != 0, on_side = b->side[r] != 0;
            TurnCounts c = {{0, 0}, {0, 0}, {0, 0}};
            uint64_t w1 = 0, w2 = 0; /* the two words before this one */
            int64_t words = 0;
            const uint8_t *p = b->stream + b->starts[r], *stop = p + b->lengths[r];
            while (p < stop) {
                while (p < stop && b->word_bytes[*p] == 0) p++; /* separators */
                if (p == stop) break;
                uint32_t h = 0, power = 1;
                for (; p < stop && b->word_bytes[*p] != 0; p++) {
                    h += (uint32_t)b->word_bytes[*p] * power;
                    power *= Q;
                }
                uint64_t w = mix(h);
                if (b->stop_table[(w >> b->stop_shift) & (uint64_t)b->stop_mask] != w &&
                    use(&table, w, CONTENT, turn, agent, &c) == NULL)
                    goto out_of_memory;
                if (++words >= 3) {
                    uint64_t tri = w2 * K1 + w1 * K2 + w;
                    Entry *e = use(&table, tri, TRIGRAM, turn, agent, &c);
                    if (e == NULL) goto out_of_memory;
                    if (on_side) {
                        trigrams++;
                        if (++e->side_count == 1) distinct++;
                        if (e->side_count > top) top = e->side_count;
                        if (b->n_side_trigrams >= b->capacity) {
                            free(table.slots);
                            return -2;
                        }
                        b->side_trigrams[b->n_side_trigrams] = tri;
                        b->side_trigram_transcript[b->n_side_trigrams++] = doc;
                    }
                }
                w2 = w1;
                w1 = w;
            }
            float *out = b->turn + r * N_FEATURES;
            out[0] = (float)share(c.own[TRIGRAM], c.distinct[TRIGRAM]);
            out[1] = (float)share(c.own[CONTENT], c.distinct[CONTENT]);
            out[2] = (float)share(c.other[TRIGRAM], c.distinct[TRIGRAM]);
            out[3] = (float)share(c.other[CONTENT], c.distinct[CONTENT]);
            if (on_side) {
                side_turns++;
                side_chars += b->lengths[r];
                if (b->turn_keys[r] != 0) {
                    int created;
                    if (table_get(&table, b->turn_keys[r], TURN, &created) == NULL) goto out_of_memory;
                    if (!created) {
                        duplicate_turns++;
                        duplicate_chars += b->lengths[r];
                    }
                }
            }
        }
        double *stats = b->stats + doc * N_STATS;
        stats[0] = share(duplicate_turns, side_turns);
        stats[1] = share(duplicate_chars, side_chars);
        stats[2] = top > 1 ? share(top, trigrams) : 0.0; /* a trigram seen once is no "top" */
        stats[3] = share(distinct, trigrams);
        first = end;
    }
    free(table.slots);
    return 0;
out_of_memory:
    free(table.slots);
    return -1;
}

static int check(Py_buffer *view, Py_ssize_t count, Py_ssize_t item, const char *name) {
    if (view->len != count * item) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, view->len, count * item);
        return -1;
    }
    return 0;
}

static PyObject *analyse(PyObject *self, PyObject *args) {
    Py_buffer stream, starts, lengths, agent, side, turn_transcript, turn_keys, word_bytes, stop_table, turn, stats,
        side_trigrams, side_trigram_transcript;
    int stop_shift;
    Py_ssize_t n_transcripts;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*y*inw*w*w*w*", &stream, &starts, &lengths, &agent, &side,
                          &turn_transcript, &turn_keys, &word_bytes, &stop_table, &stop_shift, &n_transcripts, &turn,
                          &stats, &side_trigrams, &side_trigram_transcript))
        return NULL;
    Py_buffer *views[] = {&stream, &starts, &lengths, &agent, &side, &turn_transcript, &turn_keys,
                          &word_bytes, &stop_table, &turn, &stats, &side_trigrams, &side_trigram_transcript};
    PyObject *result = NULL;
    Py_ssize_t n_turns = starts.len / 8;
    if (check(&lengths, n_turns, 8, "lengths") || check(&agent, n_turns, 1, "agent") || check(&side, n_turns, 1, "side") ||
        check(&turn_transcript, n_turns, 8, "turn_transcript") || check(&turn_keys, n_turns, 8, "turn_keys") ||
        check(&word_bytes, 256, 1, "word_bytes") || check(&turn, n_turns, 4 * N_FEATURES, "turn") ||
        check(&stats, n_transcripts, 8 * N_STATS, "stats") ||
        check(&side_trigram_transcript, side_trigrams.len / 8, 8, "side_trigram_transcript"))
        goto done;
    Py_ssize_t table_size = stop_table.len / 8;
    if (table_size == 0 || (table_size & (table_size - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "stop_table: size must be a power of two");
        goto done;
    }
    const int64_t *s = starts.buf, *l = lengths.buf, *tt = turn_transcript.buf;
    for (Py_ssize_t r = 0; r < n_turns; r++) { /* every turn inside the stream, transcripts in range and grouped */
        if (s[r] < 0 || l[r] < 0 || s[r] + l[r] > stream.len || tt[r] < 0 || tt[r] >= n_transcripts ||
            (r > 0 && tt[r] < tt[r - 1])) {
            PyErr_Format(PyExc_ValueError, "turn %zd: bytes or transcript out of range or out of order", r);
            goto done;
        }
    }
    Batch batch = {stream.buf, agent.buf, side.buf, word_bytes.buf, s, l, tt, turn_keys.buf, stop_table.buf,
                   n_turns, table_size - 1, stop_shift, turn.buf, stats.buf,
                   side_trigrams.buf, side_trigram_transcript.buf, 0, side_trigrams.len / 8};
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run(&batch);
    Py_END_ALLOW_THREADS
    if (status == -1)
        PyErr_NoMemory();
    else if (status == -2)
        PyErr_SetString(PyExc_ValueError, "side_trigrams: too small for the batch's trigrams");
    else
        result = PyLong_FromSsize_t((Py_ssize_t)batch.n_side_trigrams);
done:
    for (size_t i = 0; i < sizeof(views) / sizeof(views[0]); i++) PyBuffer_Release(views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"analyse", analyse, METH_VARARGS,
     "analyse(stream, starts, lengths, agent, side, turn_transcript, turn_keys, word_bytes, stop_table, stop_shift,\n"
     "        n_transcripts, turn_out, stats_out, side_trigrams_out, side_trigram_transcript_out) -> side trigram count\n\n"
     "Fills turn_out [R, 4] float32 and stats_out [T, 4] float64; see echogate.repetition.analyse."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_repetition",
                                    "Repetition features in one pass per conversation (echogate.repetition).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__repetition(void) { return PyModule_Create(&module); }
