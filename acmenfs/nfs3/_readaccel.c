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

typedef GrantCore Grant;  /* fd: the grant's own duplicate of the file's descriptor */

typedef struct {
    GRANT_TABLE_HEAD      /* grants: key bytes -> capsule(Grant) */
} ReadGrants;

static const char GRANT_NAME[] = "acmenfs.nfs3._readaccel.Grant";

static void grant_release(void *pointer) {
    Grant *grant = pointer;
    if (grant->fd >= 0)
        close(grant->fd);
    PyMem_Free(grant);
}

static void grant_free(PyObject *capsule) {
    Grant *grant = PyCapsule_GetPointer(capsule, GRANT_NAME);
    if (grant != NULL)
        grant_release(grant);
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
    PyObject *reply = NULL, *key = NULL, *capsule = NULL;
    NfsCall call;
    uint64_t offset;
    uint32_t requested;
    if (parse_read(view.buf, view.len, &call, &offset, &requested) < 0)
        goto out;
    Grant *grant = find_grant((GrantTable *)self, args[1], &call, GRANT_NAME, &key, &capsule);
    if (grant == NULL)
        goto out;
    struct stat st;
    if (fstat(grant->fd, &st) < 0 || !S_ISREG(st.st_mode) || !may_access(&grant->who, &st, 4))
        goto out;  /* changed, or not readable by this caller: Python answers */
    if (st.st_nlink == 0) {  /* deleted: Python answers STALE */
        forget_grant((GrantTable *)self, key);
        goto out;
    }
    uint64_t count = requested < MAX_INLINE_READ ? requested : MAX_INLINE_READ;
    if (requested > MAX_INLINE_READ || st.st_size <= 0 || offset >= (uint64_t)st.st_size)
        goto out;
    uint64_t left = (uint64_t)st.st_size - offset;
    uint32_t available = (uint32_t)(count < left ? count : left);
    if (available == 0)
        goto out;
    int eof = offset + available >= (uint64_t)st.st_size;
    uint32_t pad = -available & 3;
    reply = PyBytes_FromStringAndSize(NULL, REPLY_HEAD + available + pad);
    if (reply == NULL)
        goto out;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(reply);
    struct iovec iov = {out + REPLY_HEAD, available};
    ssize_t got = preadv2(grant->fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
    if (got != (ssize_t)available) {  /* not (all) in the page cache, or the file shrank */
        Py_CLEAR(reply);
        goto out;
    }
    put_head(out, call.xid, grant, &st, available, eof);
    memset(out + REPLY_HEAD + available, 0, pad);
    self->calls += 1;
    self->bytes += available;
    self->seconds += now_seconds() - started;
out:  /* the reply; NULL: None, or an error (exception set) */
    Py_XDECREF(key);
    Py_XDECREF(capsule);
    PyBuffer_Release(&view);
    if (reply != NULL || PyErr_Occurred())
        return reply;
    Py_RETURN_NONE;
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
    PyObject *key = NULL;
    Grant *grant = NULL;
    if (parse_read(view.buf, view.len, &call, &offset, &requested) < 0) {
        PyErr_SetString(PyExc_ValueError, "not an NFSv3 READ call");
        goto done;
    }
    key = make_key(address, &call);
    Grant *held = key == NULL ? NULL : kept_grant((GrantTable *)self, key, GRANT_NAME);
    if (PyErr_Occurred() || (held != NULL && held->generation == generation))
        goto done;  /* (granted already: a READ C left to Python, a count over 64 KiB, a short range, ...) */
    grant = PyMem_Calloc(1, sizeof(Grant));
    if (grant == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    grant->fd = -1;
    if (core_init(grant, uid, gid, gids, fsid, root_dev, generation) < 0)
        goto done;
    grant->fd = dup(fd);  /* the grant's own: the node may close its descriptor meanwhile */
    if (grant->fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    table_keep((GrantTable *)self, key, grant, GRANT_NAME, grant_free, grant_release);
    grant = NULL;  /* (the table's, or released) */
done:
    if (grant != NULL)
        grant_release(grant);
    Py_XDECREF(key);
    PyBuffer_Release(&view);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
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
    if (accel_init() < 0 || PyType_Ready(&ReadGrantsType) < 0)
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
