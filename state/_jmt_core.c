/* state._jmt_core: the per-block update of the Jellyfish Merkle Tree of state/jmt.py, in C.
 *
 * This is the compiled twin of the pure-Python update in state/jmt.py (JellyfishState._prepare_python:
 * _apply_many, _apply_one, _apply_leaf, _build, _make, _remake). It computes exactly the same thing,
 * byte for byte and in the same order: the new root, the new internal nodes by nibble path, the value
 * and latest-value writes, the stale keys and the removed paths. The store layout and hashing rules
 * are documented in state/jmt.py and state/proof.py; tests/test_jmt_core.py checks both twins against
 * each other and against hashlib. Nothing here touches the store: a node that is not in the node cache
 * is asked of the Python callable `latest(path, version)`, which reads and checks it.
 *
 * SHA3-256 is FIPS 202 (Keccak-f[1600], rate 136 bytes, domain padding 0x06), written out below so that
 * the module needs nothing but the C compiler and Python's headers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- SHA3-256 (FIPS 202) ------------------------------------------------------------------------- */

static const uint64_t keccak_rc[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

#define ROTL64(x, n) (((x) << (n)) | ((x) >> (64 - (n))))

/* One round of Keccak-f[1600] (FIPS 202 §3.2: theta, rho, pi, chi, iota) from the lanes A..,
 * named by plane (b, g, k, m, s) and column (a, e, i, o, u), into the lanes E... Each output plane is
 * computed from its five rho-pi inputs at once, so that few values are live at a time. */
#define KECCAK_ROUND(A, E, rc)                                                                            \
    do {                                                                                                  \
        uint64_t ca = A##ba ^ A##ga ^ A##ka ^ A##ma ^ A##sa, ce = A##be ^ A##ge ^ A##ke ^ A##me ^ A##se; \
        uint64_t ci = A##bi ^ A##gi ^ A##ki ^ A##mi ^ A##si, co = A##bo ^ A##go ^ A##ko ^ A##mo ^ A##so; \
        uint64_t cu = A##bu ^ A##gu ^ A##ku ^ A##mu ^ A##su;                                            \
        uint64_t da = cu ^ ROTL64(ce, 1), de = ca ^ ROTL64(ci, 1), di = ce ^ ROTL64(co, 1);              \
        uint64_t d_o = ci ^ ROTL64(cu, 1), du = co ^ ROTL64(ca, 1);                                      \
        uint64_t b0, b1, b2, b3, b4;                                                                      \
        b0 = A##ba ^ da; b1 = ROTL64(A##ge ^ de, 44); b2 = ROTL64(A##ki ^ di, 43);                       \
        b3 = ROTL64(A##mo ^ d_o, 21); b4 = ROTL64(A##su ^ du, 14);                                       \
        E##ba = b0 ^ (~b1 & b2) ^ (rc); E##be = b1 ^ (~b2 & b3); E##bi = b2 ^ (~b3 & b4);                \
        E##bo = b3 ^ (~b4 & b0); E##bu = b4 ^ (~b0 & b1);                                                \
        b0 = ROTL64(A##bo ^ d_o, 28); b1 = ROTL64(A##gu ^ du, 20); b2 = ROTL64(A##ka ^ da, 3);           \
        b3 = ROTL64(A##me ^ de, 45); b4 = ROTL64(A##si ^ di, 61);                                        \
        E##ga = b0 ^ (~b1 & b2); E##ge = b1 ^ (~b2 & b3); E##gi = b2 ^ (~b3 & b4);                       \
        E##go = b3 ^ (~b4 & b0); E##gu = b4 ^ (~b0 & b1);                                                \
        b0 = ROTL64(A##be ^ de, 1); b1 = ROTL64(A##gi ^ di, 6); b2 = ROTL64(A##ko ^ d_o, 25);            \
        b3 = ROTL64(A##mu ^ du, 8); b4 = ROTL64(A##sa ^ da, 18);                                         \
        E##ka = b0 ^ (~b1 & b2); E##ke = b1 ^ (~b2 & b3); E##ki = b2 ^ (~b3 & b4);                       \
        E##ko = b3 ^ (~b4 & b0); E##ku = b4 ^ (~b0 & b1);                                                \
        b0 = ROTL64(A##bu ^ du, 27); b1 = ROTL64(A##ga ^ da, 36); b2 = ROTL64(A##ke ^ de, 10);           \
        b3 = ROTL64(A##mi ^ di, 15); b4 = ROTL64(A##so ^ d_o, 56);                                       \
        E##ma = b0 ^ (~b1 & b2); E##me = b1 ^ (~b2 & b3); E##mi = b2 ^ (~b3 & b4);                       \
        E##mo = b3 ^ (~b4 & b0); E##mu = b4 ^ (~b0 & b1);                                                \
        b0 = ROTL64(A##bi ^ di, 62); b1 = ROTL64(A##go ^ d_o, 55); b2 = ROTL64(A##ku ^ du, 39);          \
        b3 = ROTL64(A##ma ^ da, 41); b4 = ROTL64(A##se ^ de, 2);                                         \
        E##sa = b0 ^ (~b1 & b2); E##se = b1 ^ (~b2 & b3); E##si = b2 ^ (~b3 & b4);                       \
        E##so = b3 ^ (~b4 & b0); E##su = b4 ^ (~b0 & b1);                                                \
    } while (0)

/* Keccak-f[1600] (FIPS 202 §3.3): 24 rounds, two at a time (A into E, then E back into A). With GCC on
 * x86-64, a second copy for x86-64-v3 (BMI's and-not, rotations without flags) is picked at load time
 * where the processor has it: about 17% fewer instructions. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void keccak_f1600(uint64_t s[25]) {
    uint64_t Aba = s[0], Abe = s[1], Abi = s[2], Abo = s[3], Abu = s[4];
    uint64_t Aga = s[5], Age = s[6], Agi = s[7], Ago = s[8], Agu = s[9];
    uint64_t Aka = s[10], Ake = s[11], Aki = s[12], Ako = s[13], Aku = s[14];
    uint64_t Ama = s[15], Ame = s[16], Ami = s[17], Amo = s[18], Amu = s[19];
    uint64_t Asa = s[20], Ase = s[21], Asi = s[22], Aso = s[23], Asu = s[24];
    uint64_t Eba, Ebe, Ebi, Ebo, Ebu, Ega, Ege, Egi, Ego, Egu, Eka, Eke, Eki, Eko, Eku;
    uint64_t Ema, Eme, Emi, Emo, Emu, Esa, Ese, Esi, Eso, Esu;
    for (int r = 0; r < 24; r += 2) {
        KECCAK_ROUND(A, E, keccak_rc[r]);
        KECCAK_ROUND(E, A, keccak_rc[r + 1]);
    }
    s[0] = Aba; s[1] = Abe; s[2] = Abi; s[3] = Abo; s[4] = Abu;
    s[5] = Aga; s[6] = Age; s[7] = Agi; s[8] = Ago; s[9] = Agu;
    s[10] = Aka; s[11] = Ake; s[12] = Aki; s[13] = Ako; s[14] = Aku;
    s[15] = Ama; s[16] = Ame; s[17] = Ami; s[18] = Amo; s[19] = Amu;
    s[20] = Asa; s[21] = Ase; s[22] = Asi; s[23] = Aso; s[24] = Asu;
}

#define SHA3_RATE 136

static inline uint64_t load64_le(const unsigned char *p) {
    uint64_t x = 0; /* lanes are little-endian (FIPS 202 §B.1); compilers make this one load */
    for (unsigned j = 0; j < 8; j++) x |= (uint64_t)p[j] << (8 * j);
    return x;
}

static inline void absorb_block(uint64_t s[25], const unsigned char *p) {
    for (unsigned i = 0; i < SHA3_RATE / 8; i++) s[i] ^= load64_le(p + 8 * i);
    keccak_f1600(s);
}

/* SHA3-256 (FIPS 202 §6.1: Keccak[512] of the message || 01, pad10*1) of p[0..n): 32 bytes into out. */
static void sha3_256(const unsigned char *p, size_t n, unsigned char out[32]) {
    uint64_t s[25] = {0};
    for (; n >= SHA3_RATE; p += SHA3_RATE, n -= SHA3_RATE) absorb_block(s, p);
    unsigned char last[SHA3_RATE] = {0};
    memcpy(last, p, n);
    last[n] ^= 0x06;
    last[SHA3_RATE - 1] ^= 0x80;
    absorb_block(s, last);
    for (unsigned i = 0; i < 32; i++) out[i] = (unsigned char)(s[i >> 3] >> (8 * (i & 7)));
}

/* Four SHA3-256 states at once with AVX2 (each 64-bit lane of a 256-bit register holds one state's
 * lane): the same rounds as keccak_f1600, for the node hashes that resolve_hashes computes in batches. */
#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_KECCAK4 1
#include <immintrin.h>

typedef __m256i V4;
#define X4(a, c) _mm256_xor_si256(a, c)
#define ROT4(x, n) _mm256_or_si256(_mm256_slli_epi64(x, n), _mm256_srli_epi64(x, 64 - (n)))
#define ANDN4(a, c) _mm256_andnot_si256(a, c)
#define CHI4(E, b0, b1, b2, b3, b4, x0, x1, x2, x3, x4)                                              \
    E##x0 = X4(b0, ANDN4(b1, b2)); E##x1 = X4(b1, ANDN4(b2, b3)); E##x2 = X4(b2, ANDN4(b3, b4));  \
    E##x3 = X4(b3, ANDN4(b4, b0)); E##x4 = X4(b4, ANDN4(b0, b1))
#define KECCAK_ROUND4(A, E, rc)                                                                          \
    do {                                                                                                 \
        V4 ca = X4(X4(X4(A##ba, A##ga), X4(A##ka, A##ma)), A##sa);                                     \
        V4 ce = X4(X4(X4(A##be, A##ge), X4(A##ke, A##me)), A##se);                                     \
        V4 ci = X4(X4(X4(A##bi, A##gi), X4(A##ki, A##mi)), A##si);                                     \
        V4 co = X4(X4(X4(A##bo, A##go), X4(A##ko, A##mo)), A##so);                                     \
        V4 cu = X4(X4(X4(A##bu, A##gu), X4(A##ku, A##mu)), A##su);                                     \
        V4 da = X4(cu, ROT4(ce, 1)), de = X4(ca, ROT4(ci, 1)), di = X4(ce, ROT4(co, 1));               \
        V4 d_o = X4(ci, ROT4(cu, 1)), du = X4(co, ROT4(ca, 1));                                        \
        V4 b0, b1, b2, b3, b4;                                                                           \
        b0 = X4(A##ba, da); b1 = ROT4(X4(A##ge, de), 44); b2 = ROT4(X4(A##ki, di), 43);                \
        b3 = ROT4(X4(A##mo, d_o), 21); b4 = ROT4(X4(A##su, du), 14);                                   \
        CHI4(E, b0, b1, b2, b3, b4, ba, be, bi, bo, bu);                                                 \
        E##ba = X4(E##ba, _mm256_set1_epi64x((long long)(rc)));                                         \
        b0 = ROT4(X4(A##bo, d_o), 28); b1 = ROT4(X4(A##gu, du), 20); b2 = ROT4(X4(A##ka, da), 3);      \
        b3 = ROT4(X4(A##me, de), 45); b4 = ROT4(X4(A##si, di), 61);                                    \
        CHI4(E, b0, b1, b2, b3, b4, ga, ge, gi, go, gu);                                                 \
        b0 = ROT4(X4(A##be, de), 1); b1 = ROT4(X4(A##gi, di), 6); b2 = ROT4(X4(A##ko, d_o), 25);       \
        b3 = ROT4(X4(A##mu, du), 8); b4 = ROT4(X4(A##sa, da), 18);                                     \
        CHI4(E, b0, b1, b2, b3, b4, ka, ke, ki, ko, ku);                                                 \
        b0 = ROT4(X4(A##bu, du), 27); b1 = ROT4(X4(A##ga, da), 36); b2 = ROT4(X4(A##ke, de), 10);      \
        b3 = ROT4(X4(A##mi, di), 15); b4 = ROT4(X4(A##so, d_o), 56);                                   \
        CHI4(E, b0, b1, b2, b3, b4, ma, me, mi, mo, mu);                                                 \
        b0 = ROT4(X4(A##bi, di), 62); b1 = ROT4(X4(A##go, d_o), 55); b2 = ROT4(X4(A##ku, du), 39);     \
        b3 = ROT4(X4(A##ma, da), 41); b4 = ROT4(X4(A##se, de), 2);                                     \
        CHI4(E, b0, b1, b2, b3, b4, sa, se, si, so, su);                                                 \
    } while (0)

__attribute__((target("avx2"))) static void keccak_f1600_x4(V4 s[25]) {
    V4 Aba = s[0], Abe = s[1], Abi = s[2], Abo = s[3], Abu = s[4];
    V4 Aga = s[5], Age = s[6], Agi = s[7], Ago = s[8], Agu = s[9];
    V4 Aka = s[10], Ake = s[11], Aki = s[12], Ako = s[13], Aku = s[14];
    V4 Ama = s[15], Ame = s[16], Ami = s[17], Amo = s[18], Amu = s[19];
    V4 Asa = s[20], Ase = s[21], Asi = s[22], Aso = s[23], Asu = s[24];
    V4 Eba, Ebe, Ebi, Ebo, Ebu, Ega, Ege, Egi, Ego, Egu, Eka, Eke, Eki, Eko, Eku;
    V4 Ema, Eme, Emi, Emo, Emu, Esa, Ese, Esi, Eso, Esu;
    for (int r = 0; r < 24; r += 2) {
        KECCAK_ROUND4(A, E, keccak_rc[r]);
        KECCAK_ROUND4(E, A, keccak_rc[r + 1]);
    }
    s[0] = Aba; s[1] = Abe; s[2] = Abi; s[3] = Abo; s[4] = Abu;
    s[5] = Aga; s[6] = Age; s[7] = Agi; s[8] = Ago; s[9] = Agu;
    s[10] = Aka; s[11] = Ake; s[12] = Aki; s[13] = Ako; s[14] = Aku;
    s[15] = Ama; s[16] = Ame; s[17] = Ami; s[18] = Amo; s[19] = Amu;
    s[20] = Asa; s[21] = Ase; s[22] = Asi; s[23] = Aso; s[24] = Asu;
}

/* SHA3-256 of four messages already padded to `blocks` blocks of 136 bytes each (pad10*1 with the
 * 0x06 domain bits in place). */
__attribute__((target("avx2"))) static void sha3_256_x4(const unsigned char *const msg[4], unsigned blocks,
                                                        unsigned char *const out[4]) {
    V4 s[25];
    for (unsigned i = 0; i < 25; i++) s[i] = _mm256_setzero_si256();
    for (unsigned blk = 0; blk < blocks; blk++) {
        size_t o = (size_t)blk * SHA3_RATE;
        for (unsigned i = 0; i < SHA3_RATE / 8; i++)
            s[i] = X4(s[i], _mm256_set_epi64x((long long)load64_le(msg[3] + o + 8 * i),
                                              (long long)load64_le(msg[2] + o + 8 * i),
                                              (long long)load64_le(msg[1] + o + 8 * i),
                                              (long long)load64_le(msg[0] + o + 8 * i)));
        keccak_f1600_x4(s);
    }
    uint64_t lanes[4][4]; /* lanes[i][j]: lane i of state j */
    for (unsigned i = 0; i < 4; i++) _mm256_storeu_si256((V4 *)lanes[i], s[i]);
    for (unsigned j = 0; j < 4; j++)
        for (unsigned i = 0; i < 32; i++) out[j][i] = (unsigned char)(lanes[i >> 3][j] >> (8 * (i & 7)));
}

static int have_avx2;
#endif

/* ---- the tree ------------------------------------------------------------------------------------ */

static const char LEAF_DOMAIN[] = "QENEX/v1/jmt/leaf";     /* state.proof.LEAF_DOMAIN */
static const char INTERNAL_DOMAIN[] = "QENEX/v1/jmt/node"; /* state.proof.INTERNAL_DOMAIN */
#define DOMAIN_LEN 17
#define TAG 2

enum { REF_NONE = 0, REF_INTERNAL = 1, REF_LEAF = 2 };
enum { APPLY_ERROR = -1, APPLY_CHANGED = 0, APPLY_SAME = 1 };

typedef struct {
    int kind;
    unsigned char hash[32];
    unsigned char ver[8];
    unsigned char kh[32]; /* a leaf's key hash */
    Py_ssize_t pending;   /* a new internal node whose hash is not computed yet: its index in Batch.pend; else -1 */
} Ref;

/* A new internal node whose hash waits for its new children's: node hashes are computed after the walk,
 * deepest first, four at a time where the processor can (see resolve_hashes). */
typedef struct {
    PyObject *record;     /* owned */
    unsigned k;           /* children */
    unsigned waiting;     /* children whose hashes are not in the record yet */
    Py_ssize_t parent;    /* the pending node whose record takes this node's hash, or -1 */
    Py_ssize_t parent_at; /* where in that record */
    unsigned char hash[32];
} Pending;

typedef struct {
    unsigned char kh[32];
    unsigned char nib[64];
    unsigned char lh[32]; /* the new leaf's hash; unset for a delete */
    PyObject *value;      /* borrowed; NULL for a delete */
} Entry;

typedef struct {
    unsigned char vb[8];
    Entry *entries;
    Py_ssize_t n;
    PyObject *cache;   /* dict: nibble path -> node record (the newest version's nodes) */
    PyObject *latest;  /* callable(path, version) -> node record, for a node not in the cache */
    PyObject *nodes;   /* dict: nibble path -> new node record */
    PyObject *ops;     /* list of (key, value or None) */
    unsigned char *stale; /* the stale list record: length(1) || key, for each key made stale */
    size_t stale_len, stale_cap;
    PyObject *removed; /* list of nibble paths */
    Pending *pend;
    Py_ssize_t npend, pend_cap;
} Batch;

static PyObject *store_corrupted(void) {
    PyObject *mod = PyImport_ImportModule("state.exceptions");
    if (mod == NULL) return NULL;
    PyObject *cls = PyObject_GetAttrString(mod, "StoreCorrupted");
    Py_DECREF(mod);
    return cls;
}

static void raise_corrupted(const unsigned char *path, Py_ssize_t depth) {
    char hex[65];
    for (Py_ssize_t i = 0; i < depth && i < 64; i++) hex[i] = "0123456789abcdef"[path[i] & 15];
    hex[depth < 64 ? depth : 64] = 0;
    PyObject *cls = store_corrupted();
    if (cls == NULL) return;
    PyErr_Format(cls, "state node '%s' of the newest version is unreadable", hex);
    Py_DECREF(cls);
}

static inline unsigned popcount16(unsigned x) {
    return (unsigned)__builtin_popcount(x & 0xFFFFu);
}

static inline unsigned nibble_of(const unsigned char *kh, int depth) {
    unsigned char byte = kh[depth >> 1];
    return (depth & 1) ? (byte & 0x0F) : (byte >> 4);
}

/* A parsed internal node record: 0x02 || leafmap(2) || bitmap(2) || hashes || versions || leaf key hashes. */
typedef struct {
    PyObject *obj; /* owned */
    PyObject *key; /* owned: the nibble path, the node's key in the cache and in the new nodes */
    const unsigned char *raw;
    Py_ssize_t len;
    unsigned leafmap, bitmap, k;
} Node;

static int parse_node(Node *nd, PyObject *obj, const unsigned char *path, Py_ssize_t depth) {
    nd->obj = obj;
    nd->key = NULL;
    if (!PyBytes_Check(obj)) goto bad;
    nd->raw = (const unsigned char *)PyBytes_AS_STRING(obj);
    nd->len = PyBytes_GET_SIZE(obj);
    if (nd->len < 5 || nd->raw[0] != TAG) goto bad;
    nd->leafmap = ((unsigned)nd->raw[1] << 8) | nd->raw[2];
    nd->bitmap = ((unsigned)nd->raw[3] << 8) | nd->raw[4];
    nd->k = popcount16(nd->bitmap);
    if (nd->bitmap == 0 || (nd->leafmap & ~nd->bitmap) ||
        nd->len != (Py_ssize_t)(5 + 40 * nd->k + 32 * popcount16(nd->leafmap)))
        goto bad;
    return 0;
bad:
    Py_DECREF(obj);
    nd->obj = NULL;
    raise_corrupted(path, depth);
    return -1;
}

/* The node of the newest version at `path` (depth nibbles), whose version is `vb`: cached, or asked of
 * `latest`. */
static int load_node(Batch *b, Node *nd, const unsigned char *path, Py_ssize_t depth, const unsigned char *vb) {
    PyObject *key = PyBytes_FromStringAndSize((const char *)path, depth);
    if (key == NULL) return -1;
    PyObject *raw = PyDict_GetItemWithError(b->cache, key);
    if (raw != NULL) {
        Py_INCREF(raw);
    } else {
        if (PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        PyObject *version = PyBytes_FromStringAndSize((const char *)vb, 8);
        if (version == NULL) {
            Py_DECREF(key);
            return -1;
        }
        raw = PyObject_CallFunctionObjArgs(b->latest, key, version, NULL);
        Py_DECREF(version);
        if (raw == NULL) {
            Py_DECREF(key);
            return -1;
        }
    }
    if (parse_node(nd, raw, path, depth) < 0) {
        Py_DECREF(key);
        return -1;
    }
    nd->key = key;
    return 0;
}

static void release_node(Node *nd) {
    Py_CLEAR(nd->obj);
    Py_CLEAR(nd->key);
}

/* Child `i` (its index among the present children) of node `nd`, at nibble `nib`. */
static void child_at(const Node *nd, unsigned nib, unsigned i, Ref *out) {
    unsigned bit = 1u << nib;
    out->pending = -1;
    memcpy(out->hash, nd->raw + 5 + 32 * i, 32);
    memcpy(out->ver, nd->raw + 5 + 32 * nd->k + 8 * i, 8);
    if (nd->leafmap & bit) {
        out->kind = REF_LEAF;
        memcpy(out->kh, nd->raw + 5 + 40 * nd->k + 32 * popcount16(nd->leafmap & (bit - 1)), 32);
    } else {
        out->kind = REF_INTERNAL;
    }
}

/* The 16 child slots of `nd` (state.jmt._slots). */
static void slots_of(const Node *nd, Ref slots[16]) {
    unsigned i = 0;
    for (unsigned nib = 0; nib < 16; nib++) {
        if (nd->bitmap & (1u << nib)) {
            child_at(nd, nib, i, &slots[nib]);
            i++;
        } else {
            slots[nib].kind = REF_NONE;
            slots[nib].pending = -1;
        }
    }
}

/* Append length(1) || prefix || a || c to the stale list record. */
static int append_stale(Batch *b, const char *prefix, const unsigned char *a, size_t alen, const unsigned char *c,
                        size_t clen) {
    size_t plen = strlen(prefix), n = 1 + plen + alen + clen;
    if (b->stale_len + n > b->stale_cap) {
        size_t cap = b->stale_cap ? b->stale_cap : 4096;
        while (cap < b->stale_len + n) cap *= 2;
        unsigned char *grown = PyMem_Realloc(b->stale, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->stale = grown;
        b->stale_cap = cap;
    }
    unsigned char *w = b->stale + b->stale_len;
    *w++ = (unsigned char)(n - 1);
    memcpy(w, prefix, plen);
    memcpy(w + plen, a, alen);
    if (clen) memcpy(w + plen + alen, c, clen);
    b->stale_len += n;
    return 0;
}

/* The tuple (a, b), taking over the reference to a. */
static PyObject *pair_steal(PyObject *a, PyObject *b) {
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    Py_INCREF(b);
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

/* Append the write (prefix || a || c, value) to the ops. */
static int append_op(Batch *b, const char *prefix, const unsigned char *a, Py_ssize_t alen,
                     const unsigned char *c, Py_ssize_t clen, PyObject *value) {
    Py_ssize_t plen = (Py_ssize_t)strlen(prefix);
    PyObject *key = PyBytes_FromStringAndSize(NULL, plen + alen + clen);
    if (key == NULL) return -1;
    char *k = PyBytes_AS_STRING(key);
    memcpy(k, prefix, (size_t)plen);
    memcpy(k + plen, a, (size_t)alen);
    if (clen) memcpy(k + plen + alen, c, (size_t)clen);
    PyObject *item = pair_steal(key, value);
    if (item == NULL) return -1;
    int rc = PyList_Append(b->ops, item);
    Py_DECREF(item);
    return rc;
}

/* The store keys of state/jmt.py's layout. */
#define NODE_PREFIX "j/n/"
#define VALUE_PREFIX "j/v/"
#define LATEST_PREFIX "j/l/"

static int stale_value(Batch *b, const unsigned char *kh, const unsigned char *ver) {
    return append_stale(b, VALUE_PREFIX, kh, 32, ver, 8);
}

static int stale_node(Batch *b, const unsigned char *ver, const unsigned char *path, Py_ssize_t depth) {
    return append_stale(b, NODE_PREFIX, ver, 8, path, (size_t)depth);
}

/* _Batch.leaf: the new leaf of entry `e` (not a delete), with its value record and latest-value entry. */
static int new_leaf(Batch *b, const Entry *e, Ref *out) {
    if (append_op(b, VALUE_PREFIX, e->kh, 32, b->vb, 8, e->value) < 0) return -1;
    if (append_op(b, LATEST_PREFIX, e->kh, 32, NULL, 0, e->value) < 0) return -1;
    out->kind = REF_LEAF;
    out->pending = -1;
    memcpy(out->hash, e->lh, 32);
    memcpy(out->ver, b->vb, 8);
    memcpy(out->kh, e->kh, 32);
    return 0;
}

static int latest_delete(Batch *b, const unsigned char *kh) {
    return append_op(b, LATEST_PREFIX, kh, 32, NULL, 0, Py_None);
}

/* nodes[path] = record; `key` is the path as bytes if the caller has it, else NULL. */
static int set_node(Batch *b, PyObject *key, const unsigned char *path, Py_ssize_t depth, PyObject *record) {
    if (key != NULL) return PyDict_SetItem(b->nodes, key, record);
    key = PyBytes_FromStringAndSize((const char *)path, depth);
    if (key == NULL) return -1;
    int rc = PyDict_SetItem(b->nodes, key, record);
    Py_DECREF(key);
    return rc;
}

/* Register `record` (a new internal node of k children) as pending: its ref in `out`, hash to come. */
static int new_pending(Batch *b, PyObject *record, unsigned k, Ref *out) {
    if (b->npend == b->pend_cap) {
        Py_ssize_t cap = b->pend_cap ? 2 * b->pend_cap : 256;
        Pending *grown = PyMem_Realloc(b->pend, sizeof(Pending) * (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->pend = grown;
        b->pend_cap = cap;
    }
    Pending *p = &b->pend[b->npend];
    Py_INCREF(record);
    p->record = record;
    p->k = k;
    p->waiting = 0;
    p->parent = -1;
    p->parent_at = 0;
    out->kind = REF_INTERNAL;
    out->pending = b->npend++;
    memcpy(out->ver, b->vb, 8);
    return 0;
}

/* Child ref `c` goes into the record of pending node `parent` at offset `at`: its hash now if known,
 * else once it is computed. */
static void put_hash(Batch *b, Py_ssize_t parent, Py_ssize_t at, const Ref *c) {
    if (c->pending < 0) {
        memcpy(PyBytes_AS_STRING(b->pend[parent].record) + at, c->hash, 32);
        return;
    }
    b->pend[c->pending].parent = parent;
    b->pend[c->pending].parent_at = at;
    b->pend[parent].waiting++;
}

/* _make: the internal node at `path` (depth nibbles) with `slots`, or its collapse (no child: none; one
 * child that is a leaf: that leaf). */
static int make_node(Batch *b, PyObject *key, const unsigned char *path, Py_ssize_t depth, const Ref slots[16],
                     Ref *out) {
    unsigned bitmap = 0, leafmap = 0, k = 0, leaves = 0;
    int only = -1;
    for (unsigned nib = 0; nib < 16; nib++) {
        if (slots[nib].kind == REF_NONE) continue;
        bitmap |= 1u << nib;
        if (slots[nib].kind == REF_LEAF) {
            leafmap |= 1u << nib;
            leaves++;
        }
        k++;
        only = (int)nib;
    }
    if (k == 0) {
        out->kind = REF_NONE;
        out->pending = -1;
        return 0;
    }
    if (k == 1 && slots[only].kind == REF_LEAF) {
        *out = slots[only];
        return 0;
    }
    Py_ssize_t len = 5 + 40 * (Py_ssize_t)k + 32 * (Py_ssize_t)leaves;
    PyObject *record = PyBytes_FromStringAndSize(NULL, len);
    if (record == NULL) return -1;
    unsigned char *r = (unsigned char *)PyBytes_AS_STRING(record);
    r[0] = TAG;
    r[1] = (unsigned char)(leafmap >> 8);
    r[2] = (unsigned char)leafmap;
    r[3] = (unsigned char)(bitmap >> 8);
    r[4] = (unsigned char)bitmap;
    if (new_pending(b, record, k, out) < 0) {
        Py_DECREF(record);
        return -1;
    }
    Py_ssize_t hp = 5;
    unsigned char *vp = r + 5 + 32 * k, *kp = r + 5 + 40 * k;
    for (unsigned nib = 0; nib < 16; nib++) {
        const Ref *s = &slots[nib];
        if (s->kind == REF_NONE) continue;
        put_hash(b, out->pending, hp, s);
        hp += 32;
        memcpy(vp, s->ver, 8);
        vp += 8;
        if (s->kind == REF_LEAF) {
            memcpy(kp, s->kh, 32);
            kp += 32;
        }
    }
    int rc = set_node(b, key, path, depth, record);
    Py_DECREF(record);
    return rc;
}

/* _remake: make_node in place of a stored node; if it collapses, its path is recorded as removed. */
static int remake_node(Batch *b, const Node *nd, const unsigned char *path, Py_ssize_t depth, const Ref slots[16],
                       Ref *out) {
    if (make_node(b, nd->key, path, depth, slots, out) < 0) return -1;
    if (out->kind != REF_INTERNAL) return PyList_Append(b->removed, nd->key);
    return 0;
}

/* _build: the subtree at `depth` holding exactly `leaves` (n >= 1, distinct key hashes on one path).
 * Groups are built in the order their nibble first appears, as the Python twin's dict does. */
static int build(Batch *b, int depth, const Ref *leaves, Py_ssize_t n, Ref *out) {
    if (n == 0) {
        out->kind = REF_NONE;
        out->pending = -1;
        return 0;
    }
    if (n == 1) {
        *out = leaves[0];
        return 0;
    }
    if (depth >= 64) {
        PyErr_SetString(PyExc_ValueError, "two leaves with one key hash");
        return -1;
    }
    Ref *group = PyMem_Malloc(sizeof(Ref) * (size_t)n);
    if (group == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Ref slots[16];
    for (unsigned nib = 0; nib < 16; nib++) {
        slots[nib].kind = REF_NONE;
        slots[nib].pending = -1;
    }
    unsigned seen = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned nib = nibble_of(leaves[i].kh, depth);
        if (seen & (1u << nib)) continue;
        seen |= 1u << nib;
        Py_ssize_t m = 0;
        for (Py_ssize_t j = i; j < n; j++)
            if (nibble_of(leaves[j].kh, depth) == nib) group[m++] = leaves[j];
        if (build(b, depth + 1, group, m, &slots[nib]) < 0) {
            PyMem_Free(group);
            return -1;
        }
    }
    PyMem_Free(group);
    unsigned char path[64];
    for (int d = 0; d < depth; d++) path[d] = (unsigned char)nibble_of(leaves[0].kh, d);
    return make_node(b, NULL, path, depth, slots, out);
}

/* Whether `neu` keeps the shape of the child it replaces (`old_kind`, `old_kh`): both internal, or both
 * the leaf of one key. Then the parent is patched in place; otherwise it is rebuilt. */
static int same_shape(const Ref *neu, int old_kind, const unsigned char *old_kh) {
    if (neu->kind == REF_INTERNAL) return old_kind == REF_INTERNAL;
    if (neu->kind == REF_LEAF) return old_kind == REF_LEAF && memcmp(neu->kh, old_kh, 32) == 0;
    return 0;
}

/* The node record `nd` with child `i` now `neu` (same shape): stored at `path`, its ref in `out`. */
typedef struct {
    unsigned i;
    const Ref *ref;
} Patch;

static int patch_node(Batch *b, const Node *nd, const unsigned char *path, Py_ssize_t depth, const Patch *patches,
                      unsigned count, Ref *out) {
    PyObject *record = PyBytes_FromStringAndSize((const char *)nd->raw, nd->len);
    if (record == NULL) return -1;
    unsigned char *r = (unsigned char *)PyBytes_AS_STRING(record);
    if (new_pending(b, record, nd->k, out) < 0) {
        Py_DECREF(record);
        return -1;
    }
    for (unsigned p = 0; p < count; p++) {
        put_hash(b, out->pending, 5 + 32 * (Py_ssize_t)patches[p].i, patches[p].ref);
        memcpy(r + 5 + 32 * nd->k + 8 * patches[p].i, patches[p].ref->ver, 8);
    }
    int rc = set_node(b, nd->key, path, depth, record);
    Py_DECREF(record);
    return rc;
}

/* _apply_leaf: entries lo..hi applied to the subtree that is the leaf `ref`, at `depth`. */
static int apply_leaf(Batch *b, const Ref *ref, int depth, Py_ssize_t lo, Py_ssize_t hi, Ref *out) {
    Ref *leaves = PyMem_Malloc(sizeof(Ref) * (size_t)(hi - lo + 1));
    if (leaves == NULL) {
        PyErr_NoMemory();
        return APPLY_ERROR;
    }
    Py_ssize_t n = 0;
    const Entry *match = NULL;
    int rc = APPLY_ERROR;
    for (Py_ssize_t x = lo; x < hi; x++) {
        const Entry *e = &b->entries[x];
        if (memcmp(e->kh, ref->kh, 32) == 0) {
            match = e;
        } else if (e->value != NULL) {
            if (new_leaf(b, e, &leaves[n++]) < 0) goto done;
        }
    }
    if (match == NULL || (match->value != NULL && memcmp(match->lh, ref->hash, 32) == 0)) {
        if (n == 0) {
            rc = APPLY_SAME;
            goto done;
        }
        leaves[n++] = *ref; /* it moves down, under a new internal node */
    } else if (match->value == NULL) {
        if (stale_value(b, ref->kh, ref->ver) < 0 || latest_delete(b, ref->kh) < 0) goto done;
    } else {
        if (stale_value(b, ref->kh, ref->ver) < 0) goto done;
        if (new_leaf(b, match, &leaves[n++]) < 0) goto done;
    }
    rc = build(b, depth, leaves, n, out) < 0 ? APPLY_ERROR : APPLY_CHANGED;
done:
    PyMem_Free(leaves);
    return rc;
}

/* _apply_one: the single entry `e` applied to the internal node of version `vb` at `depth`: down its
 * path, then rebuilt upwards. */
static int apply_one(Batch *b, const unsigned char *vb_in, int depth, const Entry *e, Ref *out) {
    struct Level {
        Node nd;
        unsigned char ver[8];
        unsigned i, nib;
        int old_kind;
    } levels[65];
    int count = 0, rc = APPLY_ERROR;
    unsigned char vb[8];
    memcpy(vb, vb_in, 8);
    Ref child = {.kind = REF_NONE, .pending = -1};
    for (;;) {
        if (depth >= 64) {
            raise_corrupted(e->nib, 64);
            goto done;
        }
        struct Level *lv = &levels[count];
        if (load_node(b, &lv->nd, e->nib, depth, vb) < 0) goto done;
        count++;
        memcpy(lv->ver, vb, 8);
        unsigned nib = e->nib[depth];
        unsigned bit = 1u << nib;
        lv->nib = nib;
        depth++;
        if (!(lv->nd.bitmap & bit)) {
            lv->i = 0;
            lv->old_kind = REF_NONE;
            child.kind = REF_NONE;
            break;
        }
        lv->i = popcount16(lv->nd.bitmap & (bit - 1));
        child_at(&lv->nd, nib, lv->i, &child);
        lv->old_kind = child.kind;
        memcpy(vb, child.ver, 8);
        if (child.kind == REF_LEAF) break;
    }
    Ref neu;
    if (child.kind == REF_LEAF && memcmp(child.kh, e->kh, 32) == 0) {
        if (e->value == NULL) { /* a delete */
            if (stale_value(b, e->kh, vb) < 0 || latest_delete(b, e->kh) < 0) goto done;
            neu.kind = REF_NONE;
            neu.pending = -1;
        } else if (memcmp(e->lh, child.hash, 32) == 0) { /* the same value again */
            rc = APPLY_SAME;
            goto done;
        } else { /* a new value for an existing key */
            if (stale_value(b, e->kh, vb) < 0 || new_leaf(b, e, &neu) < 0) goto done;
        }
    } else if (e->value == NULL) { /* deleting an absent key */
        rc = APPLY_SAME;
        goto done;
    } else {
        if (new_leaf(b, e, &neu) < 0) goto done;
        if (child.kind == REF_LEAF) { /* another key's leaf: both go under a new internal node */
            Ref pair[2] = {neu, child};
            if (build(b, depth, pair, 2, &neu) < 0) goto done;
        }
    }
    while (count > 0) {
        struct Level *lv = &levels[count - 1];
        depth--;
        if (stale_node(b, lv->ver, e->nib, depth) < 0) goto done;
        const unsigned char *old_kh = lv->old_kind == REF_LEAF
            ? lv->nd.raw + 5 + 40 * lv->nd.k + 32 * popcount16(lv->nd.leafmap & ((1u << lv->nib) - 1))
            : NULL;
        Ref up;
        if (neu.kind == REF_NONE || !same_shape(&neu, lv->old_kind, old_kh)) {
            Ref slots[16];
            slots_of(&lv->nd, slots);
            slots[lv->nib] = neu;
            if (remake_node(b, &lv->nd, e->nib, depth, slots, &up) < 0) goto done;
        } else {
            Patch patch = {lv->i, &neu};
            if (patch_node(b, &lv->nd, e->nib, depth, &patch, 1, &up) < 0) goto done;
        }
        neu = up;
        release_node(&lv->nd);
        count--;
    }
    *out = neu;
    rc = APPLY_CHANGED;
done:
    while (count > 0) {
        release_node(&levels[count - 1].nd);
        count--;
    }
    return rc;
}

/* _apply_many: entries lo..hi (two or more, on its path) applied to the internal node of version `vb`
 * at `depth`. */
static int apply_many(Batch *b, const unsigned char *vb, int depth, Py_ssize_t lo, Py_ssize_t hi, Ref *out) {
    if (depth >= 64) {
        PyErr_SetString(PyExc_ValueError, "two updates of one key hash");
        return APPLY_ERROR;
    }
    const unsigned char *path = b->entries[lo].nib;
    Node nd;
    if (load_node(b, &nd, path, depth, vb) < 0) return APPLY_ERROR;
    Ref news[16];
    unsigned change_nib[16], change_i[16];
    unsigned changes = 0;
    int shape = 1, rc = APPLY_ERROR;
    Py_ssize_t start = lo;
    while (start < hi) {
        unsigned nib = b->entries[start].nib[depth];
        Py_ssize_t end = start + 1;
        while (end < hi && b->entries[end].nib[depth] == nib) end++;
        unsigned bit = 1u << nib;
        Ref neu;
        if (!(nd.bitmap & bit)) { /* an empty child: new leaves */
            Ref *leaves = PyMem_Malloc(sizeof(Ref) * (size_t)(end - start));
            if (leaves == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            Py_ssize_t n = 0;
            for (Py_ssize_t x = start; x < end; x++) {
                if (b->entries[x].value == NULL) continue;
                if (new_leaf(b, &b->entries[x], &leaves[n++]) < 0) {
                    PyMem_Free(leaves);
                    goto done;
                }
            }
            if (n) {
                int brc = build(b, depth + 1, leaves, n, &neu);
                PyMem_Free(leaves);
                if (brc < 0) goto done;
                change_nib[changes] = nib;
                change_i[changes] = 0;
                news[changes++] = neu;
                shape = 0;
            } else {
                PyMem_Free(leaves);
            }
            start = end;
            continue;
        }
        unsigned i = popcount16(nd.bitmap & (bit - 1));
        Ref child;
        child_at(&nd, nib, i, &child);
        int arc;
        if (child.kind == REF_LEAF)
            arc = apply_leaf(b, &child, depth + 1, start, end, &neu);
        else if (end - start == 1)
            arc = apply_one(b, child.ver, depth + 1, &b->entries[start], &neu);
        else
            arc = apply_many(b, child.ver, depth + 1, start, end, &neu);
        if (arc == APPLY_ERROR) goto done;
        if (arc == APPLY_CHANGED) {
            change_nib[changes] = nib;
            change_i[changes] = i;
            if (!same_shape(&neu, child.kind, child.kh)) shape = 0;
            news[changes++] = neu;
        }
        start = end;
    }
    if (changes == 0) {
        rc = APPLY_SAME;
        goto done;
    }
    if (stale_node(b, vb, path, depth) < 0) goto done;
    if (!shape) { /* a child added, removed, or changing kind (a lone child may become a leaf) */
        Ref slots[16];
        slots_of(&nd, slots);
        for (unsigned c = 0; c < changes; c++) slots[change_nib[c]] = news[c];
        if (remake_node(b, &nd, path, depth, slots, out) < 0) goto done;
    } else {
        Patch patches[16];
        for (unsigned c = 0; c < changes; c++) {
            patches[c].i = change_i[c];
            patches[c].ref = &news[c];
        }
        if (patch_node(b, &nd, path, depth, patches, changes, out) < 0) goto done;
    }
    rc = APPLY_CHANGED;
done:
    release_node(&nd);
    return rc;
}

/* The input of pending node p's hash, padded (FIPS 202 pad10*1 with the SHA3 domain bits 0x06) into
 * `buf`: INTERNAL_DOMAIN || bitmap || child hashes. Returns its number of 136-byte blocks (1..4). */
#define NODE_INPUT_MAX (4 * SHA3_RATE)
static unsigned node_input(const Pending *p, unsigned char buf[NODE_INPUT_MAX]) {
    size_t n = DOMAIN_LEN + 2 + 32 * (size_t)p->k;
    unsigned blocks = (unsigned)(n / SHA3_RATE) + 1;
    memcpy(buf, INTERNAL_DOMAIN, DOMAIN_LEN);
    memcpy(buf + DOMAIN_LEN, PyBytes_AS_STRING(p->record) + 3, n - DOMAIN_LEN);
    memset(buf + n, 0, blocks * SHA3_RATE - n);
    buf[n] ^= 0x06;
    buf[blocks * SHA3_RATE - 1] ^= 0x80;
    return blocks;
}

/* Pending node `i` has its hash: it goes into its parent's record, which may become ready. */
static void hashed(Batch *b, Py_ssize_t i, Py_ssize_t *ready[5], Py_ssize_t count[5]) {
    Pending *p = &b->pend[i];
    if (p->parent < 0) return;
    Pending *up = &b->pend[p->parent];
    memcpy(PyBytes_AS_STRING(up->record) + p->parent_at, p->hash, 32);
    if (--up->waiting == 0) {
        unsigned blocks = (unsigned)((DOMAIN_LEN + 2 + 32 * (size_t)up->k) / SHA3_RATE) + 1;
        ready[blocks][count[blocks]++] = p->parent;
    }
}

/* Compute every pending node's hash, children before parents. Nodes whose inputs take the same number
 * of blocks are hashed four at a time with AVX2 where the processor has it, else one at a time. */
static int resolve_hashes(Batch *b) {
    if (b->npend == 0) return 0;
    Py_ssize_t *ready[5] = {NULL}, count[5] = {0};
    for (unsigned blocks = 1; blocks <= 4; blocks++) {
        ready[blocks] = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)b->npend);
        if (ready[blocks] == NULL) {
            for (unsigned j = 1; j < blocks; j++) PyMem_Free(ready[j]);
            PyErr_NoMemory();
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < b->npend; i++) {
        if (b->pend[i].waiting == 0) {
            unsigned blocks = (unsigned)((DOMAIN_LEN + 2 + 32 * (size_t)b->pend[i].k) / SHA3_RATE) + 1;
            ready[blocks][count[blocks]++] = i;
        }
    }
    unsigned char bufs[4][NODE_INPUT_MAX];
    for (;;) {
        unsigned pick = 0;
        for (unsigned blocks = 1; blocks <= 4; blocks++)
            if (count[blocks] > (pick ? count[pick] : 0)) pick = blocks;
        if (pick == 0) break;
#ifdef HAVE_KECCAK4
        if (have_avx2 && count[pick] >= 2) {
            Py_ssize_t take[4];
            unsigned lanes = count[pick] >= 4 ? 4 : (unsigned)count[pick];
            const unsigned char *msg[4];
            unsigned char *out[4], spare[32];
            for (unsigned j = 0; j < 4; j++) {
                if (j < lanes) {
                    take[j] = ready[pick][--count[pick]];
                    node_input(&b->pend[take[j]], bufs[j]);
                    out[j] = b->pend[take[j]].hash;
                } else { /* an idle lane hashes a copy of lane 0 */
                    out[j] = spare;
                }
                msg[j] = bufs[j < lanes ? j : 0];
            }
            sha3_256_x4(msg, pick, out);
            for (unsigned j = 0; j < lanes; j++) hashed(b, take[j], ready, count);
            continue;
        }
#endif
        Py_ssize_t i = ready[pick][--count[pick]];
        unsigned blocks = node_input(&b->pend[i], bufs[0]);
        uint64_t st[25] = {0};
        for (unsigned blk = 0; blk < blocks; blk++) absorb_block(st, bufs[0] + (size_t)blk * SHA3_RATE);
        for (unsigned j = 0; j < 32; j++) b->pend[i].hash[j] = (unsigned char)(st[j >> 3] >> (8 * (j & 7)));
        hashed(b, i, ready, count);
    }
    for (unsigned blocks = 1; blocks <= 4; blocks++) PyMem_Free(ready[blocks]);
    return 0;
}

static int cmp_entry(const void *a, const void *c) {
    return memcmp(((const Entry *)a)->kh, ((const Entry *)c)->kh, 32);
}

static PyObject *ref_to_tuple(const Ref *r) {
    if (r->kind == REF_NONE) Py_RETURN_NONE;
    if (r->kind == REF_LEAF)
        return Py_BuildValue("(y#y#y#)", r->hash, (Py_ssize_t)32, r->ver, (Py_ssize_t)8, r->kh, (Py_ssize_t)32);
    return Py_BuildValue("(y#y#O)", r->hash, (Py_ssize_t)32, r->ver, (Py_ssize_t)8, Py_None);
}

static int ref_from_object(PyObject *obj, Ref *out) {
    out->pending = -1;
    if (obj == Py_None) {
        out->kind = REF_NONE;
        return 0;
    }
    PyObject *h, *v, *k;
    if (!PyTuple_Check(obj) || PyTuple_GET_SIZE(obj) != 3) goto bad;
    h = PyTuple_GET_ITEM(obj, 0);
    v = PyTuple_GET_ITEM(obj, 1);
    k = PyTuple_GET_ITEM(obj, 2);
    if (!PyBytes_Check(h) || PyBytes_GET_SIZE(h) != 32 || !PyBytes_Check(v) || PyBytes_GET_SIZE(v) != 8) goto bad;
    memcpy(out->hash, PyBytes_AS_STRING(h), 32);
    memcpy(out->ver, PyBytes_AS_STRING(v), 8);
    if (k == Py_None) {
        out->kind = REF_INTERNAL;
        return 0;
    }
    if (!PyBytes_Check(k) || PyBytes_GET_SIZE(k) != 32) goto bad;
    memcpy(out->kh, PyBytes_AS_STRING(k), 32);
    out->kind = REF_LEAF;
    return 0;
bad:
    PyErr_SetString(PyExc_TypeError, "a root is None or (hash 32 bytes, version 8 bytes, key hash 32 bytes or None)");
    return -1;
}

PyDoc_STRVAR(prepare_doc,
"prepare(updates, root, version, cache, latest) -> (new_root, nodes, ops, stale, removed)\n\n"
"The per-block update of state.jmt.JellyfishState, computed exactly as its pure-Python twin.\n"
"updates: dict key (bytes) -> value (bytes) or None (a delete); root: the newest version's root ref\n"
"(None, or (hash 32 B, version 8 B, leaf key hash 32 B or None)); version: the new version, 8 bytes\n"
"big-endian; cache: dict nibble path -> node record of the newest version; latest: callable(path,\n"
"version) -> node record, for a node not in the cache (it may raise StoreCorrupted).\n"
"Returns the new root ref (root itself when the updates change nothing), the new nodes (dict nibble\n"
"path -> record), the writes (list of (key, value or None): the new nodes under their store keys, in\n"
"the order of that dict, then the values and latest-value entries), the stale list record (each store\n"
"key made stale as length(1) || key) and the removed nibble paths. Raises TypeError for malformed arguments, StoreCorrupted for an\n"
"unreadable node record.");

static PyObject *jmt_prepare(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *updates, *root_obj, *version, *cache, *latest;
    if (!PyArg_ParseTuple(args, "O!OSO!O:prepare", &PyDict_Type, &updates, &root_obj, &version, &PyDict_Type,
                          &cache, &latest))
        return NULL;
    if (PyBytes_GET_SIZE(version) != 8) {
        PyErr_SetString(PyExc_ValueError, "version must be 8 bytes");
        return NULL;
    }
    Ref root;
    if (ref_from_object(root_obj, &root) < 0) return NULL;
    Batch b;
    memset(&b, 0, sizeof(b));
    memcpy(b.vb, PyBytes_AS_STRING(version), 8);
    b.cache = cache;
    b.latest = latest;
    Py_ssize_t n = PyDict_GET_SIZE(updates);
    b.entries = PyMem_Malloc(sizeof(Entry) * (size_t)(n ? n : 1));
    if (b.entries == NULL) return PyErr_NoMemory();
    PyObject *key, *value, *result = NULL, *ops = NULL, *stale = NULL;
    Py_ssize_t pos = 0, x = 0;
    while (PyDict_Next(updates, &pos, &key, &value)) {
        if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
            PyErr_SetString(PyExc_TypeError, "updates map bytes to bytes or None");
            goto fail;
        }
        Entry *e = &b.entries[x++];
        sha3_256((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), e->kh);
        for (int d = 0; d < 64; d++) e->nib[d] = (unsigned char)nibble_of(e->kh, d);
        if (value == Py_None) {
            e->value = NULL;
        } else {
            unsigned char input[DOMAIN_LEN + 64];
            memcpy(input, LEAF_DOMAIN, DOMAIN_LEN);
            memcpy(input + DOMAIN_LEN, e->kh, 32);
            sha3_256((const unsigned char *)PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value),
                     input + DOMAIN_LEN + 32);
            sha3_256(input, sizeof(input), e->lh);
            e->value = value;
        }
    }
    b.n = x;
    qsort(b.entries, (size_t)b.n, sizeof(Entry), cmp_entry);
    if (!(b.nodes = PyDict_New()) || !(b.ops = PyList_New(0)) || !(b.removed = PyList_New(0))) goto fail;
    Ref neu;
    int rc;
    if (b.n == 0) {
        rc = APPLY_SAME;
    } else if (root.kind == REF_NONE) {
        Ref *leaves = PyMem_Malloc(sizeof(Ref) * (size_t)b.n);
        if (leaves == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        Py_ssize_t m = 0;
        rc = APPLY_CHANGED;
        for (Py_ssize_t i = 0; i < b.n && rc == APPLY_CHANGED; i++)
            if (b.entries[i].value != NULL && new_leaf(&b, &b.entries[i], &leaves[m++]) < 0) rc = APPLY_ERROR;
        if (rc == APPLY_CHANGED && build(&b, 0, leaves, m, &neu) < 0) rc = APPLY_ERROR;
        PyMem_Free(leaves);
    } else if (root.kind == REF_LEAF) {
        rc = apply_leaf(&b, &root, 0, 0, b.n, &neu);
    } else if (b.n == 1) {
        rc = apply_one(&b, root.ver, 0, &b.entries[0], &neu);
    } else {
        rc = apply_many(&b, root.ver, 0, 0, b.n, &neu);
    }
    if (rc == APPLY_ERROR) goto fail;
    if (resolve_hashes(&b) < 0) goto fail;
    if (rc == APPLY_CHANGED && neu.pending >= 0) memcpy(neu.hash, b.pend[neu.pending].hash, 32);
    /* the writes: the new nodes first (in the order they were made), then the values */
    ops = PyList_New(PyDict_GET_SIZE(b.nodes));
    if (ops == NULL) goto fail;
    PyObject *path, *record;
    Py_ssize_t at = 0, i = 0;
    while (PyDict_Next(b.nodes, &at, &path, &record)) {
        Py_ssize_t plen = PyBytes_GET_SIZE(path);
        PyObject *store_key = PyBytes_FromStringAndSize(NULL, 4 + 8 + plen);
        if (store_key == NULL) goto fail;
        char *w = PyBytes_AS_STRING(store_key);
        memcpy(w, NODE_PREFIX, 4);
        memcpy(w + 4, b.vb, 8);
        memcpy(w + 12, PyBytes_AS_STRING(path), (size_t)plen);
        PyObject *item = pair_steal(store_key, record);
        if (item == NULL) goto fail;
        PyList_SET_ITEM(ops, i++, item);
    }
    Py_ssize_t nvalues = PyList_GET_SIZE(b.ops);
    for (Py_ssize_t j = 0; j < nvalues; j++)
        if (PyList_Append(ops, PyList_GET_ITEM(b.ops, j)) < 0) goto fail;
    stale = PyBytes_FromStringAndSize((const char *)b.stale, (Py_ssize_t)b.stale_len);
    if (stale == NULL) goto fail;
    PyObject *ref = rc == APPLY_SAME ? (Py_INCREF(root_obj), root_obj) : ref_to_tuple(&neu);
    if (ref == NULL) goto fail;
    result = Py_BuildValue("(NOOOO)", ref, b.nodes, ops, stale, b.removed);
fail:
    Py_XDECREF(ops);
    Py_XDECREF(stale);
    Py_XDECREF(b.nodes);
    Py_XDECREF(b.ops);
    Py_XDECREF(b.removed);
    PyMem_Free(b.stale);
    for (Py_ssize_t j = 0; j < b.npend; j++) Py_DECREF(b.pend[j].record);
    PyMem_Free(b.pend);
    PyMem_Free(b.entries);
    return result;
}

PyDoc_STRVAR(sha3_doc, "sha3_256(data: bytes) -> bytes\n\nSHA3-256 (FIPS 202) of data: 32 bytes. For tests of this module.");

static PyObject *jmt_sha3_256(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    unsigned char out[32];
    sha3_256((const unsigned char *)view.buf, (size_t)view.len, out);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

PyDoc_STRVAR(simd_doc, "set_simd(enabled: bool) -> bool\n\nUse the four-way AVX2 node hashing where the processor has it (True, the\n"
"default) or hash one node at a time (False: what other processors do). Returns whether it was in use.\n"
"For tests, which check that both give the same bytes.");

static PyObject *jmt_set_simd(PyObject *self, PyObject *arg) {
    (void)self;
    int enabled = PyObject_IsTrue(arg);
    if (enabled < 0) return NULL;
#ifdef HAVE_KECCAK4
    int before = have_avx2;
    have_avx2 = enabled && __builtin_cpu_supports("avx2");
    return PyBool_FromLong(before);
#else
    return PyBool_FromLong(0);
#endif
}

static PyMethodDef methods[] = {
    {"set_simd", jmt_set_simd, METH_O, simd_doc},
    {"prepare", jmt_prepare, METH_VARARGS, prepare_doc},
    {"sha3_256", jmt_sha3_256, METH_O, sha3_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "state._jmt_core",
    "The per-block Jellyfish Merkle Tree update of state.jmt, compiled (see the source's header).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__jmt_core(void) {
#ifdef HAVE_KECCAK4
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2");
#endif
    return PyModule_Create(&module);
}
