/* What the compiled READ (_readaccel.c) and WRITE (_writeaccel.c) share: XDR words, the RPC call
 * header of an NFSv3 call, the grant table's key, the caller's identity and its mode-bit check,
 * the fattr3 of a regular file, the export-table generation and a monotonic clock.
 *
 * Coupled to Python code that must stay byte-for-byte the same (tests twin them):
 *   - put_fattr3, fileid  acmenfs/nfs3/xdr.py word_and_fattr3 and fileid_of
 *   - may_access          acmenfs/fs/local_common.py permitted(..., owner_override=True)
 *   - parse_call          acmenfs/oncrpc/rpc.py parse_call_header (RPC version 2, a CALL)
 *   - current_generation  acmenfs/nfs3/scope.py NfsState._generation
 * Static functions only: each module includes its own copy.
 */
#ifndef ACMENFS_ACCEL_H
#define ACMENFS_ACCEL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define NFS_PROGRAM 100003u
#define NFS_V3 3u
#define MAX_AUTH_BYTES 400u
#define NFS3_FHSIZE 64u
#define MAX_GIDS 16
#define MAX_GRANTS 4096
#define SUCCESS_HEAD 24u /* xid, REPLY, MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS */
#define FATTR3_BYTES 84u

static inline uint32_t get32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t get64(const unsigned char *p) {
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}
static inline unsigned char *put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
    return p + 4;
}
static inline unsigned char *put64(unsigned char *p, uint64_t v) {
    return put32(put32(p, (uint32_t)(v >> 32)), (uint32_t)v);
}
static inline unsigned char *put_time(unsigned char *p, const struct timespec *t) {
    return put32(put32(p, (uint32_t)((uint64_t)t->tv_sec & 0xFFFFFFFFu)), (uint32_t)t->tv_nsec);
}

/* An NFSv3 call of procedure ``procedure``: where its credential, handle and arguments are. */
typedef struct {
    uint32_t xid;
    const unsigned char *cred, *handle;
    uint32_t cred_len, handle_len;
    Py_ssize_t at;    /* the arguments (the handle's length word): what the DRC checksums */
    Py_ssize_t args;  /* after the handle */
} NfsCall;

/* 0 when ``r`` is a well-formed NFSv3 call of ``procedure`` with ``after_handle`` more bytes
 * after its handle, else -1. */
static int parse_call(const unsigned char *r, Py_ssize_t size, uint32_t procedure, Py_ssize_t after_handle,
                      NfsCall *call) {
    if (size < 40)
        return -1;
    if (get32(r + 4) != 0 || get32(r + 8) != 2 || get32(r + 12) != NFS_PROGRAM
        || get32(r + 16) != NFS_V3 || get32(r + 20) != procedure)
        return -1;
    uint32_t cred_len = get32(r + 28);
    if (cred_len > MAX_AUTH_BYTES)
        return -1;
    Py_ssize_t verifier = 32 + cred_len + (-cred_len & 3);
    if (verifier + 8 > size)
        return -1;
    uint32_t verf_len = get32(r + verifier + 4);
    if (verf_len > MAX_AUTH_BYTES)
        return -1;
    Py_ssize_t at = verifier + 8 + verf_len + (-verf_len & 3);
    if (at + 4 > size)
        return -1;
    uint32_t handle_len = get32(r + at);
    if (handle_len > NFS3_FHSIZE)
        return -1;
    Py_ssize_t args = at + 4 + handle_len + (-handle_len & 3);
    if (args + after_handle > size)
        return -1;
    call->xid = get32(r);
    call->cred = r + 24;              /* flavor, length and body: the whole credential */
    call->cred_len = 8 + cred_len;
    call->handle = r + at + 4;
    call->handle_len = handle_len;
    call->at = at;
    call->args = args;
    return 0;
}

/* The grant table's key: address, a zero byte, the credential, the handle (lengths are implied:
 * the credential's length is inside it and the handle runs to the end). */
static PyObject *make_key(PyObject *address, const NfsCall *call) {
    Py_ssize_t address_len;
    const char *text = PyUnicode_AsUTF8AndSize(address, &address_len);
    if (text == NULL)
        return NULL;
    Py_ssize_t size = address_len + 1 + call->cred_len + call->handle_len;
    PyObject *key = PyBytes_FromStringAndSize(NULL, size);
    if (key == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(key);
    memcpy(p, text, address_len);
    p[address_len] = 0;
    memcpy(p + address_len + 1, call->cred, call->cred_len);
    memcpy(p + address_len + 1 + call->cred_len, call->handle, call->handle_len);
    return key;
}

/* The squashed identity a grant's calls run as. */
typedef struct {
    uint32_t uid, gid;
    int ngids;
    uint32_t gids[MAX_GIDS];
} Who;

/* Who from (uid, gid, gids tuple); 0, or -1 with an exception set. */
static int who_from(Who *who, unsigned int uid, unsigned int gid, PyObject *gids) {
    if (PyTuple_GET_SIZE(gids) > MAX_GIDS) {
        PyErr_SetString(PyExc_ValueError, "more than 16 groups");
        return -1;
    }
    who->uid = uid;
    who->gid = gid;
    who->ngids = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(gids); i++) {
        unsigned long value = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(gids, i));
        if (value == (unsigned long)-1 && PyErr_Occurred())
            return -1;
        who->gids[who->ngids++] = (uint32_t)value;
    }
    return 0;
}

/* May ``who`` read (want 4) or write (want 2) a regular file: root may, the owner may
 * (owner_override), others by the group or other bits. */
static int may_access(const Who *who, const struct stat *st, unsigned want) {
    if (who->uid == 0 || st->st_uid == who->uid)
        return 1;
    int in_group = st->st_gid == who->gid;
    for (int i = 0; i < who->ngids && !in_group; i++)
        in_group = st->st_gid == who->gids[i];
    mode_t bits = in_group ? st->st_mode >> 3 : st->st_mode;
    return (bits & want) != 0;
}

static uint64_t fileid(const struct stat *st, uint64_t root_dev) {
    if ((uint64_t)st->st_dev == root_dev)
        return st->st_ino ? (uint64_t)st->st_ino : 1;
    uint64_t mixed = ((uint64_t)st->st_dev * 0x9E3779B97F4A7C15ull) ^ (uint64_t)st->st_ino;
    return mixed ? mixed : 1;
}

/* The fattr3 of a regular file (FATTR3_BYTES); returns the end. */
static unsigned char *put_fattr3(unsigned char *p, const struct stat *st, uint64_t fsid, uint64_t root_dev) {
    p = put32(p, 1);   /* NF3REG */
    p = put32(p, st->st_mode & 07777);
    p = put32(p, (uint32_t)st->st_nlink);
    p = put32(p, st->st_uid);
    p = put32(p, st->st_gid);
    p = put64(p, (uint64_t)st->st_size);
    p = put64(p, (uint64_t)st->st_blocks * 512u);
    p = put32(p, 0);   /* rdev of a regular file */
    p = put32(p, 0);
    p = put64(p, fsid);
    p = put64(p, fileid(st, root_dev));
    p = put_time(p, &st->st_atim);
    p = put_time(p, &st->st_mtim);
    return put_time(p, &st->st_ctim);
}

/* The RPC success header of a reply to ``xid`` (SUCCESS_HEAD bytes, then NFS3_OK); returns the end. */
static unsigned char *put_success(unsigned char *p, uint32_t xid) {
    memset(p, 0, SUCCESS_HEAD + 4);
    put32(p, xid);
    put32(p + 4, 1);   /* REPLY; then MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS, NFS3_OK: zeros */
    return p + SUCCESS_HEAD + 4;
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static PyObject *s_generation;  /* "_generation", interned by accel_init */

/* What a module's init calls first; 0, or -1 with an exception set. */
static int accel_init(void) {
    s_generation = PyUnicode_InternFromString("_generation");
    return s_generation == NULL ? -1 : 0;
}

/* The export-table generation now (NfsState._generation); 0, or -1 with an exception set. */
static int current_generation(PyObject *state, long long *generation) {
    PyObject *value = PyObject_GetAttr(state, s_generation);
    if (value == NULL)
        return -1;
    *generation = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *generation == -1 && PyErr_Occurred() ? -1 : 0;
}

/* What both grant tables start with: the grants (a dict: key bytes -> capsule), the NfsState whose
 * generation they are valid under, and what they answered. */
#define GRANT_TABLE_HEAD \
    PyObject_HEAD \
    PyObject *grants; \
    PyObject *state; \
    unsigned long long calls, bytes; \
    double seconds;

typedef struct {
    GRANT_TABLE_HEAD
} GrantTable;

/* What every grant starts with: what Python resolved, and the generation it resolved it under. */
typedef struct {
    int fd;
    Who who;
    uint64_t fsid, root_dev;
    long long generation;
} GrantCore;

/* Fill ``core`` (fd left to the caller); 0, or -1 with an exception set. */
static int core_init(GrantCore *core, unsigned int uid, unsigned int gid, PyObject *gids, uint64_t fsid,
                     uint64_t root_dev, long long generation) {
    core->fsid = fsid;
    core->root_dev = root_dev;
    core->generation = generation;
    return who_from(&core->who, uid, gid, gids);
}

/* The grant of ``call`` from ``address`` made under the current generation: its core, with new
 * references to its key in *key and its capsule in *capsule (they keep it alive while Python code
 * runs); NULL when there is none (no exception) or on an error (exception set). */
static GrantCore *find_grant(GrantTable *table, PyObject *address, const NfsCall *call, const char *name,
                             PyObject **key, PyObject **capsule) {
    long long generation;
    *key = *capsule = NULL;
    if (PyDict_GET_SIZE(table->grants) == 0 || current_generation(table->state, &generation) < 0)
        return NULL;
    *key = make_key(address, call);
    PyObject *found = *key == NULL ? NULL : PyDict_GetItemWithError(table->grants, *key);
    GrantCore *core = found == NULL ? NULL : PyCapsule_GetPointer(found, name);
    if (core == NULL || core->generation != generation)
        return NULL;
    Py_INCREF(found);
    *capsule = found;
    return core;
}

/* Forget the grant kept under ``key`` (its file was deleted: the grant would pin its pages). */
static void forget_grant(GrantTable *table, PyObject *key) {
    if (PyDict_DelItem(table->grants, key) < 0)
        PyErr_Clear();
}

/* The core of the grant kept under ``key`` (borrowed), or NULL: none, or an error (exception set). */
static GrantCore *kept_grant(GrantTable *table, PyObject *key, const char *name) {
    PyObject *found = PyDict_GetItemWithError(table->grants, key);
    return found == NULL ? NULL : PyCapsule_GetPointer(found, name);
}

/* Keep ``grant`` under ``key`` in a capsule named ``name`` whose ``destructor`` frees it; bounded:
 * past MAX_GRANTS the table starts afresh (clients re-earn their grants with one call answered by
 * Python).  Takes ``grant`` over either way: on failure (-1, exception set) it is ``release``d. */
static int table_keep(GrantTable *table, PyObject *key, void *grant, const char *name,
                      PyCapsule_Destructor destructor, void (*release)(void *)) {
    PyObject *capsule = PyCapsule_New(grant, name, destructor);
    if (capsule == NULL) {
        release(grant);
        return -1;
    }
    if (PyDict_GET_SIZE(table->grants) >= MAX_GRANTS)
        PyDict_Clear(table->grants);
    int kept = PyDict_SetItem(table->grants, key, capsule);
    Py_DECREF(capsule);  /* (on failure this frees the grant) */
    return kept;
}

static PyObject *table_clear(GrantTable *table, PyObject *unused) {
    PyDict_Clear(table->grants);
    Py_RETURN_NONE;
}

static PyObject *table_counts(GrantTable *table, PyObject *unused) {
    return Py_BuildValue("(KKd)", table->calls, table->bytes, table->seconds);
}

static Py_ssize_t table_len(GrantTable *table) {
    return PyDict_GET_SIZE(table->grants);
}

/* The methods both tables have besides answer and grant (their method tables list these first). */
#define GRANT_TABLE_METHODS \
    {"clear", (PyCFunction)table_clear, METH_NOARGS, "forget every grant"}, \
    {"counts", (PyCFunction)table_counts, METH_NOARGS, "(calls, bytes, seconds) answered here"},

#endif
