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
#include <math.h>
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

/* ---- The compressed size of each transcript's side (compression_ratio's denominator) ----
 *
 * What a fast DEFLATE encoder would write for each text, estimated in one pass: a greedy LZ77
 * parse (4-byte hash, the last position per bucket, matches of 4 to 258 bytes within 32 KB, as
 * fast encoders parse), then the cheapest of the three block types: dynamic Huffman codes with
 * each symbol costing its entropy (-log2 of its share; a Huffman code is within a fraction of a
 * bit of it) plus the code lengths' own header, costed the same way; the fixed codes; or the text
 * stored. Calling a DEFLATE library per transcript spent most of its 9-14 us building tables for
 * a few hundred bytes (docs/repetition.md compares the two). */
#define HASH_BITS 13
#define WINDOW 32768
#define MIN_MATCH 4
#define MAX_MATCH 258
#define N_LITLEN 286
#define N_DIST 30

static const uint16_t LEN_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                      31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LEN_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t DIST_BASE[30] = {1,    2,    3,    4,    5,    7,     9,     13,    17,    25,
                                       33,   49,   65,   97,   129,  193,   257,   385,   513,   769,
                                       1025, 1537, 2049, 3073, 4097, 6145,  8193,  12289, 16385, 24577};
static const uint8_t DIST_EXTRA[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
/* the order in which a dynamic block lists the code-length code's lengths (RFC 1951, 3.2.7) */
static const uint8_t CL_ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

#define SMALL 4096 /* counts below this take their logarithms from a table */
static uint8_t LEN_CODE[MAX_MATCH + 1], DIST_CODE[512];
static double LOG2[SMALL], XLOG2X[SMALL];

/* The last code whose base is <= value. */
static int code_of(const uint16_t *base, int n, int value) {
    int c = 0;
    while (c + 1 < n && base[c + 1] <= value) c++;
    return c;
}

static void fill_deflate_tables(void) {
    for (int len = MIN_MATCH; len <= MAX_MATCH; len++) LEN_CODE[len] = (uint8_t)code_of(LEN_BASE, 29, len);
    for (int d = 1; d <= 256; d++) DIST_CODE[d - 1] = (uint8_t)code_of(DIST_BASE, 30, d);
    for (int d = 257; d <= WINDOW; d += 128) DIST_CODE[256 + ((d - 1) >> 7)] = (uint8_t)code_of(DIST_BASE, 30, d);
    for (int x = 1; x < SMALL; x++) {
        LOG2[x] = log2((double)x);
        XLOG2X[x] = x * LOG2[x];
    }
}

/* zlib's split: distances up to 256 by themselves, longer ones by 128s (their codes start on them) */
static int dist_code(int64_t d) { return d <= 256 ? DIST_CODE[d - 1] : DIST_CODE[256 + ((d - 1) >> 7)]; }

static double log2_of(int64_t x) { return x < SMALL ? LOG2[x] : log2((double)x); }

static double xlog2x(int64_t x) { return x < SMALL ? XLOG2X[x] : (double)x * log2((double)x); }

/* Bits to code the counted symbols at their entropy: sum(c) log2 sum(c) - sum(c log2 c). */
static double entropy_bits(const int64_t *count, int n, int64_t *total) {
    double bits = 0.0;
    *total = 0;
    for (int i = 0; i < n; i++) {
        *total += count[i];
        bits -= xlog2x(count[i]);
    }
    return bits + xlog2x(*total);
}

/* A run of unused symbols' zero code lengths, as DEFLATE codes it: alone under 3, code 17 for 3-10
 * (3 extra bits), code 18 for 11-138 (7 extra bits). */
static void code_zeros(int run, int64_t *cl_count, double *extra) {
    while (run >= 3) {
        int take = run > 138 ? 138 : run;
        cl_count[take <= 10 ? 17 : 18]++;
        *extra += take <= 10 ? 3 : 7;
        run -= take;
    }
    cl_count[0] += run;
}

/* The code-length symbols of one alphabet's symbols (their entropy rounded, 1 to 15; a zero run for
 * the unused ones, which may go on into the next alphabet: `run`). */
static void code_lengths(const int64_t *count, int n, int64_t total, int64_t *cl_count, double *extra, int *run) {
    for (int i = 0; i < n; i++) {
        if (count[i] == 0) {
            (*run)++;
            continue;
        }
        code_zeros(*run, cl_count, extra);
        *run = 0;
        int len = (int)(log2_of(total) - log2_of(count[i]) + 0.5);
        cl_count[len < 1 ? 1 : len > 15 ? 15 : len]++;
    }
}

/* A dynamic block's header: its code lengths, run-length coded, costed at the entropy of that
 * sequence plus its extra bits and the code-length code's own 3-bit lengths. */
static double header_bits(const int64_t *litlen, int n_litlen, const int64_t *dist, int n_dist, int64_t t_litlen,
                          int64_t t_dist) {
    int64_t cl_count[19] = {0}, total;
    double extra = 0.0;
    int run = 0;
    code_lengths(litlen, n_litlen, t_litlen, cl_count, &extra, &run);
    code_lengths(dist, n_dist, t_dist, cl_count, &extra, &run);
    code_zeros(run, cl_count, &extra);
    double bits = entropy_bits(cl_count, 19, &total) + extra;
    int hclen = 4;
    for (int k = 0; k < 19; k++)
        if (cl_count[CL_ORDER[k]] > 0 && k + 1 > hclen) hclen = k + 1;
    return 3 + 14 + 3.0 * hclen + bits;
}

static int64_t deflate_size(const uint8_t *text, int64_t start, int64_t end, uint32_t *table) {
    int64_t litlen[N_LITLEN] = {0}, dist[N_DIST] = {0}, n = end - start;
    double extra = 0.0;
    int64_t i = start;
    while (i < end) {
        int64_t len = 0, back = 0;
        if (i + MIN_MATCH <= end) {
            uint32_t word;
            memcpy(&word, text + i, 4);
            uint32_t h = (word * 2654435761u) >> (32 - HASH_BITS);
            int64_t candidate = (int64_t)table[h] - 1; /* positions + 1; older transcripts' are before start */
            table[h] = (uint32_t)(i + 1);
            if (candidate >= start && i - candidate <= WINDOW && memcmp(text + candidate, text + i, 4) == 0) {
                len = 4;
                while (len < MAX_MATCH && i + len < end && text[candidate + len] == text[i + len]) len++;
                back = i - candidate;
            }
        }
        if (len) {
            int lc = LEN_CODE[len], dc = dist_code(back);
            litlen[257 + lc]++;
            dist[dc]++;
            extra += LEN_EXTRA[lc] + DIST_EXTRA[dc];
            i += len;
        } else {
            litlen[text[i]]++;
            i++;
        }
    }
    litlen[256] = 1; /* end of block */
    int n_litlen = N_LITLEN, n_dist = N_DIST;
    while (n_litlen > 257 && litlen[n_litlen - 1] == 0) n_litlen--;
    while (n_dist > 1 && dist[n_dist - 1] == 0) n_dist--;
    int64_t t_litlen, t_dist;
    double dynamic = entropy_bits(litlen, n_litlen, &t_litlen) + entropy_bits(dist, n_dist, &t_dist) + extra +
                     header_bits(litlen, n_litlen, dist, n_dist, t_litlen, t_dist);
    double fixed = 3 + extra + 5.0 * (double)t_dist;
    for (int s = 0; s < n_litlen; s++) fixed += (double)litlen[s] * (s < 144 ? 8 : s < 256 ? 9 : s < 280 ? 7 : 8);
    double stored = 8.0 * (double)(n + 5 * (n / 65535 + 1));
    double bits = dynamic < fixed ? dynamic : fixed;
    bits = bits < stored ? bits : stored;
    return (int64_t)ceil(bits / 8.0);
}

static PyObject *deflate_sizes(PyObject *self, PyObject *args) {
    Py_buffer text, ends, sizes;
    if (!PyArg_ParseTuple(args, "y*y*w*", &text, &ends, &sizes)) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = ends.len / 8;
    const int64_t *e = ends.buf;
    if (check(&sizes, n, 8, "sizes")) goto done;
    if (text.len >= UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "deflate_sizes: text over 4 GB");
        goto done;
    }
    for (Py_ssize_t t = 0; t < n; t++) {
        if (e[t] < (t ? e[t - 1] : 0) || e[t] > text.len) {
            PyErr_Format(PyExc_ValueError, "deflate_sizes: end %zd out of order or past the text", t);
            goto done;
        }
    }
    uint32_t *table = calloc((size_t)1 << HASH_BITS, sizeof(uint32_t));
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    int64_t *out = sizes.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t t = 0; t < n; t++) {
        int64_t start = t ? e[t - 1] : 0;
        out[t] = e[t] > start ? deflate_size(text.buf, start, e[t], table) : 0;
    }
    Py_END_ALLOW_THREADS
    free(table);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&text);
    PyBuffer_Release(&ends);
    PyBuffer_Release(&sizes);
    return result;
}

static PyMethodDef methods[] = {
    {"analyse", analyse, METH_VARARGS,
     "analyse(stream, starts, lengths, agent, side, turn_transcript, turn_keys, word_bytes, stop_table, stop_shift,\n"
     "        n_transcripts, turn_out, stats_out, side_trigrams_out, side_trigram_transcript_out) -> side trigram count\n\n"
     "Fills turn_out [R, 4] float32 and stats_out [T, 4] float64; see echogate.repetition.analyse."},
    {"deflate_sizes", deflate_sizes, METH_VARARGS,
     "deflate_sizes(text, ends, sizes_out): the estimated DEFLATE size in bytes of each text[ends[t - 1]:ends[t]]\n"
     "(int64 ends and sizes_out; 0 for an empty one)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_repetition",
                                    "Repetition features in one pass per conversation (echogate.repetition).", -1,
                                    methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__repetition(void) {
    fill_deflate_tables();
    return PyModule_Create(&module);
}
