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
#include "_accel.h"

#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#define NFSPROC3_READ 6u
#define MAX_INLINE_READ 65536u
#define REPLY_HEAD 128u /* RPC header 24 + status 4 + post_op_attr 88 + count, eof, length 12 */

typedef struct {
    int fd;
    Who who;
    uint64_t fsid, root_dev;
    long long generation;
} Grant;

typedef struct {
    GRANT_TABLE_HEAD      /* grants: key bytes -> capsule(Grant) */
    PyObject *state;      /* has _generation */
} ReadGrants;

static const char GRANT_NAME[] = "acmenfs.nfs3._readaccel.Grant";

static void grant_free(PyObject *capsule) {
    Grant *grant = PyCapsule_GetPointer(capsule, GRANT_NAME);
    if (grant != NULL) {
        close(grant->fd);
        PyMem_Free(grant);
    }
}

/* A READ call: offset and count after the handle; 0, or -1 when ``record`` is not one. */
static int parse_read(const unsigned char *r, Py_ssize_t size, NfsCall *call, uint64_t *offset, uint32_t *count) {
    if (parse_call(r, size, NFSPROC3_READ, 12, call) < 0)
        return -1;
    *offset = get64(r + call->args);
    *count = get32(r + call->args + 8);
    return 0;
}

/* RPC success header, NFS3_OK, post_op_attr (present, fattr3 of a regular file), count, eof,
 * opaque length: exactly what FastPath._read's first part holds. */
static void put_head(unsigned char *p, uint32_t xid, const Grant *grant, const struct stat *st,
                     uint32_t count, int eof) {
    p = put_success(p, xid);
    p = put32(p, 1);   /* attributes follow */
    p = put_fattr3(p, st, grant->fsid, grant->root_dev);
    p = put32(p, count);
    p = put32(p, eof ? 1 : 0);
    put32(p, count);
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
    NfsCall call;
    uint64_t offset;
    uint32_t requested;
    long long generation;
    if (parse_read(view.buf, view.len, &call, &offset, &requested) < 0 || PyDict_GET_SIZE(self->grants) == 0)
        goto none;
    if (current_generation(self->state, &generation) < 0)  /* (before the lookup: it runs Python code) */
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
    if (fstat(grant->fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink == 0 || !may_access(&grant->who, &st, 4))
        goto none;  /* deleted, changed, or not readable by this caller: Python answers */
    uint64_t count = requested < MAX_INLINE_READ ? requested : MAX_INLINE_READ;
    if (requested > MAX_INLINE_READ || st.st_size <= 0 || offset >= (uint64_t)st.st_size)
        goto none;
    uint64_t left = (uint64_t)st.st_size - offset;
    uint32_t available = (uint32_t)(count < left ? count : left);
    if (available == 0)
        goto none;
    int eof = offset + available >= (uint64_t)st.st_size;
    uint32_t pad = -available & 3;
    reply = PyBytes_FromStringAndSize(NULL, REPLY_HEAD + available + pad);
    if (reply == NULL)
        goto fail;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(reply);
    struct iovec iov = {out + REPLY_HEAD, available};
    ssize_t got = preadv2(grant->fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
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
    NfsCall call;
    uint64_t offset;
    uint32_t requested;
    PyObject *key = NULL, *capsule = NULL;
    Grant *grant = NULL;
    if (parse_read(view.buf, view.len, &call, &offset, &requested) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an NFSv3 READ call");
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
    if (who_from(&grant->who, uid, gid, gids) < 0)
        goto fail;
    grant->fd = dup(fd);  /* the grant's own: the node may close its descriptor meanwhile */
    if (grant->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto fail;
    }
    grant->fsid = fsid;
    grant->root_dev = root_dev;
    grant->generation = generation;
    capsule = PyCapsule_New(grant, GRANT_NAME, grant_free);
    if (capsule == NULL)
        goto fail;
    grant = NULL;  /* the capsule owns it */
    if (table_store((GrantTable *)self, key, capsule) < 0)
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
    GRANT_TABLE_METHODS
    {NULL}
};

static PySequenceMethods ReadGrants_sequence = {.sq_length = (lenfunc)table_len};

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
