/* acmenfs.nfs3._readaccel -- the NFSv3 READ of a granted (handle, client, credential), in C.
 *
 * Owns ``ReadGrants``: a table of grants, each made by the Python fast path
 * (acmenfs/nfs3/fastpath.py, ``FastPath._read``) after it answered a READ itself: the call's
 * file handle, client address and raw credential, with what that READ resolved (a duplicate of
 * the file's descriptor, the squashed identity, the export's fsid and root device) and the
 * export-table generation it was resolved under.  ``answer(record, address)`` answers a later
 * READ with the same handle, client and credential byte for byte as the Python path would, or
 * returns None and changes nothing; the Python path then runs the call from the start.
 *
 * Python stays the authority: a grant only repeats a decision Python made, and is not used once
 * the export table has changed (``generation``: the NfsState's ``_generation``, read per call).
 * Per call this code still checks what Python checks per call: the object is a regular file
 * not deleted (fstat, nlink), the identity may read it (mode bits, owner may always read), the
 * range is in the page cache (preadv2 RWF_NOWAIT, else None: the thread pool reads it).  It
 * answers only 1..65536 bytes of data; anything else (EOF at the offset, larger reads, a
 * malformed or other call) is None.  Counts calls, bytes and seconds for the server's stats.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define NFS_PROGRAM 100003u
#define NFS_V3 3u
#define NFSPROC3_READ 6u
#define MAX_AUTH_BYTES 400u
#define NFS3_FHSIZE 64u
#define MAX_INLINE_READ 65536u
#define MAX_GIDS 16
#define MAX_GRANTS 4096
#define REPLY_HEAD 128u /* RPC header 24 + status 4 + post_op_attr 88 + count, eof, length 12 */

typedef struct {
    int fd;
    uint32_t uid, gid;
    int ngids;
    uint32_t gids[MAX_GIDS];
    uint64_t fsid, root_dev;
    long long generation;
} Grant;

typedef struct {
    PyObject_HEAD
    PyObject *grants;     /* dict: key bytes -> capsule(Grant) */
    PyObject *state;      /* has _generation */
    unsigned long long calls, bytes;
    double seconds;
} ReadGrants;

static const char GRANT_NAME[] = "acmenfs.nfs3._readaccel.Grant";

static uint32_t get32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static unsigned char *put32(unsigned char *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
    return p + 4;
}
static unsigned char *put64(unsigned char *p, uint64_t v) {
    return put32(put32(p, (uint32_t)(v >> 32)), (uint32_t)v);
}

static void grant_free(PyObject *capsule) {
    Grant *grant = PyCapsule_GetPointer(capsule, GRANT_NAME);
    if (grant != NULL) {
        close(grant->fd);
        PyMem_Free(grant);
    }
}

/* Where a READ call's parts are: the key (address, credential, handle) and the arguments.
 * Returns 0 when ``record`` is a well-formed NFSv3 READ call, else -1. */
typedef struct {
    uint32_t xid;
    const unsigned char *cred, *handle;
    uint32_t cred_len, handle_len;
    uint64_t offset;
    uint32_t count;
} ReadCall;

static int parse_read(const unsigned char *r, Py_ssize_t size, ReadCall *call) {
    if (size < 40)
        return -1;
    if (get32(r + 4) != 0 || get32(r + 8) != 2 || get32(r + 12) != NFS_PROGRAM
        || get32(r + 16) != NFS_V3 || get32(r + 20) != NFSPROC3_READ)
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
    if (args + 12 > size)
        return -1;
    call->xid = get32(r);
    call->cred = r + 24;              /* flavor, length and body: the whole credential */
    call->cred_len = 8 + cred_len;
    call->handle = r + at + 4;
    call->handle_len = handle_len;
    call->offset = ((uint64_t)get32(r + args) << 32) | get32(r + args + 4);
    call->count = get32(r + args + 8);
    return 0;
}

/* The table key: address, a zero byte, the credential, the handle (lengths are implied:
 * the credential's length is inside it and the handle runs to the end). */
static PyObject *make_key(PyObject *address, const ReadCall *call) {
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

static int may_read(const Grant *grant, const struct stat *st) {
    if (grant->uid == 0 || st->st_uid == grant->uid)
        return 1;  /* root reads anything; the owner may always read (owner_override) */
    int in_group = st->st_gid == grant->gid;
    for (int i = 0; i < grant->ngids && !in_group; i++)
        in_group = st->st_gid == grant->gids[i];
    mode_t bits = in_group ? st->st_mode >> 3 : st->st_mode;
    return (bits & 4) != 0;
}

static uint64_t fileid(const struct stat *st, uint64_t root_dev) {
    if ((uint64_t)st->st_dev == root_dev)
        return st->st_ino ? (uint64_t)st->st_ino : 1;
    uint64_t mixed = ((uint64_t)st->st_dev * 0x9E3779B97F4A7C15ull) ^ (uint64_t)st->st_ino;
    return mixed ? mixed : 1;
}

static unsigned char *put_time(unsigned char *p, const struct timespec *t) {
    return put32(put32(p, (uint32_t)((uint64_t)t->tv_sec & 0xFFFFFFFFu)), (uint32_t)t->tv_nsec);
}

/* RPC success header, NFS3_OK, post_op_attr (present, fattr3 of a regular file), count, eof,
 * opaque length: exactly what FastPath._read's first part holds. */
static void put_head(unsigned char *p, uint32_t xid, const Grant *grant, const struct stat *st,
                     uint32_t count, int eof) {
    memset(p, 0, 28);
    put32(p, xid);
    put32(p + 4, 1);   /* REPLY; then MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS, NFS3_OK: zeros */
    p += 28;
    p = put32(p, 1);   /* attributes follow */
    p = put32(p, 1);   /* NF3REG */
    p = put32(p, st->st_mode & 07777);
    p = put32(p, (uint32_t)st->st_nlink);
    p = put32(p, st->st_uid);
    p = put32(p, st->st_gid);
    p = put64(p, (uint64_t)st->st_size);
    p = put64(p, (uint64_t)st->st_blocks * 512u);
    p = put32(p, 0);   /* rdev of a regular file */
    p = put32(p, 0);
    p = put64(p, grant->fsid);
    p = put64(p, fileid(st, grant->root_dev));
    p = put_time(p, &st->st_atim);
    p = put_time(p, &st->st_mtim);
    p = put_time(p, &st->st_ctim);
    p = put32(p, count);
    p = put32(p, eof ? 1 : 0);
    put32(p, count);
}

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The export-table generation now (NfsState._generation); 0, or -1 with an exception set. */
static int current_generation(ReadGrants *self, long long *generation) {
    PyObject *value = PyObject_GetAttrString(self->state, "_generation");
    if (value == NULL)
        return -1;
    *generation = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *generation == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *ReadGrants_answer(ReadGrants *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "answer(record, address: str)");
        return NULL;
    }
    double started = now_seconds();
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *reply = NULL;
    ReadCall call;
    long long generation;
    if (parse_read(view.buf, view.len, &call) < 0 || PyDict_GET_SIZE(self->grants) == 0)
        goto none;
    if (current_generation(self, &generation) < 0)  /* (before the lookup: it runs Python code) */
        goto fail;
    PyObject *key = make_key(args[1], &call);
    if (key == NULL)
        goto fail;
    PyObject *capsule = PyDict_GetItemWithError(self->grants, key);  /* borrowed; nothing below runs Python */
    Py_DECREF(key);
    if (capsule == NULL) {
        if (PyErr_Occurred())
            goto fail;
        goto none;
    }
    Grant *grant = PyCapsule_GetPointer(capsule, GRANT_NAME);
    if (grant == NULL)
        goto fail;
    if (generation != grant->generation)
        goto none;
    struct stat st;
    if (fstat(grant->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0 || !may_read(grant, &st))
        goto none;  /* deleted, changed, or not readable by this caller: Python answers */
    uint64_t count = call.count < MAX_INLINE_READ ? call.count : MAX_INLINE_READ;
    if (call.count > MAX_INLINE_READ || st.st_size <= 0 || call.offset >= (uint64_t)st.st_size)
        goto none;
    uint64_t left = (uint64_t)st.st_size - call.offset;
    uint32_t available = (uint32_t)(count < left ? count : left);
    if (available == 0)
        goto none;
    int eof = call.offset + available >= (uint64_t)st.st_size;
    uint32_t pad = -available & 3;
    reply = PyBytes_FromStringAndSize(NULL, REPLY_HEAD + available + pad);
    if (reply == NULL)
        goto fail;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(reply);
    struct iovec iov = {out + REPLY_HEAD, available};
    ssize_t got = preadv2(grant->fd, &iov, 1, (off_t)call.offset, RWF_NOWAIT);
    if (got != (ssize_t)available) {  /* not (all) in the page cache, or the file shrank */
        Py_CLEAR(reply);
        goto none;
    }
    put_head(out, call.xid, grant, &st, available, eof);
    memset(out + REPLY_HEAD + available, 0, pad);
    self->calls += 1;
    self->bytes += available;
    self->seconds += now_seconds() - started;
    PyBuffer_Release(&view);
    return reply;
none:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *ReadGrants_grant(ReadGrants *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"record", "address", "fd", "uid", "gid", "gids", "fsid", "root_dev",
                            "generation", NULL};
    Py_buffer view;
    PyObject *address, *gids;
    int fd;
    unsigned int uid, gid;
    unsigned long long fsid, root_dev;
    long long generation;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*UiIIO!KKL", names, &view, &address, &fd, &uid,
                                     &gid, &PyTuple_Type, &gids, &fsid, &root_dev, &generation))
        return NULL;
    ReadCall call;
    PyObject *key = NULL, *capsule = NULL;
    Grant *grant = NULL;
    if (parse_read(view.buf, view.len, &call) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an NFSv3 READ call");
        goto fail;
    }
    if (PyTuple_GET_SIZE(gids) > MAX_GIDS) {
        PyErr_SetString(PyExc_ValueError, "more than 16 groups");
        goto fail;
    }
    key = make_key(address, &call);
    if (key == NULL)
        goto fail;
    PyObject *existing = PyDict_GetItemWithError(self->grants, key);  /* borrowed */
    if (existing == NULL && PyErr_Occurred())
        goto fail;
    if (existing != NULL) {
        Grant *held = PyCapsule_GetPointer(existing, GRANT_NAME);
        if (held == NULL)
            goto fail;
        if (held->generation == generation) {  /* granted already (a READ C left to Python: a count
                                                  over 64 KiB, a range it found short, ...) */
            Py_DECREF(key);
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
    }
    grant = PyMem_Calloc(1, sizeof(Grant));
    if (grant == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    grant->fd = -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(gids); i++) {
        unsigned long value = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(gids, i));
        if (value == (unsigned long)-1 && PyErr_Occurred())
            goto fail;
        grant->gids[grant->ngids++] = (uint32_t)value;
    }
    grant->fd = dup(fd);  /* the grant's own: the node may close its descriptor meanwhile */
    if (grant->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    grant->uid = uid;
    grant->gid = gid;
    grant->fsid = fsid;
    grant->root_dev = root_dev;
    grant->generation = generation;
    capsule = PyCapsule_New(grant, GRANT_NAME, grant_free);
    if (capsule == NULL)
        goto fail;
    grant = NULL;  /* the capsule owns it */
    if (PyDict_GET_SIZE(self->grants) >= MAX_GRANTS)
        PyDict_Clear(self->grants);  /* bounded: clients re-earn their grants with one READ */
    if (PyDict_SetItem(self->grants, key, capsule) < 0)
        goto fail;
    Py_DECREF(key);
    Py_DECREF(capsule);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    if (grant != NULL) {
        if (grant->fd >= 0)
            close(grant->fd);
        PyMem_Free(grant);
    }
    Py_XDECREF(key);
    Py_XDECREF(capsule);
    PyBuffer_Release(&view);
    return NULL;
}

static PyObject *ReadGrants_clear(ReadGrants *self, PyObject *unused) {
    PyDict_Clear(self->grants);
    Py_RETURN_NONE;
}

static PyObject *ReadGrants_counts(ReadGrants *self, PyObject *unused) {
    return Py_BuildValue("(KKd)", self->calls, self->bytes, self->seconds);
}

static Py_ssize_t ReadGrants_len(ReadGrants *self) {
    return PyDict_GET_SIZE(self->grants);
}

static int ReadGrants_init(ReadGrants *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"state", NULL};
    PyObject *state;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", names, &state))
        return -1;
    Py_INCREF(state);
    Py_XSETREF(self->state, state);
    if (self->grants == NULL && (self->grants = PyDict_New()) == NULL)
        return -1;
    return 0;
}

static void ReadGrants_dealloc(ReadGrants *self) {
    Py_XDECREF(self->grants);
    Py_XDECREF(self->state);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef ReadGrants_methods[] = {
    {"answer", (PyCFunction)(void (*)(void))ReadGrants_answer, METH_FASTCALL,
     "answer(record, address) -> the whole reply (bytes), or None: the Python path answers"},
    {"grant", (PyCFunction)(void (*)(void))ReadGrants_grant, METH_VARARGS | METH_KEYWORDS,
     "grant(record, address, fd, uid, gid, gids, fsid, root_dev, generation): answer READs like "
     "this one (same handle, client address and credential) from now on"},
    {"clear", (PyCFunction)ReadGrants_clear, METH_NOARGS, "forget every grant (closes their descriptors)"},
    {"counts", (PyCFunction)ReadGrants_counts, METH_NOARGS, "(calls, bytes, seconds) answered here"},
    {NULL}
};

static PySequenceMethods ReadGrants_sequence = {.sq_length = (lenfunc)ReadGrants_len};

static PyTypeObject ReadGrantsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "acmenfs.nfs3._readaccel.ReadGrants",
    .tp_basicsize = sizeof(ReadGrants),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Grants the Python fast path made; answers the READs they cover (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ReadGrants_init,
    .tp_dealloc = (destructor)ReadGrants_dealloc,
    .tp_methods = ReadGrants_methods,
    .tp_as_sequence = &ReadGrants_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "acmenfs.nfs3._readaccel",
    "The NFSv3 READ of a granted (handle, client, credential), in C (see _readaccel.c).", -1, NULL,
};

PyMODINIT_FUNC PyInit__readaccel(void) {
    if (PyType_Ready(&ReadGrantsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReadGrantsType);
    if (PyModule_AddObject(m, "ReadGrants", (PyObject *)&ReadGrantsType) < 0) {
        Py_DECREF(&ReadGrantsType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
